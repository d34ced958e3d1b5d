"""The default model and example bundled in the package: offline use, numbers, and how they are built."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

import demixers
from demixers import bundled
from demixers.build_default_model import ABOUT
from demixers.evaluation import pit_si_snr, si_snr
from demixers.trainers.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _si_snri(references: np.ndarray, estimates: np.ndarray, mixture: np.ndarray) -> float:
    scores, _ = pit_si_snr(references, estimates)
    baseline = si_snr(references, np.broadcast_to(mixture, references.shape))
    return float(np.mean(np.asarray(scores) - np.asarray(baseline)))


def _offline_env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: any network attempt fails at once
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def test_bundle_is_complete_small_and_loads() -> None:
    from transformers import AutoModel

    folder = bundled.default_model_dir()
    weights = folder / "model.safetensors"
    assert weights.stat().st_size <= 20 * 10**6
    model = AutoModel.from_pretrained(folder)
    assert model.config.sampling_rate == 8000 and model.config.audio_channels == 1
    assert list(model.config.source_names) == ["speaker_1", "speaker_2"]
    example = bundled.example_mixture()
    info = soundfile.info(example.mixture)
    assert (info.samplerate, info.channels) == (8000, 1) and 9.0 <= info.duration <= 12.0
    # the mixture is the exact sum of the bundled references (the generator's 16-bit samples)
    mixture = soundfile.read(example.mixture, dtype="float64")[0]
    references = np.stack([soundfile.read(path, dtype="float64")[0] for path in example.references])
    np.testing.assert_allclose(references.sum(axis=0), mixture, atol=1.5 / 32768)


def test_model_card_says_what_the_model_is_and_reports_the_test_split() -> None:
    from huggingface_hub import ModelCard

    folder = bundled.default_model_dir()
    card = ModelCard.load(folder / "README.md")
    assert "synthetic" in card.text and "demos and tests" in card.text
    assert "demixers convert" in card.text
    results = json.loads((folder / "results.json").read_text())
    assert results["split"] == "test"
    mean_si_snri = results["aggregate"]["average"]["si_snri"]["headline"]
    assert f"{mean_si_snri:.2f}" in card.text
    index = card.data.to_dict()["model-index"][0]["results"][0]
    values = {metric["type"]: metric["value"] for metric in index["metrics"]}
    assert values, index
    bundle = json.loads((folder / "bundle.json").read_text())
    assert "training wall time" in bundle["training_summary"]
    assert "training hardware" in bundle["training_summary"]
    stage_1 = load_config(ROOT / "configs" / "default_speech_8k.yaml")
    stage_2 = load_config(ROOT / "configs" / "default_speech_8k_finetune.yaml")
    assert stage_2["model"]["pretrained"] == "runs/default_speech_8k/best"  # stage 1's output folder
    shipped = json.loads((folder / "config.json").read_text())
    architecture = dict(stage_1["model"]["config"])
    assert len(shipped["source_names"]) == architecture.pop("num_speakers")
    for key, value in architecture.items():
        assert shipped[key] == value, key  # the shipped weights have stage 1's architecture


def test_pipeline_without_a_model_uses_the_bundle_and_reproduces_the_example_score() -> None:
    from transformers import pipeline

    separator = pipeline(demixers.PIPELINE_TASK)
    assert Path(separator.model.name_or_path).resolve() == bundled.DEFAULT_MODEL_DIR.resolve()
    example = bundled.example_mixture()
    stems = separator(str(example.mixture))
    assert [stem["label"] for stem in stems] == ["speaker_1", "speaker_2"]
    mixture = soundfile.read(example.mixture, dtype="float32")[0]
    references = np.stack([soundfile.read(path, dtype="float32")[0] for path in example.references])
    estimates = np.stack([stem["audio"][0] for stem in stems])
    assert estimates.shape == references.shape
    improvement = _si_snri(references, estimates, mixture)
    assert improvement == pytest.approx(example.info["si_snri_db"], abs=0.05)
    assert improvement > 4.0  # the bundled model really separates held-back voices


def test_separate_cli_without_model_works_offline(tmp_path: Path) -> None:
    example = bundled.example_mixture()
    completed = subprocess.run(
        [sys.executable, "-m", "demixers.cli", "separate", str(example.mixture), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        env=_offline_env(),
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert "bundled default model" in completed.stderr
    stems = sorted(path.name for path in (tmp_path / "mixture").iterdir())
    assert stems == ["speaker_1.wav", "speaker_2.wav"]
    mixture = soundfile.read(example.mixture, dtype="float32")[0]
    references = np.stack([soundfile.read(path, dtype="float32")[0] for path in example.references])
    estimates = np.stack([soundfile.read(tmp_path / "mixture" / name, dtype="float32")[0] for name in stems])
    # 16-bit files: the score moves by far less than 0.1 dB
    assert _si_snri(references, estimates, mixture) == pytest.approx(example.info["si_snri_db"], abs=0.1)


def test_default_output_folder_is_separated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from demixers.cli import main

    monkeypatch.chdir(tmp_path)
    example = bundled.example_mixture()
    assert main(["separate", str(example.mixture), "-q"]) == 0
    assert sorted(p.name for p in (tmp_path / "separated" / "mixture").iterdir()) == [
        "speaker_1.wav",
        "speaker_2.wav",
    ]


def test_demo_prints_stems_and_the_example_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from demixers.demo import main

    assert main(["--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert str(tmp_path / "stems" / "mixture" / "speaker_1.wav") in out
    line = next(line for line in out.splitlines() if "SI-SNRi" in line)
    value = float(line.rsplit(":", 1)[1].split()[0])
    assert value == pytest.approx(bundled.example_mixture().info["si_snri_db"], abs=0.1)


def test_demo_refuses_half_given_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from demixers.demo import main

    assert main(["--output-dir", str(tmp_path), "--mixture", str(bundled.example_mixture().mixture)]) == 2
    assert "--mixture and --references together" in capsys.readouterr().err


def test_missing_bundle_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bundled, "DEFAULT_MODEL_DIR", tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="bundled default model is incomplete"):
        bundled.default_model_dir()
    monkeypatch.setattr(bundled, "EXAMPLE_DIR", tmp_path / "gone")
    with pytest.raises(FileNotFoundError, match="bundled example is incomplete"):
        bundled.example_mixture()


def test_about_text_is_rendered_in_cards(tmp_path: Path) -> None:
    from demixers import ConvTasNetConfig, ConvTasNetForSourceSeparation
    from demixers.model_cards import render_model_card

    config = ConvTasNetConfig(encoder_channels=8, bottleneck_channels=4, hidden_channels=8, skip_channels=4,
                              num_blocks=1, num_repeats=1)  # fmt: skip
    ConvTasNetForSourceSeparation(config).save_pretrained(tmp_path)
    text = render_model_card(tmp_path, about=ABOUT)
    summary_end = text.index("## Model description")
    assert "trained with `demixers train` on *synthetic*" in " ".join(text[:summary_end].split())
    assert "What this is" not in render_model_card(tmp_path)
