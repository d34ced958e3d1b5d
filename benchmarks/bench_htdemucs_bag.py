"""Speed of an ``htdemucs_ft``-like bag (4 released-size HTDemucs members) against demucs' ``apply_model``.

``bench_inference.py`` measures single models; this script measures a bag the way ``htdemucs_ft``
is shipped: four members of the released HTDemucs architecture (random weights, one seed each), one-hot
per-source weights (each member owns one source). The reference is ``demucs.apply.apply_model`` on a
``BagOfModels`` of the demucs models, ours the ``audio-source-separation`` pipeline on the converted
`DemucsBagForSourceSeparation` (input normalisation off, as the bare ``apply_model`` call), with the
shift offsets the pipeline draws served to ``apply_model``. Each measurement runs in a fresh worker
process (ours and the reference alternate between repeats); the outputs are compared, and the
FLOPs (one member's forward counted by ``FlopCounterMode``, times the forwards of every member) give
the fraction of the matmul bound measured by ``bench_inference.py``'s matmul worker.

Usage::

    python benchmarks/bench_htdemucs_bag.py --seconds 10 --repeats 1 --threads 1 \\
        --output benchmarks/results/inference_htdemucs_ft_bag_10s_t1.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(ROOT / "benchmarks")]

import bench_inference as common  # noqa: E402  (after the path setup)

MEMBERS = 4


def build_bag(folder: Path, tiny: bool) -> dict[str, Any]:
    """Reference bag (demucs) and its conversion (ours), random weights, one seed per member."""
    import torch
    from demucs.apply import BagOfModels
    from demucs.htdemucs import HTDemucs

    from demixers.modeling.demucs import DemucsBagConfig, DemucsBagForSourceSeparation
    from demixers.modeling.demucs.convert_demucs_original_to_hf import model_from_package

    folder.mkdir(parents=True, exist_ok=True)
    kwargs = common.TINY_HTDEMUCS_KWARGS if tiny else common.RELEASED_HTDEMUCS_KWARGS
    references, members = [], []
    for seed in range(MEMBERS):
        torch.manual_seed(seed)
        reference = HTDemucs(common.HTDEMUCS_SOURCES, **kwargs).eval()
        args, init_kwargs = reference._init_args_kwargs
        package = {"klass": "demucs.htdemucs.HTDemucs", "args": args, "kwargs": init_kwargs}
        members.append(model_from_package({**package, "state": reference.state_dict()}, "benchmark weights"))
        references.append(reference)
    weights = [[1.0 if row == column else 0.0 for column in range(MEMBERS)] for row in range(MEMBERS)]
    bag_reference = BagOfModels(references, weights=weights)
    torch.save(bag_reference.state_dict(), folder / "reference.pt")
    config = DemucsBagConfig(
        models=[member.config.architecture_dict() for member in members], weights=weights
    )
    bag = DemucsBagForSourceSeparation(config).eval()
    bag.load_state_dict(bag_reference.state_dict())
    bag.save_pretrained(folder / "ours")
    stored = {
        key: (str(value) if not isinstance(value, (int, float, list)) else value)
        for key, value in kwargs.items()
    }
    return {
        "reference_kwargs": stored,
        "reference_state": str(folder / "reference.pt"),
        "ours": str(folder / "ours"),
        "weights": weights,
    }


def _load_reference_bag(torch, setup: dict[str, Any]):
    from fractions import Fraction

    from demucs.apply import BagOfModels
    from demucs.htdemucs import HTDemucs

    kwargs = {
        key: (Fraction(value) if key == "segment" else value)
        for key, value in setup["reference_kwargs"].items()
    }
    models = [HTDemucs(common.HTDEMUCS_SOURCES, **kwargs) for _ in range(MEMBERS)]
    bag = BagOfModels(models, weights=setup["weights"])
    bag.load_state_dict(torch.load(setup["reference_state"], weights_only=True))
    return bag.eval()


def bag_shift_offsets(bag_folder: str, shifts: int, seed: int) -> list[list[int]]:
    """The shift offsets the pipeline draws for each member (apply_model draws them member by member)."""
    from demixers.modeling.demucs import DemucsBagConfig
    from demixers.pipelines.chunking import resolve_chunk_settings, shift_offsets

    config = DemucsBagConfig.from_pretrained(bag_folder)
    settings = resolve_chunk_settings(config, shifts=shifts, seed=seed)
    return [list(member) for member in shift_offsets(config.sampling_rate, settings, len(config.weights))]


def run_bag_variant(task: dict[str, Any]) -> dict[str, Any]:
    """Worker: load one variant, run it once on the task's input, time it and save its output."""
    import torch

    torch.set_num_threads(task["threads"])
    setup, variant = task["setup"], task["variant"]
    mixture = np.load(task["input"]["npy"])
    offsets = bag_shift_offsets(setup["ours"], task["shifts"], task["seed"])
    if variant == "reference":
        import demucs.apply
        from demucs.apply import apply_model

        model = _load_reference_bag(torch, setup)
        tensor = torch.from_numpy(mixture)[None]
        flat = [offset for member in offsets for offset in member]

        def run() -> np.ndarray:
            demucs.apply.random = common._ServedRandom(flat)
            with torch.no_grad():
                out = apply_model(model, tensor, shifts=task["shifts"], overlap=task["overlap"], device="cpu")
            return out[0].numpy()

    else:
        from transformers import pipeline

        from demixers.modeling.demucs import DemucsBagForSourceSeparation

        model = DemucsBagForSourceSeparation.from_pretrained(setup["ours"]).eval()
        model.config.normalize_input = False  # as the bare apply_model call of the reference
        rate = model.config.sampling_rate
        separator = pipeline("audio-source-separation", model=model, device="cpu")

        def run() -> np.ndarray:
            stems = separator(
                mixture, sampling_rate=rate, overlap=task["overlap"], shifts=task["shifts"], seed=task["seed"]
            )
            return np.stack([stem["audio"] for stem in stems])

    load_before = os.getloadavg()[0]
    base_rss = common._current_rss_mib()
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    output = run()
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    np.save(task["save_output"], np.ascontiguousarray(output, dtype=np.float32))
    return {
        "wall_s": round(wall, 4),
        "cpu_s": round(cpu, 4),
        "base_rss_mib": round(base_rss, 1),
        "peak_rss_mib": round(common._peak_rss_mib(), 1),
        "threads": torch.get_num_threads(),
        "shift_offsets": offsets,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def _run_worker(task: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(task)]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=common._env(), check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-15:])
    return {"error": f"exit {completed.returncode}: {tail}"}


