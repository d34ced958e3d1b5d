"""Convert an official DTTNet checkpoint into a `save_pretrained` folder.

Accepted sources: the PyTorch Lightning ``.ckpt`` files of junyuchen-cjy/DTTNet-Pytorch (a dict
with the network's weights under ``state_dict``, next to the trainer state and possibly
``hyper_parameters``), or a plain state dict (``.pt``/``.pth``/``.bin``/``.safetensors``). Keys may
carry a prefix (``model.``, ``net.``, ``module.`` ...): the prefix in front of
``first_conv.0.weight`` is stripped and keys without it are ignored.

Safety: pickles are read by the restricted unpickler of `demixers.conversion.unpickler`, which
rebuilds tensors and plain containers only. Lightning checkpoints also pickle other objects
(OmegaConf containers in ``hyper_parameters``, callback states): each global the pickle names
becomes an inert `RecordedObject` stand-in that stores the arguments and state the pickle gives it,
and only its name; the named module is never imported and nothing it names is ever called.

The architecture comes from the tensor shapes (``growth``, channels, levels, TFC layers, kernel,
``dim_f``, the TDF factor and bias, dual-path layers, heads, RNN type and direction, ``n_fft`` from
the stored window). What shapes cannot tell (``hop_length``, ``dim_t``, ``overlap_samples``, the
target name) comes from ``hyper_parameters`` when the checkpoint has them, else from the release's
values (1024, 256, 3072; target ``vocals``), and can be overridden. Only the ``TFC_TDF_Res2`` block
type (that of every released model) is supported.

Command line: ``demixers convert dttnet SRC OUT [--target vocals] [--residual-name NAME | --no-residual]
[--hop-length N] [--dim-t N] [--overlap-samples N] [--overwrite]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from demixers.conversion import (
    OpaqueObject,
    RestrictedUnpickler,
    check_output_dir,
    check_state_dict,
    load_safetensors,
    restricted_load,
    save_model_folder,
    source_files,
)
from demixers.conversion import (
    map_key as apply_rules,
)

from .configuration_dttnet import DTTNetConfig
from .modeling_dttnet import DTTNetForSourceSeparation

logger = logging.getLogger(__name__)

ANCHOR_KEY = "first_conv.0.weight"
RELEASE_DEFAULTS = {"hop_length": 1024, "dim_t": 256, "overlap_samples": 3072, "sampling_rate": 44100}

# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

# what a pickle built from a global it names (recorded, never imported nor executed)
RecordedObject = OpaqueObject


def load_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint safely: safetensors, or any ``torch.save`` file through the restricted unpickler."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    loaded, recorded = restricted_load(path)
    if recorded:
        logger.info("%s: recorded, not imported: %s", path, ", ".join(sorted(recorded)))
    return loaded


def to_plain(value: Any) -> Any:
    """Plain Python data (dicts, lists, scalars) from loaded hyper-parameters; recorded OmegaConf
    containers/nodes are unwrapped through their pickled ``_content``/``_val`` state, other recorded
    objects become None."""
    if isinstance(value, Mapping):
        return {str(key): to_plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(item) for item in value]
    if isinstance(value, RecordedObject):
        state = value.state
        if isinstance(state, Mapping):
            if "_content" in state:
                return to_plain(state["_content"])
            if "_val" in state:
                return to_plain(state["_val"])
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], Mapping):
            return to_plain(dict(state[1]))
        if value.items:
            pairs = [item for item in value.items if isinstance(item, tuple) and len(item) == 2]
            if len(pairs) == len(value.items):
                return {str(key): to_plain(item) for key, item in pairs}
            return [to_plain(item) for item in value.items]
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return None


def extract_state_dict(checkpoint: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The DTTNet weights of a loaded checkpoint, with any key prefix removed."""
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"{source} holds no state dict (found {type(checkpoint).__name__})")
    anchors = [key for key in checkpoint if isinstance(key, str) and key.endswith(ANCHOR_KEY)]
    if not anchors:
        raise ValueError(f"{source} is not a DTTNet checkpoint: no '{ANCHOR_KEY}' key")
    prefix = min(anchors, key=len)[: -len(ANCHOR_KEY)]
    state = {
        key[len(prefix) :]: value
        for key, value in checkpoint.items()
        if isinstance(key, str) and key.startswith(prefix) and isinstance(value, torch.Tensor)
    }
    return state


# ---------------------------------------------------------------------------------------------
# Architecture and key mapping
# ---------------------------------------------------------------------------------------------

