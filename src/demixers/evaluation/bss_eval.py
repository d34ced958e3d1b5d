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
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["BSS_EVAL_METRICS", "bss_eval", "frame_bounds", "pad_or_truncate"]

BSS_EVAL_METRICS = ("sdr", "isr", "sir", "sar")
_VERSIONS = ("v4", "v3")
# Budget (in float64 elements) for the intermediate arrays of one batched step.
_CHUNK_ELEMENTS = 2**24


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

    refs, ests, device = _as_sources_tensors(references, estimates, device)
    num_sources, num_channels, num_samples = refs.shape
    default_window = int(sampling_rate) if sampling_rate is not None else 44100
    window = default_window if window is None else window
    hop = window if hop is None else hop
    bounds = frame_bounds(num_samples, window, hop, rule="museval" if version == "v4" else "mir_eval")
    num_frames = len(bounds)

    ref_silent, ref_silent_whole = _silence(refs, bounds)
    est_silent, est_silent_whole = _silence(ests, bounds)
    if ref_silent_whole.any() or est_silent_whole.any():
        if on_silent == "raise":
            which = "reference" if ref_silent_whole.any() else "estimated"
            raise ValueError(
                f"a {which} source is all zeros over the whole signal; museval and mir_eval refuse such "
                "input (it makes the evaluation ambiguous). Pass on_silent='nan' to get NaN frames instead."
            )
        return _all_nan(wanted, num_sources, num_frames, compute_permutation)

    frame_silent = (ref_silent | est_silent).any(dim=0)  # (frames,)
    pairs = _pairs(num_sources, compute_permutation)
    energies = _Energies(num_sources, pairs, num_frames)
    need_all = bool(needed & {"sir", "sar"})
    project = version == "v3" or bool(needed - {"sdr"})
    if project:  # the correlations read whole channels: make them contiguous once
        refs, ests = refs.contiguous(), ests.contiguous()
    length = bounds[0][1] - bounds[0][0]
    step = bounds[1][0] - bounds[0][0] if num_frames > 1 else 1
    ref_frames = refs.unfold(-1, length, step)  # (S, C, frames, n) views
    est_frames = ests.unfold(-1, length, step)
    # v4 runs over every frame in contiguous runs (silent ones are overwritten with NaN below);
    # v3 solves per frame and skips the silent ones, whose Gram matrices are singular.
    todo = (~frame_silent).nonzero().flatten().tolist() if version == "v3" else list(range(num_frames))
    per_frame = num_sources * num_channels * length
    if version == "v3":
        # room for the per-frame Gram matrices and their factorisation
        per_frame += 3 * (num_sources * num_channels * filters_len) ** 2 if need_all else 0
        per_frame += 3 * num_sources * (num_channels * filters_len) ** 2
    elif project:
        filters = _solve_filters(
            refs, ests, filters_len, pairs, need_all, eps=float(np.finfo(np.float64).eps)
        )
    for chunk in _frame_chunks(todo, per_frame):
        frame_refs = _take_frames(ref_frames, chunk)  # (F, S, C, n) float64
        frame_ests = _take_frames(est_frames, chunk)
        if not project:
            energies.add_plain(chunk, frame_refs, frame_ests)
            continue
        if version == "v3":
            filters = _solve_filters(frame_refs, frame_ests, filters_len, pairs, need_all, eps=None)
        energies.add_projected(chunk, frame_refs, frame_ests, filters)

    ratios = energies.ratios(version)  # name -> (pairs, frames) in dB
    for value in ratios.values():
        value[:, frame_silent] = math.nan
    result: dict[str, np.ndarray] = {}
    if compute_permutation:
        perm = _best_permutation(ratios["sir"], pairs, num_sources, per_frame=version == "v3")
        chosen = _pair_index(pairs, num_sources)[torch.arange(num_sources)[:, None], perm]  # (S, frames)
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


def pad_or_truncate(references: np.ndarray, estimates: np.ndarray, axis: int = 1) -> np.ndarray:
    """Return ``estimates`` cut or zero-padded to the length of ``references`` along ``axis``.

    This is what ``museval.evaluate(padding=True)`` does before evaluating.
    """
    target = references.shape[axis]
    current = estimates.shape[axis]
    if current > target:
        return np.take(estimates, np.arange(target), axis=axis)
    if current < target:
        widths = [(0, 0)] * estimates.ndim
        widths[axis] = (0, target - current)
        return np.pad(estimates, widths)
    return estimates


