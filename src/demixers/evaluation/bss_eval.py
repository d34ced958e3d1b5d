"""BSS Eval (v4 as museval computes it, v3 ``bss_eval_sources`` as mir_eval computes it), batched in torch.

Layout and conventions follow museval so that results can be compared one to one:

* ``references`` and ``estimates`` are ``(sources, samples, channels)`` (a 2-D ``(sources, samples)``
  array is read as mono, a 1-D one as a single mono source), numpy arrays or torch tensors of the
  same shape;
* the result is a dict of float64 numpy arrays ``(sources, frames)``: ``sdr``, ``isr``, ``sir``,
  ``sar`` for v4 and ``sdr``, ``sir``, ``sar`` for v3 (``bss_eval_sources`` has no ISR), plus
  ``perm`` when ``compute_permutation=True`` (``perm[j, t]`` is the estimate matched to reference
  ``j`` in frame ``t``).

The decomposition (Vincent et al., 2006) projects each estimate on the span of delayed copies
(``filters_len`` taps) of the references: ``P_own`` on its own reference's channels, ``P_all`` on
every reference. With ``s`` the reference image and ``ŝ`` the estimate (both zero-padded by
``filters_len - 1`` samples), per frame:

* v4 (``bss_eval_images``, museval): SDR = ‖s‖²/‖ŝ−s‖², ISR = ‖s‖²/‖P_own−s‖²,
  SIR = ‖P_own‖²/‖P_all−P_own‖², SAR = ‖P_all‖²/‖ŝ−P_all‖². The distortion filters are estimated
  once on the whole signals (museval's default ``framewise_filters=False``) and applied to each
  frame's references; the least-squares system is regularised by ``eps·I`` as in museval.
* v3 (``bss_eval_sources``, mir_eval): SDR = ‖P_own‖²/‖ŝ−P_own‖², SIR and SAR as above, with the
  filters re-estimated on every frame and no regularisation.

Frames: v4 follows museval's ``Framing`` (``floor((n − window + hop) / hop)`` full windows, or the
whole signal when ``window ≥ n``); v3 follows ``mir_eval.separation.bss_eval_sources_framewise``
(the whole signal when fewer than two windows fit).

Silence, the museval way: a frame in which any reference or any estimate is silent (its channel
sum is zero at every sample) gets NaN for every source and metric; museval's aggregates skip those
frames with ``nanmedian``. A source that is silent over the whole signal is an error in museval and
mir_eval (``on_silent="raise"``, the default here); ``on_silent="nan"`` instead returns all-NaN
frames, which is what a dataset loop wants (see `demixers.evaluation.aggregate`).

Speed: the correlations, the Gram matrices, the solves (one LU per system with all right-hand sides
at once) and the per-frame projections (overlap-save FFT convolutions) are batched, in float64, on
``device`` (CPU by default). The v4 SDR does not depend on the filters, so asking only for
``metrics=("sdr",)`` skips the projections entirely.

Modules: this one validates the arguments, tests silence, dispatches and assembles the result
(with the museval/mir_eval order search); `bss_eval_v4` and `bss_eval_v3` are the two paths;
`bss_framing` (frames, input handling), `bss_projection` (correlations, distortion filters, solves)
and `bss_energies` (per-frame energies and ratios) are shared by both.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from .bss_energies import evaluation_pairs, pair_index
from .bss_eval_v3 import v3_energies
from .bss_eval_v4 import v4_energies
from .bss_framing import as_sources_tensors, frame_bounds, pad_or_truncate, silence

__all__ = ["BSS_EVAL_METRICS", "bss_eval", "frame_bounds", "pad_or_truncate"]

BSS_EVAL_METRICS = ("sdr", "isr", "sir", "sar")
_VERSIONS = ("v4", "v3")


def bss_eval(
    references: Any,
    estimates: Any,
    sampling_rate: int | None = None,
    window: int | float | None = None,
    hop: int | float | None = None,
    version: str = "v4",
    *,
    metrics: Iterable[str] | None = None,
    compute_permutation: bool = False,
    filters_len: int = 512,
    on_silent: str = "raise",
    device: str | torch.device | None = None,
) -> dict[str, np.ndarray]:
    """Framewise BSS Eval metrics, numerically equal to museval (v4) or mir_eval (v3).

    Args:
        references, estimates: ``(sources, samples, channels)`` arrays/tensors of equal shape.
        sampling_rate: only used for the default window: ``window``/``hop`` left at ``None`` mean
            one second at this rate (44100 samples when ``sampling_rate`` is ``None`` too, which is
            museval's MUSDB18 setting).
        window, hop: frame length and hop in samples; ``math.inf`` evaluates the whole signal as
            one frame (mir_eval's ``bss_eval_sources`` is ``version="v3", window=math.inf``).
        version: ``"v4"`` (museval ``evaluate(mode="v4")``) or ``"v3"`` (mir_eval
            ``bss_eval_sources[_framewise]``; multichannel input uses the multichannel projection of
            museval's ``bsseval_sources_version``).
        metrics: subset of ``("sdr", "isr", "sir", "sar")`` to compute (default: all the version
            has). Fewer metrics can be much cheaper (v4 SDR needs no projection at all).
        compute_permutation: also search the estimate order maximising the mean SIR, as museval /
            mir_eval do with the same flag (v4: one order for the whole signal; v3: one per frame).
        filters_len: distortion filter length (512 in both toolboxes).
        on_silent: ``"raise"`` (museval/mir_eval) or ``"nan"`` when a whole source is all zeros.
        device: where to compute (``"cpu"``, ``"cuda"``...); default: the tensors' device or CPU.

    Returns:
        ``{"sdr", "isr" (v4 only), "sir", "sar"[, "perm"]}`` → float64 ``(sources, frames)`` arrays.
    """
    if version not in _VERSIONS:
        raise ValueError(f"version must be one of {_VERSIONS}, got {version!r}")
    available = BSS_EVAL_METRICS if version == "v4" else ("sdr", "sir", "sar")
    wanted = available if metrics is None else tuple(dict.fromkeys(metrics))
    unknown = [name for name in wanted if name not in available]
    if unknown or not wanted:
        raise ValueError(f"metrics for {version} must be a non-empty subset of {available}, got {wanted}")
    if on_silent not in ("raise", "nan"):
        raise ValueError(f"on_silent must be 'raise' or 'nan', got {on_silent!r}")
    if int(filters_len) != filters_len or filters_len < 1:
        raise ValueError(f"filters_len must be a positive integer, got {filters_len!r}")
    filters_len = int(filters_len)
    needed = set(wanted) | ({"sir"} if compute_permutation else set())  # the order is chosen by SIR

    refs, ests, device = as_sources_tensors(references, estimates, device)
    num_sources, _, num_samples = refs.shape
    default_window = int(sampling_rate) if sampling_rate is not None else 44100
    window = default_window if window is None else window
    hop = window if hop is None else hop
    bounds = frame_bounds(num_samples, window, hop, rule="museval" if version == "v4" else "mir_eval")
    num_frames = len(bounds)

    ref_silent, ref_silent_whole = silence(refs, bounds)
    est_silent, est_silent_whole = silence(ests, bounds)
    if ref_silent_whole.any() or est_silent_whole.any():
        if on_silent == "raise":
            which = "reference" if ref_silent_whole.any() else "estimated"
            raise ValueError(
                f"a {which} source is all zeros over the whole signal; museval and mir_eval refuse such "
                "input (it makes the evaluation ambiguous). Pass on_silent='nan' to get NaN frames instead."
            )
        return _all_nan(wanted, num_sources, num_frames, compute_permutation)

    frame_silent = (ref_silent | est_silent).any(dim=0)  # (frames,)
    pairs = evaluation_pairs(num_sources, compute_permutation)
    need_all = bool(needed & {"sir", "sar"})
    if version == "v4":
        project = bool(needed - {"sdr"})  # the v4 SDR needs no projection
        energies = v4_energies(
            refs, ests, bounds, pairs, filters_len=filters_len, project=project, need_all=need_all
        )
    else:
        energies = v3_energies(
            refs, ests, bounds, frame_silent, pairs, filters_len=filters_len, need_all=need_all
        )

    ratios = energies.ratios(version)  # name -> (pairs, frames) in dB
    for value in ratios.values():
        value[:, frame_silent] = math.nan
    result: dict[str, np.ndarray] = {}
    if compute_permutation:
        perm = _museval_permutation(ratios["sir"], pairs, num_sources, per_frame=version == "v3")
        chosen = pair_index(pairs, num_sources)[torch.arange(num_sources)[:, None], perm]  # (S, frames)
        for name in wanted:
            result[name] = torch.gather(ratios[name], 0, chosen).numpy()
        perm_out = perm.to(torch.float64)
        if version == "v3":
            perm_out[:, frame_silent] = math.nan  # mir_eval marks silent frames' order NaN too
        result["perm"] = perm_out.numpy()
    else:
        for name in wanted:
            result[name] = ratios[name].numpy()
    return result


def _all_nan(wanted: Sequence[str], sources: int, frames: int, with_perm: bool) -> dict[str, np.ndarray]:
    result = {name: np.full((sources, frames), np.nan) for name in wanted}
    if with_perm:
        result["perm"] = np.full((sources, frames), np.nan)
    return result


def _museval_permutation(
    sir: torch.Tensor, pairs: Sequence[tuple[int, int]], num_sources: int, per_frame: bool
) -> torch.Tensor:
    """``(sources, frames)`` estimate index per reference maximising the mean SIR.

    Ties and NaN follow numpy's ``argmax`` over ``itertools.permutations`` order, as in museval and
    mir_eval (a NaN score wins, so a v4 signal with a silent frame keeps the identity order). This
    parity quirk is why it is not `demixers.utils.permutations.best_permutation`, which refuses NaN
    or keeps the identity for it.
    """
    index = pair_index(pairs, num_sources)
    candidates = torch.tensor(list(itertools.permutations(range(num_sources))), dtype=torch.long)  # (N!, S)
    rows = index[torch.arange(num_sources)[None, :], candidates]  # (N!, S) pair positions
    scores = sir[rows].mean(dim=1)  # (N!, frames)
    frames = sir.shape[1]
    if per_frame:
        best = np.argmax(scores.numpy(), axis=0)  # (frames,)
        return candidates[torch.from_numpy(best)].T.contiguous()
    best = int(np.argmax(scores.mean(dim=1).numpy()))
    return candidates[best][:, None].expand(num_sources, frames).contiguous()
