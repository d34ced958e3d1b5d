"""BSS Eval framing and input handling: frame bounds (museval / mir_eval rules), length matching,
input validation into ``(sources, channels, samples)`` tensors, silence tests, and frame batches
sized to a memory budget. Shared by the v4 and v3 paths (`demixers.evaluation.bss_eval`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .bss_projection import CHUNK_ELEMENTS

__all__ = [
    "as_sources_tensors",
    "frame_bounds",
    "frame_chunks",
    "frame_views",
    "pad_or_truncate",
    "silence",
    "take_frames",
]


def pad_or_truncate(references: np.ndarray, estimates: np.ndarray, axis: int = 1) -> np.ndarray:
    """Return ``estimates`` cut or zero-padded to the length of ``references`` along ``axis``.

    This is what ``museval.evaluate(padding=True)`` does before evaluating.
    """
    target = references.shape[axis]
    current = estimates.shape[axis]
    if current > target:
        return np.take(estimates, np.arange(target), axis=axis)
    if current < target:
        widths = [(0, 0)] * estimates.ndim
        widths[axis] = (0, target - current)
        return np.pad(estimates, widths)
    return estimates


def frame_bounds(
    num_samples: int, window: int | float, hop: int | float, rule: str = "museval"
) -> list[tuple[int, int]]:
    """``(start, stop)`` of each evaluation frame.

    ``rule="museval"``: ``museval.metrics.Framing`` (full windows only; one frame of the whole
    signal when ``window >= num_samples``). ``rule="mir_eval"``: ``bss_eval_sources_framewise``
    (the whole signal as soon as fewer than two windows fit).
    """
    if num_samples < 1:
        raise ValueError("signals must have at least one sample")
    if window != math.inf:
        if window < 1 or hop < 1 or int(window) != window or int(hop) != hop:
            raise ValueError(
                f"window and hop must be positive integers (samples) or math.inf, got {window}, {hop}"
            )
        window, hop = int(window), int(hop)
    if rule == "museval":
        if window == math.inf or window >= num_samples:
            return [(0, num_samples)]
        count = (num_samples - window + hop) // hop
        return [(k * hop, k * hop + window) for k in range(count)]
    if rule == "mir_eval":
        if window == math.inf:
            return [(0, num_samples)]
        count = math.floor((num_samples - window + hop) / hop)
        if count < 2:
            return [(0, num_samples)]
        return [(k * hop, k * hop + window) for k in range(count)]
    raise ValueError(f"rule must be 'museval' or 'mir_eval', got {rule!r}")


def as_sources_tensors(
    references: Any, estimates: Any, device: str | torch.device | None
) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
    """Validate and return ``(sources, channels, samples)`` tensors on ``device``."""
    tensors = []
    for name, value in (("references", references), ("estimates", estimates)):
        if isinstance(value, torch.Tensor):
            tensor = value.detach()
        else:
            array = np.asarray(value)
            if array.dtype.kind not in "fiu":
                raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
            if not array.flags.writeable:
                array = array.copy()
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got {tensor.dtype}")
        if tensor.ndim == 1:
            tensor = tensor[None, :, None]
        elif tensor.ndim == 2:
            tensor = tensor[:, :, None]
        elif tensor.ndim != 3:
            raise ValueError(f"{name} must be (sources, samples, channels), got shape {tuple(tensor.shape)}")
        tensors.append(tensor)
    refs, ests = tensors
    if refs.shape != ests.shape:
        raise ValueError(
            f"references {tuple(refs.shape)} and estimates {tuple(ests.shape)} must have the same "
            "(sources, samples, channels) shape (see pad_or_truncate)"
        )
    if refs.numel() == 0:
        raise ValueError(f"empty input of shape {tuple(refs.shape)}")
    if device is None:
        device = refs.device
    device = torch.device(device)
    out = []
    for name, tensor in (("references", refs), ("estimates", ests)):
        tensor = tensor.to(device)
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.float64)
        # a float64 sum is finite unless a sample is NaN/inf (cheaper than an isfinite mask)
        if not torch.isfinite(tensor.sum(dtype=torch.float64)) and not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contain NaN or infinite samples")
        out.append(tensor.transpose(1, 2))  # (sources, channels, samples), a view
    return out[0], out[1], device


def silence(signals: torch.Tensor, bounds: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Silent sources, museval's ``_any_source_silent`` test: the channel sum is zero at every sample.

    Returns ``(per_frame (sources, frames), whole_signal (sources,))`` boolean CPU tensors.
    """
    summed = signals.sum(dim=1) if signals.shape[1] <= 2 else signals.to(torch.float64).sum(dim=1)
    nonzero = summed != 0  # (S, N); a two-term float sum is zero exactly when museval's float64 one is
    length = bounds[0][1] - bounds[0][0]
    step = bounds[1][0] - bounds[0][0] if len(bounds) > 1 else 1
    per_frame = ~nonzero.unfold(-1, length, step).any(dim=-1)
    return per_frame.cpu(), ~nonzero.any(dim=-1).cpu()


def frame_views(
    refs: torch.Tensor, ests: torch.Tensor, bounds: Sequence[tuple[int, int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(S, C, frames, n)`` strided views of the frames given by ``bounds`` (equal length, equal hop)."""
    length = bounds[0][1] - bounds[0][0]
    step = bounds[1][0] - bounds[0][0] if len(bounds) > 1 else 1
    return refs.unfold(-1, length, step), ests.unfold(-1, length, step)


def frame_chunks(frames: list[int], elements_per_frame: int) -> list[list[int]]:
    size = max(1, CHUNK_ELEMENTS // (8 * max(1, elements_per_frame)))
    return [frames[i : i + size] for i in range(0, len(frames), size)]


def take_frames(frames: torch.Tensor, chunk: list[int]) -> torch.Tensor:
    """float64 ``(len(chunk), sources, channels, n)`` frames of a ``(S, C, frames, n)`` view.

    A run of consecutive frames is a strided view (no copy for float64 input)."""
    if chunk == list(range(chunk[0], chunk[0] + len(chunk))):
        selected = frames[:, :, chunk[0] : chunk[0] + len(chunk)]
    else:
        selected = frames.index_select(2, torch.tensor(chunk, device=frames.device))
    return selected.permute(2, 0, 1, 3).to(torch.float64)
