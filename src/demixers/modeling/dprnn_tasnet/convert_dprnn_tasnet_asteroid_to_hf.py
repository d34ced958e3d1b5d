"""Convert asteroid's ``DPRNNTasNet`` checkpoints into a `save_pretrained` folder.

Accepted sources: the package asteroid's ``BaseModel.serialize()`` / ``save_pretrained`` writes
(``pytorch_model.bin`` in the Hub repos, or any ``.bin``/``.pth``/``.pt`` file): a dict with
``model_name`` (``"DPRNNTasNet"``), ``model_args`` (filterbank and mask network settings) and
``state_dict``; or a folder holding exactly one such file. A state dict whose keys all carry a
Lightning ``model.`` prefix is accepted too.

The file is read by the restricted unpickler: tensors and plain containers only,
no class named by the file is imported (see `demixers.conversion.unpickler`). Only the ``free``
filterbank converts; the analytic / sinc / STFT filterbanks, masks narrower than the filterbank
(``out_chan``) and asteroid's softmax masks (which asteroid normalises over the filters, not the
sources) are refused with a ValueError.

Command line (through the package CLI): ``demixers convert asteroid-dprnn-tasnet SRC OUT [--overwrite]``.
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

from .configuration_dprnn_tasnet import DPRNNTasNetConfig
from .modeling_dprnn_tasnet import DPRNNTasNetForSourceSeparation

MODEL_NAMES = ("DPRNNTasNet",)
NORM_TYPES = {"gln": "gln", "globln": "gln", "cln": "cln", "chanln": "cln", "bn": "bn", "batchnorm": "bn"}
MASK_ACTIVATIONS = ("sigmoid", "relu", "tanh", "linear")
KNOWN_ARGS = {
    "n_src", "out_chan", "bn_chan", "hid_size", "chunk_size", "hop_size", "n_repeats", "norm_type",
    "mask_act", "bidirectional", "rnn_type", "num_layers", "dropout", "in_chan", "fb_name", "kernel_size",
    "n_filters", "stride", "encoder_activation", "sample_rate", "use_mulcat",
}  # fmt: skip

_NORM_PARAMS = r"(gamma|beta|weight|bias|running_mean|running_var|num_batches_tracked)"
_NORM_RENAME = {"gamma": "weight", "beta": "bias"}
_RNN_PARAMS = r"((?:weight|bias)_(?:ih|hh)_l\d+(?:_reverse)?)"
_RULES = [
    (r"encoder\.filterbank\._filters", "encoder.weight"),
    (r"decoder\.filterbank\._filters", "decoder.weight"),
    (rf"masker\.bottleneck\.0\.{_NORM_PARAMS}", r"separator.input_norm.\1"),
    (r"masker\.bottleneck\.1\.(weight|bias)", r"separator.bottleneck.\1"),
    (
        rf"masker\.net\.(\d+)\.(intra|inter)_RNN\.(?:rnn|rnn1)\.{_RNN_PARAMS}",
        r"separator.blocks.\1.\2.rnn.\3",
    ),
    (rf"masker\.net\.(\d+)\.(intra|inter)_RNN\.rnn2\.{_RNN_PARAMS}", r"separator.blocks.\1.\2.gate_rnn.\3"),
    (r"masker\.net\.(\d+)\.(intra|inter)_linear\.(weight|bias)", r"separator.blocks.\1.\2.projection.\3"),
    (rf"masker\.net\.(\d+)\.(intra|inter)_norm\.{_NORM_PARAMS}", r"separator.blocks.\1.\2.norm.\3"),
    (r"masker\.first_out\.0\.weight", "separator.output_activation.weight"),
    (r"masker\.first_out\.1\.(weight|bias)", r"separator.output_conv.\1"),
    (r"masker\.net_out\.0\.(weight|bias)", r"separator.output_value_conv.\1"),
    (r"masker\.net_gate\.0\.(weight|bias)", r"separator.output_gate_conv.\1"),
    (r"masker\.mask_net\.weight", "separator.mask_conv.weight"),
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


def _choice(model_args: Mapping[str, Any], field: str, default: Any, table: Mapping[str, str]) -> str:
    value = model_args.get(field, default)
    key = "linear" if value is None else str(value).lower()
    if key not in table:
        raise ValueError(
            f"model_args[{field!r}]={value!r} is not supported (supported: {sorted(set(table))})"
        )
    return table[key]


def config_from_model_args(
    model_args: Mapping[str, Any], config_overrides: Mapping[str, Any] | None = None
) -> DPRNNTasNetConfig:
    """`DPRNNTasNetConfig` from asteroid's ``DPRNNTasNet`` constructor arguments."""
    unknown = sorted(set(model_args) - KNOWN_ARGS)
    if unknown:
        raise ValueError(f"model_args has settings this converter does not know: {unknown}")
    check_free_filterbank(model_args)
    n_filters = int(model_args.get("n_filters", 64))
    for field in ("in_chan", "out_chan"):
        value = model_args.get(field)
        if value is not None and int(value) != n_filters:
            raise ValueError(
                f"model_args[{field!r}]={value} differs from n_filters={n_filters}; only masks over the "
                "whole filterbank are supported"
            )
    if str(model_args.get("mask_act", "sigmoid")).lower() == "softmax":
        raise ValueError(
            "model_args['mask_act']='softmax': asteroid's DPRNN normalises softmax masks over the filters "
            "of each source, which this implementation does not reproduce"
        )
    kernel_size = int(model_args.get("kernel_size", 16))
    stride = model_args.get("stride")
    chunk_size = int(model_args.get("chunk_size", 100))
    hop_size = model_args.get("hop_size")
    kwargs: dict[str, Any] = {
        "sampling_rate": sampling_rate_from_args(model_args),
        "audio_channels": 1,
        "num_speakers": int(model_args["n_src"]) if "n_src" in model_args else 2,
        "encoder_channels": n_filters,
        "encoder_kernel_size": kernel_size,
        "encoder_stride": int(stride) if stride else kernel_size // 2,
        "encoder_activation": _choice(
            model_args, "encoder_activation", None, {"linear": "linear", "relu": "relu"}
        ),
        "bottleneck_channels": int(model_args.get("bn_chan", 128)),
        "hidden_size": int(model_args.get("hid_size", 128)),
        "chunk_size": chunk_size,
        "hop_size": int(hop_size) if hop_size is not None else chunk_size // 2,
        "num_blocks": int(model_args.get("n_repeats", 6)),
        "norm_type": _choice(model_args, "norm_type", "gLN", NORM_TYPES),
        "mask_activation": _choice(
            model_args, "mask_act", "sigmoid", {name: name for name in MASK_ACTIVATIONS}
        ),
        "bidirectional": bool(model_args.get("bidirectional", True)),
        "rnn_type": _choice(model_args, "rnn_type", "LSTM", {"lstm": "lstm", "gru": "gru", "rnn": "rnn"}),
        "num_rnn_layers": int(model_args.get("num_layers", 1)),
        "dropout": float(model_args.get("dropout", 0.0) or 0.0),
        "use_mulcat": bool(model_args.get("use_mulcat", False)),
    }
    kwargs.update(config_overrides or {})
    if "source_names" in kwargs:
        kwargs.pop("num_speakers", None)
    return DPRNNTasNetConfig(**kwargs)


