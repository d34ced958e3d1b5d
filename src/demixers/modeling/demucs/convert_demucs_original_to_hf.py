"""``demixers convert demucs SRC OUT``: official Demucs checkpoints -> a ``save_pretrained`` folder.

Accepted sources:

* the Hugging Face release format (``adefossez/HTDemucs``, ``adefossez/HTDemucs-ft``,
  ``adefossez/Demucs-mdx...``): a bag yaml (``models``: signatures, optional ``weights`` and
  ``segment``) next to one ``{signature}.safetensors`` per model, whose metadata holds the class name
  and the init arguments as JSON (a ``{signature}.json`` sidecar with the same keys is read when the
  metadata lacks them);
* legacy ``.th`` packages of the v2/v3 releases (a pickled dict with ``klass``, ``args``,
  ``kwargs`` and ``state``), alone or referenced by a bag yaml.

SRC is a yaml, a ``.safetensors``/``.th`` file, or a folder holding exactly one yaml (or one model
file). A bag of several models becomes a `DemucsBagForSourceSeparation`; a bag of one model becomes
that model (with the bag's segment applied, as the original loader does).

Safety: no class named in a file is ever imported or called. Class names are matched against an
explicit whitelist (``Demucs``, ``HDemucs``, ``HTDemucs``). ``.th`` pickles are read by a restricted
unpickler (`demixers.conversion.unpickler`) that only rebuilds tensors and plain containers; any
other global it meets becomes an inert `ClassReference` stand-in that is never resolved, and calls
to it are recorded, not executed. Bag yamls are read with ``yaml.safe_load``.

Quantized (DiffQ) checkpoints (``mdx_q``, ``mdx_extra_q``) are refused: their packed integer
weights cannot be expanded without DiffQ's own decoder; convert the unquantized release instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

from demixers.conversion import (
    ClassReference,
    OpaqueObject,
    check_output_dir,
    load_torch_file,
    opaque_class,
    save_model_folder,
    source_files,
)

# what a pickle built by calling a global it names (recorded, never executed)
RecordedCall = OpaqueObject

logger = logging.getLogger(__name__)

# -- reference classes -> configs -------------------------------------------------------------

# Init defaults of the original classes (argument order matters for positional args): used for
# arguments a checkpoint does not store. Keys are the original argument names.
_DEMUCS_V3_DEFAULTS: dict[str, Any] = {
    "sources": None, "audio_channels": 2, "channels": 64, "growth": 2.0, "depth": 6, "rewrite": True,
    "lstm_layers": 0, "kernel_size": 8, "stride": 4, "context": 1, "gelu": True, "glu": True,
    "norm_starts": 4, "norm_groups": 4, "dconv_mode": 1, "dconv_depth": 2, "dconv_comp": 4,
    "dconv_attn": 4, "dconv_lstm": 4, "dconv_init": 1e-4, "normalize": True, "resample": True,
    "rescale": 0.1, "samplerate": 44100, "segment": 40,
}  # fmt: skip
# demucs 2.x (``demucs.model.Demucs``): ReLU, no norms, no DConv, BiLSTM bottleneck.
_DEMUCS_V2_DEFAULTS: dict[str, Any] = {
    "sources": None, "audio_channels": 2, "channels": 64, "depth": 6, "rewrite": True, "glu": True,
    "rescale": 0.1, "resample": True, "kernel_size": 8, "stride": 4, "growth": 2.0, "lstm_layers": 2,
    "context": 3, "normalize": False, "samplerate": 44100, "segment_length": 4 * 10 * 44100,
}  # fmt: skip
_HDEMUCS_DEFAULTS: dict[str, Any] = {
    "sources": None, "audio_channels": 2, "channels": 48, "channels_time": None, "growth": 2,
    "nfft": 4096, "wiener_iters": 0, "end_iters": 0, "wiener_residual": False, "cac": True, "depth": 6,
    "rewrite": True, "hybrid": True, "hybrid_old": False, "multi_freqs": None, "multi_freqs_depth": 2,
    "freq_emb": 0.2, "emb_scale": 10, "emb_smooth": True, "kernel_size": 8, "time_stride": 2,
    "stride": 4, "context": 1, "context_enc": 0, "norm_starts": 4, "norm_groups": 4, "dconv_mode": 1,
    "dconv_depth": 2, "dconv_comp": 4, "dconv_attn": 4, "dconv_lstm": 4, "dconv_init": 1e-4,
    "rescale": 0.1, "samplerate": 44100, "segment": 40,
}  # fmt: skip
_HTDEMUCS_DEFAULTS: dict[str, Any] = {
    "sources": None, "audio_channels": 2, "channels": 48, "channels_time": None, "growth": 2,
    "nfft": 4096, "wiener_iters": 0, "end_iters": 0, "wiener_residual": False, "cac": True, "depth": 4,
    "rewrite": True, "multi_freqs": None, "multi_freqs_depth": 3, "freq_emb": 0.2, "emb_scale": 10,
    "emb_smooth": True, "kernel_size": 8, "time_stride": 2, "stride": 4, "context": 1, "context_enc": 0,
    "norm_starts": 4, "norm_groups": 4, "dconv_mode": 1, "dconv_depth": 2, "dconv_comp": 8,
    "dconv_init": 1e-3, "bottom_channels": 0, "t_layers": 5, "t_emb": "sin", "t_hidden_scale": 4.0,
    "t_heads": 8, "t_dropout": 0.0, "t_max_positions": 10000, "t_norm_in": True,
    "t_norm_in_group": False, "t_group_norm": False, "t_norm_first": True, "t_norm_out": True,
    "t_max_period": 10000.0, "t_weight_decay": 0.0, "t_lr": None, "t_layer_scale": True,
    "t_gelu": True, "t_weight_pos_embed": 1.0, "t_sin_random_shift": 0, "t_cape_mean_normalize": True,
    "t_cape_augment": True, "t_cape_glob_loc_scale": [5000.0, 1.0, 1.4], "t_sparse_self_attn": False,
    "t_sparse_cross_attn": False, "t_mask_type": "diag", "t_mask_random_seed": 42,
    "t_sparse_attn_window": 500, "t_global_window": 100, "t_sparsity": 0.95, "t_auto_sparsity": False,
    "t_cross_first": False, "rescale": 0.1, "samplerate": 44100, "segment": 10, "use_train_segment": True,
}  # fmt: skip

# Arguments that only matter for training or for features checked separately below.
_IGNORED_ARGUMENTS = {
    "wiener_iters", "end_iters", "wiener_residual", "multi_freqs_depth", "t_weight_decay", "t_lr",
    "t_mask_type", "t_mask_random_seed", "t_sparse_attn_window", "t_global_window", "t_sparsity",
    "t_auto_sparsity", "t_sparse_self_attn", "t_sparse_cross_attn", "segment_length", "samplerate",
    "sources", "segment",
}  # fmt: skip

# Whitelist: (original class name, module or None for any) -> (our model type, defaults).
_SUPPORTED_CLASSES = {
    ("Demucs", "demucs.model"): ("demucs_v2", _DEMUCS_V2_DEFAULTS),
    ("Demucs", None): ("demucs", _DEMUCS_V3_DEFAULTS),
    ("HDemucs", None): ("hdemucs", _HDEMUCS_DEFAULTS),
    ("HTDemucs", None): ("htdemucs", _HTDEMUCS_DEFAULTS),
}


def _lookup_class(qualified_name: str) -> tuple[str, dict[str, Any]]:
    module, _, name = qualified_name.rpartition(".")
    for key in ((name, module), (name, None)):
        if key in _SUPPORTED_CLASSES:
            return _SUPPORTED_CLASSES[key]
    raise ValueError(
        f"unsupported model class {qualified_name!r}: only Demucs, HDemucs and HTDemucs checkpoints "
        "can be converted"
    )


def _plain(value: Any) -> Any:
    """Fractions -> float, tuples -> lists; refuse anything that is not plain data."""
    if isinstance(value, Fraction):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"unexpected value in the model arguments: {value!r:.80}")


def config_from_original(qualified_name: str, args: Any, kwargs: Any):
    """Our config for an original class name and its recorded init arguments."""
    from .configuration_demucs import DEFAULT_SOURCES, DemucsConfig, HDemucsConfig, HTDemucsConfig

    kind, defaults = _lookup_class(qualified_name)
    args = list(args or ())
    if not isinstance(kwargs, dict):
        raise ValueError("the checkpoint's kwargs are not a dict")
    names = list(defaults)
    if len(args) > len(names):
        raise ValueError(f"{qualified_name}: too many positional arguments ({len(args)})")
    values = dict(defaults)
    values.update(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key not in defaults:
            logger.warning(
                "dropping argument %s=%r unknown to %s (as the original loader does)",
                key,
                value,
                qualified_name,
            )
            continue
        values[key] = value
    values = {key: _plain(value) for key, value in values.items()}

    sources = values["sources"]
    if isinstance(sources, int):
        source_names = (
            list(DEFAULT_SOURCES)
            if sources == len(DEFAULT_SOURCES)
            else [f"source_{i}" for i in range(sources)]
        )
    elif isinstance(sources, list) and sources:
        source_names = [str(name) for name in sources]
    else:
        raise ValueError(f"{qualified_name}: missing or invalid `sources` argument")
    sampling_rate = int(values["samplerate"])
    segment = values["segment_length"] / sampling_rate if kind == "demucs_v2" else values["segment"]
    common = {"sampling_rate": sampling_rate, "source_names": source_names, "segment": segment}

    if kind in ("hdemucs", "htdemucs"):
        if not values["cac"]:
            raise ValueError(f"{qualified_name} with cac=False (Wiener filtering) is not supported")
        if values["multi_freqs"]:
            raise ValueError(f"{qualified_name} with multi_freqs (MultiWrap layers) is not supported")
        values["multi_freqs"] = None
    if kind == "htdemucs" and (values["t_sparse_self_attn"] or values["t_sparse_cross_attn"]):
        raise ValueError(f"{qualified_name} with sparse attention (xformers kernels) is not supported")

    fields = {key: value for key, value in values.items() if key not in _IGNORED_ARGUMENTS}
    if kind == "demucs_v2":
        fields.update(gelu=False, norm_starts=max(int(fields["depth"]), 1), dconv_mode=0)
        if kwargs.get("upsample"):
            raise ValueError("demucs v1 models with upsample=True are not supported")
        return DemucsConfig(**common, **fields)
    if kind == "demucs":
        return DemucsConfig(**common, **fields)
    if kind == "hdemucs":
        return HDemucsConfig(**common, **fields)
    return HTDemucsConfig(**common, **fields)


def _state_to_float(state: Any, source: str) -> dict[str, Any]:
    import torch

    if not isinstance(state, dict):
        raise ValueError(f"{source}: the checkpoint's state is not a dict")
    if state.get("__quantized"):
        raise ValueError(
            f"{source} is a DiffQ-quantized checkpoint (e.g. mdx_q / mdx_extra_q): its packed weights "
            "cannot be expanded exactly without DiffQ; convert the unquantized release "
            "(e.g. mdx / mdx_extra) instead"
        )
    converted = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{source}: state entry {key!r} is not a tensor ({type(value).__name__})")
        converted[str(key)] = value.to(torch.float32) if value.is_floating_point() else value.clone()
    return converted


def _rename_v2_keys(state: dict[str, Any], depth: int) -> dict[str, Any]:
    """demucs 2.x layers had no norm slots: its rewrite convs sit one index earlier."""
    for index in range(depth):
        for part in ("encoder", "decoder"):
            for suffix in ("weight", "bias"):
                old, new = f"{part}.{index}.2.{suffix}", f"{part}.{index}.3.{suffix}"
                if old in state and new not in state:
                    state[new] = state.pop(old)
    return state


def model_from_package(package: Any, source: str):
    """Build one of our models from an original package ``{klass, args, kwargs, state}``."""
    from .modeling_demucs import BAG_MEMBER_MODELS

    if not isinstance(package, dict) or not {"klass", "state"} <= set(package):
        raise ValueError(f"{source}: not a Demucs model package (expected a dict with 'klass' and 'state')")
    klass = package["klass"]
    if isinstance(klass, ClassReference):
        qualified_name = klass.qualified_name
    elif isinstance(klass, str):
        qualified_name = klass
    else:
        raise ValueError(f"{source}: 'klass' is not a class reference ({klass!r:.80})")
    config = config_from_original(qualified_name, package.get("args", ()), package.get("kwargs", {}))
    state = _state_to_float(package["state"], source)
    if qualified_name.rpartition(".")[0] == "demucs.model" or config.model_type == "demucs":
        state = _rename_v2_keys(state, config.depth)
    model = BAG_MEMBER_MODELS[config.model_type](config)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{source}: the weights do not fit {qualified_name} with these arguments "
            f"(missing: {result.missing_keys[:5]}, unexpected: {result.unexpected_keys[:5]})"
        )
    return model.eval()


# -- Hugging Face release format --------------------------------------------------------------


def _decode_json(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get("_type") == "fraction":
            return Fraction(int(value["numerator"]), int(value["denominator"]))
        return {key: _decode_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode_json(item) for item in value]
    return value


def _unflatten(node: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "_tensor" in node:
            return tensors[node["_tensor"]]
        if "_dict" in node:
            return {key: _unflatten(item, tensors) for key, item in node["_dict"]}
        if "_list" in node:
            return [_unflatten(item, tensors) for item in node["_list"]]
        if "_tuple" in node:
            return tuple(_unflatten(item, tensors) for item in node["_tuple"])
        if "_class" in node:
            return opaque_class(str(node["_class"]))  # recorded, never imported
        raise ValueError(f"invalid state structure node {node!r:.80}")
    return node


def load_safetensors_package(path: str | Path) -> dict[str, Any]:
    """Read one model of the HF release: tensors + class name and init args from the metadata."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = dict(file.metadata() or {})
            tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (safe_open is no dict)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read {path} as a safetensors file: {_first_line(error)}") from None
    sidecar = path.with_suffix(".json")
    if not {"klass", "args", "kwargs"} <= set(metadata) and sidecar.is_file():
        try:
            side = json.loads(sidecar.read_text())
        except ValueError as error:
            raise ValueError(f"{sidecar}: invalid JSON ({_first_line(error)})") from None
        if not isinstance(side, dict):
            raise ValueError(f"{sidecar}: expected a JSON object with klass/args/kwargs")
        for key in ("klass", "args", "kwargs"):
            if key not in metadata and key in side:
                metadata[key] = side[key] if isinstance(side[key], str) else json.dumps(side[key])
    missing = {"klass", "args", "kwargs"} - set(metadata)
    if missing:
        raise ValueError(
            f"{path}: no {sorted(missing)} in the safetensors metadata nor in a {sidecar.name} sidecar"
        )
    try:
        state = _unflatten(json.loads(metadata["structure"]), tensors) if "structure" in metadata else tensors
        return {
            "klass": str(metadata["klass"]),
            "args": _decode_json(json.loads(metadata["args"])),
            "kwargs": _decode_json(json.loads(metadata["kwargs"])),
            "state": state,
        }
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: invalid model metadata ({_first_line(error)})") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- sources -> models --------------------------------------------------------------------------


