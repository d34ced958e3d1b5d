"""Separation metrics on arrays and tensors: SI-SNR/SI-SDR, improvements, PIT, uSDR, cSDR, NSDR.

Every function takes ``references`` first and ``estimates`` second (museval / mir_eval order) and
accepts numpy arrays or torch tensors; numpy inputs give numpy output, any tensor input gives a tensor
(on the references' device). Values are computed in float64 and are in dB.

Shape conventions (demixers is channels-first everywhere except `bss_eval`, which keeps museval's
``(sources, samples, channels)`` for drop-in parity):

* SI-SDR / SI-SNR / SNR and their improvements: ``(..., time)``; the metric is taken along the last
  axis and the leading axes broadcast (``(sources, channels, time)`` gives ``(sources, channels)``).
  The ``mixture`` of an improvement must broadcast against ``references`` (``(channels, time)``
  against ``(sources, channels, time)``, ``(time,)`` against ``(sources, time)``).
* permutation-invariant versions: ``(..., sources, time)``; they return the values in reference
  order and ``perm`` with ``perm[..., j]`` the estimate matched to reference ``j``.
* uSDR: ``(..., sources, channels, time)``, one value per source (energy over channels and time).
* cSDR, NSDR and ``sdr_improvement``: ``(sources, channels, time)`` for one item (mixture
  ``(channels, time)``); they call `bss_eval` and therefore follow museval's silence rules.

Definitions:

* SI-SDR (Le Roux et al., 2019): ``10·log10(‖αs‖² / ‖αs − ŝ‖²)`` with ``α = ⟨ŝ, s⟩ / ‖s‖²``;
  SI-SNR (Luo & Mesgarani, Conv-TasNet) is SI-SDR of the zero-mean signals. ``eps`` (float64
  machine epsilon) is added to both terms of α and of the ratio, like torchmetrics, so a scaled
  copy scores about +150 dB instead of +inf and a silent reference a large negative number instead
  of NaN.
* SNR: ``10·log10(‖s‖² / ‖s − ŝ‖²)``.
* uSDR ("utterance" or "global" SDR of the Music/Sound Demixing Challenges, "nSDR" in Demucs):
  ``10·log10((‖s‖² + δ) / (‖s − ŝ‖² + δ))`` over the whole track with ``δ = 1e-7``; averaged
  (mean) over tracks.
* cSDR ("chunk" SDR): the BSS Eval v4 SDR of each 1 s chunk (museval's framewise SDR, which needs
  no distortion filter), NaN on chunks where a reference or an estimate is silent, reduced by a
  median over the non-NaN chunks. Over a dataset museval/SiSEC take the median over tracks of these
  per-track medians; DTTNet takes the median over all chunks pooled (see `aggregate`).
* SDRi (speech) and NSDR (MIR-1K): ``SDR(ŝ, s) − SDR(x, s)`` with the BSS Eval v3
  ``bss_eval_sources`` SDR on the whole signal and the mixture ``x`` as the estimate of every
  source; GNSDR is the length-weighted mean of NSDR over clips.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..utils.permutations import best_permutation as _best_permutation
from .bss_energies import safe_db as _safe_db
from .bss_eval import bss_eval

__all__ = [
    "best_permutation",
    "chunk_sdr",
    "csdr",
    "nsdr",
    "pairwise",
    "permutation_invariant",
    "pit_si_sdr",
    "pit_si_snr",
    "sdr_improvement",
    "si_sdr",
    "si_sdr_improvement",
    "si_snr",
    "si_snr_improvement",
    "snr",
    "usdr",
]

_EPS = float(np.finfo(np.float64).eps)
USDR_DELTA = 1e-7


# -- array plumbing -------------------------------------------------------------------------------


def _to_tensor(value: Any, name: str) -> tuple[torch.Tensor, bool]:
    """float64 tensor and whether the input was numpy-like (so the output should be numpy)."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        is_numpy = False
    else:
        array = np.asarray(value)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
        if array.ndim == 0:
            raise ValueError(f"{name} must have a time axis, got a scalar")
        if not array.flags.writeable:  # e.g. np.broadcast_to views; torch wants writable memory
            array = array.copy()
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        is_numpy = True
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got {tensor.dtype}")
    if tensor.ndim == 0:
        raise ValueError(f"{name} must have a time axis, got a scalar")
    if tensor.shape[-1] == 0:
        raise ValueError(f"{name} has no samples (shape {tuple(tensor.shape)})")
    return tensor.to(torch.float64), is_numpy


