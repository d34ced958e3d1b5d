"""Inference speed and memory of demixers against the reference implementations.

For each model and length this benchmark separates the same random mixture with

* ``mossformer`` (default config, 8 kHz mono, 2 speakers):
  ``reference``: ModelScope's ``MossFormer`` on the whole file at once under ``torch.no_grad``
  (as ModelScope's pipeline runs it); ``ours``: `MossFormerForSourceSeparation` on the whole file
  under ``torch.inference_mode`` (the same numbers); ``ours-pipeline``: the
  ``audio-source-separation`` pipeline (chunked overlap-add, ``--batch-size`` chunks per forward,
  the pipeline's speech defaults of 8 s chunks and 50 % overlap unless ``--pipeline-segment`` /
  ``--pipeline-overlap`` say otherwise), which keeps memory bounded for any length but computes a
  different function (attention and norms see a chunk, not the file); ``ours-stream``: the same
  chunking through ``demixers separate`` on a float wav (stems streamed to disk: bounded memory);
* ``htdemucs`` (default config, 44.1 kHz stereo, 4 stems):
  ``reference``: ``demucs.apply.apply_model`` (``--shifts``, ``--overlap``, the model's 7.8 s
  segment); ``ours``: the pipeline's chunk engine (apply_model's policy from the config) with the
  same segment/overlap/shifts and the same shift offsets, whole-track normalisation off as in a
  bare ``apply_model`` call (the same numbers), ``--batch-size`` windows per forward;
  ``ours-stream``: ``demixers separate`` on a float wav (the streaming pipeline: stems are written
  to disk as they are produced, so memory does not grow with the length; it also normalises the
  track as ``demucs.separate`` does, which a bare ``apply_model`` does not).

Both sides use the same random weights: the reference model is built with random weights and
converted with our converters. Every measurement runs in a fresh subprocess, so its peak RSS
(``VmHWM``, model and input included) is its own; ``base`` is the RSS just before the
separation starts. Repeats alternate the order of the variants (``ours`` first, then ``reference``
first, ...) and the ratio ours/reference is the median over repeats of the ratio within one
repeat, so slow drifts of the machine's load affect both sides alike. Wall and CPU time (user +
system of all threads of the subprocess) are both reported: on a shared machine the CPU time is
the steadier of the two.

Compute bound: the FLOPs of one forward are counted with ``torch.utils.flop_counter``
(matmuls, convolutions and attention; element-wise work is not counted) on a short input and
scaled to the audio each variant actually runs through the model; the machine's dense fp32 (or
``--dtype``) matmul throughput is measured in a subprocess with the same threads. Each result is
shown as achieved GFLOP/s and as a fraction of that throughput.

Long runs: the reference is run up to ``--reference-max-seconds`` of audio, the whole-file
``ours`` MossFormer up to ``--whole-file-max-seconds``; beyond, their time is extrapolated from the
real-time factor at the longest measured length (marked ``est``) and never presented as measured.

Usage::

    python benchmarks/bench_inference.py                                  # everything, CPU, fp32
    python benchmarks/bench_inference.py --models htdemucs --lengths 10 60 --repeats 3 --threads 1
    python benchmarks/bench_inference.py --device cuda --dtype bf16       # autocast on both sides
    python benchmarks/bench_inference.py --report benchmarks/results/a.json benchmarks/results/b.json

``--tiny`` swaps in tiny configurations: a smoke test of the script itself, not a benchmark.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"

MODELS = ("mossformer", "htdemucs")
VARIANTS = {
    "mossformer": ("ours", "reference", "ours-pipeline", "ours-stream"),
    "htdemucs": ("ours", "reference", "ours-stream"),
}
RATES = {"mossformer": (8000, 1), "htdemucs": (44100, 2)}  # sampling rate, channels
HTDEMUCS_SOURCES = ["drums", "bass", "other", "vocals"]
# The init arguments of the released htdemucs checkpoint that differ from HTDemucs' defaults.
RELEASED_HTDEMUCS_KWARGS: dict[str, Any] = {
    "audio_channels": 2, "samplerate": 44100, "segment": Fraction(39, 5), "channels": 48, "depth": 4,
    "nfft": 4096, "dconv_mode": 3, "dconv_comp": 8, "dconv_init": 1e-3, "bottom_channels": 512,
    "t_layers": 5, "t_heads": 8, "t_dropout": 0.02, "t_layer_scale": True, "t_gelu": True,
    "multi_freqs": [], "rescale": 0.1,
}  # fmt: skip
TINY_HTDEMUCS_KWARGS: dict[str, Any] = {
    "audio_channels": 2, "samplerate": 44100, "segment": Fraction(1, 2), "channels": 8, "depth": 3,
    "nfft": 512, "t_layers": 2, "t_heads": 2, "dconv_mode": 3, "bottom_channels": 0,
}  # fmt: skip
TINY_MOSSFORMER_OVERRIDES: dict[str, Any] = {
    "num_blocks": 2, "d_model": 32, "in_channels": 32, "out_channels": 32, "group_size": 16,
    "query_key_dim": 16,
}  # fmt: skip
DTYPES = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# -- setup (parent) ----------------------------------------------------------------------------


def build_models(model: str, folder: Path, tiny: bool) -> dict[str, Any]:
    """Random reference weights, saved for the reference workers and converted for ours."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    if model == "mossformer":
        from tests.modeling.mossformer.reference_modelscope import (
            RELEASE_MODEL_KWARGS,
            build_reference_model,
            save_official_layout,
        )

        from demixers.modeling.mossformer.convert_mossformer_original_to_hf import convert_checkpoint

        kwargs = {**RELEASE_MODEL_KWARGS, **(TINY_MOSSFORMER_OVERRIDES if tiny else {})}
        reference = build_reference_model(randomize=True, seed=0, **kwargs)
        release = save_official_layout(reference, folder / "modelscope", kwargs)  # the release's layout
        torch.save(reference.state_dict(), folder / "reference.pt")
        ours = convert_checkpoint(release, folder / "ours", overwrite=True)
        return {
            "reference_kwargs": kwargs,
            "reference_state": str(folder / "reference.pt"),
            "ours": str(ours),
        }

    from demucs.htdemucs import HTDemucs

    from demixers.modeling.demucs.convert_demucs_original_to_hf import model_from_package

    kwargs = TINY_HTDEMUCS_KWARGS if tiny else RELEASED_HTDEMUCS_KWARGS
    torch.manual_seed(0)
    reference = HTDemucs(HTDEMUCS_SOURCES, **kwargs).eval()
    torch.save(reference.state_dict(), folder / "reference.pt")
    args, init_kwargs = reference._init_args_kwargs
    package = {"klass": "demucs.htdemucs.HTDemucs", "args": args, "kwargs": init_kwargs}
    ours = model_from_package({**package, "state": reference.state_dict()}, "benchmark weights")
    ours.save_pretrained(folder / "ours")
    stored = {key: (str(value) if isinstance(value, Fraction) else value) for key, value in kwargs.items()}
    return {
        "reference_kwargs": stored,
        "reference_state": str(folder / "reference.pt"),
        "ours": str(folder / "ours"),
    }