def frame_bounds(
    num_samples: int, window: int | float, hop: int | float, rule: str = "museval"
) -> list[tuple[int, int]]:
    """``(start, stop)`` of each evaluation frame.

    ``rule="museval"``: ``museval.metrics.Framing`` (full windows only; one frame of the whole
    signal when ``window >= num_samples``). ``rule="mir_eval"``: ``bss_eval_sources_framewise``
    (the whole signal as soon as fewer than two windows fit).
    """
    if num_samples < 1:
        raise ValueError("signals must have at least one sample")
    if window != math.inf:
        if window < 1 or hop < 1 or int(window) != window or int(hop) != hop:
            raise ValueError(
                f"window and hop must be positive integers (samples) or math.inf, got {window}, {hop}"
            )
        window, hop = int(window), int(hop)
    if rule == "museval":
        if window == math.inf or window >= num_samples:
            return [(0, num_samples)]
        count = (num_samples - window + hop) // hop
        return [(k * hop, k * hop + window) for k in range(count)]
    if rule == "mir_eval":
        if window == math.inf:
            return [(0, num_samples)]
        count = math.floor((num_samples - window + hop) / hop)
        if count < 2:
            return [(0, num_samples)]
        return [(k * hop, k * hop + window) for k in range(count)]
    raise ValueError(f"rule must be 'museval' or 'mir_eval', got {rule!r}")


# -- input handling -----------------------------------------------------------------------------


def _as_sources_tensors(
    references: Any, estimates: Any, device: str | torch.device | None
) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
    """Validate and return ``(sources, channels, samples)`` tensors on ``device``."""
    tensors = []
    for name, value in (("references", references), ("estimates", estimates)):
        if isinstance(value, torch.Tensor):
            tensor = value.detach()
        else:
            array = np.asarray(value)
            if array.dtype.kind not in "fiu":
                raise TypeError(f"{name} must hold real numbers, got dtype {array.dtype}")
            if not array.flags.writeable:
                array = array.copy()
            tensor = torch.from_numpy(np.ascontiguousarray(array))
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise TypeError(f"{name} must hold real numbers, got {tensor.dtype}")
        if tensor.ndim == 1:
            tensor = tensor[None, :, None]
        elif tensor.ndim == 2:
            tensor = tensor[:, :, None]
        elif tensor.ndim != 3:
            raise ValueError(f"{name} must be (sources, samples, channels), got shape {tuple(tensor.shape)}")
        tensors.append(tensor)
    refs, ests = tensors
    if refs.shape != ests.shape:
        raise ValueError(
            f"references {tuple(refs.shape)} and estimates {tuple(ests.shape)} must have the same "
            "(sources, samples, channels) shape (see pad_or_truncate)"
        )
    if refs.numel() == 0:
        raise ValueError(f"empty input of shape {tuple(refs.shape)}")
    if device is None:
        device = refs.device
    device = torch.device(device)
    out = []
    for name, tensor in (("references", refs), ("estimates", ests)):
        tensor = tensor.to(device)
        if not tensor.is_floating_point():
            tensor = tensor.to(torch.float64)
        # a float64 sum is finite unless a sample is NaN/inf (cheaper than an isfinite mask)
        if not torch.isfinite(tensor.sum(dtype=torch.float64)) and not torch.isfinite(tensor).all():
            raise ValueError(f"{name} contain NaN or infinite samples")
        out.append(tensor.transpose(1, 2))  # (sources, channels, samples), a view
    return out[0], out[1], device


