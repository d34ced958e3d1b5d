"""Convert BS-RoFormer / Mel-Band RoFormer checkpoints into `save_pretrained` folders.

Two sources are understood:

* ``msst-roformer``: Music-Source-Separation-Training ("MSST") releases, a yaml config plus a
  checkpoint (``.ckpt``/``.pth``/``.bin``/``.safetensors``). The yaml's ``model:`` section holds the
  constructor arguments; it never names the family: ``freqs_per_bands`` means BS-RoFormer,
  ``num_bands`` Mel-Band RoFormer. Missing keys take the default of MSST's current code (e.g.
  ``zero_dc: true``), so the converted config pins every flag. ``audio.chunk_size`` and
  ``inference.num_overlap`` are kept, ``training.target_instrument``/``instruments`` name the stems.
* ``lucidrains-roformer``: the ``bs-roformer`` package's state dicts (``.branch.`` in the transformer
  keys from hyper-connections; three layer slots per Mel layer: linear, time, frequency, the first
  empty without a linear transformer) with a yaml/json of the constructor arguments (a ``model:``
  section or the bare mapping). Missing keys take that package's defaults. Hyper-connections must
  be off (``num_residual_streams: 1``); Mel's ``add_value_residual`` must be false.

Safety: the yaml is parsed by a safe loader that accepts exactly one non-standard tag,
``!!python/tuple`` (MSST writes tuples); ``!!python/object`` and every other tag are refused. The
checkpoint is read by the restricted unpickler (tensors and plain containers only) or as
safetensors; it may be a bare state dict or one wrapped in ``model_state_dict`` / ``state_dict``
(Lightning's ``model.`` prefix is stripped).

Exactness: half-precision checkpoints are upcast to float32; the rotary frequencies are kept as the
file stores them (MSST loads fp16 files into fp16-rounded buffers too; recomputing them in float32
would move the output by about 2e-5). The key mapping is strict: every source key must be consumed
and every parameter produced.

Command line: ``demixers convert msst-roformer CONFIG.yaml CHECKPOINT OUT`` (``CONFIG`` may also be a
preset name, see `PRESETS`) and ``demixers convert lucidrains-roformer CONFIG CHECKPOINT OUT``.
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
import yaml

from demixers.conversion import (
    check_output_dir,
    check_state_dict,
    load_checkpoint,
    load_safetensors,
    require_plain,
    save_model_folder,
    source_files,
    strip_prefixes,
    tensor_state_dict,
)
from demixers.modeling.mel_band_roformer.configuration_mel_band_roformer import (
    MelBandRoformerConfig,
    mel_band_frequency_indices,
)
from demixers.modeling.mel_band_roformer.modeling_mel_band_roformer import MelBandRoformerForSourceSeparation

from .configuration_bs_roformer import DEFAULT_FREQS_PER_BANDS, BSRoformerConfig
from .modeling_bs_roformer import BSRoformerForSourceSeparation

LAYOUTS = ("msst", "lucidrains")
FAMILIES = ("bs_roformer", "mel_band_roformer")
_WINDOWS = (4096, 2048, 1024, 512, 256)

# Defaults of the constructors (keys a yaml may omit), per layout and family.
_SHARED_DEFAULTS: dict[str, Any] = {
    "stereo": False,
    "num_stems": 1,
    "time_transformer_depth": 2,
    "freq_transformer_depth": 2,
    "dim_head": 64,
    "heads": 8,
    "flash_attn": True,
    "dim_freqs_in": 1025,
    "stft_n_fft": 2048,
    "stft_hop_length": 512,
    "stft_win_length": 2048,
    "stft_normalized": False,
    "multi_stft_resolution_loss_weight": 1.0,
    "multi_stft_resolutions_window_sizes": _WINDOWS,
    "multi_stft_hop_size": 147,
    "multi_stft_normalized": False,
    "mlp_expansion_factor": 4,
    "use_pope": False,
}
DEFAULTS: dict[tuple[str, str], dict[str, Any]] = {
    ("msst", "bs_roformer"): {
        **_SHARED_DEFAULTS,
        "linear_transformer_depth": 0,
        "freqs_per_bands": DEFAULT_FREQS_PER_BANDS,
        "attn_dropout": 0.0,
        "ff_dropout": 0.0,
        "zero_dc": True,
        "mask_estimator_depth": 2,
        "use_torch_checkpoint": False,
        "skip_connection": False,
        "sage_attention": False,
    },
    ("msst", "mel_band_roformer"): {
        **_SHARED_DEFAULTS,
        "linear_transformer_depth": 0,
        "num_bands": 60,
        "sample_rate": 44100,
        "attn_dropout": 0.1,
        "ff_dropout": 0.1,
        "zero_dc": True,
        "mask_estimator_depth": 1,
        "match_input_audio_length": False,
        "use_torch_checkpoint": False,
        "skip_connection": False,
        "sage_attention": False,
    },
    ("lucidrains", "bs_roformer"): {
        **_SHARED_DEFAULTS,
        "freqs_per_bands": DEFAULT_FREQS_PER_BANDS,
        "freq_range": None,
        "attn_dropout": 0.0,
        "ff_dropout": 0.0,
        "num_residual_streams": 4,
        "num_residual_fracs": 1,
        "mc_hyper_conn_sinkhorn_iters": 2,
        "zero_dc": False,
        "mask_estimator_depth": 2,
    },
    ("lucidrains", "mel_band_roformer"): {
        **_SHARED_DEFAULTS,
        "linear_transformer_depth": 1,
        "num_bands": 60,
        "sample_rate": 44100,
        "attn_dropout": 0.1,
        "ff_dropout": 0.1,
        "linear_flash_attn": None,
        "zero_dc": False,
        "mask_estimator_depth": 1,
        "match_input_audio_length": False,
        "add_value_residual": True,
        "num_residual_streams": 4,
        "num_residual_fracs": 1,
        "mc_hyper_conn_sinkhorn_iters": 2,
    },
}
# constructor arguments that take code (callables); a yaml can only give them as null
_CALLABLE_KEYS = ("stft_window_fn", "multi_stft_window_fn")

# Released configurations (MSST's configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml and
# configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml), as converted.
PRESETS: dict[str, dict[str, Any]] = {
    "viperx-bs-roformer-ep317": {
        "family": "bs_roformer",
        "provenance": {
            "author": "viperx",
            "checkpoint": "model_bs_roformer_ep_317_sdr_12.9755.ckpt",
            "source": "https://github.com/TRvlvr/model_repo/releases/download/all_public_uvr_models/"
            "model_bs_roformer_ep_317_sdr_12.9755.ckpt",
            "config": "MSST configs/viperx/model_bs_roformer_ep_317_sdr_12.9755.yaml",
            "license": "not stated by the release (check with the author before redistributing)",
        },
        "model": {
            "dim": 512,
            "depth": 12,
            "stereo": True,
            "num_stems": 1,
            "time_transformer_depth": 1,
            "freq_transformer_depth": 1,
            "linear_transformer_depth": 0,
            "freqs_per_bands": DEFAULT_FREQS_PER_BANDS,
            "dim_head": 64,
            "heads": 8,
            "attn_dropout": 0.1,
            "ff_dropout": 0.1,
            "flash_attn": True,
            "dim_freqs_in": 1025,
            "stft_n_fft": 2048,
            "stft_hop_length": 441,
            "stft_win_length": 2048,
            "stft_normalized": False,
            "mask_estimator_depth": 2,
            "multi_stft_resolution_loss_weight": 1.0,
            "multi_stft_resolutions_window_sizes": _WINDOWS,
            "multi_stft_hop_size": 147,
            "multi_stft_normalized": False,
        },
        "audio": {"chunk_size": 352800, "sample_rate": 44100, "num_channels": 2},
        "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals"},
        "inference": {"num_overlap": 2},
    },
    "kimberleyjensen-vocals-mel-band-roformer": {
        "family": "mel_band_roformer",
        "provenance": {
            "author": "Kimberley Jensen",
            "checkpoint": "MelBandRoformer.ckpt (audio-separator: vocals_mel_band_roformer.ckpt)",
            "source": "https://huggingface.co/KimberleyJSN/melbandroformer",
            "config": "MSST configs/KimberleyJensen/config_vocals_mel_band_roformer_kj.yaml",
            "license": "as stated on the source repository (not verified offline)",
        },
        "model": {
            "dim": 384,
            "depth": 6,
            "stereo": True,
            "num_stems": 1,
            "time_transformer_depth": 1,
            "freq_transformer_depth": 1,
            "num_bands": 60,
            "dim_head": 64,
            "heads": 8,
            "attn_dropout": 0,
            "ff_dropout": 0,
            "flash_attn": True,
            "dim_freqs_in": 1025,
            "sample_rate": 44100,
            "stft_n_fft": 2048,
            "stft_hop_length": 441,
            "stft_win_length": 2048,
            "stft_normalized": False,
            "mask_estimator_depth": 2,
            "multi_stft_resolution_loss_weight": 1.0,
            "multi_stft_resolutions_window_sizes": _WINDOWS,
            "multi_stft_hop_size": 147,
            "multi_stft_normalized": False,
        },
        "audio": {"chunk_size": 352800, "sample_rate": 44100, "num_channels": 2},
        "training": {"instruments": ["vocals", "other"], "target_instrument": "vocals"},
        "inference": {"num_overlap": 2},
    },
}

# ---------------------------------------------------------------------------------------------
# Yaml
# ---------------------------------------------------------------------------------------------


class TupleSafeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` plus ``!!python/tuple`` (read as a list). Every other python tag stays refused."""