def write_input(model: str, seconds: float, folder: Path, need_wav: bool) -> dict[str, Any]:
    """A reproducible random mixture ``(channels, time)`` as .npy (and float wav for streaming)."""
    rate, channels = RATES[model]
    samples = round(seconds * rate)
    rng = np.random.default_rng(1234)
    mixture = (0.1 * rng.standard_normal((channels, samples))).astype(np.float32)
    path = folder / f"{model}_{seconds:g}s.npy"
    np.save(path, mixture)
    info = {"npy": str(path), "samples": samples, "sampling_rate": rate, "channels": channels}
    if need_wav:
        import soundfile

        wav = folder / f"{model}_{seconds:g}s.wav"
        soundfile.write(wav, mixture.T, rate, subtype="FLOAT", format="RF64")
        info["wav"] = str(wav)
    return info


# -- worker (fresh subprocess per measurement) -------------------------------------------------


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024  # kB
    return float("nan")


def _current_rss_mib() -> float:
    return _status_mib("VmRSS")


def _peak_rss_mib() -> float:
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent's address space through
    # (v)fork + exec, so a worker started by a parent holding a long input would report the
    # parent's peak (a 600 s stereo input made a tiny model's worker "peak" at 998 MiB instead of
    # its own 454 MiB). VmHWM belongs to the worker's own address space.
    return _status_mib("VmHWM")


def _setup_torch(task: dict[str, Any]):
    import torch

    threads = task.get("threads")
    if threads and threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return torch


def _autocast(torch, task: dict[str, Any]):
    import contextlib

    dtype = DTYPES[task["dtype"]]
    if dtype is None:
        return contextlib.nullcontext()
    device_type = "cuda" if task["device"].startswith("cuda") else "cpu"
    return torch.autocast(device_type, dtype=getattr(torch, dtype))


def _synchronize(torch, task: dict[str, Any]) -> None:
    if task["device"].startswith("cuda"):
        torch.cuda.synchronize()


def _shift_offsets(task: dict[str, Any], rate: int) -> list[int]:
    """The shift offsets the pipeline's engine draws for ``seed`` (``apply_model`` is handed them)."""
    from demixers.pipelines.chunking import ChunkSettings, shift_offsets

    settings = ChunkSettings(
        segment=1.0, overlap=0.25, batch_size=1, shifts=task["shifts"], seed=task["seed"], max_shift=0.5,
        permutation_invariant=False,
    )  # fmt: skip
    return shift_offsets(rate, settings)[0]


class _ServedRandom:
    """Stands for the ``random`` module inside ``demucs.apply``: serves the given shift offsets."""

    def __init__(self, offsets: list[int]) -> None:
        self._offsets = offsets
        self._next = 0

    def randint(self, low: int, high: int) -> int:
        value = self._offsets[self._next % len(self._offsets)]
        self._next += 1
        return value


def _load_reference(torch, task: dict[str, Any]):
    setup = task["setup"]
    state = torch.load(setup["reference_state"], weights_only=True)
    if task["model"] == "mossformer":
        from tests.modeling.mossformer.reference_modelscope import build_reference_model

        model = build_reference_model(randomize=False, **setup["reference_kwargs"])
    else:
        from demucs.htdemucs import HTDemucs

        kwargs = {
            key: (Fraction(value) if key == "segment" else value)
            for key, value in setup["reference_kwargs"].items()
        }
        model = HTDemucs(HTDEMUCS_SOURCES, **kwargs)
    model.load_state_dict(state)
    return model.eval().to(task["device"])