def _check_checksum(path: Path) -> None:
    """``{sig}-{sha256 prefix}.th`` files carry their checksum in the name, as in the original repo."""
    if path.suffix != ".th" or "-" not in path.stem:
        return
    expected = path.stem.rsplit("-", 1)[1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(expected):
        raise ValueError(
            f"{path}: checksum mismatch (file name says {expected}, content is {digest[: len(expected)]})"
        )


def load_model_file(path: str | Path):
    path = Path(path)
    if path.suffix == ".safetensors":
        return model_from_package(load_safetensors_package(path), str(path))
    if path.suffix == ".th":
        _check_checksum(path)
        return model_from_package(load_torch_file(path), str(path))
    raise ValueError(f"{path}: expected a .safetensors or .th model file")


def _find_member(folder: Path, signature: str) -> Path:
    for candidate in (folder / f"{signature}.safetensors", folder / f"{signature}.th"):
        if candidate.is_file():
            return candidate
    matches = sorted(folder.glob(f"{signature}-*.th"))
    if len(matches) == 1:
        return matches[0]
    raise FileNotFoundError(f"no {signature}.safetensors / {signature}.th / {signature}-*.th in {folder}")


def read_yaml(path: str | Path) -> Any:
    """``yaml.safe_load`` of a file; syntax errors and constructor tags (``!!python/...``) become a
    one-line ValueError naming the file."""
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or _first_line(error)
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ValueError(f"{path}: invalid yaml{where}: {problem}") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not a text file ({error.reason})") from None


def load_bag(yaml_path: str | Path):
    """A bag yaml -> one model (single-member bag) or a `DemucsBagForSourceSeparation`."""
    from .configuration_demucs import DemucsBagConfig
    from .modeling_demucs import DemucsBagForSourceSeparation, HTDemucsForSourceSeparation

    yaml_path = Path(yaml_path)
    bag = read_yaml(yaml_path)
    if not isinstance(bag, dict) or not isinstance(bag.get("models"), list) or not bag["models"]:
        raise ValueError(f"{yaml_path}: not a bag of models (expected a 'models' list)")
    members = [load_model_file(_find_member(yaml_path.parent, str(signature))) for signature in bag["models"]]
    segment = bag.get("segment")
    if segment is not None:
        for member in members:
            # as the original BagOfModels: an HTDemucs member only accepts a shorter segment
            if not isinstance(member, HTDemucsForSourceSeparation) or segment <= member.config.segment:
                member.config.segment = float(segment)
    weights = bag.get("weights")
    if len(members) == 1 and (weights is None or all(value > 0 for value in weights[0])):
        return members[0]
    config = DemucsBagConfig(
        models=[member.config.architecture_dict() for member in members], weights=weights, segment=segment
    )
    model = DemucsBagForSourceSeparation(config)
    for target, member in zip(model.models, members, strict=True):
        target.load_state_dict(member.state_dict())
    return model.eval()


def load_original(source: str | Path):
    """Any accepted SRC (yaml, model file or folder) -> our model."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist")
    if source.is_dir():
        yamls = sorted(source.glob("*.yaml"))
        if len(yamls) == 1:
            return load_bag(yamls[0])
        if len(yamls) > 1:
            raise ValueError(
                f"{source} holds several bag yamls ({[p.name for p in yamls]}); pass one of them"
            )
        files = sorted(source.glob("*.safetensors")) + sorted(source.glob("*.th"))
        if len(files) != 1:
            raise ValueError(f"{source}: expected one bag yaml or exactly one .safetensors/.th model file")
        return load_model_file(files[0])
    if source.suffix in (".yaml", ".yml"):
        return load_bag(source)
    return load_model_file(source)


def _inputs(source: Path) -> list[Path]:
    """The files converting ``source`` may read (a bag reads its folder's members and sidecars)."""
    if source.is_dir():
        return source_files(source)
    if source.suffix in (".yaml", ".yml"):
        return source_files(source.parent)
    return [source, source.with_suffix(".json")]


def convert(source: str | Path, output: str | Path, overwrite: bool = False):
    """Convert SRC into the folder ``output``; returns the model.

    Only the files ``save_pretrained`` writes are replaced in ``output`` (with ``overwrite``);
    other files there, the source among them, are left alone.
    """
    check_output_dir(output, overwrite)
    model = load_original(source)
    save_model_folder(model, output, overwrite=overwrite, protected=_inputs(Path(source)), preprocessor=False)
    return model


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="bag yaml, .safetensors/.th model file, or a folder holding one bag yaml")
    parser.add_argument("out", help="output folder (save_pretrained layout)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty output folder (replaces only the converted model's files)",
    )


def run(args: argparse.Namespace) -> int:
    model = convert(args.src, args.out, overwrite=args.overwrite)
    count = sum(parameter.numel() for parameter in model.parameters())
    print(f"converted {type(model).__name__} ({count / 1e6:.1f}M parameters) to {args.out}")
    return 0
