"""ONNX export of demixers models and an onnxruntime runner with the model's own contract.

What goes into the graph
    * MossFormer and Conv-TasNet: the whole model, ``input_values`` ``(batch, channels, time)`` ->
      ``audio_values`` ``(batch, sources, channels, time)``, batch and time dynamic (at least
      ``encoder_kernel_size`` samples: `OnnxSeparator` zero-pads shorter inputs and trims the
      output, as the torch model does).
    * HTDemucs and hybrid HDemucs: both U-Nets (and the cross-domain transformer), but not the STFT
      and its inverse: ONNX has no complex type and no inverse STFT. The graph takes the real
      spectral features ``(batch, 2 * channels, bins, frames)`` and the waveform ``(batch,
      channels, time)`` and returns the de-normalised spectrum ``(batch, sources, channels, bins,
      frames, 2)`` (real, imaginary) and waveform ``(batch, sources, channels, time)``;
      `OnnxSeparator` computes the STFT before and the iSTFT after in torch, exactly as the model
      does. Models trained with ``use_train_segment`` (the releases) always run on their segment:
      the runner pads shorter inputs to it and refuses longer ones, as the model does.

The file carries its origin in the ONNX metadata (``demixers.model_type``, ``demixers.graph``,
``demixers.config``): `OnnxSeparator` refuses a file exported from a different configuration.
Files are written to a temporary name beside the target and renamed, so a failed export never
leaves a half-written file.

Dynamic int8 quantization (`quantize_onnx_int8`) uses onnxruntime's dynamic quantizer on the
linear layers only (MatMul/Gemm with a constant weight), weights in int8 per output channel,
activations quantized per call.

`onnx`, `onnxruntime` and `onnxscript` are optional dependencies (``pip install demixers[onnx]``);
they are imported only when used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.files import atomic_output

ONNX_OPSET = 18
# model_type -> graph kind
EXPORTABLE_MODEL_TYPES: dict[str, str] = {
    "mossformer": "waveform",
    "conv_tasnet": "waveform",
    "htdemucs": "hybrid_spectrogram",
    "hdemucs": "hybrid_spectrogram",
}
METADATA_MODEL_TYPE = "demixers.model_type"
METADATA_GRAPH = "demixers.graph"
METADATA_CONFIG = "demixers.config"
METADATA_QUANTIZATION = "demixers.quantization"
QUANTIZATION_MODES = ("int8",)
EXTRA_HINT = "install the ONNX extra: pip install 'demixers[onnx]'"


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(f"ONNX export and inference need `{module}`: {EXTRA_HINT}") from error


def graph_kind(model: nn.Module) -> str:
    """The kind of graph `export_onnx` writes for ``model``; ValueError for a model it cannot export."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    kind = EXPORTABLE_MODEL_TYPES.get(model_type)
    if kind is None:
        if isinstance(getattr(model, "models", None), nn.ModuleList):
            raise ValueError(
                f"{type(model).__name__} is a bag of models: export each member (model.models[i]); "
                "the pipeline's ONNX backend does it for you"
            )
        raise ValueError(
            f"ONNX export supports {sorted(EXPORTABLE_MODEL_TYPES)} models, got {type(model).__name__} "
            f"(model_type {model_type!r})"
        )
    if kind == "hybrid_spectrogram" and not getattr(model, "_hybrid", True):
        raise ValueError(f"{type(model).__name__} with hybrid=False has no waveform branch: not exportable")
    if model_type == "htdemucs" and not getattr(config, "use_train_segment", False):
        # the transformer's position embeddings would follow the length with integer arithmetic
        # that onnxruntime rejects; the releases all run on their trained segment
        raise ValueError(
            "ONNX export of HTDemucs needs use_train_segment=True (the released models): the graph "
            "runs on the trained segment, which the pipeline's chunks are padded to"
        )
    return kind


def config_fingerprint(model: nn.Module) -> str:
    """The model's configuration as canonical JSON (what an exported file must have been made from)."""
    values = model.config.to_diff_dict()
    for key in ("transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype"):
        values.pop(key, None)
    return json.dumps(values, sort_keys=True, default=str)


