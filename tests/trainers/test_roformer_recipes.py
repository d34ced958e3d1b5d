"""The RoFormer recipes: the MUSDB18-HQ ones load and say what the originals do; the tiny one learns
on generated music."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from demixers.trainers.config import load_config
from tests.trainers.conftest import REPO, read_jsonl
from tests.trainers.synthetic_music import make_synthetic_musdb


@pytest.fixture(scope="module")
def synthetic_music(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few generated tracks in the MUSDB18-HQ layout, prepared like the real corpus."""
    from demixers.datasets_scripts import prepare_corpus

    root = tmp_path_factory.mktemp("music")
    raw = make_synthetic_musdb(root / "raw", {"train": 2, "test": 1}, seconds=1.0, seed=0)
    prepared = root / "prepared"
    prepare_corpus("musdb18hq", raw, prepared, progress=False)
    return prepared


def test_tiny_roformer_recipe_lowers_the_loss(synthetic_music: Path, tmp_path: Path) -> None:
    from demixers.trainers.trainer import Trainer

    steps = 10
    config = load_config(
        REPO / "configs" / "bs_roformer_tiny_cpu.yaml",
        [
            ("data.dataset", str(synthetic_music)),
            ("data.segment_seconds", 0.25),
            ("data.max_eval_samples", 1),
            ("data.eval_max_seconds", 1.0),
            ("training.max_steps", steps),
            ("training.logging_steps", 1),
            ("training.progress_bar", False),
            ("training.report_to", "none"),
        ],
    )
    assert config["training"]["loss"] == "multi_resolution_stft"
    # one thread: the tiny model's operations gain nothing from more, and on two shared cores the
    # threads' synchronisation costs several times the work (the caller's setting is restored)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(config, tmp_path / "run").train()
    finally:
        torch.set_num_threads(threads)
    losses = [entry["loss"] for entry in read_jsonl(tmp_path / "run" / "train_log.jsonl")]
    print("training loss by step:", [round(value, 4) for value in losses])
    assert len(losses) == steps and all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    evaluation = read_jsonl(tmp_path / "run" / "eval_log.jsonl")
    assert evaluation and np.isfinite(evaluation[-1]["sdr"])


@pytest.mark.parametrize(
    ("name", "family", "sources"),
    [
        ("bs_roformer_musdb18hq", "bs_roformer", ["drums", "bass", "other", "vocals"]),
        ("mel_band_roformer_musdb18hq_vocals", "mel_band_roformer", ["vocals"]),
        ("bs_roformer_tiny_cpu", "bs_roformer", ["drums", "bass", "other", "vocals"]),
    ],
)
def test_roformer_recipes_build_their_model_and_use_the_originals_loss(
    name: str, family: str, sources: list[str]
) -> None:
    from transformers import AutoConfig

    import demixers  # noqa: F401  (registers the families)
    from demixers.pipelines.chunking import resolve_chunk_settings

    config = load_config(REPO / "configs" / f"{name}.yaml")
    assert config["model"]["type"] == family
    model_config = AutoConfig.for_model(family, **config["model"]["config"])
    assert model_config.source_names == sources and model_config.num_stems == len(sources)
    training = config["training"]
    assert training["loss"] == "multi_resolution_stft" and training["stft_loss_hop_length"] == 147
    chunking = resolve_chunk_settings(model_config)  # MSST's demix for inference
    assert (chunking.layout, chunking.window, chunking.context) == (
        "padded_from_start",
        "linear_fade",
        "reflect_pad",
    )
    if name != "bs_roformer_tiny_cpu":  # the released sizes, trained on MSST's 8 s chunks
        assert training["stft_loss_window_sizes"] == [4096, 2048, 1024, 512, 256]
        assert training["stft_loss_n_fft"] == model_config.stft_n_fft == 2048
        assert (model_config.dim, model_config.depth) == ((512, 12) if family == "bs_roformer" else (384, 6))
        assert config["data"]["segment_seconds"] * 44100 == model_config.chunk_size == 352800
        assert training["optimizer"] == "adam" and training["learning_rate"] == 5e-5
        assert training["scheduler"] == "plateau" and training["plateau_factor"] == 0.95
