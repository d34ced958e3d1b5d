"""Reading and resampling audio, whole or block by block (soundfile + soxr, no torchaudio).

`read_audio` and `resample` work on whole arrays (the in-memory pipeline); `AudioFile`,
`resample_blocks` and `fit_blocks` do the same block by block (the streaming file path).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .validation import as_channels_first, check_sampling_rate


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
    size = len(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).stat().st_size
    try:
        data, sampling_rate = _read_channels_first(soundfile, handle, size)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise ValueError(f"{label}: not a readable audio file ({error})") from None
    if data.shape[-1] == 0:
        raise ValueError(f"{label}: contains zero samples")
    sampling_rate = check_sampling_rate(sampling_rate, name=f"{label} sampling rate")
    return as_channels_first(data, name=label, time_axis=1), sampling_rate


def _read_channels_first(
    soundfile: Any, handle: Any, size: int, block: int = 1 << 16
) -> tuple[np.ndarray, int]:
    """Decode block by block straight into a float32 ``(channels, time)`` array.

    soundfile returns ``(time, channels)``; transposing a whole decoded file would hold two copies
    of it at once, so blocks are copied into a channels-first array instead. Its first capacity
    is the header's frame count only up to what the ``size`` bytes of the file can hold (at
    least one byte per sample): a header is a claim, and a 100-byte file claiming 2**33 frames
    must not allocate 32 GiB. Compressed files that hold more grow the array by doubling.
    """
    with soundfile.SoundFile(handle) as audio_file:
        channels, sampling_rate = audio_file.channels, audio_file.samplerate
        claimed = max(int(audio_file.frames), 0) if 0 <= audio_file.frames < 2**62 else 0
        capacity = max(min(claimed, size // max(channels, 1)), 1)
        data = np.empty((channels, capacity), dtype=np.float32)
        filled = 0
        while True:
            # read() until it comes back empty: blocks() would count down the claimed frames, one
            # empty read per block of a header that lies
            chunk = audio_file.read(block, dtype="float32", always_2d=True)
            if len(chunk) == 0:
                break
            if filled + len(chunk) > data.shape[1]:  # more than the first capacity (compressed formats)
                grown = np.empty((channels, max(2 * data.shape[1], filled + len(chunk))), dtype=np.float32)
                grown[:, :filled] = data[:, :filled]
                data = grown
            data[:, filled : filled + len(chunk)] = chunk.T
            filled += len(chunk)
    if filled < data.shape[1]:
        data = np.ascontiguousarray(data[:, :filled])
    return data, sampling_rate


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample ``(time,)`` or ``(channels, time)`` audio with soxr's high-quality filter.

    float64 input stays float64 (corpus preparation keeps full precision); anything else comes back
    float32. Equal rates return the input unchanged.
    """
    orig_rate = check_sampling_rate(orig_rate)
    target_rate = check_sampling_rate(target_rate)
    if orig_rate == target_rate:
        return waveform
    import soxr

    dtype = np.float64 if waveform.dtype == np.float64 else np.float32
    # soxr expects (time, channels)
    resampled = soxr.resample(
        np.ascontiguousarray(waveform.T, dtype=dtype), orig_rate, target_rate, quality="HQ"
    )
    return np.ascontiguousarray(resampled.T)


# -- streaming ---------------------------------------------------------------------------------

DEFAULT_BLOCK = 1 << 16


