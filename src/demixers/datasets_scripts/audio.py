"""Lossless reading and encoding of corpus audio, and decoding of the stored bytes.

Corpus files are read in their *native* sample type (``int16`` for 16-bit PCM, ``int32`` for 24- and
32-bit PCM, float for float files) so that re-encoding them is bit-exact: 8/16/24-bit PCM becomes
FLAC of the same depth, 32-bit integer PCM and float data become WAV (FLAC has no such sample types).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import resample as resample_audio

# soundfile subtype of the source -> (container, subtype) of the stored copy
_LOSSLESS_TARGET = {
    "PCM_S8": ("FLAC", "PCM_S8"),
    "PCM_U8": ("FLAC", "PCM_S8"),
    "PCM_16": ("FLAC", "PCM_16"),
    "PCM_24": ("FLAC", "PCM_24"),
    "PCM_32": ("WAV", "PCM_32"),
    "FLOAT": ("WAV", "FLOAT"),
    "DOUBLE": ("WAV", "DOUBLE"),
}

# subtype -> numpy dtype soundfile reads it into without loss
_READ_DTYPE = {
    "PCM_S8": "int16",
    "PCM_U8": "int16",
    "PCM_16": "int16",
    "PCM_24": "int32",
    "PCM_32": "int32",
    "FLOAT": "float32",
    "DOUBLE": "float64",
}

# frames read at a time (bounds what a lying header can make us allocate)
READ_BLOCK_FRAMES = 1 << 16

# full-scale of each integer sample type as soundfile returns it
_INT_SCALE = {"int16": 2.0**15, "int32": 2.0**31}


@dataclass
class PCM:
    """Samples ``(time, channels)`` in their native type, with what is needed to store them again."""

    samples: np.ndarray
    sampling_rate: int
    subtype: str

    @property
    def num_frames(self) -> int:
        return int(self.samples.shape[0])

    @property
    def num_channels(self) -> int:
        return int(self.samples.shape[1])

    def as_float64(self) -> np.ndarray:
        """Samples scaled to [-1, 1] as float64 ``(time, channels)`` (exact for every PCM type)."""
        scale = _INT_SCALE.get(str(self.samples.dtype))
        if scale is None:
            return self.samples.astype(np.float64)
        return self.samples.astype(np.float64) / scale

    def lsb(self) -> float:
        """Size of one quantisation step on the [-1, 1] scale (0 for float data)."""
        return {"PCM_S8": 2.0**-7, "PCM_U8": 2.0**-7, "PCM_16": 2.0**-15, "PCM_24": 2.0**-23}.get(
            self.subtype, 2.0**-31 if self.subtype == "PCM_32" else 0.0
        )

    def channel(self, index: int) -> PCM:
        return PCM(np.ascontiguousarray(self.samples[:, index : index + 1]), self.sampling_rate, self.subtype)


def read_pcm(path: str | os.PathLike[str]) -> PCM:
    """Read a file without any conversion of its samples (raises ``ValueError`` when unreadable)."""
    import soundfile

    path = Path(path)
    try:
        with soundfile.SoundFile(str(path)) as handle:
            subtype = handle.subtype
            data = read_blocks(handle, _READ_DTYPE.get(subtype, "float32"))
            rate = handle.samplerate
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise ValueError(f"not a readable audio file ({error})") from None
    subtype = subtype if subtype in _READ_DTYPE else "FLOAT"
    return PCM(data, int(rate), subtype)


def read_blocks(handle, dtype: str, frames: int | None = None) -> np.ndarray:
    """Read ``frames`` (default: all) from an open `soundfile.SoundFile` as ``(time, channels)``.

    A header's frame count is a claim, not a size: ``soundfile.read`` allocates it up front, so a
    few-kilobyte file claiming billions of frames would allocate gigabytes. Reading fixed-size blocks
    until the data ends allocates only what is really there.
    """
    blocks: list[np.ndarray] = []
    remaining = frames
    while remaining is None or remaining > 0:
        size = READ_BLOCK_FRAMES if remaining is None else min(READ_BLOCK_FRAMES, remaining)
        block = handle.read(size, dtype=dtype, always_2d=True)
        if not len(block):
            break
        blocks.append(block)
        if remaining is not None:
            remaining -= len(block)
        if len(block) < size:
            break
    if not blocks:
        return np.zeros((0, handle.channels), dtype=dtype)
    return np.ascontiguousarray(blocks[0] if len(blocks) == 1 else np.concatenate(blocks))


def pcm_from_int_sum(samples: np.ndarray, sampling_rate: int) -> PCM:
    """Store a sum of 16-bit channels exactly: 16-bit when it fits, float32 otherwise.

    ``samples`` holds integers on the 16-bit scale (e.g. ``left + right`` computed in int32).
    """
    if samples.min(initial=0) >= -(2**15) and samples.max(initial=0) < 2**15:
        return PCM(samples.astype(np.int16), sampling_rate, "PCM_16")
    # |x| < 2**16 and x / 2**15 is exact in float32 (17 significant bits at most)
    return PCM((samples.astype(np.float64) / 2.0**15).astype(np.float32), sampling_rate, "FLOAT")


def encode_pcm(pcm: PCM) -> tuple[bytes, str]:
    """Encode losslessly; return the bytes and the file extension (``"flac"`` or ``"wav"``)."""
    import soundfile

    container, subtype = _LOSSLESS_TARGET.get(pcm.subtype, ("WAV", "FLOAT"))
    samples = pcm.samples
    if container == "WAV" and subtype == "FLOAT" and samples.dtype != np.float32:
        samples = samples.astype(np.float32)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, pcm.sampling_rate, format=container, subtype=subtype)
    return buffer.getvalue(), container.lower()


def decode_bytes(
    data: bytes, start: int = 0, stop: int | None = None, name: str = "audio"
) -> tuple[np.ndarray, int]:
    """Decode stored bytes (optionally frames ``[start, stop)``) into float32 ``(channels, time)``."""
    import soundfile

    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"{name}: invalid frame range [{start}, {stop})")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as handle:
            if start:
                handle.seek(min(start, handle.frames))
            samples = read_blocks(handle, "float32", None if stop is None else stop - start)
            rate = handle.samplerate
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise ValueError(f"{name}: cannot decode the stored audio ({error})") from None
    return np.ascontiguousarray(samples.T), int(rate)


def bytes_info(data: bytes) -> tuple[int, int, int]:
    """``(num_frames, channels, sampling_rate)`` of stored bytes, read from the header only."""
    import soundfile

    info = soundfile.info(io.BytesIO(data))
    return int(info.frames), int(info.channels), int(info.samplerate)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono ``audio`` resampled from ``rate`` to ``target`` Hz as float64 (the package's one soxr HQ
    resampler, `demixers.audio.resample`); a copy-free no-op when the rates agree."""
    return resample_audio(np.asarray(audio, dtype=np.float64), rate, target)