def _pair(references: Any, estimates: Any) -> tuple[torch.Tensor, torch.Tensor, bool]:
    refs, refs_numpy = _to_tensor(references, "references")
    ests, ests_numpy = _to_tensor(estimates, "estimates")
    if refs.shape[-1] != ests.shape[-1]:
        raise ValueError(
            f"references and estimates must have the same number of samples, got {refs.shape[-1]} and "
            f"{ests.shape[-1]} (shapes {tuple(refs.shape)} and {tuple(ests.shape)})"
        )
    try:
        torch.broadcast_shapes(refs.shape, ests.shape)
    except RuntimeError:
        raise ValueError(
            f"references {tuple(refs.shape)} and estimates {tuple(ests.shape)} do not broadcast"
        ) from None
    ests = ests.to(refs.device)
    return refs, ests, refs_numpy and ests_numpy


def _out(value: torch.Tensor, as_numpy: bool) -> Any:
    if as_numpy:
        return value.cpu().numpy()
    return value


# -- scale-invariant and plain ratios --------------------------------------------------------------


def _si_sdr(refs: torch.Tensor, ests: torch.Tensor, zero_mean: bool, eps: float) -> torch.Tensor:
    if zero_mean:
        refs = refs - refs.mean(dim=-1, keepdim=True)
        ests = ests - ests.mean(dim=-1, keepdim=True)
    alpha = ((ests * refs).sum(dim=-1, keepdim=True) + eps) / (refs.square().sum(dim=-1, keepdim=True) + eps)
    target = alpha * refs
    noise = ests - target
    return 10 * torch.log10((target.square().sum(dim=-1) + eps) / (noise.square().sum(dim=-1) + eps))


def si_sdr(references: Any, estimates: Any, *, zero_mean: bool = False, eps: float = _EPS) -> Any:
    """Scale-invariant SDR along the last axis: ``(..., time) -> (...)``."""
    refs, ests, as_numpy = _pair(references, estimates)
    return _out(_si_sdr(refs, ests, zero_mean, eps), as_numpy)


def si_snr(references: Any, estimates: Any, *, eps: float = _EPS) -> Any:
    """SI-SNR (SI-SDR of zero-mean signals) along the last axis: ``(..., time) -> (...)``."""
    return si_sdr(references, estimates, zero_mean=True, eps=eps)


def snr(references: Any, estimates: Any) -> Any:
    """Plain SNR ``10·log10(‖s‖² / ‖s − ŝ‖²)`` along the last axis (+inf for a perfect estimate)."""
    refs, ests, as_numpy = _pair(references, estimates)
    return _out(_safe_db(refs.square().sum(-1), (refs - ests).square().sum(-1)), as_numpy)


def _improvement(
    metric: Callable[..., Any], references: Any, estimates: Any, mixture: Any, **kwargs: Any
) -> Any:
    refs, ests, as_numpy = _pair(references, estimates)
    mix, mix_numpy = _to_tensor(mixture, "mixture")
    if mix.shape[-1] != refs.shape[-1]:
        raise ValueError(f"mixture has {mix.shape[-1]} samples, references {refs.shape[-1]}")
    try:
        torch.broadcast_shapes(refs.shape, mix.shape)
    except RuntimeError:
        raise ValueError(
            f"mixture {tuple(mix.shape)} does not broadcast against references {tuple(refs.shape)}"
        ) from None
    improved = metric(refs, ests, **kwargs) - metric(refs, mix.to(refs.device).expand_as(refs), **kwargs)
    return _out(improved, as_numpy and mix_numpy)


def si_snr_improvement(references: Any, estimates: Any, mixture: Any, *, eps: float = _EPS) -> Any:
    """SI-SNRi: ``si_snr(s, ŝ) − si_snr(s, x)``; ``mixture`` broadcasts against ``references``."""
    return _improvement(si_snr, references, estimates, mixture, eps=eps)


def si_sdr_improvement(references: Any, estimates: Any, mixture: Any, *, eps: float = _EPS) -> Any:
    """SI-SDRi: ``si_sdr(s, ŝ) − si_sdr(s, x)``; ``mixture`` broadcasts against ``references``."""
    return _improvement(si_sdr, references, estimates, mixture, eps=eps)


# -- permutation invariance ------------------------------------------------------------------------

_METRICS: dict[str, Callable[..., Any]] = {"si_snr": si_snr, "si_sdr": si_sdr, "snr": snr}


