"""Convert the demucs v2 ``tasnet`` release (Conv-TasNet for music) into a `save_pretrained` folder.

demucs 2.x ships a Conv-TasNet (Kaituo Xu's implementation, extended to stereo by A. Défossez) as
the ``tasnet`` and ``tasnet_extra`` pretrained models: ``ConvTasNet(X=10, sources=["drums",
"bass", "other", "vocals"])`` with N=256, L=20 (hop 10), B=256, H=512, P=3, R=4, gLN, ReLU
masks, stereo at 44.1 kHz, trained on 8-second segments. Its differences from the paper's layout
map onto `ConvTasNetConfig` switches: ReLU encoder, channel-wise layer norm on the input, no
biases, no skip path, no PReLU before the mask convolution, and a linear decoder (``N -> channels
* L`` then overlap-add), which is exactly a transposed convolution whose weight is the linear
weight reshaped to ``(N, channels, L)``.

Accepted sources (``.th`` files, read by the restricted unpickler; no class named
by a file is imported, see `demixers.conversion.unpickler`):

* the released state dicts (``tasnet-beb46fac.th``, ``tasnet_extra-df3777b2.th``): the
  architecture comes from the tensor shapes (N, L, B, H, P, X, R, channels, sources, causal, batch
  norm or none), the rest from the release (ReLU masks, 44.1 kHz, the four MUSDB sources, gLN; a
  causal layout gets cLN, as gLN would look at the future). ``config_overrides`` sets what a bare
  state dict cannot tell (``{"norm_type": "cln"}``, ``{"mask_activation": "softmax"}``);
* packages written by demucs' own ``save_model`` (``klass`` = ``demucs.tasnet.ConvTasNet``,
  ``args``/``kwargs`` = its constructor arguments, ``state``): the arguments are used as given.
  Quantized (``{"compressed": ...}``) states are refused.

demucs' ``separate`` standardises each track by the mean and standard deviation of its mono mix and
undoes it on the outputs; the converted config sets ``normalize_input=True`` so the pipeline does
the same (``forward`` never normalises). With layer norms, the bias-free ReLU encoder, linear decoder
and masks computed from normalised features make the network positively homogeneous (scaling the
input scales every output alike), so in practice only the track's (near-zero) mean matters.

Command line (through the package CLI): ``demixers convert demucs-tasnet SRC OUT [--overwrite]``.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from demixers.conversion import (
    check_output_dir,
    is_opaque,
    load_checkpoint,
    load_into_model,
    require_plain,
    save_model_folder,
    source_files,
    strip_prefixes,
    tensor_state_dict,
)

from .configuration_conv_tasnet import ConvTasNetConfig
from .modeling_conv_tasnet import ConvTasNetForSourceSeparation

TASNET_CLASS = "demucs.tasnet.ConvTasNet"
RELEASE_SOURCES = ["drums", "bass", "other", "vocals"]
# demucs 2.x ConvTasNet.__init__ (argument order and defaults)
DEMUCS_ARGS: dict[str, Any] = {
    "sources": None, "N": 256, "L": 20, "B": 256, "H": 512, "P": 3, "X": 8, "R": 4, "audio_channels": 2,
    "norm_type": "gLN", "causal": False, "mask_nonlinear": "relu", "samplerate": 44100,
    "segment_length": 44100 * 2 * 4,
}  # fmt: skip
NORM_TYPES = {"gLN": "gln", "cLN": "cln", "BN": "bn", "id": "id"}

_BLOCK = r"separator\.network\.2\.(\d+)\.(\d+)\.net"
_NORM_PARAMS = r"(gamma|beta|weight|bias|running_mean|running_var|num_batches_tracked)"


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_demucs_tasnet(source: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Returns ``(state_dict, constructor_kwargs_or_None)`` of a release state dict or a demucs package."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".th")
        if len(files) != 1:
            raise ValueError(f"{path} must hold exactly one .th file, found {[p.name for p in files]}")
        path = files[0]
    loaded = load_checkpoint(path)
    if not isinstance(loaded, Mapping):
        raise ValueError(f"{path} is neither a state dict nor a demucs package ({type(loaded).__name__})")
    if "klass" not in loaded and "state" not in loaded:
        return strip_prefixes(tensor_state_dict(dict(loaded), str(path)), ("module.",)), None

    klass = loaded.get("klass")
    if not is_opaque(klass, TASNET_CLASS):
        name = klass.qualified_name if is_opaque(klass) else repr(klass)
        raise ValueError(
            f"{path} is a demucs package for {name}, not {TASNET_CLASS}; Demucs models convert with "
            "`demixers convert demucs`"
        )
    state = loaded.get("state")
    if isinstance(state, Mapping) and "compressed" in state:
        raise ValueError(f"{path} holds a quantized (compressed) state, which cannot be converted")
    args = require_plain(list(loaded.get("args") or ()), f"{path}: args")
    kwargs = require_plain(dict(loaded.get("kwargs") or {}), f"{path}: kwargs")
    if len(args) > len(DEMUCS_ARGS):
        raise ValueError(
            f"{path}: {len(args)} positional arguments, ConvTasNet takes at most {len(DEMUCS_ARGS)}"
        )
    for name, value in zip(DEMUCS_ARGS, args, strict=False):
        if name in kwargs:
            raise ValueError(f"{path}: argument {name!r} given both positionally and by keyword")
        kwargs[name] = value
    unknown = sorted(set(kwargs) - set(DEMUCS_ARGS))
    if unknown:
        raise ValueError(f"{path}: unknown ConvTasNet arguments {unknown}")
    return strip_prefixes(tensor_state_dict(state, f"{path}: state"), ("module.",)), kwargs


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> torch.Size:
    if key not in state_dict:
        raise ValueError(f"cannot infer the architecture: the state dict has no {key!r}")
    return state_dict[key].shape


def arguments_from_shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """demucs ConvTasNet arguments that the tensor shapes determine."""
    n_filters, audio_channels, kernel = _shape(state_dict, "encoder.conv1d_U.weight")
    bottleneck = _shape(state_dict, "separator.network.1.weight")[0]
    blocks = {(int(m.group(1)), int(m.group(2))) for key in state_dict if (m := re.match(_BLOCK, key))}
    if not blocks:
        raise ValueError(
            "cannot infer the architecture: the state dict has no TCN blocks (separator.network.2.*)"
        )
    repeats = max(r for r, _ in blocks) + 1
    per_repeat = max(x for _, x in blocks) + 1
    if len(blocks) != repeats * per_repeat:
        raise ValueError(f"the TCN blocks do not form a full R x X grid: {sorted(blocks)}")
    hidden = _shape(state_dict, "separator.network.2.0.0.net.0.weight")[0]
    conv_kernel = _shape(state_dict, "separator.network.2.0.0.net.3.net.0.weight")[-1]
    mask_rows = _shape(state_dict, "separator.network.3.weight")[0]
    if mask_rows % n_filters:
        raise ValueError(f"mask convolution rows ({mask_rows}) are not a multiple of N ({n_filters})")
    # the causal block is (depthwise, chomp, prelu, norm, pointwise): the pointwise conv sits at index 4
    causal = "separator.network.2.0.0.net.3.net.4.weight" in state_dict
    if "separator.network.2.0.0.net.2.running_mean" in state_dict:
        norm_type = "BN"
    elif "separator.network.2.0.0.net.2.gamma" in state_dict:
        # gLN and cLN have the same tensors: the release (non-causal) uses gLN; a causal model needs cLN
        norm_type = "cLN" if causal else "gLN"
    else:
        norm_type = "id"
    return {
        "N": int(n_filters),
        "L": int(kernel),
        "B": int(bottleneck),
        "H": int(hidden),
        "P": int(conv_kernel),
        "X": per_repeat,
        "R": repeats,
        "audio_channels": int(audio_channels),
        "num_sources": mask_rows // n_filters,
        "causal": causal,
        "norm_type": norm_type,
    }


def build_config(
    state_dict: Mapping[str, torch.Tensor],
    demucs_kwargs: Mapping[str, Any] | None,
    config_overrides: Mapping[str, Any] | None = None,
) -> ConvTasNetConfig:
    shapes = arguments_from_shapes(state_dict)
    arguments = dict(DEMUCS_ARGS)
    if demucs_kwargs is None:  # a bare release state dict: shapes plus the release's settings
        arguments.update({key: value for key, value in shapes.items() if key != "num_sources"})
        count = shapes["num_sources"]
        arguments["sources"] = (
            RELEASE_SOURCES if count == len(RELEASE_SOURCES) else [f"source_{i + 1}" for i in range(count)]
        )
    else:
        arguments.update(demucs_kwargs)
        if arguments["sources"] is None:
            raise ValueError("the demucs package does not name its sources")
        checks = {
            key: arguments[key] for key in ("N", "L", "B", "H", "P", "X", "R", "audio_channels", "causal")
        }
        checks["num_sources"] = len(arguments["sources"])
        disagreements = {key: (value, shapes[key]) for key, value in checks.items() if value != shapes[key]}
        if disagreements:
            detail = ", ".join(
                f"{k}: arguments {a!r} vs tensors {b!r}" for k, (a, b) in disagreements.items()
            )
            raise ValueError(f"the package's arguments disagree with its tensors ({detail})")

    if arguments["norm_type"] not in NORM_TYPES:
        raise ValueError(f"norm_type {arguments['norm_type']!r} is not one of {tuple(NORM_TYPES)}")
    if arguments["mask_nonlinear"] not in ("relu", "softmax"):
        raise ValueError(f"mask_nonlinear {arguments['mask_nonlinear']!r} is not 'relu' or 'softmax'")
    kernel = int(arguments["L"])
    kwargs: dict[str, Any] = {
        "sampling_rate": int(arguments["samplerate"]),
        "audio_channels": int(arguments["audio_channels"]),
        "source_names": [str(name) for name in arguments["sources"]],
        "encoder_channels": int(arguments["N"]),
        "encoder_kernel_size": kernel,
        "encoder_stride": kernel // 2,
        "encoder_activation": "relu",
        "bottleneck_channels": int(arguments["B"]),
        "hidden_channels": int(arguments["H"]),
        "skip_channels": 0,
        "conv_kernel_size": int(arguments["P"]),
        "num_blocks": int(arguments["X"]),
        "num_repeats": int(arguments["R"]),
        "norm_type": NORM_TYPES[arguments["norm_type"]],
        "input_norm_type": "cln",
        "causal": bool(arguments["causal"]),
        "mask_activation": arguments["mask_nonlinear"],
        "mask_prelu": False,
        "separator_bias": False,
        "segment": int(arguments["segment_length"]) / int(arguments["samplerate"]),
        "normalize_input": True,
    }
    kwargs.update(config_overrides or {})
    return ConvTasNetConfig(**kwargs)


# ---------------------------------------------------------------------------------------------
# State dict
# ---------------------------------------------------------------------------------------------


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: ConvTasNetConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map demucs keys to ours. Returns ``(state_dict, unconverted_demucs_keys)``."""
    blocks_per_repeat = config.num_blocks
    # DepthwiseSeparableConv.net: conv, [chomp if causal], prelu, norm, pointwise
    offset = 1 if config.causal else 0
    depthwise_parts = {
        "0": "depthwise_conv",
        str(1 + offset): "depthwise_activation",
        str(2 + offset): "depthwise_norm",
        str(3 + offset): "residual_conv",
    }
    block_parts = {"0": "in_conv", "1": "in_activation", "2": "in_norm"}
    rename = {"gamma": "weight", "beta": "bias"}
    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state_dict.items():
        new = None
        if key == "encoder.conv1d_U.weight":
            new = "encoder.weight"
        elif key == "decoder.basis_signals.weight":
            # Linear(N -> channels * L) + overlap-add == transposed conv with weight (N, channels, L)
            channels, kernel = config.audio_channels, config.encoder_kernel_size
            if value.shape != (channels * kernel, config.encoder_channels):
                raise ValueError(
                    f"decoder.basis_signals.weight has shape {tuple(value.shape)}, expected "
                    f"{(channels * kernel, config.encoder_channels)}"
                )
            value = value.reshape(channels, kernel, -1).permute(2, 0, 1).contiguous()
            new = "decoder.weight"
        elif match := re.fullmatch(rf"separator\.network\.0\.{_NORM_PARAMS}", key):
            new = f"separator.input_norm.{match.group(1)}"
        elif key == "separator.network.1.weight":
            new = "separator.bottleneck.weight"
        elif key == "separator.network.3.weight":
            new = "separator.mask_conv.weight"
        elif match := re.fullmatch(_BLOCK + r"\.(\d+)\.(?:net\.(\d+)\.)?" + r"(\w+)", key):
            repeat, block, part, inner, leaf = match.groups()
            index = int(repeat) * blocks_per_repeat + int(block)
            name = depthwise_parts.get(inner) if part == "3" and inner is not None else None
            if part != "3":
                name = block_parts.get(part)
            if name is not None:
                new = f"separator.blocks.{index}.{name}.{leaf}"
        if new is None:
            unexpected.append(key)
            continue
        head, _, leaf = new.rpartition(".")
        if leaf in rename:
            value = value.reshape(-1)  # demucs' layer norms store (1, channels, 1)
            leaf = rename[leaf]
        converted[f"{head}.{leaf}"] = value
    return converted, unexpected


