"""`demixers.utils.permutations.best_permutation`: one assignment search for every layer."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from demixers.utils.permutations import MAX_EXHAUSTIVE_SOURCES, best_permutation


def _brute_force(scores: np.ndarray) -> tuple[tuple[int, ...], float]:
    refs, ests = scores.shape
    best = max(
        itertools.permutations(range(ests), refs),
        key=lambda perm: sum(scores[j, perm[j]] for j in range(refs)),
    )
    return best, float(sum(scores[j, best[j]] for j in range(refs)))


@pytest.mark.parametrize("sources", range(2, 11))
def test_exhaustive_and_hungarian_agree_on_random_matrices(sources: int) -> None:
    rng = np.random.default_rng(sources)
    items = 6 if sources <= 8 else 2
    scores = rng.standard_normal((items, sources, sources))
    exhaustive, exhaustive_values = best_permutation(scores, method="exhaustive")
    hungarian, hungarian_values = best_permutation(scores, method="hungarian")
    automatic, _ = best_permutation(scores)
    # continuous random scores have one optimum: both searches find the same permutation
    np.testing.assert_array_equal(exhaustive, hungarian)
    np.testing.assert_array_equal(automatic, exhaustive)
    np.testing.assert_allclose(exhaustive_values, hungarian_values)
    for item in range(items):
        assert sorted(exhaustive[item].tolist()) == list(range(sources))
        chosen = scores[item, np.arange(sources), exhaustive[item]]
        np.testing.assert_array_equal(exhaustive_values[item], chosen)
        if sources <= 7:
            best, total = _brute_force(scores[item])
            assert tuple(exhaustive[item].tolist()) == best
            assert exhaustive_values[item].sum() == pytest.approx(total)


def test_known_permutation_is_found_and_minimize_works() -> None:
    rng = np.random.default_rng(0)
    for sources in (3, 9):
        target = rng.permutation(sources)
        scores = rng.uniform(0, 1, (sources, sources))
        scores[np.arange(sources), target] += 10
        perm, values = best_permutation(scores)
        np.testing.assert_array_equal(perm, target)
        np.testing.assert_allclose(values, scores[np.arange(sources), target])
        perm, values = best_permutation(-scores, maximize=False)
        np.testing.assert_array_equal(perm, target)
        np.testing.assert_allclose(values, -scores[np.arange(sources), target])


def test_ties_keep_the_identity_then_the_first_permutation() -> None:
    for sources in (1, 2, 4, 9):
        perm, values = best_permutation(np.zeros((sources, sources)))
        np.testing.assert_array_equal(perm, np.arange(sources))
        np.testing.assert_array_equal(values, np.zeros(sources))
    # two swaps with the same total, both better than the identity: the first in itertools order
    scores = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    perm, _ = best_permutation(scores)
    np.testing.assert_array_equal(perm, [1, 2, 0])  # (1, 2, 0) and (2, 0, 1) both total 3
    # an identity that ties the optimum found by the Hungarian search is kept too
    scores = np.ones((10, 10))
    perm, _ = best_permutation(scores, method="hungarian")
    np.testing.assert_array_equal(perm, np.arange(10))


def test_tie_tolerance_keeps_the_identity_unless_beaten_by_more() -> None:
    swapped = np.array([[0.0, 1.0], [1.0, 0.0]])  # the swap wins by 2
    for method in ("exhaustive", "hungarian"):
        np.testing.assert_array_equal(best_permutation(swapped, tie_tolerance=1.9, method=method)[0], [1, 0])
        np.testing.assert_array_equal(best_permutation(swapped, tie_tolerance=2.0, method=method)[0], [0, 1])
        np.testing.assert_array_equal(
            best_permutation(-swapped, maximize=False, tie_tolerance=2.5, method=method)[0], [0, 1]
        )
    # one tolerance per item
    batch = np.stack([swapped, swapped])
    perm, _ = best_permutation(batch, tie_tolerance=np.array([0.0, 3.0]))
    np.testing.assert_array_equal(perm, [[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="tie_tolerance"):
        best_permutation(swapped, tie_tolerance=-1.0)
    with pytest.raises(ValueError, match="broadcast"):
        best_permutation(batch, tie_tolerance=np.zeros(3))


def test_nan_policies() -> None:
    scores = np.array([[[0.0, 1.0], [1.0, 0.0]], [[0.0, np.nan], [1.0, 0.0]]])
    with pytest.raises(ValueError, match="NaN"):
        best_permutation(scores)
    perm, values = best_permutation(scores, nan="identity")
    np.testing.assert_array_equal(perm, [[1, 0], [0, 1]])  # the clean item is still solved
    np.testing.assert_array_equal(values[1], [0.0, 0.0])
    for method in ("exhaustive", "hungarian"):
        scores_with_nan = torch.tensor([[np.nan, 5.0], [5.0, 0.0]])
        perm, values = best_permutation(scores_with_nan, nan="identity", method=method)
        assert perm.tolist() == [0, 1]
        assert torch.isnan(values[0]) and values[1] == 0
    with pytest.raises(ValueError, match="nan must be"):
        best_permutation(scores, nan="ignore")


def test_infinite_scores() -> None:
    # a perfect estimate (SNR +inf) pins its reference, the rest is solved on finite scores
    scores = np.array([[0.0, np.inf, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    for method in ("exhaustive", "hungarian"):
        np.testing.assert_array_equal(best_permutation(scores, method=method)[0], [1, 0, 2])
    forbidden = np.array([[-np.inf, 0.0], [0.0, -np.inf]])
    for method in ("exhaustive", "hungarian"):
        np.testing.assert_array_equal(best_permutation(forbidden, method=method)[0], [1, 0])


def test_numpy_torch_batched_and_rectangular() -> None:
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    perm, values = best_permutation(scores)
    assert isinstance(perm, np.ndarray) and perm.dtype == np.int64 and perm.shape == (2, 3, 4)
    assert values.dtype == np.float32 and values.shape == (2, 3, 4)
    for index in np.ndindex(2, 3):
        best, _ = _brute_force(scores[index])
        assert tuple(perm[index].tolist()) == best
    tensor = torch.from_numpy(scores).requires_grad_(True)
    torch_perm, torch_values = best_permutation(tensor)
    assert torch_perm.dtype == torch.long and not torch_values.requires_grad
    assert torch_values.dtype == torch.float32
    np.testing.assert_array_equal(torch_perm.numpy(), perm)
    # a list works like an array; integers stay integers in the values
    perm, values = best_permutation([[1, 5], [5, 1]])
    assert perm.tolist() == [1, 0] and values.tolist() == [5, 5]
    # more estimates than references: distinct estimates, the best ones
    wide = rng.standard_normal((5, 2, 4))
    perm, _ = best_permutation(wide)
    for item in range(5):
        assert tuple(perm[item].tolist()) == _brute_force(wide[item])[0]
    np.testing.assert_array_equal(best_permutation(wide, method="hungarian")[0], perm)
    # empty batch
    assert best_permutation(np.zeros((0, 3, 3)))[0].shape == (0, 3)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="references, estimates"):
        best_permutation(np.ones(3))
    with pytest.raises(ValueError, match="at most as many references"):
        best_permutation(np.ones((3, 2)))
    with pytest.raises(TypeError):
        best_permutation(np.ones((2, 2), dtype=complex))
    with pytest.raises(TypeError):
        best_permutation(torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="maximize"):
        best_permutation(np.ones((2, 2)), maximize=1)
    with pytest.raises(ValueError, match="method"):
        best_permutation(np.ones((2, 2)), method="greedy")
    assert MAX_EXHAUSTIVE_SOURCES == 8
