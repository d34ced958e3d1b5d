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

Permutations: chosen on the detached pairwise SI-SNR matrix (no extra forward work) by the package's
one `demixers.utils.permutations.best_permutation` (every permutation up to 8 sources, the Hungarian
algorithm beyond); an item whose scores hold a NaN keeps the identity (its loss is NaN anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..utils.permutations import best_permutation

LOSS_NAMES = ("pit_si_snr", "si_snr", "l1", "mse")


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


def compute_loss(
    name: str,
    estimates: torch.Tensor,
    references: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    clamp_db: float | None = None,
    soft_max_db: float | None = None,
) -> SeparationLoss:
    """Dispatch on a recipe's ``training.loss`` name (one of ``LOSS_NAMES``)."""
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
    raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}")


__all__ = [
    "LOSS_NAMES",
    "SeparationLoss",
    "compute_loss",
    "pairwise_si_snr",
    "si_snr_loss",
    "waveform_loss",
]
