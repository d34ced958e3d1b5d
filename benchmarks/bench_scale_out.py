"""Throughput of `demixers separate` as a job: 1 vs N processes on a folder, and the dataset mode.

The benchmark writes a folder of ``--files`` speech-like mixtures (two sines and noise, 8 kHz mono,
``--seconds`` each, 16-bit wav; lengths vary by +-25 % so the duration balancing has work to do)
and separates it with the bundled default model (or ``--model``), each run in a fresh subprocess:

* ``folder``, 1 process: ``demixers separate FOLDER -o OUT --manifest -q``;
* ``folder``, N processes: ``demixers separate FOLDER -o OUT --num-processes N -q`` (Accelerate's
  launcher; on CPU gloo with ``ACCELERATE_USE_CPU``);
* ``dataset``: the same audio as FLAC bytes in a saved dataset, ``demixers separate --dataset D
  --split test --output-dataset OUT`` (1 process, and N with ``--dataset-processes``).

Every process runs torch on ``--threads`` threads (default 1: N processes on N cores). Figures come
from the job's own ``summary.json`` (separation time: from after the model is loaded and the inputs
planned to the last rank's end, so start-up is excluded) and from the command's wall time
(start-up included). The scaling factor is the N-process audio throughput over the 1-process one;
``audio-hours/hour per process`` is what each process delivers. The load average of the machine
(shared) is printed before and after.

Usage::

    python benchmarks/bench_scale_out.py                        # 16 files x 30 s, 1 vs 2 processes
    python benchmarks/bench_scale_out.py --files 8 --seconds 20 --processes 2 --json out.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RATE = 8000


def write_inputs(folder: Path, files: int, seconds: float) -> list[Path]:
    import soundfile

    folder.mkdir(parents=True)
    generator = np.random.default_rng(0)
    paths = []
    for index in range(files):
        length = seconds * (0.75 + 0.5 * index / max(1, files - 1))
        t = np.arange(int(length * RATE)) / RATE
        mixture = 0.3 * np.sin(2 * np.pi * (200 + 13 * index) * t) + 0.2 * np.sin(2 * np.pi * 1300 * t)
        mixture += 0.02 * generator.standard_normal(t.shape)
        path = folder / f"item_{index:03d}.wav"
        soundfile.write(path, mixture.astype(np.float32), RATE, subtype="PCM_16")
        paths.append(path)
    return paths


def write_dataset(folder: Path, inputs: list[Path]) -> None:
    import soundfile
    from datasets import Audio, Dataset, DatasetDict
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    cells = []
    for path in inputs:
        audio, rate = soundfile.read(path, dtype="int16")
        buffer = io.BytesIO()
        soundfile.write(buffer, audio, rate, format="FLAC", subtype="PCM_16")
        cells.append({"bytes": buffer.getvalue(), "path": None})
    dataset = Dataset.from_dict({"id": [path.stem for path in inputs], "mixture": cells})
    DatasetDict({"test": dataset.cast_column("mixture", Audio(decode=False))}).save_to_disk(str(folder))


def run_job(arguments: list[str], summary_dir: Path, threads: int) -> dict[str, Any]:
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": str(ROOT / "src"),
    }
    command = [sys.executable, "-m", "demixers", "separate", *arguments, "-q"]
    started = time.monotonic()
    completed = subprocess.run(command, env=environment, capture_output=True, text=True)
    wall = time.monotonic() - started
    if completed.returncode != 0:
        tail = completed.stderr[-3000:]
        raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}):\n{tail}")
    summary = json.loads((summary_dir / ".demixers_separate" / "summary.json").read_text())
    audio_hours = summary["audio_hours"]
    return {
        "command": " ".join(["demixers", "separate", *arguments, "-q"]),
        "processes": summary["num_processes"],
        "items": summary["done"],
        "audio_hours": audio_hours,
        "separation_seconds": summary["wall_seconds"],
        "command_seconds": wall,
        "audio_hours_per_hour": audio_hours * 3600 / summary["wall_seconds"],
        "audio_hours_per_hour_per_process": summary["audio_hours_per_hour_per_process"],
        "audio_hours_per_hour_with_startup": audio_hours * 3600 / wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=30.0, help="mean length of a file")
    parser.add_argument("--processes", type=int, default=2, help="the multi-process run's process count")
    parser.add_argument("--dataset-processes", type=int, nargs="*", default=[1], help="dataset-mode runs")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--model", default=None, help="model folder (default: the bundled default model)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    model = ["-m", args.model] if args.model else []
    load_before = os.getloadavg()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-out-") as temporary:
        work = Path(temporary)
        inputs = write_inputs(work / "inputs", args.files, args.seconds)
        for processes in (1, args.processes):
            out = work / f"folder-{processes}"
            job = ["--manifest"] if processes == 1 else ["--num-processes", str(processes)]
            result = run_job([str(work / "inputs"), "-o", str(out), *model, *job], out, args.threads)
            results.append({"mode": "folder", **result})
            shutil.rmtree(out)
        write_dataset(work / "dataset", inputs)
        for processes in args.dataset_processes:
            out = work / f"dataset-{processes}"
            job = ["--num-processes", str(processes)] if processes > 1 else []
            arguments = ["--dataset", str(work / "dataset"), "--split", "test", "--output-dataset", str(out)]
            result = run_job([*arguments, *model, *job], out, args.threads)
            results.append({"mode": "dataset", **result})
    load_after = os.getloadavg()

    single = next(r for r in results if r["mode"] == "folder" and r["processes"] == 1)
    multiple = next(r for r in results if r["mode"] == "folder" and r["processes"] == args.processes)
    scaling = multiple["audio_hours_per_hour"] / single["audio_hours_per_hour"]
    print(f"cpu cores: {os.cpu_count()}, torch threads per process: {args.threads}")
    print(f"load average (1/5/15 min) before: {load_before}, after: {load_after}")
    print(
        "| mode | processes | items | audio h | separation s | audio-h/h | per process "
        "| with start-up (command s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['mode']} | {r['processes']} | {r['items']} | {r['audio_hours']:.4f} | "
            f"{r['separation_seconds']:.1f} | {r['audio_hours_per_hour']:.1f} | "
            f"{r['audio_hours_per_hour_per_process']:.1f} | {r['audio_hours_per_hour_with_startup']:.1f} "
            f"({r['command_seconds']:.1f} s) |"
        )
    print(f"scaling factor, {args.processes} vs 1 process (separation throughput): {scaling:.2f}x")
    if args.json is not None:
        report = {
            "results": results,
            "scaling": scaling,
            "load_before": load_before,
            "load_after": load_after,
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
        }
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
