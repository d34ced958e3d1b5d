"""Shared pieces of the web demo's tests: small mixtures on disk and saved toy models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.toy_models import ToySplitterConfig, ToySplitterForSourceSeparation

# the page must never report usage to gradio's servers from a test
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"


def write_mixture(path: Path, seconds: float, sampling_rate: int, channels: int, seed: int = 0) -> Path:
    """Noise bursts plus a sine (non-silent everywhere), float32 in [-0.5, 0.5], written as 16-bit wav."""
    rng = np.random.default_rng(seed)
    length = round(seconds * sampling_rate)
    time = np.arange(length) / sampling_rate
    audio = 0.2 * np.sin(2 * np.pi * 440.0 * time)[:, None] + 0.1 * rng.standard_normal((length, channels))
    soundfile.write(path, np.clip(audio, -0.5, 0.5).astype(np.float32), sampling_rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="session")
def music_toy_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An exactly additive 4-stem stereo 44.1 kHz toy model folder (no model card)."""
    folder = tmp_path_factory.mktemp("web_models") / "music_toy"
    config = ToySplitterConfig(
        sampling_rate=44100, audio_channels=2, source_names=("drums", "bass", "vocals", "other")
    )
    ToySplitterForSourceSeparation(config).eval().save_pretrained(folder)
    return str(folder)
