"""Write reference (``demucs`` package) models in the two release formats, for the parity tests.

* ``.th``: the package dict ``demucs.states.serialize_model`` builds (class, init args, half
  precision state), saved with ``torch.save`` under ``{sig}-{sha256[:8]}.th`` as
  ``demucs.states.save_with_checksum`` names it;
* Hugging Face: ``{sig}.safetensors`` with the class path and the JSON-encoded init args in its
  metadata (fractions as ``{"_type": "fraction", ...}``), as ``demucs.hf.load_safetensors_model``
  reads it, plus a ``{sig}.json`` sidecar, and a bag yaml.
"""

from __future__ import annotations

import hashlib
import io
import json
from fractions import Fraction
from pathlib import Path

import torch
import yaml


def _encode_json(value):
    if isinstance(value, Fraction):
        return {"_type": "fraction", "numerator": value.numerator, "denominator": value.denominator}
    if isinstance(value, dict):
        return {key: _encode_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode_json(item) for item in value]
    return value


def half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu", torch.half).clone() for key, value in model.state_dict().items()}


def export_th(model: torch.nn.Module, folder: Path, sig: str, klass=None) -> Path:
    args, kwargs = model._init_args_kwargs
    package = {
        "klass": klass or type(model),
        "args": args,
        "kwargs": kwargs,
        "state": half_state(model),
        "training_args": {"seed": 42, "optim": {"lr": 3e-4}},
    }
    buffer = io.BytesIO()
    torch.save(package, buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
    path = folder / f"{sig}-{digest}.th"
    path.write_bytes(buffer.getvalue())
    return path


def export_hf(model: torch.nn.Module, folder: Path, sig: str, sidecar: bool = True) -> Path:
    from safetensors.torch import save_file

    args, kwargs = model._init_args_kwargs
    klass = f"{type(model).__module__}.{type(model).__name__}"
    metadata = {
        "klass": klass,
        "args": json.dumps(_encode_json(list(args))),
        "kwargs": json.dumps(_encode_json(kwargs)),
    }
    path = folder / f"{sig}.safetensors"
    save_file(half_state(model), str(path), metadata=metadata)
    if sidecar:
        (folder / f"{sig}.json").write_text(
            json.dumps({"klass": klass, "args": _encode_json(list(args)), "kwargs": _encode_json(kwargs)})
        )
    return path


def write_bag(folder: Path, name: str, sigs: list[str], weights=None, segment=None) -> Path:
    bag: dict = {"models": list(sigs)}
    if weights is not None:
        bag["weights"] = weights
    if segment is not None:
        bag["segment"] = segment
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(bag))
    return path


def max_diffs(actual: torch.Tensor, expected: torch.Tensor) -> tuple[float, float]:
    """(max abs difference, max abs difference / max abs expected value)."""
    diff = float((actual - expected).abs().max())
    return diff, diff / max(float(expected.abs().max()), 1e-12)
