"""End to end: ``demixers train`` with the tiny recipe learns to separate generated speech mixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from demixers.cli import main as demixers_main
from tests.trainers.conftest import REPO, read_jsonl

# The tiny recipe, shortened to fit the test budget: validation every 40 steps on 8 utterances.
STEPS = 120


def test_tiny_recipe_learns_to_separate(
    speech_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tiny"
    code = demixers_main(
        [
            "train",
            "--config",
            str(REPO / "configs" / "mossformer_tiny_cpu.yaml"),
            "--output-dir",
            str(out),
            f"--data.dataset={speech_corpus}",
            f"--training.max_steps={STEPS}",
            "--training.eval_steps=40",
            "--training.progress_bar=false",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    curve = [(entry["step"], entry["si_snri"]) for entry in read_jsonl(out / "eval_log.jsonl")]
    print("validation SI-SNRi (dB) by step:", [(step, round(value, 2)) for step, value in curve])
    assert [step for step, _ in curve] == [40, 80, 120]
    assert curve[-1][1] > 3.0, curve  # well above 0 dB: the model separates the two voices
    assert curve[-1][1] > curve[0][1] + 2.0, curve

    # the resolved recipe is printed and saved; overrides are in it
    saved = yaml.safe_load((out / "train_config.yaml").read_text())
    assert saved["training"]["max_steps"] == STEPS and saved["data"]["dataset"] == str(speech_corpus)
    assert "resolved config:" in printed and f"max_steps: {STEPS}" in printed
    assert "epoch 1 | step" in printed  # one summary line per epoch
    # best/ holds the best validation's weights, its results (demixers evaluate's format) and card inputs
    best = yaml.safe_load((out / "best" / "eval_results.json").read_text())
    assert best["si_snri"] == pytest.approx(max(value for _, value in curve))
    assert (out / "best" / "results.json").is_file() and (out / "best" / "config.json").is_file()
    # TensorBoard event files were written through the Accelerate tracker
    assert list((out / "logs").rglob("events.out.tfevents.*"))
