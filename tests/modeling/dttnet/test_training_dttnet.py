"""A short DTTNet training run on generated data, and the shipped recipe."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from demixers.modeling.dttnet import DTTNetConfig, DTTNetForSourceSeparation
from demixers.trainers.config import load_config
from tests.modeling.dttnet.tiny_configs import tiny_dttnet_config

REPO = Path(__file__).resolve().parents[3]


def tone_mixtures(
    generator: torch.Generator, batch: int, length: int = 352
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stereo mixtures of a low-band target (3 tones in STFT bins 2-14 of the tiny 128-point STFT)
    and a higher-band interference (3 tones in bins 20-30), random amplitudes and phases; labels are
    `(target, mixture - target)`."""
    n = torch.arange(length, dtype=torch.float32)

    def tones(low: float, high: float) -> torch.Tensor:
        bins = low + (high - low) * torch.rand(batch, 2, 3, 1, generator=generator)
        amplitude = 0.1 + 0.2 * torch.rand(batch, 2, 3, 1, generator=generator)
        phase = 2 * math.pi * torch.rand(batch, 2, 3, 1, generator=generator)
        return (amplitude * torch.cos(2 * math.pi * bins * n / 128 + phase)).sum(2)

    target, interference = tones(2, 14), tones(20, 30)
    return target + interference, torch.stack([target, interference], dim=1)


def run_single_threaded(function: str) -> dict[str, float]:
    """Call ``function`` of this module in a child process limited to one thread and return its result.

    The tiny model's operations are far too small to gain from intra-op threads; on two shared cores
    the threads' synchronisation made the 40 steps ~10x slower than single-threaded (and the parent's
    thread setting must not be changed).
    """
    code = f"import json; from {__name__} import {function}; print('RESULT', json.dumps({function}()))"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.split("RESULT", 1)[1])


def test_a_short_training_run_lowers_the_loss() -> None:
    losses = run_single_threaded("train_on_tone_mixtures")
    assert math.isfinite(losses["final"])
    assert losses["final"] < 0.65 * losses["initial"], losses  # 0.212 -> about 0.11 here


def train_on_tone_mixtures() -> dict[str, float]:
    """40 Adam steps (batch 2, one chunk per item) on `tone_mixtures`; held-out loss before and after."""
    torch.manual_seed(0)
    model = DTTNetForSourceSeparation(tiny_dttnet_config()).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    held_out = tone_mixtures(torch.Generator().manual_seed(123), batch=4)

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(model(input_values=held_out[0], labels=held_out[1]).loss)

    initial = held_out_loss()
    generator = torch.Generator().manual_seed(1)
    for _ in range(40):  # one chunk per item (352 samples = one chunk stride)
        mixture, labels = tone_mixtures(generator, batch=2)
        loss = model(input_values=mixture, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"initial": initial, "final": held_out_loss()}


def test_recipe_builds_the_released_architecture() -> None:
    recipe = load_config(REPO / "configs" / "dttnet_musdb18hq_vocals.yaml")
    assert recipe["model"]["type"] == "dttnet"
    config = DTTNetConfig(**recipe["model"]["config"])
    assert config.to_dict() == DTTNetConfig(**recipe["model"]["config"]).to_dict()
    default = DTTNetConfig()
    for field in (
        "n_fft",
        "hop_length",
        "dim_f",
        "dim_t",
        "num_blocks",
        "growth",
        "num_heads",
        "sampling_rate",
    ):
        assert getattr(config, field) == getattr(default, field), field
    assert config.source_names == ["vocals"] and recipe["data"]["sources"] == ["vocals"]
    assert recipe["data"]["remix"] is False  # remixing only the picked column would drop the accompaniment
    # one training segment is exactly one network chunk's output (no padded second chunk)
    assert round(recipe["data"]["segment_seconds"] * config.sampling_rate) == config.chunk_stride
    training = recipe["training"]
    assert training["optimizer"] == "adamw" and training["learning_rate"] == 2e-4
    assert training["loss"] == "l1" and training["batch_size"] * 2 == 16
