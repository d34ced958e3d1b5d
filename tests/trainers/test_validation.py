"""The trainer's validation numbers are those of `demixers.evaluation.evaluate_separation`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from demixers.evaluation import evaluate_separation
from demixers.trainers.trainer import Trainer
from tests.trainers.conftest import read_jsonl, recipe


def _expected(trainer: Trainer, metrics: list[str], task: str) -> dict:
    model = trainer.unwrapped.eval()

    def separate(mixture: np.ndarray, rate: int) -> np.ndarray:
        with torch.no_grad():
            return model(input_values=torch.from_numpy(mixture)[None]).audio_values[0].numpy()

    items = []
    for index in range(len(trainer.eval_dataset)):
        item = dict(trainer.eval_dataset[index])
        item["sampling_rate"] = trainer.sampling_rate
        items.append(item)
    return evaluate_separation(separate, items, trainer.source_names, metrics, task=task)


def test_speech_validation_is_pit_si_snri_of_the_evaluation_module(
    speech_corpus: Path, tmp_path: Path
) -> None:
    trainer = Trainer(recipe(speech_corpus, tmp_path), tmp_path / "run")
    trainer.setup()
    summary = trainer.evaluate()
    expected = _expected(trainer, ["si_snri", "si_snr"], "speech")
    assert summary["num_items"] == expected["num_items"] == 4
    for name in ("si_snri", "si_snr"):
        assert summary[name] == pytest.approx(expected["aggregate"]["average"][name]["headline"], abs=1e-5)
    assert trainer.last_results["aggregate"].keys() == expected["aggregate"].keys()


def test_music_validation_is_museval_sdr_and_l1(speech_corpus: Path, tmp_path: Path) -> None:
    # a fixed-order "music" model (named stems): loss auto -> L1, metric auto -> museval SDR
    config = recipe(
        speech_corpus,
        tmp_path,
        model={
            "type": "demixers_toy_splitter",
            "config": {"sampling_rate": 8000, "source_names": ["bass", "vocals"]},
        },
        data={"sources": ["s1", "s2"], "remix": True, "gain_db_range": [-3.0, 3.0], "sign_flip_prob": 0.5},
        training={"loss": "auto", "learning_rate": 0.05, "max_steps": 2, "eval_steps": 2},
    )
    out = tmp_path / "run"
    trainer = Trainer(config, out)
    trainer.train()
    assert trainer.loss_name == "l1" and trainer.metric_name == "sdr"
    logged = read_jsonl(out / "eval_log.jsonl")[-1]
    expected = _expected(trainer, ["sdr", "usdr"], "music")
    # median over 1 s frames, then over items, averaged over stems: museval's number
    assert logged["sdr"] == pytest.approx(expected["aggregate"]["average"]["sdr"]["headline"], abs=1e-6)
    assert logged["usdr"] == pytest.approx(expected["aggregate"]["average"]["usdr"]["headline"], abs=1e-6)
    assert set(read_jsonl(out / "train_log.jsonl")[0]["loss_per_source"]) == {"bass", "vocals"}
