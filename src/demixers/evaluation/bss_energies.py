"""BSS Eval per-frame energies and the ratios built from them (SDR, ISR, SIR, SAR in dB), for the
(reference, estimate) pairs under evaluation. v4 and v3 differ only in the SDR (see `Energies.ratios`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .bss_projection import CHUNK_ELEMENTS, Filters, fast_fft_size, mix_channels

__all__ = ["Energies", "evaluation_pairs", "pair_index", "safe_db"]


def evaluation_pairs(num_sources: int, all_pairs: bool) -> list[tuple[int, int]]:
    """(reference, estimate) pairs to evaluate."""
    if all_pairs:
        return [(jt, je) for jt in range(num_sources) for je in range(num_sources)]
    return [(j, j) for j in range(num_sources)]


def pair_index(pairs: Sequence[tuple[int, int]], num_sources: int) -> torch.Tensor:
    index = torch.full((num_sources, num_sources), -1, dtype=torch.long)
    for position, (jt, je) in enumerate(pairs):
        index[jt, je] = position
    return index


class Energies:
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
        self, chunk: list[int], refs: torch.Tensor, ests: torch.Tensor, filters: Filters
    ) -> None:
        """Overlap-save projections of the frames' references through the filters, summed to energies."""
        frames, sources, channels, length = refs.shape
        taps = filters.own.shape[-1]
        out_length = length + taps - 1
        nfft = fast_fft_size(min(out_length, 1 << 13) + taps - 1)
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
        step = max(1, CHUNK_ELEMENTS // per_block)
        for m0 in range(0, count, step):
            seg = segments[..., m0 : m0 + step, :]
            spec = torch.fft.rfft(seg, n=nfft)  # (F, S, C, m, Q)
            s = seg[..., taps - 1 :]  # reference samples at the outputs of these blocks
            est = est_blocks[..., m0 : m0 + step, :]
            own_proj = torch.fft.irfft(mix_channels(spec[:, jt], own_spec), n=nfft)[
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
                all_proj = torch.fft.irfft(mix_channels(flat, all_spec), n=nfft)[..., taps - 1 :]
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
        sdr = safe_db(t["ref"][jt], t["err"]) if version == "v4" else safe_db(t["own"], t["own_res"])
        return {
            "sdr": sdr,
            "isr": safe_db(t["ref"][jt], t["spat"]),
            "sir": safe_db(t["own"], t["interf"]),
            "sar": safe_db(t["all"][je], t["artif"][je]),
        }


def safe_db(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``10·log10(num / den)``, +inf where ``den == 0`` (museval's ``safe_db``)."""
    ratio = 10 * torch.log10(numerator / denominator)
    return torch.where(denominator == 0, torch.full_like(ratio, math.inf), ratio)
