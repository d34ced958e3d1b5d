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
    python benchmarks/profile_ops.py --model htdemucs --threads 1 --parts   # FLOPs and time per part
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


# -- HTDemucs: FLOPs and time per part (``--parts``) ------------------------------------------------

HTDEMUCS_PARTS = ("attention", "transformer_linears", "dconv", "encoder_decoder_convs", "other")


def _htdemucs_part(module_name: str, op_name: str) -> str:
    """The part of HTDemucs a counted op belongs to (module path as FlopCounterMode names it)."""
    if "flash_attention" in op_name or "scaled_dot_product" in op_name:
        return "attention"
    if any(
        key in f".{module_name}."
        for key in (".crosstransformer.", "channel_upsampler", "channel_downsampler")
    ):
        return "transformer_linears"
    if ".dconv." in f".{module_name}.":
        return "dconv"
    if "encoder" in module_name or "decoder" in module_name:
        return "encoder_decoder_convs"
    return "other"


def htdemucs_parts(torch, model, mixture, peak: float) -> dict:
    """FLOPs (``FlopCounterMode``, CPU flash attention included) and CPU time of each HTDemucs part.

    Times: one forward with ``time.process_time()`` read around the DConv modules, the
    cross-domain transformer (forward hooks) and every ``F.scaled_dot_product_attention`` call
    (run this at 1 thread, so CPU time is the forward's own time whatever the load; the
    profiler's per-op times are wall clock, inflated when the process waits for a core). The
    transformer's linears get the transformer's time minus its attention. ``encoder_decoder_convs``
    is the rest of the forward (convolutions, norms, GLUs, STFT / iSTFT and glue).
    """
    from torch.utils import flop_counter

    aten = torch.ops.aten
    custom = {
        aten._scaled_dot_product_flash_attention_for_cpu: (
            lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(q, k, v)
        )
    }
    flops = dict.fromkeys(HTDEMUCS_PARTS, 0)
    counter = flop_counter.FlopCounterMode(display=False, custom_mapping=custom)
    with torch.inference_mode(), counter:
        model(input_values=mixture)
    # FlopCounterMode counts every op once per enclosing module: keep the innermost module per op
    # by subtracting each module's children (only leaf-level counts are assigned to parts).
    counts = counter.get_flop_counts()
    for module_name, ops in counts.items():
        if module_name == "Global":
            continue
        children = [
            name
            for name in counts
            if name.startswith(module_name + ".") and _is_direct_child(name, module_name, counts)
        ]
        for op, value in ops.items():
            own = value - sum(counts[child].get(op, 0) for child in children)
            if own:
                flops[_htdemucs_part(module_name, str(op))] += own
    total_flops = counter.get_total_flops()
    flops["other"] += total_flops - sum(flops.values())

    spans: dict[str, float] = {"dconv": 0.0, "transformer": 0.0}
    starts: dict[int, float] = {}

    def before(module, args):
        starts[id(module)] = time.process_time()

    def after_factory(key: str):
        def after(module, args, output):
            spans[key] += time.process_time() - starts.pop(id(module))

        return after

    handles = []
    for name, module in model.named_modules():
        if name.endswith(".dconv") or name == "crosstransformer" or name.endswith(".crosstransformer"):
            key = "transformer" if name.endswith("crosstransformer") else "dconv"
            handles.append(module.register_forward_pre_hook(before))
            handles.append(module.register_forward_hook(after_factory(key)))
    functional = torch.nn.functional
    attention_kernel = functional.scaled_dot_product_attention
    attention = 0.0

    def timed_attention(*args, **kwargs):
        # the transformer calls F.scaled_dot_product_attention through the module attribute
        nonlocal attention
        begin = time.process_time()
        result = attention_kernel(*args, **kwargs)
        attention += time.process_time() - begin
        return result

    functional.scaled_dot_product_attention = timed_attention
    try:
        with torch.inference_mode():
            start = time.process_time()
            model(input_values=mixture)
            forward = time.process_time() - start
    finally:
        functional.scaled_dot_product_attention = attention_kernel
        for handle in handles:
            handle.remove()
    seconds = {
        "attention": attention,
        "transformer_linears": spans["transformer"] - attention,
        "dconv": spans["dconv"],
        "encoder_decoder_convs": forward - spans["transformer"] - spans["dconv"],
    }
    parts = {}
    for part in HTDEMUCS_PARTS:
        entry = {"gflop": round(flops[part] / 1e9, 2), "share_of_flops": round(flops[part] / total_flops, 3)}
        if part in seconds:
            entry["cpu_s"] = round(seconds[part], 3)
            entry["share_of_time"] = round(seconds[part] / forward, 3)
            if seconds[part] > 0 and flops[part]:
                achieved = flops[part] / seconds[part] / 1e9
                entry["achieved_gflops"] = round(achieved, 1)
                entry["fraction_of_matmul_bound"] = round(achieved / peak, 3)
        parts[part] = entry
    parts["forward_cpu_s"] = round(forward, 3)
    parts["total_gflop"] = round(total_flops / 1e9, 1)
    parts["notes"] = (
        "encoder_decoder_convs time includes the STFT/iSTFT, norms and glue; 'other' FLOPs are the "
        "ops outside the named modules (STFT is not counted by FlopCounterMode)"
    )
    return parts


def _is_direct_child(child: str, parent: str, counts: dict) -> bool:
    """Whether ``child`` is a direct sub-module of ``parent`` among the counted modules."""
    rest = child[len(parent) + 1 :]
    prefixes = [parent + "." + rest[:index] for index, char in enumerate(rest) if char == "."]
    return not any(prefix in counts for prefix in prefixes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["mossformer", "htdemucs"], default="mossformer")
    parser.add_argument("--seconds", type=float, default=10.0, help="mossformer: whole-file length")
    parser.add_argument("--batch", type=int, default=1, help="htdemucs: segments per forward")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--threads-scaling", type=int, default=None, help="also time with this many threads")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--parts", action="store_true", help="htdemucs: FLOPs and CPU time per part")
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
    if args.parts and args.model == "htdemucs":
        torch.set_num_threads(args.threads)
        result["parts"] = htdemucs_parts(torch, model, mixture, peak)
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
