"""The MossFormer2 recipes: the tiny one learns on synthetic speech, the paper's one is the release.

Uses the session's synthetic speech corpus (``speech_corpus`` of tests/trainers/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

from demixers.cli import main as demixers_main
from demixers.trainers.config import load_config
from tests.trainers.conftest import REPO, read_jsonl

# The tiny recipe, shortened to fit the test budget: validation every 20 steps on 4 utterances.
STEPS = 40


def test_tiny_recipe_learns(speech_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "tiny"
    code = demixers_main(
        [
            "train",
            "--config",
            str(REPO / "configs" / "mossformer2_tiny_cpu.yaml"),
            "--output-dir",
            str(out),
            f"--data.dataset={speech_corpus}",
            f"--training.max_steps={STEPS}",
            "--training.eval_steps=20",
            "--data.max_eval_samples=4",
            "--training.progress_bar=false",
        ]
    )
    assert code == 0
    curve = [(entry["step"], entry["si_snri"]) for entry in read_jsonl(out / "eval_log.jsonl")]
    print("MossFormer2 tiny recipe, validation SI-SNRi (dB) by step:", [(s, round(v, 2)) for s, v in curve])
    assert [step for step, _ in curve] == [20, 40]
    assert curve[-1][1] > curve[0][1] + 1.0, curve  # validation SI-SNRi rises: it learns
    losses = [entry["loss"] for entry in read_jsonl(out / "train_log.jsonl") if "loss" in entry]
    assert len(losses) >= 4 and sum(losses[-2:]) < sum(losses[:2]) - 1.0, losses  # the loss falls


def test_libri2mix_recipe_is_the_released_architecture() -> None:
    from demixers import MossFormer2Config

    config = load_config(REPO / "configs" / "mossformer2_libri2mix_8k.yaml")
    assert config["model"]["type"] == "mossformer2"
    model_config = MossFormer2Config(**config["model"]["config"])
    assert model_config.to_diff_dict() == MossFormer2Config().to_diff_dict()
    training = config["training"]
    assert (training["learning_rate"], training["max_grad_norm"], training["batch_size"]) == (1.5e-4, 10.0, 1)
    assert config["data"]["segment_seconds"] == 4.0 and config["data"]["dynamic_mixing"] is True
