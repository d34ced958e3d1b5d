"""BSS Eval v3 (``bss_eval_sources`` as mir_eval computes it; museval's ``bsseval_sources_version``
for multichannel input), framewise.

SDR = ‖P_own‖²/‖ŝ−P_own‖², SIR = ‖P_own‖²/‖P_all−P_own‖², SAR = ‖P_all‖²/‖ŝ−P_all‖² (no ISR). The
distortion filters are re-estimated on every frame, without regularisation; silent frames are
skipped (their Gram matrices are singular) and left for the caller to fill with NaN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .bss_energies import Energies
from .bss_framing import frame_chunks, frame_views, take_frames
from .bss_projection import solve_filters

__all__ = ["v3_energies"]


def v3_energies(
    refs: torch.Tensor,
    ests: torch.Tensor,
    bounds: Sequence[tuple[int, int]],
    frame_silent: torch.Tensor,
    pairs: Sequence[tuple[int, int]],
    *,
    filters_len: int,
    need_all: bool,
) -> Energies:
    """Energies of the non-silent frames (``frame_silent``: ``(frames,)`` bool) of
    ``(sources, channels, samples)`` signals; ``need_all``: SIR or SAR wanted, not only the SDR."""
    num_sources, num_channels, _ = refs.shape
    energies = Energies(num_sources, pairs, len(bounds))
    refs, ests = refs.contiguous(), ests.contiguous()  # the correlations read whole channels
    ref_frames, est_frames = frame_views(refs, ests, bounds)
    length = bounds[0][1] - bounds[0][0]
    per_frame = num_sources * num_channels * length
    # room for the per-frame Gram matrices and their factorisation
    per_frame += 3 * (num_sources * num_channels * filters_len) ** 2 if need_all else 0
    per_frame += 3 * num_sources * (num_channels * filters_len) ** 2
    todo = (~frame_silent).nonzero().flatten().tolist()
    for chunk in frame_chunks(todo, per_frame):
        frame_refs = take_frames(ref_frames, chunk)  # (F, S, C, n) float64
        frame_ests = take_frames(est_frames, chunk)
        filters = solve_filters(frame_refs, frame_ests, filters_len, pairs, need_all, eps=None)
        energies.add_projected(chunk, frame_refs, frame_ests, filters)
    return energies