class WaveformGraph(nn.Module):
    """MossFormer / Conv-TasNet as one graph for every length: ``(B, C, L)`` -> ``(B, S, C, L)``.

    The models' own length handling branches on Python integers (pad a too-short input, pad the
    output after the last full frame); here the output is always padded by the (symbolic, >= 0)
    number of missing samples, so one graph serves every length >= ``encoder_kernel_size``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.mono = model.config.model_type == "mossformer"

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        model = self.model
        batch, channels, length = input_values.shape
        mixture = input_values[:, 0] if self.mono else input_values
        features = model.encoder(mixture)
        masks = model.mask_net(features) if self.mono else model.separator(features)
        masked = (features[:, None] * masks).flatten(0, 1)
        audio = model.decoder(masked).reshape(batch, model.config.num_sources, channels, -1)
        return F.pad(audio, (0, length - audio.shape[-1]))


class HybridSpectrogramGraph(nn.Module):
    """The U-Nets of a hybrid (T)Demucs between its STFT and iSTFT (see the module docstring)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, spectral_features: torch.Tensor, mix: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, bins, frames = spectral_features.shape
        length = mix.shape[-1]
        sources = len(self.model.config.source_names)
        x, xt, (mean, std), (mean_t, std_t) = self.model._run_branches(spectral_features, mix)
        x = x.reshape(batch, sources, -1, bins, frames) * std[:, None] + mean[:, None]
        spectrum = x.reshape(batch, sources, -1, 2, bins, frames).permute(0, 1, 2, 4, 5, 3)
        waveform = xt.reshape(batch, sources, -1, length) * std_t[:, None] + mean_t[:, None]
        return spectrum, waveform


def _example_inputs(
    model: nn.Module, kind: str
) -> tuple[tuple[torch.Tensor, ...], Any, list[str], list[str]]:
    """Example inputs, their dynamic shapes, and the graph's input and output names."""
    config = model.config
    generator = torch.Generator().manual_seed(0)
    batch = torch.export.Dim("batch", min=1, max=1024)
    if kind == "waveform":
        kernel = int(config.encoder_kernel_size)
        length = max(4 * kernel, int(config.sampling_rate) // 4)
        example = torch.randn(2, config.audio_channels, length, generator=generator)
        time = torch.export.Dim("time", min=kernel, max=2**31 - 2)
        return (example,), ({0: batch, 2: time},), ["input_values"], ["audio_values"]
    fixed = bool(getattr(config, "use_train_segment", False))
    length = int(config.segment_length) if fixed else 4096
    mix = torch.randn(2, config.audio_channels, length, generator=generator)
    features = model._spectral_features(mix)
    if fixed:  # the release always runs on its segment: only the batch varies
        shapes: Any = ({0: batch}, {0: batch})
    else:  # frames follow the time: the graph sees both, tied through the STFT outside it
        shapes = ({0: batch, 3: torch.export.Dim.AUTO}, {0: batch, 2: torch.export.Dim.AUTO})
    return (features, mix), shapes, ["spectral_features", "mix"], ["spectrum", "waveform"]


def export_onnx(
    model: nn.Module, path: str | os.PathLike[str], *, opset: int = ONNX_OPSET, optimize: bool = True
) -> Path:
    """Export ``model`` (float32, CPU copy) to the ONNX file ``path``; returns the path.

    Raises ValueError for a model family that cannot be exported (see `EXPORTABLE_MODEL_TYPES`).
    """
    onnx = _require("onnx")
    _require("onnxscript")
    kind = graph_kind(model)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: the ONNX output is a file, got a directory")
    if not isinstance(opset, int) or opset < 17:
        raise ValueError(f"opset must be an integer >= 17, got {opset!r}")
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise ValueError(
            f"export a float32 CPU model (got {parameter.dtype} on {parameter.device}): "
            "call model.float().cpu() first"
        )
    was_training = model.training
    model.eval()
    graph = (WaveformGraph(model) if kind == "waveform" else HybridSpectrogramGraph(model)).eval()
    inputs, dynamic_shapes, input_names, output_names = _example_inputs(model, kind)
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                graph,
                inputs,
                dynamo=True,
                dynamic_shapes=dynamic_shapes,
                input_names=input_names,
                output_names=output_names,
                opset_version=opset,
                external_data=False,
                optimize=optimize,
            )
    finally:
        model.train(was_training)
    proto = program.model_proto
    metadata = {
        METADATA_MODEL_TYPE: model.config.model_type,
        METADATA_GRAPH: kind,
        METADATA_CONFIG: config_fingerprint(model),
    }
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "demixers"
    with atomic_output(path, suffix=".onnx.tmp") as temporary:
        onnx.save_model(proto, os.fspath(temporary))
    return path


