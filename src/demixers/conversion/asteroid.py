"""Reading asteroid's model packages (``asteroid.models.BaseModel.serialize``), shared by the converters.

A package is a ``torch.save`` dict with ``model_name``, ``model_args`` (the constructor arguments) and
``state_dict``, read through the toolkit's safe loader; a folder holding exactly one such file works too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .utils import load_checkpoint, require_plain, strip_prefixes, tensor_state_dict

CHECKPOINT_SUFFIXES = (".bin", ".pth", ".pt", ".ckpt")
FREE_FILTERBANKS = ("free", "freefb")


def find_checkpoint_file(source: str | os.PathLike) -> Path:
    """``source`` itself when it is a file, else the one checkpoint file in the folder ``source``."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    if source.is_file():
        return source
    files = [
        path for path in sorted(source.iterdir()) if path.is_file() and path.suffix in CHECKPOINT_SUFFIXES
    ]
    if len(files) != 1:
        raise ValueError(
            f"{source} must hold exactly one asteroid checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}), "
            f"found {[path.name for path in files]}"
        )
    return files[0]


def load_asteroid_package(source: str | os.PathLike, model_names: tuple[str, ...]) -> dict[str, Any]:
    """Read an asteroid package: returns ``{"model_name", "model_args", "state_dict"}``."""
    path = find_checkpoint_file(source)
    package = load_checkpoint(path)
    if not isinstance(package, Mapping) or "state_dict" not in package or "model_args" not in package:
        keys = sorted(map(str, package))[:10] if isinstance(package, Mapping) else type(package).__name__
        raise ValueError(
            f"{path} is not an asteroid model package (a dict with 'model_name', 'model_args' and "
            f"'state_dict', as asteroid's serialize() writes); found {keys}"
        )
    model_name = package.get("model_name")
    if model_name not in model_names:
        raise ValueError(f"{path} holds an asteroid {model_name!r}, not one of {model_names}")
    model_args = package["model_args"]
    if not isinstance(model_args, Mapping):
        raise ValueError(f"{path}: model_args is not a dict ({type(model_args).__name__})")
    model_args = dict(require_plain(dict(model_args), f"{path}: model_args"))
    state_dict = tensor_state_dict(package["state_dict"], f"{path}: state_dict")
    return {
        "model_name": model_name,
        "model_args": model_args,
        "state_dict": strip_prefixes(state_dict, ("module.", "model.")),
    }


def check_free_filterbank(model_args: Mapping[str, Any]) -> None:
    """Only asteroid's learned ("free") filterbank converts: the others derive their filters."""
    fb_name = str(model_args.get("fb_name", "free")).lower()
    if fb_name not in FREE_FILTERBANKS:
        raise ValueError(
            f"model_args['fb_name']={model_args.get('fb_name')!r}: only asteroid's free filterbank converts "
            "(analytic, sinc and STFT filterbanks derive their filters from other parameters)"
        )


def sampling_rate_from_args(model_args: Mapping[str, Any]) -> int:
    """``model_args['sample_rate']`` (asteroid's default 8000 when absent or None) as whole Hz."""
    sample_rate = model_args.get("sample_rate", 8000)
    if sample_rate is None:
        sample_rate = 8000
    if float(sample_rate) != int(sample_rate) or int(sample_rate) <= 0:
        raise ValueError(f"model_args['sample_rate']={sample_rate!r} is not a positive whole number of Hz")
    return int(sample_rate)
