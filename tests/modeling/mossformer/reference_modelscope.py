"""Load ModelScope's reference MossFormer (``modelscope`` PyPI package) without its heavy dependencies.

The reference modules import ``modelscope.metainfo``, ``modelscope.models`` (registry and
``TorchModel``), ``modelscope.utils.constant`` and, at construction time, ``speechbrain``'s
``LayerNorm``. Importing the real ``modelscope`` package needs its hub client and much more, so
the three source files are executed under their own module names with small stand-ins for those
imports. The stand-ins live in ``sys.modules`` only while the files load and while a reference
model is built, so no other test sees a fake ``modelscope`` or ``speechbrain``.

Only ``build_reference_model`` and ``save_official_layout`` are meant to be used by tests.
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

PACKAGE = "modelscope.models.audio.separation"
FILES = ("mossformer_conv_module", "mossformer_block", "mossformer")

# The release's architecture, as its configuration.json "model" section passes it to the constructor.
RELEASE_MODEL_KWARGS: dict[str, Any] = {
    "num_spks": 2,
    "kernel_size": 16,
    "stride": 8,
    "in_channels": 512,
    "out_channels": 512,
    "bias": False,
    "num_blocks": 24,
    "d_model": 512,
    "attn_dropout": 0.1,
    "group_size": 256,
    "query_key_dim": 128,
    "expansion_factor": 4.0,
    "causal": False,
    "norm": "ln",
}


def reference_source_dir() -> Path:
    spec = importlib.util.find_spec("modelscope")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the modelscope package (reference implementation) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models" / "audio" / "separation"


class _Registry:
    def register_module(self, *args: Any, **kwargs: Any):
        return lambda cls: cls


class _Names:
    def __getattr__(self, name: str) -> str:
        return name


class _TorchModel(nn.Module):
    def __init__(self, model_dir: str | None = None, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.model_dir = model_dir


class _SpeechBrainLayerNorm(nn.Module):
    """speechbrain.nnet.normalization.LayerNorm: a torch LayerNorm stored as ``.norm``."""

    def __init__(
        self, input_size: int, input_shape: Any = None, eps: float = 1e-5, elementwise_affine: bool = True
    ):
        super().__init__()
        self.norm = nn.LayerNorm(input_size, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


def _stub_modules() -> dict[str, types.ModuleType]:
    def module(name: str, **attributes: Any) -> types.ModuleType:
        mod = types.ModuleType(name)
        mod.__dict__.update(attributes)
        mod.__path__ = []  # a package, so that submodules resolve through sys.modules
        return mod

    normalization = module("speechbrain.nnet.normalization", LayerNorm=_SpeechBrainLayerNorm)
    nnet = module("speechbrain.nnet", normalization=normalization)
    return {
        "modelscope": module("modelscope"),
        "modelscope.metainfo": module("modelscope.metainfo", Models=_Names()),
        "modelscope.models": module("modelscope.models", MODELS=_Registry(), TorchModel=_TorchModel),
        "modelscope.models.base": module("modelscope.models.base", Tensor=torch.Tensor),
        "modelscope.models.audio": module("modelscope.models.audio"),
        PACKAGE: module(PACKAGE),
        "modelscope.utils": module("modelscope.utils"),
        "modelscope.utils.constant": module("modelscope.utils.constant", Tasks=_Names()),
        "speechbrain": module("speechbrain", nnet=nnet),
        "speechbrain.nnet": nnet,
        "speechbrain.nnet.normalization": normalization,
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


_LOADED: dict[str, types.ModuleType] = {}


def _load() -> dict[str, types.ModuleType]:
    if _LOADED:
        return _LOADED
    source_dir = reference_source_dir()
    names = [f"{PACKAGE}.{short_name}" for short_name in FILES]
    previous = {name: sys.modules.get(name) for name in names}
    try:
        with _temporary_modules(_stub_modules()):
            for short_name, name in zip(FILES, names, strict=True):
                spec = importlib.util.spec_from_file_location(name, source_dir / f"{short_name}.py")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
                _LOADED[short_name] = module
    finally:
        for name, module in previous.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
    return _LOADED


def build_reference_model(randomize: bool = True, seed: int = 0, **overrides: Any) -> nn.Module:
    """ModelScope's ``MossFormer`` at the release architecture (``overrides`` change fields), in eval mode.

    With ``randomize``, parameters that PyTorch initialises to constants (norm gains and biases,
    scales, PReLU slope, offsets) get random values too, so that parity covers every weight.
    """
    modules = _load()
    kwargs = {**RELEASE_MODEL_KWARGS, **overrides}
    torch.manual_seed(seed)
    with _temporary_modules(_stub_modules()):
        model = modules["mossformer"].MossFormer("unused-model-dir", **kwargs)
    if randomize:
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.numel() == 1 or float(parameter.std()) == 0.0:
                    parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def official_configuration(**model_kwargs: Any) -> dict[str, Any]:
    """A ModelScope ``configuration.json`` for the given constructor kwargs."""
    return {
        "framework": "pytorch",
        "task": "speech-separation",
        "model": {"type": "speech_mossformer_separation_temporal_8k", **model_kwargs},
        "pipeline": {"type": "speech_mossformer_separation_temporal_8k"},
    }


def save_official_layout(model: nn.Module, folder: Path, model_kwargs: dict[str, Any]) -> Path:
    """Write the release's files: configuration.json and the three state dicts ModelScope loads."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration.json").write_text(json.dumps(official_configuration(**model_kwargs), indent=2))
    torch.save(model.encoder.state_dict(), folder / "encoder.bin")
    torch.save(model.decoder.state_dict(), folder / "decoder.bin")
    torch.save(model.mask_net.state_dict(), folder / "masknet.bin")
    return folder


def reference_separate(model: nn.Module, mixture: torch.Tensor) -> torch.Tensor:
    """Reference forward on ``(batch, time)``, returned as ``(batch, sources, 1, time)``."""
    with torch.no_grad():
        estimates = model(mixture)  # (batch, time, sources)
    return estimates.permute(0, 2, 1)[:, :, None, :]


def check_reference_load_round_trip(model: nn.Module, folder: Path) -> None:
    """The folder written by ``save_official_layout`` loads back with ModelScope's own loader."""
    model.load_check_point(str(folder))