def build_model(
    state_dict: Mapping[str, torch.Tensor],
    demucs_kwargs: Mapping[str, Any] | None = None,
    config_overrides: Mapping[str, Any] | None = None,
) -> ConvTasNetForSourceSeparation:
    """A `ConvTasNetForSourceSeparation` holding the demucs tasnet weights (eval mode)."""
    config = build_config(state_dict, demucs_kwargs, config_overrides)
    converted, unexpected = convert_state_dict(state_dict, config)
    if unexpected:
        raise ValueError(
            f"the demucs tasnet state dict has keys this converter does not know ({len(unexpected)}): "
            + ", ".join(unexpected[:20])
        )
    model = ConvTasNetForSourceSeparation(config)
    load_into_model(model, converted, "the demucs tasnet state dict")
    return model


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------


def convert_checkpoint(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    config_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Convert a demucs v2 tasnet checkpoint into a `save_pretrained` folder; returns the folder.

    ``config_overrides`` sets `ConvTasNetConfig` fields the file cannot tell (e.g.
    ``{"norm_type": "cln"}`` for a bare state dict trained with cLN).
    """
    output_dir = check_output_dir(output_dir, overwrite)
    state_dict, demucs_kwargs = load_demucs_tasnet(source)
    model = build_model(state_dict, demucs_kwargs, config_overrides)
    return save_model_folder(model, output_dir, overwrite=overwrite, protected=source_files(source))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SRC",
        help="demucs v2 tasnet checkpoint (.th: the released state dict or a demucs package)",
    )
    parser.add_argument("output_dir", metavar="OUT", help="folder to write the converted model to")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it already exists")


def run(args: argparse.Namespace) -> int:
    output_dir = convert_checkpoint(args.source, args.output_dir, overwrite=args.overwrite)
    print(f"wrote the converted demucs tasnet to {output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert the demucs v2 tasnet release into a save_pretrained folder."
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
