"""Convert ModelScope's MossFormer2 release into a `save_pretrained` folder (and the shared mapping).

ModelScope's ``damo/speech_mossformer2_separation_temporal_8k`` holds ``configuration.json`` (the
constructor's kwargs under ``model``) and one torch file, ``pytorch_model.pt``, with the whole
model's state dict (``enc.*``, ``mask_net.*``, ``dec.*``). ModelScope loads it with
``strict=False``, so a mismatched file silently leaves random weights; this converter maps every
key and refuses a checkpoint with missing, unexpected or mis-shaped tensors.

The state-dict layout is the same in ClearerVoice-Studio's ``MossFormer2_SS_16K`` (see
``convert_mossformer2_clearvoice_to_hf.py``, which reuses this module's mapping): both references
build the same modules with the same names; only their file layout and config format differ.

Accepted sources: the release folder, or one state dict file (``.pt``/``.pth``/``.bin``/``.ckpt``/
``.safetensors``; ``configuration.json`` beside it is read when present). Pickles are read by the
restricted unpickler of `demixers.conversion` (as ``torch.load(..., weights_only=True)``): tensors and
plain containers only. The architecture comes from the tensors' shapes, checked against
``configuration.json``; what neither tells (sampling rate) comes from the ``modelscope-8k`` preset.
The widths ModelScope fixes in code (group size 256, query/key size 128, FSMN width 256 and memory
order 20) are checked through the shapes where they show, and are the config's defaults.

Command line: ``demixers convert modelscope-mossformer2 SRC OUT [--overwrite] [--sampling-rate HZ]``.
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
    map_keys,
    restricted_load,
    save_model_folder,
    source_files,
    strip_prefixes,
    tensor_state_dict,
)

from .configuration_mossformer2 import MOSSFORMER2_PRESETS, MossFormer2Config
from .modeling_mossformer2 import MossFormer2ForSourceSeparation, _sinusoid_frequencies

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
RELEASE_FILE = "pytorch_model.pt"
NESTING_KEYS = ("state_dict", "model_state_dict", "model", "module")
PREFIXES = ("module.", "model.", "_orig_mod.")

_MOSSFORMER = r"mask_net\.mdl\.intra_mdl\.mossformerM\.layers\.(\d+)\."
_FSMN = r"mask_net\.mdl\.intra_mdl\.mossformerM\.fsmn\.(\d+)\."
_NORM_PARAMS = r"(weight|bias|running_mean|running_var|num_batches_tracked)"

# reference key -> ours (both references name their modules identically)
RULES: list[tuple[str, str]] = [
    (r"enc\.conv1d\.weight", "encoder.conv.weight"),
    (r"dec\.(weight|bias)", r"decoder.conv.\1"),
    (rf"mask_net\.norm\.{_NORM_PARAMS}", r"mask_net.input_norm.\1"),
    (r"mask_net\.conv1d_encoder\.weight", "mask_net.input_proj.weight"),
    (r"mask_net\.pos_enc\.scale", "mask_net.position_embedding.scale"),
    (r"mask_net\.mdl\.intra_mdl\.norm\.(weight|bias)", r"mask_net.layers_norm.\1"),
    (rf"mask_net\.mdl\.intra_norm\.{_NORM_PARAMS}", r"mask_net.residual_norm.\1"),
    (r"mask_net\.prelu\.weight", "mask_net.activation.weight"),
    (r"mask_net\.conv1d_out\.(weight|bias)", r"mask_net.sources_proj.\1"),
    (r"mask_net\.output\.0\.(weight|bias)", r"mask_net.output_proj.\1"),
    (r"mask_net\.output_gate\.0\.(weight|bias)", r"mask_net.output_gate_proj.\1"),
    (r"mask_net\.conv1_decoder\.weight", "mask_net.mask_proj.weight"),
    # MossFormer blocks (the FLASH layers)
    (_MOSSFORMER + r"to_hidden\.mdl\.0\.g", r"mask_net.layers.\1.value_gate_proj.norm.gain"),
    (_MOSSFORMER + r"to_hidden\.mdl\.1\.(weight|bias)", r"mask_net.layers.\1.value_gate_proj.linear.\2"),
    (
        _MOSSFORMER + r"to_hidden\.mdl\.3\.sequential\.1\.conv\.weight",
        r"mask_net.layers.\1.value_gate_proj.conv.depthwise.weight",
    ),
    (_MOSSFORMER + r"to_qk\.mdl\.0\.g", r"mask_net.layers.\1.query_key_proj.norm.gain"),
    (_MOSSFORMER + r"to_qk\.mdl\.1\.(weight|bias)", r"mask_net.layers.\1.query_key_proj.linear.\2"),
    (
        _MOSSFORMER + r"to_qk\.mdl\.3\.sequential\.1\.conv\.weight",
        r"mask_net.layers.\1.query_key_proj.conv.depthwise.weight",
    ),
    (_MOSSFORMER + r"to_out\.mdl\.0\.g", r"mask_net.layers.\1.out_proj.norm.gain"),
    (_MOSSFORMER + r"to_out\.mdl\.1\.(weight|bias)", r"mask_net.layers.\1.out_proj.linear.\2"),
    (
        _MOSSFORMER + r"to_out\.mdl\.3\.sequential\.1\.conv\.weight",
        r"mask_net.layers.\1.out_proj.conv.depthwise.weight",
    ),
    (_MOSSFORMER + r"qk_offset_scale\.(gamma|beta)", r"mask_net.layers.\1.query_key_offset_scale.\2"),
    # gated FSMN blocks
    (_FSMN + r"conv1\.0\.(weight|bias)", r"mask_net.fsmn_layers.\1.input_proj.\2"),
    (_FSMN + r"conv1\.1\.weight", r"mask_net.fsmn_layers.\1.activation.weight"),
    (_FSMN + r"norm1\.(weight|bias)", r"mask_net.fsmn_layers.\1.input_norm.\2"),
    (_FSMN + r"norm2\.(weight|bias)", r"mask_net.fsmn_layers.\1.output_norm.\2"),
    (_FSMN + r"conv2\.(weight|bias)", r"mask_net.fsmn_layers.\1.output_proj.\2"),
    (
        _FSMN + r"gated_fsmn\.to_u\.mdl\.0\.(weight|bias)",
        r"mask_net.fsmn_layers.\1.gated_fsmn.u_proj.norm.\2",
    ),
    (
        _FSMN + r"gated_fsmn\.to_u\.mdl\.1\.(weight|bias)",
        r"mask_net.fsmn_layers.\1.gated_fsmn.u_proj.linear.\2",
    ),
    (
        _FSMN + r"gated_fsmn\.to_u\.mdl\.3\.sequential\.1\.conv\.weight",
        r"mask_net.fsmn_layers.\1.gated_fsmn.u_proj.conv.depthwise.weight",
    ),
    (
        _FSMN + r"gated_fsmn\.to_v\.mdl\.0\.(weight|bias)",
        r"mask_net.fsmn_layers.\1.gated_fsmn.v_proj.norm.\2",
    ),
    (
        _FSMN + r"gated_fsmn\.to_v\.mdl\.1\.(weight|bias)",
        r"mask_net.fsmn_layers.\1.gated_fsmn.v_proj.linear.\2",
    ),
    (
        _FSMN + r"gated_fsmn\.to_v\.mdl\.3\.sequential\.1\.conv\.weight",
        r"mask_net.fsmn_layers.\1.gated_fsmn.v_proj.conv.depthwise.weight",
    ),
    (
        _FSMN + r"gated_fsmn\.fsmn\.linear\.(weight|bias)",
        r"mask_net.fsmn_layers.\1.gated_fsmn.fsmn.linear.\2",
    ),
    (_FSMN + r"gated_fsmn\.fsmn\.project\.weight", r"mask_net.fsmn_layers.\1.gated_fsmn.fsmn.project.weight"),
    # the dense dilated memory's layers are numbered from 1 in the references
    (
        _FSMN + r"gated_fsmn\.fsmn\.conv\.conv(\d+)\.weight",
        r"mask_net.fsmn_layers.\1.gated_fsmn.fsmn.memory.convs.#\2.weight",
    ),
    (
        _FSMN + r"gated_fsmn\.fsmn\.conv\.norm(\d+)\.(weight|bias)",
        r"mask_net.fsmn_layers.\1.gated_fsmn.fsmn.memory.norms.#\2.\3",
    ),
    (
        _FSMN + r"gated_fsmn\.fsmn\.conv\.prelu(\d+)\.weight",
        r"mask_net.fsmn_layers.\1.gated_fsmn.fsmn.memory.activations.#\2.weight",
    ),
]
# constant tables both references store; recomputed here (their values are checked, not loaded)
_DERIVED = (r"mask_net\.pos_enc\.inv_freq", _MOSSFORMER + r"rotary_pos_emb\.freqs")
# 1x1 convolutions stored as linear layers, and (taps, 1) 2-D kernels stored as 1-D ones
_SQUEEZED = re.compile(r".*(fsmn_layers\.\d+\.(input_proj|output_proj)\.weight|memory\.convs\.#?\d+\.weight)")


def _one_based_to_zero_based(name: str) -> str:
    return re.sub(r"#(\d+)", lambda match: str(int(match.group(1)) - 1), name)


# ---------------------------------------------------------------------------------------------
# Reading checkpoints
# ---------------------------------------------------------------------------------------------


def load_state_dict_file(
    path: str | os.PathLike, nesting_keys: tuple[str, ...] = NESTING_KEYS
) -> dict[str, Any]:
    """One checkpoint file's state dict (unwrapped from ``nesting_keys``, common prefixes stripped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        return strip_prefixes(load_safetensors(path), PREFIXES)
    loaded, recorded = restricted_load(path)
    if recorded:
        raise ValueError(
            f"{path} is not a plain state dict: it pickles objects other than tensors and containers "
            f"({', '.join(sorted(recorded)[:5])}), which are refused for safety (as with "
            "torch.load(weights_only=True)); nothing was imported or run"
        )
    for _ in range(3):
        if not isinstance(loaded, Mapping):
            break
        if loaded and all(isinstance(value, torch.Tensor) for value in loaded.values()):
            break
        nested = [key for key in nesting_keys if isinstance(loaded.get(key), Mapping)]
        if not nested:
            break
        loaded = loaded[nested[0]]
    return strip_prefixes(tensor_state_dict(loaded, str(path)), PREFIXES)


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def _shape(state_dict: Mapping[str, torch.Tensor], key: str) -> torch.Size:
    if key not in state_dict:
        raise ValueError(f"cannot infer the architecture: the checkpoint has no '{key}'")
    return state_dict[key].shape


