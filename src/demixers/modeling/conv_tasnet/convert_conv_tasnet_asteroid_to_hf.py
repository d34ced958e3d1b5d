"""Convert asteroid's ``ConvTasNet`` checkpoints into a `save_pretrained` folder.

Accepted sources: the package asteroid's ``BaseModel.serialize()`` / ``save_pretrained`` writes
(``pytorch_model.bin`` in the Hub repos, or any ``.bin``/``.pth``/``.pt`` file): a dict with
``model_name`` (``"ConvTasNet"``), ``model_args`` (the constructor arguments: filterbank and mask
network settings) and ``state_dict``; or a folder holding exactly one such file. A state dict whose
keys all carry a Lightning ``model.`` prefix is accepted too.

The file is read by the restricted unpickler: tensors and plain containers only,
no class named by the file is imported (see `demixers.conversion.unpickler`). Only the ``free``
filterbank (asteroid's default, a plain learned convolution) converts; the analytic / sinc / STFT
filterbanks and masks narrower than the filterbank (``out_chan``) are refused with a ValueError.

Command line (through the package CLI): ``demixers convert asteroid-conv-tasnet SRC OUT [--overwrite]``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from demixers.conversion import (
    check_output_dir,
    load_into_model,
    map_keys,
    save_model_folder,
    source_files,
)
from demixers.conversion.asteroid import (
    check_free_filterbank,
    sampling_rate_from_args,
)
from demixers.conversion.asteroid import load_asteroid_package as read_asteroid_package

from .configuration_conv_tasnet import ConvTasNetConfig
from .modeling_conv_tasnet import ConvTasNetForSourceSeparation

MODEL_NAMES = ("ConvTasNet",)
# asteroid norm identifiers (asteroid.masknn.norms) -> ConvTasNetConfig.norm_type
NORM_TYPES = {"gln": "gln", "globln": "gln", "cln": "cln", "chanln": "cln", "cgln": "cgln", "cumln": "cgln"}
BATCH_NORMS = ("bn", "batchnorm")
MASK_ACTIVATIONS = ("sigmoid", "relu", "softmax", "tanh", "linear")
# model_args keys this converter reads; anything else is refused rather than silently dropped
KNOWN_ARGS = {
    "n_src", "out_chan", "n_blocks", "n_repeats", "bn_chan", "hid_chan", "skip_chan", "conv_kernel_size",
    "norm_type", "mask_act", "in_chan", "causal", "fb_name", "kernel_size", "n_filters", "stride",
    "encoder_activation", "sample_rate",
}  # fmt: skip

_NORM_PARAMS = r"(gamma|beta|weight|bias|running_mean|running_var|num_batches_tracked)"
_NORM_RENAME = {"gamma": "weight", "beta": "bias"}
# asteroid key -> ours (the block index is carried over)
_RULES = [
    (r"encoder\.filterbank\._filters", "encoder.weight"),
    (r"decoder\.filterbank\._filters", "decoder.weight"),
    (rf"masker\.bottleneck\.0\.{_NORM_PARAMS}", r"separator.input_norm.\1"),
    (r"masker\.bottleneck\.1\.(weight|bias)", r"separator.bottleneck.\1"),
    (r"masker\.TCN\.(\d+)\.shared_block\.0\.(weight|bias)", r"separator.blocks.\1.in_conv.\2"),
    (r"masker\.TCN\.(\d+)\.shared_block\.1\.weight", r"separator.blocks.\1.in_activation.weight"),
    (rf"masker\.TCN\.(\d+)\.shared_block\.2\.{_NORM_PARAMS}", r"separator.blocks.\1.in_norm.\2"),
    (r"masker\.TCN\.(\d+)\.shared_block\.3(?:\.0)?\.(weight|bias)", r"separator.blocks.\1.depthwise_conv.\2"),
    (r"masker\.TCN\.(\d+)\.shared_block\.4\.weight", r"separator.blocks.\1.depthwise_activation.weight"),
    (rf"masker\.TCN\.(\d+)\.shared_block\.5\.{_NORM_PARAMS}", r"separator.blocks.\1.depthwise_norm.\2"),
    (r"masker\.TCN\.(\d+)\.res_conv\.(weight|bias)", r"separator.blocks.\1.residual_conv.\2"),
    (r"masker\.TCN\.(\d+)\.skip_conv\.(weight|bias)", r"separator.blocks.\1.skip_conv.\2"),
    (r"masker\.mask_net\.0\.weight", "separator.output_activation.weight"),
    (r"masker\.mask_net\.1\.(weight|bias)", r"separator.mask_conv.\1"),
]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_asteroid_package(source: str | os.PathLike) -> dict[str, Any]:
    """Read an asteroid package of this model: ``{"model_name", "model_args", "state_dict"}``."""
    return read_asteroid_package(source, MODEL_NAMES)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def _norm_type(value: Any, field: str) -> str:
    key = str(value).lower()
    if key in BATCH_NORMS:
        return "bn"
    if key not in NORM_TYPES:
        raise ValueError(f"model_args[{field!r}]={value!r}: this normalisation is not supported")
    return NORM_TYPES[key]


def _mask_activation(value: Any) -> str:
    key = "linear" if value is None else str(value).lower()
    if key not in MASK_ACTIVATIONS:
        raise ValueError(f"model_args['mask_act']={value!r}: only {MASK_ACTIVATIONS} are supported")
    return key


def _encoder_activation(value: Any) -> str:
    key = "linear" if value is None else str(value).lower()
    if key not in ("linear", "relu"):
        raise ValueError(
            f"model_args['encoder_activation']={value!r}: only None/'linear' and 'relu' are supported"
        )
    return key


def config_from_model_args(
    model_args: Mapping[str, Any], config_overrides: Mapping[str, Any] | None = None
) -> ConvTasNetConfig:
    """`ConvTasNetConfig` from asteroid's ``ConvTasNet`` constructor arguments."""
    unknown = sorted(set(model_args) - KNOWN_ARGS)
    if unknown:
        raise ValueError(f"model_args has settings this converter does not know: {unknown}")
    check_free_filterbank(model_args)
    n_filters = int(model_args.get("n_filters", 512))
    for field in ("in_chan", "out_chan"):
        value = model_args.get(field)
        if value is not None and int(value) != n_filters:
            raise ValueError(
                f"model_args[{field!r}]={value} differs from n_filters={n_filters}; only masks over the "
                "whole filterbank are supported"
            )
    kernel_size = int(model_args.get("kernel_size", 16))
    stride = model_args.get("stride")
    skip = model_args.get("skip_chan", 128)
    kwargs: dict[str, Any] = {
        "sampling_rate": sampling_rate_from_args(model_args),
        "audio_channels": 1,
        "num_speakers": int(model_args["n_src"]) if "n_src" in model_args else 2,
        "encoder_channels": n_filters,
        "encoder_kernel_size": kernel_size,
        "encoder_stride": int(stride) if stride else kernel_size // 2,
        "encoder_activation": _encoder_activation(model_args.get("encoder_activation")),
        "bottleneck_channels": int(model_args.get("bn_chan", 128)),
        "hidden_channels": int(model_args.get("hid_chan", 512)),
        "skip_channels": int(skip) if skip else 0,
        "conv_kernel_size": int(model_args.get("conv_kernel_size", 3)),
        "num_blocks": int(model_args.get("n_blocks", 8)),
        "num_repeats": int(model_args.get("n_repeats", 3)),
        "norm_type": _norm_type(model_args.get("norm_type", "gLN"), "norm_type"),
        "causal": bool(model_args.get("causal", False)),
        "mask_activation": _mask_activation(model_args.get("mask_act", "sigmoid")),
        "mask_prelu": True,
        "separator_bias": True,
    }
    kwargs.update(config_overrides or {})
    if "source_names" in kwargs:
        kwargs.pop("num_speakers", None)
    return ConvTasNetConfig(**kwargs)


