"""Crash-safe checkpoints of a training run.

Layout of an output directory::

    train_config.yaml          the resolved recipe
    checkpoint-00000040/       a resumable checkpoint (the newest `total_limit` are kept)
        model.safetensors      the trained weights
        ema.safetensors        the EMA shadow weights (EMA on)
        optimizer.bin          optimizer state (`torch.save`, read back with ``weights_only=True``)
        scaler.pt              fp16 grad scaler state (idem; fp16 only)
        rng_state_<r>.json     Python and NumPy RNG states of process r
        rng_state_<r>.safetensors  torch CPU (and CUDA) RNG states of process r
        model/                 `save_pretrained` folder (EMA weights when EMA is on) + feature extractor
        trainer_state.json     step, epoch, metrics, schedule, EMA counters, world size, model
                               config, format version; written last
    best/                      `save_pretrained` folder of the best validation so far (+ eval_results.json)
    last/                      `save_pretrained` folder of the newest checkpoint / the end of training
    logs/                      tracker output (TensorBoard)

Every folder is written under a temporary name (``.tmp-<name>``) and renamed when complete, so a
kill at any moment leaves either the previous folder or the new one, never a half-written one;
older checkpoints are pruned only after the new one has been renamed into place. A checkpoint is
"complete" when it has ``trainer_state.json``; temporary and incomplete folders are ignored by
`find_checkpoints` and removed by `clean_stale`.

A checkpoint is data and may come from anyone (a shared disk, a downloaded run): nothing in it can
run code when it is loaded. Weights and RNG tensors are safetensors, counters and Python/NumPy RNG
states are JSON, optimizer and scaler states are read with ``torch.load(weights_only=True)`` (tensors
and plain containers only). A checkpoint holding pickles of any other kind (Accelerate's
``custom_checkpoint_*.pkl`` / ``random_states_*.pkl`` of older demixers versions, or a planted
file) is refused with a one-line `ResumeError` naming the file.

Which damage is survived: an unreadable ``trainer_state.json`` (the file that marks a checkpoint
complete) makes that checkpoint incomplete, so ``--resume`` falls back to the newest checkpoint
whose state file reads, and says so. Any other unreadable or unsafe file of the chosen checkpoint
(a truncated optimizer state, a planted pickle) is a one-line `ResumeError` naming the file: the
run is not silently moved back to an older step.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import pickle
import random
import re
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE_NAME = "trainer_state.json"
MODEL_SUBDIR = "model"
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")
MODEL_WEIGHTS_NAME = "model.safetensors"
EMA_WEIGHTS_NAME = "ema.safetensors"
OPTIMIZER_NAME = "optimizer.bin"
SCALER_NAME = "scaler.pt"
RNG_JSON_TEMPLATE = "rng_state_{rank}.json"
RNG_TENSORS_TEMPLATE = "rng_state_{rank}.safetensors"
# Version of the checkpoint layout, stored in trainer_state.json: 1 was Accelerate's pickles.
CHECKPOINT_FORMAT = 2
_LEGACY_PICKLE_SUFFIXES = (".pkl", ".pickle")

# Config entries that do not change the network (ignored when a resume compares model configs).
VOLATILE_CONFIG_KEYS = frozenset(
    {"transformers_version", "_name_or_path", "architectures", "torch_dtype", "dtype", "_commit_hash"}
)


class ResumeError(ValueError):
    """A checkpoint cannot be resumed with the current recipe / launch."""


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temporary_path(final: Path) -> Path:
    """The deterministic temporary name of ``final`` (the same on every process of a run)."""
    return final.parent / f"{TMP_PREFIX}{final.name}"


def prepare_temporary(final: Path) -> Path:
    """Empty temporary folder for ``final`` (a leftover of a killed attempt is removed first)."""
    tmp = temporary_path(final)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_temporary(tmp: Path, final: Path) -> None:
    """Atomically move the complete ``tmp`` folder to ``final``, replacing an existing one.

    A replaced folder is first renamed to ``.old-<name>`` and deleted after the new one is in
    place; `clean_stale` restores it if a kill happened in between.
    """
    for root, _, files in os.walk(tmp):
        for name in files:
            with contextlib.suppress(OSError), open(os.path.join(root, name), "rb") as handle:
                os.fsync(handle.fileno())
    old = final.parent / f"{OLD_PREFIX}{final.name}"
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike[str]) -> Iterator[Path]:
    """``with atomic_directory(out / "best") as tmp: ...write into tmp...`` (single process)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = prepare_temporary(final)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    commit_temporary(tmp, final)


