"""Speed and fidelity of the pipeline's backends against eager torch, in one process.

Backends (``--backends``): ``eager`` (the reference of every ratio), ``onnx`` (onnxruntime on the
exported model), ``int8`` (onnxruntime, linear layers dynamically quantized to int8) and
``compile`` (``torch.compile``, inductor). Each backend separates the same mixture through the
same model call the pipeline makes (the chunk engine is not timed: it is the same for all); the
repeats alternate the backends and each ratio is the median over repeats of backend / eager
within one repeat, so drifts of the shared machine's load hit both sides alike. CPU time (user +
system of the process) is reported with the wall time; the load average is recorded before and
after.

Models (``--model``):

* ``bundled``: the trained default model (MossFormer, 1.8M parameters, 8 kHz) on the bundled
  10 s example, whose two references give the SI-SNRi of every backend (int8's quality change);
* ``mossformer``: the released MossFormer architecture (42.1M), random weights, on the example
  mixture cut or tiled to ``--seconds``;
* ``htdemucs``: the released HTDemucs architecture, random weights, on ``--batch`` segments of
  the synthetic music of ``tests/audio_fixtures.py``; the SDR of each backend against the true
  stems and against eager's output are reported (with random weights only the change is
  meaningful);
* ``conv-tasnet``: the default Conv-TasNet (random weights) on the example mixture.

Usage::

    python benchmarks/bench_backends.py --model bundled --threads 1 --repeats 5
    python benchmarks/bench_backends.py --model htdemucs --threads 1 --repeats 3 --backends eager onnx int8
    python benchmarks/bench_backends.py --model bundled --backends eager compile --repeats 3

Prints a table and writes the JSON to ``--output`` (default ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
RESULTS_DIR = ROOT / "benchmarks" / "results"
BACKENDS = ("eager", "onnx", "int8", "compile")
MODELS = ("bundled", "mossformer", "htdemucs", "conv-tasnet")


def si_snr(estimate: np.ndarray, reference: np.ndarray) -> float:
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    target = (estimate @ reference) / (reference @ reference) * reference
    return float(10 * np.log10((target @ target) / max(((estimate - target) ** 2).sum(), 1e-20)))


def sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Plain signal-to-distortion ratio (no allowed distortion filter), in dB."""
    return float(10 * np.log10((reference**2).sum() / max(((estimate - reference) ** 2).sum(), 1e-20)))


def build(model_name: str, seconds: float, batch: int) -> tuple[Any, Any, dict[str, Any]]:
    """The model (eval), the input ``(batch, channels, time)`` and what scores the outputs."""
    import soundfile
    import torch

    import demixers
    from demixers.bundled import default_model_dir

    example = Path(default_model_dir()).parent / "example"
    speech, rate = soundfile.read(example / "mixture.wav", dtype="float32")
    if model_name == "bundled":
        model = demixers.MossFormerForSourceSeparation.from_pretrained(default_model_dir()).eval()
        references = np.stack(
            [
                soundfile.read(example / f"{name}.wav", dtype="float32")[0]
                for name in ("speaker_1", "speaker_2")
            ]
        )
        mixture = torch.from_numpy(speech)[None, None]
        return model, mixture, {"kind": "speech", "references": references, "mixture": speech}
    torch.manual_seed(0)
    if model_name in ("mossformer", "conv-tasnet"):
        if model_name == "mossformer":
            model = demixers.MossFormerForSourceSeparation(demixers.MossFormerConfig())
        else:
            model = demixers.ConvTasNetForSourceSeparation(demixers.ConvTasNetConfig())
        samples = int(seconds * rate)
        tiled = np.resize(speech, samples)
        return model.eval(), torch.from_numpy(tiled)[None, None].repeat(batch, 1, 1), {"kind": "random"}
    from tests.audio_fixtures import music_stems

    config = demixers.HTDemucsConfig()
    model = demixers.HTDemucsForSourceSeparation(config).eval()
    length = int(config.segment_length)
    stems = music_stems(length / config.sampling_rate * batch, sampling_rate=config.sampling_rate, seed=3)
    names = list(config.source_names)
    references = np.stack([stems[name] for name in names])  # (sources, channels, time)
    references = references[..., : length * batch]
    mixture = references.sum(axis=0)
    chunks = torch.from_numpy(np.ascontiguousarray(mixture.reshape(2, batch, length).transpose(1, 0, 2)))
    references = references.reshape(len(names), 2, batch, length).transpose(2, 0, 1, 3)
    return model, chunks.float(), {"kind": "music", "references": references}