def _construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> list[Any]:
    if not isinstance(node, yaml.SequenceNode):
        raise yaml.constructor.ConstructorError(
            None, None, "!!python/tuple must tag a sequence", node.start_mark
        )
    return loader.construct_sequence(node, deep=True)


TupleSafeLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)


def load_yaml_config(path: str | os.PathLike) -> dict[str, Any]:
    """Parse an MSST yaml (or a json) config safely; the top level must be a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.load(text, Loader=TupleSafeLoader)
    except yaml.YAMLError as error:
        first = str(error).strip().splitlines()
        raise ValueError(f"{path}: unreadable or unsafe yaml ({' '.join(first[:2])})") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: invalid json ({error})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the config must be a mapping, got {type(data).__name__}")
    return data


def detect_family(model_section: Mapping[str, Any]) -> str:
    """``freqs_per_bands`` means BS-RoFormer, ``num_bands`` Mel-Band RoFormer (the yaml names neither)."""
    has_bands, has_mel = "freqs_per_bands" in model_section, "num_bands" in model_section
    if has_bands and has_mel:
        raise ValueError("the model section has both freqs_per_bands (BS-RoFormer) and num_bands (Mel-Band)")
    if has_mel:
        return "mel_band_roformer"
    if has_bands:
        return "bs_roformer"
    raise ValueError(
        "cannot tell the family: the model section has neither freqs_per_bands (BS-RoFormer) nor "
        "num_bands (Mel-Band RoFormer); pass --family"
    )


def _source_names(data: Mapping[str, Any], num_stems: int, residual: bool) -> list[str]:
    training = data.get("training") if isinstance(data.get("training"), Mapping) else {}
    instruments = training.get("instruments")
    instruments = [str(name) for name in instruments] if isinstance(instruments, list) else []
    target = training.get("target_instrument")
    if num_stems == 1:
        stem = str(target) if target else (instruments[0] if instruments else "vocals")
        if not residual:
            return [stem]
        others = [name for name in instruments if name != stem]
        return [stem, others[0] if len(others) == 1 else "instrumental"]
    if len(instruments) < num_stems:
        raise ValueError(
            f"num_stems is {num_stems} but training.instruments names {len(instruments)}: {instruments!r}"
        )
    return instruments[:num_stems]


def config_from_yaml_data(
    data: Mapping[str, Any], layout: str = "msst", family: str | None = None, residual: bool = True
) -> BSRoformerConfig | MelBandRoformerConfig:
    """Our config from a parsed MSST (or lucidrains kwargs) config. Unknown keys are refused."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    require_plain(data, "the config")
    model = data.get("model", data if layout == "lucidrains" else None)
    if not isinstance(model, Mapping):
        raise ValueError("the config has no 'model:' mapping")
    family = family or detect_family(model)
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    defaults = DEFAULTS[(layout, family)]
    allowed = {"dim", "depth", *defaults, *_CALLABLE_KEYS}
    unknown = sorted(set(model) - allowed)
    if unknown:
        raise ValueError(
            f"unknown {layout} {family} flag(s) {unknown}: refusing to guess what they change "
            "(supported: " + ", ".join(sorted(allowed)) + ")"
        )
    for key in ("dim", "depth"):
        if key not in model:
            raise ValueError(f"the model section lacks {key!r}")
    fields = {**defaults, **model}
    for key in _CALLABLE_KEYS:
        if fields.get(key) is not None:
            raise ValueError(f"{key} must be null (only the Hann window is supported), got {fields[key]!r}")
        fields.pop(key, None)
    if layout == "lucidrains":
        if fields.pop("num_residual_streams") != 1 or fields.pop("num_residual_fracs") != 1:
            raise ValueError(
                "hyper-connections (num_residual_streams / num_residual_fracs other than 1) are not "
                f"supported, got {model.get('num_residual_streams')!r} / {model.get('num_residual_fracs')!r}"
            )
        fields.pop("mc_hyper_conn_sinkhorn_iters")  # no effect with a single residual stream
        fields.pop("linear_flash_attn", None)
        if family == "bs_roformer":
            if fields.pop("freq_range") not in (None, [-1, -1]):
                raise ValueError(f"freq_range is not supported, got {model.get('freq_range')!r}")
            # bs-roformer >= 1.0 mixes values from the first layer into every later one, unconditionally
            fields["add_value_residual"] = True
    stereo = fields.pop("stereo")
    if not isinstance(stereo, bool):
        raise ValueError(f"stereo must be a bool, got {stereo!r}")
    audio = data.get("audio") if isinstance(data.get("audio"), Mapping) else {}
    inference = data.get("inference") if isinstance(data.get("inference"), Mapping) else {}
    kwargs: dict[str, Any] = {
        key: list(value) if isinstance(value, tuple) else value for key, value in fields.items()
    }
    kwargs["audio_channels"] = 2 if stereo else 1
    sampling_rate = audio.get("sample_rate", 44100)
    if family == "mel_band_roformer":
        model_rate = kwargs.pop("sample_rate")
        if "sample_rate" in audio and audio["sample_rate"] != model_rate:
            raise ValueError(
                f"audio.sample_rate ({audio['sample_rate']!r}) and model.sample_rate ({model_rate!r}) "
                "disagree"
            )
        sampling_rate = model_rate
        # the original always returns `hop * (frames - 1)` samples unless this is set; ours always
        # returns the input's length, whose first `hop * (frames - 1)` samples are the same
        kwargs.pop("match_input_audio_length")
        kwargs["band_frequency_indices"] = mel_band_frequency_indices(
            sampling_rate, kwargs["stft_n_fft"], kwargs["num_bands"]
        )
    kwargs["sampling_rate"] = sampling_rate
    if "chunk_size" in audio:
        kwargs["chunk_size"] = audio["chunk_size"]
    if "num_overlap" in inference:
        kwargs["num_overlap"] = inference["num_overlap"]
    if "num_channels" in audio and audio["num_channels"] != kwargs["audio_channels"]:
        raise ValueError(
            f"audio.num_channels ({audio['num_channels']!r}) disagrees with model.stereo ({stereo})"
        )
    kwargs["source_names"] = _source_names(data, kwargs["num_stems"], residual)
    config_class = BSRoformerConfig if family == "bs_roformer" else MelBandRoformerConfig
    return config_class(**kwargs)


