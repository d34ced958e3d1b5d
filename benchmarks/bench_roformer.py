"""BS-RoFormer / Mel-Band RoFormer: our forward against the reference implementations, and memory.

Three measurements (issue #18):

* ``speed`` (default): for each family and reference variant (``lucidrains``: the ``bs-roformer``
  package; ``msst``: Music-Source-Separation-Training's modules as shipped in ``audio-separator``),
  the reference is built at the released size (viperx ``model_bs_roformer_ep_317_sdr_12.9755``,
  KimberleyJensen's vocals Mel-Band RoFormer; ``--tiny`` for a small config) with seeded random
  weights, converted with our converter (same weights), and both forwards run on the same stereo
  mixture (harmonic tones and noise) of each ``--lengths`` in one process, alternating which runs
  first. Reported per length: wall and CPU seconds of each side, the ratio ours/reference within
  each repeat (median over repeats) and the largest difference of the outputs relative to the
  reference's peak, with the load average before and after (the development machine is shared).
* ``--chunked``: the same comparison through chunked inference, as long tracks are separated: the
  reference through MSST's ``demix`` (``chunk_size`` 8 s, ``num_overlap`` 2, linear fades of a tenth
  of a chunk, batch size 1; the loop of ``tests/pipelines/test_chunking.msst_demix_reference``,
  written from MSST's algorithm and tested equal to our engine's MSST policy), ours through the
  ``audio-source-separation`` pipeline (the family's MSST chunking policy from the config), same
  weights, same mixture. This is how the 60 s point is measured.
* ``--memory``: the peak RSS (``VmHWM`` of ``/proc/self/status``, not ``ru_maxrss``, which Linux
  carries over from the parent) of one forward of each side, each in a fresh subprocess that loads
  the saved weights, for each length; ``baseline_rss_mib`` is the RSS after the same imports on both
  sides, ``loaded_rss_mib`` after loading the model.
* ``--stream-memory``: the peak RSS of ``demixers separate`` (streaming, MSST's chunking policy)
  on float wav files of each ``--stream-lengths``, each in a fresh subprocess: it must stay flat
  with the length.

MSST's rotary helper in audio-separator 0.47.1 is a no-op with rotary-embedding-torch 0.9 and its
code ignores ``zero_dc``; the MSST variant is loaded through ``tests/modeling/roformer_references``
(which restores MSST's rotation) with ``zero_dc=False`` on both sides, so the outputs agree.

``--set KEY=VALUE`` overrides an architecture field of the released (or tiny) config, e.g.
``--set depth=2`` for quick runs at the released width.

Usage::

    python benchmarks/bench_roformer.py --lengths 10 --threads 1 --json results/roformer_speed_10s.json
    python benchmarks/bench_roformer.py --lengths 60 --chunked --json results/roformer_speed_60s.json
    python benchmarks/bench_roformer.py --lengths 2 --set depth=2 --repeats 4
    python benchmarks/bench_roformer.py --families bs_roformer --variants msst --lengths 10 --memory
    python benchmarks/bench_roformer.py --stream-memory --stream-lengths 60 600 --tiny
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the MSST loader lives with the tests
    sys.path.insert(0, str(ROOT))

RATE = 44100
FAMILIES = ("bs_roformer", "mel_band_roformer")
VARIANTS = ("lucidrains", "msst")
PRESET_OF = {
    "bs_roformer": "viperx-bs-roformer-ep317",
    "mel_band_roformer": "kimberleyjensen-vocals-mel-band-roformer",
}
# Small configs with the released STFT (2048 / hop 441) and chunking, for quick runs and the
# streaming memory (the engine's buffers depend on the chunk, not on the width of the model).
TINY_OVERRIDES: dict[str, dict[str, Any]] = {
    "bs_roformer": {"dim": 32, "depth": 1, "heads": 2, "dim_head": 16},
    "mel_band_roformer": {"dim": 32, "depth": 1, "heads": 2, "dim_head": 16, "num_bands": 8},
}


def status_mib(field: str) -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def peak_rss_mib() -> float:
    """VmHWM of this process (its own address space: not inherited from the parent like ru_maxrss)."""
    return status_mib("VmHWM")


def mixture(seconds: float, seed: int = 0) -> np.ndarray:
    """A reproducible stereo ``(2, time)`` float32 mixture: harmonic tones changing every half second,
    panned, plus a little noise."""
    rng = np.random.default_rng(seed)
    length = round(seconds * RATE)
    t = np.arange(length) / RATE
    signal = np.zeros((2, length))
    for _ in range(4):
        notes = np.repeat(rng.uniform(80, 800, size=int(seconds * 2) + 1), RATE // 2)[:length]
        phase = 2 * np.pi * np.cumsum(notes) / RATE
        tone = sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, 6))
        pan = rng.uniform(0.2, 0.8)
        signal += np.stack([(1 - pan) * tone, pan * tone]) * (0.6 + 0.4 * np.sin(2 * np.pi * 0.7 * t))
    signal += 0.02 * rng.standard_normal(signal.shape)
    return (0.25 * signal / np.abs(signal).max()).astype(np.float32)


def reference_class(family: str, variant: str) -> type:
    if variant == "msst":
        from tests.modeling.roformer_references import msst_module

        module = msst_module(family)
    else:
        import importlib

        module = importlib.import_module(f"bs_roformer.{family}")
    return module.BSRoformer if family == "bs_roformer" else module.MelBandRoformer


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (values read as JSON when they parse, e.g. ``depth=2``, else strings)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, separator, text = item.partition("=")
        if not separator or not key:
            raise SystemExit(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


def reference_kwargs(
    family: str, variant: str, tiny: bool, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The released architecture's constructor arguments that the reference accepts."""
    from demixers.modeling.bs_roformer.convert_roformer_to_hf import PRESETS

    kwargs = dict(PRESETS[PRESET_OF[family]]["model"])
    if tiny:
        kwargs.update(TINY_OVERRIDES[family])
    kwargs.update(overrides or {})
    kwargs["zero_dc"] = False  # audio-separator's MSST ignores the flag (never zeroes the DC bin)
    if variant == "lucidrains":
        kwargs["num_residual_streams"] = 1  # hyper-connections off: MSST's (and our) residuals
        if family == "mel_band_roformer":
            kwargs["linear_transformer_depth"] = 0
            kwargs["add_value_residual"] = False
    accepted = inspect.signature(reference_class(family, variant).__init__).parameters
    return {key: value for key, value in kwargs.items() if key in accepted}