def make_runner(backend: str, model: Any, folder: Path) -> Any:
    import torch

    from demixers.export import OnnxSeparator, export_onnx

    if backend == "eager":
        return lambda x: model(input_values=x).audio_values
    if backend == "compile":
        compiled = torch.compile(model, backend="inductor", dynamic=False)
        return lambda x: compiled(input_values=x).audio_values
    path = folder / "model.onnx"
    if not path.exists():
        start = time.perf_counter()
        export_onnx(model, path)
        print(f"export: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return OnnxSeparator(model, path, quantize="int8" if backend == "int8" else None)


def score(output: np.ndarray, eager: np.ndarray, scoring: dict[str, Any]) -> dict[str, float]:
    scale = float(np.abs(eager).max())
    result = {"max_rel_diff_vs_eager": float(np.abs(output - eager).max() / scale)}
    if scoring["kind"] == "speech":
        references, mixture = scoring["references"], scoring["mixture"]
        estimates = output[0, :, 0]  # (sources, time)
        best = max(
            np.mean([si_snr(estimates[i], references[j]) for i, j in enumerate(order)])
            for order in ((0, 1), (1, 0))
        )
        baseline = np.mean([si_snr(mixture, reference) for reference in references])
        result["si_snri_db"] = float(best - baseline)
    elif scoring["kind"] == "music":
        references = scoring["references"]
        flat_output = output.reshape(-1, output.shape[-1])
        flat_references = references.reshape(-1, references.shape[-1])
        pairs = zip(flat_output, flat_references, strict=True)
        result["sdr_vs_stems_db"] = float(np.mean([sdr(estimate, target) for estimate, target in pairs]))
        result["sdr_vs_eager_db"] = sdr(output, eager)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="bundled")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=["eager", "onnx", "int8"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="mossformer / conv-tasnet input length")
    parser.add_argument("--batch", type=int, default=1, help="htdemucs: segments per forward (1 by default)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.batch < 1:
        parser.error("--threads, --repeats and --batch must be positive")
    import torch

    torch.set_num_threads(args.threads)
    backends = ["eager", *[name for name in args.backends if name != "eager"]]
    model, mixture, scoring = build(args.model, args.seconds, args.batch)
    load = [round(os.getloadavg()[0], 2)]
    results: dict[str, dict[str, Any]] = {name: {"wall_s": [], "cpu_s": []} for name in backends}
    outputs: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="bench-backends-") as folder:
        runners = {}
        for name in backends:
            start = time.perf_counter()
            runners[name] = make_runner(name, model, Path(folder))
            with torch.inference_mode():
                outputs[name] = runners[name](mixture).numpy()  # warm-up (and compilation)
            results[name]["setup_and_first_run_s"] = round(time.perf_counter() - start, 2)
        for repeat in range(args.repeats):
            order = backends if repeat % 2 == 0 else backends[::-1]
            for name in order:
                wall, cpu = time.perf_counter(), time.process_time()
                with torch.inference_mode():
                    runners[name](mixture)
                results[name]["wall_s"].append(time.perf_counter() - wall)
                results[name]["cpu_s"].append(time.process_time() - cpu)
    load.append(round(os.getloadavg()[0], 2))
    audio_seconds = mixture.shape[0] * mixture.shape[-1] / model.config.sampling_rate
    for name in backends:
        entry = results[name]
        for key in ("wall_s", "cpu_s"):
            ratios = [mine / base for mine, base in zip(entry[key], results["eager"][key], strict=True)]
            entry[f"{key.split('_')[0]}_ratio_vs_eager"] = round(statistics.median(ratios), 3)
            entry[key] = [round(value, 3) for value in entry[key]]
        entry["rtf_wall"] = round(statistics.median(entry["wall_s"]) / audio_seconds, 3)
        entry.update(
            {key: round(value, 7) for key, value in score(outputs[name], outputs["eager"], scoring).items()}
        )
    payload = {
        "command": "python benchmarks/bench_backends.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "load_average_before_after": load,
        "model": args.model,
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "audio_seconds": audio_seconds,
        "threads": args.threads,
        "results": results,
    }
    print(f"{args.model}, {audio_seconds:g} s of audio, {args.threads} thread(s), load {load}")
    print(
        "| backend | wall s (median) | CPU s | wall / eager | CPU / eager | RTF | max rel. diff | quality |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in backends:
        entry = results[name]
        quality = ", ".join(
            f"{key} {entry[key]:.2f}"
            for key in ("si_snri_db", "sdr_vs_stems_db", "sdr_vs_eager_db")
            if key in entry
        )
        wall, cpu = statistics.median(entry["wall_s"]), statistics.median(entry["cpu_s"])
        print(
            f"| {name} | {wall:.2f} | {cpu:.2f} | {entry['wall_ratio_vs_eager']:.2f} | "
            f"{entry['cpu_ratio_vs_eager']:.2f} | {entry['rtf_wall']:.3f} | "
            f"{entry['max_rel_diff_vs_eager']:.1e} | {quality} |"
        )
    output = args.output or RESULTS_DIR / f"backends_{args.model}_{args.threads}t.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f".{output.name}.tmp")
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(temporary, output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