@contextlib.contextmanager
def _quiet_exporter():
    """The exporter prints its progress to stdout and logs a warning per optional torchvision
    operator it cannot register (demixers uses none): keep both off the user's output."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
            yield
    finally:
        registration.setLevel(level)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``demixers.*`` metadata of an exported file (without loading its weights)."""
    onnx = _require("onnx")
    proto = onnx.load_model(os.fspath(path), load_external_data=False)
    return {entry.key: entry.value for entry in proto.metadata_props}


def quantize_onnx_int8(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Dynamic int8 quantization of the linear layers of the exported file ``source`` into ``target``.

    Only MatMul/Gemm whose weight is a constant (the linear layers) are quantized: int8 weights per
    output channel, activations quantized on the fly per call; attention products between
    activations, convolutions and norms stay float32.
    """
    onnx = _require("onnx")
    _require("onnxruntime")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target = Path(target)
    metadata = read_metadata(source)
    root = logging.getLogger()
    root.addFilter(_drop_preprocessing_advice)
    with atomic_output(target, suffix=".onnx.tmp") as temporary:
        try:
            quantize_dynamic(
                os.fspath(source),
                os.fspath(temporary),
                weight_type=QuantType.QInt8,
                per_channel=True,
                op_types_to_quantize=["MatMul", "Gemm"],
                extra_options={"MatMulConstBOnly": True},
            )
        finally:
            root.removeFilter(_drop_preprocessing_advice)
        proto = onnx.load_model(os.fspath(temporary))
        kept = {entry.key for entry in proto.metadata_props}
        for key, value in {**metadata, METADATA_QUANTIZATION: "int8"}.items():
            if key not in kept:
                entry = proto.metadata_props.add()
                entry.key, entry.value = key, value
        onnx.save_model(proto, os.fspath(temporary))
    return target


def _drop_preprocessing_advice(record: logging.LogRecord) -> bool:
    """onnxruntime's quantizer advises shape-inference pre-processing on every call (a root-logger
    warning); the exported graph already carries its shapes."""
    return not str(record.msg).startswith("Please consider to run pre-processing")


class OnnxSeparator:
    """Runs an exported file with onnxruntime behind the model's contract: ``separator(input_values)``
    ``(batch, channels, time)`` -> ``audio_values`` ``(batch, sources, channels, time)``.

    ``model`` is the torch model the file was exported from (its configuration is checked against
    the file's; HTDemucs' STFT and iSTFT run through it, they hold no weights). ``path`` is the
    ONNX file; ``None`` exports ``model`` into a temporary folder owned by this object.
    ``quantize="int8"`` runs the linear layers in int8 (`quantize_onnx_int8`). ``threads`` sets
    onnxruntime's intra-op threads (default: ``torch.get_num_threads()``, so both backends use the
    same cores).
    """

    def __init__(
        self,
        model: nn.Module,
        path: str | os.PathLike[str] | None = None,
        *,
        quantize: str | None = None,
        threads: int | None = None,
    ) -> None:
        if quantize is not None and quantize not in QUANTIZATION_MODES:
            raise ValueError(f"quantize must be one of {QUANTIZATION_MODES} or None, got {quantize!r}")
        if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
            raise ValueError(f"threads must be a positive integer, got {threads!r}")
        ort = _require("onnxruntime")
        self.model = model
        self.kind = graph_kind(model)
        self._folder: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._folder = tempfile.TemporaryDirectory(prefix="demixers-onnx-")
            path = export_onnx(_float_cpu_copy(model), Path(self._folder.name) / "model.onnx")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        metadata = read_metadata(path)
        self._check_metadata(metadata, path)
        already = metadata.get(METADATA_QUANTIZATION)  # a file `demixers export --quantize` wrote
        if already is not None:
            quantize = already
        elif quantize == "int8":
            if self._folder is None:
                self._folder = tempfile.TemporaryDirectory(prefix="demixers-onnx-")
            path = quantize_onnx_int8(path, Path(self._folder.name) / "model.int8.onnx")
        self.path = path
        self.quantize = quantize
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads if threads is not None else torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])

    def _check_metadata(self, metadata: dict[str, str], path: Path) -> None:
        model_type = metadata.get(METADATA_MODEL_TYPE)
        if model_type is None:
            raise ValueError(f"{path}: not a demixers export (no {METADATA_MODEL_TYPE} metadata)")
        if model_type != self.model.config.model_type:
            raise ValueError(
                f"{path} was exported from a {model_type!r} model, the pipeline's is "
                f"{self.model.config.model_type!r}"
            )
        if metadata.get(METADATA_CONFIG) != config_fingerprint(self.model):
            raise ValueError(
                f"{path} was exported from a different {model_type} configuration than the model's: "
                "export this model again (`demixers export onnx`)"
            )
        if metadata.get(METADATA_QUANTIZATION, "int8") not in QUANTIZATION_MODES:
            raise ValueError(f"{path}: unknown quantization {metadata[METADATA_QUANTIZATION]!r}")

    def __call__(self, input_values: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_values, torch.Tensor) or input_values.dim() != 3:
            raise ValueError(
                "input_values must be a (batch, channels, time) tensor, "
                f"got {getattr(input_values, 'shape', type(input_values).__name__)}"
            )
        config = self.model.config
        if input_values.shape[1] != config.audio_channels:
            raise ValueError(
                f"input_values has {input_values.shape[1]} channels, "
                f"the model expects {config.audio_channels}"
            )
        mix = input_values.detach().to("cpu", torch.float32)
        if self.kind == "waveform":
            return self._run_waveform(mix)
        return self._run_hybrid(mix)

    def _run_waveform(self, mix: torch.Tensor) -> torch.Tensor:
        length = mix.shape[-1]
        kernel = int(self.model.config.encoder_kernel_size)
        if length < kernel:  # too short for one frame: zero-pad, trim back (as the model does)
            mix = F.pad(mix, (0, kernel - length))
        (audio,) = self.session.run(None, {"input_values": mix.contiguous().numpy()})
        return torch.from_numpy(audio)[..., :length]

    def _run_hybrid(self, mix: torch.Tensor) -> torch.Tensor:
        model, config = self.model, self.model.config
        length = mix.shape[-1]
        if getattr(config, "use_train_segment", False):
            target = model.valid_length(length)  # raises for inputs longer than the segment
            if target > length:
                mix = F.pad(mix, (0, target - length))
        with torch.inference_mode():
            features = model._spectral_features(mix)
        spectrum, waveform = self.session.run(
            None, {"spectral_features": features.contiguous().numpy(), "mix": mix.contiguous().numpy()}
        )
        spectrum = torch.view_as_complex(torch.from_numpy(spectrum).contiguous())
        with torch.inference_mode():
            audio = model._ispec(spectrum, mix.shape[-1]) + torch.from_numpy(waveform)
        return audio[..., :length]

    def close(self) -> None:
        """Remove the temporary export (if this object made one)."""
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


def _float_cpu_copy(model: nn.Module) -> nn.Module:
    parameter = next(model.parameters())
    if parameter.device.type == "cpu" and parameter.dtype == torch.float32:
        return model
    import copy

    return copy.deepcopy(model).float().cpu()