def build(
    family: str, variant: str, tiny: bool, folder: Path, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Seeded random reference weights saved in ``folder``, and our converted model saved beside."""
    import torch

    from demixers.modeling.bs_roformer.convert_roformer_to_hf import (
        PRESETS,
        config_from_yaml_data,
        load_original_model,
    )

    kwargs = reference_kwargs(family, variant, tiny, overrides)
    torch.manual_seed(0)
    reference = reference_class(family, variant)(**kwargs).eval()
    weights = folder / f"{family}_{variant}_reference.pt"
    torch.save(reference.state_dict(), weights)
    preset = PRESETS[PRESET_OF[family]]  # the released chunking (chunk_size, num_overlap)
    data = {"model": kwargs, "audio": {**preset["audio"], "sample_rate": RATE, "num_channels": 2},
            "inference": dict(preset["inference"])}  # fmt: skip
    config = config_from_yaml_data(data, variant, family, residual=False)
    ours = load_original_model(config, weights, variant)
    ours_folder = folder / f"{family}_{variant}_ours"
    ours.save_pretrained(ours_folder)
    parameters = sum(parameter.numel() for parameter in ours.parameters())
    return {"reference": reference, "ours": ours, "kwargs": kwargs, "weights": str(weights),
            "ours_folder": str(ours_folder), "parameters": parameters,
            "chunk_size": ours.config.chunk_size, "num_overlap": ours.config.num_overlap}  # fmt: skip


def reference_forward(model: Any, audio: Any) -> Any:
    output = model(audio)  # (batch, [stems,] channels, time), possibly a few samples short (istft)
    return output if output.dim() == 4 else output[:, None]


def ours_forward(model: Any, audio: Any) -> Any:
    return model(input_values=audio).audio_values


def reference_chunked(model: Any, audio: Any, *, chunk_size: int, num_overlap: int) -> Any:
    """MSST's ``demix`` (batch size 1) around the reference model: ``(1, stems, channels, time)``."""
    import torch
    from tests.pipelines.test_chunking import msst_demix_reference

    stems = msst_demix_reference(lambda chunk: reference_forward(model, chunk), audio[0].numpy(), chunk_size,
                                 num_overlap)  # fmt: skip
    return torch.from_numpy(stems)[None]


def ours_chunked(separator: Any, audio: Any) -> Any:
    """Our pipeline (the config's MSST chunking policy): ``(1, sources, channels, time)``."""
    import torch

    stems = separator({"raw": audio[0].numpy(), "sampling_rate": RATE})
    return torch.from_numpy(np.stack([stem["audio"] for stem in stems]))[None]


def make_runs(models: dict[str, Any], chunked: bool) -> dict[str, Any]:
    """Each side's ``audio -> (1, sources, channels, time)`` function: the forwards, or the chunked runs."""
    if not chunked:
        return {"ours": partial(ours_forward, models["ours"]),
                "reference": partial(reference_forward, models["reference"])}  # fmt: skip
    from transformers import pipeline

    separator = pipeline("audio-source-separation", model=models["ours"])
    return {
        "ours": partial(ours_chunked, separator),
        "reference": partial(
            reference_chunked, models["reference"], chunk_size=models["chunk_size"],
            num_overlap=models["num_overlap"],
        ),
    }  # fmt: skip


def timed(function: Any, *args: Any) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def speed(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    import torch

    rows = []
    for family in args.families:
        for variant in args.variants:
            models = build(family, variant, args.tiny, scratch, args.overrides)
            runs = make_runs(models, args.chunked)
            with torch.inference_mode():  # first-call costs (allocator, kernels' setup) off the clock
                warmup = torch.from_numpy(mixture(0.5))[None]
                ours_forward(models["ours"], warmup)
                reference_forward(models["reference"], warmup)
            for seconds in args.lengths:
                audio = torch.from_numpy(mixture(seconds))[None]
                repeats = []
                for repeat in range(args.repeats):
                    order = ("ours", "reference") if repeat % 2 == 0 else ("reference", "ours")
                    times: dict[str, tuple[float, float]] = {}
                    outputs: dict[str, Any] = {}
                    load = [round(os.getloadavg()[0], 2)]
                    with torch.inference_mode():
                        for side in order:
                            outputs[side], wall, cpu = timed(runs[side], audio)
                            times[side] = (wall, cpu)
                    load.append(round(os.getloadavg()[0], 2))
                    common = min(outputs["ours"].shape[-1], outputs["reference"].shape[-1])
                    ours_out, reference_out = (
                        outputs["ours"][..., :common],
                        outputs["reference"][..., :common],
                    )
                    difference = float((ours_out - reference_out).abs().max() / reference_out.abs().max())
                    repeats.append({
                        "order": list(order), "load_average": load, "max_rel_diff": difference,
                        "ours_wall_s": times["ours"][0], "ours_cpu_s": times["ours"][1],
                        "reference_wall_s": times["reference"][0], "reference_cpu_s": times["reference"][1],
                        "ratio_wall": times["ours"][0] / times["reference"][0],
                        "ratio_cpu": times["ours"][1] / times["reference"][1],
                    })  # fmt: skip
                    del outputs
                row = {
                    "family": family, "variant": variant, "seconds": seconds, "tiny": args.tiny,
                    "overrides": args.overrides, "chunked": args.chunked,
                    "parameters": models["parameters"], "threads": torch.get_num_threads(),
                    "repeats": repeats,
                    "median_ratio_wall": statistics.median(r["ratio_wall"] for r in repeats),
                    "median_ratio_cpu": statistics.median(r["ratio_cpu"] for r in repeats),
                    "max_rel_diff": max(r["max_rel_diff"] for r in repeats),
                }  # fmt: skip
                print(json.dumps({key: value for key, value in row.items() if key != "repeats"}), flush=True)
                for entry in repeats:
                    print("   ", json.dumps(entry), flush=True)
                rows.append(row)
            if args.memory:
                rows.extend(memory(args, family, variant, models))
            del models
    return rows


def run_child(task: dict[str, Any], threads: int, timeout: float | None = None) -> dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(task)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"child {task} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def memory(
    args: argparse.Namespace, family: str, variant: str, models: dict[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    for seconds in args.lengths:
        for side in ("ours", "reference"):
            task = {"kind": "forward", "side": side, "family": family, "variant": variant}
            task.update(seconds=seconds, kwargs=models["kwargs"], weights=models["weights"])
            task["ours"] = models["ours_folder"]
            row = {key: task[key] for key in ("family", "variant", "side", "seconds")}
            row.update(tiny=args.tiny, **run_child(task, args.threads))
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def stream_memory(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    import soundfile

    rows = []
    for family in args.families:
        models = build(family, "msst", args.tiny, scratch, args.overrides)
        folder, parameters = models["ours_folder"], models["parameters"]
        del models
        for seconds in args.stream_lengths:
            path = scratch / f"mixture_{seconds}s.wav"
            if not path.exists():
                soundfile.write(path, mixture(seconds).T, RATE, subtype="FLOAT")
            task = {"kind": "stream", "ours": folder, "wav": str(path), "out": str(scratch / "stems")}
            row = {"family": family, "seconds": seconds, "tiny": args.tiny, "parameters": parameters,
                   **run_child(task, args.threads)}  # fmt: skip
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def child(task: dict[str, Any]) -> None:
    """One measurement in this fresh process; prints one JSON line."""
    import torch
    from transformers import AutoModel

    import demixers  # noqa: F401  (registers the families)

    if task["kind"] == "forward":  # both sides import the same modules before the baseline
        reference_class(task["family"], task["variant"])
    baseline = status_mib("VmRSS")
    load = [round(os.getloadavg()[0], 2)]
    start = time.perf_counter()
    loaded = None
    if task["kind"] == "stream":
        from demixers.cli import main as cli_main

        argv = ["separate", task["wav"], "-m", task["ours"], "-o", task["out"], "-q", "--overwrite",
                "--bit-depth", "32"]  # fmt: skip
        code = cli_main(argv)
        if code != 0:
            raise SystemExit(f"demixers separate exited with {code}")
    else:
        audio = torch.from_numpy(mixture(task["seconds"]))[None]
        if task["side"] == "ours":
            model = AutoModel.from_pretrained(task["ours"]).eval()
            run = ours_forward
        else:
            kwargs = {key: tuple(v) if isinstance(v, list) else v for key, v in task["kwargs"].items()}
            model = reference_class(task["family"], task["variant"])(**kwargs).eval()
            model.load_state_dict(torch.load(task["weights"], weights_only=True))
            run = reference_forward
        loaded = round(status_mib("VmRSS"), 1)
        with torch.inference_mode():
            run(model, audio)
    load.append(round(os.getloadavg()[0], 2))
    taken = round(time.perf_counter() - start, 2)
    peak = round(peak_rss_mib(), 1)
    print(json.dumps({"peak_rss_mib": peak, "baseline_rss_mib": round(baseline, 1), "loaded_rss_mib": loaded,
                      "seconds_taken": taken, "load_average": load}))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", choices=FAMILIES, default=list(FAMILIES))
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--lengths", nargs="+", type=float, default=[10.0, 60.0], help="seconds of audio")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (and of the children)")
    parser.add_argument("--tiny", action="store_true", help="small models instead of the released sizes")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override architecture fields of the config, e.g. depth=2")  # fmt: skip
    parser.add_argument("--chunked", action="store_true",
                        help="MSST's demix around the reference vs our pipeline (MSST policy)")  # fmt: skip
    parser.add_argument("--memory", action="store_true", help="also the peak RSS of each forward")
    parser.add_argument("--no-speed", action="store_true", help="skip the speed comparison")
    parser.add_argument("--stream-memory", action="store_true", help="peak RSS of demixers separate")
    parser.add_argument("--stream-lengths", nargs="+", type=float, default=[60.0, 600.0])
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.overrides = parse_overrides(args.overrides)
    if args.child is not None:
        child(json.loads(args.child))
        return 0
    import torch

    torch.set_num_threads(args.threads)
    started = {"load_average_at_start": [round(value, 2) for value in os.getloadavg()],
               "cpu_count": os.cpu_count(), "torch": torch.__version__, "threads": args.threads}  # fmt: skip
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench_roformer_") as scratch:
        if not args.no_speed:
            rows += speed(args, Path(scratch))
        if args.stream_memory:
            rows += stream_memory(args, Path(scratch))
    started["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        temporary = args.json.with_suffix(args.json.suffix + ".tmp")
        temporary.write_text(json.dumps({"machine": started, "rows": rows}, indent=1))
        os.replace(temporary, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
