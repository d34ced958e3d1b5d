"""Peak memory of `demixers separate` (streaming) and of the in-memory pipeline against length.

For each setting and length this benchmark writes a 16-bit wav at the model's rate, then runs,
each in a fresh subprocess whose peak RSS it reads from ``VmHWM`` in ``/proc/self/status``:

* ``cli``: ``demixers separate`` (``demixers.cli.main``, in-process there), which streams the
  file: read block by block, stems written as they are produced (float32 temporaries, then
  16-bit wav). Its peak must not grow with the length: the target is a 10 min / 1 min ratio
  <= 1.3.
* ``api``: ``pipeline("audio-source-separation", model)(path)``, which returns whole arrays by
  contract, so its peak grows by the input and output arrays (listed as ``arrays_mib``) while
  ``overhead_mib`` (peak minus baseline minus those arrays) should stay flat.

``baseline_mib`` is the subprocess's RSS after importing torch/transformers/demixers, before the
model is loaded; ``working_mib`` is peak minus baseline.

Settings (``--setting``):

* ``speech``: a tiny random MossFormer (8 kHz mono, 2 speakers), the speech defaults
  (8 s chunks, 50 % overlap) unless ``--segment``/``--overlap`` say otherwise;
* ``music``: the exactly additive toy model of ``tests/toy_models.py`` at 44.1 kHz stereo with 4
  stems (the music defaults, 10 s chunks, 25 % overlap); 10 minutes of its 4 stems are 808 MiB of
  float32, which the in-memory API must hold and the CLI must not;
* ``demucs``: a tiny random HTDemucs (8 kHz stereo to keep 10 min cheap on a CPU, 4 stems, the
  release's 7.8 s segment and
  apply_model's chunking policy: triangle weights, chunks centred in their context, whole-track
  normalisation, ``--shifts`` passes);
* ``bag``: a bag of two such HTDemucs with per-source weights (each member is one pass of the
  chunk engine; all passes advance together over the file).

Usage::

    python benchmarks/bench_pipeline_memory.py                       # both settings and modes, 1 and 10 min
    python benchmarks/bench_pipeline_memory.py --setting music --mode cli --minutes 1 10 --json out.json
    python benchmarks/bench_pipeline_memory.py --setting demucs bag --mode cli --shifts 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "speech": {"sampling_rate": 8000, "channels": 1, "sources": 2},
    "music": {"sampling_rate": 44100, "channels": 2, "sources": 4},
    "demucs": {"sampling_rate": 8000, "channels": 2, "sources": 4},
    "bag": {"sampling_rate": 8000, "channels": 2, "sources": 4},
}
# Tiny HTDemucs of the demucs/bag settings: the release's channels, stems and segment, at 8 kHz
# (the engine's buffers scale with the segment in samples, the compute with the rate).
TINY_HTDEMUCS = dict(
    sampling_rate=8000, channels=8, depth=3, nfft=512, t_layers=1, t_heads=2, bottom_channels=0
)


def build_model(setting: str, folder: Path) -> str:
    import torch

    import demixers

    torch.manual_seed(0)
    if setting == "speech":
        config = demixers.MossFormerConfig(
            encoder_kernel_size=16,
            encoder_stride=8,
            encoder_channels=32,
            hidden_size=32,
            num_hidden_layers=1,
            group_size=64,
            query_key_dim=16,
            expansion_factor=2.0,
            conv_kernel_size=5,
            max_rotary_dim=8,
        )
        model = demixers.MossFormerForSourceSeparation(config)
    elif setting in ("demucs", "bag"):
        from demixers.modeling.demucs import (
            DemucsBagConfig,
            DemucsBagForSourceSeparation,
            HTDemucsConfig,
            HTDemucsForSourceSeparation,
        )

        member = HTDemucsConfig(**TINY_HTDEMUCS)
        if setting == "demucs":
            model = HTDemucsForSourceSeparation(member)
        else:
            bag = DemucsBagConfig(
                models=[member.architecture_dict()] * 2, weights=[[1.0, 1.0, 1.0, 1.0], [1.0, 0.5, 1.0, 2.0]]
            )
            model = DemucsBagForSourceSeparation(bag)
    else:
        sys.path.insert(0, str(ROOT))
        from tests.toy_models import ToySplitterConfig, ToySplitterForSourceSeparation

        config = ToySplitterConfig(
            sampling_rate=44100, audio_channels=2, source_names=["drums", "bass", "other", "vocals"]
        )
        model = ToySplitterForSourceSeparation(config)
    model.eval().save_pretrained(folder)
    return str(folder)


def write_input(path: Path, minutes: float, sampling_rate: int, channels: int) -> int:
    """A 16-bit wav of band-limited noise plus tones, written block by block."""
    import soundfile

    total = int(minutes * 60 * sampling_rate)
    rng = np.random.default_rng(0)
    block = sampling_rate * 10
    with soundfile.SoundFile(
        path, "w", samplerate=sampling_rate, channels=channels, subtype="PCM_16"
    ) as handle:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (start + np.arange(n)) / sampling_rate
            tone = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1250 * t)
            noise = 0.05 * rng.standard_normal((n, channels))
            handle.write((tone[:, None] + noise).astype(np.float32))
    return total


def peak_rss_kib() -> int:
    """Peak RSS of this process's own address space (VmHWM). Not ``ru_maxrss``: Linux carries that
    over from the parent through (v)fork + exec, so a parent holding large inputs would leak its
    peak into the child's figure."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def child(args: argparse.Namespace) -> None:
    """Runs in the measured subprocess: separate one file, report peak RSS."""
    sys.path.insert(0, str(ROOT))
    from transformers import pipeline

    import demixers

    if args.setting == "music":
        from tests.toy_models import ToySplitterConfig, ToySplitterForSourceSeparation

        demixers.register_model_family(ToySplitterConfig, ToySplitterForSourceSeparation)
    from demixers.cli import main

    baseline = peak_rss_kib()
    options = {
        "segment": args.segment,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "shifts": args.shifts,
    }
    options = {key: value for key, value in options.items() if value is not None}
    start = time.perf_counter()
    if args.mode == "cli":
        argv = ["separate", args.input, "-m", args.model, "-o", args.output_dir, "-q", "--overwrite"]
        for option, value in options.items():
            argv += [f"--{option.replace('_', '-')}", str(value)]
        code = main(argv)
    else:
        stems = pipeline("audio-source-separation", model=args.model)(args.input, **options)
        code = 0 if all(stem["audio"].shape[-1] > 0 for stem in stems) else 1
        del stems
    seconds = time.perf_counter() - start
    peak = peak_rss_kib()
    print(json.dumps({"exit_code": code, "baseline_kib": baseline, "peak_kib": peak, "seconds": seconds}))