_NORM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
_BLOCK_RULES = [
    (r"(tfc1|tfc2)\.H\.(\d+)\.0\.(weight|bias)", r"\1.layers.\2.conv.\3"),
    (rf"(tfc1|tfc2)\.H\.(\d+)\.1\.{_NORM}", r"\1.layers.\2.norm.\3"),
    (r"res\.H\.0\.0\.(weight|bias)", r"shortcut.conv.\1"),
    (rf"res\.H\.0\.1\.{_NORM}", r"shortcut.norm.\1"),
    (r"tdf\.0\.(weight|bias)", r"tdf.fc1.\1"),
    (rf"tdf\.1\.{_NORM}", r"tdf.norm1.\1"),
    (r"tdf\.3\.(weight|bias)", r"tdf.fc2.\1"),
    (rf"tdf\.4\.{_NORM}", r"tdf.norm2.\1"),
]
_BLOCK_PREFIXES = [
    (r"encoding_blocks\.(\d+)\.", r"unet.encoder_blocks.\1."),
    (r"decoding_blocks\.(\d+)\.", r"unet.decoder_blocks.\1."),
    (r"bottleneck_block1\.", "unet.bottleneck_block."),
]
_TOP_RULES = [
    (r"first_conv\.0\.(weight|bias)", r"unet.input_conv.conv.\1"),
    (rf"first_conv\.1\.{_NORM}", r"unet.input_conv.norm.\1"),
    (r"ds\.(\d+)\.0\.(weight|bias)", r"unet.downsamples.\1.conv.\2"),
    (rf"ds\.(\d+)\.1\.{_NORM}", r"unet.downsamples.\1.norm.\2"),
    (r"us\.(\d+)\.0\.(weight|bias)", r"unet.upsamples.\1.conv.\2"),
    (rf"us\.(\d+)\.1\.{_NORM}", r"unet.upsamples.\1.norm.\2"),
    (r"final_conv\.0\.(weight|bias)", r"unet.output_conv.\1"),
    (
        r"bottleneck_block2\.bsrnn\.(\d+)\.0\.groupnorm\.(weight|bias)",
        r"unet.dual_path.layers.\1.time_rnn.norm.\2",
    ),
    (
        r"bottleneck_block2\.bsrnn\.(\d+)\.1\.groupnorm\.(weight|bias)",
        r"unet.dual_path.layers.\1.freq_rnn.norm.\2",
    ),
    (r"bottleneck_block2\.bsrnn\.(\d+)\.0\.rnn\.(\w+)", r"unet.dual_path.layers.\1.time_rnn.rnn.\2"),
    (r"bottleneck_block2\.bsrnn\.(\d+)\.1\.rnn\.(\w+)", r"unet.dual_path.layers.\1.freq_rnn.rnn.\2"),
    (r"bottleneck_block2\.bsrnn\.(\d+)\.0\.fc\.(weight|bias)", r"unet.dual_path.layers.\1.time_rnn.proj.\2"),
    (r"bottleneck_block2\.bsrnn\.(\d+)\.1\.fc\.(weight|bias)", r"unet.dual_path.layers.\1.freq_rnn.proj.\2"),
]


def map_key(key: str) -> str | None:
    """Our parameter name for an official DTTNet key (None for keys we drop or do not know)."""
    top = apply_rules(key, _TOP_RULES)
    if top is not None:
        return top
    for prefix_pattern, prefix_replacement in _BLOCK_PREFIXES:
        match = re.match(prefix_pattern, key)
        if not match:
            continue
        rest = apply_rules(key[match.end() :], _BLOCK_RULES)
        if rest is not None:
            return match.expand(prefix_replacement) + rest
    return None


def _shape(state: Mapping[str, torch.Tensor], key: str) -> torch.Size:
    if key not in state:
        raise ValueError(f"the checkpoint lacks '{key}', which every DTTNet checkpoint has")
    return state[key].shape


def _indices(state: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(match.group(1)) for key in state if (match := regex.match(key))})


