"""Attacks on the trainer: a checkpoint or a recipe from someone else must never run code, and
expected user errors are one line (exit 2), never a traceback."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest

from demixers.trainers import checkpointing as ckpt
from demixers.trainers.trainer import Trainer
from tests.trainers import conftest as trainer_fixtures
from tests.trainers.conftest import recipe

# the trainer tests' fixtures: the generated speech corpus and a fresh Accelerate state per test
speech_corpus = trainer_fixtures.speech_corpus
_fresh_accelerate_state = trainer_fixtures._fresh_accelerate_state


class _RunsCode:
    """A pickle that runs a shell command when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _plant(folder: Path, marker: Path) -> list[str]:
    """Replace every state file of ``folder`` (not the exported ``model/``) by the pickle."""
    planted = []
    for path in sorted(folder.iterdir()):
        if path.is_file():
            path.write_bytes(pickle.dumps(_RunsCode(marker)))
            planted.append(path.name)
    return planted


def _reset_accelerate() -> None:
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def _short_run(corpus: Path, tmp_path: Path, steps: int = 2) -> dict:
    return recipe(
        corpus,
        tmp_path,
        data={"samples_per_epoch": 8, "max_eval_samples": 1},
        training={"max_steps": steps, "save_steps": 2, "eval_steps": 100, "total_limit": 1},
    )


