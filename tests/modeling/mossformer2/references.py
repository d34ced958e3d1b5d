"""Load the two reference MossFormer2 implementations without their heavy dependencies.

* ModelScope's ``modelscope/models/audio/separation/m2`` (the ``modelscope`` PyPI package) imports
  ``modelscope.metainfo``, ``modelscope.models`` (registry and ``TorchModel``) and
  ``modelscope.utils.constant``; importing the real package needs its hub client and much more.
* ClearerVoice-Studio's ``clearvoice/models/mossformer2_ss`` (the ``clearvoice`` PyPI package,
  installed ``--no-deps``) imports ``torchinfo``; the ``clearvoice`` package itself imports
  librosa, OpenCV and more.

The model files are executed under their own module names with small stand-ins for those imports
(``einops`` and ``rotary_embedding_torch`` are the real ones). The stand-ins live in
``sys.modules`` only while the files load and while a reference model is built, so no other test
sees a fake ``modelscope``, ``clearvoice`` or ``torchinfo``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

MODELSCOPE_PACKAGE = "modelscope.models.audio.separation.m2"
MODELSCOPE_FILES = ("layer_norm", "conv_module", "fsmn", "mossformer_block", "mossformer")
CLEARVOICE_PACKAGE = "clearvoice.models.mossformer2_ss"
CLEARVOICE_FILES = ("layer_norm", "conv_module", "fsmn", "mossformer2_block", "mossformer2")

# The 8 kHz release's configuration.json "model" section (damo/speech_mossformer2_separation_temporal_8k)
MODELSCOPE_RELEASE_KWARGS: dict[str, Any] = {
    "in_channels": 512,
    "out_channels": 512,
    "num_blocks": 24,
    "kernel_size": 16,
    "norm": "ln",
    "num_spks": 2,
    "skip_around_intra": True,
    "use_global_pos_enc": True,
    "max_length": 20000,
}
# ClearerVoice's config/inference/MossFormer2_SS_16K.yaml (the fields its network reads)
CLEARVOICE_RELEASE_YAML: dict[str, Any] = {
    "mode": "inference",
    "sampling_rate": 16000,
    "network": "MossFormer2_SS_16K",
    "one_time_decode_length": 2,
    "decode_window": 2,
    "num_spks": 2,
    "encoder_kernel_size": 16,
    "encoder_embedding_dim": 512,
    "mossformer_sequence_dim": 512,
    "num_mossformer_layer": 24,
}


def _package_dir(distribution: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(distribution)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the {distribution} package (reference implementation) is not installed")
    return Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)


class _Registry:
    def register_module(self, *args: Any, **kwargs: Any):
        return lambda cls: cls


class _Names:
    def __getattr__(self, name: str) -> str:
        return name


class _ModelFile(_Names):
    TORCH_MODEL_FILE = "pytorch_model.pt"


class _TorchModel(nn.Module):
    def __init__(self, model_dir: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.model_dir = model_dir


def _module(name: str, **attributes: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attributes)
    mod.__path__ = []  # a package, so that submodules resolve through sys.modules
    return mod


def _modelscope_stubs() -> dict[str, types.ModuleType]:
    return {
        "modelscope": _module("modelscope"),
        "modelscope.metainfo": _module("modelscope.metainfo", Models=_Names()),
        "modelscope.models": _module("modelscope.models", MODELS=_Registry(), TorchModel=_TorchModel),
        "modelscope.models.audio": _module("modelscope.models.audio"),
        "modelscope.models.audio.separation": _module("modelscope.models.audio.separation"),
        MODELSCOPE_PACKAGE: _module(MODELSCOPE_PACKAGE),
        "modelscope.utils": _module("modelscope.utils"),
        "modelscope.utils.constant": _module(
            "modelscope.utils.constant", Tasks=_Names(), ModelFile=_ModelFile()
        ),
    }


def _clearvoice_stubs() -> dict[str, types.ModuleType]:
    return {
        "clearvoice": _module("clearvoice"),
        "clearvoice.models": _module("clearvoice.models"),
        CLEARVOICE_PACKAGE: _module(CLEARVOICE_PACKAGE),
        "torchinfo": _module("torchinfo", summary=lambda *args, **kwargs: None),
    }


@contextlib.contextmanager
def _temporary_modules(modules: dict[str, types.ModuleType]) -> Iterator[None]:
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name, previous in saved.items():
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous


_LOADED: dict[str, dict[str, types.ModuleType]] = {}


def _load(package: str, source_dir: Path, files: tuple[str, ...], stubs: dict[str, types.ModuleType]):
    if package in _LOADED:
        return _LOADED[package]
    loaded: dict[str, types.ModuleType] = {}
    names = [f"{package}.{short_name}" for short_name in files]
    previous = {name: sys.modules.get(name) for name in names}
    try:
        with _temporary_modules(stubs):
            for short_name, name in zip(files, names, strict=True):
                spec = importlib.util.spec_from_file_location(name, source_dir / f"{short_name}.py")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
                loaded[short_name] = module
    finally:
        for name, module in previous.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    _LOADED[package] = loaded
    return loaded


def build_modelscope_reference(**overrides: Any) -> nn.Module:
    """ModelScope's ``MossFormer2`` at the 8 kHz release's size (``overrides`` change kwargs), eval mode."""
    modules = _load(
        MODELSCOPE_PACKAGE,
        _package_dir("modelscope", "models", "audio", "separation", "m2"),
        MODELSCOPE_FILES,
        _modelscope_stubs(),
    )
    kwargs = {**MODELSCOPE_RELEASE_KWARGS, **overrides}
    torch.manual_seed(0)
    with _temporary_modules(_modelscope_stubs()):
        model = modules["mossformer"].MossFormer2("unused-model-dir", **kwargs)
    return model.eval()


def build_clearvoice_reference(**overrides: Any) -> nn.Module:
    """ClearerVoice's ``MossFormer2_SS_16K(args).model`` (``overrides`` change yaml fields), eval mode."""
    modules = _load(
        CLEARVOICE_PACKAGE,
        _package_dir("clearvoice", "models", "mossformer2_ss"),
        CLEARVOICE_FILES,
        _clearvoice_stubs(),
    )
    args = types.SimpleNamespace(**{**CLEARVOICE_RELEASE_YAML, **overrides})
    torch.manual_seed(0)
    with _temporary_modules(_clearvoice_stubs()):
        model = modules["mossformer2"].MossFormer2_SS_16K(args).model
    return model.eval()