def member_forward_flops(bag_folder: str) -> tuple[int, int]:
    """FLOPs of one forward of the first member on its segment (`bench_inference._flop_counter`)."""
    import torch

    from demixers.modeling.demucs import DemucsBagForSourceSeparation

    member = DemucsBagForSourceSeparation.from_pretrained(bag_folder).models[0].eval()
    segment = member.config.segment_length
    mixture = 0.1 * torch.randn(1, 2, segment, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), common._flop_counter(torch) as counter:
        member(input_values=mixture)
    return counter.get_total_flops(), segment


def main_parent(args: argparse.Namespace) -> int:
    started = datetime.datetime.now(datetime.timezone.utc)
    scratch = Path(tempfile.mkdtemp(prefix="bench_bag_"))
    base = {"threads": args.threads, "device": "cpu", "dtype": "fp32"}
    payload: dict[str, Any] = {
        "date": started.isoformat(timespec="seconds"),
        "command": " ".join(["python", "benchmarks/bench_htdemucs_bag.py", *sys.argv[1:]]),
        "machine": common.machine_info(),
        "settings": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()
            if key != "worker"
        },
    }
    try:
        setup = build_bag(scratch / "bag", args.tiny)
        payload["matmul"] = [common.run_worker({**base, "kind": "matmul"}, args.timeout)]
        print(f"matmul throughput: {payload['matmul'][0]}", flush=True)
        info = common.write_input("htdemucs", args.seconds, scratch, need_wav=False)
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "reference": []}
        for repeat in range(args.repeats):
            for variant in ("ours", "reference") if repeat % 2 == 0 else ("reference", "ours"):
                task = {
                    **base, "setup": setup, "variant": variant, "input": info, "shifts": args.shifts,
                    "overlap": args.overlap, "seed": args.seed,
                    "save_output": str(scratch / f"out_{variant}_{repeat}.npy"),
                }  # fmt: skip
                measured = _run_worker(task, args.timeout)
                measured["repeat"] = repeat
                runs[variant].append(measured)
                print(
                    f"bag {args.seconds:g}s repeat {repeat} {variant}: {json.dumps(measured)[:300]}",
                    flush=True,
                )
        payload["runs"] = runs
        payload["comparison_with_reference"] = common.compare_outputs(
            scratch / "out_ours_0.npy", scratch / "out_reference_0.npy", False
        )
        flops, segment = member_forward_flops(setup["ours"])
        offsets = runs["ours"][0].get("shift_offsets") or bag_shift_offsets(
            setup["ours"], args.shifts, args.seed
        )
        forwards = sum(
            common.htdemucs_forwards(info["samples"], 44100, segment, args.overlap, member)
            for member in offsets
        )
        payload["matmul"].append(common.run_worker({**base, "kind": "matmul"}, args.timeout))
        peak = max(entry.get("best_gflops_wall", 0.0) for entry in payload["matmul"] if "error" not in entry)
        payload.update(
            gflop_per_member_forward=round(flops / 1e9, 1),
            forwards=forwards,
            gflop=round(flops * forwards / 1e9, 1),
            matmul_peak_gflops=peak,
        )
        summary: dict[str, Any] = {}
        for variant, entries in runs.items():
            good = [entry for entry in entries if "error" not in entry]
            if not good:
                continue
            wall = statistics.median(entry["wall_s"] for entry in good)
            cpu = statistics.median(entry["cpu_s"] for entry in good)
            summary[variant] = {
                "wall_s": round(wall, 3),
                "cpu_s": round(cpu, 3),
                "rtf_wall": round(wall / args.seconds, 4),
                "peak_rss_mib": max(entry["peak_rss_mib"] for entry in good),
                "achieved_gflops_cpu": round(flops * forwards / cpu / 1e9, 2),
                "fraction_of_matmul_peak_cpu": round(flops * forwards / cpu / 1e9 / peak, 4)
                if peak
                else None,
            }
        if "ours" in summary and "reference" in summary:
            summary["ratio_wall_ours_vs_reference"] = round(
                summary["ours"]["wall_s"] / summary["reference"]["wall_s"], 3
            )
            summary["ratio_cpu_ours_vs_reference"] = round(
                summary["ours"]["cpu_s"] / summary["reference"]["cpu_s"], 3
            )
        payload["summary"] = summary
    finally:
        payload["machine"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
        payload["elapsed_s"] = round(
            (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds(), 1
        )
        shutil.rmtree(scratch, ignore_errors=True)
        text = json.dumps(payload, indent=2) + "\n"
        print(text)
        if args.output is not None:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            staging = args.output.with_name(f".{args.output.name}.tmp")
            staging.write_text(text)
            os.replace(staging, args.output)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--shifts", type=int, default=1, help="apply_model's default is 1")
    parser.add_argument("--overlap", type=float, default=0.25, help="apply_model's default")
    parser.add_argument("--seed", type=int, default=0, help="the pipeline's shift seed")
    parser.add_argument("--tiny", action="store_true", help="tiny members (smoke test)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per worker, seconds")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        result = run_bag_variant(json.loads(args.worker))
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    return main_parent(args)


if __name__ == "__main__":
    sys.exit(main())