def preset_config(name: str, residual: bool = True) -> BSRoformerConfig | MelBandRoformerConfig:
    """The config of a released model (see `PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    preset = PRESETS[name]
    data = {key: value for key, value in preset.items() if key not in ("family", "provenance")}
    return config_from_yaml_data(data, "msst", preset["family"], residual=residual)


# ---------------------------------------------------------------------------------------------
# Checkpoint and key mapping
# ---------------------------------------------------------------------------------------------


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors: bare, or wrapped in ``model_state_dict`` / ``state_dict``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    loaded: Any = load_safetensors(path) if path.suffix == ".safetensors" else load_checkpoint(path)
    if isinstance(loaded, Mapping):
        for wrapper in ("model_state_dict", "state_dict", "model"):
            if isinstance(loaded.get(wrapper), Mapping):
                loaded = loaded[wrapper]
                break
    state = tensor_state_dict(loaded if isinstance(loaded, dict) else dict(loaded or {}), str(path))
    return strip_prefixes(state, ("module.", "model."))


_ATTENTION_RULES = [
    (r"norm\.gamma", "norm.weight"),
    (r"to_qkv(?:\.0)?\.weight", "qkv.weight"),
    (r"to_gates\.(weight|bias)", r"gate.\1"),
    (r"to_out\.[01]\.weight", "out_proj.weight"),
    (r"temperature", "temperature"),
    (r"(?:to_value_residual_mix|learned_value_residual_mix\.0)\.(weight|bias)", r"value_residual_gate.\1"),
]
_FEED_FORWARD_RULES = [
    (r"net\.0\.gamma", "norm.weight"),
    (r"net\.1\.(weight|bias)", r"fc1.\1"),
    (r"net\.4\.(weight|bias)", r"fc2.\1"),
]


def slot_kinds(layout: str, family: str, config: Any) -> dict[int, str]:
    """Which transformer each slot of an original layer holds."""
    if layout == "lucidrains" and family == "mel_band_roformer":
        return {0: "linear", 1: "time", 2: "freq"}
    if config.linear_transformer_depth > 0:
        return {0: "linear", 1: "time", 2: "freq"}
    return {0: "time", 1: "freq"}


def map_original_key(key: str, slots: Mapping[int, str]) -> str | None:
    """Our name for an original key (None when unknown); rotary frequencies map to ``<kind>_rotary``."""
    key = key.replace(".branch.", ".")  # hyper-connections' residual wrapper (lucidrains)
    if key == "final_norm.gamma":
        return "final_norm.weight"
    if match := re.fullmatch(r"band_split\.to_features\.(\d+)\.0\.gamma", key):
        return f"band_split.bands.{match[1]}.norm.weight"
    if match := re.fullmatch(r"band_split\.to_features\.(\d+)\.1\.(weight|bias)", key):
        return f"band_split.bands.{match[1]}.proj.{match[2]}"
    if match := re.fullmatch(r"mask_estimators\.(\d+)\.to_freqs\.(\d+)\.0\.(\d+)\.(weight|bias)", key):
        position = int(match[3])
        if position % 2:  # odd positions are the Tanh activations
            return None
        return f"mask_estimators.{match[1]}.bands.{match[2]}.layers.{position // 2}.{match[4]}"
    match = re.fullmatch(r"layers\.(\d+)\.(\d+)\.(.+)", key)
    if not match or int(match[2]) not in slots:
        return None
    prefix = f"layers.{match[1]}.{slots[int(match[2])]}_transformer"
    rest = match[3]
    if rest == "norm.gamma":
        return f"{prefix}.norm.weight"
    if inner := re.fullmatch(r"layers\.(\d+)\.0\.rotary_embed\.freqs", rest):
        return f"{slots[int(match[2])]}_rotary.inverse_frequencies"
    if inner := re.fullmatch(r"layers\.(\d+)\.([01])\.(.+)", rest):
        rules = _ATTENTION_RULES if inner[2] == "0" else _FEED_FORWARD_RULES
        part = "attention" if inner[2] == "0" else "feed_forward"
        for pattern, replacement in rules:
            if re.fullmatch(pattern, inner[3]):
                return f"{prefix}.layers.{inner[1]}.{part}.{re.sub(pattern, replacement, inner[3])}"
    return None


def convert_state_dict(
    state: Mapping[str, torch.Tensor], slots: Mapping[int, str]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename original keys to ours, upcast to float32; returns (converted, unknown keys).

    Every attention layer of the originals stores the shared rotary frequencies; all copies must
    agree, and the stored values are kept (no recomputation)."""
    converted: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state.items():
        ours = map_original_key(key, slots)
        if ours is None:
            unknown.append(key)
            continue
        value = value.float() if value.is_floating_point() else value
        if ours.endswith("_rotary.inverse_frequencies") and ours in converted:
            if not torch.equal(converted[ours], value):
                raise ValueError(f"{key}: the rotary frequencies differ between layers of the checkpoint")
            continue
        converted[ours] = value
    return converted, unknown


