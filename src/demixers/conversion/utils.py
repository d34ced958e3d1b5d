"""Checks shared by the converters on what a checkpoint holds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .unpickler import is_opaque, restricted_load


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Read a ``torch.save`` file with the restricted reader (stand-ins for unknown globals)."""
    return restricted_load(path)[0]


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with a one-line ValueError naming the file when it is unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read {path} as a safetensors file: {_first_line(error)}") from None


def require_plain(value: Any, where: str) -> Any:
    """Raise if ``value`` (recursively) holds a stand-in for a pickled object; else return it unchanged."""
    seen: set[int] = set()
    pending: list[tuple[Any, str]] = [(value, where)]
    while pending:
        item, place = pending.pop()
        if is_opaque(item):
            name = item.qualified_name
            raise ValueError(f"{place} holds a pickled {name} object, which is refused")
        if id(item) in seen:
            continue
        if isinstance(item, dict):
            seen.add(id(item))
            pending.extend((child, f"{place}[{key!r}]") for key, child in item.items())
        elif isinstance(item, (list, tuple)):
            seen.add(id(item))
            pending.extend((child, f"{place}[{index}]") for index, child in enumerate(item))
    return value


def tensor_state_dict(value: Any, where: str) -> dict[str, torch.Tensor]:
    """``value`` as a ``{name: tensor}`` dict, or a ValueError saying what it is instead."""
    if not isinstance(value, dict) or not value:
        raise ValueError(f"{where} is not a state dict (found {type(value).__name__})")
    bad = [
        str(key)
        for key, item in value.items()
        if not isinstance(key, str) or not isinstance(item, torch.Tensor)
    ]
    if bad:
        raise ValueError(f"{where} is not a state dict: non-tensor entries {bad[:10]}")
    return dict(value)


def strip_prefixes(state_dict: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Remove a prefix shared by every key (``module.`` of DataParallel, ``model.`` of Lightning)."""
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if state_dict and all(key.startswith(prefix) for key in state_dict):
                state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
                changed = True
    return state_dict


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


__all__ = ["load_checkpoint", "load_safetensors", "require_plain", "strip_prefixes", "tensor_state_dict"]