# ---------------------------------------------------------------------------------------------
# State dict
# ---------------------------------------------------------------------------------------------


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: ConvTasNetConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map asteroid keys to ours. Returns ``(state_dict, unconverted_asteroid_keys)``.

    With skip connections asteroid's last block keeps a residual convolution whose output nothing
    reads; it does not change the outputs and is dropped.
    """
    last = config.num_blocks * config.num_repeats - 1
    dead = [rf"masker\.TCN\.{last}\.res_conv\.(weight|bias)"] if config.skip_channels else []
    return map_keys(state_dict, _RULES, drop=dead, leaf_renames=_NORM_RENAME)


def build_model(
    package: Mapping[str, Any], config_overrides: Mapping[str, Any] | None = None
) -> ConvTasNetForSourceSeparation:
    """A `ConvTasNetForSourceSeparation` holding the package's weights (eval mode)."""
    config = config_from_model_args(package["model_args"], config_overrides)
    state_dict, unexpected = convert_state_dict(package["state_dict"], config)
    if unexpected:
        raise ValueError(
            f"the asteroid state dict has keys this converter does not know ({len(unexpected)}): "
            + ", ".join(unexpected[:20])
        )
    model = ConvTasNetForSourceSeparation(config)
    load_into_model(model, state_dict, "the asteroid ConvTasNet state dict")
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
    """Convert an asteroid ConvTasNet package into a `save_pretrained` folder; returns the folder.

    Raises `ValueError` when the package is not a supported ConvTasNet (listing what does not match),
    `FileExistsError` when ``output_dir`` exists and ``overwrite`` is False.
    """
    output_dir = check_output_dir(output_dir, overwrite)
    model = build_model(load_asteroid_package(source), config_overrides)
    return save_model_folder(model, output_dir, overwrite=overwrite, protected=source_files(source))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SRC",
        help="asteroid ConvTasNet package (pytorch_model.bin / .pth) or a folder with one",
    )
    parser.add_argument("output_dir", metavar="OUT", help="folder to write the converted model to")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it already exists")


def run(args: argparse.Namespace) -> int:
    output_dir = convert_checkpoint(args.source, args.output_dir, overwrite=args.overwrite)
    print(f"wrote the converted Conv-TasNet to {output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert asteroid's ConvTasNet checkpoints into a save_pretrained folder."
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