def config_kwargs_from_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """`DTTNetConfig` fields the official weights determine."""
    if any(
        re.match(r"(encoding_blocks\.\d+|bottleneck_block1|decoding_blocks\.\d+)\.tfc\.", key)
        for key in state
    ):
        raise ValueError(
            "this checkpoint uses the TFC_TDF or TFC_TDF_Res1 block type; only TFC_TDF_Res2 (the released "
            "models' block) is supported"
        )
    growth, planes = _shape(state, "first_conv.0.weight")[:2]
    if planes % 2:
        raise ValueError(f"first_conv.0.weight has {planes} input planes; expected 2 per audio channel")
    levels = _indices(state, r"encoding_blocks\.(\d+)\.")
    decoder_levels = _indices(state, r"decoding_blocks\.(\d+)\.")
    if levels != list(range(len(levels))) or decoder_levels != levels:
        raise ValueError(f"encoder levels {levels} and decoder levels {decoder_levels} do not match")
    num_levels = len(levels)
    tfc_layers = _indices(state, r"bottleneck_block1\.tfc1\.H\.(\d+)\.")
    kernel_size = _shape(state, "bottleneck_block1.tfc1.H.0.0.weight")[-1]
    first_block = "encoding_blocks.0" if num_levels else "bottleneck_block1"
    tdf_hidden, dim_f = _shape(state, f"{first_block}.tdf.0.weight")
    factor = dim_f // tdf_hidden if f"{first_block}.tdf.3.weight" in state else 0
    if factor and dim_f // factor != tdf_hidden:
        raise ValueError(f"TDF width {tdf_hidden} is not dim_f // factor for dim_f {dim_f}")
    kwargs: dict[str, Any] = {
        "audio_channels": planes // 2,
        "growth": growth,
        "num_blocks": 2 * num_levels + 1,
        "num_tfc_layers": len(tfc_layers),
        "kernel_size": kernel_size,
        "dim_f": dim_f,
        "tdf_bottleneck_factor": factor,
        "tdf_bias": f"{first_block}.tdf.0.bias" in state,
    }
    layers = _indices(state, r"bottleneck_block2\.bsrnn\.(\d+)\.")
    kwargs["num_dual_path_layers"] = len(layers)
    if layers:
        features = _shape(state, "bottleneck_block2.bsrnn.0.0.groupnorm.weight")[0]
        bottleneck = growth * (num_levels + 1)
        if bottleneck % features:
            raise ValueError(
                f"dual-path width {features} does not divide the bottleneck channels {bottleneck}"
            )
        gates_hidden, hidden = _shape(state, "bottleneck_block2.bsrnn.0.0.rnn.weight_hh_l0")
        if hidden != 2 * features:
            raise ValueError(f"dual-path RNN hidden size {hidden} is not twice the head width {features}")
        gates = gates_hidden // hidden
        if gates not in (3, 4):
            raise ValueError(f"unknown RNN type with {gates} gates")
        kwargs.update(
            num_heads=bottleneck // features,
            rnn_type="lstm" if gates == 4 else "gru",
            bidirectional="bottleneck_block2.bsrnn.0.0.rnn.weight_hh_l0_reverse" in state,
        )
    if "window" in state:
        kwargs["n_fft"] = int(state["window"].shape[0])
    return kwargs


