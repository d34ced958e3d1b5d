"""Speed of demixers' BSS Eval against museval, mir_eval and fast_bss_eval, measured in one process.

Two comparisons on synthetic 4-source stereo 44.1 kHz signals (estimates = references with
cross-talk, an echo and noise), for each duration (default 30 s and 3 min):

* **v4** (MUSDB18 / SiSEC): framewise BSS Eval images over 1 s frames, museval's
  ``evaluate(mode="v4")``: demixers ``bss_eval`` (all four metrics, and SDR only, which needs no
  projection) against ``museval.metrics.bss_eval``;
* **v3 sources, whole signal** (speech papers, MIR-1K): ``bss_eval_sources`` of each channel with
  a fixed order: demixers ``bss_eval(version="v3", window=inf)`` against ``mir_eval`` and
  ``fast_bss_eval`` (exact solve, ``use_cg_iter=None``, numpy and torch backends).

Each tool runs ``--repeats`` times (interleaved; the minimum is kept) and the largest absolute
difference to the reference implementation is recorded next to the timings. Results are printed as
a table and written as JSON (``--output``)::

    python benchmarks/bench_metrics.py --durations 30 180 --output benchmarks/results/bench_metrics.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from demixers.evaluation import bss_eval

RATE = 44100
SOURCES = 4
CHANNELS = 2


def load_museval_metrics():
    """``museval.metrics`` without ``museval/__init__`` (which imports musdb -> stempeg -> ffmpeg)."""
    spec = importlib.util.find_spec("museval")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "metrics.py"
    module_spec = importlib.util.spec_from_file_location("_museval_metrics_bench", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def make_signals(seconds: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(sources, samples, channels)`` references and estimates, float64."""
    rng = np.random.default_rng(seed)
    samples = int(seconds * RATE)
    white = rng.standard_normal((SOURCES, samples, CHANNELS))
    # colour each source differently (one-pole low-pass of varying strength), like real stems
    refs = np.empty_like(white)
    for index in range(SOURCES):
        pole = 0.2 * index
        refs[index, 0] = white[index, 0]
        for start in range(1, samples, 1 << 16):
            stop = min(samples, start + (1 << 16))
            block = white[index, start:stop].copy()
            block[0] += pole * refs[index, start - 1]
            refs[index, start:stop] = _one_pole(block, pole)
    matrix = np.eye(SOURCES) * 0.85 + 0.15 / SOURCES
    ests = np.einsum("ij,jnc->inc", matrix, refs)
    ests[:, 7:] += 0.1 * refs[:, :-7]
    ests += 0.05 * rng.standard_normal(refs.shape)
    return refs, ests


def _one_pole(block: np.ndarray, pole: float) -> np.ndarray:
    if pole == 0:
        return block
    from scipy.signal import lfilter

    return lfilter([1.0], [1.0, -pole], block, axis=0)


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def max_difference(ours: np.ndarray, reference: np.ndarray) -> float:
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    both = np.isfinite(ours) & np.isfinite(reference)
    if not (np.isnan(ours) == np.isnan(reference)).all():
        return math.inf
    return float(np.abs(ours[both] - reference[both]).max()) if both.any() else 0.0


def bench_v4(
    refs: np.ndarray, ests: np.ndarray, museval, repeats: int, device: str, with_museval: bool
) -> dict:
    runs: dict[str, list[float]] = {"demixers": [], "demixers_sdr_only": [], "museval": []}
    outputs: dict[str, Any] = {}
    for _ in range(repeats):
        seconds, outputs["demixers"] = timed(
            lambda: bss_eval(refs, ests, window=RATE, hop=RATE, device=device)
        )
        runs["demixers"].append(seconds)
        seconds, outputs["demixers_sdr_only"] = timed(
            lambda: bss_eval(refs, ests, window=RATE, hop=RATE, metrics=("sdr",), device=device)
        )
        runs["demixers_sdr_only"].append(seconds)
        if with_museval and museval is not None:
            seconds, result = timed(
                lambda: museval.bss_eval(refs, ests, window=RATE, hop=RATE, framewise_filters=False)
            )
            runs["museval"].append(seconds)
            outputs["museval"] = dict(zip(("sdr", "isr", "sir", "sar"), result[:4], strict=True))
    report: dict[str, Any] = {"seconds": {name: min(times) for name, times in runs.items() if times}}
    if "museval" in outputs:
        report["max_abs_diff_db_vs_museval"] = {
            name: max_difference(outputs["demixers"][name], outputs["museval"][name])
            for name in ("sdr", "isr", "sir", "sar")
        }
        museval_seconds = report["seconds"]["museval"]
        report["speedup_vs_museval"] = {
            "all_metrics": museval_seconds / report["seconds"]["demixers"],
            "sdr_only": museval_seconds / report["seconds"]["demixers_sdr_only"],
        }
    return report


