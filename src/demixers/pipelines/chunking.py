"""Chunked overlap-add inference with bounded memory.

`iter_chunked` runs a separation model over an input of any length, one window ("chunk") at a
time, reading the input as consecutive blocks and yielding the output as consecutive final
spans. Memory is O(``segment * batch_size``): only the input still needed by some chunk and the
output that some chunk may still add to are kept. `separate_chunked` (the in-memory pipeline)
collects the spans into one preallocated array; the streaming file path of ``demixers
separate`` writes them to disk. Both go through the same generator, so they give the same
numbers. This is the only chunk engine: every family declares its chunking policy in its config
and the engine follows it.

Chunking policies (config fields; absent fields take the defaults, the "speech" policy)
    ``chunk_layout``: ``"end_aligned"`` (default, below) or ``"from_start"`` (demucs'
    ``apply_model``: chunks start at ``0, stride, 2 * stride, ...`` with ``stride = int((1 -
    overlap) * chunk)`` while they start inside the input, the last ones cut at its end).
    ``chunk_window``: ``"raised_cosine"`` (default, below) or ``"triangle"`` (apply_model's
    segment-long triangle peaking mid-segment, normalised to 1, to ``chunk_transition_power``
    (>= 1, default 1), cut like a cut chunk). ``chunk_context``: ``"none"`` (default: the model sees
    the chunk), ``"segment"`` (a chunk shorter than the segment is centred in a segment-long
    window with the surrounding input as context, zeros beyond the input: apply_model with
    HTDemucs) or ``"valid_length"`` (centred likewise in ``model.valid_length(n)`` samples: Demucs,
    HDemucs); the output is cut back to the chunk. The Demucs configs declare apply_model's policy
    (``from_start``, ``triangle``, power 1, context), so the pipeline reproduces
    ``apply_model(split=True)`` and, with the normalisation below, demucs' ``separate``.

MSST's ``demix`` (the RoFormer families' policy)
    ``chunk_layout="padded_from_start"``: the input is padded by ``chunk - step`` samples at both
    ends when it is longer than twice that, and chunks start every ``step`` samples from the
    padded start while they start inside it (the last ones hold fewer samples of it);
    ``chunk_window="linear_fade"``: linear fades over ``chunk // 10`` samples at both edges of
    every chunk but the first chunk's start and the last chunk's end, the overlap-add divided by the
    summed windows; ``chunk_context="reflect_pad"``: what the model sees beyond the input is its
    reflection (torch's "reflect"), and a chunk shorter than the segment is completed to it by its
    own reflection when it holds more than half a segment, by zeros otherwise. The chunk is the
    config's ``chunk_size`` (samples, exact) and ``step = chunk // num_overlap`` (the config's
    ``num_overlap``); ``segment`` / ``overlap`` arguments override them (then ``step = chunk -
    round(overlap * chunk)``). The numbers are those of MSST's ``demix`` with ``batch_size=1``
    whatever our batch size (MSST itself decides "first" and "last" chunk per batch, so its
    larger batches fade differently at the track's end). Memory stays bounded: the reflections
    only read input near the chunk.

Bags
    A model with a ``models`` list and ``config.weights`` (`DemucsBagForSourceSeparation`) is run
    as one `ChunkMember` per member, each with its own policy and segment, its output scaled by its
    weight over the per-source total, as apply_model applies a bag. All members and shift passes
    advance together over the input, so memory stays bounded.

Geometry (``end_aligned``)
    Chunks are ``floor(segment * sampling_rate)`` samples long (or the whole input when it is
    shorter) and start every ``stride = chunk - round(overlap * chunk)`` samples. The last chunk is
    moved back so that it ends exactly at the end of the input, so every chunk is real audio (no
    zero padding) and every chunk of a call has the same length (they batch without padding).
    When one chunk covers the whole input the model sees exactly the unchunked input, so chunked
    and unchunked outputs agree to float rounding (the tests hold them within 1e-6).

Cross-fade (``raised_cosine``)
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
    With ``shifts=N > 0`` the input is separated N times and the N results are averaged. As in
    apply_model, pass ``k`` draws an offset uniform in ``[0, max_shift]`` samples (half a second by
    default) and delays the input by ``max_shift - offset`` zeros; the draws come from a
    ``torch.Generator`` seeded with ``seed`` (never the global RNG), member after member for a bag
    (`shift_offsets`: hand them to apply_model to get its numbers). The passes advance together
    (the one lagging furthest behind runs next), so a span is final once every pass is past it; a
    chunk lying wholly in the delay only adds to discarded output and is not run. Only meaningful
    for models with a fixed source order.

Input normalisation
    Models whose config sets ``normalize_input=True`` (Demucs) see the whole track standardised
    by the mean and std of its mono downmix (`Normalization`, `MixtureStatistics`), as demucs'
    ``separate`` does; the sources are mapped back before they leave the pipeline.

Silence
    A chunk whose input (context included) is exactly zero gets exactly-zero sources without
    running the model, so digital silence in gives silence out. A model output that is not finite raises a
    ``RuntimeError`` naming the chunk's time range instead of propagating NaN.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .audio_utils import best_permutation, is_permutation_invariant

# Defaults when the model config has no `segment` / `overlap` (seconds / fraction of a chunk).
DEFAULT_SEGMENT_SECONDS = 10.0
DEFAULT_OVERLAP = 0.25
# Speech (permutation-invariant) models: longer overlaps make the speaker alignment reliable.
# Measured with the bundled MossFormer (issue 16): against whole-file inference, 8 s chunks with
# 50 % overlap lose nothing, they gain SI-SNRi (the model was trained on short segments): +0.12 dB
# on the bundled 10 s example, +0.06 / +0.45 / +0.80 dB on 10 / 30 / 60 s mixtures of its
# held-back voices; 25 % overlap gains 0.03-0.05 dB less on the longer ones. Memory stays flat.
DEFAULT_SPEECH_SEGMENT_SECONDS = 8.0
DEFAULT_SPEECH_OVERLAP = 0.5
DEFAULT_BATCH_SIZE = 1
DEFAULT_MAX_SHIFT_SECONDS = 0.5
# Chunking policies a config may declare (`chunk_window`, `chunk_layout`, `chunk_context`).
WINDOWS = ("raised_cosine", "triangle", "linear_fade")
LAYOUTS = ("end_aligned", "from_start", "padded_from_start")
CONTEXTS = ("none", "segment", "valid_length", "reflect_pad")
# MSST's demix fades every chunk in and out linearly over a tenth of the chunk.
LINEAR_FADE_FRACTION = 10
# Exhaustive permutation search up to this many sources (8! = 40320 sums of an S x S matrix).

# forward(batch (chunks, channels, time) float32 tensor) -> (chunks, sources, channels, time)
ForwardFn = Callable[[torch.Tensor], torch.Tensor]


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
    # The family's chunking policy (see "Chunking policies" in the module docstring).
    window: str = "raised_cosine"
    transition_power: float = 1.0
    layout: str = "end_aligned"
    context: str = "none"
    # Exact chunk length in samples (a config's ``chunk_size``; None: from ``segment`` seconds) and
    # MSST's ``num_overlap`` (stride ``chunk // num_overlap`` in the ``padded_from_start`` layout;
    # None: the stride comes from ``overlap``).
    chunk_samples: int | None = None
    num_overlap: int | None = None


def resolve_chunk_settings(
    config: Any,
    segment: float | None = None,
    overlap: float | None = None,
    batch_size: int | None = None,
    shifts: int | None = None,
    seed: int | None = None,
) -> ChunkSettings:
    """Fill unset parameters from the model config, then from the per-family defaults.

    * ``segment``: argument, else ``config.chunk_size`` (an exact number of samples, MSST's
      ``chunk_size``: the chunk is exactly that long), else ``config.segment`` (seconds), else 8 s
      for permutation-invariant (speech) models and 10 s otherwise.
    * ``overlap``: argument, else ``config.num_overlap`` (MSST's: ``overlap = 1 - 1 / num_overlap``,
      and the ``padded_from_start`` layout steps by exactly ``chunk // num_overlap``), else
      ``config.overlap``, else 0.5 for speech models and 0.25 otherwise. Must be in ``[0, 1)``.
    * ``batch_size`` (chunks per forward): argument, else ``config.chunk_batch_size``, else 1.
    * ``shifts``: argument, else 0. Positive shifts are refused for permutation-invariant models.
    * ``seed``: argument, else 0 (shifts are reproducible by default).
    """
    speech = is_permutation_invariant(config)
    chunk_samples = None
    if segment is None:
        chunk_samples = _positive_int_field(config, "chunk_size")
        if chunk_samples is not None:
            sampling_rate = _positive_int_field(config, "sampling_rate")
            if sampling_rate is None:
                raise ValueError("chunk_size (samples) needs the config's sampling_rate")
            segment = chunk_samples / sampling_rate
    if segment is None:
        segment = getattr(config, "segment", None)
    if segment is None:
        segment = DEFAULT_SPEECH_SEGMENT_SECONDS if speech else DEFAULT_SEGMENT_SECONDS
    num_overlap = None
    if overlap is None:
        num_overlap = _positive_int_field(config, "num_overlap")
        if num_overlap is not None:
            overlap = 1.0 - 1.0 / num_overlap
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
    window = _policy_choice(config, "chunk_window", "raised_cosine", WINDOWS)
    layout = _policy_choice(config, "chunk_layout", "end_aligned", LAYOUTS)
    context = _policy_choice(config, "chunk_context", "none", CONTEXTS)
    transition_power = getattr(config, "chunk_transition_power", None)
    transition_power = 1.0 if transition_power is None else transition_power
    if (
        isinstance(transition_power, bool)
        or not isinstance(transition_power, (int, float))
        or not math.isfinite(transition_power)
        or transition_power < 1
    ):
        raise ValueError(f"chunk_transition_power must be a number >= 1, got {transition_power!r}")
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
        window=window,
        transition_power=float(transition_power),
        layout=layout,
        context=context,
        chunk_samples=chunk_samples,
        num_overlap=num_overlap,
    )


def _positive_int_field(config: Any, field: str) -> int | None:
    value = getattr(config, field, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{field} must be a positive int, got {value!r}")
    return int(value)


def _policy_choice(config: Any, field: str, default: str, choices: tuple[str, ...]) -> str:
    value = getattr(config, field, None)
    if value is None:
        return default
    if value not in choices:
        raise ValueError(f"{field} must be one of {choices}, got {value!r}")
    return str(value)


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


def from_start_layout(total: int, chunk: int, overlap: float) -> tuple[list[int], list[int]]:
    """``(offsets, lengths)`` of demucs' ``apply_model(split=True)``: chunks start at ``0, stride,
    2 * stride, ...`` (``stride = int((1 - overlap) * chunk)``) while they start inside the input,
    and the last ones are cut at its end (an input shorter than ``chunk`` is one short chunk)."""
    if total <= 0:
        raise ValueError(f"cannot chunk {total} samples")
    stride = int((1 - overlap) * chunk)
    if stride <= 0:
        raise ValueError(f"overlap={overlap} leaves no stride for a {chunk}-sample segment")
    offsets = list(range(0, total, stride))
    return offsets, [min(chunk, total - offset) for offset in offsets]


def padded_from_start_layout(total: int, chunk: int, step: int) -> tuple[list[int], list[int]]:
    """``(offsets, lengths)`` of MSST's ``demix``, in input positions.

    The input is padded by ``border = chunk - step`` samples at both ends when it is longer than
    ``2 * border`` (and ``border > 0``); chunks start at ``0, step, 2 * step, ...`` of the padded
    input while they start inside it, each holding ``min(chunk, padded_length - start)`` samples of
    it. Offsets are given relative to the unpadded input (the first is ``-border`` when padded), so
    chunks may begin before 0 and end after ``total``: what lies there is the chunk's context.
    """
    if total <= 0:
        raise ValueError(f"cannot chunk {total} samples")
    if not 1 <= step <= chunk:
        raise ValueError(f"the step must be in [1, {chunk}] samples for a {chunk}-sample chunk, got {step}")
    border = chunk - step
    pad = border if border > 0 and total > 2 * border else 0
    padded = total + 2 * pad
    starts = range(0, padded, step)
    return [start - pad for start in starts], [min(chunk, padded - start) for start in starts]


def padded_step(chunk: int, settings: ChunkSettings) -> int:
    """Stride of the ``padded_from_start`` layout: ``chunk // num_overlap`` (MSST) when the config
    declares ``num_overlap``, else ``chunk - round(overlap * chunk)``."""
    if settings.num_overlap is not None:
        step = chunk // settings.num_overlap
        if step < 1:
            raise ValueError(f"num_overlap={settings.num_overlap} leaves no step for a {chunk}-sample chunk")
        return step
    return max(1, chunk - round(settings.overlap * chunk))


def _linear_fade(segment: int, fade_in: bool, fade_out: bool) -> np.ndarray:
    """MSST's window: ones, with a linear ramp 0 -> 1 over the first ``segment // 10`` samples and
    1 -> 0 over the last ones (both ends included: the ramps reach exactly 0)."""
    window = np.ones(segment, dtype=np.float64)
    fade = segment // LINEAR_FADE_FRACTION
    if fade > 0:
        if fade_out:
            window[segment - fade :] = np.linspace(1.0, 0.0, fade)
        if fade_in:
            window[:fade] = np.linspace(0.0, 1.0, fade)
    return window


def _triangle(chunk: int, power: float) -> np.ndarray:
    """apply_model's weight: a triangle peaking mid-segment, normalised to 1, to ``power``."""
    ramp = np.concatenate([np.arange(1, chunk // 2 + 1), np.arange(chunk - chunk // 2, 0, -1)])
    return (ramp / ramp.max()).astype(np.float64) ** power


class _Windows:
    """Per-chunk weights, normalised by the sum of the weights of all chunks covering each sample.

    ``raised_cosine``: sin² fades over the overlaps with the neighbouring chunks, flat elsewhere
    (all chunks have one length). ``triangle``: the segment-long triangle to ``transition_power``,
    cut like the chunk when the chunk is cut at the input's end (apply_model's weighting).
    ``linear_fade``: MSST's segment-long window with linear fades over a tenth of the segment,
    without the fade-in on the first chunk and without the fade-out on the last one (a single
    chunk keeps its fade-out, as MSST's ``demix`` does), cut like the chunk. A sample that no chunk
    weighs (every window is 0 there) gets 0, as MSST's ``nan_to_num`` of ``0 / 0``.
    """

    def __init__(self, offsets: list[int], lengths: list[int], settings: ChunkSettings, segment: int) -> None:
        self.offsets = offsets
        self.lengths = lengths
        self._kind = settings.window
        self._segment = segment
        self._triangle = (
            _triangle(segment, settings.transition_power) if settings.window == "triangle" else None
        )
        self._raw: dict[tuple[int, ...], np.ndarray] = {}
        self._normalised: dict[tuple[Any, ...], np.ndarray] = {}

    def _key(self, index: int) -> tuple[int, ...]:
        if self._triangle is not None:
            return (self.lengths[index],)
        if self._kind == "linear_fade":
            last = index == len(self.offsets) - 1
            return (self.lengths[index], int(index > 0), int(not last or index == 0))
        offsets, chunk = self.offsets, self.lengths[index]
        fade_in = offsets[index - 1] + self.lengths[index - 1] - offsets[index] if index > 0 else 0
        fade_out = offsets[index] + chunk - offsets[index + 1] if index + 1 < len(offsets) else 0
        return (chunk, max(0, fade_in), max(0, fade_out))

    def _raw_window(self, index: int) -> np.ndarray:
        key = self._key(index)
        if key not in self._raw:
            if self._triangle is not None:
                self._raw[key] = self._triangle[: key[0]]
            elif self._kind == "linear_fade":
                self._raw[key] = _linear_fade(self._segment, bool(key[1]), bool(key[2]))[: key[0]]
            else:
                self._raw[key] = _window(*key)
        return self._raw[key]

    def normalised(self, index: int) -> np.ndarray:
        """float32 weights of chunk ``index`` (``lengths[index]`` samples)."""
        offsets, lengths = self.offsets, self.lengths
        start, chunk = offsets[index], lengths[index]
        neighbours = []
        # chunk ends never decrease with the index (only the last chunks are cut, at the input's end)
        for other in range(index - 1, -1, -1):
            if offsets[other] + lengths[other] <= start:
                break
            neighbours.append(other)
        for other in range(index + 1, len(offsets)):
            if offsets[other] >= start + chunk:
                break
            neighbours.append(other)
        # Chunks with the same weights and neighbour geometry share one normalised window.
        key = (self._key(index), *sorted((offsets[o] - start, *self._key(o)) for o in neighbours))
        if key not in self._normalised:
            total = self._raw_window(index).copy()
            for other in neighbours:
                shift = offsets[other] - start
                lo, hi = max(0, shift), min(chunk, shift + lengths[other])
                total[lo:hi] += self._raw_window(other)[lo - shift : hi - shift]
            weights = np.zeros_like(total)
            np.divide(self._raw_window(index), total, out=weights, where=total > 0)
            self._normalised[key] = weights.astype(np.float32)
        return self._normalised[key]


# -- alignment ---------------------------------------------------------------------------------


def align_sources(reference: np.ndarray, estimate: np.ndarray) -> tuple[int, ...]:
    """Order of ``estimate``'s sources that best matches ``reference`` (both ``(sources, ...)``).

    Maximises the summed inner products ``<reference[k], estimate[perm[k]]>`` (the least-squares
    match) with the package's one assignment search; the identity wins unless another order beats it
    by more than 1e-9 of the signals' energy (near-ties keep the previous chunk's order).
    """
    sources = reference.shape[0]
    if sources < 2:
        return tuple(range(sources))
    ref = reference.reshape(sources, -1).astype(np.float64)
    est = estimate.reshape(sources, -1).astype(np.float64)
    tolerance = 1e-9 * (float(np.sum(ref * ref)) + float(np.sum(est * est)))
    scores = ref @ est.T  # scores[k, j] = <reference k, estimate j>
    perm, _ = best_permutation(scores, tie_tolerance=tolerance)
    return tuple(int(index) for index in perm)


# -- whole-track input normalisation -----------------------------------------------------------

NORMALIZATION_EPSILON = 1e-8
# Statistics are accumulated over fixed blocks of absolute positions, so any way of cutting the
# input into pieces (one array, file blocks, resampler output) gives bit-identical numbers.
STATISTICS_BLOCK = 1 << 16


def normalizes_input(config: Any) -> bool:
    """``config.normalize_input`` (absent or ``None``: False); anything but a bool is a ValueError."""
    flag = getattr(config, "normalize_input", None)
    if flag is None:
        return False
    if not isinstance(flag, (bool, np.bool_)):
        raise ValueError(f"normalize_input must be a bool, got {flag!r}")
    return bool(flag)


@dataclass(frozen=True)
class Normalization:
    """Whole-track standardisation of the mixture, as demucs' ``separate`` does around ``apply_model``.

    The model sees ``(x - mean) / std`` and its sources are mapped back with ``y * std + mean``,
    where ``mean`` and ``std`` are those of the mono downmix (the mean over channels) of the whole
    input at the model's rate and channel count, ``std`` with Bessel's correction (``torch.std``'s
    default) plus 1e-8. The arithmetic is float64, rounded once to float32.
    """

    mean: float
    std: float

    def apply(self, block: np.ndarray) -> np.ndarray:
        return ((block - self.mean) / self.std).astype(np.float32)

    def undo(self, block: np.ndarray) -> np.ndarray:
        return (block * self.std + self.mean).astype(np.float32)


class MixtureStatistics:
    """Running mean and std of the mono downmix of ``(channels, time)`` blocks (Chan et al.'s
    pairwise update over fixed blocks of `STATISTICS_BLOCK` samples)."""

    def __init__(self) -> None:
        self.count = 0
        self._mean = 0.0
        self._m2 = 0.0
        self._pending: list[np.ndarray] = []
        self._pending_length = 0

    def update(self, block: np.ndarray) -> None:
        mono = block.mean(axis=0, dtype=np.float64)  # per sample: independent of the cut
        while mono.size:
            take = min(mono.size, STATISTICS_BLOCK - self._pending_length)
            self._pending.append(mono[:take])
            self._pending_length += take
            mono = mono[take:]
            if self._pending_length == STATISTICS_BLOCK:
                self._combine()

    def _combine(self) -> None:
        if not self._pending_length:
            return
        values = np.concatenate(self._pending)
        self._pending, self._pending_length = [], 0
        count = values.size
        mean = float(values.sum()) / count
        m2 = float(np.sum((values - mean) ** 2))
        total = self.count + count
        delta = mean - self._mean
        self._mean += delta * count / total
        self._m2 += m2 + delta * delta * self.count * count / total
        self.count = total

    def normalization(self) -> Normalization:
        self._combine()
        if self.count == 0:
            raise ValueError("no samples to normalise")
        variance = self._m2 / (self.count - 1) if self.count > 1 else 0.0
        return Normalization(mean=self._mean, std=math.sqrt(max(variance, 0.0)) + NORMALIZATION_EPSILON)


# -- the loop ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkMember:
    """One model the engine runs over the whole input: a single model, or one member of a bag.

    ``settings`` carries the member's own segment and chunking policy. ``source_weights`` (one per
    source, already divided by the bag's per-source totals) scale its output before the members
    are summed; ``None`` is a weight of 1. ``valid_length(n)`` is the length the model wants for
    an ``n``-sample chunk (policy ``chunk_context="valid_length"``); the chunk is centred in it
    with the surrounding input as context.
    """

    forward: ForwardFn
    settings: ChunkSettings
    source_weights: tuple[float, ...] | None = None
    valid_length: Callable[[int], int] | None = None


def _as_members(forward: ForwardFn | Sequence[ChunkMember], settings: ChunkSettings) -> list[ChunkMember]:
    if callable(forward):
        return [ChunkMember(forward, settings)]
    members = list(forward)
    if not members or not all(isinstance(member, ChunkMember) for member in members):
        raise TypeError(f"forward must be a callable or a non-empty list of ChunkMember, got {forward!r}")
    return members


def shift_offsets(sampling_rate: int, settings: ChunkSettings, members: int = 1) -> list[list[int]]:
    """The shift offsets per member, as apply_model draws them: ``shifts`` integers uniform in
    ``[0, max_shift]`` (samples) per member, member after member, from a ``torch.Generator`` seeded
    with ``settings.seed`` (never a global RNG). Pass ``k`` of a member delays the input by
    ``max_shift - offsets[k]`` zeros. Without shifts: ``[[], ...]``."""
    if settings.shifts == 0:
        return [[] for _ in range(members)]
    generator = torch.Generator().manual_seed(settings.seed)
    max_shift = int(settings.max_shift * sampling_rate)
    return [
        [int(value) for value in torch.randint(0, max_shift + 1, (settings.shifts,), generator=generator)]
        for _ in range(members)
    ]


def shift_delays(sampling_rate: int, settings: ChunkSettings) -> list[int]:
    """The delays (samples) of one model's shift passes: ``[0]`` without shifts, else
    ``max_shift - offset`` for each of `shift_offsets`' draws."""
    if settings.shifts == 0:
        return [0]
    max_shift = int(settings.max_shift * sampling_rate)
    return [max_shift - offset for offset in shift_offsets(sampling_rate, settings)[0]]


def _member_delays(sampling_rate: int, members: list[ChunkMember]) -> list[list[int]]:
    # one generator for the whole bag, seeded by the first member's settings (they share shifts/seed)
    first = members[0].settings
    drawn = shift_offsets(sampling_rate, first, len(members))
    max_shift = int(first.max_shift * sampling_rate)
    return [[max_shift - offset for offset in offsets] or [0] for offsets in drawn]


def count_chunks(
    total: int,
    sampling_rate: int,
    settings: ChunkSettings,
    members: Sequence[ChunkMember] | None = None,
) -> int:
    """Number of chunks `iter_chunked` will run through the model(s) (for progress bars)."""
    members = [ChunkMember(lambda batch: batch, settings)] if members is None else list(members)
    delays = _member_delays(sampling_rate, members)
    count = 0
    for member, member_delays in zip(members, delays, strict=True):
        for delay in member_delays:
            chunks = _Pass(member, total, delay, sampling_rate, 1.0)
            # chunks wholly inside the delay prefix are never run
            count += sum(o + n > delay for o, n in zip(chunks.offsets, chunks.lengths, strict=True))
    return count


def separate_chunked(
    forward: ForwardFn | Sequence[ChunkMember],
    waveform: np.ndarray,
    num_sources: int,
    sampling_rate: int,
    settings: ChunkSettings,
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Separate float32 ``(channels, time)`` into float32 ``(sources, channels, time)``.

    `iter_chunked` over the whole waveform, its spans copied into one preallocated array.
    """
    if waveform.ndim != 2:
        raise ValueError(f"waveform must be (channels, time), got shape {tuple(waveform.shape)}")
    channels, total = waveform.shape
    output = np.empty((num_sources, channels, total), dtype=np.float32)
    filled = 0
    for span in iter_chunked(
        forward, [waveform], total, channels, num_sources, sampling_rate, settings, progress
    ):
        output[..., filled : filled + span.shape[-1]] = span
        filled += span.shape[-1]
    return output


class _InputWindow:
    """The part of an input, given as consecutive ``(channels, n)`` blocks, that chunks still need.

    `read` pulls blocks until the requested range is available; `release` forgets what lies before
    a position. A single block holding the whole input is only ever sliced (views, no copy).
    """

    def __init__(self, blocks: Iterable[np.ndarray], channels: int, total: int) -> None:
        self._blocks = iter(blocks)
        self.channels = channels
        self._channels = channels
        self._total = total
        self._buffer = np.zeros((channels, 0), dtype=np.float32)
        self._start = 0  # input position of self._buffer[:, 0]

    def _next_block(self) -> np.ndarray | None:
        block = next(self._blocks, None)
        if block is not None and (block.ndim != 2 or block.shape[0] != self._channels):
            raise ValueError(f"input blocks must be ({self._channels}, time), got shape {tuple(block.shape)}")
        return block

    def _fill(self, end: int) -> None:
        available = self._start + self._buffer.shape[1]
        pieces = []
        while available < end:
            block = self._next_block()
            if block is None:
                raise RuntimeError(f"the input ended after {available} samples, {self._total} were announced")
            pieces.append(block)
            available += block.shape[1]
        if pieces:
            if self._buffer.shape[1] == 0 and len(pieces) == 1:
                self._buffer = pieces[0]
            else:
                self._buffer = np.concatenate([self._buffer, *pieces], axis=1)

    def read(self, start: int, length: int) -> np.ndarray:
        """Input ``[start, start + length)``, zeros before 0 and after the end."""
        end = start + length
        real_start, real_end = max(0, start), min(self._total, end)
        if real_end > real_start and real_start < self._start:
            raise RuntimeError(f"internal error: input sample {start} was read after it was released")
        self._fill(real_end)
        if start >= 0 and end <= self._total:
            return self._buffer[:, start - self._start : end - self._start]
        piece = np.zeros((self._channels, length), dtype=np.float32)
        if real_end > real_start:  # else the chunk lies entirely outside the input
            piece[:, real_start - start : real_end - start] = self._buffer[
                :, real_start - self._start : real_end - self._start
            ]
        return piece

    def release(self, before: int) -> None:
        drop = min(max(0, before - self._start), self._buffer.shape[1])
        if drop:
            self._buffer = self._buffer[:, drop:]
            self._start += drop

    def finish(self) -> None:
        """Check that the blocks hold exactly the announced number of samples."""
        self._fill(self._total)
        extra = self._start + self._buffer.shape[1] - self._total
        while (block := self._next_block()) is not None:
            extra += block.shape[1]
        if extra > 0:
            raise RuntimeError(f"the input holds {self._total + extra} samples, {self._total} were announced")


class _Pass:
    """One member's pass over the input delayed by ``delay`` zero samples (a shift, or the only one).

    Chunk ``i`` covers virtual positions ``[offsets[i], offsets[i] + lengths[i])`` (input position =
    virtual - delay; the ``padded_from_start`` layout lets chunks reach beyond both ends); the
    model sees ``reads[i]`` samples that hold the chunk from their sample ``leads[i]`` on (the
    chunk plus its context: centred for ``segment`` / ``valid_length``, MSST's reflections for
    ``reflect_pad``).
    """

    def __init__(
        self, member: ChunkMember, total: int, delay: int, sampling_rate: int, scale: float | np.ndarray
    ) -> None:
        settings = member.settings
        segment = settings.chunk_samples or segment_samples(settings.segment, sampling_rate)
        if segment < 1:
            raise ValueError(f"segment={settings.segment} s is shorter than one sample at {sampling_rate} Hz")
        self.member = member
        self.settings = settings
        self.delay = delay
        self.total = total
        self.scale = scale
        self.virtual_total = total + delay
        if settings.layout == "from_start":
            self.offsets, self.lengths = from_start_layout(self.virtual_total, segment, settings.overlap)
        elif settings.layout == "padded_from_start":
            step = padded_step(segment, settings)
            self.offsets, self.lengths = padded_from_start_layout(self.virtual_total, segment, step)
        else:
            chunk, self.offsets = chunk_layout(self.virtual_total, segment, settings.overlap)
            self.lengths = [chunk] * len(self.offsets)
        self.reads = [self._read_length(length, segment) for length in self.lengths]
        reflect = settings.context == "reflect_pad"
        self.leads = [0 if reflect else (r - n) // 2 for n, r in zip(self.lengths, self.reads, strict=True)]
        self.windows = _Windows(self.offsets, self.lengths, settings, segment)
        # earliest input position any chunk from index i on will read (context included)
        starts = [self._first_read(index) for index in range(len(self.offsets))]
        self._read_from = list(itertools.accumulate(reversed(starts), min))[::-1]
        self.next = 0  # index of the next chunk to run
        self.previous: np.ndarray | None = None  # aligned sources of the previous chunk (speech)

    def _read_length(self, length: int, segment: int) -> int:
        context = self.settings.context
        if context in ("segment", "reflect_pad"):
            target = max(length, segment)
        elif context == "valid_length":
            if self.member.valid_length is None:
                raise ValueError('chunk_context="valid_length" needs the model\'s valid_length')
            target = int(self.member.valid_length(length))
        else:
            target = length
        if target < length:
            raise RuntimeError(f"the model's valid length {target} is shorter than the chunk ({length})")
        return target

    def _reflected_positions(self, index: int) -> np.ndarray:
        """Input positions of the ``reads[index]`` samples the model sees under ``reflect_pad``
        (-1: a zero). As MSST's ``demix``: the virtual input reflected (``torch``'s "reflect",
        the edge sample not repeated) beyond its ends, and a chunk shorter than the segment
        completed by its own reflection when it holds more than half a segment, by zeros otherwise."""
        offset, length, read = self.offsets[index], self.lengths[index], self.reads[index]
        within = np.arange(read, dtype=np.int64)
        zero = np.zeros(read, dtype=bool)
        if read > length:
            if 2 * length > read:  # MSST: chunk_len > chunk_size // 2 (read is the segment here)
                within = np.where(within < length, within, 2 * (length - 1) - within)
            else:
                zero = within >= length
        virtual = offset + within
        last = self.virtual_total - 1
        virtual = np.where(virtual < 0, -virtual, virtual)
        virtual = np.where(virtual > last, 2 * last - virtual, virtual)
        positions = virtual - self.delay
        positions[zero | (positions < 0)] = -1  # completion zeros and the zero delay prefix
        return positions

    def _first_read(self, index: int) -> int:
        if self.settings.context == "reflect_pad":
            positions = self._reflected_positions(index)
            positions = positions[positions >= 0]
            return int(positions.min()) if positions.size else self.total
        return self.offsets[index] - self.delay - self.leads[index]

    def model_input(self, source: _InputWindow, index: int) -> np.ndarray:
        """The ``(channels, reads[index])`` samples the model sees for chunk ``index``."""
        if self.settings.context != "reflect_pad":
            return source.read(self.offsets[index] - self.delay - self.leads[index], self.reads[index])
        positions = self._reflected_positions(index)
        valid = positions >= 0
        piece = np.zeros((source.channels, positions.size), dtype=np.float32)
        if valid.any():
            low, high = int(positions[valid].min()), int(positions[valid].max()) + 1
            piece[:, valid] = source.read(low, high - low)[:, positions[valid] - low]
        return piece

    @property
    def done(self) -> bool:
        return self.next >= len(self.offsets)

    def frontier(self) -> int:
        """Input position before which this pass has added every contribution."""
        if self.done:
            return self.total
        return min(self.total, max(0, self.offsets[self.next] - self.delay))

    def read_frontier(self) -> int:
        """Input position before which this pass reads nothing any more."""
        if self.done:
            return self.total
        return min(self.total, max(0, self._read_from[self.next]))


class _Accumulator:
    """Sum of the weighted chunk outputs over ``[emitted, emitted + used)``, grown on demand."""

    def __init__(self, num_sources: int, channels: int, capacity: int) -> None:
        self.data = np.zeros((num_sources, channels, max(1, capacity)), dtype=np.float32)
        self.emitted = 0  # input position of self.data[..., 0]
        self.used = 0

    def target(self, start: int, end: int) -> np.ndarray:
        """Writable view of input positions ``[start, end)`` (``start >= emitted``)."""
        lo, hi = start - self.emitted, end - self.emitted
        if hi > self.data.shape[-1]:
            grown = np.zeros((*self.data.shape[:-1], max(hi, 2 * self.data.shape[-1])), dtype=np.float32)
            grown[..., : self.used] = self.data[..., : self.used]
            self.data = grown
        self.used = max(self.used, hi)
        return self.data[..., lo:hi]

    def pop(self, end: int) -> np.ndarray:
        """Copy of input positions ``[emitted, end)``; they are forgotten."""
        count = end - self.emitted
        span = np.zeros((*self.data.shape[:-1], count), dtype=np.float32)
        valid = min(count, self.used)  # beyond `used` nothing was ever added: zeros
        span[..., :valid] = self.data[..., :valid]
        remaining = self.used - valid
        if remaining:
            self.data[..., :remaining] = self.data[..., count : count + remaining]
        self.data[..., remaining : self.used] = 0.0
        self.used = remaining
        self.emitted = end
        return span


def iter_chunked(
    forward: ForwardFn | Sequence[ChunkMember],
    blocks: Iterable[np.ndarray],
    total: int,
    channels: int,
    num_sources: int,
    sampling_rate: int,
    settings: ChunkSettings,
    progress: Callable[[int], None] | None = None,
) -> Iterator[np.ndarray]:
    """Separate an input of ``total`` samples given as consecutive float32 ``(channels, n)`` blocks.

    Yields float32 ``(sources, channels, n)`` spans that are final (every chunk, shift pass and bag
    member covering them has been added), in order, together exactly ``total`` samples long.
    Memory is O(``segment * batch_size``) beyond the blocks themselves: only the input still needed
    by a chunk and the output not yet final are kept. The in-memory `separate_chunked` and the
    streaming file path both consume this generator, so they compute the same numbers.

    ``forward`` is one model, or a list of `ChunkMember` (a bag: each member with its own policy
    and per-source weights, as apply_model applies a bag). Passes (members x shifts) are
    interleaved: the next batch always comes from the pass that lags furthest behind (the first
    such pass on ties), so every pass only needs a window of the input. A forward maps a float32
    CPU tensor ``(chunks, channels, time)`` to ``(chunks, sources, channels, time)`` (any
    device/dtype; it is brought back to float32 CPU here). ``progress`` is called with the number
    of chunks just processed.
    """
    if total <= 0:
        raise ValueError(f"cannot separate {total} samples")
    members = _as_members(forward, settings)
    passes = []
    for member, delays in zip(members, _member_delays(sampling_rate, members), strict=True):
        if member.source_weights is None:
            scale: float | np.ndarray = 1.0 / len(delays)
        else:
            if len(member.source_weights) != num_sources:
                raise ValueError(
                    f"source_weights must hold {num_sources} values, got {member.source_weights!r}"
                )
            scale = (np.asarray(member.source_weights, dtype=np.float32) / len(delays))[:, None, None]
        passes.extend(_Pass(member, total, delay, sampling_rate, scale) for delay in delays)
    align = settings.permutation_invariant and num_sources > 1
    if align and any(len(p.offsets) > 1 and p.offsets[1] >= p.offsets[0] + p.lengths[0] for p in passes):
        warnings.warn(
            "overlap=0 leaves no common region to keep speakers consistent between chunks; "
            "use overlap > 0 for speech models",
            stacklevel=3,
        )
    source = _InputWindow(blocks, channels, total)
    capacity = max(p.lengths[0] for p in passes) * (1 + settings.batch_size)
    accumulator = _Accumulator(num_sources, channels, capacity)
    while True:
        pending = [p for p in passes if not p.done]
        if not pending:
            break
        current = min(pending, key=_Pass.frontier)
        ran = _run_batch(source, accumulator, current, num_sources, channels, sampling_rate, align)
        if progress is not None:
            progress(ran)
        source.release(min(p.read_frontier() for p in passes))
        frontier = min(p.frontier() for p in passes)
        if frontier > accumulator.emitted:
            yield accumulator.pop(frontier)
    source.finish()


def _run_batch(
    source: _InputWindow,
    accumulator: _Accumulator,
    current: _Pass,
    num_sources: int,
    channels: int,
    sampling_rate: int,
    align: bool,
) -> int:
    """Run the next chunks of ``current`` (up to ``batch_size``, all of one read length), add them
    (times the pass's scale) to the sum and return how many ran."""
    offsets, lengths, reads, leads, delay = (
        current.offsets,
        current.lengths,
        current.reads,
        current.leads,
        current.delay,
    )
    first = current.next
    indices = [first]
    while (
        len(indices) < current.settings.batch_size
        and indices[-1] + 1 < len(offsets)
        and reads[indices[-1] + 1] == reads[first]
    ):
        indices.append(indices[-1] + 1)
    read = reads[first]
    # virtual position p maps to input sample p - delay; a chunk wholly in the delay prefix only
    # adds to outputs that are cut off, so it is not run at all
    starts = [offsets[i] - delay for i in indices]
    needed = [start + lengths[i] > 0 for start, i in zip(starts, indices, strict=True)]
    pieces = [
        current.model_input(source, i) if need else None for i, need in zip(indices, needed, strict=True)
    ]
    active = [k for k, piece in enumerate(pieces) if piece is not None and np.any(piece)]
    results: list[np.ndarray | None] = [None] * len(indices)
    if active:
        batch = torch.from_numpy(np.stack([pieces[k] for k in active]))
        estimates = current.member.forward(batch)
        estimates = estimates.detach().to(device="cpu", dtype=torch.float32).numpy()
        expected = (len(active), num_sources, channels, read)
        if estimates.shape != expected:
            raise RuntimeError(f"the model returned shape {estimates.shape} for chunks of shape {expected}")
        for k, estimate in zip(active, estimates, strict=True):
            lead = leads[indices[k]]
            results[k] = estimate[..., lead : lead + lengths[indices[k]]]
    del pieces
    for k, index in enumerate(indices):
        start, chunk = starts[k], lengths[index]
        if not needed[k]:
            current.previous = None
            continue
        estimate = results[k]
        if estimate is None:  # digital silence in (the model's whole view): silence out
            estimate = np.zeros((num_sources, channels, chunk), dtype=np.float32)
        elif not np.isfinite(estimate).all():
            begin, end = max(0, start) / sampling_rate, min(start + chunk, current.total) / sampling_rate
            raise RuntimeError(f"the model produced NaN/Inf for the chunk {begin:.2f}-{end:.2f} s")
        if align and current.previous is not None and index > 0:
            common = min(offsets[index - 1] + lengths[index - 1] - offsets[index], chunk)
            if common > 0:
                previous = current.previous
                perm = align_sources(previous[..., previous.shape[-1] - common :], estimate[..., :common])
                if perm != tuple(range(num_sources)):
                    estimate = estimate[list(perm)]
        weight = current.windows.normalised(index)
        lo = max(0, -start)  # skip the zero delay prefix (and MSST's padding before the input)
        hi = min(chunk, current.total - start)  # and MSST's padding after it
        if hi > lo:
            target = accumulator.target(start + lo, start + hi)
            target += (current.scale * weight[lo:hi]) * estimate[..., lo:hi]
        current.previous = estimate if align else None
        results[k] = None
    current.next = indices[-1] + 1
    return len(indices)
