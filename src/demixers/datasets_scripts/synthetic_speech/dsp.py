"""Signal processing of the synthesized speech: resampling, silence trimming, noise, loudness gains."""

from __future__ import annotations

import math

import numpy as np

from ..audio import resample as _resample
from ..loudness import integrated_loudness
from .constants import SAMPLING_RATE


def resample(audio: np.ndarray, rate: int, target: int = SAMPLING_RATE) -> np.ndarray:
    """``audio`` (float64) at ``target`` Hz (soxr HQ; the corpus rate by default)."""
    return _resample(audio, rate, target)


def trim_silence(
    audio: np.ndarray, sampling_rate: int = SAMPLING_RATE, threshold_db: float = -40.0, pad: float = 0.05
) -> np.ndarray:
    """``audio`` without its leading and trailing 10 ms frames ``threshold_db`` below the loudest frame."""
    frame = max(1, sampling_rate // 100)
    count = len(audio) // frame
    if count == 0:
        return audio
    energy = (audio[: count * frame].reshape(count, frame) ** 2).mean(axis=1)
    if energy.max() <= 0:
        return audio[:0]
    active = np.flatnonzero(energy >= energy.max() * 10 ** (threshold_db / 10))
    margin = round(pad * sampling_rate)
    start = max(0, active[0] * frame - margin)
    stop = min(len(audio), (active[-1] + 1) * frame + margin)
    return audio[start:stop]


def shaped_noise(rng: np.random.Generator, length: int, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Stationary Gaussian noise with a random spectral slope (``f^-slope`` power, slope 0-2) and a slow
    amplitude modulation; float64 ``(time,)``, unnormalised."""
    slope = rng.uniform(0.0, 2.0)
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length, 1.0 / sampling_rate)
    spectrum *= np.maximum(frequencies, 20.0) ** (-slope / 2.0)
    noise = np.fft.irfft(spectrum, n=length)
    t = np.arange(length) / sampling_rate
    modulation = 1.0 + rng.uniform(0.0, 0.4) * np.sin(
        2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0, 2 * np.pi)
    )
    return noise * modulation


def _gain_to(audio: np.ndarray, target_lufs: float) -> float:
    loudness = integrated_loudness(audio, SAMPLING_RATE)
    if not math.isfinite(loudness):
        raise RuntimeError("a synthesized utterance is silent")
    return 10.0 ** ((target_lufs - loudness) / 20.0)