def clean_stale(output_dir: str | os.PathLike[str]) -> list[str]:
    """Remove temporary folders left by a killed run; put back a folder caught mid-replacement."""
    output_dir = Path(output_dir)
    actions = []
    if not output_dir.is_dir():
        return actions
    for entry in sorted(output_dir.iterdir()):
        if entry.name.startswith(OLD_PREFIX) and entry.is_dir():
            final = output_dir / entry.name[len(OLD_PREFIX) :]
            if final.exists():
                shutil.rmtree(entry)
                actions.append(f"removed {entry.name}")
            else:
                os.replace(entry, final)
                actions.append(f"restored {final.name}")
        elif entry.name.startswith(TMP_PREFIX) and entry.is_dir():
            shutil.rmtree(entry)
            actions.append(f"removed {entry.name}")
    return actions


def find_checkpoints(output_dir: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """Complete checkpoints of ``output_dir`` as ``(step, path)``, oldest first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = []
    for entry in output_dir.iterdir():
        match = _CHECKPOINT_RE.match(entry.name)
        if match and entry.is_dir() and (entry / TRAINER_STATE_NAME).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    checkpoints = find_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def prune_checkpoints(output_dir: str | os.PathLike[str], total_limit: int) -> list[Path]:
    """Delete the oldest complete checkpoints beyond the newest ``total_limit``; return them."""
    if total_limit < 1:
        raise ValueError(f"total_limit must be >= 1, got {total_limit}")
    checkpoints = find_checkpoints(output_dir)
    removed = []
    for _, path in checkpoints[: max(0, len(checkpoints) - total_limit)]:
        # rename first so that a kill mid-delete never leaves a "complete-looking" partial folder
        doomed = path.parent / f"{TMP_PREFIX}{path.name}"
        if doomed.exists():
            shutil.rmtree(doomed)
        os.replace(path, doomed)
        shutil.rmtree(doomed)
        removed.append(path)
    return removed


def one_line_error(error: BaseException) -> str:
    """The first line of an error message (library messages run over several lines)."""
    text = str(error).strip().splitlines()
    first = text[0].strip() if text else ""
    return f"{type(error).__name__}: {first[:200]}" if first else type(error).__name__


def read_json_file(path: str | os.PathLike[str]) -> Any:
    """A JSON file of a checkpoint; anything else is a one-line `ResumeError` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResumeError(f"{path}: missing from the checkpoint") from None
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ResumeError(f"{path}: not a readable JSON state file ({one_line_error(error)})") from None


def read_trainer_state(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """``trainer_state.json`` of ``checkpoint``, checked to be this format's (one-line `ResumeError`)."""
    path = Path(checkpoint) / TRAINER_STATE_NAME
    if not path.is_file():
        raise ResumeError(f"{checkpoint} is not a complete checkpoint (no {TRAINER_STATE_NAME})")
    state = read_json_file(path)
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        raise ResumeError(f"{path}: not a trainer state (a JSON object with an integer global_step)")
    return state


def check_safe_layout(checkpoint: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Refuse checkpoints of the pickle-based layout (or holding pickles) before reading anything."""
    checkpoint = Path(checkpoint)
    for entry in sorted(checkpoint.iterdir()):
        if entry.suffix in _LEGACY_PICKLE_SUFFIXES:
            raise ResumeError(
                f"{entry}: refusing to load a pickle (it could run code); this checkpoint was written by "
                "an older demixers (Accelerate state) or tampered with: start a new run, or fine-tune "
                f"from its exported weights with --model.pretrained={checkpoint / MODEL_SUBDIR}"
            )
    version = state.get("checkpoint_format")
    if version != CHECKPOINT_FORMAT:
        raise ResumeError(
            f"{checkpoint / TRAINER_STATE_NAME}: checkpoint format {version!r}, this demixers reads "
            f"format {CHECKPOINT_FORMAT} only"
        )


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file({name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}, str(path))


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A safetensors file of a checkpoint (one-line `ResumeError` when missing or unreadable)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"{path}: missing from the checkpoint")
    try:
        return load_file(str(path))
    except Exception as error:  # SafetensorError derives from Exception only
        raise ResumeError(f"{path}: not a readable safetensors file ({one_line_error(error)})") from None


def save_torch_state(path: str | os.PathLike[str], state: Any) -> None:
    torch.save(state, str(path))


def load_torch_state(path: str | os.PathLike[str]) -> Any:
    """An optimizer/scaler state: tensors and plain containers only (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"{path}: missing from the checkpoint")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ResumeError(
            f"{path}: refusing to load: it holds objects other than tensors and plain containers "
            f"(a pickle that could run code, or a state of another format: {type(error).__name__})"
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ResumeError(f"{path}: truncated or corrupt state file ({one_line_error(error)})") from None


def capture_rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """This process' Python/NumPy RNG states (JSON) and torch CPU/CUDA RNG states (tensors)."""
    version, internal, gauss_next = random.getstate()
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    json_state = {
        "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
        "numpy": {
            "kind": kind,
            "keys": [int(key) for key in keys],
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
    }
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = state
    return json_state, tensors


def restore_rng_state(json_state: Any, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Inverse of `capture_rng_state`; malformed states are a one-line `ResumeError` naming ``source``."""
    try:
        python = json_state["python"]
        internal = tuple(int(value) for value in python["state"])
        gauss_next = python["gauss_next"]
        if gauss_next is not None and not (isinstance(gauss_next, float) and math.isfinite(gauss_next)):
            raise ValueError(f"gauss_next {gauss_next!r}")
        numpy_state = json_state["numpy"]
        keys = np.asarray(numpy_state["keys"], dtype=np.int64)
        if keys.shape != (624,) or keys.min() < 0 or keys.max() >= 2**32:
            raise ValueError("numpy keys are not 624 uint32 values")
        cpu = tensors["torch_cpu"]
        if cpu.dtype != torch.uint8 or cpu.dim() != 1:
            raise ValueError(f"torch_cpu is {cpu.dtype} of shape {tuple(cpu.shape)}, not a uint8 vector")
        random.setstate((int(python["version"]), internal, gauss_next))
        np.random.set_state(
            (
                str(numpy_state["kind"]),
                keys.astype(np.uint32),
                int(numpy_state["position"]),
                int(numpy_state["has_gauss"]),
                float(numpy_state["cached_gaussian"]),
            )
        )
        torch.set_rng_state(cpu)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise ResumeError(f"{source}: not a valid RNG state ({one_line_error(error)})") from None
    cuda = [tensors[f"torch_cuda_{i}"] for i in range(len(tensors)) if f"torch_cuda_{i}" in tensors]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_rng_state(folder: str | os.PathLike[str], rank: int) -> None:
    json_state, tensors = capture_rng_state()
    write_json(Path(folder) / RNG_JSON_TEMPLATE.format(rank=rank), json_state)
    save_tensors(Path(folder) / RNG_TENSORS_TEMPLATE.format(rank=rank), tensors)


def load_rng_state(folder: str | os.PathLike[str], rank: int) -> None:
    folder = Path(folder)
    json_path = folder / RNG_JSON_TEMPLATE.format(rank=rank)
    tensors_path = folder / RNG_TENSORS_TEMPLATE.format(rank=rank)
    json_state = read_json_file(json_path)
    tensors = load_tensors(tensors_path)
    if not isinstance(json_state, dict):
        raise ResumeError(f"{json_path}: not a valid RNG state (a JSON object is expected)")
    restore_rng_state(json_state, tensors, json_path)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    Path(path).write_text(
        json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n", encoding="utf-8"
    )


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def comparable_model_config(config_dict: dict[str, Any]) -> dict[str, Any]:
    """The config as JSON would store it (int keys become strings), without volatile entries."""
    normalised = json.loads(json.dumps(config_dict, sort_keys=True, default=_json_default))
    return {k: v for k, v in normalised.items() if k not in VOLATILE_CONFIG_KEYS}


def check_resume_compatible(
    state: dict[str, Any],
    model_config: dict[str, Any],
    world_size: int,
    checkpoint: str | os.PathLike[str],
) -> None:
    """Raise `ResumeError` when the checkpoint was made by another model config or world size."""
    saved = comparable_model_config(state.get("model_config", {}))
    current = comparable_model_config(model_config)
    if saved != current:
        keys = sorted(
            k for k in set(saved) | set(current) if saved.get(k, "<unset>") != current.get(k, "<unset>")
        )
        details = ", ".join(
            f"{k}: checkpoint {saved.get(k, '<unset>')!r} vs now {current.get(k, '<unset>')!r}"
            for k in keys[:6]
        )
        raise ResumeError(
            f"cannot resume from {checkpoint}: it was trained with a different model config ({details}). "
            "Resume with the recipe it was made with, or start a new output directory."
        )
    saved_world = state.get("world_size")
    if saved_world is not None and saved_world != world_size:
        raise ResumeError(
            f"cannot resume from {checkpoint}: it was made with {saved_world} process(es) and this "
            f"launch has {world_size}; exact resume needs the same world size (relaunch with "
            f"--num_processes {saved_world})."
        )


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_PREFIX",
    "EMA_WEIGHTS_NAME",
    "MODEL_SUBDIR",
    "MODEL_WEIGHTS_NAME",
    "OPTIMIZER_NAME",
    "SCALER_NAME",
    "TRAINER_STATE_NAME",
    "ResumeError",
    "atomic_directory",
    "capture_rng_state",
    "check_resume_compatible",
    "check_safe_layout",
    "checkpoint_name",
    "clean_stale",
    "commit_temporary",
    "comparable_model_config",
    "find_checkpoints",
    "latest_checkpoint",
    "load_rng_state",
    "load_tensors",
    "load_torch_state",
    "one_line_error",
    "prepare_temporary",
    "prune_checkpoints",
    "read_json_file",
    "read_trainer_state",
    "restore_rng_state",
    "save_rng_state",
    "save_tensors",
    "save_torch_state",
    "temporary_path",
    "write_json",
]