class AudioFile:
    """An audio file decoded block by block, checked like `read_audio` when it is opened.

    ``channels``, ``sampling_rate`` and ``format`` come from the header; the number of frames is
    only known for sure once `blocks` has been read to the end (compressed formats estimate it).
    """

    def __init__(
        self, path: str | os.PathLike[str], name: str | None = None, block: int = DEFAULT_BLOCK
    ) -> None:
        import soundfile

        self.path = Path(path)
        self.name = name or str(path)
        self.block = int(block)
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.name}: is a directory, not an audio file")
        if not self.path.exists():
            raise FileNotFoundError(f"{self.name}: no such file")
        if self.path.stat().st_size == 0:
            raise ValueError(f"{self.name}: empty file (0 bytes)")
        try:
            with soundfile.SoundFile(str(self.path)) as handle:
                self.channels = int(handle.channels)
                self.sampling_rate = check_sampling_rate(handle.samplerate, name=f"{self.name} sampling rate")
                self.format = str(handle.format)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
            raise ValueError(f"{self.name}: not a readable audio file ({error})") from None
        if self.channels < 1:
            raise ValueError(f"{self.name}: has zero channels")

    def blocks(self, check_finite: bool = False) -> Iterator[np.ndarray]:
        """Yield contiguous float32 ``(channels, n)`` blocks in order.

        With ``check_finite`` a NaN/Inf sample raises a ``ValueError`` naming its index in the whole
        file (the earliest in time, then the lowest channel), like `read_audio`'s check.
        """
        import soundfile

        offset = 0
        try:
            with soundfile.SoundFile(str(self.path)) as handle:
                while True:
                    chunk = handle.read(self.block, dtype="float32", always_2d=True)
                    if len(chunk) == 0:
                        break
                    block = np.ascontiguousarray(chunk.T)
                    del chunk
                    if check_finite:
                        _check_block_finite(block, offset, self.name)
                    offset += block.shape[1]
                    yield block
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
            raise ValueError(f"{self.name}: not a readable audio file ({error})") from None


def _check_block_finite(block: np.ndarray, offset: int, name: str) -> None:
    finite = np.isfinite(block)
    if finite.all():
        return
    bad_time = np.flatnonzero(~finite.all(axis=0))[0]
    channel = int(np.flatnonzero(~finite[:, bad_time])[0])
    value = block[channel, bad_time]
    raise ValueError(
        f"{name} contains a non-finite sample ({value}) at sample index {offset + int(bad_time)} "
        f"(channel {channel})"
    )


def resample_blocks(blocks: Iterable[np.ndarray], orig_rate: int, target_rate: int) -> Iterator[np.ndarray]:
    """Resample consecutive float32 ``(..., time)`` blocks with soxr's streaming resampler.

    The concatenated output equals `resample` of the concatenated input exactly (same filter, same
    state; soxr's one-shot and streaming paths agree bit for bit, lengths included, which the tests
    check), so a file resampled block by block matches the in-memory pipeline. Equal rates pass the
    blocks through. Every leading index (channel, or source and channel) is an independent channel.
    """
    orig_rate = check_sampling_rate(orig_rate)
    target_rate = check_sampling_rate(target_rate)
    if orig_rate == target_rate:
        yield from blocks
        return
    import soxr

    stream = None
    leading: tuple[int, ...] = ()
    for block in blocks:
        if stream is None:
            leading = block.shape[:-1]
            width = int(np.prod(leading))
            stream = soxr.ResampleStream(orig_rate, target_rate, width, dtype="float32", quality="HQ")
        # soxr wants (time, channels)
        flat = np.ascontiguousarray(block.reshape(-1, block.shape[-1]).T, dtype=np.float32)
        out = stream.resample_chunk(flat, last=False)
        if len(out):
            yield np.ascontiguousarray(out.T).reshape(*leading, -1)
    if stream is not None:
        out = stream.resample_chunk(np.zeros((0, int(np.prod(leading))), dtype=np.float32), last=True)
        if len(out):
            yield np.ascontiguousarray(out.T).reshape(*leading, -1)


def fit_blocks(blocks: Iterable[np.ndarray], length: int, leading: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Cut or zero-pad consecutive ``(*leading, n)`` blocks to exactly ``length`` samples in all."""
    produced = 0
    for block in blocks:
        keep = min(block.shape[-1], length - produced)
        if keep > 0:
            yield block[..., :keep]
            produced += keep
    if produced < length:
        yield np.zeros((*leading, length - produced), dtype=np.float32)