def modelscope_separate(model: nn.Module, mixture: torch.Tensor) -> torch.Tensor:
    """ModelScope forward on ``(batch, time)``, returned as ``(batch, sources, 1, time)``."""
    with torch.no_grad():
        estimates = model(mixture)  # (batch, time, sources)
    return estimates.permute(0, 2, 1)[:, :, None, :]


def clearvoice_separate(model: nn.Module, mixture: torch.Tensor) -> torch.Tensor:
    """ClearerVoice forward on ``(batch, time)`` (a list per speaker) as ``(batch, sources, 1, time)``."""
    with torch.no_grad():
        estimates = model(mixture)
    return torch.stack(estimates, dim=1)[:, :, None, :]


def save_modelscope_layout(model: nn.Module, folder: Path, model_kwargs: dict[str, Any]) -> Path:
    """The 8 kHz release's files: configuration.json and pytorch_model.pt (the whole state dict)."""
    folder.mkdir(parents=True, exist_ok=True)
    configuration = {
        "framework": "pytorch",
        "task": "speech-separation",
        "model": {"type": "speech_mossformer2_separation_temporal_8k", **model_kwargs},
        "pipeline": {"type": "speech_mossformer2_separation_temporal_8k"},
        "preprocessor": {},
    }
    (folder / "configuration.json").write_text(json.dumps(configuration, indent=2))
    torch.save(model.state_dict(), folder / "pytorch_model.pt")
    return folder


def save_clearvoice_layout(
    model: nn.Module, folder: Path, yaml_fields: dict[str, Any], prefix: str = "module."
) -> Path:
    """ClearerVoice's checkpoint folder: ``last_best_checkpoint`` naming the torch file, whose
    weights sit under ``model`` (DDP-trained, so with a ``module.`` prefix), and the inference yaml."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    state = {f"{prefix}{key}": value for key, value in model.state_dict().items()}
    torch.save({"model": state, "epoch": 12, "step": 3400}, folder / "last_best_model.pt")
    (folder / "last_best_checkpoint").write_text("last_best_model.pt\n")
    config_dir = folder / "config" / "inference"
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "MossFormer2_SS_16K.yaml").write_text(
        yaml.safe_dump({**CLEARVOICE_RELEASE_YAML, **yaml_fields})
    )
    return folder