def pairwise(references: Any, estimates: Any, metric: str | Callable[..., Any] = "si_snr") -> Any:
    """``scores[..., j, k] = metric(references[..., j, :], estimates[..., k, :])``.

    Inputs are ``(..., sources, time)``; the output is ``(..., sources, sources)``.
    """
    function = _METRICS[metric] if isinstance(metric, str) else metric
    refs, ests, as_numpy = _pair(references, estimates)
    if refs.ndim < 2 or ests.ndim < 2:
        raise ValueError("pairwise metrics need (..., sources, time) inputs")
    scores = function(refs[..., :, None, :], ests[..., None, :, :])
    scores = scores if isinstance(scores, torch.Tensor) else torch.as_tensor(scores)
    return _out(scores, as_numpy)


def best_permutation(scores: Any, *, maximize: bool = True) -> tuple[Any, Any]:
    """Best one-to-one assignment on square ``(..., sources, sources)`` score matrices.

    Returns ``(perm, values)``: ``perm[..., j]`` is the estimate given to reference ``j`` and
    ``values[..., j] = scores[..., j, perm[..., j]]`` (float64); the mean of ``values`` is the best
    possible. Ties keep the identity (then the first permutation in ``itertools.permutations``
    order); NaN scores raise ValueError. Exhaustive up to 8 sources, the Hungarian algorithm (scipy)
    above.

    The evaluation-layer spelling of `demixers.utils.permutations.best_permutation` (which also
    takes rectangular scores, a tie tolerance and a NaN policy): it requires square matrices and
    returns float64 values, as this function always has.
    """
    matrix, as_numpy = _to_tensor(scores, "scores")
    if matrix.ndim < 2 or matrix.shape[-1] != matrix.shape[-2]:
        raise ValueError(f"scores must be (..., sources, sources), got {tuple(matrix.shape)}")
    perm, values = _best_permutation(matrix, maximize=maximize)
    return _out(perm, as_numpy), _out(values, as_numpy)


def permutation_invariant(
    references: Any, estimates: Any, metric: str | Callable[..., Any] = "si_snr"
) -> tuple[Any, Any]:
    """PIT evaluation: ``(values, perm)`` for the estimate order maximising the mean ``metric``.

    Inputs ``(..., sources, time)``; ``values[..., j]`` is the metric of reference ``j`` against
    estimate ``perm[..., j]``.
    """
    perm, values = best_permutation(pairwise(references, estimates, metric))
    return values, perm


def pit_si_snr(references: Any, estimates: Any) -> tuple[Any, Any]:
    """Permutation-invariant SI-SNR: ``(values, perm)`` (see `permutation_invariant`)."""
    return permutation_invariant(references, estimates, "si_snr")


def pit_si_sdr(references: Any, estimates: Any) -> tuple[Any, Any]:
    """Permutation-invariant SI-SDR: ``(values, perm)`` (see `permutation_invariant`)."""
    return permutation_invariant(references, estimates, "si_sdr")


# -- music metrics -------------------------------------------------------------------------------


def usdr(references: Any, estimates: Any, *, delta: float = USDR_DELTA) -> Any:
    """Utterance-level SDR of the MDX/SDX challenges: ``(..., sources, channels, time) -> (..., sources)``."""
    refs, ests, as_numpy = _pair(references, estimates)
    if refs.ndim < 3 or refs.shape != ests.shape:
        raise ValueError(
            "usdr needs references and estimates of the same (..., sources, channels, time) shape, got "
            f"{tuple(refs.shape)} and {tuple(ests.shape)}; add a channel axis to mono signals"
        )
    numerator = refs.square().sum(dim=(-2, -1)) + delta
    denominator = (refs - ests).square().sum(dim=(-2, -1)) + delta
    return _out(10 * torch.log10(numerator / denominator), as_numpy)


def _item_layout(references: Any, estimates: Any, name: str) -> tuple[Any, Any, bool]:
    """Validate one ``(sources, channels, time)`` item and return museval-layout views."""
    refs, ests, as_numpy = _pair(references, estimates)
    if refs.ndim != 3 or refs.shape != ests.shape:
        raise ValueError(
            f"{name} needs references and estimates of the same (sources, channels, time) shape, got "
            f"{tuple(refs.shape)} and {tuple(ests.shape)}"
        )
    return refs.transpose(1, 2), ests.transpose(1, 2), as_numpy


