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
        info = soundfile.info(str(path))
        dtype = _READ_DTYPE.get(info.subtype, "float32")
        data, rate = soundfile.read(str(path), dtype=dtype, always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise ValueError(f"not a readable audio file ({error})") from None
    subtype = info.subtype if info.subtype in _READ_DTYPE else "FLOAT"
    return PCM(np.ascontiguousarray(data), int(rate), subtype)


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

    try:
        samples, rate = soundfile.read(
            io.BytesIO(data), start=start, stop=stop, dtype="float32", always_2d=True
        )
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise ValueError(f"{name}: cannot decode the stored audio ({error})") from None
    return np.ascontiguousarray(samples.T), int(rate)


def bytes_info(data: bytes) -> tuple[int, int, int]:
    """``(num_frames, channels, sampling_rate)`` of stored bytes, read from the header only."""
    import soundfile

    info = soundfile.info(io.BytesIO(data))
    return int(info.frames), int(info.channels), int(info.samplerate)
