"""Chunked separation for Demucs models, with the semantics of the original ``apply_model``.

`separate_with_chunks` cuts a track of any length into windows of ``segment`` seconds that overlap
by ``overlap``, runs the model on each window (padded with the surrounding audio, or zeros at the
track's ends, to the length the model wants), and cross-fades the windows with triangular weights
raised to ``transition_power``. ``shifts > 0`` repeats everything on copies of the track delayed by
random offsets of up to half a second and averages the realigned results (the "shift trick"); the
offsets come from a ``torch.Generator`` (or are given explicitly), never from a global RNG. A bag
applies all of this to each member separately, then averages the members with their per-source
weights.

Normalisation: with ``normalize=True`` (the default, as the original ``demucs.api`` / ``demucs
separate`` do) the whole track is standardised by the mean and standard deviation of its mono
mix before chunking and the sources are scaled back afterwards. The models' ``forward`` does not do
this track-level step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.nn import functional as F

from .configuration_demucs import segment_samples
from .layers_demucs import center_trim
from .modeling_demucs import DemucsBagForSourceSeparation, HTDemucsForSourceSeparation


class _Window:
    """A window ``[offset, offset + length)`` on ``base`` that can be padded with its context.

    Positions outside ``base`` read as zeros, so a window may start before it (a negative
    ``offset``): a shifted copy of the track is a window on the track itself, nothing is copied.
    """

    def __init__(self, base: torch.Tensor, offset: int = 0, length: int | None = None) -> None:
        total = base.shape[-1]
        if offset >= total:
            raise ValueError(f"window offset {offset} is past the end of the {total}-sample base")
        self.base = base
        self.offset = offset
        self.length = total - offset if length is None else min(total - offset, length)

    def sub(self, offset: int, length: int) -> _Window:
        if not 0 <= offset < self.length:
            raise ValueError(f"window offset {offset} outside [0, {self.length})")
        return _Window(self.base, self.offset + offset, min(self.length - offset, length))

    def padded(self, target: int) -> torch.Tensor:
        """``target`` samples centred on the window: real neighbouring samples where the base has them,
        zeros beyond its ends."""
        excess = target - self.length
        if excess < 0:
            raise ValueError(f"cannot pad a {self.length}-sample window to {target}")
        start = self.offset - excess // 2
        end = start + target
        total = self.base.shape[-1]
        low = min(max(0, start), total)
        high = min(total, end)
        if high <= low:  # the whole range lies before the base (a long delay, a short segment)
            return self.base.new_zeros((*self.base.shape[:-1], target))
        return F.pad(self.base[..., low:high], (low - start, end - high))


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


def _run_windows(
    model, windows: list[_Window], segment: float | None, batch_size: int
) -> Iterator[tuple[_Window, torch.Tensor]]:
    """Yield each window with the model's output for it, trimmed to the window's length."""
    config = model.config
    device, dtype = _model_device_dtype(model)
    prepared = []
    for window in windows:
        if isinstance(model, HTDemucsForSourceSeparation) and segment is not None:
            target = int(segment * config.sampling_rate)
        else:
            target = model.valid_length(window.length)
        prepared.append((window, target))
    start = 0
    while start < len(prepared):
        # batch consecutive windows of the same padded length
        stop = start + 1
        while stop < len(prepared) and stop - start < batch_size and prepared[stop][1] == prepared[start][1]:
            stop += 1
        group = prepared[start:stop]
        inputs = torch.cat([window.padded(target) for window, target in group]).to(device=device, dtype=dtype)
        with torch.inference_mode():
            outputs = model(input_values=inputs).audio_values
        batch = group[0][0].base.shape[0]
        for index, (window, _) in enumerate(group):
            out = outputs[index * batch : (index + 1) * batch]
            yield window, center_trim(out, window.length)
        start = stop


def _split(
    model, window: _Window, segment: float | None, overlap: float, transition_power: float, batch_size: int
) -> torch.Tensor:
    config = model.config
    if segment is None:
        segment_length = segment_samples(config.segment, config.sampling_rate)
    else:
        segment_length = int(config.sampling_rate * segment)
    if segment_length <= 0:
        raise ValueError(f"segment must be positive, got {segment}")
    stride = int((1 - overlap) * segment_length)
    if stride <= 0:
        raise ValueError(f"overlap={overlap} leaves no stride for a {segment_length}-sample segment")
    base = window.base
    batch, channels = base.shape[0], base.shape[1]
    length = window.length
    out = torch.zeros(batch, len(config.source_names), channels, length, device=base.device)
    total_weight = torch.zeros(length, device=base.device)
    # triangle, maximal in the middle of the segment, normalised, then raised to transition_power
    ramp = torch.cat(
        [torch.arange(1, segment_length // 2 + 1), torch.arange(segment_length - segment_length // 2, 0, -1)]
    )
    weight = ((ramp / ramp.max()) ** transition_power).to(base.device)
    windows = [window.sub(offset, segment_length) for offset in range(0, length, stride)]
    for chunk, chunk_out in _run_windows(model, windows, segment, batch_size):
        begin = chunk.offset - window.offset
        out[..., begin : begin + chunk.length] += (weight[: chunk.length] * chunk_out).to(base.device)
        total_weight[begin : begin + chunk.length] += weight[: chunk.length]
    return out.div_(total_weight)


def _apply_member(
    model,
    window: _Window,
    shifts: int,
    offsets: Iterator[int],
    segment: float | None,
    overlap: float,
    transition_power: float,
    batch_size: int,
) -> torch.Tensor:
    if not shifts:
        return _split(model, window, segment, overlap, transition_power, batch_size)
    max_shift = int(0.5 * model.config.sampling_rate)
    length = window.length
    total = None
    for _ in range(shifts):
        offset = next(offsets)
        if not 0 <= offset <= max_shift:
            raise ValueError(f"shift offsets must be in [0, {max_shift}], got {offset}")
        # the track delayed by (max_shift - offset) zeros, as a window on the track itself (the
        # original pads a copy of the track with max_shift zeros on both sides and windows that)
        shifted = _Window(window.base, window.offset + offset - max_shift, length + max_shift - offset)
        out = _split(model, shifted, segment, overlap, transition_power, batch_size)[
            ..., max_shift - offset :
        ]
        total = out if total is None else total.add_(out)
    return total.div_(shifts)


def separate_with_chunks(
    model,
    mix: torch.Tensor,
    segment: float | None = None,
    overlap: float = 0.25,
    shifts: int = 0,
    transition_power: float = 1.0,
    generator: torch.Generator | None = None,
    shift_offsets: Sequence[int] | None = None,
    batch_size: int = 1,
    normalize: bool = True,
) -> torch.Tensor:
    """Separate ``mix`` ``(batch, channels, time)`` of any length into ``(batch, sources, channels, time)``.

    Args:
        model: a Demucs, HDemucs, HTDemucs or bag model (in eval mode).
        segment: window length in seconds; defaults to each model's ``config.segment``. An HTDemucs
            model cannot take windows longer than the segment it was trained on.
        overlap: fraction of a window shared with the next one.
        shifts: number of random time shifts (0 = none) averaged per model.
        transition_power: exponent of the cross-fade weights (>= 1; larger = sharper).
        generator: draws the shift offsets (uniform in ``[0, sampling_rate // 2]``); defaults to
            ``torch.Generator().manual_seed(0)`` so results are reproducible.
        shift_offsets: explicit offsets instead, consumed model by model then shift by shift
            (``shifts`` per member), e.g. the offsets the original ``apply_model`` drew.
        batch_size: windows evaluated per forward call.
        normalize: standardise the track by its mono mix's mean/std first (see module docstring).
    """
    if not isinstance(mix, torch.Tensor) or mix.dim() != 3:
        raise ValueError(
            f"mix must be a (batch, channels, time) tensor, got {getattr(mix, 'shape', type(mix))}"
        )
    config = model.config
    if mix.shape[1] != config.audio_channels:
        raise ValueError(f"mix has {mix.shape[1]} channels but the model expects {config.audio_channels}")
    if mix.shape[-1] == 0:
        raise ValueError("mix is empty (zero samples)")
    if not torch.isfinite(mix).all():
        raise ValueError("mix contains NaN or Inf samples")
    if transition_power < 1:
        raise ValueError(f"transition_power must be >= 1, got {transition_power}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if shifts < 0:
        raise ValueError(f"shifts must be >= 0, got {shifts}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if model.training:
        raise ValueError("call model.eval() before separate_with_chunks")

    mix = mix.float()
    if normalize:
        mono = mix.mean(dim=1)
        mean = mono.mean(dim=-1)[:, None, None]
        std = mono.std(dim=-1)[:, None, None] + 1e-8
        mix = (mix - mean) / std

    members = list(model.models) if isinstance(model, DemucsBagForSourceSeparation) else [model]
    weights = (
        model.config.weights
        if isinstance(model, DemucsBagForSourceSeparation)
        else [[1.0] * len(config.source_names)]
    )
    if shift_offsets is not None:
        offsets_list = [int(offset) for offset in shift_offsets]
        if len(offsets_list) < shifts * len(members):
            raise ValueError(
                f"shift_offsets holds {len(offsets_list)} offsets, {shifts * len(members)} are needed"
            )
        offsets: Iterator[int] = iter(offsets_list)
    else:
        draw = generator if generator is not None else torch.Generator().manual_seed(0)
        max_shift = int(0.5 * config.sampling_rate)
        offsets = (int(torch.randint(0, max_shift + 1, (1,), generator=draw).item()) for _ in iter(int, 1))

    estimate = None
    totals = [0.0] * len(config.source_names)
    window = _Window(mix)
    for member, row in zip(members, weights, strict=True):
        out = _apply_member(member, window, shifts, offsets, segment, overlap, transition_power, batch_size)
        # in place: the track-sized results are never copied (weights of 1 are exact no-ops)
        if any(value != 1.0 for value in row):
            out.mul_(torch.tensor(row, dtype=out.dtype, device=out.device)[None, :, None, None])
        for index, value in enumerate(row):
            totals[index] += value
        estimate = out if estimate is None else estimate.add_(out)
    if any(value != 1.0 for value in totals):
        estimate.div_(torch.tensor(totals, dtype=estimate.dtype, device=estimate.device)[None, :, None, None])
    if normalize:
        estimate.mul_(std[:, None]).add_(mean[:, None])
    return estimate
