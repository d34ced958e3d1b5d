"""Crash-safe checkpoints of a training run.

Layout of an output directory::

    train_config.yaml          the resolved recipe
    checkpoint-00000040/       a resumable checkpoint (the newest `total_limit` are kept)
        model.safetensors, optimizer.bin, scaler.pt, custom_checkpoint_*.pkl, random_states_*.pkl
                               `accelerator.save_state` (weights, optimizer, EMA, schedule, RNGs)
        model/                 `save_pretrained` folder (EMA weights when EMA is on) + feature extractor
        trainer_state.json     step, epoch, metrics, world size, model config; written last
    best/                      `save_pretrained` folder of the best validation so far (+ eval_results.json)
    last/                      `save_pretrained` folder of the newest checkpoint / the end of training
    logs/                      tracker output (TensorBoard)

Every folder is written under a temporary name (``.tmp-<name>``) and renamed when complete, so a
kill at any moment leaves either the previous folder or the new one, never a half-written one;
older checkpoints are pruned only after the new one has been renamed into place. A checkpoint is
"complete" when it has ``trainer_state.json``; temporary and incomplete folders are ignored by
`find_checkpoints` and removed by `clean_stale`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE_NAME = "trainer_state.json"
MODEL_SUBDIR = "model"
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
_CHECKPOINT_RE = re.compile(rf"^{CHECKPOINT_PREFIX}(\d+)$")

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


def read_trainer_state(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(checkpoint) / TRAINER_STATE_NAME
    if not path.is_file():
        raise ResumeError(f"{checkpoint} is not a complete checkpoint (no {TRAINER_STATE_NAME})")
    return json.loads(path.read_text(encoding="utf-8"))


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
    "CHECKPOINT_PREFIX",
    "MODEL_SUBDIR",
    "TRAINER_STATE_NAME",
    "ResumeError",
    "atomic_directory",
    "check_resume_compatible",
    "checkpoint_name",
    "clean_stale",
    "commit_temporary",
    "comparable_model_config",
    "find_checkpoints",
    "latest_checkpoint",
    "prepare_temporary",
    "prune_checkpoints",
    "read_trainer_state",
    "temporary_path",
    "write_json",
]
