"""Integrated loudness after ITU-R BS.1770-4 (LUFS), for any sampling rate.

The K-weighting filter is the standard's two biquads (a high-shelf "head" filter and the RLB
high-pass), specified at 48 kHz in the recommendation. To measure audio at other rates (8 kHz speech
included) the biquads are designed from their analog prototypes with the bilinear transform at the
actual rate: high-shelf of gain 4.0 dB, Q 0.7072 around 1682 Hz, and second-order high-pass of Q 0.5003
at 38.1 Hz. At 48 kHz this reproduces the coefficients printed in the recommendation to 1e-8.

Gating: 400 ms blocks with 75 % overlap, mean square per channel weighted by the channel gains (1.0 for
the front channels, which is all this module needs), an absolute gate at -70 LUFS and a relative gate
10 LU below the loudness of the blocks above the absolute gate.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
BLOCK_SECONDS = 0.4
BLOCK_OVERLAP = 0.75

# analog prototypes of the two K-weighting stages (fitted to the 48 kHz coefficients of BS.1770)
_SHELF_GAIN_DB = 3.999843853973347
_SHELF_Q = 0.7071752369554196
_SHELF_HZ = 1681.974450955533
_HIGHPASS_Q = 0.5003270373238773
_HIGHPASS_HZ = 38.13547087602444


def k_weighting(sampling_rate: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The two ``(b, a)`` biquads of the K-weighting filter at ``sampling_rate``."""
    if sampling_rate <= 2 * _SHELF_HZ:
        raise ValueError(
            f"sampling_rate must exceed {2 * _SHELF_HZ:.0f} Hz for K-weighting, got {sampling_rate}"
        )
    k = math.tan(math.pi * _SHELF_HZ / sampling_rate)
    v_high = 10.0 ** (_SHELF_GAIN_DB / 20.0)
    v_band = v_high**0.4996667741545416
    a0 = 1.0 + k / _SHELF_Q + k * k
    shelf_b = np.array(
        [
            v_high + v_band * k / _SHELF_Q + k * k,
            2.0 * (k * k - v_high),
            v_high - v_band * k / _SHELF_Q + k * k,
        ]
    )
    shelf_a = np.array([a0, 2.0 * (k * k - 1.0), 1.0 - k / _SHELF_Q + k * k])
    k = math.tan(math.pi * _HIGHPASS_HZ / sampling_rate)
    a0 = 1.0 + k / _HIGHPASS_Q + k * k
    highpass_b = np.array([1.0, -2.0, 1.0])
    highpass_a = np.array([a0, 2.0 * (k * k - 1.0), 1.0 - k / _HIGHPASS_Q + k * k])
    return [(shelf_b / shelf_a[0], shelf_a / shelf_a[0]), (highpass_b, highpass_a / highpass_a[0])]


def integrated_loudness(audio: np.ndarray, sampling_rate: int) -> float:
    """Gated integrated loudness in LUFS of ``audio`` (``(time,)`` or ``(time, channels)``, full scale 1).

    Returns ``-inf`` when every block is below the absolute gate (silence). Raises ValueError for audio
    shorter than one 400 ms block.
    """
    samples = np.asarray(audio, dtype=np.float64)
    if samples.ndim == 1:
        samples = samples[:, None]
    if samples.ndim != 2:
        raise ValueError(f"audio must be (time,) or (time, channels), got shape {np.shape(audio)}")
    block = round(BLOCK_SECONDS * sampling_rate)
    if samples.shape[0] < block:
        raise ValueError(
            f"audio must last at least {BLOCK_SECONDS} s for a loudness measurement, got "
            f"{samples.shape[0]} samples at {sampling_rate} Hz"
        )
    if not np.isfinite(samples).all():
        raise ValueError("audio holds non-finite samples")
    weighted = samples
    for b, a in k_weighting(sampling_rate):
        weighted = lfilter(b, a, weighted, axis=0)
    step = round(block * (1.0 - BLOCK_OVERLAP))
    count = 1 + (samples.shape[0] - block) // step
    # mean square of each block and channel from a running sum: (blocks, channels)
    cumulative = np.concatenate([np.zeros((1, weighted.shape[1])), np.cumsum(weighted**2, axis=0)])
    starts = np.arange(count) * step
    power = (cumulative[starts + block] - cumulative[starts]) / block
    block_power = power.sum(axis=1)  # channel gains are 1 for L, R, C (and mono)
    with np.errstate(divide="ignore"):
        block_loudness = -0.691 + 10.0 * np.log10(block_power)
    kept = block_loudness > ABSOLUTE_GATE_LUFS
    if not kept.any():
        return float("-inf")
    relative_gate = -0.691 + 10.0 * np.log10(block_power[kept].mean()) + RELATIVE_GATE_LU
    kept &= block_loudness > relative_gate
    return float(-0.691 + 10.0 * np.log10(block_power[kept].mean()))


def normalize_loudness(audio: np.ndarray, sampling_rate: int, target_lufs: float) -> np.ndarray:
    """``audio`` scaled so that its integrated loudness is ``target_lufs``; raises ValueError on silence."""
    loudness = integrated_loudness(audio, sampling_rate)
    if not math.isfinite(loudness):
        raise ValueError("cannot normalise the loudness of silence")
    return np.asarray(audio, dtype=np.float64) * 10.0 ** ((target_lufs - loudness) / 20.0)