def chunk_sdr(
    references: Any,
    estimates: Any,
    sampling_rate: int | None = None,
    chunk: int | None = None,
    *,
    on_silent: str = "nan",
    device: str | torch.device | None = None,
) -> Any:
    """BSS Eval v4 SDR of each chunk, ``(sources, channels, time) -> (sources, chunks)``.

    ``chunk`` defaults to one second at ``sampling_rate`` (44100 samples without one). Chunks where
    a reference or an estimate is silent are NaN (museval). A source silent over the whole item gives
    NaN chunks with the default ``on_silent="nan"`` (museval itself raises; pass ``"raise"``).
    """
    refs, ests, as_numpy = _item_layout(references, estimates, "chunk_sdr")
    values = bss_eval(
        refs,
        ests,
        sampling_rate,
        window=chunk,
        hop=chunk,
        metrics=("sdr",),
        on_silent=on_silent,
        device=device,
    )["sdr"]
    return values if as_numpy else torch.from_numpy(values)


def csdr(
    references: Any,
    estimates: Any,
    sampling_rate: int | None = None,
    chunk: int | None = None,
    *,
    on_silent: str = "nan",
    device: str | torch.device | None = None,
) -> Any:
    """Chunk-level SDR of one item: the median over non-silent chunks of `chunk_sdr`, per source.

    ``(sources, channels, time) -> (sources,)``; NaN for a source whose every chunk is silent.
    """
    chunks = chunk_sdr(references, estimates, sampling_rate, chunk, on_silent=on_silent, device=device)
    values = _nanmedian_rows(np.asarray(chunks))
    return values if isinstance(chunks, np.ndarray) else torch.from_numpy(values)


def _nanmedian_rows(values: np.ndarray) -> np.ndarray:
    out = np.full(values.shape[0], np.nan)
    for row, line in enumerate(values):
        finite = line[~np.isnan(line)]
        if finite.size:
            out[row] = np.median(finite)
    return out


def _sources_sdr(refs: Any, ests: Any, on_silent: str, device: Any) -> np.ndarray:
    """Whole-signal BSS Eval v3 (``bss_eval_sources``) SDR, fixed order: ``(sources,)``."""
    return bss_eval(
        refs, ests, window=math.inf, version="v3", metrics=("sdr",), on_silent=on_silent, device=device
    )["sdr"][:, 0]


def sdr_improvement(
    references: Any,
    estimates: Any,
    mixture: Any,
    *,
    method: str = "bss_eval",
    on_silent: str = "nan",
    device: str | torch.device | None = None,
) -> Any:
    """SDRi of one item: ``SDR(s, ŝ) − SDR(s, x)``, ``(sources, channels, time) -> (sources,)``.

    ``method="bss_eval"`` (default) uses the BSS Eval v3 ``bss_eval_sources`` SDR on the whole
    signal, as the speech-separation literature (Conv-TasNet, DPRNN, ...) reports SDRi; ``"snr"``
    uses the plain SNR. ``mixture`` is ``(channels, time)``. The estimates are taken in the given
    order: reorder them first (e.g. with `pit_si_snr`) for permutation-free models.
    """
    refs, ests, as_numpy = _item_layout(references, estimates, "sdr_improvement")
    mix, _ = _to_tensor(mixture, "mixture")
    if mix.ndim == 1:
        mix = mix[None]
    if mix.ndim != 2 or mix.shape != (refs.shape[2], refs.shape[1]):
        raise ValueError(
            f"mixture must be (channels, time) = {(refs.shape[2], refs.shape[1])}, got {tuple(mix.shape)}"
        )
    mix = mix.T.to(refs.device).expand_as(refs)  # the mixture as the estimate of every source
    if method == "snr":
        values = _safe_db(refs.square().sum((1, 2)), (refs - ests).square().sum((1, 2))) - _safe_db(
            refs.square().sum((1, 2)), (refs - mix).square().sum((1, 2))
        )
        values = values.cpu().numpy()
    elif method == "bss_eval":
        values = _sources_sdr(refs, ests, on_silent, device) - _sources_sdr(refs, mix, on_silent, device)
    else:
        raise ValueError(f"method must be 'bss_eval' or 'snr', got {method!r}")
    return values if as_numpy else torch.from_numpy(values)


def nsdr(
    references: Any,
    estimates: Any,
    mixture: Any,
    *,
    on_silent: str = "nan",
    device: str | torch.device | None = None,
) -> Any:
    """Normalized SDR of the MIR-1K literature (Hsu & Jang): BSS Eval v3 SDR of the estimate minus
    that of the mixture, per source, ``(sources, channels, time) -> (sources,)``.

    GNSDR over a dataset is the mean weighted by clip length (`aggregate` does it).
    """
    return sdr_improvement(
        references, estimates, mixture, method="bss_eval", on_silent=on_silent, device=device
    )