def parent(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as scratch:
        scratch_path = Path(scratch)
        for setting in args.setting:
            spec = SETTINGS[setting]
            model = build_model(setting, scratch_path / f"model_{setting}")
            for minutes in args.minutes:
                audio = scratch_path / f"{setting}_{minutes:g}min.wav"
                samples = write_input(audio, minutes, spec["sampling_rate"], spec["channels"])
                for mode in args.mode:
                    rows.append(measure(args, setting, mode, minutes, samples, audio, model, scratch_path))
                audio.unlink()

    for setting in args.setting:
        for mode in args.mode:
            mine = [row for row in rows if row["setting"] == setting and row["mode"] == mode]
            shortest, longest = mine[0], mine[-1]
            for row in mine:
                row["peak_ratio_to_shortest"] = round(row["peak_rss_mib"] / shortest["peak_rss_mib"], 3)
            print(
                f"{setting} {mode}: peak RSS ratio {longest['minutes']:g} min / "
                f"{shortest['minutes']:g} min = {longest['peak_rss_mib'] / shortest['peak_rss_mib']:.3f}"
            )

    header = ["setting", "mode", "minutes", "baseline_mib", "peak_rss_mib", "working_mib", "arrays_mib",
              "overhead_mib", "peak_ratio_to_shortest", "seconds"]  # fmt: skip
    print()
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for row in rows:
        print(" | ".join(str(row[key]) for key in header))
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "segment": args.segment,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "shifts": args.shifts,
        "cpu_count": os.cpu_count(),
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"\nwrote {args.json}")


def measure(
    args: argparse.Namespace,
    setting: str,
    mode: str,
    minutes: float,
    samples: int,
    audio: Path,
    model: str,
    scratch: Path,
) -> dict:
    spec = SETTINGS[setting]
    command = [
        sys.executable, __file__, "--child", "--setting", setting, "--mode", mode, "--input", str(audio),
        "--model", model, "--output-dir", str(scratch / "out"),
    ]  # fmt: skip
    for option in ("segment", "overlap", "batch_size", "shifts"):
        value = getattr(args, option)
        if value is not None:
            command += [f"--{option.replace('_', '-')}", str(value)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        sys.exit(f"child failed for {setting} {mode} {minutes} min:\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if report["exit_code"] != 0:
        sys.exit(f"separation failed for {setting} {mode} {minutes} min:\n{result.stderr[-3000:]}")
    # float32 arrays the in-memory API holds: the model-rate input and the stems (the CLI holds neither)
    input_mib = samples * spec["channels"] * 4 / 2**20
    arrays_mib = input_mib * (1 + spec["sources"]) if mode == "api" else 0.0
    peak_mib = report["peak_kib"] / 1024
    baseline_mib = report["baseline_kib"] / 1024
    print(
        f"  {setting} {mode} {minutes:g} min: peak {peak_mib:.0f} MiB in {report['seconds']:.1f} s",
        flush=True,
    )
    return {
        "setting": setting,
        "mode": mode,
        "minutes": minutes,
        "samples": samples,
        "baseline_mib": round(baseline_mib, 1),
        "peak_rss_mib": round(peak_mib, 1),
        "working_mib": round(peak_mib - baseline_mib, 1),
        "arrays_mib": round(arrays_mib, 1),
        "overhead_mib": round(peak_mib - baseline_mib - arrays_mib, 1),
        "seconds": round(report["seconds"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--setting", nargs="+", choices=sorted(SETTINGS), default=["speech", "music"])
    parser.add_argument("--mode", nargs="+", choices=["cli", "api"], default=["cli", "api"])
    parser.add_argument("--minutes", nargs="+", type=float, default=[1.0, 10.0])
    parser.add_argument("--segment", type=float, default=None)
    parser.add_argument("--overlap", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--shifts", type=int, default=None, help="shift passes (music models only)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "pipeline_memory.json")
    # internal: the measured subprocess
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--output-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.setting, args.mode = args.setting[0], args.mode[0]
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
