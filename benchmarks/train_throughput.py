"""Training throughput of MossFormer and HTDemucs at tiny and default sizes.

One optimizer step is what `demixers.trainers.Trainer` does per batch: forward, the recipe's loss
(PIT SI-SNR for MossFormer, L1 for HTDemucs), backward through Accelerate, gradient clipping and an
Adam step, on random audio of the recipe's segment length. Data loading is left out (it overlaps
with compute when ``data.num_workers > 0``). Reports steps/s, samples/s (segments/s) and the
seconds of audio trained per second of wall time, per (model, size)::

    python benchmarks/train_throughput.py                       # every model and size, default device
    python benchmarks/train_throughput.py --models mossformer --sizes tiny --steps 20
    python benchmarks/train_throughput.py --mixed-precision bf16 --output throughput.json

"default" sizes are the released architectures (MossFormer(L): 42M parameters on 4 s at 8 kHz;
HTDemucs: 42M parameters on 7.8 s stereo at 44.1 kHz), batch 1 on CPU (the recipes' per-device
batch on an accelerator: 1 and 4). "tiny" is ``configs/mossformer_tiny_cpu.yaml`` as it trains (its
model, segment and batch) and a 0.1M-parameter HTDemucs on 1 s segments, batch 4. Nothing is
asserted: the numbers are for reading (ratios between rows are what carries over to other machines).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def tiny_recipe() -> dict[str, Any]:
    import yaml

    return yaml.safe_load((REPO / "configs" / "mossformer_tiny_cpu.yaml").read_text())


# 0.1M parameters; depth 3 keeps the cross-transformer's token count small
TINY_HTDEMUCS = {
    "channels": 8,
    "depth": 3,
    "nfft": 1024,
    "bottom_channels": 32,
    "t_layers": 1,
    "t_heads": 2,
    "segment": 1.0,
}


def settings(model: str, size: str, device: torch.device, batch_size: int | None) -> dict[str, Any]:
    on_accelerator = device.type != "cpu"
    if model == "mossformer":
        if size == "tiny":  # the tiny recipe as it trains: its model, segment and batch
            recipe = tiny_recipe()
            config = dict(recipe["model"]["config"])
            seconds = float(recipe["data"]["segment_seconds"])
            default_batch = int(recipe["training"]["batch_size"])
        else:  # MossFormer(L), the paper's 4 s segments
            config, seconds, default_batch = {}, 4.0, 1
        return {
            "type": "mossformer",
            "config": config,
            "seconds": seconds,
            "rate": 8000,
            "channels": 1,
            "loss": "pit_si_snr",
            "batch": batch_size or default_batch,
        }
    if model == "htdemucs":
        if size == "tiny":
            config, seconds, default_batch = dict(TINY_HTDEMUCS), 1.0, 4
        else:  # the htdemucs release, 7.8 s segments; the recipe's 4 per device on an accelerator
            config, seconds, default_batch = {}, 7.8, 4 if on_accelerator else 1
        return {
            "type": "htdemucs",
            "config": config,
            "seconds": seconds,
            "rate": 44100,
            "channels": 2,
            "loss": "l1",
            "batch": batch_size or default_batch,
        }
    raise ValueError(f"unknown model {model!r}")


def measure(
    model_name: str,
    size: str,
    steps: int,
    warmup: int,
    mixed_precision: str,
    batch_size: int | None,
    cpu: bool,
) -> dict[str, Any]:
    from accelerate import Accelerator
    from transformers import AutoConfig, AutoModel

    import demixers  # noqa: F401  (registers the families)
    from demixers.trainers.losses import compute_loss
    from demixers.trainers.optim import build_optimizer

    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    spec = settings(model_name, size, accelerator.device, batch_size)
    torch.manual_seed(0)
    config = AutoConfig.for_model(spec["type"], **spec["config"])
    model = AutoModel.from_config(config)
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = build_optimizer(
        model,
        {
            "optimizer": "adam",
            "learning_rate": 3e-4,
            "adam_beta1": 0.9,
            "adam_beta2": 0.999,
            "adam_epsilon": 1e-8,
            "weight_decay": 0.0,
        },
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    model.train()
    length = round(spec["seconds"] * spec["rate"])
    sources = len(config.source_names)
    generator = torch.Generator().manual_seed(0)
    labels = 0.1 * torch.randn(spec["batch"], sources, spec["channels"], length, generator=generator)
    labels = labels.to(accelerator.device)
    inputs = labels.sum(dim=1)

    def step() -> float:
        output = model(input_values=inputs)
        loss = compute_loss(spec["loss"], output.audio_values, labels).loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def sync() -> None:
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    elapsed = time.perf_counter() - started
    steps_per_second = steps / elapsed
    result = {
        "model": model_name,
        "size": size,
        "parameters": parameters,
        "batch_size": spec["batch"],
        "segment_seconds": spec["seconds"],
        "sampling_rate": spec["rate"],
        "mixed_precision": mixed_precision,
        "device": str(accelerator.device),
        "steps": steps,
        "seconds_per_step": elapsed / steps,
        "steps_per_second": steps_per_second,
        "samples_per_second": steps_per_second * spec["batch"],
        "audio_seconds_per_second": steps_per_second * spec["batch"] * spec["seconds"],
    }
    if accelerator.device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", nargs="+", default=["mossformer", "htdemucs"], choices=["mossformer", "htdemucs"]
    )
    parser.add_argument("--sizes", nargs="+", default=["tiny", "default"], choices=["tiny", "default"])
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 10 tiny, 2 default)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="override every row's batch size")
    parser.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    parser.add_argument(
        "--cpu", action="store_true", help="force the CPU even when an accelerator is present"
    )
    parser.add_argument("--output", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)

    rows = []
    for model in args.models:
        for size in args.sizes:
            steps = args.steps or (10 if size == "tiny" else 2)
            row = measure(model, size, steps, args.warmup, args.mixed_precision, args.batch_size, args.cpu)
            rows.append(row)
            print(
                f"{model:10s} {size:7s} {row['parameters'] / 1e6:7.2f}M params  "
                f"batch {row['batch_size']:2d} x {row['segment_seconds']:.1f} s  "
                f"{row['seconds_per_step']:8.3f} s/step  {row['steps_per_second']:8.3f} steps/s  "
                f"{row['samples_per_second']:8.3f} samples/s  "
                f"{row['audio_seconds_per_second']:8.2f} audio-s/s  "
                f"({row['device']}, {row['mixed_precision']})",
                flush=True,
            )
    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    if args.output is not None:
        args.output.write_text(json.dumps({"environment": info, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
