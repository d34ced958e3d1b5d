"""PIT SI-SNR, L1 and MSE against independent brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from demixers.trainers.losses import (
    compute_loss,
    pairwise_si_snr,
    si_snr_loss,
    waveform_loss,
)
from demixers.utils.permutations import best_permutation


def numpy_si_snr(estimate: np.ndarray, reference: np.ndarray, eps: float = 1e-8) -> float:
    """Textbook zero-mean SI-SNR of two 1-D signals, written independently of the module."""
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    target = (estimate @ reference) / (reference @ reference + eps) * reference
    noise = estimate - target
    return 10 * np.log10((target @ target + eps) / (noise @ noise + eps))


def brute_force_pit(estimates: np.ndarray, references: np.ndarray) -> tuple[float, tuple[int, ...]]:
    """Best mean SI-SNR over all S! assignments, scoring each assignment from scratch."""
    num_sources = references.shape[0]
    best, best_perm = -np.inf, None
    for perm in itertools.permutations(range(num_sources)):
        score = np.mean([numpy_si_snr(estimates[perm[j]], references[j]) for j in range(num_sources)])
        if score > best:
            best, best_perm = score, perm
    return best, best_perm


@pytest.mark.parametrize("num_sources", [2, 3, 4])
def test_pit_si_snr_matches_brute_force(num_sources: int) -> None:
    generator = torch.Generator().manual_seed(num_sources)
    batch, time = 5, 400
    references = torch.randn(batch, num_sources, 1, time, generator=generator, dtype=torch.float64)
    # estimates: a shuffled, noisy copy of the references so that one permutation clearly wins ...
    shuffles = [torch.randperm(num_sources, generator=generator) for _ in range(batch)]
    estimates = torch.stack([references[b, shuffles[b]] for b in range(batch)])
    estimates = estimates + 0.7 * torch.randn(estimates.shape, generator=generator, dtype=torch.float64)
    # ... and one item of pure noise, where the permutations are close
    estimates[-1] = torch.randn(num_sources, 1, time, generator=generator, dtype=torch.float64)
    result = si_snr_loss(estimates, references)
    expected_scores, expected_perms = [], []
    for b in range(batch):
        score, perm = brute_force_pit(estimates[b, :, 0].numpy(), references[b, :, 0].numpy())
        expected_scores.append(score)
        expected_perms.append(perm)
    assert result.loss.item() == pytest.approx(-np.mean(expected_scores), abs=1e-9)
    assert [tuple(p) for p in result.permutation.tolist()] == expected_perms
    # per-source losses: -SI-SNR of each reference with its assigned estimate, batch mean
    per_source = [
        -np.mean(
            [
                numpy_si_snr(estimates[b, expected_perms[b][j], 0].numpy(), references[b, j, 0].numpy())
                for b in range(batch)
            ]
        )
        for j in range(num_sources)
    ]
    np.testing.assert_allclose(result.per_source.numpy(), per_source, atol=1e-9)


def test_hungarian_equals_enumeration_for_many_sources() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(20, 5, 5, generator=generator, dtype=torch.float64)
    chosen, _ = best_permutation(scores.transpose(-1, -2), method="hungarian")  # scores[b, est, ref]
    for b in range(scores.shape[0]):
        best = max(
            itertools.permutations(range(5)), key=lambda p: sum(scores[b, p[j], j].item() for j in range(5))
        )
        assert tuple(chosen[b].tolist()) == best


def test_pit_gradient_flows_and_reaches_zero_loss_gap() -> None:
    references = torch.randn(2, 2, 1, 300, dtype=torch.float64)
    estimates = references.flip(1).clone().requires_grad_(True)  # perfectly separated, swapped order
    result = si_snr_loss(estimates, references)
    assert result.permutation.tolist() == [[1, 0], [1, 0]]
    assert result.loss.item() < -100  # eps-limited: very high SI-SNR
    result.loss.backward()
    assert estimates.grad is not None and torch.isfinite(estimates.grad).all()


def test_si_snr_scale_invariance_and_mean() -> None:
    reference = torch.randn(1, 1, 1, 500, dtype=torch.float64)
    estimate = reference + 0.3 * torch.randn(1, 1, 1, 500, dtype=torch.float64)
    base = pairwise_si_snr(estimate, reference)[0, 0, 0].item()
    assert pairwise_si_snr(5.0 * estimate + 2.0, reference)[0, 0, 0].item() == pytest.approx(base, abs=1e-9)
    assert base == pytest.approx(
        numpy_si_snr(estimate.flatten().numpy(), reference.flatten().numpy()), abs=1e-9
    )


def test_clamp_and_soft_threshold() -> None:
    references = torch.randn(3, 2, 1, 400, dtype=torch.float64)
    estimates = (references + 1e-4 * torch.randn_like(references)).requires_grad_(True)  # ~80 dB
    plain = si_snr_loss(estimates, references)
    assert plain.loss.item() < -60
    clamped = si_snr_loss(estimates, references, clamp_db=30.0)
    assert clamped.loss.item() == pytest.approx(-30.0)
    clamped.loss.backward()
    assert torch.count_nonzero(estimates.grad) == 0  # above the threshold: no gradient
    soft = si_snr_loss(estimates.detach(), references, soft_max_db=30.0)
    assert -30.0 - 1e-6 < soft.loss.item() < -29.0  # saturates smoothly just under 30 dB


def test_padding_mask_ignores_padded_samples() -> None:
    references = torch.randn(2, 2, 1, 300, dtype=torch.float64)
    estimates = references + 0.5 * torch.randn_like(references)
    mask = torch.ones(2, 300, dtype=torch.long)
    mask[1, 200:] = 0
    padded_refs, padded_ests = references.clone(), estimates.clone()
    padded_refs[1, ..., 200:] = 123.0  # garbage in the padding
    padded_ests[1, ..., 200:] = -77.0
    masked = si_snr_loss(padded_ests, padded_refs, padding_mask=mask)
    item0 = si_snr_loss(estimates[:1], references[:1])
    item1 = si_snr_loss(estimates[1:, ..., :200], references[1:, ..., :200])
    assert masked.loss.item() == pytest.approx((item0.loss.item() + item1.loss.item()) / 2, abs=1e-9)
    l1 = waveform_loss(padded_ests, padded_refs, padding_mask=mask, kind="l1")
    expected = torch.cat(
        [
            (estimates[0] - references[0]).abs().flatten(1),
            (estimates[1, ..., :200] - references[1, ..., :200]).abs().flatten(1),
        ],
        dim=1,
    ).mean(1)
    np.testing.assert_allclose(l1.per_source.numpy(), expected.numpy(), atol=1e-12)


def test_l1_and_mse_fixed_order_per_source() -> None:
    references = torch.randn(4, 3, 2, 100)
    estimates = torch.randn(4, 3, 2, 100)
    l1 = compute_loss("l1", estimates, references)
    mse = compute_loss("mse", estimates, references)
    assert l1.loss.item() == pytest.approx(
        torch.nn.functional.l1_loss(estimates, references).item(), rel=1e-6
    )
    assert mse.loss.item() == pytest.approx(
        torch.nn.functional.mse_loss(estimates, references).item(), rel=1e-6
    )
    np.testing.assert_allclose(
        l1.per_source.numpy(), (estimates - references).abs().mean(dim=(0, 2, 3)).numpy(), rtol=1e-6
    )
    assert l1.permutation.tolist() == [[0, 1, 2]] * 4


def test_shape_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="same shape"):
        si_snr_loss(torch.randn(1, 2, 1, 10), torch.randn(1, 3, 1, 10))
    with pytest.raises(ValueError, match="unknown loss"):
        compute_loss("sdr", torch.randn(1, 2, 10), torch.randn(1, 2, 10))
