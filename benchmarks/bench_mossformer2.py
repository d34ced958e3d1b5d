"""MossFormer2 inference speed against ModelScope's reference, FLOPs, and streaming memory.

At the released size (55.7M parameters, 8 kHz, 2 speakers) this benchmark

* builds ModelScope's ``MossFormer2`` (``modelscope/models/audio/separation/m2``, loaded with the
  test suite's stand-ins for its heavy imports), perturbs every weight
  (``tests/modeling/parity_utils.py``), saves it in the release's layout and converts it with
  ``demixers convert modelscope-mossformer2``: both sides hold the same weights;
* times both on the whole file, in one process, alternating which runs first in each repeat:
  ``reference`` (ModelScope's forward under ``torch.no_grad``, as its pipeline runs it) and
  ``ours`` (`MossFormer2ForSourceSeparation` under ``torch.inference_mode``). The ratio
  ours/reference is taken within each repeat (wall and CPU time) and its median reported, so slow
  drifts of a shared machine's load hit both sides alike; the load average is stored with each
  measurement. Both outputs are compared (max |ours - reference| / max |reference|);
* counts the FLOPs of one forward of each on a short input with ``torch.utils.flop_counter``
  (matmuls and convolutions; element-wise work is not counted; the counter is the one of
  ``bench_inference.py``, whose op checks are repeated here) and scales them to each length; the
  machine's dense fp32 matmul throughput is measured with the same threads, and each timing is
  shown as achieved GFLOP/s and as a fraction of that bound;
* runs ``demixers separate`` (the streaming CLI: speech chunking, stems written as they are
  produced) on float wavs of ``--stream-lengths`` seconds, each in a fresh subprocess, and reports
  its peak RSS (``VmHWM``): flat in the length.

Usage::

    python benchmarks/bench_mossformer2.py --lengths 10 60 --threads 1 \\
        --output benchmarks/results/mossformer2_threads1.json
    python benchmarks/bench_mossformer2.py --tiny --lengths 1 --stream-lengths 2 4   # smoke test
    python benchmarks/bench_mossformer2.py --report benchmarks/results/mossformer2_threads1.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "src", ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

RATE = 8000
TINY_OVERRIDES: dict[str, Any] = {"in_channels": 32, "out_channels": 32, "num_blocks": 2}


def _load() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def _env(threads: int) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def build_models(folder: Path, tiny: bool) -> tuple[Any, Any, Path]:
    """The perturbed reference, and ours converted from its release-layout files."""
    from tests.modeling.mossformer2.references import (
        MODELSCOPE_RELEASE_KWARGS,
        build_modelscope_reference,
        save_modelscope_layout,
    )
    from tests.modeling.parity_utils import perturb_parameters

    from demixers import MossFormer2ForSourceSeparation
    from demixers.modeling.mossformer2.convert_mossformer2_original_to_hf import convert_modelscope_checkpoint

    overrides = TINY_OVERRIDES if tiny else {}
    reference = perturb_parameters(build_modelscope_reference(**overrides), seed=0)
    release = save_modelscope_layout(
        reference, folder / "release", {**MODELSCOPE_RELEASE_KWARGS, **overrides}
    )
    ours_folder = convert_modelscope_checkpoint(release, folder / "ours")
    ours = MossFormer2ForSourceSeparation.from_pretrained(ours_folder).eval()
    return reference, ours, ours_folder


def mixture_of(seconds: float, seed: int = 0):
    import torch
    from tests.audio_fixtures import speech_like_mixture

    return torch.from_numpy(speech_like_mixture(seconds, RATE, seed=seed))  # (1, time)


def count_flops(torch, reference, ours, seconds: float) -> dict[str, Any]:
    from bench_inference import _flop_counter, check_flop_counter

    mixture = mixture_of(seconds, seed=1)
    with torch.inference_mode():
        with _flop_counter(torch) as counter:
            ours(input_values=mixture)
        ours_flops = counter.get_total_flops()
        with _flop_counter(torch) as counter:
            reference(mixture)
        reference_flops = counter.get_total_flops()
    return {
        "checks": check_flop_counter(torch),
        "input_seconds": seconds,
        "ours_gflop_per_audio_second": ours_flops / seconds / 1e9,
        "reference_gflop_per_audio_second": reference_flops / seconds / 1e9,
    }


def time_one(torch, function) -> dict[str, Any]:
    load_before = _load()
    wall, cpu = time.perf_counter(), time.process_time()
    output = function()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "load_average_before": load_before,
        "load_average_after": _load(),
    }, output


def time_length(torch, reference, ours, seconds: float, repeats: int) -> dict[str, Any]:
    from tests.modeling.mossformer2.references import modelscope_separate
    from tests.modeling.parity_utils import relative_max_difference

    mixture = mixture_of(seconds)
    variants = {
        "ours": lambda: _ours(torch, ours, mixture),
        "reference": lambda: modelscope_separate(reference, mixture),
    }
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "reference": []}
    outputs: dict[str, Any] = {}
    for repeat in range(repeats):
        order = ["ours", "reference"] if repeat % 2 == 0 else ["reference", "ours"]
        for name in order:
            measurement, outputs[name] = time_one(torch, variants[name])
            runs[name].append({**measurement, "repeat": repeat})
    ratios_wall = [o["wall_s"] / r["wall_s"] for o, r in zip(runs["ours"], runs["reference"], strict=True)]
    ratios_cpu = [o["cpu_s"] / r["cpu_s"] for o, r in zip(runs["ours"], runs["reference"], strict=True)]
    return {
        "seconds": seconds,
        "runs": runs,
        "ratio_wall": round(statistics.median(ratios_wall), 3),
        "ratio_cpu": round(statistics.median(ratios_cpu), 3),
        "ratios_wall": [round(r, 3) for r in ratios_wall],
        "max_relative_difference": relative_max_difference(outputs["ours"], outputs["reference"]),
    }


def _ours(torch, model, mixture):
    with torch.inference_mode():
        return model(input_values=mixture).audio_values


def stream_worker(wav: str, model: str, out_dir: str) -> None:
    """Child process: ``demixers separate`` on one file; prints its peak RSS and time as JSON."""
    from bench_inference import _current_rss_mib, _peak_rss_mib

    from demixers.cli import main as cli_main

    base = _current_rss_mib()
    wall, cpu = time.perf_counter(), time.process_time()
    code = cli_main(["separate", wav, "-m", model, "-o", out_dir, "-q", "--overwrite", "--bit-depth", "32"])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        "RESULT "
        + json.dumps(
            {
                "exit_code": code,
                "wall_s": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "base_rss_mib": round(base, 1),
                "peak_rss_mib": round(_peak_rss_mib(), 1),
            }
        )
    )


def measure_stream(model_folder: Path, seconds: float, scratch: Path, threads: int) -> dict[str, Any]:
    import soundfile

    wav = scratch / f"mixture_{seconds:g}s.wav"
    soundfile.write(wav, mixture_of(seconds, seed=2)[0].numpy(), RATE, subtype="FLOAT")
    load_before = _load()
    command = [sys.executable, str(Path(__file__).resolve()), "--stream-worker", str(wav), str(model_folder)]
    command.append(str(scratch / "stems"))
    completed = subprocess.run(command, capture_output=True, text=True, env=_env(threads), check=False)
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"stream worker failed: {completed.stderr[-2000:]}")
    wav.unlink()
    return {
        "seconds": seconds,
        **json.loads(lines[-1][7:]),
        "load_average_before": load_before,
        "load_average_after": _load(),
    }


def machine_info(torch) -> dict[str, Any]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def summarize(payload: dict[str, Any]) -> None:
    flops, bound = payload.get("flops"), payload.get("matmul")
    for entry in payload.get("lengths", []):
        for name, runs in entry["runs"].items():
            wall = statistics.median(run["wall_s"] for run in runs)
            cpu = statistics.median(run["cpu_s"] for run in runs)
            summary = {
                "median_wall_s": round(wall, 3),
                "median_cpu_s": round(cpu, 3),
                "rtf": round(wall / entry["seconds"], 3),
            }
            if flops:
                gflop = flops[f"{name}_gflop_per_audio_second"] * entry["seconds"]
                summary["gflop"] = round(gflop, 1)
                summary["achieved_gflops"] = round(gflop / wall, 2)
                # per CPU-second as well: on a shared machine wall time includes waiting for a core
                summary["achieved_gflops_cpu_time"] = round(gflop / cpu, 2)
                if bound:
                    summary["fraction_of_matmul_bound"] = round(gflop / wall / bound["best_gflops_wall"], 3)
                    summary["fraction_of_matmul_bound_cpu_time"] = round(
                        gflop / cpu / bound["median_gflops_cpu_time"], 3
                    )
            entry.setdefault("summary", {})[name] = summary


def render(payload: dict[str, Any]) -> str:
    lines = [
        f"MossFormer2 {'tiny' if payload['settings']['tiny'] else 'released size'}, "
        f"{payload['machine']['threads']} thread(s), matmul bound "
        f"{(payload.get('matmul') or {}).get('best_gflops_wall', 'n/a')} GFLOP/s",
        "length | variant   | wall s  | RTF   | GFLOP/s | of bound | CPU s   | GFLOP/CPU-s | of bound "
        "| ratio ours/ref (wall, cpu) | load avg (1 min)",
    ]
    for entry in payload.get("lengths", []):
        for name, summary in entry["summary"].items():
            loads = [run["load_average_before"][0] for run in entry["runs"][name]]
            ratio = f"{entry['ratio_wall']:.3f}, {entry['ratio_cpu']:.3f}" if name == "ours" else ""
            lines.append(
                f"{entry['seconds']:>5g}s | {name:<9} | {summary['median_wall_s']:>7.2f} | "
                f"{summary['rtf']:.3f} | "
                f"{summary.get('achieved_gflops', float('nan')):>7.2f} | "
                f"{summary.get('fraction_of_matmul_bound', float('nan')):>8.3f} | "
                f"{summary['median_cpu_s']:>7.2f} | "
                f"{summary.get('achieved_gflops_cpu_time', float('nan')):>11.2f} | "
                f"{summary.get('fraction_of_matmul_bound_cpu_time', float('nan')):>8.3f} | "
                f"{ratio:<26} | {loads}"
            )
        lines.append(f"       max |ours - ref| / max |ref| = {entry['max_relative_difference']:.3g}")
    for entry in payload.get("stream", []):
        lines.append(
            f"demixers separate {entry['seconds']:g}s: peak RSS {entry['peak_rss_mib']} MiB "
            f"(base {entry['base_rss_mib']} MiB), wall {entry['wall_s']} s, "
            f"load {entry['load_average_before'][0]}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=float, nargs="*", default=[10.0, 60.0], help="seconds of audio")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per length (order alternates)")
    parser.add_argument("--long-repeats", type=int, default=1, help="repeats for lengths above 30 s")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flops-seconds", type=float, default=2.0)
    parser.add_argument("--stream-lengths", type=float, nargs="*", default=[10.0, 60.0])
    parser.add_argument("--tiny", action="store_true", help="tiny models: a smoke test of the script")
    parser.add_argument("--output", default=None, help="JSON file to write the results to")
    parser.add_argument("--report", default=None, help="print the table of a saved JSON and exit")
    parser.add_argument("--stream-worker", nargs=3, metavar=("WAV", "MODEL", "OUT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stream_worker:
        stream_worker(*args.stream_worker)
        return 0
    if args.report:
        payload = json.loads(Path(args.report).read_text())
        summarize(payload)  # summaries of results saved by older versions of this script too
        print(render(payload))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from bench_inference import measure_matmul

    payload: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", "benchmarks/bench_mossformer2.py", *(argv or sys.argv[1:])]),
        "machine": machine_info(torch),
        "settings": vars(args),
        "load_average_at_start": _load(),
    }
    scratch = Path(tempfile.mkdtemp(prefix="bench_mossformer2_"))
    try:
        reference, ours, ours_folder = build_models(scratch, args.tiny)
        payload["parameters"] = sum(p.numel() for p in ours.parameters())
        payload["matmul"] = measure_matmul(torch, {"device": "cpu", "dtype": "fp32", "matmul_seconds": 3.0})
        payload["flops"] = count_flops(torch, reference, ours, args.flops_seconds)
        payload["lengths"], payload["stream"] = [], []
        for seconds in args.lengths:
            repeats = args.long_repeats if seconds > 30 else args.repeats
            payload["lengths"].append(time_length(torch, reference, ours, seconds, repeats))
            print(f"{seconds:g} s done: ratio {payload['lengths'][-1]['ratio_wall']}", flush=True)
            save(payload, args.output)  # partial results survive an interrupted long run
        for seconds in args.stream_lengths:
            payload["stream"].append(measure_stream(ours_folder, seconds, scratch, args.threads))
            save(payload, args.output)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    payload["load_average_at_end"] = _load()
    save(payload, args.output)
    print(render(payload))
    return 0


def save(payload: dict[str, Any], output: str | None) -> None:
    """Summarise and write ``payload`` to ``output`` (atomically: a temporary file, then a rename)."""
    summarize(payload)
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(json.dumps(payload, indent=1) + "\n")
        os.replace(temporary, path)


if __name__ == "__main__":
    raise SystemExit(main())
