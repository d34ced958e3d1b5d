"""Shared fixtures of the trainer tests: a generated speech corpus and small recipes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from demixers.trainers.config import load_config

REPO = Path(__file__).resolve().parents[2]

# A very small MossFormer: about 40k parameters, a few hundredths of a second per step on 2 cores
# with half-second segments.
MICRO_MOSSFORMER: dict[str, Any] = {
    "sampling_rate": 8000,
    "num_speakers": 2,
    "encoder_kernel_size": 16,
    "encoder_stride": 8,
    "encoder_channels": 32,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "group_size": 32,
    "query_key_dim": 16,
    "expansion_factor": 2.0,
    "conv_kernel_size": 5,
    "max_rotary_dim": 8,
    "attention_dropout": 0.1,
}


@pytest.fixture(scope="session")
def speech_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic Libri2Mix (LibriMix layout, generated speech-like voices) prepared once with
    ``prepare_corpus`` into a ``save_to_disk`` folder, the format ``demixers prepare`` writes."""
    from demixers.datasets_scripts import prepare_corpus
    from demixers.datasets_scripts.synthetic_librimix import make_synthetic_librimix

    root = tmp_path_factory.mktemp("speech")
    raw = make_synthetic_librimix(
        root / "raw", items={"train": 40, "validation": 8, "test": 2}, seconds=(1.0, 1.6), seed=0
    )
    prepared = root / "prepared"
    prepare_corpus("librimix", raw, prepared, progress=False)
    return prepared


def recipe(dataset: Path, tmp_path: Path, **sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A small MossFormer recipe on ``dataset`` with per-section overrides."""
    model = {"type": "mossformer", "config": dict(MICRO_MOSSFORMER)}
    data = {
        "dataset": str(dataset),
        "train_split": "train_100",
        "eval_split": "validation",
        "segment_seconds": 0.5,
        "samples_per_epoch": 32,
        "max_eval_samples": 4,
        "eval_max_seconds": 1.0,
    }
    training = {
        "seed": 3,
        "batch_size": 4,
        "max_steps": 8,
        "optimizer": "adam",
        "learning_rate": 2e-3,
        "max_grad_norm": 5.0,
        "loss": "pit_si_snr",
        "logging_steps": 1,
        "progress_bar": False,
        "report_to": "none",
    }
    model_overrides = dict(sections.get("model", {}))
    if "type" not in model_overrides and "config" in model_overrides:
        model["config"].update(model_overrides.pop("config"))  # same family: tweak the micro config
    model.update(model_overrides)
    data.update(sections.get("data", {}))
    training.update(sections.get("training", {}))
    pairs = [(f"model.{k}", v) for k, v in model.items()]
    pairs += [(f"data.{k}", v) for k, v in data.items()]
    pairs += [(f"training.{k}", v) for k, v in training.items()]
    pairs += [(f"hub.{k}", v) for k, v in sections.get("hub", {}).items()]
    return load_config(None, pairs)


def write_recipe(config: dict[str, Any], path: Path) -> Path:
    from demixers.trainers.config import save_config

    save_config(config, path)
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Each in-process Trainer gets its own Accelerate state (mixed precision, trackers...)."""
    yield
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