def test_resume_never_runs_code_planted_in_any_state_file(speech_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    Trainer(_short_run(speech_corpus, tmp_path), out).train()
    latest = ckpt.latest_checkpoint(out)
    clean = tmp_path / "clean"
    shutil.copytree(latest, clean)
    names = sorted(path.name for path in clean.iterdir() if path.is_file())
    assert len(names) >= 4, names
    outcomes = {}
    for name in names:
        # one planted file at a time, the others intact, so that every file is reached by the loader
        shutil.rmtree(latest)
        shutil.copytree(clean, latest)
        marker = tmp_path / f"MARKER-{name}"
        (latest / name).write_bytes(pickle.dumps(_RunsCode(marker)))
        try:
            Trainer(_short_run(speech_corpus, tmp_path, steps=4), out, resume=True).setup()
            outcome = "resumed"
        except Exception as error:  # every outcome is recorded, then judged
            outcome = f"{type(error).__name__}: {error}"
        finally:
            _reset_accelerate()
        outcomes[name] = (marker.exists(), outcome)
    ran_code = [name for name, (created, _) in outcomes.items() if created]
    assert not ran_code, f"loading these planted files ran code: {ran_code}"
    for name, (_, outcome) in outcomes.items():
        assert outcome.startswith("ResumeError: "), (name, outcome)
        assert "\n" not in outcome and name in outcome, (name, outcome)


def test_resume_refuses_a_checkpoint_whose_every_file_is_a_pickle(
    speech_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    Trainer(_short_run(speech_corpus, tmp_path), out).train()
    latest = ckpt.latest_checkpoint(out)
    marker = tmp_path / "MARKER"
    _plant(latest, marker)  # trainer_state.json too: no usable checkpoint is left
    with pytest.raises(ckpt.ResumeError) as caught:
        Trainer(_short_run(speech_corpus, tmp_path, steps=4), out, resume=True).train()
    message = str(caught.value)
    assert "\n" not in message and ckpt.TRAINER_STATE_NAME in message, message
    assert not marker.exists()


def test_corrupt_trainer_state_falls_back_to_the_newest_complete_checkpoint(
    speech_corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "run"
    config = _short_run(speech_corpus, tmp_path, steps=4)
    config["training"]["total_limit"] = 2
    Trainer(config, out).train()
    assert [step for step, _ in ckpt.find_checkpoints(out)] == [2, 4]
    state_file = out / ckpt.checkpoint_name(4) / ckpt.TRAINER_STATE_NAME
    text = state_file.read_text()
    state_file.write_text(text[: len(text) // 2])  # a disk that filled up mid-write
    config["training"]["max_steps"] = 6
    resumed = Trainer(config, out, resume=True)
    with caplog.at_level("WARNING", logger="demixers.trainers.trainer"):
        resumed.setup()
    assert resumed.resume_from == out / ckpt.checkpoint_name(2)
    assert resumed.state.global_step == 2
    lines = [record.getMessage() for record in caplog.records if "falling back" in record.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert str(state_file) in lines[0] and lines[0].endswith(ckpt.checkpoint_name(2)), lines[0]


def test_truncated_optimizer_state_is_a_one_line_error_naming_the_file(
    speech_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    Trainer(_short_run(speech_corpus, tmp_path), out).train()
    optimizer_file = ckpt.latest_checkpoint(out) / "optimizer.bin"
    data = optimizer_file.read_bytes()
    optimizer_file.write_bytes(data[: len(data) // 3])
    with pytest.raises(ckpt.ResumeError) as caught:
        Trainer(_short_run(speech_corpus, tmp_path, steps=4), out, resume=True).setup()
    message = str(caught.value)
    assert "\n" not in message and str(optimizer_file) in message, message
    assert "truncated or corrupt" in message


# -- the command line: expected failures are one line and exit code 2 -----------------------------


def _train_cli(capsys: pytest.CaptureFixture, *words: str) -> tuple[int, list[str]]:
    from demixers.cli import main as demixers_main

    code = demixers_main(["train", *words])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return code, [line for line in lines if "Writing model shards" not in line]


def test_recipe_with_a_python_object_tag_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.yaml"
    path.write_text(
        f"model:\n  type: mossformer\ntraining: !!python/object/apply:os.system ['touch {marker}']\n"
    )
    code, lines = _train_cli(capsys, "--config", str(path), "--output-dir", str(tmp_path / "out"))
    assert code == 2 and len(lines) == 1, lines
    assert f"{path}:3:" in lines[0] and "python/object" in lines[0], lines[0]
    assert not marker.exists()


def test_recipe_with_a_yaml_syntax_error_names_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  type: mossformer\ntraining:\n\tseed: 3\n")
    code, lines = _train_cli(capsys, "--config", str(path), "--output-dir", str(tmp_path / "out"))
    assert code == 2 and len(lines) == 1, lines
    assert f"{path}:4:" in lines[0], lines[0]


def test_absurd_batch_size_is_refused_before_anything_is_built(
    speech_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.trainers.conftest import write_recipe

    path = write_recipe(_short_run(speech_corpus, tmp_path), tmp_path / "recipe.yaml")
    out = tmp_path / "out"
    code, lines = _train_cli(
        capsys, "--config", str(path), "--output-dir", str(out), "--training.batch_size=1000000000"
    )
    assert code == 2 and len(lines) == 1, lines
    assert "training.batch_size 1000000000" in lines[0], lines[0]
    assert not out.exists()


def test_batch_larger_than_memory_is_refused_before_allocating(
    speech_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from demixers.trainers.trainer import _available_memory_bytes
    from tests.trainers.conftest import write_recipe

    if _available_memory_bytes() is None:  # without the check the allocation would really be tried
        pytest.skip("this platform does not report its free memory")
    # 4000 segments of 10^5 s at 8 kHz: about 36 TiB of audio, far beyond this machine's memory
    path = write_recipe(_short_run(speech_corpus, tmp_path), tmp_path / "recipe.yaml")
    code, lines = _train_cli(
        capsys,
        "--config",
        str(path),
        "--output-dir",
        str(tmp_path / "out"),
        "--training.batch_size=4000",
        "--data.segment_seconds=100000",
        "--data.samples_per_epoch=4000",
    )
    assert code == 2 and len(lines) == 1, lines
    assert "training.batch_size 4000 needs" in lines[0] and "GiB" in lines[0], lines[0]


def test_allocation_failure_during_setup_is_one_line(
    speech_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from demixers.trainers import trainer as trainer_module
    from tests.trainers.conftest import write_recipe

    def exhausted(*args: object, **kwargs: object) -> None:
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 400000000000 bytes.\nError code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(trainer_module, "build_model", exhausted)
    path = write_recipe(_short_run(speech_corpus, tmp_path), tmp_path / "recipe.yaml")
    code, lines = _train_cli(capsys, "--config", str(path), "--output-dir", str(tmp_path / "out"))
    assert code == 2 and len(lines) == 1, lines
    assert "out of memory while setting up training" in lines[0], lines[0]

    monkeypatch.setattr(trainer_module, "build_model", lambda *a, **k: (_ for _ in ()).throw(MemoryError()))
    code, lines = _train_cli(capsys, "--config", str(path), "--output-dir", str(tmp_path / "out2"))
    assert code == 2 and len(lines) == 1 and "out of memory" in lines[0], lines


def test_pretrained_model_that_does_not_load_is_one_line(
    speech_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from tests.trainers.conftest import write_recipe

    out = tmp_path / "run"
    Trainer(_short_run(speech_corpus, tmp_path), out).train()
    pretrained = out / "last"
    weights = pretrained / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()  # a hard link shared with the checkpoint: write a new file
    weights.write_bytes(data[: len(data) // 2])
    config = _short_run(speech_corpus, tmp_path)
    config["model"] = {**config["model"], "type": None, "config": {}, "pretrained": str(pretrained)}
    path = write_recipe(config, tmp_path / "recipe.yaml")
    code, lines = _train_cli(capsys, "--config", str(path), "--output-dir", str(tmp_path / "finetune"))
    assert code == 2 and len(lines) == 1, lines
    assert "model.pretrained" in lines[0] and str(pretrained) in lines[0], lines[0]
