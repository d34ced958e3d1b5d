"""The DPRNN-TasNet recipe, a few trainer steps on generated speech and the pipeline on the result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import AutoConfig, AutoModel, pipeline

import demixers
from demixers.modeling.dprnn_tasnet import DPRNNTasNetConfig, DPRNNTasNetForSourceSeparation
from demixers.trainers.config import load_config
from demixers.trainers.trainer import Trainer
from tests.trainers.conftest import _fresh_accelerate_state, recipe, speech_corpus  # noqa: F401  (fixtures)

demixers.register_model_family(DPRNNTasNetConfig, DPRNNTasNetForSourceSeparation)

REPO = Path(__file__).resolve().parents[3]
MICRO = dict(
    sampling_rate=8000, num_speakers=2, encoder_channels=16, encoder_kernel_size=16, bottleneck_channels=16,
    hidden_size=16, chunk_size=20, num_blocks=1,
)  # fmt: skip


def test_recipe_builds_the_papers_model() -> None:
    config = load_config(REPO / "configs" / "dprnn_tasnet_libri2mix_8k.yaml")
    assert config["model"]["type"] == "dprnn_tasnet"
    built = AutoConfig.for_model(config["model"]["type"], **config["model"]["config"])
    assert built.to_dict() == DPRNNTasNetConfig().to_dict()
    assert (config["training"]["loss"], config["data"]["segment_seconds"]) == ("pit_si_snr", 4.0)


def test_trainer_steps_and_pipeline_serve_the_result(speech_corpus: Path, tmp_path: Path) -> None:  # noqa: F811
    config = recipe(
        speech_corpus,
        tmp_path,
        model={"type": "dprnn_tasnet", "config": dict(MICRO)},
        training={"max_steps": 3, "eval_steps": 3},
    )
    summary = Trainer(config, tmp_path / "run").train()
    assert summary["global_step"] == 3
    model = AutoModel.from_pretrained(tmp_path / "run" / "best")
    assert type(model) is DPRNNTasNetForSourceSeparation and model.config.encoder_channels == 16
    separator = pipeline("audio-source-separation", model=str(tmp_path / "run" / "best"))
    audio = np.random.default_rng(0).standard_normal(8000 * 3).astype(np.float32) * 0.1
    result = separator(audio, sampling_rate=16000)
    assert [item["label"] for item in result] == ["speaker_1", "speaker_2"]
    assert all(
        item["audio"].shape == (1, audio.shape[0]) and item["sampling_rate"] == 16000 for item in result
    )
    assert all(np.isfinite(item["audio"]).all() for item in result)
