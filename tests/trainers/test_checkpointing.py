"""Crash-safe checkpoint folders, pruning, NaN/Inf handling and resume compatibility checks."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from demixers.trainers import checkpointing as ckpt
from demixers.trainers.losses import SeparationLoss, compute_loss
from demixers.trainers.trainer import NonFiniteLossError, Trainer
from tests.trainers.conftest import read_jsonl, recipe

# unordered speakers, as the toy was judged by its names before every config declared it
TOY = {
    "type": "demixers_toy_splitter",
    "config": {"sampling_rate": 8000, "source_names": ["s1", "s2"], "permutation_invariant": True},
}


def toy_recipe(corpus: Path, tmp_path: Path, **training) -> dict:
    return recipe(
        corpus,
        tmp_path,
        model=TOY,
        training={"loss": "l1", "learning_rate": 0.05, "max_steps": 6, **training},
        data={"max_eval_samples": 2},
    )


# -- folder mechanics ---------------------------------------------------------------------------


def test_atomic_directory_keeps_the_old_folder_when_writing_fails(tmp_path: Path) -> None:
    with ckpt.atomic_directory(tmp_path / "best") as folder:
        (folder / "weights").write_text("good")
    with pytest.raises(RuntimeError), ckpt.atomic_directory(tmp_path / "best") as folder:
        (folder / "weights").write_text("half")
        raise RuntimeError("killed")
    assert (tmp_path / "best" / "weights").read_text() == "good"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_clean_stale_restores_a_folder_caught_mid_replacement(tmp_path: Path) -> None:
    (tmp_path / ".old-best").mkdir()
    (tmp_path / ".old-best" / "weights").write_text("previous")
    (tmp_path / ".tmp-checkpoint-00000004").mkdir()  # a save that was killed
    (tmp_path / "checkpoint-00000002").mkdir()  # no trainer_state.json: incomplete, ignored
    actions = ckpt.clean_stale(tmp_path)
    assert "restored best" in actions and "removed .tmp-checkpoint-00000004" in actions
    assert (tmp_path / "best" / "weights").read_text() == "previous"
    assert ckpt.find_checkpoints(tmp_path) == []


def test_prune_keeps_the_newest_complete_checkpoints(tmp_path: Path) -> None:
    for step in (2, 4, 6, 8):
        folder = tmp_path / ckpt.checkpoint_name(step)
        folder.mkdir()
        ckpt.write_json(folder / ckpt.TRAINER_STATE_NAME, {"global_step": step})
    (tmp_path / ckpt.checkpoint_name(10)).mkdir()  # incomplete: never counted, never pruned
    removed = ckpt.prune_checkpoints(tmp_path, total_limit=2)
    assert [p.name for p in removed] == ["checkpoint-00000002", "checkpoint-00000004"]
    assert [step for step, _ in ckpt.find_checkpoints(tmp_path)] == [6, 8]
    assert (tmp_path / ckpt.checkpoint_name(10)).is_dir()


def test_resume_compatibility_errors() -> None:
    state = {"model_config": {"hidden_size": 64, "transformers_version": "1"}, "world_size": 2}
    ckpt.check_resume_compatible(state, {"hidden_size": 64, "transformers_version": "2"}, 2, "ck")
    with pytest.raises(
        ckpt.ResumeError, match=r"different model config \(hidden_size: checkpoint 64 vs now 32"
    ):
        ckpt.check_resume_compatible(state, {"hidden_size": 32}, 2, "ck")
    with pytest.raises(ckpt.ResumeError, match=r"made with 2 process\(es\) and this launch has 1"):
        ckpt.check_resume_compatible(state, {"hidden_size": 64}, 1, "ck")


# -- through the trainer --------------------------------------------------------------------------


def test_total_limit_prunes_after_each_complete_save(speech_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = toy_recipe(speech_corpus, tmp_path, save_steps=1, eval_steps=3, total_limit=2)
    summary = Trainer(config, out).train()
    assert summary["global_step"] == 6
    assert [step for step, _ in ckpt.find_checkpoints(out)] == [5, 6]
    assert not [p for p in out.iterdir() if p.name.startswith((".tmp-", ".old-"))]
    for folder in ("best", "last", "checkpoint-00000006/model"):
        assert (out / folder / "config.json").is_file() and (out / folder / "model.safetensors").is_file()
        assert (out / folder / "preprocessor_config.json").is_file()
    assert (out / "train_config.yaml").is_file()
    evals = read_jsonl(out / "eval_log.jsonl")
    assert [e["step"] for e in evals] == [3, 6]
    # starting again in the same folder without --resume is refused
    with pytest.raises(FileExistsError, match="pass --resume"):
        Trainer(config, out).train()


def test_resume_with_another_model_config_is_refused(speech_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    Trainer(toy_recipe(speech_corpus, tmp_path, max_steps=2, eval_steps=2), out).train()
    other = toy_recipe(speech_corpus, tmp_path, max_steps=4)
    other["model"]["config"]["sampling_rate"] = 16000
    with pytest.raises(ckpt.ResumeError, match="different model config"):
        Trainer(other, out, resume=True).setup()


class NaNAtSteps:
    """Loss wrapper: the real L1 loss, replaced by NaN on the given (1-based) calls."""

    def __init__(self, bad_calls: set[int] | None = None, always: bool = False) -> None:
        self.calls = 0
        self.bad_calls = bad_calls or set()
        self.always = always

    def __call__(self, estimates, references, mask) -> SeparationLoss:
        self.calls += 1
        result = compute_loss("l1", estimates, references, mask)
        if self.always or self.calls in self.bad_calls:
            return SeparationLoss(result.loss * math.nan, result.per_source, result.permutation)
        return result


def test_nan_steps_are_skipped_with_a_warning(speech_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = toy_recipe(speech_corpus, tmp_path, max_steps=6, eval_steps=100, max_consecutive_nonfinite=3)
    trainer = Trainer(config, out, loss_fn=NaNAtSteps(bad_calls={2, 3}))
    with pytest.warns(RuntimeWarning, match="non-finite loss"):
        summary = trainer.train()
    assert summary["global_step"] == 6 and summary["skipped_steps"] == 2
    logged = read_jsonl(out / "train_log.jsonl")
    assert [entry["skipped"] for entry in logged] == [0, 1, 1, 0, 0, 0]
    weights = load_file(out / "last" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_a_nan_streak_stops_training_and_keeps_the_last_good_checkpoint(
    speech_corpus: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    good = toy_recipe(speech_corpus, tmp_path, max_steps=2, save_steps=2, eval_steps=100)
    Trainer(good, out).train()
    before = {p.name: p.stat().st_mtime_ns for p in (out / "checkpoint-00000002").iterdir()}
    saved = load_file(out / "checkpoint-00000002" / "model.safetensors")
    resumed = toy_recipe(
        speech_corpus, tmp_path, max_steps=20, save_steps=1, eval_steps=100, max_consecutive_nonfinite=3
    )
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError, match="3 consecutive steps"):
        Trainer(resumed, out, resume=True, loss_fn=NaNAtSteps(always=True)).train()
    # no checkpoint was written during the streak; the good one is untouched
    assert [step for step, _ in ckpt.find_checkpoints(out)] == [2]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "checkpoint-00000002").iterdir()} == before
    again = load_file(out / "checkpoint-00000002" / "model.safetensors")
    assert all(torch.equal(saved[k], again[k]) for k in saved)
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert os.path.isdir(out / "last")


# -- the code-free state format -------------------------------------------------------------------


def test_rng_states_round_trip_through_json_and_safetensors(tmp_path: Path) -> None:
    import random

    import numpy as np

    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    random.gauss(0.0, 1.0)  # leaves a cached gaussian in Python's state
    np.random.standard_normal()
    ckpt.save_rng_state(tmp_path, rank=3)
    expected = (random.random(), random.gauss(0.0, 1.0), np.random.standard_normal(3), torch.rand(4))
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    ckpt.load_rng_state(tmp_path, rank=3)
    actual = (random.random(), random.gauss(0.0, 1.0), np.random.standard_normal(3), torch.rand(4))
    assert actual[:2] == expected[:2]
    assert np.array_equal(actual[2], expected[2]) and torch.equal(actual[3], expected[3])
    saved = ckpt.read_json_file(tmp_path / "rng_state_3.json")
    assert len(saved["numpy"]["keys"]) == 624 and len(saved["python"]["state"]) == 625


def test_malformed_rng_state_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    ckpt.save_rng_state(tmp_path, rank=0)
    path = tmp_path / "rng_state_0.json"
    state = ckpt.read_json_file(path)
    state["numpy"]["keys"] = state["numpy"]["keys"][:10]
    ckpt.write_json(path, state)
    with pytest.raises(ckpt.ResumeError, match=r"rng_state_0\.json: not a valid RNG state") as caught:
        ckpt.load_rng_state(tmp_path, rank=0)
    assert "\n" not in str(caught.value)


def test_accelerate_pickle_checkpoints_are_refused_before_anything_is_read(tmp_path: Path) -> None:
    folder = tmp_path / ckpt.checkpoint_name(4)
    folder.mkdir()
    (folder / "custom_checkpoint_0.pkl").write_bytes(b"\x80\x04K\x01.")
    ckpt.write_json(folder / ckpt.TRAINER_STATE_NAME, {"global_step": 4})
    state = ckpt.read_trainer_state(folder)
    with pytest.raises(ckpt.ResumeError, match=r"custom_checkpoint_0\.pkl: refusing to load a pickle"):
        ckpt.check_safe_layout(folder, state)
    (folder / "custom_checkpoint_0.pkl").unlink()
    with pytest.raises(ckpt.ResumeError, match="checkpoint format None"):
        ckpt.check_safe_layout(folder, state)
    ckpt.check_safe_layout(folder, {**state, "checkpoint_format": ckpt.CHECKPOINT_FORMAT})


def test_optimizer_state_with_a_foreign_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "optimizer.bin"
    torch.save({"state": {}, "param_groups": [{"lr": 0.1, "hook": math.floor}]}, path)
    with pytest.raises(ckpt.ResumeError, match=r"optimizer\.bin: refusing to load") as caught:
        ckpt.load_torch_state(path)
    assert "\n" not in str(caught.value)
    torch.save({"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1}]}, path)
    assert ckpt.load_torch_state(path)["param_groups"] == [{"lr": 0.1}]