def _check_fixed_tensors(state: Mapping[str, torch.Tensor], config: DTTNetConfig) -> None:
    """The release stores its STFT window and zero frequency padding as (frozen) parameters."""
    if "window" in state:
        expected = torch.hann_window(config.n_fft, periodic=True, dtype=torch.float64)
        if not torch.allclose(state["window"].double(), expected, atol=1e-6):
            raise ValueError("the checkpoint's STFT window is not a periodic Hann window")
    if "freq_pad" in state:
        pad = state["freq_pad"]
        expected_shape = (1, 2 * config.audio_channels, config.n_fft // 2 + 1 - config.dim_f, 1)
        if tuple(pad.shape) != expected_shape:
            raise ValueError(
                f"freq_pad has shape {tuple(pad.shape)}, expected {expected_shape} for n_fft {config.n_fft}"
            )
        if pad.numel() and bool(pad.abs().max() > 0):
            raise ValueError("freq_pad is not zero")


def _hyper_parameters(checkpoint: Any) -> dict[str, Any]:
    if not isinstance(checkpoint, Mapping):
        return {}
    for key in ("hyper_parameters", "hparams"):
        plain = to_plain(checkpoint.get(key))
        if isinstance(plain, dict):
            return plain
    return {}


def build_config(
    state: Mapping[str, torch.Tensor],
    hyper_parameters: Mapping[str, Any] | None = None,
    *,
    target: str | None = None,
    residual_name: str | None = "auto",
    overrides: Mapping[str, Any] | None = None,
) -> DTTNetConfig:
    """`DTTNetConfig` from the weights, the checkpoint's hyper-parameters and explicit overrides."""
    hp = dict(hyper_parameters or {})
    kwargs = dict(RELEASE_DEFAULTS)
    for ours, theirs in (("hop_length", "hop_length"), ("dim_t", "dim_t"), ("overlap_samples", "overlap")):
        if isinstance(hp.get(theirs), int):
            kwargs[ours] = hp[theirs]
    if isinstance(hp.get("n_fft"), int):
        kwargs["n_fft"] = hp["n_fft"]
    kwargs.update(config_kwargs_from_state_dict(state))
    if isinstance(hp.get("dim_f"), int) and hp["dim_f"] != kwargs["dim_f"]:
        raise ValueError(
            f"hyper-parameter dim_f={hp['dim_f']} disagrees with the weights ({kwargs['dim_f']})"
        )
    block_type = hp.get("block_type")
    if block_type is not None and block_type != "TFC_TDF_Res2":
        raise ValueError(f"block_type {block_type!r} is not supported (only TFC_TDF_Res2)")
    if target is None:
        target = hp.get("target_name") if isinstance(hp.get("target_name"), str) else "vocals"
    if residual_name == "auto":
        residual_name = "accompaniment" if target == "vocals" else "residual"
    kwargs["source_names"] = [target] if residual_name is None else [target, residual_name]
    kwargs.update(overrides or {})
    return DTTNetConfig(**kwargs)


def convert_state_dict(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename official keys to ours; returns (converted, unknown keys); drops ``window``/``freq_pad``."""
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key in ("window", "freq_pad"):
            continue
        ours = map_key(key)
        if ours is None:
            unknown.append(key)
        else:
            converted[ours] = value
    return converted, unknown


def load_original_model(
    source: str | os.PathLike,
    *,
    target: str | None = None,
    residual_name: str | None = "auto",
    overrides: Mapping[str, Any] | None = None,
) -> DTTNetForSourceSeparation:
    """Build a `DTTNetForSourceSeparation` holding the weights of an official checkpoint."""
    checkpoint = load_checkpoint(source)
    state = extract_state_dict(checkpoint, str(source))
    config = build_config(
        state, _hyper_parameters(checkpoint), target=target, residual_name=residual_name, overrides=overrides
    )
    _check_fixed_tensors(state, config)
    converted, unexpected = convert_state_dict(state)
    model = DTTNetForSourceSeparation(config)
    expected = model.state_dict()
    check_state_dict(
        converted,
        expected,
        f"the checkpoint at {source} does not match the DTTNet architecture: ",
        unconsumed=unexpected,
    )
    model.load_state_dict(
        {key: value.to(expected[key].dtype) for key, value in converted.items()}, strict=True
    )
    return model.eval()


def convert_checkpoint(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    target: str | None = None,
    residual_name: str | None = "auto",
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Convert an official DTTNet checkpoint into a `save_pretrained` folder; returns the folder.

    ``target`` names the predicted source (default: the checkpoint's ``target_name``, else
    ``vocals``); ``residual_name`` names the residual output (``"auto"``: ``accompaniment`` for vocals,
    ``residual`` otherwise; None: no residual output). ``overrides`` sets any other config field
    (e.g. ``hop_length``, ``dim_t``, ``overlap_samples``). Raises `ValueError` when the checkpoint does
    not match the architecture and `FileExistsError` when ``output_dir`` exists without ``overwrite``.
    """
    output_dir = check_output_dir(output_dir, overwrite)
    model = load_original_model(source, target=target, residual_name=residual_name, overrides=overrides)
    return save_model_folder(model, output_dir, overwrite=overwrite, protected=source_files(source))


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", metavar="SRC", help="official DTTNet Lightning .ckpt (or a plain state dict file)"
    )
    parser.add_argument("output_dir", metavar="OUT", help="folder to write (save_pretrained layout)")
    parser.add_argument(
        "--target",
        default=None,
        help="name of the predicted source (default: from the checkpoint, else vocals)",
    )
    residual = parser.add_mutually_exclusive_group()
    residual.add_argument(
        "--residual-name",
        default="auto",
        help="name of the mixture-minus-target output (default: accompaniment for vocals)",
    )
    residual.add_argument("--no-residual", action="store_true", help="output the target only")
    parser.add_argument(
        "--hop-length", type=int, default=None, help="STFT hop (default: checkpoint, else 1024)"
    )
    parser.add_argument(
        "--dim-t", type=int, default=None, help="frames per chunk (default: checkpoint, else 256)"
    )
    parser.add_argument(
        "--overlap-samples",
        type=int,
        default=None,
        help="context discarded per chunk side (default: checkpoint, else 3072)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the converted model's files in OUT if it exists"
    )


def run(args: argparse.Namespace) -> int:
    overrides = {
        key: value
        for key, value in (
            ("hop_length", args.hop_length),
            ("dim_t", args.dim_t),
            ("overlap_samples", args.overlap_samples),
        )
        if value is not None
    }
    output = convert_checkpoint(
        args.source,
        args.output_dir,
        overwrite=args.overwrite,
        target=args.target,
        residual_name=None if args.no_residual else args.residual_name,
        overrides=overrides,
    )
    print(f"wrote {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "RecordedObject",
    "RestrictedUnpickler",
    "build_config",
    "config_kwargs_from_state_dict",
    "configure_parser",
    "convert_checkpoint",
    "convert_state_dict",
    "extract_state_dict",
    "load_checkpoint",
    "load_original_model",
    "map_key",
    "restricted_load",
    "run",
]
