"""BSS Eval v4 (``bss_eval_images`` as museval computes it), framewise.

SDR = ‖s‖²/‖ŝ−s‖², ISR = ‖s‖²/‖P_own−s‖², SIR = ‖P_own‖²/‖P_all−P_own‖², SAR = ‖P_all‖²/‖ŝ−P_all‖².
The distortion filters are estimated once on the whole signals (museval's default
``framewise_filters=False``), with the least-squares system regularised by ``eps·I`` as in museval,
and applied to each frame's references. The SDR needs no filter, so an SDR-only evaluation skips the
projections. Every frame is evaluated, in contiguous runs; the caller overwrites silent frames with NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .bss_energies import Energies
from .bss_framing import frame_chunks, frame_views, take_frames
from .bss_projection import solve_filters

__all__ = ["v4_energies"]

# museval regularises its least-squares systems by machine epsilon on the diagonal
_REGULARISATION = float(np.finfo(np.float64).eps)


def v4_energies(
    refs: torch.Tensor,
    ests: torch.Tensor,
    bounds: Sequence[tuple[int, int]],
    pairs: Sequence[tuple[int, int]],
    *,
    filters_len: int,
    project: bool,
    need_all: bool,
) -> Energies:
    """Energies of every frame of ``(sources, channels, samples)`` signals.

    ``project``: compute the projections (ISR, SIR or SAR wanted); ``need_all``: also the projection
    on every reference (SIR, SAR), not only on the own one (ISR).
    """
    num_sources, num_channels, _ = refs.shape
    energies = Energies(num_sources, pairs, len(bounds))
    filters = None
    if project:  # the correlations read whole channels: make them contiguous once
        refs, ests = refs.contiguous(), ests.contiguous()
    ref_frames, est_frames = frame_views(refs, ests, bounds)
    if project:
        filters = solve_filters(refs, ests, filters_len, pairs, need_all, eps=_REGULARISATION)
    length = bounds[0][1] - bounds[0][0]
    for chunk in frame_chunks(list(range(len(bounds))), num_sources * num_channels * length):
        frame_refs = take_frames(ref_frames, chunk)  # (F, S, C, n) float64
        frame_ests = take_frames(est_frames, chunk)
        if filters is None:
            energies.add_plain(chunk, frame_refs, frame_ests)
        else:
            energies.add_projected(chunk, frame_refs, frame_ests, filters)
    return energies
