"""BSS Eval projections shared by v4 and v3: cross-correlations (block FFTs), the least-squares
distortion filters (Gram systems solved by Cholesky with fallbacks) and the frequency-domain channel
mixing used by the overlap-save projections in `demixers.evaluation.bss_energies`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

__all__ = [
    "CHUNK_ELEMENTS",
    "Filters",
    "fast_fft_size",
    "mix_channels",
    "solve_filters",
    "solve_gram",
    "xcorr",
]

# Budget (in float64 elements) for the intermediate arrays of one batched step.
CHUNK_ELEMENTS = 2**24


def fast_fft_size(n: int) -> int:
    return 1 << max(4, math.ceil(math.log2(max(n, 1))))


def _segment(signal: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """float64 ``signal[..., start:stop]``, zero where the range leaves ``[0, N)``."""
    low, high = max(start, 0), min(stop, signal.shape[-1])
    inside = signal[..., low : max(low, high)].to(torch.float64)
    left = low - start
    return torch.nn.functional.pad(inside, (left, stop - start - left - inside.shape[-1]))


def xcorr(a: torch.Tensor, others: Sequence[torch.Tensor], max_lag: int) -> list[torch.Tensor]:
    """Linear cross-correlations ``out[..., p, q, d + max_lag] = Σ_t a_p(t) b_q(t + d)``, |d| ≤ max_lag.

    ``a`` is ``(..., P, N)``; one result ``(..., P, Q, 2·max_lag + 1)`` per ``b`` ``(..., Q, N)`` of
    ``others``. The signals are cut into blocks whose correlations are summed in the frequency
    domain, a few blocks at a time, so memory stays bounded for long signals and only the blocks
    in flight are converted to float64.
    """
    num = a.shape[-1]
    nfft = fast_fft_size(min(num, 1 << 14) + 2 * max_lag)
    block = nfft - 2 * max_lag
    count = math.ceil(num / block)
    rows = math.prod(a.shape[:-2]) * (a.shape[-2] + sum(b.shape[-2] for b in others))
    step = max(1, CHUNK_ELEMENTS // (rows * nfft))
    totals: list[torch.Tensor | None] = [None] * len(others)
    for m0 in range(0, count, step):
        m1 = min(count, m0 + step)
        start, stop = m0 * block, m1 * block
        a_blocks = _segment(a, start, stop).unflatten(-1, (m1 - m0, block))  # (..., P, m, B)
        # Σ_m conj(A_pm) B_qm per frequency, as a batched matmul over frequencies; torch's complex
        # matmul is ~100x slower on strided views, hence the contiguous copies
        left = torch.fft.rfft(a_blocks, n=nfft).conj().movedim(-1, -3).contiguous()  # (..., F, P, m)
        for index, b in enumerate(others):
            b_blocks = _segment(b, start - max_lag, stop + max_lag).unfold(
                -1, nfft, block
            )  # (..., Q, m, nfft)
            right = (
                torch.fft.rfft(b_blocks, n=nfft).movedim(-1, -3).transpose(-1, -2).contiguous()
            )  # (.., F, m, Q)
            part = torch.matmul(left, right)  # (..., F, P, Q)
            totals[index] = part if totals[index] is None else totals[index] + part
    return [torch.fft.irfft(total.movedim(-3, -1), n=nfft)[..., : 2 * max_lag + 1] for total in totals]


class Filters:
    """Distortion filters, time-reversed-free: ``h[..., k_in, out, tau]``.

    ``all``: ``(batch, S·C refs, S·C est channels, L)`` projecting each estimate channel on every
    reference channel; ``own``: ``(batch, pairs, C in, C out, L)`` projecting estimate ``je`` on the
    channels of reference ``jt`` for each pair. ``batch`` is 1 (v4, shared by all frames) or the
    number of frames (v3).
    """

    def __init__(self, all_filters: torch.Tensor | None, own: torch.Tensor) -> None:
        self.all = all_filters
        self.own = own


def solve_filters(
    refs: torch.Tensor,
    ests: torch.Tensor,
    filters_len: int,
    pairs: Sequence[tuple[int, int]],
    need_all: bool,
    eps: float | None,
) -> Filters:
    """Least-squares distortion filters from ``(..., S, C, N)`` signals (a leading batch is optional)."""
    if refs.ndim == 3:
        refs, ests = refs[None], ests[None]
    batch, sources, channels, _ = refs.shape
    taps = filters_len
    lag = taps - 1
    k_refs = sources * channels
    flat_refs = refs.reshape(batch, k_refs, -1)
    flat_ests = ests.reshape(batch, k_refs, -1)
    xc_refs, xc_ests = xcorr(flat_refs, [flat_refs, flat_ests], lag)  # (B, K, K, 2L-1) each
    # Gram of delayed references, gathered straight into its (k, a) x (k', b) layout:
    # G[(k, a), (k', b)] = <r_k(· - a), r_k'(· - b)> = xc[k, k', a - b].
    delays = torch.arange(taps, device=refs.device)
    channels_index = torch.arange(k_refs, device=refs.device)
    gram = xc_refs[
        :,
        channels_index[:, None, None, None],
        channels_index[None, None, :, None],
        delays[None, :, None, None] - delays[None, None, None, :] + lag,
    ].reshape(batch, k_refs * taps, k_refs * taps)
    # Right-hand sides: D[(k, a), e] = <r_k(· - a), e>.
    rhs = xc_ests[..., lag:].permute(0, 1, 3, 2).reshape(batch, k_refs * taps, k_refs)

    all_filters = None
    if need_all:
        solution = solve_gram(gram, rhs, eps)  # (B, K·L, E)
        all_filters = solution.reshape(batch, k_refs, taps, k_refs).permute(0, 1, 3, 2)  # (B, K, E, L)

    # Own-source systems: the diagonal blocks of the Gram matrix, one per reference source.
    block = channels * taps
    own_gram = torch.stack(
        [gram[:, j * block : (j + 1) * block, j * block : (j + 1) * block] for j in range(sources)], 1
    )
    own_rhs = torch.stack([rhs[:, j * block : (j + 1) * block] for j in range(sources)], 1)  # (B, S, C·L, E)
    own_solution = solve_gram(own_gram, own_rhs, eps)
    own_solution = own_solution.reshape(batch, sources, channels, taps, sources, channels)
    own_solution = own_solution.permute(0, 1, 4, 2, 5, 3)  # (B, S ref, S est, C in, C out, L)
    jt = torch.tensor([p[0] for p in pairs], device=refs.device)
    je = torch.tensor([p[1] for p in pairs], device=refs.device)
    own = own_solution[:, jt, je]  # (B, P, C in, C out, L)
    return Filters(all_filters, own)


def solve_gram(matrix: torch.Tensor, rhs: torch.Tensor, eps: float | None) -> torch.Tensor:
    """``solve(matrix + eps·I, rhs)`` for symmetric positive semi-definite Gram matrices.

    Cholesky first (a third of the work of museval's LU). Where it fails, the matrix is singular to
    working precision (a mono source stored as two identical channels, a band-limited or silent
    stretch): Cholesky is retried with a diagonal jitter of ``n·ε·max(diag)`` (then 100× and 10⁴×
    that), which only damps directions whose energy is below the rounding level of the matrix, and
    as a last resort the minimum-norm least-squares solution (eigendecomposition with numpy
    ``lstsq``'s cut-off). museval and mir_eval solve by LU and fall back on ``lstsq`` for an exactly
    zero pivot; every route solves the same consistent system, and its projection (all the metrics
    use) is the same to far below 0.01 dB.
    """
    size = matrix.shape[-1]
    system = matrix
    if eps is not None:
        system = matrix.clone()
        system.diagonal(dim1=-2, dim2=-1).add_(eps)
    factor, info = torch.linalg.cholesky_ex(system)
    solution = _cholesky_solve(factor, rhs)
    failed = (info != 0).reshape(-1).nonzero().flatten()
    if failed.numel() == 0:
        return solution
    flat_solution = solution.reshape(-1, *solution.shape[-2:]).clone()
    flat_system = system.reshape(-1, size, size)
    flat_rhs = rhs.reshape(-1, *rhs.shape[-2:])
    for index in failed.tolist():
        block, right = flat_system[index], flat_rhs[index]
        scale = float(block.diagonal().abs().max()) * size * torch.finfo(block.dtype).eps
        for factor_scale in (1.0, 1e2, 1e4):
            jittered_block = block.clone()
            jittered_block.diagonal().add_(scale * factor_scale)
            jittered, jitter_info = torch.linalg.cholesky_ex(jittered_block)
            if int(jitter_info) == 0:
                flat_solution[index] = _cholesky_solve(jittered, right)
                break
        else:
            values, vectors = torch.linalg.eigh(block)
            cutoff = values.abs().max() * size * torch.finfo(values.dtype).eps
            inverse = torch.where(values.abs() > cutoff, 1.0 / values, torch.zeros_like(values))
            flat_solution[index] = vectors @ (inverse[:, None] * (vectors.T @ right))
    return flat_solution.reshape(solution.shape)


def _cholesky_solve(factor: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``(L Lᵀ)⁻¹ rhs`` by two triangular solves (faster than ``torch.cholesky_solve`` on CPU)."""
    half = torch.linalg.solve_triangular(factor, rhs, upper=False)
    return torch.linalg.solve_triangular(factor.mT, half, upper=True)


def mix_channels(spec: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """``out[..., o, m, q] = Σ_i spec[..., i, m, q] · filters[..., i, o, q]`` (batched over frequencies).

    ``filters`` broadcasts over the leading (frame) axis. Written as a matmul: complex einsum is
    far slower in torch.
    """
    x = spec.movedim(-1, -3).contiguous()  # (..., Q, I, m); complex matmul is slow on strided views
    h = filters.movedim(-1, -3).transpose(-1, -2).contiguous()  # (..., Q, O, I)
    return torch.matmul(h, x).movedim(-3, -1)  # (..., O, m, Q)
