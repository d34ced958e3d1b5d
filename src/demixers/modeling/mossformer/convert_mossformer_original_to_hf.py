"""Convert ModelScope's MossFormer release into a `save_pretrained` folder.

Accepted sources:

* the official release folder (``damo/speech_mossformer_separation_temporal_8k``):
  ``configuration.json`` plus the three state dicts ModelScope loads, ``encoder.bin``,
  ``decoder.bin`` and ``masknet.bin`` (``.ckpt``/``.pt``/``.pth`` suffixes, as a SpeechBrain
  checkpointer writes them, are accepted too);
* one combined state dict file (``.bin``/``.pt``/``.pth``/``.ckpt``/``.safetensors``) holding the
  whole ModelScope ``MossFormer`` (``encoder.*``, ``decoder.*``, ``mask_net.*``/``masknet.*``),
  possibly nested under ``"state_dict"``/``"model"`` and possibly prefixed (``module.``, ``model.``).

Pickled files are read by the restricted unpickler of `demixers.conversion` (as with
``torch.load(..., weights_only=True)``): tensors and plain containers only, nothing is executed.
The architecture comes from ``configuration.json`` when present (next to a combined file as well),
otherwise from the tensor shapes, with the release's values for what shapes cannot tell
(``group_size``, ``causal``, ``attn_dropout``, ``norm`` between ``ln``/``cln``);
``config_overrides`` can set any `MossFormerConfig` field.

Command line (through the package CLI): ``demixers convert modelscope-mossformer SRC OUT [--overwrite]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from demixers.conversion import (
    check_output_dir,
    check_state_dict,
    load_safetensors,
    map_key,
    restricted_load,
    save_model_folder,
    source_files,
)

from .configuration_mossformer import MossFormerConfig
from .modeling_mossformer import MossFormerForSourceSeparation

PARTS = ("encoder", "decoder", "masknet")
PART_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".safetensors")
NESTING_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
LAYER_PREFIX = "mdl.att_mdl.mossformerM.layers."

# ModelScope's configuration.json "model" fields -> MossFormerConfig fields (others are derived below)
_CONFIG_FIELDS = {
    "kernel_size": "encoder_kernel_size",
    "stride": "encoder_stride",
    "out_channels": "encoder_channels",
    "d_model": "hidden_size",
    "num_blocks": "num_hidden_layers",
    "group_size": "group_size",
    "query_key_dim": "query_key_dim",
    "expansion_factor": "expansion_factor",
    "attn_dropout": "attention_dropout",
    "causal": "causal",
    "bias": "decoder_bias",
}

# reference key (relative to one MossFormer layer) -> ours
_LAYER_RULES = [
    (r"to_hidden\.mdl\.0\.g", "value_gate_proj.norm.gain"),
    (r"to_hidden\.mdl\.1\.(weight|bias)", r"value_gate_proj.linear.\1"),
    (r"to_hidden\.mdl\.3\.sequential\.1\.conv\.weight", "value_gate_proj.conv.depthwise.weight"),
    (r"to_qk\.mdl\.0\.g", "query_key_proj.norm.gain"),
    (r"to_qk\.mdl\.1\.(weight|bias)", r"query_key_proj.linear.\1"),
    (r"to_qk\.mdl\.3\.sequential\.1\.conv\.weight", "query_key_proj.conv.depthwise.weight"),
    (r"to_out\.mdl\.0\.g", "out_proj.norm.gain"),
    (r"to_out\.mdl\.1\.(weight|bias)", r"out_proj.linear.\1"),
    (r"to_out\.mdl\.3\.sequential\.1\.conv\.weight", "out_proj.conv.depthwise.weight"),
    (r"qk_offset_scale\.(gamma|beta)", r"query_key_offset_scale.\1"),
]
_NORM_PARAMS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"
# reference key (relative to the mask net) -> ours (relative to our mask net)
_MASK_NET_RULES = [
    (rf"norm\.{_NORM_PARAMS}", r"input_norm.\1"),
    (r"conv1d_encoder\.weight", "input_proj.weight"),
    (r"pos_enc\.scale", "position_embedding.scale"),
    (r"mdl\.att_mdl\.norm\.norm\.(weight|bias)", r"layers_norm.\1"),
    (rf"mdl\.att_norm\.{_NORM_PARAMS}", r"residual_norm.\1"),
    (r"prelu\.weight", "activation.weight"),
    (r"conv1d_out\.(weight|bias)", r"sources_proj.\1"),
    (r"output\.0\.(weight|bias)", r"output_proj.\1"),
    (r"output_gate\.0\.(weight|bias)", r"output_gate_proj.\1"),
    (r"conv1_decoder\.weight", "mask_proj.weight"),
]


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read one checkpoint file safely and return its (possibly nested) state dict, flattened."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        return load_safetensors(path)
    loaded, recorded = restricted_load(path)
    if recorded:
        raise ValueError(
            f"{path} is not a plain state dict: it pickles objects other than tensors and containers "
            f"({', '.join(sorted(recorded)[:5])}), which are refused for safety (as with "
            "torch.load(weights_only=True)); nothing was imported or run. Re-save it as a state dict "
            "(torch.save(model.state_dict(), ...))."
        )
    return _unwrap_state_dict(loaded, str(path))


def _unwrap_state_dict(loaded: Any, name: str) -> dict[str, torch.Tensor]:
    for _ in range(4):
        if not isinstance(loaded, Mapping):
            raise ValueError(f"{name} does not hold a state dict (found {type(loaded).__name__})")
        if loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
            return dict(loaded)
        nested = [key for key in NESTING_KEYS if isinstance(loaded.get(key), Mapping)]
        if not nested:
            break
        loaded = loaded[nested[0]]
    tensors = {key: value for key, value in loaded.items() if isinstance(value, torch.Tensor)}
    if not tensors:
        raise ValueError(f"{name} holds no tensors (keys: {sorted(map(str, loaded))[:10]})")
    return tensors


def _strip_common_prefixes(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "model.", "_orig_mod.", "module.", "model."):
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def _find_part(folder: Path, part: str) -> Path | None:
    for suffix in PART_SUFFIXES:
        candidate = folder / f"{part}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def load_original_checkpoint(
    source: str | os.PathLike,
) -> tuple[dict[str, dict[str, torch.Tensor]], dict | None]:
    """Returns ``({"encoder": ..., "decoder": ..., "masknet": ...}, configuration_json_or_None)``."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    configuration = None
    config_path = (source if source.is_dir() else source.parent) / "configuration.json"
    if config_path.is_file():
        try:
            configuration = json.loads(config_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{config_path} is not valid JSON: {error}") from None

    if source.is_dir():
        found = {part: _find_part(source, part) for part in PARTS}
        if all(found.values()):
            parts = {part: _strip_common_prefixes(load_state_dict_file(path)) for part, path in found.items()}
            return parts, configuration
        files = [p for p in sorted(source.iterdir()) if p.is_file() and p.suffix in PART_SUFFIXES]
        if len(files) != 1:
            missing = [part for part, path in found.items() if path is None]
            raise ValueError(
                f"{source} is not a MossFormer release folder: expected encoder.bin, decoder.bin and "
                f"masknet.bin (missing: {', '.join(missing)}) or exactly one combined state dict file "
                f"(found {[p.name for p in files]})"
            )
        source = files[0]

    state_dict = _strip_common_prefixes(load_state_dict_file(source))
    return _split_combined(state_dict, source), configuration


def _split_combined(state_dict: dict[str, torch.Tensor], source: Path) -> dict[str, dict[str, torch.Tensor]]:
    prefixes = {"encoder": ("encoder.",), "decoder": ("decoder.",), "masknet": ("mask_net.", "masknet.")}
    parts: dict[str, dict[str, torch.Tensor]] = {part: {} for part in PARTS}
    unknown = []
    for key, value in state_dict.items():
        for part, candidates in prefixes.items():
            prefix = next((p for p in candidates if key.startswith(p)), None)
            if prefix is not None:
                parts[part][key[len(prefix) :]] = value
                break
        else:
            unknown.append(key)
    empty = [part for part, tensors in parts.items() if not tensors]
    if unknown or empty:
        raise ValueError(
            f"{source} is not a ModelScope MossFormer state dict: "
            + (f"no keys for {empty} (expected prefixes encoder., decoder., mask_net.); " if empty else "")
            + (f"unexpected keys {unknown[:10]}{' ...' if len(unknown) > 10 else ''}" if unknown else "")
        )
    return parts


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def config_from_configuration_json(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """MossFormerConfig kwargs from ModelScope's configuration.json."""
    model = configuration.get("model", configuration)
    if not isinstance(model, Mapping):
        raise ValueError("configuration.json has no 'model' section")
    kwargs: dict[str, Any] = {}
    for original, ours in _CONFIG_FIELDS.items():
        if original in model:
            kwargs[ours] = model[original]
    if "num_spks" in model:
        kwargs["source_names"] = [f"speaker_{index + 1}" for index in range(int(model["num_spks"]))]
    if "norm" in model:
        kwargs["norm_type"] = model["norm"] if model["norm"] in ("ln", "gln", "cln") else "bn"
    channels = model.get("out_channels")
    if "in_channels" in model and channels is not None and model["in_channels"] != channels:
        raise ValueError(
            f"configuration.json: in_channels={model['in_channels']} != out_channels={channels}; the "
            "reference model only runs when both are equal"
        )
    if "d_model" in model and channels is not None and model["d_model"] != channels:
        raise ValueError(
            f"configuration.json: d_model={model['d_model']} != out_channels={channels}; the reference "
            "model only runs when both are equal"
        )
    kernel = model.get("kernel_size")
    if kernel is not None and "stride" in model and model["stride"] != kernel // 2:
        raise ValueError(
            f"configuration.json: stride={model['stride']} but the reference encoder always hops by "
            f"kernel_size // 2 = {kernel // 2}; such a checkpoint cannot be reproduced"
        )
    if kernel is not None and "stride" not in model:
        kwargs["encoder_stride"] = kernel // 2
    for key in ("sample_rate", "sampling_rate", "fs"):
        value = model.get(key, configuration.get(key))
        if isinstance(value, int):
            kwargs["sampling_rate"] = value
            break
    return kwargs


def config_from_shapes(parts: Mapping[str, Mapping[str, torch.Tensor]]) -> dict[str, Any]:
    """MossFormerConfig kwargs inferred from the tensors (what shapes cannot tell keeps its default)."""
    encoder, decoder, masknet = parts["encoder"], parts["decoder"], parts["masknet"]

    def shape_of(part: Mapping[str, torch.Tensor], key: str, where: str) -> torch.Size:
        if key not in part:
            raise ValueError(f"cannot infer the architecture: {where} has no '{key}'")
        return part[key].shape

    channels, _, kernel = shape_of(encoder, "conv1d.weight", "encoder")
    hidden = shape_of(masknet, "conv1d_encoder.weight", "masknet")[0]
    layer_indices = {
        int(match.group(1))
        for key in masknet
        if (match := re.match(re.escape(LAYER_PREFIX) + r"(\d+)\.", key))
    }
    if not layer_indices:
        raise ValueError("cannot infer the architecture: masknet has no MossFormer layers")
    first = f"{LAYER_PREFIX}0."
    inner = shape_of(masknet, first + "to_hidden.mdl.1.weight", "masknet")[0]
    query_key_dim = shape_of(masknet, first + "to_qk.mdl.1.weight", "masknet")[0]
    conv_kernel = shape_of(masknet, first + "to_hidden.mdl.3.sequential.1.conv.weight", "masknet")[-1]
    sources = shape_of(masknet, "conv1d_out.weight", "masknet")[0] // hidden
    if "norm.running_mean" in masknet:
        norm_type = "bn"
    elif masknet.get("norm.weight") is not None and masknet["norm.weight"].dim() == 2:
        norm_type = "gln"
    else:
        norm_type = "ln"  # a one-group GroupNorm and a channel LayerNorm have the same shapes
    return {
        "encoder_kernel_size": int(kernel),
        "encoder_stride": int(kernel) // 2,
        "encoder_channels": int(channels),
        "hidden_size": int(hidden),
        "num_hidden_layers": max(layer_indices) + 1,
        "query_key_dim": int(query_key_dim),
        "expansion_factor": inner / hidden,
        "conv_kernel_size": int(conv_kernel),
        "source_names": [f"speaker_{index + 1}" for index in range(int(sources))],
        "norm_type": norm_type,
        "decoder_bias": "bias" in decoder,
    }


# ---------------------------------------------------------------------------------------------
# State dict conversion
# ---------------------------------------------------------------------------------------------


def _check_derived(name: str, tensor: torch.Tensor, expected: torch.Tensor) -> None:
    """Buffers the reference stores but we recompute must hold the standard values."""
    if tensor.shape != expected.shape or not torch.allclose(tensor.float(), expected, rtol=1e-6, atol=0.0):
        raise ValueError(
            f"checkpoint tensor '{name}' does not hold the standard frequencies this implementation "
            "computes; the checkpoint cannot be reproduced"
        )


def convert_state_dict(
    parts: Mapping[str, Mapping[str, torch.Tensor]], config: MossFormerConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map ModelScope keys to ours. Returns ``(state_dict, unconverted_original_keys)``."""
    from .modeling_mossformer import _sinusoid_frequencies

    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in parts["encoder"].items():
        if key == "conv1d.weight":
            converted["encoder.conv.weight"] = value
        else:
            unexpected.append(f"encoder.bin:{key}")
    for key, value in parts["decoder"].items():
        if key in ("weight", "bias"):
            converted[f"decoder.conv.{key}"] = value
        else:
            unexpected.append(f"decoder.bin:{key}")

    rotary = _sinusoid_frequencies(config.rotary_dim, torch.device("cpu"))
    for key, value in parts["masknet"].items():
        if key == "pos_enc.inv_freq":
            _check_derived(key, value, _sinusoid_frequencies(config.hidden_size, torch.device("cpu")))
            continue
        if key.startswith(LAYER_PREFIX):
            index, _, rest = key[len(LAYER_PREFIX) :].partition(".")
            if rest.startswith("rotary_pos_emb."):
                if rest == "rotary_pos_emb.freqs":
                    _check_derived(key, value, rotary)
                continue  # parameter-free here: cosines/sines are recomputed
            new = map_key(rest, _LAYER_RULES)
            new = None if new is None else f"mask_net.layers.{index}.{new}"
        else:
            new = map_key(key, _MASK_NET_RULES)
            new = None if new is None else f"mask_net.{new}"
        if new is None:
            unexpected.append(f"masknet.bin:{key}")
            continue
        if config.norm_type == "gln" and new.endswith(("norm.weight", "norm.bias")) and value.dim() == 2:
            value = value[:, 0]  # the reference's GlobalLayerNorm stores (channels, 1)
        converted[new] = value
    return converted, unexpected


def build_config(
    parts: Mapping[str, Mapping[str, torch.Tensor]],
    configuration: Mapping[str, Any] | None,
    config_overrides: Mapping[str, Any] | None = None,
) -> MossFormerConfig:
    kwargs = config_from_shapes(parts)
    if configuration is not None:
        from_json = config_from_configuration_json(configuration)
        disagreements = {
            key: (value, kwargs[key])
            for key, value in from_json.items()
            if key in kwargs and key not in ("norm_type", "expansion_factor") and value != kwargs[key]
        }
        if "expansion_factor" in from_json and float(from_json["expansion_factor"]) != float(
            kwargs["expansion_factor"]
        ):
            disagreements["expansion_factor"] = (from_json["expansion_factor"], kwargs["expansion_factor"])
        if disagreements:
            detail = ", ".join(
                f"{k}: configuration.json {a!r} vs tensors {b!r}" for k, (a, b) in disagreements.items()
            )
            raise ValueError(f"configuration.json disagrees with the checkpoint's tensors ({detail})")
        kwargs.update(from_json)
    kwargs.update(config_overrides or {})
    kwargs.setdefault("sampling_rate", 8000)
    return MossFormerConfig(**kwargs)


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
    """Convert a ModelScope MossFormer checkpoint into a `save_pretrained` folder; returns the folder.

    Raises `ValueError` (listing the keys) when the checkpoint does not match the architecture,
    `FileExistsError` when ``output_dir`` exists and ``overwrite`` is False.
    """
    output_dir = check_output_dir(output_dir, overwrite)

    parts, configuration = load_original_checkpoint(source)
    config = build_config(parts, configuration, config_overrides)
    state_dict, unexpected = convert_state_dict(parts, config)

    model = MossFormerForSourceSeparation(config)
    expected = model.state_dict()
    check_state_dict(
        state_dict,
        expected,
        f"the checkpoint at {source} does not match the MossFormer architecture: ",
        unconsumed=unexpected,
    )
    model.load_state_dict(
        {key: value.to(expected[key].dtype) for key, value in state_dict.items()}, strict=True
    )
    model.eval()
    source = Path(source)
    folder = source if source.is_dir() else source.parent
    protected = [*source_files(source), folder / "configuration.json"]
    return save_model_folder(model, output_dir, overwrite=overwrite, protected=protected)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SRC",
        help="ModelScope release folder (configuration.json, encoder.bin, decoder.bin, masknet.bin) "
        "or one combined state dict file",
    )
    parser.add_argument("output_dir", metavar="OUT", help="folder to write the converted model to")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it already exists")


def run(args: argparse.Namespace) -> int:
    output_dir = convert_checkpoint(args.source, args.output_dir, overwrite=args.overwrite)
    print(f"wrote the converted MossFormer to {output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert ModelScope's MossFormer release into a save_pretrained folder."
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
