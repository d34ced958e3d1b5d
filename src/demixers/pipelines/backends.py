"""How the pipeline runs a model's forward: eager torch (default) or onnxruntime (optionally with
int8 linear layers). Every backend goes through the same chunk engine; only the call
``input_values (chunks, channels, time) -> audio_values (chunks, sources, channels, time)`` changes.

* ``backend="torch"`` (default): the model's forward under ``inference_mode``.
* ``backend="onnx"``: the model exported to ONNX (`demixers.export.export_onnx`, or the file given
  as ``onnx_model=``) and run by onnxruntime on the CPU (bags: each member is exported).
* ``quantize="int8"``: onnxruntime with the linear layers dynamically quantized to int8 (implies
  ``backend="onnx"``): faster where linear layers dominate (MossFormer), with a small loss of
  fidelity (benchmarks/RESULTS.md gives the SI-SNRi/SDR change).

`add_performance_arguments` / `apply_performance_options` expose the same options on a command
line (``--backend``, ``--onnx-model``, ``--quantize``).

``torch.compile`` is deliberately not offered: on this project's CPU it made the models slower
(benchmarks/RESULTS.md, round 2: 2.0x the eager CPU time on the bundled MossFormer, equal outputs),
and its GPU gain is measured by ``benchmarks/gpu.sh`` before it is exposed.
"""

from __future__ import annotations

import argparse
import importlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where a runner is built: the CLI's option helpers stay light
    import torch

BACKENDS = ("torch", "onnx")
QUANTIZATION_MODES = ("int8",)

SeparateFn = Callable[["torch.Tensor"], "torch.Tensor"]


def check_backend_options(
    backend: str | None, onnx_model: str | os.PathLike[str] | None, quantize: str | None
) -> str:
    """Validate a combination of options; returns the backend they resolve to."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if quantize is not None and quantize not in QUANTIZATION_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZATION_MODES} or None, got {quantize!r}")
    resolved = backend or ("onnx" if quantize is not None or onnx_model is not None else "torch")
    if resolved == "torch" and quantize is not None:
        raise ValueError(
            f"quantize={quantize!r} runs through onnxruntime: use backend='onnx' (or leave it unset)"
        )
    if resolved == "torch" and onnx_model is not None:
        raise ValueError("onnx_model= needs backend='onnx'")
    if onnx_model is not None and not isinstance(onnx_model, (str, os.PathLike)):
        raise TypeError(
            f"onnx_model must be a path to an exported .onnx file, got {type(onnx_model).__name__}"
        )
    return resolved


class ModelRunners:
    """The forward functions of a pipeline's model(s) for one backend, built once per model."""

    def __init__(
        self,
        backend: str | None = None,
        onnx_model: str | os.PathLike[str] | None = None,
        quantize: str | None = None,
    ) -> None:
        self.backend = check_backend_options(backend, onnx_model, quantize)
        self.onnx_model = onnx_model
        self.quantize = quantize
        self._runners: dict[int, tuple[torch.nn.Module, SeparateFn]] = {}

    def prepare(self, model: torch.nn.Module, device: torch.device) -> None:
        """Build the runners now (ONNX exports happen here, so errors come before any audio)."""
        import torch

        sub_models = getattr(model, "models", None)
        is_bag = (
            isinstance(sub_models, torch.nn.ModuleList) and getattr(model.config, "weights", None) is not None
        )
        if self.backend == "onnx":
            if device.type != "cpu":
                raise ValueError(f"backend='onnx' runs on the CPU, the pipeline's device is {device}")
            if is_bag and self.onnx_model is not None:
                raise ValueError(
                    "onnx_model= is one exported file, the model is a bag: leave onnx_model unset and "
                    "each member is exported"
                )
        for target in list(sub_models) if is_bag else [model]:
            self.runner(target)

    def runner(self, model: torch.nn.Module) -> SeparateFn:
        key = id(model)
        if key not in self._runners:
            self._runners[key] = (model, self._build(model))  # the model is kept: ids stay unique
        return self._runners[key][1]

    def _build(self, model: torch.nn.Module) -> SeparateFn:
        if self.backend == "onnx":
            return _onnx_separator_class()(model, self.onnx_model, quantize=self.quantize)

        def run_eager(input_values: torch.Tensor) -> torch.Tensor:
            return model(input_values=input_values).audio_values

        return run_eager

    def close(self) -> None:
        for _, runner in self._runners.values():
            close = getattr(runner, "close", None)
            if close is not None:
                close()
        self._runners.clear()


def _onnx_separator_class() -> type:
    # The exporter is part of the demixers package, not of the pipeline files a Hub repo carries
    # (`remote_code.PIPELINE_CODE_FILES`), so it is found by name at run time.
    try:
        module = importlib.import_module("demixers.export")
    except ImportError as error:
        raise ImportError(
            "backend='onnx' needs the demixers package with its onnx extra: pip install 'demixers[onnx]'"
        ) from error
    return module.OnnxSeparator


# -- command line ---------------------------------------------------------------------------------


def add_performance_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend``, ``--onnx-model`` and ``--quantize`` (see `apply_performance_options`)."""
    group = parser.add_argument_group("performance")
    group.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="run the model with torch (default) or onnxruntime (CPU; the model is exported first)",
    )
    group.add_argument(
        "--onnx-model",
        default=None,
        metavar="FILE.onnx",
        help="with --backend onnx: a file `demixers export onnx` made from this model (default: export now)",
    )
    group.add_argument(
        "--quantize",
        choices=QUANTIZATION_MODES,
        default=None,
        help="int8: dynamic int8 quantization of the linear layers (onnxruntime; slightly lower quality)",
    )


def apply_performance_options(pipeline: Any, args: argparse.Namespace) -> Any:
    """Switch ``pipeline`` to the backend the parsed ``args`` ask for; returns the pipeline."""
    pipeline.set_backend(
        backend=getattr(args, "backend", None),
        onnx_model=getattr(args, "onnx_model", None),
        quantize=getattr(args, "quantize", None),
    )
    return pipeline


def check_performance_arguments(args: argparse.Namespace) -> None:
    """Option combinations, checked before any model is loaded."""
    check_backend_options(
        getattr(args, "backend", None),
        getattr(args, "onnx_model", None),
        getattr(args, "quantize", None),
    )
    onnx_model = getattr(args, "onnx_model", None)
    if onnx_model is not None and not os.path.isfile(onnx_model):
        raise FileNotFoundError(f"--onnx-model {onnx_model}: no such file")
