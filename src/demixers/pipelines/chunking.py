"""Chunked overlap-add inference with bounded memory.

`separate_chunked` runs a separation model over a waveform of any length, one window ("chunk")
at a time, and streams each chunk's sources into one preallocated output array. Peak memory is
the input and output arrays plus a constant that depends on ``segment`` and ``batch_size`` only:
at most ``batch_size`` chunk outputs (and, for permutation-invariant models, the previous
chunk's) are alive at any time.

Geometry
    Chunks are ``floor(segment * sampling_rate)`` samples long (or the whole input when it is
    shorter) and start every ``stride = chunk - round(overlap * chunk)`` samples. The last chunk is
    moved back so that it ends exactly at the end of the input, so every chunk is real audio (no
    zero padding) and every chunk of a call has the same length (they batch without padding).
    When one chunk covers the whole input the model sees exactly the unchunked input, so chunked
    and unchunked outputs agree to float rounding (the tests hold them within 1e-6).

Cross-fade
    Each chunk is weighted by a raised-cosine (``sin²``) fade-in over its overlap with the previous
    chunk and a fade-out over its overlap with the next one (flat elsewhere, no fade at the
    input's ends); the weights are strictly positive and, at every sample, divided by the sum of
    the weights of all chunks covering it. Overlapping fades therefore always sum to one: a model
    that returns its input unchanged gives back the input to float rounding, constant signals
    included.

Permutation-invariant (speech) models
    Their source order is arbitrary per forward pass, so each chunk's sources are re-ordered to
    best match the previous chunk's (already aligned) sources on their common overlap before the
    cross-fade: the permutation maximising the summed inner products (equivalently minimising the
    summed squared difference), searched exhaustively for up to 8 sources and greedily beyond. The
    identity is kept unless another order is strictly better. This needs ``overlap > 0``.

Shifts (test-time augmentation, as demucs' ``apply_model``)
    With ``shifts=N > 0`` the input is separated N times, each time delayed by a random offset in
    ``[0, max_shift]`` (half a second by default) drawn from a ``torch.Generator`` seeded with
    ``seed`` (never the global RNG), and the N results are averaged. Each pass streams into the
    same output array. Only meaningful for models with a fixed source order.

Silence
    A chunk whose input is exactly zero gets exactly-zero sources without running the model, so
    digital silence in gives silence out. A model output that is not finite raises a
    ``RuntimeError`` naming the chunk's time range instead of propagating NaN.
"""

from __future__ import annotations

import itertools
import math
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

# Defaults when the model config has no `segment` / `overlap` (seconds / fraction of a chunk).
DEFAULT_SEGMENT_SECONDS = 10.0
DEFAULT_OVERLAP = 0.25
# Speech (permutation-invariant) models: longer overlaps make the speaker alignment reliable.
DEFAULT_SPEECH_SEGMENT_SECONDS = 8.0
DEFAULT_SPEECH_OVERLAP = 0.5
DEFAULT_BATCH_SIZE = 1
DEFAULT_MAX_SHIFT_SECONDS = 0.5
# Exhaustive permutation search up to this many sources (8! = 40320 sums of an S x S matrix).
MAX_EXHAUSTIVE_SOURCES = 8

_SPEAKER_NAME = re.compile(r"^(speaker|spk|talker|voice|s)[_\-]?\d+$", re.IGNORECASE)

# forward(batch (chunks, channels, time) float32 tensor) -> (chunks, sources, channels, time)
ForwardFn = Callable[[torch.Tensor], torch.Tensor]


def is_permutation_invariant(config: Any) -> bool:
    """Whether the model's sources come out in an arbitrary order (speech separation).

    ``config.permutation_invariant`` (a config field or a class attribute of the config) decides
    when it is a bool. Otherwise the sources are taken as permutable when every name in
    ``config.source_names`` looks like a speaker index (``speaker_1``, ``spk2``, ``s1`` ...).
    """
    flag = getattr(config, "permutation_invariant", None)
    if isinstance(flag, bool):
        return flag
    names = list(getattr(config, "source_names", []) or [])
    return len(names) > 1 and all(isinstance(name, str) and _SPEAKER_NAME.match(name) for name in names)


@dataclass(frozen=True)
class ChunkSettings:
    """Resolved chunking parameters (see `resolve_chunk_settings`)."""

    segment: float
    overlap: float
    batch_size: int
    shifts: int
    seed: int
    max_shift: float
    permutation_invariant: bool


