"""Training losses: permutation-invariant SI-SNR for speech, L1 / MSE on waveforms for music.

All losses take ``estimates`` and ``references`` shaped ``(batch, sources, channels, time)`` (a
``(batch, sources, time)`` tensor is read as mono) and an optional ``padding_mask`` ``(batch, time)``
(1 on real samples, 0 on padding); they return a :class:`SeparationLoss` with the scalar ``loss``
to minimise and ``per_source``, the loss of each (reference) source averaged over the batch.

SI-SNR conventions (those of Luo & Mesgarani's Conv-TasNet / SepFormer / MossFormer recipes)
--------------------------------------------------------------------------------------------
* ``zero_mean=True`` removes each signal's mean over its real samples first;
* ``SI-SNR(ŝ, s) = 10 log10(‖α s‖² / ‖ŝ - α s‖²)`` with ``α = <ŝ, s> / (‖s‖² + eps)``; ``eps`` (1e-8)
  is added to both energies, so silent targets and perfect estimates give finite values;
* a multichannel source's SI-SNR is the mean of its channels' SI-SNRs;
* the loss is ``-SI-SNR`` averaged over sources and batch (utterance-level PIT: one permutation per
  utterance, the one with the highest mean SI-SNR).

Two optional ways to stop rewarding already well-separated examples:

* ``clamp_db`` (hard threshold): ``SI-SNR`` is clamped to at most ``clamp_db`` before averaging, so
  a source above it contributes a constant and no gradient (``loss = -min(SI-SNR, clamp_db)``); the
  permutation is still chosen on unclamped values;
* ``soft_max_db`` (soft threshold, Wisdom et al. 2020, "Unsupervised sound separation using mixture
  invariant training"): ``τ = 10^(-soft_max_db/10)`` and the error energy becomes
  ``‖ŝ - α s‖² + τ ‖α s‖²``, so the SI-SNR saturates smoothly at ``soft_max_db``.

Multi-resolution STFT loss (``multi_resolution_stft``, BS-RoFormer / Mel-Band RoFormer)
------------------------------------------------------------------------------------------
The training loss of lucidrains' ``bs-roformer`` and of MSST: ``L1(ŝ, s) + weight · Σ_w
mean |STFT_w(ŝ) - STFT_w(s)|`` over window sizes ``w`` (4096, 2048, 1024, 512, 256), each STFT with
a periodic Hann window of ``w`` samples, ``n_fft = max(w, n_fft)`` (2048: the model's), hop 147,
``normalized=False``, centred with reflect padding (torch.stft's defaults). ``|·|`` is the modulus
of the complex difference: the originals' ``F.l1_loss`` on complex tensors averages the modulus,
not the absolute real and imaginary parts. With a ``padding_mask`` both signals are zeroed on
padding, the waveform term averages the real samples only and each STFT frame counts with the
mask at its centre sample.

Permutations: chosen on the detached pairwise SI-SNR matrix (no extra forward work) by the package's
one `demixers.utils.permutations.best_permutation` (every permutation up to 8 sources, the Hungarian
algorithm beyond); an item whose scores hold a NaN keeps the identity (its loss is NaN anyway).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..utils.permutations import best_permutation

LOSS_NAMES = ("pit_si_snr", "si_snr", "l1", "mse", "multi_resolution_stft")

# The originals' multi-resolution STFT loss parameters (lucidrains' BSRoformer / MelBandRoformer
# defaults, kept by every MSST RoFormer config).
STFT_LOSS_WEIGHT = 1.0
STFT_LOSS_WINDOW_SIZES = (4096, 2048, 1024, 512, 256)
STFT_LOSS_HOP_LENGTH = 147
STFT_LOSS_N_FFT = 2048
# Far above any useful STFT; low enough that a typo is refused instead of allocating gigabytes.
MAX_STFT_SIZE = 1 << 16


@dataclass
class SeparationLoss:
    """``loss``: scalar to minimise. ``per_source``: ``(sources,)`` loss per reference source
    (negative SI-SNR in dB for the SI-SNR losses), detached. ``permutation``: ``(batch, sources)``,
    ``permutation[b, j]`` is the estimate assigned to reference ``j`` (identity for fixed-order losses).
    """

    loss: torch.Tensor
    per_source: torch.Tensor
    permutation: torch.Tensor | None = None


def _as_4d(tensor: torch.Tensor, name: str) -> torch.Tensor:
    if tensor.dim() == 3:
        return tensor.unsqueeze(2)
    if tensor.dim() != 4:
        raise ValueError(
            f"{name} must be (batch, sources, channels, time) or (batch, sources, time), "
            f"got {tuple(tensor.shape)}"
        )
    return tensor


def _check(estimates: torch.Tensor, references: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    estimates = _as_4d(estimates, "estimates")
    references = _as_4d(references, "references")
    if estimates.shape != references.shape:
        raise ValueError(
            f"estimates {tuple(estimates.shape)} and references {tuple(references.shape)} "
            "must have the same shape"
        )
    return estimates, references


def _mask(padding_mask: torch.Tensor | None, reference: torch.Tensor) -> torch.Tensor | None:
    if padding_mask is None:
        return None
    if (
        padding_mask.dim() != 2
        or padding_mask.shape[0] != reference.shape[0]
        or padding_mask.shape[1] != reference.shape[-1]
    ):
        raise ValueError(
            f"padding_mask must be (batch, time) = ({reference.shape[0]}, {reference.shape[-1]}), "
            f"got {tuple(padding_mask.shape)}"
        )
    return padding_mask.to(reference.dtype)[:, None, None, :]


def pairwise_si_snr(
    estimates: torch.Tensor,
    references: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    zero_mean: bool = True,
    eps: float = 1e-8,
    soft_max_db: float | None = None,
) -> torch.Tensor:
    """``(batch, S_est, S_ref)`` matrix: SI-SNR (dB) of every estimate against every reference.

    Computed in float32 (or float64 if the inputs are) whatever the autocast dtype.
    """
    estimates, references = _check(estimates, references)
    dtype = torch.float64 if estimates.dtype == torch.float64 else torch.float32
    estimates = estimates.to(dtype)
    references = references.to(dtype)
    mask = _mask(padding_mask, references)
    if mask is not None:
        estimates = estimates * mask
        references = references * mask
    if zero_mean:
        if mask is None:
            estimates = estimates - estimates.mean(dim=-1, keepdim=True)
            references = references - references.mean(dim=-1, keepdim=True)
        else:
            count = mask.sum(dim=-1, keepdim=True).clamp_min(1.0)
            estimates = (estimates - estimates.sum(dim=-1, keepdim=True) / count) * mask
            references = (references - references.sum(dim=-1, keepdim=True) / count) * mask
    # (b, S_est, 1, c, t) against (b, 1, S_ref, c, t)
    est = estimates[:, :, None]
    ref = references[:, None, :]
    dot = (est * ref).sum(dim=-1)  # (b, S_est, S_ref, c)
    ref_energy = (references**2).sum(dim=-1)[:, None, :]  # (b, 1, S_ref, c)
    alpha = dot / (ref_energy + eps)
    target = alpha[..., None] * ref
    target_energy = (target**2).sum(dim=-1)
    error_energy = ((est - target) ** 2).sum(dim=-1)
    if soft_max_db is not None:
        error_energy = error_energy + 10.0 ** (-soft_max_db / 10.0) * target_energy
    ratio = 10.0 * torch.log10((target_energy + eps) / (error_energy + eps))
    return ratio.mean(dim=-1)  # mean over channels


def si_snr_loss(
    estimates: torch.Tensor,
    references: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    pit: bool = True,
    zero_mean: bool = True,
    eps: float = 1e-8,
    clamp_db: float | None = None,
    soft_max_db: float | None = None,
) -> SeparationLoss:
    """Negative SI-SNR, utterance-level permutation invariant when ``pit`` (see the module doc)."""
    matrix = pairwise_si_snr(
        estimates, references, padding_mask, zero_mean=zero_mean, eps=eps, soft_max_db=soft_max_db
    )
    batch, num_sources, _ = matrix.shape
    columns = torch.arange(num_sources, device=matrix.device)
    if pit:
        # matrix[b, estimate, reference]; the search takes scores[b, reference, estimate]
        permutation, _ = best_permutation(matrix.detach().transpose(-1, -2), nan="identity")
    else:
        permutation = columns.expand(batch, num_sources)
    chosen = matrix[torch.arange(batch, device=matrix.device)[:, None], permutation, columns]  # (b, S)
    if clamp_db is not None:
        chosen = chosen.clamp(max=clamp_db)
    return SeparationLoss(
        loss=-chosen.mean(), per_source=(-chosen).mean(dim=0).detach(), permutation=permutation
    )


def waveform_loss(
    estimates: torch.Tensor,
    references: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    kind: str = "l1",
) -> SeparationLoss:
    """Mean absolute (``l1``) or squared (``mse``) error over every real sample, fixed source order."""
    estimates, references = _check(estimates, references)
    dtype = torch.float64 if estimates.dtype == torch.float64 else torch.float32
    difference = estimates.to(dtype) - references.to(dtype)
    if kind == "l1":
        error = difference.abs()
    elif kind == "mse":
        error = difference**2
    else:
        raise ValueError(f"kind must be 'l1' or 'mse', got {kind!r}")
    mask = _mask(padding_mask, references)
    if mask is None:
        per_item = error.mean(dim=(2, 3))  # (b, S)
        per_source = per_item.mean(dim=0)
        loss = per_source.mean()
    else:
        weights = mask.expand_as(error)
        per_source = (error * weights).sum(dim=(0, 2, 3)) / weights.sum(dim=(0, 2, 3)).clamp_min(1.0)
        loss = per_source.mean()
    batch, num_sources = estimates.shape[:2]
    permutation = torch.arange(num_sources, device=estimates.device).expand(batch, num_sources)
    return SeparationLoss(loss=loss, per_source=per_source.detach(), permutation=permutation)


def check_stft_loss_options(
    weight: float, window_sizes: Sequence[int], hop_length: int, n_fft: int, normalized: bool
) -> None:
    """ValueError/TypeError naming the first bad multi-resolution STFT loss parameter."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise TypeError(f"stft_loss_weight must be a number, got {weight!r}")
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"stft_loss_weight must be finite and >= 0, got {weight!r}")
    if isinstance(window_sizes, (str, bytes)) or not isinstance(window_sizes, Sequence) or not window_sizes:
        raise ValueError(f"stft_loss_window_sizes must be a non-empty list of ints, got {window_sizes!r}")
    for name, value, minimum in (
        *(("stft_loss_window_sizes", size, 2) for size in window_sizes),
        ("stft_loss_hop_length", hop_length, 1),
        ("stft_loss_n_fft", n_fft, 2),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must hold ints, got {value!r}")
        if not minimum <= value <= MAX_STFT_SIZE:
            raise ValueError(f"{name} must be in [{minimum}, {MAX_STFT_SIZE}], got {value!r}")
    if not isinstance(normalized, bool):
        raise TypeError(f"stft_loss_normalized must be a bool, got {normalized!r}")


def multi_resolution_stft_loss(
    estimates: torch.Tensor,
    references: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    weight: float = STFT_LOSS_WEIGHT,
    window_sizes: Sequence[int] = STFT_LOSS_WINDOW_SIZES,
    hop_length: int = STFT_LOSS_HOP_LENGTH,
    n_fft: int = STFT_LOSS_N_FFT,
    normalized: bool = False,
) -> SeparationLoss:
    """The RoFormers' loss: waveform L1 plus ``weight`` times the summed multi-resolution STFT L1
    (see the module doc), fixed source order. ``per_source`` holds each source's share (the loss
    is their mean)."""
    check_stft_loss_options(weight, window_sizes, hop_length, n_fft, normalized)
    estimates, references = _check(estimates, references)
    dtype = torch.float64 if estimates.dtype == torch.float64 else torch.float32
    estimates, references = estimates.to(dtype), references.to(dtype)
    batch, num_sources, channels, time = estimates.shape
    longest = max(max(size, n_fft) for size in window_sizes)
    if time <= longest // 2:
        raise ValueError(
            f"the multi-resolution STFT loss needs more than {longest // 2} samples per item "
            f"(n_fft {longest}, reflect padding), got {time}: use longer training segments"
        )
    mask = _mask(padding_mask, references)
    if mask is not None:
        estimates, references = estimates * mask, references * mask
    error = (estimates - references).abs()
    if mask is None:
        waveform = error.mean(dim=(0, 2, 3))
    else:
        weights = mask.expand_as(error)
        waveform = (error * weights).sum(dim=(0, 2, 3)) / weights.sum(dim=(0, 2, 3)).clamp_min(1.0)
    spectral = torch.zeros(num_sources, dtype=dtype, device=estimates.device)
    flat_estimates = estimates.reshape(-1, time)
    flat_references = references.reshape(-1, time)
    for size in window_sizes:
        window = torch.hann_window(size, dtype=dtype, device=estimates.device)
        options = dict(
            n_fft=max(size, n_fft),
            hop_length=hop_length,
            win_length=size,
            window=window,
            normalized=normalized,
            return_complex=True,
        )
        difference = (torch.stft(flat_estimates, **options) - torch.stft(flat_references, **options)).abs()
        difference = difference.reshape(batch, num_sources, channels, *difference.shape[-2:])
        if mask is None:
            spectral = spectral + difference.mean(dim=(0, 2, 3, 4))
        else:
            centres = torch.arange(difference.shape[-1], device=mask.device) * hop_length
            frame_weights = mask[:, 0, 0, centres.clamp(max=time - 1)]  # (batch, frames)
            summed = (difference.sum(dim=(2, 3)) * frame_weights[:, None]).sum(dim=(0, 2))
            count = frame_weights.sum().clamp_min(1.0) * channels * difference.shape[-2]
            spectral = spectral + summed / count
    per_source = waveform + weight * spectral
    permutation = torch.arange(num_sources, device=estimates.device).expand(batch, num_sources)
    return SeparationLoss(loss=per_source.mean(), per_source=per_source.detach(), permutation=permutation)


def loss_options(training: Mapping[str, Any]) -> dict[str, Any]:
    """`compute_loss`'s keyword arguments from a resolved recipe's ``training`` section."""
    return {
        "clamp_db": training.get("si_snr_clamp_db"),
        "soft_max_db": training.get("si_snr_soft_max_db"),
        "stft_weight": training.get("stft_loss_weight", STFT_LOSS_WEIGHT),
        "stft_window_sizes": tuple(training.get("stft_loss_window_sizes", STFT_LOSS_WINDOW_SIZES)),
        "stft_hop_length": training.get("stft_loss_hop_length", STFT_LOSS_HOP_LENGTH),
        "stft_n_fft": training.get("stft_loss_n_fft", STFT_LOSS_N_FFT),
        "stft_normalized": training.get("stft_loss_normalized", False),
    }


def compute_loss(
    name: str,
    estimates: torch.Tensor,
    references: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    clamp_db: float | None = None,
    soft_max_db: float | None = None,
    stft_weight: float = STFT_LOSS_WEIGHT,
    stft_window_sizes: Sequence[int] = STFT_LOSS_WINDOW_SIZES,
    stft_hop_length: int = STFT_LOSS_HOP_LENGTH,
    stft_n_fft: int = STFT_LOSS_N_FFT,
    stft_normalized: bool = False,
) -> SeparationLoss:
    """Dispatch on a recipe's ``training.loss`` name (one of ``LOSS_NAMES``); `loss_options` reads
    the keyword arguments from a recipe."""
    if name == "pit_si_snr":
        return si_snr_loss(
            estimates, references, padding_mask, pit=True, clamp_db=clamp_db, soft_max_db=soft_max_db
        )
    if name == "si_snr":
        return si_snr_loss(
            estimates, references, padding_mask, pit=False, clamp_db=clamp_db, soft_max_db=soft_max_db
        )
    if name in ("l1", "mse"):
        return waveform_loss(estimates, references, padding_mask, kind=name)
    if name == "multi_resolution_stft":
        return multi_resolution_stft_loss(
            estimates,
            references,
            padding_mask,
            weight=stft_weight,
            window_sizes=stft_window_sizes,
            hop_length=stft_hop_length,
            n_fft=stft_n_fft,
            normalized=stft_normalized,
        )
    raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}")


__all__ = [
    "LOSS_NAMES",
    "SeparationLoss",
    "check_stft_loss_options",
    "compute_loss",
    "loss_options",
    "multi_resolution_stft_loss",
    "pairwise_si_snr",
    "si_snr_loss",
    "waveform_loss",
]