def _silence(signals: torch.Tensor, bounds: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Silent sources, museval's ``_any_source_silent`` test: the channel sum is zero at every sample.

    Returns ``(per_frame (sources, frames), whole_signal (sources,))`` boolean CPU tensors.
    """
    summed = signals.sum(dim=1) if signals.shape[1] <= 2 else signals.to(torch.float64).sum(dim=1)
    nonzero = summed != 0  # (S, N); a two-term float sum is zero exactly when museval's float64 one is
    length = bounds[0][1] - bounds[0][0]
    step = bounds[1][0] - bounds[0][0] if len(bounds) > 1 else 1
    per_frame = ~nonzero.unfold(-1, length, step).any(dim=-1)
    return per_frame.cpu(), ~nonzero.any(dim=-1).cpu()


def _all_nan(wanted: Sequence[str], sources: int, frames: int, with_perm: bool) -> dict[str, np.ndarray]:
    result = {name: np.full((sources, frames), np.nan) for name in wanted}
    if with_perm:
        result["perm"] = np.full((sources, frames), np.nan)
    return result


def _pairs(num_sources: int, all_pairs: bool) -> list[tuple[int, int]]:
    """(reference, estimate) pairs to evaluate."""
    if all_pairs:
        return [(jt, je) for jt in range(num_sources) for je in range(num_sources)]
    return [(j, j) for j in range(num_sources)]


def _pair_index(pairs: Sequence[tuple[int, int]], num_sources: int) -> torch.Tensor:
    index = torch.full((num_sources, num_sources), -1, dtype=torch.long)
    for position, (jt, je) in enumerate(pairs):
        index[jt, je] = position
    return index


def _frame_chunks(frames: list[int], elements_per_frame: int) -> list[list[int]]:
    size = max(1, _CHUNK_ELEMENTS // (8 * max(1, elements_per_frame)))
    return [frames[i : i + size] for i in range(0, len(frames), size)]


def _take_frames(frames: torch.Tensor, chunk: list[int]) -> torch.Tensor:
    """float64 ``(len(chunk), sources, channels, n)`` frames of a ``(S, C, frames, n)`` view.

    A run of consecutive frames is a strided view (no copy for float64 input)."""
    if chunk == list(range(chunk[0], chunk[0] + len(chunk))):
        selected = frames[:, :, chunk[0] : chunk[0] + len(chunk)]
    else:
        selected = frames.index_select(2, torch.tensor(chunk, device=frames.device))
    return selected.permute(2, 0, 1, 3).to(torch.float64)


# -- correlations and distortion filters ----------------------------------------------------------


def _fast_fft_size(n: int) -> int:
    return 1 << max(4, math.ceil(math.log2(max(n, 1))))


def _segment(signal: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """float64 ``signal[..., start:stop]``, zero where the range leaves ``[0, N)``."""
    low, high = max(start, 0), min(stop, signal.shape[-1])
    inside = signal[..., low : max(low, high)].to(torch.float64)
    left = low - start
    return torch.nn.functional.pad(inside, (left, stop - start - left - inside.shape[-1]))


def _xcorr(a: torch.Tensor, others: Sequence[torch.Tensor], max_lag: int) -> list[torch.Tensor]:
    """Linear cross-correlations ``out[..., p, q, d + max_lag] = Σ_t a_p(t) b_q(t + d)``, |d| ≤ max_lag.

    ``a`` is ``(..., P, N)``; one result ``(..., P, Q, 2·max_lag + 1)`` per ``b`` ``(..., Q, N)`` of
    ``others``. The signals are cut into blocks whose correlations are summed in the frequency
    domain, a few blocks at a time, so memory stays bounded for long signals and only the blocks
    in flight are converted to float64.
    """
    num = a.shape[-1]
    nfft = _fast_fft_size(min(num, 1 << 14) + 2 * max_lag)
    block = nfft - 2 * max_lag
    count = math.ceil(num / block)
    rows = math.prod(a.shape[:-2]) * (a.shape[-2] + sum(b.shape[-2] for b in others))
    step = max(1, _CHUNK_ELEMENTS // (rows * nfft))
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


class _Filters:
    """Distortion filters, time-reversed-free: ``h[..., k_in, out, tau]``.

    ``all``: ``(batch, S·C refs, S·C est channels, L)`` projecting each estimate channel on every
    reference channel; ``own``: ``(batch, pairs, C in, C out, L)`` projecting estimate ``je`` on the
    channels of reference ``jt`` for each pair. ``batch`` is 1 (v4, shared by all frames) or the
    number of frames (v3).
    """

    def __init__(self, all_filters: torch.Tensor | None, own: torch.Tensor) -> None:
        self.all = all_filters
        self.own = own


def _solve_filters(
    refs: torch.Tensor,
    ests: torch.Tensor,
    filters_len: int,
    pairs: Sequence[tuple[int, int]],
    need_all: bool,
    eps: float | None,
) -> _Filters:
    """Least-squares distortion filters from ``(..., S, C, N)`` signals (a leading batch is optional)."""
    if refs.ndim == 3:
        refs, ests = refs[None], ests[None]
    batch, sources, channels, _ = refs.shape
    taps = filters_len
    lag = taps - 1
    k_refs = sources * channels
    flat_refs = refs.reshape(batch, k_refs, -1)
    flat_ests = ests.reshape(batch, k_refs, -1)
    xc_refs, xc_ests = _xcorr(flat_refs, [flat_refs, flat_ests], lag)  # (B, K, K, 2L-1) each
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
        solution = _solve(gram, rhs, eps)  # (B, K·L, E)
        all_filters = solution.reshape(batch, k_refs, taps, k_refs).permute(0, 1, 3, 2)  # (B, K, E, L)

    # Own-source systems: the diagonal blocks of the Gram matrix, one per reference source.
    block = channels * taps
    own_gram = torch.stack(
        [gram[:, j * block : (j + 1) * block, j * block : (j + 1) * block] for j in range(sources)], 1
    )
    own_rhs = torch.stack([rhs[:, j * block : (j + 1) * block] for j in range(sources)], 1)  # (B, S, C·L, E)
    own_solution = _solve(own_gram, own_rhs, eps).reshape(batch, sources, channels, taps, sources, channels)
    own_solution = own_solution.permute(0, 1, 4, 2, 5, 3)  # (B, S ref, S est, C in, C out, L)
    jt = torch.tensor([p[0] for p in pairs], device=refs.device)
    je = torch.tensor([p[1] for p in pairs], device=refs.device)
    own = own_solution[:, jt, je]  # (B, P, C in, C out, L)
    return _Filters(all_filters, own)


def _solve(matrix: torch.Tensor, rhs: torch.Tensor, eps: float | None) -> torch.Tensor:
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


# -- per-frame energies ---------------------------------------------------------------------------


class _Energies:
    """Running sums of the energies behind each ratio, ``(pairs or sources, frames)`` float64."""

    NAMES = ("ref", "err", "spat", "own", "own_res", "interf", "all", "artif")

    def __init__(self, sources: int, pairs: Sequence[tuple[int, int]], frames: int) -> None:
        self.pairs = list(pairs)
        rows = {"ref": sources, "all": sources, "artif": sources}
        self.tensors = {
            name: torch.zeros(rows.get(name, len(self.pairs)), frames, dtype=torch.float64)
            for name in self.NAMES
        }

    def _store(self, chunk: list[int], name: str, value: torch.Tensor) -> None:
        self.tensors[name][:, chunk] = value.transpose(0, 1).cpu()

    def add_plain(self, chunk: list[int], refs: torch.Tensor, ests: torch.Tensor) -> None:
        """Energies of the v4 SDR, which needs no projection."""
        self._store(chunk, "ref", refs.square().sum(dim=(-2, -1)))
        if self.pairs == [(j, j) for j in range(refs.shape[1])]:
            error = ests - refs
        else:
            error = ests[:, [p[1] for p in self.pairs]] - refs[:, [p[0] for p in self.pairs]]
        self._store(chunk, "err", error.square().sum(dim=(-2, -1)))

    def add_projected(
        self, chunk: list[int], refs: torch.Tensor, ests: torch.Tensor, filters: _Filters
    ) -> None:
        """Overlap-save projections of the frames' references through the filters, summed to energies."""
        frames, sources, channels, length = refs.shape
        taps = filters.own.shape[-1]
        out_length = length + taps - 1
        nfft = _fast_fft_size(min(out_length, 1 << 13) + taps - 1)
        block = nfft - (taps - 1)
        count = math.ceil(out_length / block)
        jt = torch.tensor([p[0] for p in self.pairs], device=refs.device)
        je = torch.tensor([p[1] for p in self.pairs], device=refs.device)
        # Segment m holds input samples [m·block − (taps − 1), (m + 1)·block) of the frame.
        padded = torch.nn.functional.pad(refs, (taps - 1, count * block - length))
        segments = padded.unfold(-1, nfft, block)  # (F, S, C, M, nfft)
        est_blocks = torch.nn.functional.pad(ests, (0, count * block - length)).unflatten(-1, (count, block))
        own_spec = torch.fft.rfft(filters.own, n=nfft)  # (B, P, Ci, Co, Q)
        all_spec = None if filters.all is None else torch.fft.rfft(filters.all, n=nfft)  # (B, K, E, Q)
        sums = {name: 0.0 for name in self.NAMES}
        per_block = frames * sources * channels * nfft * (2 + len(self.pairs))
        step = max(1, _CHUNK_ELEMENTS // per_block)
        for m0 in range(0, count, step):
            seg = segments[..., m0 : m0 + step, :]
            spec = torch.fft.rfft(seg, n=nfft)  # (F, S, C, m, Q)
            s = seg[..., taps - 1 :]  # reference samples at the outputs of these blocks
            est = est_blocks[..., m0 : m0 + step, :]
            own_proj = torch.fft.irfft(_mix_channels(spec[:, jt], own_spec), n=nfft)[
                ..., taps - 1 :
            ]  # (F, P, C, m, block)
            s_pair = s[:, jt]
            est_pair = est[:, je]
            sums["ref"] = sums["ref"] + s.square().sum(dim=(-3, -2, -1))
            sums["err"] = sums["err"] + (est_pair - s_pair).square().sum(dim=(-3, -2, -1))
            sums["spat"] = sums["spat"] + (own_proj - s_pair).square().sum(dim=(-3, -2, -1))
            sums["own"] = sums["own"] + own_proj.square().sum(dim=(-3, -2, -1))
            sums["own_res"] = sums["own_res"] + (est_pair - own_proj).square().sum(dim=(-3, -2, -1))
            if all_spec is not None:
                flat = spec.flatten(1, 2)  # (F, K, m, Q)
                all_proj = torch.fft.irfft(_mix_channels(flat, all_spec), n=nfft)[..., taps - 1 :]
                all_proj = all_proj.unflatten(1, (sources, channels))  # (F, S, C, m, block)
                sums["interf"] = sums["interf"] + (all_proj[:, je] - own_proj).square().sum(dim=(-3, -2, -1))
                sums["all"] = sums["all"] + all_proj.square().sum(dim=(-3, -2, -1))
                sums["artif"] = sums["artif"] + (est - all_proj).square().sum(dim=(-3, -2, -1))
        for name, value in sums.items():
            if isinstance(value, torch.Tensor):
                self._store(chunk, name, value)

    def ratios(self, version: str) -> dict[str, torch.Tensor]:
        """``name -> (pairs, frames)`` ratios in dB."""
        t = self.tensors
        jt = [p[0] for p in self.pairs]
        je = [p[1] for p in self.pairs]
        sdr = _safe_db(t["ref"][jt], t["err"]) if version == "v4" else _safe_db(t["own"], t["own_res"])
        return {
            "sdr": sdr,
            "isr": _safe_db(t["ref"][jt], t["spat"]),
            "sir": _safe_db(t["own"], t["interf"]),
            "sar": _safe_db(t["all"][je], t["artif"][je]),
        }


def _mix_channels(spec: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """``out[..., o, m, q] = Σ_i spec[..., i, m, q] · filters[..., i, o, q]`` (batched over frequencies).

    ``filters`` broadcasts over the leading (frame) axis. Written as a matmul: complex einsum is
    far slower in torch.
    """
    x = spec.movedim(-1, -3).contiguous()  # (..., Q, I, m); complex matmul is slow on strided views
    h = filters.movedim(-1, -3).transpose(-1, -2).contiguous()  # (..., Q, O, I)
    return torch.matmul(h, x).movedim(-3, -1)  # (..., O, m, Q)


def _safe_db(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``10·log10(num / den)``, +inf where ``den == 0`` (museval's ``_safe_db``)."""
    ratio = 10 * torch.log10(numerator / denominator)
    return torch.where(denominator == 0, torch.full_like(ratio, math.inf), ratio)


def _best_permutation(
    sir: torch.Tensor, pairs: Sequence[tuple[int, int]], num_sources: int, per_frame: bool
) -> torch.Tensor:
    """``(sources, frames)`` estimate index per reference maximising the mean SIR.

    Ties and NaN follow numpy's ``argmax`` over ``itertools.permutations`` order, as in museval and
    mir_eval (a NaN score wins, so a v4 signal with a silent frame keeps the identity order).
    """
    index = _pair_index(pairs, num_sources)
    candidates = torch.tensor(list(itertools.permutations(range(num_sources))), dtype=torch.long)  # (N!, S)
    rows = index[torch.arange(num_sources)[None, :], candidates]  # (N!, S) pair positions
    scores = sir[rows].mean(dim=1)  # (N!, frames)
    frames = sir.shape[1]
    if per_frame:
        best = np.argmax(scores.numpy(), axis=0)  # (frames,)
        return candidates[torch.from_numpy(best)].T.contiguous()
    best = int(np.argmax(scores.mean(dim=1).numpy()))
    return candidates[best][:, None].expand(num_sources, frames).contiguous()