def _compile(torch, model, task: dict[str, Any]) -> None:
    """``--compile``: compile ``model.forward`` in place (isinstance checks keep working)."""
    mode = task.get("compile_mode")  # "reduce-overhead": CUDA graphs on GPU
    model.forward = torch.compile(model.forward, dynamic=False, mode=mode)


def _run_variant(torch, task: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Load, run and time one variant; returns (measurements, output or None)."""
    model_name, variant, device = task["model"], task["variant"], task["device"]
    setup = task["setup"]
    mixture = np.load(task["input"]["npy"]) if variant != "ours-stream" else None
    extra: dict[str, Any] = {}
    run = None

    if model_name == "mossformer" and variant == "reference":
        model = _load_reference(torch, task)
        tensor = torch.from_numpy(mixture).to(device)  # (1, time)

        def run():
            with torch.no_grad(), _autocast(torch, task):
                estimates = model(tensor)  # (1, time, speakers)
            return estimates[0].T[:, None, :].float().cpu().numpy()

    elif model_name == "mossformer" and variant == "ours":
        from demixers import MossFormerForSourceSeparation

        model = MossFormerForSourceSeparation.from_pretrained(setup["ours"]).eval().to(device)
        tensor = torch.from_numpy(mixture).to(device)
        if task["compile"]:
            _compile(torch, model, task)

        def run():
            with torch.inference_mode(), _autocast(torch, task):
                return model(input_values=tensor).audio_values[0].float().cpu().numpy()

    elif model_name == "mossformer" and variant == "ours-pipeline":
        from transformers import pipeline

        import demixers  # noqa: F401  (registers the models and the audio-source-separation task)

        separator = pipeline("audio-source-separation", model=setup["ours"], device=device)
        if task["compile"]:
            _compile(torch, separator.model, task)
        options = {"batch_size": task["batch_size"]}
        if task["pipeline_segment"] is not None:
            options["segment"] = task["pipeline_segment"]
        if task["pipeline_overlap"] is not None:
            options["overlap"] = task["pipeline_overlap"]
        extra["pipeline_options"] = options
        rate = task["input"]["sampling_rate"]

        def run():
            with _autocast(torch, task):
                stems = separator(mixture[0], sampling_rate=rate, **options)
            return np.stack([stem["audio"] for stem in stems])

    elif model_name == "htdemucs" and variant == "reference":
        from demucs.apply import apply_model

        model = _load_reference(torch, task)
        tensor = torch.from_numpy(mixture)[None]  # (1, channels, time), kept on the CPU as the track
        extra["shift_offsets"] = _shift_offsets(task, model.samplerate)

        def run():
            import demucs.apply

            demucs.apply.random = _ServedRandom(extra["shift_offsets"])
            with _autocast(torch, task):
                out = apply_model(
                    model, tensor, shifts=task["shifts"], overlap=task["overlap"], device=device
                )
            return out[0].float().cpu().numpy()

    elif model_name == "htdemucs" and variant == "ours":
        from transformers import pipeline as hf_pipeline

        from demixers.modeling.demucs import HTDemucsForSourceSeparation

        model = HTDemucsForSourceSeparation.from_pretrained(setup["ours"]).eval().to(device)
        model.config.normalize_input = False  # as the bare apply_model call of the reference
        rate = model.config.sampling_rate
        extra["shift_offsets"] = _shift_offsets(task, rate)
        if task["compile"]:
            _compile(torch, model, task)
        separator = hf_pipeline("audio-source-separation", model=model, device=device)

        def run():
            with _autocast(torch, task):
                stems = separator(
                    mixture,
                    sampling_rate=rate,
                    overlap=task["overlap"],
                    shifts=task["shifts"],
                    seed=task["seed"],
                    batch_size=task["batch_size"],
                )
            return np.stack([stem["audio"] for stem in stems])

    elif variant == "ours-stream":
        from demixers.cli import main as cli_main

        out_dir = Path(task["scratch"]) / f"stream_{os.getpid()}"
        argv = [
            "separate", task["input"]["wav"], "-m", setup["ours"], "-o", str(out_dir), "-q", "--overwrite",
            "--bit-depth", "32", "--device", device.split(":")[0], "--batch-size", str(task["batch_size"]),
        ]  # fmt: skip
        if model_name == "htdemucs":
            argv += [
                "--shifts",
                str(task["shifts"]),
                "--overlap",
                str(task["overlap"]),
                "--seed",
                str(task["seed"]),
            ]
        else:  # the pipeline's speech chunking unless --pipeline-segment / --pipeline-overlap say otherwise
            if task["pipeline_segment"] is not None:
                argv += ["--segment", str(task["pipeline_segment"])]
            if task["pipeline_overlap"] is not None:
                argv += ["--overlap", str(task["pipeline_overlap"])]
        names = HTDEMUCS_SOURCES if model_name == "htdemucs" else ["speaker_1", "speaker_2"]
        extra["cli"] = " ".join(["demixers", *argv[:1], "INPUT", *argv[2:]])

        def run():
            with _autocast(torch, task):
                code = cli_main(argv)
            if code != 0:
                raise RuntimeError(f"demixers separate exited with {code}")

            def collect():  # read back after the measurement: the stems are on disk
                import soundfile

                folder = out_dir / Path(task["input"]["wav"]).stem
                stems = [
                    soundfile.read(folder / f"{name}.wav", dtype="float32", always_2d=True)[0].T
                    for name in names
                ]
                shutil.rmtree(out_dir, ignore_errors=True)
                return np.stack(stems)

            return collect

    else:
        raise ValueError(f"unknown variant {model_name}/{variant}")

    if task["compile"] and variant.startswith("ours") and variant != "ours-stream":
        start = time.perf_counter()
        run()  # compilation (and one full run) before timing
        _synchronize(torch, task)
        extra["compile_and_first_run_s"] = round(time.perf_counter() - start, 3)

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base_rss = _current_rss_mib()
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    output = run()
    _synchronize(torch, task)
    wall, cpu = time.perf_counter() - wall_start, time.process_time() - cpu_start
    measured = {
        "wall_s": round(wall, 4),
        "cpu_s": round(cpu, 4),
        "base_rss_mib": round(base_rss, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "threads": torch.get_num_threads(),
        **extra,
    }
    if device.startswith("cuda"):
        measured["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return measured, output


def worker(task: dict[str, Any]) -> None:
    torch = _setup_torch(task)
    if task["kind"] == "matmul":
        result = measure_matmul(torch, task)
    elif task["kind"] == "flops":
        result = count_flops(torch, task)
    else:
        load_before = os.getloadavg()[0]
        result, output = _run_variant(torch, task)
        result["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        if callable(output):
            output = output()
        if task.get("save_output") and output is not None:
            np.save(task["save_output"], np.ascontiguousarray(output, dtype=np.float32))
    print("RESULT " + json.dumps(result), flush=True)


def measure_matmul(torch, task: dict[str, Any]) -> dict[str, Any]:
    """Dense matmul throughput (GFLOP/s) of this machine with the task's threads, device and dtype."""
    device = task["device"]
    dtype = getattr(torch, DTYPES[task["dtype"]] or "float32")
    size = 8192 if device.startswith("cuda") else 2048
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _synchronize(torch, task)
    best_wall, rates_cpu, iterations, start = 0.0, [], 0, time.perf_counter()
    while time.perf_counter() - start < task.get("matmul_seconds", 3.0) or iterations < 3:
        wall, cpu = time.perf_counter(), time.process_time()
        a @ b
        _synchronize(torch, task)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        flops = 2 * size**3
        best_wall = max(best_wall, flops / wall / 1e9)
        rates_cpu.append(flops / max(cpu, 1e-9) / 1e9)
        iterations += 1
    return {
        "size": size,
        "dtype": str(dtype).replace("torch.", ""),
        "device": device,
        "threads": torch.get_num_threads(),
        "best_gflops_wall": round(best_wall, 1),
        "median_gflops_cpu_time": round(statistics.median(rates_cpu), 1),
        "iterations": iterations,
    }


def _flop_counter(torch):
    """`FlopCounterMode` plus the ops its registry misses in forward: in-place ``baddbmm_`` and the
    CPU flash-attention kernel (grouped/depthwise convolutions are counted correctly in forward:
    the weight shape carries ``in_channels / groups``; checked in `check_flop_counter`)."""
    from torch.utils import flop_counter

    aten = torch.ops.aten

    def batched_matmul(self_shape, batch1_shape, batch2_shape, *args, out_shape=None, **kwargs) -> int:
        batch, rows, inner = batch1_shape
        return 2 * batch * rows * inner * batch2_shape[-1]

    def cpu_flash_attention(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    def native_multi_head_attention(
        query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs
    ) -> int:
        # nn.MultiheadAttention's inference fast path (one op): projections, attention, output projection
        batch, queries, width = query_shape
        keys = key_shape[1]
        projections = 2 * batch * width * width * (2 * queries + 2 * keys)
        return projections + 4 * batch * queries * keys * width

    # plain functions of shapes: FlopCounterMode wraps them to receive shapes, not tensors
    custom = {
        aten.baddbmm_: batched_matmul,
        aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_attention,
        aten._native_multi_head_attention: native_multi_head_attention,
    }
    return flop_counter.FlopCounterMode(display=False, custom_mapping=custom)


def check_flop_counter(torch) -> dict[str, Any]:
    """Counted vs hand-computed FLOPs of the op kinds these models use."""
    import torch.nn.functional as F

    checks = {}
    with torch.inference_mode():
        x, w = torch.randn(1, 64, 1, 100), torch.randn(64, 1, 1, 17)
        checks["depthwise_conv2d"] = (lambda: F.conv2d(x, w, padding=(0, 8), groups=64), 2 * 64 * 17 * 100)
        xg, wg = torch.randn(1, 64, 100), torch.randn(32, 16, 3)
        checks["grouped_conv1d"] = (lambda: F.conv1d(xg, wg, padding=1, groups=4), 2 * 32 * 16 * 3 * 100)
        o, a, b = torch.zeros(3, 4, 5), torch.randn(3, 4, 6), torch.randn(3, 6, 5)
        checks["baddbmm_"] = (lambda: o.baddbmm_(a, b), 2 * 3 * 4 * 6 * 5)
        q, k = torch.randn(1, 8, 100, 64), torch.randn(1, 8, 50, 64)
        checks["sdpa_cpu"] = (lambda: F.scaled_dot_product_attention(q, k, k), 2 * 2 * 8 * 100 * 50 * 64)
        attention = torch.nn.MultiheadAttention(64, 4, batch_first=True).eval()
        tokens = torch.randn(2, 30, 64)
        expected = 2 * 2 * 30 * 64 * 64 * 4 + 4 * 2 * 30 * 30 * 64
        checks["multihead_attention_fast_path"] = (
            lambda: attention(tokens, tokens, tokens, need_weights=False),
            expected,
        )
        result = {}
        for name, (function, expected) in checks.items():
            with _flop_counter(torch) as counter:
                function()
            result[name] = {"counted": counter.get_total_flops(), "expected": expected}
    return result


def count_flops(torch, task: dict[str, Any]) -> dict[str, Any]:
    """FLOPs of one forward of ours and of the reference on a short input (on the CPU, fp32)."""
    setup = task["setup"]
    result: dict[str, Any] = {"checks": check_flop_counter(torch)}
    generator = torch.Generator().manual_seed(0)
    cpu_task = {**task, "device": "cpu"}
    if task["model"] == "mossformer":
        from demixers import MossFormerForSourceSeparation

        seconds = task["flops_seconds"]
        mixture = 0.1 * torch.randn(1, int(8000 * seconds), generator=generator)
        ours = MossFormerForSourceSeparation.from_pretrained(setup["ours"]).eval()
        reference = _load_reference(torch, cpu_task)
        with torch.inference_mode():
            with _flop_counter(torch) as counter:
                ours(input_values=mixture)
            ours_flops = counter.get_total_flops()
            with _flop_counter(torch) as counter:
                reference(mixture)
            reference_flops = counter.get_total_flops()
        result.update(
            input_seconds=seconds,
            ours_flops=ours_flops,
            reference_flops=reference_flops,
            ours_gflop_per_audio_second=ours_flops / seconds / 1e9,
            reference_gflop_per_audio_second=reference_flops / seconds / 1e9,
        )
        return result
    from demixers.modeling.demucs import HTDemucsForSourceSeparation

    ours = HTDemucsForSourceSeparation.from_pretrained(setup["ours"]).eval()
    reference = _load_reference(torch, cpu_task)
    segment = ours.config.segment_length
    mixture = 0.1 * torch.randn(1, 2, segment, generator=generator)
    with torch.inference_mode():
        with _flop_counter(torch) as counter:
            ours(input_values=mixture)
        ours_flops = counter.get_total_flops()
        with _flop_counter(torch) as counter:
            reference(mixture)
        reference_flops = counter.get_total_flops()
    result.update(
        segment_samples=segment,
        ours_flops_per_forward=ours_flops,
        reference_flops_per_forward=reference_flops,
    )
    return result


# -- parent ------------------------------------------------------------------------------------


def run_worker(task: dict[str, Any], timeout: float | None) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(task)]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=_env(), check=False, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = "\n".join((completed.stderr or completed.stdout).strip().splitlines()[-15:])
    return {"error": f"exit {completed.returncode}: {tail}"}


def htdemucs_forwards(samples: int, rate: int, segment: int, overlap: float, offsets: list[int]) -> int:
    """Forward passes ``apply_model`` and the pipeline (apply_model's policy) make over ``samples``."""
    stride = int((1 - overlap) * segment)
    if not offsets:
        return math.ceil(samples / stride)
    max_shift = int(0.5 * rate)
    return sum(math.ceil((samples + max_shift - offset) / stride) for offset in offsets)


def pipeline_chunks(samples: int, rate: int, segment: float, overlap: float, shifts: int, seed: int) -> int:
    from demixers.pipelines.chunking import ChunkSettings, count_chunks

    settings = ChunkSettings(
        segment=segment, overlap=overlap, batch_size=1, shifts=shifts, seed=seed, max_shift=0.5,
        permutation_invariant=False,
    )  # fmt: skip
    return count_chunks(samples, rate, settings)


def variant_flops(
    model: str, variant: str, samples: int, args: argparse.Namespace, flops: dict[str, Any], setup_info: dict
) -> float | None:
    """FLOPs the variant runs through the model for ``samples`` samples (from `count_flops`)."""
    if not flops or "error" in flops:
        return None
    rate, _ = RATES[model]
    seconds = samples / rate
    if model == "mossformer":
        per_second = (
            flops["reference_flops" if variant == "reference" else "ours_flops"] / flops["input_seconds"]
        )
        if variant not in ("ours-pipeline", "ours-stream"):
            return per_second * seconds
        segment = args.pipeline_segment or 8.0
        overlap = args.pipeline_overlap if args.pipeline_overlap is not None else 0.5
        chunk = min(samples, math.floor(segment * rate + 1e-6))
        chunks = pipeline_chunks(samples, rate, segment, overlap, 0, args.seed)
        return per_second * chunks * chunk / rate
    per_forward = flops["reference_flops_per_forward" if variant == "reference" else "ours_flops_per_forward"]
    segment = flops["segment_samples"]
    offsets = _shift_offsets({"seed": args.seed, "shifts": args.shifts}, rate)
    # the pipeline and the stream chunk HTDemucs with apply_model's policy: the same forwards
    forwards = htdemucs_forwards(samples, rate, segment, args.overlap, offsets)
    return per_forward * forwards


def compare_outputs(actual_path: Path, expected_path: Path, permutation_invariant: bool) -> dict[str, Any]:
    """Max |actual - expected| (after the best source order for speech) and relative to max |expected|."""
    actual = np.load(actual_path, mmap_mode="r")
    expected = np.load(expected_path, mmap_mode="r")
    if actual.shape != expected.shape:
        return {"error": f"shapes differ: {actual.shape} vs {expected.shape}"}
    sources = actual.shape[0]
    orders = [tuple(range(sources))]
    if permutation_invariant and sources == 2:
        orders.append((1, 0))
    block = 1 << 20
    best = None
    for order in orders:
        worst = 0.0
        for start in range(0, actual.shape[-1], block):
            piece = np.abs(
                np.asarray(actual[list(order), ..., start : start + block])
                - expected[..., start : start + block]
            )
            worst = max(worst, float(piece.max()))
        best = worst if best is None else min(best, worst)
    scale = max(
        float(np.abs(np.asarray(expected[..., start : start + block])).max())
        for start in range(0, expected.shape[-1], block)
    )
    return {"max_abs_diff": best, "max_rel_diff": best / max(scale, 1e-12)}


def machine_info() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "default_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main_parent(args: argparse.Namespace) -> int:
    sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
    started = datetime.datetime.now()
    scratch = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_inference_"))
    scratch.mkdir(parents=True, exist_ok=True)
    common = {
        "threads": args.threads, "device": args.device, "dtype": args.dtype, "seed": args.seed,
        "shifts": args.shifts, "overlap": args.overlap, "batch_size": args.batch_size,
        "compile": args.compile or args.compile_mode is not None, "compile_mode": args.compile_mode,
        "pipeline_segment": args.pipeline_segment,
        "pipeline_overlap": args.pipeline_overlap, "scratch": str(scratch),
    }  # fmt: skip
    payload: dict[str, Any] = {
        "date": started.strftime("%Y-%m-%d"),
        "command": " ".join(["python", "benchmarks/bench_inference.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "settings": {key: value for key, value in vars(args).items() if key not in ("worker", "report")},
        "models": {},
    }
    print(f"scratch folder: {scratch}", flush=True)
    matmul = run_worker({**common, "kind": "matmul"}, args.timeout)
    print(f"matmul throughput: {matmul}", flush=True)
    payload["matmul"] = [matmul]
    try:
        for model in args.models:
            payload["models"][model] = run_model(model, args, common, scratch, payload)
        matmul_end = run_worker({**common, "kind": "matmul"}, args.timeout)
        payload["matmul"].append(matmul_end)
        print(f"matmul throughput (end): {matmul_end}", flush=True)
    finally:
        payload["machine"]["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
        payload["elapsed_s"] = round((datetime.datetime.now() - started).total_seconds(), 1)
        peak = max(
            (m.get("best_gflops_wall", 0.0) for m in payload["matmul"] if "error" not in m), default=0.0
        )
        payload["matmul_peak_gflops"] = peak
        finalize(payload)
        output = (
            Path(args.output)
            if args.output
            else RESULTS_DIR
            / (f"inference_{args.device.split(':')[0]}_{args.dtype}_{started:%Y%m%d-%H%M%S}.json")
        )
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = output.with_suffix(".json.tmp")
        staging.write_text(json.dumps(payload, indent=2) + "\n")
        os.replace(staging, output)
        print()
        print(render_table(payload))
        print(f"\nwrote {output}")
        if not args.keep_workdir and not args.workdir:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


def run_model(
    model: str, args: argparse.Namespace, common: dict, scratch: Path, payload: dict
) -> dict[str, Any]:
    folder = scratch / model
    setup = build_models(model, folder, args.tiny)
    variants = [v for v in VARIANTS[model] if not args.variants or v in args.variants]
    base = {**common, "model": model, "setup": setup, "flops_seconds": args.flops_seconds}
    flops = {} if args.no_flops else run_worker({**base, "kind": "flops"}, args.timeout)
    print(f"{model}: flops {json.dumps(flops)[:400]}", flush=True)
    result: dict[str, Any] = {"flops": flops, "lengths": {}}
    for seconds in args.lengths:
        info = write_input(model, seconds, folder, need_wav="ours-stream" in variants)
        samples = info["samples"]
        runs: dict[str, list[dict]] = {variant: [] for variant in variants}
        skipped: dict[str, str] = {}
        for variant in variants:
            if variant == "reference" and seconds > args.reference_max_seconds:
                skipped[variant] = f"not run beyond --reference-max-seconds {args.reference_max_seconds:g}"
            if model == "mossformer" and variant == "ours" and seconds > args.whole_file_max_seconds:
                skipped[variant] = (
                    f"whole file: not run beyond --whole-file-max-seconds {args.whole_file_max_seconds:g}"
                )
        active = [v for v in variants if v not in skipped]
        for repeat in range(args.repeats):
            order = active if repeat % 2 == 0 else active[::-1]
            for variant in order:
                save = (
                    folder / f"out_{seconds:g}s_{variant}.npy"
                    if repeat == 0 and not args.no_compare
                    else None
                )
                task = {**base, "kind": "run", "variant": variant, "input": info,
                        "save_output": str(save) if save else None}  # fmt: skip
                measured = run_worker(task, args.timeout)
                measured["repeat"] = repeat
                runs[variant].append(measured)
                summary = (
                    measured["error"]
                    if "error" in measured
                    else f"wall {measured['wall_s']:.2f} s, cpu {measured['cpu_s']:.2f} s, "
                    f"peak RSS {measured['peak_rss_mib']:.0f} MiB, load {measured['load_average']}"
                )
                print(f"{model} {seconds:g}s repeat {repeat} {variant}: {summary}", flush=True)
        comparisons = {}
        expected = folder / f"out_{seconds:g}s_reference.npy"
        for variant in active:
            actual = folder / f"out_{seconds:g}s_{variant}.npy"
            if variant != "reference" and expected.exists() and actual.exists():
                comparisons[variant] = compare_outputs(actual, expected, model == "mossformer")
        for path in folder.glob(f"out_{seconds:g}s_*.npy"):
            path.unlink()
        for key in ("npy", "wav"):
            if key in info:
                Path(info[key]).unlink(missing_ok=True)
        result["lengths"][f"{seconds:g}"] = {
            "seconds": seconds,
            "samples": samples,
            "runs": runs,
            "skipped": skipped,
            "comparison_with_reference": comparisons,
            "flops": {v: variant_flops(model, v, samples, args, flops, setup) for v in variants},
        }
    return result


def finalize(payload: dict[str, Any]) -> None:
    """Medians, paired ratios, real-time factors, compute-bound fractions and extrapolations."""
    peak = payload.get("matmul_peak_gflops") or None
    for model, data in payload["models"].items():
        rate, _ = RATES[model]
        measured_rtf: dict[str, list[tuple[float, float, float]]] = {}
        for entry in data["lengths"].values():
            seconds = entry["samples"] / rate
            summary = {}
            for variant, runs in entry["runs"].items():
                good = [run for run in runs if "error" not in run]
                if not good:
                    continue
                wall = _median([run["wall_s"] for run in good])
                cpu = _median([run["cpu_s"] for run in good])
                row = {
                    "repeats": len(good),
                    "wall_s": round(wall, 3),
                    "cpu_s": round(cpu, 3),
                    "wall_s_all": [run["wall_s"] for run in good],
                    "rtf_wall": round(wall / seconds, 4),
                    "rtf_cpu": round(cpu / seconds, 4),
                    "peak_rss_mib": max(run["peak_rss_mib"] for run in good),
                    "base_rss_mib": min(run["base_rss_mib"] for run in good),
                }
                if any("peak_gpu_mib" in run for run in good):
                    row["peak_gpu_mib"] = max(run.get("peak_gpu_mib", 0.0) for run in good)
                flops = entry["flops"].get(variant)
                if flops:
                    row["gflop"] = round(flops / 1e9, 1)
                    row["achieved_gflops"] = round(flops / wall / 1e9, 2)
                    if peak:
                        row["fraction_of_matmul_peak"] = round(flops / wall / 1e9 / peak, 4)
                summary[variant] = row
                measured_rtf.setdefault(variant, []).append((seconds, wall / seconds, cpu / seconds))
            reference = {
                run["repeat"]: run for run in entry["runs"].get("reference", []) if "error" not in run
            }
            for variant, row in summary.items():
                if variant == "reference" or not reference:
                    continue
                pairs = [
                    (
                        run["wall_s"] / reference[run["repeat"]]["wall_s"],
                        run["cpu_s"] / reference[run["repeat"]]["cpu_s"],
                    )
                    for run in entry["runs"][variant]
                    if "error" not in run and run["repeat"] in reference
                ]
                if pairs:
                    row["ratio_wall_vs_reference"] = round(statistics.median(p[0] for p in pairs), 3)
                    row["ratio_cpu_vs_reference"] = round(statistics.median(p[1] for p in pairs), 3)
                    row["ratio_wall_pairs"] = [round(p[0], 3) for p in pairs]
            entry["summary"] = summary
        # extrapolations for variants skipped at some lengths (linear in length: the models are)
        for entry in data["lengths"].values():
            seconds = entry["samples"] / rate
            for variant in entry["skipped"]:
                known = [item for item in measured_rtf.get(variant, []) if item[0] < seconds]
                if not known:
                    continue
                longest = max(known)
                estimate = {
                    "extrapolated_from_seconds": round(longest[0], 3),
                    "wall_s": round(longest[1] * seconds, 1),
                    "cpu_s": round(longest[2] * seconds, 1),
                    "rtf_wall": round(longest[1], 4),
                    "note": "estimate: real-time factor at the longest measured length times this length",
                }
                entry.setdefault("estimates", {})[variant] = estimate
            summary = entry.get("summary", {})
            estimates = entry.get("estimates", {})
            reference = summary.get("reference") or estimates.get("reference")
            if reference and "reference" not in summary:
                for row in summary.values():
                    row["ratio_wall_vs_reference_estimate"] = round(row["wall_s"] / reference["wall_s"], 3)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_table(payload: dict[str, Any]) -> str:
    """Markdown table of the medians (one row per model, length and variant)."""
    header = [
        "model", "audio", "variant", "runs", "wall s", "CPU s", "RTF (wall)", "peak RSS MiB",
        "ours/ref wall", "ours/ref CPU", "max rel. diff", "GFLOP", "GFLOP/s", "% of matmul peak",
    ]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, data in payload["models"].items():
        for key, entry in data["lengths"].items():
            summary = entry.get("summary", {})
            comparisons = entry.get("comparison_with_reference", {})
            for variant in VARIANTS[model]:
                row = summary.get(variant)
                estimate = entry.get("estimates", {}).get(variant)
                if row is None and estimate is None:
                    if variant in entry.get("skipped", {}):
                        cells = [model, f"{key} s", variant, "0", "not run"] + ["-"] * (len(header) - 5)
                        lines.append("| " + " | ".join(cells) + " |")
                    continue
                if row is None:
                    cells = [
                        model, f"{key} s", variant, "0", f"~{estimate['wall_s']:.0f} (est.)",
                        f"~{estimate['cpu_s']:.0f} (est.)", f"{estimate['rtf_wall']:.2f} (est.)",
                        "not run", "-", "-", "-", "-", "-", "-",
                    ]  # fmt: skip
                    lines.append("| " + " | ".join(cells) + " |")
                    continue
                comparison = comparisons.get(variant, {})
                ratio = row.get("ratio_wall_vs_reference")
                ratio_text = _fmt(ratio)
                if ratio is None and "ratio_wall_vs_reference_estimate" in row:
                    ratio_text = f"{row['ratio_wall_vs_reference_estimate']:.2f} (vs est.)"
                fraction = row.get("fraction_of_matmul_peak")
                cells = [
                    model, f"{key} s", variant, str(row["repeats"]), _fmt(row["wall_s"]), _fmt(row["cpu_s"]),
                    _fmt(row["rtf_wall"]), _fmt(row["peak_rss_mib"], 0),
                    ratio_text, _fmt(row.get("ratio_cpu_vs_reference")),
                    f"{comparison['max_rel_diff']:.1e}" if "max_rel_diff" in comparison else "-",
                    _fmt(row.get("gflop"), 0), _fmt(row.get("achieved_gflops"), 1),
                    f"{100 * fraction:.0f} %" if fraction is not None else "-",
                ]  # fmt: skip
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def refinalize(payload: dict[str, Any]) -> None:
    """Recompute the per-variant FLOPs and the summaries of a stored result (e.g. after its
    ``flops`` entries were recounted)."""
    args = argparse.Namespace(**payload["settings"])
    for model, data in payload["models"].items():
        for entry in data["lengths"].values():
            entry["flops"] = {
                variant: variant_flops(model, variant, entry["samples"], args, data["flops"], {})
                for variant in entry["runs"]
            }
    finalize(payload)


def report(paths: list[str]) -> int:
    for path in paths:
        payload = json.loads(Path(path).read_text())
        refinalize(payload)
        machine = payload["machine"]
        loads = (machine.get("load_average_at_start"), machine.get("load_average_at_end"))
        print(f"### {path}\n")
        cpu = f"{machine['cpu']} ({machine['cpu_count']} cores)"
        print(f"date {payload['date']}, {cpu}, torch {machine['torch']}")
        print(f"command: `{payload['command']}`")
        peak = payload.get("matmul_peak_gflops")
        print(f"matmul peak: {peak} GFLOP/s; load average {loads[0]} -> {loads[1]}\n")
        print(render_table(payload))
        print()
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument(
        "--lengths", nargs="+", type=float, default=[10.0, 60.0, 600.0], help="seconds of audio"
    )
    parser.add_argument("--repeats", type=int, default=3, help="alternating repeats per variant (median)")
    parser.add_argument(
        "--variants", nargs="+", default=None, help="only these variants (e.g. ours reference)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads in every worker (default: torch's)"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:index]")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default="fp32", help="autocast dtype on both sides"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="chunks per forward in our chunked variants"
    )
    parser.add_argument("--shifts", type=int, default=1, help="htdemucs: shifts (apply_model's default is 1)")
    parser.add_argument(
        "--overlap", type=float, default=0.25, help="htdemucs: overlap (apply_model's default)"
    )
    parser.add_argument(
        "--pipeline-segment", type=float, default=None, help="mossformer pipeline chunk seconds"
    )
    parser.add_argument("--pipeline-overlap", type=float, default=None, help="mossformer pipeline overlap")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shift offsets")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile our model's forward (after one untimed run)"
    )
    parser.add_argument(
        "--compile-mode",
        choices=["default", "reduce-overhead", "max-autotune"],
        default=None,
        help="torch.compile mode (implies --compile; reduce-overhead replays CUDA graphs on GPU)",
    )
    parser.add_argument(
        "--reference-max-seconds", type=float, default=60.0, help="longest input the reference runs on"
    )
    parser.add_argument(
        "--whole-file-max-seconds", type=float, default=60.0, help="longest whole-file MossFormer run of ours"
    )
    parser.add_argument(
        "--flops-seconds", type=float, default=2.0, help="mossformer input length for FLOP counting"
    )
    parser.add_argument("--no-flops", action="store_true", help="skip FLOP counting")
    parser.add_argument("--no-compare", action="store_true", help="do not save and compare outputs")
    parser.add_argument("--timeout", type=float, default=None, help="seconds before a worker is killed")
    parser.add_argument("--tiny", action="store_true", help="tiny configurations (smoke test of the script)")
    parser.add_argument(
        "--output", default=None, help="JSON path (default: benchmarks/results/inference_*.json)"
    )
    parser.add_argument("--workdir", default=None, help="scratch folder (kept); default: a temporary one")
    parser.add_argument("--keep-workdir", action="store_true")
    parser.add_argument("--report", nargs="+", default=None, help="print the tables of existing JSON results")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
        worker(json.loads(args.worker))
        return 0
    if args.report:
        return report(args.report)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available here")
    return main_parent(args)


if __name__ == "__main__":
    raise SystemExit(main())
