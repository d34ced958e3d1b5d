"""Where the time of one forward goes: the top operators, the FLOPs and the fraction of the matmul bound.

For the released MossFormer (whole file of ``--seconds``) or HTDemucs (``--batch`` segments),
random weights, this runs one untimed warm-up forward, then one forward under ``torch.profiler``
(top ``--top`` operators by self CPU time) and one plain timed forward. FLOPs are counted with
``torch.utils.flop_counter`` (matmuls, convolutions, attention; element-wise work is not
counted); the bound is the measured fp32 throughput of a large square matmul with the same
threads, so ``FLOPs / time / peak`` is the fraction of the matmul bound the forward reaches.

Usage::

    python benchmarks/profile_ops.py --model mossformer --seconds 10 --threads 1
    python benchmarks/profile_ops.py --model htdemucs --threads 1 --threads-scaling 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]


def matmul_peak(torch, size: int = 2048, repeats: int = 5) -> float:
    """Best fp32 GFLOP/s of a ``size``-square matmul over ``repeats`` runs."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2 * size**3 / (time.perf_counter() - start) / 1e9)
    return best


def build(model_name: str, seconds: float, batch: int):
    import torch

    import demixers

    torch.manual_seed(0)
    if model_name == "mossformer":
        model = demixers.MossFormerForSourceSeparation(demixers.MossFormerConfig()).eval()
        return model, 0.1 * torch.randn(1, 1, int(seconds * 8000))
    config = demixers.HTDemucsConfig()
    model = demixers.HTDemucsForSourceSeparation(config).eval()
    return model, 0.1 * torch.randn(batch, 2, int(config.segment_length))


def timed_forward(torch, model, mixture) -> float:
    with torch.inference_mode():
        start = time.perf_counter()
        model(input_values=mixture)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mossformer", "htdemucs"], default="mossformer")
    parser.add_argument("--seconds", type=float, default=10.0, help="mossformer: whole-file length")
    parser.add_argument("--batch", type=int, default=1, help="htdemucs: segments per forward")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--threads-scaling", type=int, default=None, help="also time with this many threads")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    torch.set_num_threads(args.threads)
    load = [round(os.getloadavg()[0], 2)]
    model, mixture = build(args.model, args.seconds, args.batch)
    peak = matmul_peak(torch)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(input_values=mixture)  # also the warm-up
    flops = counter.get_total_flops()
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as profiler:
        model(input_values=mixture)
    events = sorted(profiler.key_averages(), key=lambda event: event.self_cpu_time_total, reverse=True)
    total = sum(event.self_cpu_time_total for event in events)
    top = [
        {
            "op": event.key,
            "self_s": round(event.self_cpu_time_total / 1e6, 3),
            "share": round(event.self_cpu_time_total / total, 3),
        }
        for event in events[: args.top]
    ]
    seconds = timed_forward(torch, model, mixture)
    result = {
        "command": "python benchmarks/profile_ops.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": args.model,
        "input_shape": list(mixture.shape),
        "threads": args.threads,
        "forward_s": round(seconds, 3),
        "gflop": round(flops / 1e9, 1),
        "matmul_peak_gflops": round(peak, 1),
        "achieved_gflops": round(flops / seconds / 1e9, 1),
        "fraction_of_matmul_bound": round(flops / seconds / 1e9 / peak, 3),
        "top_ops": top,
    }
    if args.threads_scaling:
        torch.set_num_threads(args.threads_scaling)
        timed_forward(torch, model, mixture)
        scaled = timed_forward(torch, model, mixture)
        result[f"forward_s_{args.threads_scaling}_threads"] = round(scaled, 3)
        result["thread_speedup"] = round(seconds / scaled, 2)
    load.append(round(os.getloadavg()[0], 2))
    result["load_average_before_after"] = load
    print(json.dumps(result, indent=2))
    if args.output is not None:
        temporary = args.output.with_name(f".{args.output.name}.tmp")
        temporary.write_text(json.dumps(result, indent=2) + "\n")
        os.replace(temporary, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