def resolve_chunk_settings(
    config: Any,
    segment: float | None = None,
    overlap: float | None = None,
    batch_size: int | None = None,
    shifts: int | None = None,
    seed: int | None = None,
) -> ChunkSettings:
    """Fill unset parameters from the model config, then from the per-family defaults.

    * ``segment``: argument, else ``config.segment`` (seconds), else 8 s for permutation-invariant
      (speech) models and 10 s otherwise.
    * ``overlap``: argument, else ``config.overlap``, else 0.5 for speech models and 0.25
      otherwise. Must be in ``[0, 1)``.
    * ``batch_size`` (chunks per forward): argument, else ``config.chunk_batch_size``, else 1.
    * ``shifts``: argument, else 0. Positive shifts are refused for permutation-invariant models.
    * ``seed``: argument, else 0 (shifts are reproducible by default).
    """
    speech = is_permutation_invariant(config)
    if segment is None:
        segment = getattr(config, "segment", None)
    if segment is None:
        segment = DEFAULT_SPEECH_SEGMENT_SECONDS if speech else DEFAULT_SEGMENT_SECONDS
    if overlap is None:
        overlap = getattr(config, "overlap", None)
    if overlap is None:
        overlap = DEFAULT_SPEECH_OVERLAP if speech else DEFAULT_OVERLAP
    if batch_size is None:
        batch_size = getattr(config, "chunk_batch_size", None) or DEFAULT_BATCH_SIZE
    shifts = 0 if shifts is None else shifts
    seed = 0 if seed is None else seed

    if isinstance(segment, bool) or not isinstance(segment, (int, float)) or not math.isfinite(segment):
        raise TypeError(f"segment must be a number of seconds, got {segment!r}")
    if segment <= 0:
        raise ValueError(f"segment must be > 0 seconds, got {segment!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float)) or not math.isfinite(overlap):
        raise TypeError(f"overlap must be a fraction in [0, 1), got {overlap!r}")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be a fraction in [0, 1), got {overlap!r}")
    for name, value, minimum in (("batch_size", batch_size, 1), ("shifts", shifts, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {value!r}")
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if shifts and speech:
        raise ValueError(
            "shifts (random time-shift augmentation) averages sources in a fixed order; this model's "
            "sources are permutation-invariant (speakers), so use shifts=0"
        )
    return ChunkSettings(
        segment=float(segment),
        overlap=float(overlap),
        batch_size=int(batch_size),
        shifts=int(shifts),
        seed=int(seed),
        max_shift=float(getattr(config, "max_shift", None) or DEFAULT_MAX_SHIFT_SECONDS),
        permutation_invariant=speech,
    )


# -- geometry ----------------------------------------------------------------------------------


def segment_samples(segment: float, sampling_rate: int) -> int:
    """Chunk length in samples: ``floor(segment * sampling_rate)`` like demucs' ``int(sr * segment)``,
    robust to float error (7.8 s at 44.1 kHz is 343980 samples, never 343979 or 343981), so a
    chunk never exceeds a model's trained segment."""
    return math.floor(segment * sampling_rate + 1e-6)


def chunk_layout(total: int, chunk: int, overlap: float) -> tuple[int, list[int]]:
    """Return ``(chunk_length, offsets)`` covering ``[0, total)``; see the module docstring."""
    if total <= 0:
        raise ValueError(f"cannot chunk {total} samples")
    chunk = max(1, min(int(chunk), total))
    if chunk == total:
        return chunk, [0]
    stride = max(1, chunk - round(overlap * chunk))
    offsets = list(range(0, total - chunk, stride))
    offsets.append(total - chunk)
    return chunk, offsets


def _fade(length: int) -> np.ndarray:
    """Strictly positive raised-cosine fade-in of ``length`` samples (sin² from ~0 to ~1)."""
    position = (np.arange(length, dtype=np.float64) + 0.5) / length
    return np.sin(0.5 * np.pi * position) ** 2


def _window(chunk: int, fade_in: int, fade_out: int) -> np.ndarray:
    window = np.ones(chunk, dtype=np.float64)
    if fade_in > 0:
        window[:fade_in] *= _fade(fade_in)
    if fade_out > 0:
        window[chunk - fade_out :] *= _fade(fade_out)[::-1]
    return window


class _Windows:
    """Per-chunk cross-fade weights, normalised by the sum of all windows covering each sample."""

    def __init__(self, chunk: int, offsets: list[int]) -> None:
        self.chunk = chunk
        self.offsets = offsets
        self._raw: dict[tuple[int, int], np.ndarray] = {}
        self._normalised: dict[tuple[Any, ...], np.ndarray] = {}

    def _fades(self, index: int) -> tuple[int, int]:
        offsets, chunk = self.offsets, self.chunk
        fade_in = offsets[index - 1] + chunk - offsets[index] if index > 0 else 0
        fade_out = offsets[index] + chunk - offsets[index + 1] if index + 1 < len(offsets) else 0
        return max(0, fade_in), max(0, fade_out)

    def _raw_window(self, index: int) -> np.ndarray:
        key = self._fades(index)
        if key not in self._raw:
            self._raw[key] = _window(self.chunk, *key)
        return self._raw[key]

    def normalised(self, index: int) -> np.ndarray:
        """float32 weights of chunk ``index`` (length ``chunk``)."""
        offsets, chunk = self.offsets, self.chunk
        start = offsets[index]
        neighbours = []
        for other in range(index - 1, -1, -1):
            if offsets[other] + chunk <= start:
                break
            neighbours.append(other)
        for other in range(index + 1, len(offsets)):
            if offsets[other] >= start + chunk:
                break
            neighbours.append(other)
        # Chunks with the same fades and neighbour geometry share one normalised window.
        key = (self._fades(index), *sorted((offsets[o] - start, *self._fades(o)) for o in neighbours))
        if key not in self._normalised:
            total = self._raw_window(index).copy()
            for other in neighbours:
                shift = offsets[other] - start
                lo, hi = max(0, shift), min(chunk, shift + chunk)
                total[lo:hi] += self._raw_window(other)[lo - shift : hi - shift]
            self._normalised[key] = (self._raw_window(index) / total).astype(np.float32)
        return self._normalised[key]


# -- alignment ---------------------------------------------------------------------------------


def best_permutation(reference: np.ndarray, estimate: np.ndarray) -> tuple[int, ...]:
    """Order of ``estimate``'s sources that best matches ``reference`` (both ``(sources, ...)``).

    Maximises the summed inner products ``<reference[k], estimate[perm[k]]>`` (the least-squares
    match); the identity wins ties.
    """
    sources = reference.shape[0]
    identity = tuple(range(sources))
    if sources < 2:
        return identity
    ref = reference.reshape(sources, -1).astype(np.float64)
    est = estimate.reshape(sources, -1).astype(np.float64)
    scores = ref @ est.T  # scores[k, j] = <reference k, estimate j>
    tolerance = 1e-9 * (float(np.sum(ref * ref)) + float(np.sum(est * est)))
    best, best_score = identity, float(np.trace(scores))
    if sources <= MAX_EXHAUSTIVE_SOURCES:
        rows = np.arange(sources)
        for perm in itertools.permutations(range(sources)):
            score = float(scores[rows, list(perm)].sum())
            if score > best_score + tolerance:
                best, best_score = perm, score
        return best
    # Greedy: repeatedly take the largest remaining (reference, estimate) pair.
    perm = [-1] * sources
    remaining = scores.copy()
    for _ in range(sources):
        k, j = np.unravel_index(int(np.argmax(remaining)), remaining.shape)
        perm[k] = int(j)
        remaining[k, :] = -np.inf
        remaining[:, j] = -np.inf
    greedy = tuple(perm)
    if float(scores[np.arange(sources), list(greedy)].sum()) > best_score + tolerance:
        return greedy
    return identity


# -- the loop ----------------------------------------------------------------------------------


def shift_delays(sampling_rate: int, settings: ChunkSettings) -> list[int]:
    """The delays (samples) of the shift passes: ``[0]`` without shifts, else ``shifts`` draws
    in ``[0, max_shift]`` from a ``torch.Generator`` seeded with ``settings.seed``."""
    if settings.shifts == 0:
        return [0]
    generator = torch.Generator().manual_seed(settings.seed)
    max_shift = int(settings.max_shift * sampling_rate)
    return [int(value) for value in torch.randint(0, max_shift + 1, (settings.shifts,), generator=generator)]


def count_chunks(total: int, sampling_rate: int, settings: ChunkSettings) -> int:
    """Number of chunks `separate_chunked` will run through the model (for progress bars)."""
    chunk = segment_samples(settings.segment, sampling_rate)
    return sum(
        len(chunk_layout(total + delay, chunk, settings.overlap)[1])
        for delay in shift_delays(sampling_rate, settings)
    )


def separate_chunked(
    forward: ForwardFn,
    waveform: np.ndarray,
    num_sources: int,
    sampling_rate: int,
    settings: ChunkSettings,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Separate float32 ``(channels, time)`` into float32 ``(sources, channels, time)``.

    ``forward`` maps a float32 CPU tensor ``(chunks, channels, chunk_time)`` to
    ``(chunks, sources, channels, chunk_time)`` (any device/dtype; it is brought back to float32
    CPU here). ``progress`` is called with the number of chunks just processed.
    """
    if waveform.ndim != 2:
        raise ValueError(f"waveform must be (channels, time), got shape {tuple(waveform.shape)}")
    chunk = segment_samples(settings.segment, sampling_rate)
    if chunk < 1:
        raise ValueError(f"segment={settings.segment} s is shorter than one sample at {sampling_rate} Hz")
    channels, total = waveform.shape
    output = np.zeros((num_sources, channels, total), dtype=np.float32)

    delays = shift_delays(sampling_rate, settings)
    for delay in delays:
        _run_pass(
            forward,
            waveform,
            output,
            delay,
            chunk,
            1.0 / len(delays),
            num_sources,
            sampling_rate,
            settings,
            progress,
        )
    return output


def _read(waveform: np.ndarray, start: int, length: int) -> np.ndarray:
    """``waveform[:, start:start + length]`` with zeros where ``start`` is negative."""
    if start >= 0:
        return waveform[:, start : start + length]
    piece = np.zeros((waveform.shape[0], length), dtype=waveform.dtype)
    if length + start > 0:  # else the chunk lies entirely in the zero prefix
        piece[:, -start:] = waveform[:, : length + start]
    return piece


def _batches(offsets: list[int], batch_size: int) -> Iterator[list[int]]:
    for first in range(0, len(offsets), batch_size):
        yield list(range(first, min(first + batch_size, len(offsets))))


def _run_pass(
    forward: ForwardFn,
    waveform: np.ndarray,
    output: np.ndarray,
    delay: int,
    chunk: int,
    scale: float,
    num_sources: int,
    sampling_rate: int,
    settings: ChunkSettings,
    progress: Callable[[int], None] | None,
) -> None:
    """One pass over the input delayed by ``delay`` zero samples, added (times ``scale``) into ``output``."""
    total = waveform.shape[-1]
    chunk, offsets = chunk_layout(total + delay, chunk, settings.overlap)
    windows = _Windows(chunk, offsets)
    align = settings.permutation_invariant and num_sources > 1
    if align and len(offsets) > 1 and offsets[1] >= chunk:
        warnings.warn(
            "overlap=0 leaves no common region to keep speakers consistent between chunks; "
            "use overlap > 0 for speech models",
            stacklevel=3,
        )
    previous: np.ndarray | None = None  # aligned sources of the previous chunk
    for indices in _batches(offsets, settings.batch_size):
        # virtual position p maps to input sample p - delay
        pieces = [_read(waveform, offsets[i] - delay, chunk) for i in indices]
        silent = [not np.any(piece) for piece in pieces]
        results: list[np.ndarray | None] = [None] * len(indices)
        active = [k for k, is_silent in enumerate(silent) if not is_silent]
        if active:
            batch = torch.from_numpy(np.stack([pieces[k] for k in active]))
            estimates = forward(batch)
            estimates = estimates.detach().to(device="cpu", dtype=torch.float32).numpy()
            expected = (len(active), num_sources, waveform.shape[0], chunk)
            if estimates.shape != expected:
                raise RuntimeError(
                    f"the model returned shape {estimates.shape} for chunks of shape {expected}"
                )
            for k, estimate in zip(active, estimates, strict=True):
                results[k] = estimate
        del pieces
        for k, index in enumerate(indices):
            estimate = results[k]
            start = offsets[index] - delay
            if estimate is None:
                estimate = np.zeros((num_sources, waveform.shape[0], chunk), dtype=np.float32)
            elif not np.isfinite(estimate).all():
                begin, end = max(0, start) / sampling_rate, (start + chunk) / sampling_rate
                raise RuntimeError(f"the model produced NaN/Inf for the chunk {begin:.2f}-{end:.2f} s")
            if align and previous is not None and index > 0:
                common = offsets[index - 1] + chunk - offsets[index]
                if common > 0:
                    perm = best_permutation(previous[..., chunk - common :], estimate[..., :common])
                    if perm != tuple(range(num_sources)):
                        estimate = estimate[list(perm)]
            weight = windows.normalised(index)
            lo = max(0, -start)  # skip the zero delay prefix (possibly the whole chunk)
            if lo < chunk:
                target = output[..., start + lo : start + chunk]
                target += (scale * weight[lo:]) * estimate[..., lo:]
            previous = estimate if align else None
            results[k] = None
        if progress is not None:
            progress(len(indices))
