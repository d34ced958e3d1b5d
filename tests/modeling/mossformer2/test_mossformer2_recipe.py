"""The MossFormer2 recipes: the tiny one learns on synthetic speech, the paper's one is the release."""

from __future__ import annotations

from pathlib import Path

import pytest

from demixers.cli import main as demixers_main
from demixers.trainers.config import load_config

REPO = Path(__file__).resolve().parents[3]
STEPS = 60


@pytest.fixture(scope="module")
def speech_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic Libri2Mix prepared in the format ``demixers prepare`` writes."""
    from demixers.datasets_scripts import prepare_corpus
    from demixers.datasets_scripts.synthetic_librimix import make_synthetic_librimix

    root = tmp_path_factory.mktemp("speech")
    raw = make_synthetic_librimix(
        root / "raw", items={"train": 40, "validation": 6, "test": 2}, seconds=(1.0, 1.6), seed=0
    )
    prepared = root / "prepared"
    prepare_corpus("librimix", raw, prepared, progress=False)
    return prepared


def test_tiny_recipe_learns(speech_corpus: Path, tmp_path: Path) -> None:
    from tests.trainers.conftest import read_jsonl

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
            "--data.max_eval_samples=6",
            "--training.progress_bar=false",
        ]
    )
    assert code == 0
    curve = [(entry["step"], entry["si_snri"]) for entry in read_jsonl(out / "eval_log.jsonl")]
    print("MossFormer2 tiny recipe, validation SI-SNRi (dB) by step:", [(s, round(v, 2)) for s, v in curve])
    assert [step for step, _ in curve] == [20, 40, 60]
    assert curve[-1][1] > curve[0][1] + 1.0, curve  # it learns
    assert curve[-1][1] > 1.0, curve  # and separates better than returning the mixture


def test_libri2mix_recipe_is_the_released_architecture() -> None:
    from demixers import MossFormer2Config

    config = load_config(REPO / "configs" / "mossformer2_libri2mix_8k.yaml")
    assert config["model"]["type"] == "mossformer2"
    model_config = MossFormer2Config(**config["model"]["config"])
    assert model_config.to_diff_dict() == MossFormer2Config().to_diff_dict()
    training = config["training"]
    assert (training["learning_rate"], training["max_grad_norm"], training["batch_size"]) == (1.5e-4, 10.0, 1)
    assert config["data"]["segment_seconds"] == 4.0 and config["data"]["dynamic_mixing"] is True
