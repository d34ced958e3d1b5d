"""The best one-to-one assignment of estimates to references, for metrics, losses and chunk alignment.

One convention for every layer: ``scores[..., j, k]`` is how well estimate ``k`` matches reference
``j`` (references on the second-to-last axis, estimates on the last; there may be more estimates
than references). `best_permutation` returns ``(perm, values)`` with ``perm[..., j]`` the estimate
given to reference ``j`` and ``values[..., j] = scores[..., j, perm[..., j]]``, numpy in, numpy out,
torch in, torch out (on the scores' device). It works on detached scores: gather the values of a
differentiable matrix with the returned ``perm`` to keep gradients.

Search: every permutation (in ``itertools.permutations`` order, the identity first, so among equal
totals the earliest wins) up to `MAX_EXHAUSTIVE_SOURCES` estimates; above that the Hungarian
algorithm (``scipy.optimize.linear_sum_assignment``, imported only then), which finds the same
optimum in ``O(S^3)``. Totals are summed in float64 (float32 on devices without float64, i.e. MPS).

Ties: the identity is kept unless another permutation's total beats it by more than
``tie_tolerance`` (an absolute amount in score units, a scalar or one per item), so inputs that
are already in order, or that no permutation improves, never get shuffled.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch

__all__ = ["MAX_EXHAUSTIVE_SOURCES", "best_permutation"]

MAX_EXHAUSTIVE_SOURCES = 8
_NAN_POLICIES = ("raise", "identity")
_METHODS = ("auto", "exhaustive", "hungarian")
# Candidates scored per step of the exhaustive search (8! = 40320, so up to 8 sources in one step).
_CANDIDATE_BLOCK = math.factorial(MAX_EXHAUSTIVE_SOURCES)
# Budget of gathered score elements per step (bounds memory for large batches).
_STEP_ELEMENTS = 1 << 23


def best_permutation(
    scores: Any,
    *,
    maximize: bool = True,
    tie_tolerance: Any = 0.0,
    nan: str = "raise",
    method: str = "auto",
) -> tuple[Any, Any]:
    """Best assignment on ``(..., references, estimates)`` score matrices: ``(perm, values)``.

    Args:
        scores: numpy array (or anything `numpy.asarray` takes) or torch tensor of real numbers,
            ``(..., references, estimates)`` with ``references <= estimates``.
        maximize: ``True`` when a higher score is better (SI-SNR, inner products), ``False`` for
            costs (losses, distances).
        tie_tolerance: keep the identity unless the best total beats the identity's total by more
            than this (score units, ``>= 0``); a scalar or an array broadcasting to ``scores.shape[:-2]``.
        nan: ``"raise"`` (ValueError on a NaN score) or ``"identity"`` (an item with a NaN score
            keeps the identity and its NaN values, e.g. a loss that is NaN anyway).
        method: ``"auto"`` (exhaustive up to `MAX_EXHAUSTIVE_SOURCES` estimates, Hungarian above),
            ``"exhaustive"`` or ``"hungarian"``.

    Returns:
        ``perm``: int64 ``(..., references)``; ``values``: the chosen scores, same dtype as ``scores``.
        numpy arrays for numpy input, tensors (on the scores' device) for tensor input.

    Infinite scores are allowed: a total holding both ``+inf`` and ``-inf`` counts as ``-inf``.
    """
    matrix, as_numpy = _as_tensor(scores)
    if not isinstance(maximize, bool):
        raise TypeError(f"maximize must be a bool, got {maximize!r}")
    if nan not in _NAN_POLICIES:
        raise ValueError(f"nan must be one of {_NAN_POLICIES}, got {nan!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    num_refs, num_ests = matrix.shape[-2], matrix.shape[-1]
    if num_refs > num_ests:
        raise ValueError(
            f"scores must be (..., references, estimates) with at most as many references as "
            f"estimates, got shape {tuple(matrix.shape)}"
        )
    batch_shape = matrix.shape[:-2]
    tolerance = _tolerance(tie_tolerance, batch_shape)

    device = matrix.device
    work_dtype = torch.float32 if device.type == "mps" else torch.float64
    flat = matrix.reshape(-1, num_refs, num_ests).to(work_dtype)
    has_nan = torch.isnan(flat).flatten(1).any(dim=1)  # (N,)
    if bool(has_nan.any()):
        if nan == "raise":
            first = tuple(int(i) for i in torch.isnan(matrix).nonzero()[0].tolist())
            raise ValueError(
                f"scores contain NaN (first at index {first}); a permutation cannot be chosen. "
                "Pass nan='identity' to keep the identity for such items."
            )
        flat = torch.where(has_nan[:, None, None], torch.zeros_like(flat), flat)
    signed = flat if maximize else -flat

    identity = torch.arange(num_refs, device=device)
    identity_total = _totals(signed, identity[None, :])[:, 0]  # (N,)
    if flat.shape[0] == 0 or num_refs == 0:
        perm = identity.expand(flat.shape[0], num_refs)
    else:
        use_exhaustive = method == "exhaustive" or (method == "auto" and num_ests <= MAX_EXHAUSTIVE_SOURCES)
        if use_exhaustive:
            perm, best_total = _exhaustive(signed, num_refs, num_ests)
        else:
            perm = _hungarian(signed)
            best_total = _totals(signed, perm[:, None, :])[:, 0]
        margin = tolerance.to(device=device, dtype=work_dtype)
        keep_identity = ~(best_total > identity_total + margin) | has_nan
        perm = torch.where(keep_identity[:, None], identity[None, :], perm)
    perm = perm.reshape(*batch_shape, num_refs)
    values = torch.gather(matrix, -1, perm[..., None]).squeeze(-1)
    if as_numpy:
        return perm.cpu().numpy(), values.cpu().numpy()
    return perm, values


# -- validation ----------------------------------------------------------------------------------


def _as_tensor(scores: Any) -> tuple[torch.Tensor, bool]:
    if isinstance(scores, torch.Tensor):
        tensor = scores.detach()
        as_numpy = False
    else:
        array = np.asarray(scores)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"scores must hold real numbers, got dtype {array.dtype}")
        tensor = torch.from_numpy(np.array(array, copy=True))  # owns writable, contiguous memory
        as_numpy = True
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"scores must hold real numbers, got {tensor.dtype}")
    if tensor.ndim < 2:
        raise ValueError(f"scores must be (..., references, estimates), got shape {tuple(tensor.shape)}")
    return tensor, as_numpy


def _tolerance(tie_tolerance: Any, batch_shape: torch.Size) -> torch.Tensor:
    """Per-item float64 tolerance, flattened like the batch."""
    if isinstance(tie_tolerance, torch.Tensor):
        value = tie_tolerance.detach().to(device="cpu", dtype=torch.float64)
    else:
        array = np.asarray(tie_tolerance)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"tie_tolerance must be a real number or array, got {tie_tolerance!r}")
        value = torch.from_numpy(np.array(array, dtype=np.float64))
    if torch.isnan(value).any() or (value < 0).any():
        raise ValueError(f"tie_tolerance must be >= 0 (and not NaN), got {tie_tolerance!r}")
    try:
        value = value.expand(batch_shape)
    except RuntimeError:
        raise ValueError(
            f"tie_tolerance of shape {tuple(value.shape)} does not broadcast to the batch shape "
            f"{tuple(batch_shape)} of the scores"
        ) from None
    return value.reshape(-1)


# -- search --------------------------------------------------------------------------------------


def _totals(signed: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``(N, P)`` summed scores of ``candidates`` ``(P, R)`` or ``(N, P, R)``; ``+inf + -inf`` → ``-inf``."""
    rows = torch.arange(signed.shape[1], device=signed.device)
    if candidates.ndim == 2:
        gathered = signed[:, rows, candidates]  # (N, P, R)
    else:
        gathered = torch.gather(signed, 2, candidates.transpose(1, 2)).transpose(1, 2)  # (N, P, R)
    totals = gathered.sum(dim=-1)
    return torch.nan_to_num(totals, nan=-math.inf, posinf=math.inf, neginf=-math.inf)


@lru_cache(maxsize=16)
def _arrangements(num_items: int, length: int) -> torch.Tensor:
    """``itertools.permutations(range(num_items), length)`` as a ``(P, length)`` int64 tensor."""
    return torch.tensor(list(itertools.permutations(range(num_items), length)), dtype=torch.long).reshape(
        -1, length
    )


def _candidate_blocks(num_refs: int, num_ests: int) -> Any:
    """The candidates in ``itertools.permutations(range(num_ests), num_refs)`` order, in blocks.

    A fixed prefix followed by every arrangement of the remaining estimates (kept sorted) walks the
    lexicographic order; the prefix is as short as keeps each block within `_CANDIDATE_BLOCK`.
    """
    prefix_length = 0
    while math.perm(num_ests - prefix_length, num_refs - prefix_length) > _CANDIDATE_BLOCK:
        prefix_length += 1
    tails = _arrangements(num_ests - prefix_length, num_refs - prefix_length)
    for prefix in itertools.permutations(range(num_ests), prefix_length):
        remaining = torch.tensor([k for k in range(num_ests) if k not in prefix], dtype=torch.long)
        block = remaining[tails]
        if prefix_length:
            block = torch.cat([torch.tensor(prefix).expand(block.shape[0], -1), block], dim=1)
        yield block


def _exhaustive(signed: torch.Tensor, num_refs: int, num_ests: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First maximising permutation per item (``(N, R)``) and its total (``(N,)``)."""
    items = signed.shape[0]
    device = signed.device
    best_total = torch.full((items,), -math.inf, dtype=signed.dtype, device=device)
    best_perm = torch.arange(num_refs, device=device).repeat(items, 1)
    for block in _candidate_blocks(num_refs, num_ests):
        block = block.to(device)
        per_step = max(1, _STEP_ELEMENTS // max(1, block.numel()))
        for start in range(0, items, per_step):
            part = slice(start, start + per_step)
            totals = _totals(signed[part], block)  # (n, P)
            value, index = totals.max(dim=-1)  # the first maximum
            better = value > best_total[part]  # strict: an earlier candidate wins a tie
            best_total[part] = torch.where(better, value, best_total[part])
            best_perm[part] = torch.where(better[:, None], block[index], best_perm[part])
    return best_perm, best_total


def _hungarian(signed: torch.Tensor) -> torch.Tensor:
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as error:  # pragma: no cover - scipy ships with the test extras
        raise ImportError(
            f"best_permutation over more than {MAX_EXHAUSTIVE_SOURCES} estimates uses scipy's Hungarian "
            "algorithm: pip install scipy"
        ) from error
    matrices = signed.detach().to(device="cpu", dtype=torch.float64).numpy()
    result = np.empty(matrices.shape[:2], dtype=np.int64)
    for item, matrix in enumerate(matrices):
        result[item] = linear_sum_assignment(_finite_for_assignment(matrix), maximize=True)[1]
    return torch.from_numpy(result).to(signed.device)


def _finite_for_assignment(matrix: np.ndarray) -> np.ndarray:
    """scipy refuses infinite entries: ±inf become ±(more than any sum of finite entries)."""
    infinite = np.isinf(matrix)
    if not infinite.any():
        return matrix
    finite = matrix[~infinite]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    big = (scale + 1.0) * 2.0 * matrix.shape[1]
    return np.where(infinite, np.sign(matrix) * big, matrix)