def bench_v3(
    refs: np.ndarray, ests: np.ndarray, repeats: int, device: str, with_mir_eval: bool, with_fast: bool
) -> dict:
    refs_mono = np.ascontiguousarray(refs.transpose(2, 0, 1))  # (channels, sources, samples)
    ests_mono = np.ascontiguousarray(ests.transpose(2, 0, 1))
    runs: dict[str, list[float]] = {
        "demixers": [],
        "fast_bss_eval_numpy": [],
        "fast_bss_eval_torch": [],
        "mir_eval": [],
    }
    outputs: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}

    def ours() -> np.ndarray:
        return np.stack(
            [
                bss_eval(r, e, window=math.inf, version="v3", metrics=("sdr", "sir", "sar"), device=device)[
                    "sdr"
                ][:, 0]
                for r, e in zip(refs_mono, ests_mono, strict=True)
            ]
        )

    fast = None
    if with_fast and importlib.util.find_spec("fast_bss_eval") is not None:
        import fast_bss_eval as fast

    mir_separation = None
    if with_mir_eval and importlib.util.find_spec("mir_eval") is not None:
        import mir_eval.separation as mir_separation

    for _ in range(repeats):
        seconds, outputs["demixers"] = timed(ours)
        runs["demixers"].append(seconds)
        if fast is not None:
            # numpy backend: fast_bss_eval 0.1.4 predates numpy 2's solve() broadcasting rules and may fail
            try:
                seconds, value = timed(
                    lambda: fast.bss_eval_sources(
                        refs_mono, ests_mono, use_cg_iter=None, compute_permutation=False
                    )
                )
            except ValueError as error:
                errors["fast_bss_eval_numpy"] = f"{type(error).__name__}: {error}"
            else:
                runs["fast_bss_eval_numpy"].append(seconds)
                outputs["fast_bss_eval_numpy"] = np.asarray(value[0])
            refs_tensor, ests_tensor = torch.from_numpy(refs_mono), torch.from_numpy(ests_mono)
            seconds, value = timed(
                lambda r=refs_tensor, e=ests_tensor: fast.bss_eval_sources(
                    r, e, use_cg_iter=None, compute_permutation=False
                )
            )
            runs["fast_bss_eval_torch"].append(seconds)
            outputs["fast_bss_eval_torch"] = value[0].numpy()
        if mir_separation is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                seconds, value = timed(
                    lambda: np.stack(
                        [
                            mir_separation.bss_eval_sources(r, e, compute_permutation=False)[0]
                            for r, e in zip(refs_mono, ests_mono, strict=True)
                        ]
                    )
                )
            runs["mir_eval"].append(seconds)
            outputs["mir_eval"] = value
    report: dict[str, Any] = {"seconds": {name: min(times) for name, times in runs.items() if times}}
    reference = "mir_eval" if "mir_eval" in outputs else None
    if reference:
        report["max_abs_sdr_diff_db_vs_mir_eval"] = {
            name: max_difference(value, outputs[reference])
            for name, value in outputs.items()
            if name != reference
        }
    if errors:
        report["errors"] = errors
    report["speedup_of_demixers"] = {
        name: seconds / report["seconds"]["demixers"]
        for name, seconds in report["seconds"].items()
        if name != "demixers"
    }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--durations", type=float, nargs="+", default=[30.0, 180.0], help="seconds of audio")
    parser.add_argument("--repeats", type=int, default=1, help="runs per tool (the fastest is kept)")
    parser.add_argument("--device", default="cpu", help="device for demixers (cpu, cuda)")
    parser.add_argument(
        "--museval-max-seconds", type=float, default=math.inf, help="skip museval above this duration"
    )
    parser.add_argument(
        "--mir-eval-max-seconds", type=float, default=math.inf, help="skip mir_eval above this duration"
    )
    parser.add_argument(
        "--fast-bss-eval-max-seconds",
        type=float,
        default=math.inf,
        help="skip fast_bss_eval above this duration (its full-length FFT correlations need ~0.13 GB "
        "per second of 4-source stereo audio)",
    )
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/bench_metrics.json"))
    args = parser.parse_args(argv)

    museval = load_museval_metrics()
    report: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(),
            "device": args.device,
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "setup": {"sources": SOURCES, "channels": CHANNELS, "sampling_rate": RATE, "repeats": args.repeats},
        "results": {},
    }
    rows = []
    for seconds in args.durations:
        refs, ests = make_signals(seconds)
        # warm-up (allocations, FFT plans) on a short excerpt
        bss_eval(refs[:, : 2 * RATE], ests[:, : 2 * RATE], window=RATE, device=args.device)
        v4 = bench_v4(refs, ests, museval, args.repeats, args.device, seconds <= args.museval_max_seconds)
        v3 = bench_v3(
            refs,
            ests,
            args.repeats,
            args.device,
            seconds <= args.mir_eval_max_seconds,
            seconds <= args.fast_bss_eval_max_seconds,
        )
        report["results"][f"{seconds:g}s"] = {"v4_framewise": v4, "v3_sources_whole_signal": v3}
        for name, value in v4["seconds"].items():
            rows.append((f"{seconds:g} s", "v4 framewise", name, value, v4.get("speedup_vs_museval", {})))
        for name, value in v3["seconds"].items():
            rows.append((f"{seconds:g} s", "v3 sources", name, value, None))
        print(json.dumps(report["results"][f"{seconds:g}s"], indent=1), flush=True)

    print(f"\n{'audio':>7} | {'metric':<13} | {'tool':<20} | {'seconds':>8}")
    print("-" * 60)
    for duration, kind, name, value, _ in rows:
        print(f"{duration:>7} | {kind:<13} | {name:<20} | {value:8.2f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
