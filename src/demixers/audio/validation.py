"""Validation and normalisation of raw waveforms at the package's public boundaries.

Conventions used throughout demixers:

* a waveform is ``(time,)`` or ``(channels, time)``; batches are ``(batch, channels, time)``;
* integer samples are scaled to [-1, 1] (``int16`` by 2**15, ``int32`` by 2**31, ``uint8`` centred
  on 128); float64/float16/bfloat16 are cast to float32;
* complex, boolean, object and string data are a ``TypeError``; NaN/Inf a ``ValueError`` naming the
  first bad index;
* sampling rates are integers of at least `MIN_SAMPLING_RATE` (1 kHz): below that no recording is
  audio a separation model can use, and a tiny rate turns any resampling into a huge allocation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHANNEL_POLICIES = ("auto", "mean", "first")
MIN_SAMPLING_RATE = 1000


def to_numpy(waveform: Any, name: str = "audio") -> np.ndarray:
    """Return ``waveform`` (numpy array, torch tensor or nested list) as a numpy array."""
    if isinstance(waveform, np.ndarray):
        return waveform
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        torch = None
    if torch is not None and isinstance(waveform, torch.Tensor):
        tensor = waveform.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(waveform, (list, tuple)):
        try:
            return np.asarray(waveform)
        except ValueError as error:
            raise ValueError(f"{name}: could not build an array from a ragged list ({error})") from None
    raise TypeError(
        f"{name}: expected a numpy array, a torch tensor or a list of samples, got {type(waveform).__name__}"
    )


def to_float32(waveform: Any, name: str = "audio") -> np.ndarray:
    """Convert samples to float32, scaling integer PCM to [-1, 1]; reject non-audio dtypes."""
    array = to_numpy(waveform, name)
    kind = array.dtype.kind
    if kind == "f":
        return array.astype(np.float32, copy=False)
    if kind == "i":
        scale = float(2 ** (8 * array.dtype.itemsize - 1))
        return (array.astype(np.float64) / scale).astype(np.float32)
    if kind == "u":
        offset = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array.astype(np.float64) - offset) / offset).astype(np.float32)
    raise TypeError(
        f"{name}: unsupported sample dtype {array.dtype} (expected float or integer PCM; "
        "complex, boolean, object and string arrays are not audio)"
    )


def check_finite(array: np.ndarray, name: str = "audio") -> None:
    """Raise ``ValueError`` naming the first NaN/Inf sample of ``array``."""
    finite = np.isfinite(array)
    if not finite.all():
        first_bad = tuple(int(i) for i in np.argwhere(~finite)[0])
        value = array[first_bad]
        where = f"index {first_bad[-1]}"
        if len(first_bad) > 1:
            where += f" (channel {first_bad[-2]})" if len(first_bad) == 2 else f" (position {first_bad})"
        raise ValueError(f"{name} contains a non-finite sample ({value}) at sample {where}")


def check_sampling_rate(sampling_rate: Any, name: str = "sampling_rate") -> int:
    """Return ``sampling_rate`` as an int of at least `MIN_SAMPLING_RATE` Hz or raise."""
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer, float)):
        raise TypeError(f"{name} must be a positive integer, got {sampling_rate!r}")
    if not np.isfinite(sampling_rate) or sampling_rate <= 0 or int(sampling_rate) != sampling_rate:
        raise ValueError(f"{name} must be a positive integer, got {sampling_rate!r}")
    if sampling_rate < MIN_SAMPLING_RATE:
        raise ValueError(
            f"{name} is {int(sampling_rate)} Hz: rates below {MIN_SAMPLING_RATE} Hz are not audio a "
            "separation model can use"
        )
    return int(sampling_rate)


def as_channels_first(waveform: Any, name: str = "audio", time_axis: int | None = None) -> np.ndarray:
    """Validate one waveform and return it as float32 ``(channels, time)``.

    A 2-D array is read as ``(channels, time)``. When its first axis is longer than its second the
    layout is ambiguous (``(time, channels)`` is what soundfile returns), so ``time_axis`` must say
    which axis is time.
    """
    array = to_float32(waveform, name)
    if array.ndim == 1:
        array = array[None, :]
    elif array.ndim == 2:
        if time_axis is None:
            if array.shape[0] > array.shape[1]:
                raise ValueError(
                    f"{name} has shape {tuple(array.shape)}: more channels than samples is ambiguous; "
                    "pass time_axis=0 for (time, channels) data or time_axis=1 for (channels, time)"
                )
        elif time_axis in (0, -2):
            array = array.T
        elif time_axis not in (1, -1):
            raise ValueError(f"time_axis must be 0 or 1 for a 2-D waveform, got {time_axis}")
    else:
        raise ValueError(
            f"{name} must be 1-D (time,) or 2-D (channels, time), got shape {tuple(array.shape)}"
        )
    if array.shape[-1] == 0:
        raise ValueError(f"{name} is empty (zero samples)")
    if array.shape[0] == 0:
        raise ValueError(f"{name} has zero channels")
    check_finite(array, name)
    return np.ascontiguousarray(array)


def match_channels(
    waveform: np.ndarray, num_channels: int, policy: str = "auto", name: str = "audio"
) -> np.ndarray:
    """Adapt ``(channels, time)`` to ``num_channels``.

    ``policy="auto"``: equal counts pass through, mono is duplicated into every channel, and
    several channels into a mono model are averaged; any other mismatch is a ``ValueError``.
    ``"mean"`` always down-mixes to mono first (then duplicates if needed); ``"first"`` keeps the
    first channel (then duplicates if needed).
    """
    if policy not in CHANNEL_POLICIES:
        raise ValueError(f"channel_policy must be one of {CHANNEL_POLICIES}, got {policy!r}")
    channels = waveform.shape[0]
    if channels == num_channels and policy == "auto":
        return waveform
    if policy == "mean" or (policy == "auto" and num_channels == 1):
        mono = waveform.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
    elif policy == "first":
        mono = waveform[:1]
    elif channels == 1:
        mono = waveform
    else:
        raise ValueError(
            f"{name} has {channels} channels but the model expects {num_channels}; "
            "pick a channel policy ('mean' or 'first') to convert it"
        )
    return np.ascontiguousarray(np.repeat(mono, num_channels, axis=0))