def config_from_shapes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """MossFormer2Config kwargs the tensors determine (the rest keeps the release's values)."""
    channels, _, kernel = _shape(state_dict, "enc.conv1d.weight")
    hidden = _shape(state_dict, "mask_net.conv1d_encoder.weight")[0]
    layers = {int(m.group(1)) for key in state_dict if (m := re.match(_MOSSFORMER, key))}
    fsmn_layers = {int(m.group(1)) for key in state_dict if (m := re.match(_FSMN, key))}
    if not layers:
        raise ValueError("cannot infer the architecture: the checkpoint has no MossFormer layers")
    if layers != fsmn_layers:
        raise ValueError(
            f"the checkpoint has MossFormer layers {sorted(layers)} but gated FSMN layers "
            f"{sorted(fsmn_layers)}; MossFormer2 pairs them one to one"
        )
    first, fsmn = "mask_net.mdl.intra_mdl.mossformerM.layers.0.", "mask_net.mdl.intra_mdl.mossformerM.fsmn.0."
    inner = _shape(state_dict, first + "to_hidden.mdl.1.weight")[0]
    memory_layers = {
        int(m.group(1))
        for key in state_dict
        if (m := re.fullmatch(re.escape(fsmn) + r"gated_fsmn\.fsmn\.conv\.conv(\d+)\.weight", key))
    }
    memory_taps = _shape(state_dict, fsmn + "gated_fsmn.fsmn.conv.conv1.weight")[2]
    if memory_taps % 2 == 0:
        raise ValueError(f"the FSMN memory kernels have {memory_taps} taps; an odd number is expected")
    norm_weight = state_dict.get("mask_net.norm.weight")
    if "mask_net.norm.running_mean" in state_dict:
        norm_type = "bn"
    elif norm_weight is not None and norm_weight.dim() == 2:
        norm_type = "gln"
    else:
        norm_type = "ln"  # a one-group GroupNorm and a channel LayerNorm have the same shapes
    return {
        "encoder_kernel_size": int(kernel),
        "encoder_stride": int(kernel) // 2,
        "encoder_channels": int(channels),
        "hidden_size": int(hidden),
        "num_hidden_layers": max(layers) + 1,
        "query_key_dim": int(_shape(state_dict, first + "to_qk.mdl.1.weight")[0]),
        "expansion_factor": inner / hidden,
        "conv_kernel_size": int(_shape(state_dict, first + "to_hidden.mdl.3.sequential.1.conv.weight")[-1]),
        "fsmn_inner_channels": int(_shape(state_dict, fsmn + "conv1.0.weight")[0]),
        "fsmn_memory_order": (int(memory_taps) + 1) // 2,
        "fsmn_dilation_depth": max(memory_layers),
        "source_names": [
            f"speaker_{index + 1}"
            for index in range(int(_shape(state_dict, "mask_net.conv1d_out.weight")[0]) // int(hidden))
        ],
        "norm_type": norm_type,
        "decoder_bias": "dec.bias" in state_dict,
    }


def config_from_configuration_json(configuration: Mapping[str, Any]) -> dict[str, Any]:
    """MossFormer2Config kwargs from ModelScope's configuration.json (its ``model`` section)."""
    model = configuration.get("model", configuration)
    if not isinstance(model, Mapping):
        raise ValueError("configuration.json has no 'model' section")
    for flag in ("skip_around_intra", "use_global_pos_enc"):
        if model.get(flag, True) is not True:
            raise ValueError(
                f"configuration.json: {flag}={model[flag]!r}; only the released architecture ({flag}=True) "
                "is supported"
            )
    kwargs: dict[str, Any] = {}
    if "in_channels" in model:
        kwargs["encoder_channels"] = model["in_channels"]
    if "out_channels" in model:
        kwargs["hidden_size"] = model["out_channels"]
    if "in_channels" in model and "out_channels" in model and model["in_channels"] != model["out_channels"]:
        raise ValueError(
            f"configuration.json: in_channels={model['in_channels']} != "
            f"out_channels={model['out_channels']}; the reference decoder only runs when both are equal"
        )
    if "num_blocks" in model:
        kwargs["num_hidden_layers"] = model["num_blocks"]
    if "kernel_size" in model:
        kwargs["encoder_kernel_size"] = model["kernel_size"]
        if isinstance(model["kernel_size"], int) and not isinstance(model["kernel_size"], bool):
            kwargs["encoder_stride"] = model["kernel_size"] // 2
    if "num_spks" in model:
        speakers = model["num_spks"]
        if isinstance(speakers, bool) or not isinstance(speakers, int) or not 1 <= speakers <= 64:
            raise ValueError(f"configuration.json: num_spks must be an int in [1, 64], got {speakers!r}")
        kwargs["source_names"] = [f"speaker_{index + 1}" for index in range(speakers)]
    if "norm" in model:
        kwargs["norm_type"] = model["norm"] if model["norm"] in ("ln", "gln", "cln") else "bn"
    for key in ("sample_rate", "sampling_rate", "fs"):
        value = model.get(key, configuration.get(key))
        if value is not None:
            kwargs["sampling_rate"] = value
            break
    return kwargs


def build_config(
    state_dict: Mapping[str, torch.Tensor],
    from_file: Mapping[str, Any] | None,
    preset: str,
    config_overrides: Mapping[str, Any] | None = None,
    file_name: str = "the config file",
) -> MossFormer2Config:
    """The config: the preset, then the tensors' shapes, then the release's config file (which
    must agree with the shapes), then ``config_overrides``."""
    kwargs: dict[str, Any] = {**MOSSFORMER2_PRESETS[preset], **config_from_shapes(state_dict)}
    if from_file:
        disagreements = {
            key: (value, kwargs[key])
            for key, value in from_file.items()
            if key in kwargs and key not in ("norm_type", "sampling_rate") and value != kwargs[key]
        }
        if disagreements:
            detail = ", ".join(
                f"{k}: {file_name} {a!r} vs tensors {b!r}" for k, (a, b) in disagreements.items()
            )
            raise ValueError(f"{file_name} disagrees with the checkpoint's tensors ({detail})")
        kwargs.update(from_file)
    kwargs.update(config_overrides or {})
    return MossFormer2Config(**kwargs)


# ---------------------------------------------------------------------------------------------
# State dict conversion
# ---------------------------------------------------------------------------------------------


def _check_derived(name: str, tensor: torch.Tensor, expected: torch.Tensor) -> None:
    """Tables the references store but we recompute must hold the standard values."""
    if tensor.shape != expected.shape or not torch.allclose(tensor.float(), expected, rtol=1e-6, atol=0.0):
        raise ValueError(
            f"checkpoint tensor '{name}' does not hold the standard frequencies this implementation "
            "computes; the checkpoint cannot be reproduced"
        )


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: MossFormer2Config
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference keys -> ours. Returns ``(state_dict, unconsumed reference keys)``."""
    cpu = torch.device("cpu")
    for key, value in state_dict.items():
        if re.fullmatch(_DERIVED[0], key):
            _check_derived(key, value, _sinusoid_frequencies(config.hidden_size, cpu))
        elif re.fullmatch(_DERIVED[1], key):
            _check_derived(key, value, _sinusoid_frequencies(config.rotary_dim, cpu))

    def transform(source_key: str, our_key: str, tensor: torch.Tensor) -> torch.Tensor:
        if _SQUEEZED.fullmatch(our_key) and tensor.dim() in (3, 4) and tensor.shape[-1] == 1:
            tensor = tensor.squeeze(-1)
        if config.norm_type == "gln" and our_key.endswith(("norm.weight", "norm.bias")) and tensor.dim() == 2:
            tensor = tensor[:, 0]  # the references' GlobalLayerNorm stores (channels, 1)
        return tensor

    converted, unconsumed = map_keys(state_dict, RULES, drop=_DERIVED, transform=transform)
    return {_one_based_to_zero_based(key): value for key, value in converted.items()}, unconsumed


def build_model(
    state_dict: Mapping[str, torch.Tensor], config: MossFormer2Config, description: str
) -> MossFormer2ForSourceSeparation:
    """Our model holding the reference ``state_dict`` (strict: every key consumed and produced)."""
    converted, unconsumed = convert_state_dict(state_dict, config)
    model = MossFormer2ForSourceSeparation(config)
    expected = model.state_dict()
    check_state_dict(
        converted,
        expected,
        f"{description} does not match the MossFormer2 architecture: ",
        unconsumed=unconsumed,
    )
    model.load_state_dict(
        {key: value.to(expected[key].dtype) for key, value in converted.items()}, strict=True
    )
    return model.eval()


# ---------------------------------------------------------------------------------------------
# ModelScope's release
# ---------------------------------------------------------------------------------------------


def load_modelscope_checkpoint(
    source: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], dict | None, Path]:
    """``(state_dict, configuration_json_or_None, checkpoint_file)`` of a release folder or file."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    folder = source if source.is_dir() else source.parent
    configuration = None
    config_path = folder / "configuration.json"
    if config_path.is_file():
        try:
            configuration = json.loads(config_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{config_path} is not valid JSON: {error}") from None
        if not isinstance(configuration, dict):
            raise ValueError(f"{config_path} does not hold a JSON object")
    if source.is_dir():
        if (source / RELEASE_FILE).is_file():
            source = source / RELEASE_FILE
        else:
            files = [p for p in sorted(source.iterdir()) if p.is_file() and p.suffix in CHECKPOINT_SUFFIXES]
            if len(files) != 1:
                raise ValueError(
                    f"{source} is not a MossFormer2 release folder: expected {RELEASE_FILE} or exactly one "
                    f"state dict file ({', '.join(CHECKPOINT_SUFFIXES)}), found {[p.name for p in files]}"
                )
            source = files[0]
    return load_state_dict_file(source), configuration, source


def convert_modelscope_checkpoint(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    config_overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Convert ModelScope's MossFormer2 release into a `save_pretrained` folder; returns the folder.

    Raises `ValueError` (listing the keys) when the checkpoint does not match the architecture,
    `FileExistsError` when ``output_dir`` exists and ``overwrite`` is False.
    """
    output_dir = check_output_dir(output_dir, overwrite)
    state_dict, configuration, checkpoint = load_modelscope_checkpoint(source)
    from_file = config_from_configuration_json(configuration) if configuration is not None else None
    config = build_config(state_dict, from_file, "modelscope-8k", config_overrides, "configuration.json")
    model = build_model(state_dict, config, f"the checkpoint {checkpoint}")
    source = Path(source)
    folder = source if source.is_dir() else source.parent
    protected = [*source_files(source), folder / "configuration.json"]
    return save_model_folder(model, output_dir, overwrite=overwrite, protected=protected)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output_dir", metavar="OUT", help="folder to write the converted model to")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it already exists")
    parser.add_argument(
        "--sampling-rate",
        type=int,
        default=None,
        metavar="HZ",
        help="the sampling rate the checkpoint was trained at, when its config file does not say "
        "(defaults to the release's: 8000 for ModelScope, 16000 for ClearerVoice)",
    )


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    return {} if args.sampling_rate is None else {"sampling_rate": args.sampling_rate}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        metavar="SRC",
        help="ModelScope release folder (configuration.json + pytorch_model.pt) or one state dict file",
    )
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    output_dir = convert_modelscope_checkpoint(
        args.source, args.output_dir, overwrite=args.overwrite, config_overrides=overrides_from_args(args)
    )
    print(f"wrote the converted MossFormer2 to {output_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Convert ModelScope's MossFormer2 release into a save_pretrained folder."
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
