"""Shared by the converters: safe reading of ``torch.save`` checkpoints and atomic writing of the result.

Everything goes through ``torch.load(..., weights_only=True)``. Some checkpoints also pickle objects
the converters never need (demucs stores its model class, ``argparse.Namespace`` training arguments
holding ``pathlib`` paths; some exports keep numpy scalars in their metadata). Such globals are
*not imported*: each one named by the file is replaced by an inert `OpaqueObject` subclass that
only records the arguments and state the pickle hands it, so nothing from the file is executed. The
converters then refuse any opaque value that ends up where they need data (a state dict, the model
arguments).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

_UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL ([\w.]+) was not an allowed global")
MAX_OPAQUE_GLOBALS = 64


class OpaqueObject:
    """Stand-in for a global named by a checkpoint; calling or rebuilding it records, never runs."""

    qualified_name: str = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.qualified_name}>"


def opaque_class(qualified_name: str) -> type[OpaqueObject]:
    """A fresh `OpaqueObject` subclass standing for the global ``qualified_name``."""
    name = qualified_name.rsplit(".", 1)[-1] or "Opaque"
    return type(name, (OpaqueObject,), {"qualified_name": qualified_name})


def is_opaque(value: Any, qualified_name: str | None = None) -> bool:
    """Whether ``value`` is an opaque stand-in (an instance or the class itself), optionally for one name."""
    cls = value if isinstance(value, type) else type(value)
    if not (isinstance(cls, type) and issubclass(cls, OpaqueObject)):
        return False
    return qualified_name is None or cls.qualified_name == qualified_name


def load_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` with inert stand-ins for the globals it refuses."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    stand_ins: dict[str, type[OpaqueObject]] = {}
    while True:
        try:
            with torch.serialization.safe_globals([(cls, name) for name, cls in stand_ins.items()]):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            names = _UNSUPPORTED_GLOBAL.findall(str(error))
            fresh = [name for name in names if name not in stand_ins]
            if not fresh or len(stand_ins) >= MAX_OPAQUE_GLOBALS:
                raise ValueError(
                    f"{path} cannot be read safely with torch.load(weights_only=True): "
                    f"{str(error).splitlines()[0]}"
                ) from None
            for name in fresh:
                stand_ins[name] = opaque_class(name)
        except (RuntimeError, EOFError, OSError) as error:
            raise ValueError(f"cannot read {path} as a PyTorch checkpoint: {error}") from None


def require_plain(value: Any, where: str) -> Any:
    """Raise if ``value`` (recursively) holds an opaque stand-in; return it unchanged otherwise."""
    if is_opaque(value):
        raise ValueError(f"{where} holds a pickled {type(value).qualified_name} object, which is refused")
    if isinstance(value, dict):
        for key, item in value.items():
            require_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            require_plain(item, f"{where}[{index}]")
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


def preprocessor_config(sampling_rate: int, audio_channels: int) -> dict[str, Any]:
    """The feature extractor settings saved next to the model (``preprocessor_config.json``)."""
    return {
        "feature_extractor_type": "SourceSeparationFeatureExtractor",
        "feature_size": audio_channels,
        "sampling_rate": sampling_rate,
        "padding_value": 0.0,
        "padding_side": "right",
        "return_attention_mask": False,
        "channel_policy": "auto",
    }


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool) -> Path:
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(
            f"{output_dir} already exists (pass overwrite=True / --overwrite to replace it)"
        )
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"{output_dir} exists and is not a folder")
    return output_dir


def save_model_folder(model: Any, output_dir: Path) -> Path:
    """``save_pretrained`` + ``preprocessor_config.json`` in a staging folder, then moved in atomically."""
    config = model.config
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(staging)
        settings = preprocessor_config(config.sampling_rate, config.audio_channels)
        (staging / "preprocessor_config.json").write_text(json.dumps(settings, indent=2) + "\n")
        if output_dir.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old.", dir=output_dir.parent))
            os.replace(output_dir, retired / output_dir.name)
            os.replace(staging, output_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return output_dir


def load_into_model(model: Any, state_dict: dict[str, torch.Tensor], description: str) -> None:
    """Strict load that lists missing / unexpected / mismatched keys in one ValueError."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state_dict.items()
        if key in expected and value.shape != expected[key].shape
    ]
    if missing or unexpected or mismatched:
        lines = [f"{description} does not match the architecture {model.config.to_diff_dict()}:"]
        for title, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if keys:
                lines.append(
                    f"  {title} ({len(keys)}): " + ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else "")
                )
        raise ValueError("\n".join(lines))
    model.load_state_dict(
        {key: value.to(expected[key].dtype) for key, value in state_dict.items()}, strict=True
    )
    model.eval()


__all__ = [
    "OpaqueObject",
    "check_output_dir",
    "is_opaque",
    "load_checkpoint",
    "load_into_model",
    "opaque_class",
    "preprocessor_config",
    "require_plain",
    "save_model_folder",
    "strip_prefixes",
    "tensor_state_dict",
]
