"""Reading, resampling and validating audio for the pipeline (soundfile + soxr, no torchaudio)."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..audio_utils import as_channels_first, check_sampling_rate


def read_audio(source: str | os.PathLike[str] | bytes, name: str | None = None) -> tuple[np.ndarray, int]:
    """Decode a file path or encoded bytes into float32 ``(channels, time)`` and its rate.

    Raises ``FileNotFoundError`` for a missing path, ``IsADirectoryError`` for a folder and
    ``ValueError`` for anything soundfile cannot decode or that holds no samples.
    """
    import soundfile

    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "audio bytes"
        if len(source) == 0:
            raise ValueError(f"{label}: empty input (0 bytes)")
        handle: Any = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        label = name or str(path)
        if path.is_dir():
            raise IsADirectoryError(f"{label}: is a directory, not an audio file")
        if not path.exists():
            raise FileNotFoundError(f"{label}: no such file")
        if path.stat().st_size == 0:
            raise ValueError(f"{label}: empty file (0 bytes)")
        handle = str(path)
    try:
        data, sampling_rate = _read_channels_first(soundfile, handle)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise ValueError(f"{label}: not a readable audio file ({error})") from None
    if data.shape[-1] == 0:
        raise ValueError(f"{label}: contains zero samples")
    return as_channels_first(data, name=label, time_axis=1), int(sampling_rate)


def _read_channels_first(soundfile: Any, handle: Any, block: int = 1 << 16) -> tuple[np.ndarray, int]:
    """Decode block by block straight into a float32 ``(channels, time)`` array.

    soundfile returns ``(time, channels)``; transposing a whole decoded file would hold two copies
    of it at once, so blocks are copied into a preallocated channels-first array instead.
    """
    with soundfile.SoundFile(handle) as audio_file:
        channels, sampling_rate = audio_file.channels, audio_file.samplerate
        capacity = max(int(audio_file.frames), 0) if audio_file.frames < 2**62 else block
        data = np.empty((channels, capacity), dtype=np.float32)
        filled = 0
        for chunk in audio_file.blocks(blocksize=block, dtype="float32", always_2d=True):
            if filled + len(chunk) > data.shape[1]:  # frame count was an estimate (compressed formats)
                grown = np.empty((channels, max(2 * data.shape[1], filled + len(chunk))), dtype=np.float32)
                grown[:, :filled] = data[:, :filled]
                data = grown
            data[:, filled : filled + len(chunk)] = chunk.T
            filled += len(chunk)
    if filled < data.shape[1]:
        data = np.ascontiguousarray(data[:, :filled])
    return data, sampling_rate


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample float32 ``(channels, time)`` with soxr's high-quality filter."""
    orig_rate = check_sampling_rate(orig_rate)
    target_rate = check_sampling_rate(target_rate)
    if orig_rate == target_rate:
        return waveform
    import soxr

    # soxr expects (time, channels)
    resampled = soxr.resample(np.ascontiguousarray(waveform.T), orig_rate, target_rate, quality="HQ")
    return np.ascontiguousarray(resampled.T.astype(np.float32, copy=False))