# ---------------------------------------------------------------------------------------------
# State dict
# ---------------------------------------------------------------------------------------------


def convert_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map asteroid keys to ours. Returns ``(state_dict, unconverted_asteroid_keys)``."""
    return map_keys(state_dict, _RULES, leaf_renames=_NORM_RENAME)


def build_model(
    package: Mapping[str, Any], config_overrides: Mapping[str, Any] | None = None
) -> DPRNNTasNetForSourceSeparation:
    """A `DPRNNTasNetForSourceSeparation` holding the package's weights (eval mode)."""
    config = config_from_model_args(package["model_args"], config_overrides)
    state_dict, unexpected = convert_state_dict(package["state_dict"])
    if unexpected:
        raise ValueError(
            f"the asteroid state dict has keys this converter does not know ({len(unexpected)}): "
            + ", ".join(unexpected[:20])
        )
    model = DPRNNTasNetForSourceSeparation(config)
    load_into_model(model, state_dict, "the asteroid DPRNNTasNet state dict")
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
    """Convert an asteroid DPRNNTasNet package into a `save_pretrained` folder; returns the folder.

    Raises `ValueError` when the package is not a supported DPRNNTasNet (listing what does not
    match), `FileExistsError` when ``output_dir`` exists and ``overwrite`` is False.
    """
    output_dir = check_output_dir(output_dir, overwrite)
    model = build_model(load_asteroid_package(source), config_overrides)
    return save_model_folder(model, output_dir, overwrite=overwrite, protected=source_files(source))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SRC",
        help="asteroid DPRNNTasNet package (pytorch_model.bin / .pth) or a folder with one",
    )
    parser.add_argument("output_dir", metavar="OUT", help="folder to write the converted model to")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it already exists")


def run(args: argparse.Namespace) -> int:
    output_dir = convert_checkpoint(args.source, args.output_dir, overwrite=args.overwrite)
    print(f"wrote the converted DPRNN-TasNet to {output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert asteroid's DPRNNTasNet checkpoints into a save_pretrained folder."
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
