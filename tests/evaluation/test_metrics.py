"""Known-answer tests of the metric functions (SI-SNR/SI-SDR, SNR, improvements, PIT, uSDR, cSDR, NSDR)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from demixers.evaluation import (
    best_permutation,
    chunk_sdr,
    csdr,
    nsdr,
    pairwise,
    permutation_invariant,
    pit_si_snr,
    sdr_improvement,
    si_sdr,
    si_sdr_improvement,
    si_snr,
    si_snr_improvement,
    snr,
    usdr,
)

RATE = 8000


def _orthogonal_noise(rng: np.random.Generator, reference: np.ndarray, snr_db: float) -> np.ndarray:
    """Zero-mean noise orthogonal to the zero-mean ``reference``, with energy ``‖ref‖² / 10^(snr/10)``."""
    reference = reference - reference.mean()
    noise = rng.standard_normal(reference.shape)
    noise -= noise.mean()
    noise -= (noise @ reference) / (reference @ reference) * reference
    noise -= noise.mean()
    noise -= (noise @ reference) / (reference @ reference) * reference
    return noise * math.sqrt((reference @ reference) / (noise @ noise) / 10 ** (snr_db / 10))


def test_scaled_copy_has_a_very_large_si_snr():
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(RATE)
    for scale in (1.0, 0.01, 3.0, -2.0):
        assert si_snr(reference, scale * reference) > 100
        assert si_sdr(reference, scale * reference) > 100
    assert snr(reference, reference) == math.inf


def test_ten_db_noise_gives_ten_db():
    rng = np.random.default_rng(1)
    reference = rng.standard_normal(RATE)
    reference -= reference.mean()
    noise = _orthogonal_noise(rng, reference, 10.0)
    assert si_snr(reference, reference + noise) == pytest.approx(10.0, abs=1e-6)
    assert si_sdr(reference, reference + noise) == pytest.approx(10.0, abs=1e-6)
    assert snr(reference, reference + noise) == pytest.approx(10.0, abs=1e-6)
    # SI-SNR ignores the scale of the estimate; SNR does not
    assert si_snr(reference, 0.5 * (reference + noise)) == pytest.approx(10.0, abs=1e-6)
    assert snr(reference, 0.5 * (reference + noise)) < 10


def test_si_snr_removes_the_mean_and_si_sdr_does_not():
    rng = np.random.default_rng(2)
    reference = rng.standard_normal(RATE)
    estimate = reference + 0.1 * rng.standard_normal(RATE)
    assert si_snr(reference, estimate + 5.0) == pytest.approx(si_snr(reference, estimate), abs=1e-9)
    assert si_sdr(reference, estimate + 5.0) < si_sdr(reference, estimate) - 10


def test_improvements_are_differences_over_the_mixture():
    rng = np.random.default_rng(3)
    reference = rng.standard_normal(RATE)
    reference -= reference.mean()
    estimate = reference + _orthogonal_noise(rng, reference, 12.0)
    mixture = reference + _orthogonal_noise(rng, reference, 2.0)
    assert si_snr_improvement(reference, estimate, mixture) == pytest.approx(10.0, abs=1e-6)
    assert si_sdr_improvement(reference, estimate, mixture) == pytest.approx(10.0, abs=1e-6)
    # the mixture broadcasts over sources and channels
    references = np.stack([reference, -reference])[:, None]  # (2 sources, 1 channel, time)
    values = si_snr_improvement(references, np.stack([estimate, -estimate])[:, None], mixture[None])
    assert values.shape == (2, 1)


def test_shapes_dtypes_and_tensor_round_trip():
    rng = np.random.default_rng(4)
    references = rng.standard_normal((3, 2, RATE)).astype(np.float32)
    estimates = references + 0.1 * rng.standard_normal(references.shape).astype(np.float32)
    values = si_snr(references, estimates)
    assert isinstance(values, np.ndarray) and values.shape == (3, 2) and values.dtype == np.float64
    tensor_values = si_snr(torch.from_numpy(references), torch.from_numpy(estimates))
    assert isinstance(tensor_values, torch.Tensor) and tensor_values.dtype == torch.float64
    np.testing.assert_allclose(tensor_values.numpy(), values)
    assert usdr(references, estimates).shape == (3,)
    assert usdr(references[None], estimates[None]).shape == (1, 3)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="samples"):
        si_snr(np.ones(10), np.ones(11))
    with pytest.raises(ValueError, match="broadcast"):
        si_snr(np.ones((3, 10)), np.ones((2, 10)))
    with pytest.raises(TypeError):
        si_snr(np.ones(10, dtype=complex), np.ones(10))
    with pytest.raises(ValueError, match="scalar"):
        si_snr(np.float64(1.0), np.float64(1.0))
    with pytest.raises(ValueError, match="no samples"):
        si_snr(np.ones((2, 0)), np.ones((2, 0)))
    with pytest.raises(ValueError, match="channel axis"):
        usdr(np.ones((2, 10)), np.ones((2, 10)))
    with pytest.raises(ValueError, match="sources, channels, time"):
        csdr(np.ones((2, 10)), np.ones((2, 10)))
    with pytest.raises(ValueError, match="mixture"):
        si_snr_improvement(np.ones(10), np.ones(10), np.ones(9))
    with pytest.raises(ValueError, match="sources, sources"):
        best_permutation(np.ones((2, 3)))


def test_silent_reference_gives_finite_values_not_nan():
    silent = np.zeros(RATE)
    noise = np.random.default_rng(5).standard_normal(RATE)
    for value in (si_snr(silent, noise), si_sdr(silent, noise), si_snr(silent, silent)):
        assert np.isfinite(value)
    assert si_snr(silent, silent) == pytest.approx(0.0)
    assert usdr(silent[None, None], silent[None, None])[0] == pytest.approx(0.0)
    assert usdr(silent[None, None], noise[None, None])[0] < -60


def test_pit_recovers_the_permutation():
    rng = np.random.default_rng(6)
    references = rng.standard_normal((3, RATE))
    estimates = references + 0.3 * rng.standard_normal(references.shape)
    order = [2, 0, 1]
    values, perm = pit_si_snr(references, estimates[order])
    # reference j is matched to the estimate that came from it
    np.testing.assert_array_equal(perm, [1, 2, 0])
    np.testing.assert_allclose(values, si_snr(references, estimates), atol=1e-9)
    # batched input: one permutation per item
    batch_values, batch_perm = permutation_invariant(
        np.stack([references, references]), np.stack([estimates, estimates[order]])
    )
    np.testing.assert_array_equal(batch_perm, [[0, 1, 2], [1, 2, 0]])
    np.testing.assert_allclose(batch_values[0], batch_values[1])
    assert pairwise(references, estimates).shape == (3, 3)


def test_best_permutation_ties_keep_the_identity_and_many_sources_use_hungarian():
    perm, values = best_permutation(np.zeros((4, 4)))
    np.testing.assert_array_equal(perm, [0, 1, 2, 3])
    np.testing.assert_array_equal(values, np.zeros(4))
    rng = np.random.default_rng(7)
    target = rng.permutation(10)
    scores = rng.uniform(0, 1, (10, 10))
    scores[np.arange(10), target] += 10
    perm, _ = best_permutation(torch.from_numpy(scores))
    np.testing.assert_array_equal(perm.numpy(), target)
    perm, _ = best_permutation(-scores, maximize=False)
    np.testing.assert_array_equal(perm, target)


def test_usdr_matches_the_mdx_definition():
    rng = np.random.default_rng(8)
    references = rng.standard_normal((2, 2, RATE))
    estimates = references + 0.1 * rng.standard_normal(references.shape)
    delta = 1e-7
    expected = 10 * np.log10(
        ((references**2).sum(axis=(1, 2)) + delta)
        / (((references - estimates) ** 2).sum(axis=(1, 2)) + delta)
    )
    np.testing.assert_allclose(usdr(references, estimates), expected)


def test_chunk_sdr_and_csdr_follow_museval_silence_rules():
    rng = np.random.default_rng(9)
    references = rng.standard_normal((2, 2, 5 * RATE))
    references[1, :, RATE : 2 * RATE] = 0.0  # one silent chunk for source 1
    estimates = references + 0.1 * rng.standard_normal(references.shape)
    chunks = chunk_sdr(references, estimates, RATE)
    assert chunks.shape == (2, 5)
    assert np.isnan(chunks[:, 1]).all() and not np.isnan(np.delete(chunks, 1, axis=1)).any()
    for chunk in (0, 2, 3, 4):
        window = slice(chunk * RATE, (chunk + 1) * RATE)
        ref, err = references[..., window], (estimates - references)[..., window]
        np.testing.assert_allclose(
            chunks[:, chunk], 10 * np.log10((ref**2).sum((1, 2)) / (err**2).sum((1, 2)))
        )
    np.testing.assert_allclose(csdr(references, estimates, RATE), np.nanmedian(chunks, axis=1))
    # a source silent over the whole item: NaN chunks, no exception (museval would raise)
    references[1] = 0.0
    assert np.isnan(csdr(references, estimates, RATE)).all()
    with pytest.raises(ValueError, match="all zeros"):
        chunk_sdr(references, estimates, RATE, on_silent="raise")


def test_sdr_improvement_snr_method_known_answer():
    rng = np.random.default_rng(10)
    reference = rng.standard_normal(RATE)
    other = _orthogonal_noise(rng, reference - reference.mean(), 0.0)
    references = np.stack([reference, other])[:, None]
    mixture = references.sum(axis=0)
    estimates = references + np.stack([_orthogonal_noise(rng, r[0], 10.0) for r in references])[:, None]
    values = sdr_improvement(references, estimates, mixture, method="snr")
    np.testing.assert_allclose(values, [10.0, 10.0], atol=0.05)
    with pytest.raises(ValueError, match="method"):
        sdr_improvement(references, estimates, mixture, method="nope")


def test_sdr_improvement_and_nsdr_match_mir_eval():
    separation = pytest.importorskip("mir_eval.separation")
    rng = np.random.default_rng(11)
    references = rng.standard_normal((2, 1, RATE))
    mixture = references.sum(axis=0)
    estimates = references + 0.2 * rng.standard_normal(references.shape) + 0.1 * references[::-1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sdr_est = separation.bss_eval_sources(references[:, 0], estimates[:, 0], compute_permutation=False)[0]
        sdr_mix = separation.bss_eval_sources(
            references[:, 0], np.repeat(mixture, 2, 0), compute_permutation=False
        )[0]
    ours = sdr_improvement(references, estimates, mixture)
    np.testing.assert_allclose(ours, sdr_est - sdr_mix, atol=0.01)
    np.testing.assert_allclose(nsdr(references, estimates, mixture), ours)
