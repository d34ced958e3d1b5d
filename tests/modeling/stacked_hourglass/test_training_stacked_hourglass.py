"""A short stacked hourglass training run on generated data, and the shipped recipe."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch

from demixers.modeling.stacked_hourglass import StackedHourglassConfig, StackedHourglassForSourceSeparation
from demixers.trainers.config import load_config
from tests.modeling.stacked_hourglass.tiny_configs import tiny_stacked_hourglass_config

REPO = Path(__file__).resolve().parents[3]


def tone_mixtures(
    generator: torch.Generator, batch: int = 4, length: int = 1008
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mono mixtures of a low band "accompaniment" (3 tones in bins 2-10 of the tiny 64-point STFT) and
    a higher "voice" (3 tones in bins 16-28), random amplitudes and phases."""
    n = torch.arange(length, dtype=torch.float32)

    def tones(low: float, high: float) -> torch.Tensor:
        bins = low + (high - low) * torch.rand(batch, 1, 3, 1, generator=generator)
        amplitude = 0.1 + 0.2 * torch.rand(batch, 1, 3, 1, generator=generator)
        phase = 2 * math.pi * torch.rand(batch, 1, 3, 1, generator=generator)
        return (amplitude * torch.cos(2 * math.pi * bins * n / 64 + phase)).sum(2)

    accompaniment, voice = tones(2, 10), tones(16, 28)
    return accompaniment + voice, torch.stack([accompaniment, voice], dim=1)


def run_single_threaded(function: str) -> dict[str, float]:
    """Call ``function`` of this module in a child process limited to one thread and return its result.

    The tiny model's operations are far too small to gain from intra-op threads; on two shared cores
    the threads' synchronisation made the 40 steps several times slower than single-threaded (and the
    parent's thread setting must not be changed).
    """
    code = f"import json; from {__name__} import {function}; print('RESULT', json.dumps({function}()))"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.split("RESULT", 1)[1])


def test_a_short_training_run_lowers_the_stacked_loss() -> None:
    losses = run_single_threaded("train_on_tone_mixtures")
    assert math.isfinite(losses["final"])
    assert losses["final"] < 0.5 * losses["initial"], losses  # 0.135 -> about 0.034 here


def train_on_tone_mixtures() -> dict[str, float]:
    """40 Adam steps (batch 4) on `tone_mixtures` with the model's stacked loss; held-out loss
    before and after."""
    torch.manual_seed(0)
    model = StackedHourglassForSourceSeparation(tiny_stacked_hourglass_config()).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    held_out = tone_mixtures(torch.Generator().manual_seed(123))

    def held_out_loss() -> float:
        with torch.no_grad():
            return float(model(input_values=held_out[0], labels=held_out[1]).loss)

    initial = held_out_loss()
    generator = torch.Generator().manual_seed(1)
    for _ in range(40):
        mixture, labels = tone_mixtures(generator)
        loss = model(input_values=mixture, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"initial": initial, "final": held_out_loss()}


def test_recipe_builds_the_released_architecture() -> None:
    recipe = load_config(REPO / "configs" / "stacked_hourglass_mir1k.yaml")
    assert recipe["model"]["type"] == "stacked_hourglass"
    config = StackedHourglassConfig(**recipe["model"]["config"])
    assert config.to_dict() == StackedHourglassConfig().to_dict()
    # one training example is the release's 64-frame patch
    samples = round(recipe["data"]["segment_seconds"] * config.sampling_rate)
    assert 1 + samples // config.hop_length == 64
    assert recipe["data"]["sources"] == config.source_names
    training = recipe["training"]
    assert training["loss"] == "model" and training["optimizer"] == "adam"
    assert (
        training["learning_rate"] == 1e-4 and training["batch_size"] == 4 and training["max_steps"] == 15000
    )