def load_original_model(
    config: BSRoformerConfig | MelBandRoformerConfig,
    checkpoint: str | os.PathLike,
    layout: str = "msst",
) -> BSRoformerForSourceSeparation | MelBandRoformerForSourceSeparation:
    """Our model holding a checkpoint's weights (strict)."""
    family = config.model_type
    state = read_state_dict(checkpoint)
    converted, unknown = convert_state_dict(state, slot_kinds(layout, family, config))
    model_class = (
        BSRoformerForSourceSeparation if family == "bs_roformer" else MelBandRoformerForSourceSeparation
    )
    model = model_class(config)
    expected = model.state_dict()
    # the rotary frequencies are absent when the checkpoint has no attention layer of that kind
    for key in ("time_rotary.inverse_frequencies", "freq_rotary.inverse_frequencies"):
        converted.setdefault(key, expected[key])
    check_state_dict(
        converted,
        expected,
        f"the checkpoint at {checkpoint} does not match the {family} its config describes: ",
        unconsumed=unknown,
    )
    model.load_state_dict(
        {key: value.to(expected[key].dtype) for key, value in converted.items()}, strict=True
    )
    return model.eval()


def convert_checkpoint(
    config_source: str | os.PathLike,
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    layout: str = "msst",
    family: str | None = None,
    residual: bool = True,
    overrides: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert a checkpoint with its config (a yaml/json path or a preset name) into a folder."""
    output_dir = check_output_dir(output_dir, overwrite)
    if str(config_source) in PRESETS:
        config = preset_config(str(config_source), residual=residual)
    else:
        data = load_yaml_config(config_source)
        config = config_from_yaml_data(data, layout, family, residual=residual)
    if overrides:
        config = type(config)(**{**config.to_dict(), **overrides})
    model = load_original_model(config, checkpoint, layout)
    protected = source_files(checkpoint)
    if str(config_source) not in PRESETS:
        protected += source_files(config_source)
    return save_model_folder(model, output_dir, overwrite=overwrite, protected=protected)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        metavar="CONFIG",
        help=f"the yaml (or json) config, or a preset: {', '.join(sorted(PRESETS))}",
    )
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the weights (.ckpt/.pth/.bin/.safetensors)")
    parser.add_argument("output_dir", metavar="OUT", help="folder to write (save_pretrained layout)")
    parser.add_argument(
        "--family", choices=FAMILIES, default=None, help="override the family read from the config's keys"
    )
    parser.add_argument(
        "--no-residual",
        action="store_true",
        help="with one stem: output only it (default: also the residual, mixture minus the stem)",
    )
    parser.add_argument(
        "--zero-dc",
        choices=("true", "false"),
        default=None,
        help="override zero_dc (default: the config's value, else the code's default)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace the converted model's files in OUT")


def _run(args: argparse.Namespace, layout: str) -> int:
    overrides = {} if args.zero_dc is None else {"zero_dc": args.zero_dc == "true"}
    output = convert_checkpoint(
        args.config,
        args.checkpoint,
        args.output_dir,
        layout=layout,
        family=args.family,
        residual=not args.no_residual,
        overrides=overrides,
        overwrite=args.overwrite,
    )
    print(f"wrote {output}")
    return 0


def run(args: argparse.Namespace) -> int:
    return _run(args, "msst")


__all__ = [
    "DEFAULTS",
    "PRESETS",
    "TupleSafeLoader",
    "config_from_yaml_data",
    "configure_parser",
    "convert_checkpoint",
    "convert_state_dict",
    "detect_family",
    "load_original_model",
    "load_yaml_config",
    "map_original_key",
    "preset_config",
    "read_state_dict",
    "run",
]
