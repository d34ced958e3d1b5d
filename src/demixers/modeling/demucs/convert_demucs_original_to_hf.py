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
unpickler that only rebuilds tensors and plain containers; any other global it meets is recorded
as a `ClassReference` string and never resolved, and calls to it are recorded, not executed.

Quantized (DiffQ) checkpoints (``mdx_q``, ``mdx_extra_q``) are refused: their packed integer
weights cannot be expanded without DiffQ's own decoder; convert the unquantized release instead.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import pickle
import struct
import zipfile
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# -- restricted unpickling ----------------------------------------------------------------------


class ClassReference:
    """A global named by a pickle that was deliberately not imported: only its name is kept."""

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    @property
    def qualified_name(self) -> str:
        return f"{self.module}.{self.name}"

    def __call__(self, *args: Any, **kwargs: Any) -> RecordedCall:
        return RecordedCall(self, args, kwargs)

    def __repr__(self) -> str:
        return f"ClassReference({self.qualified_name!r})"


class RecordedCall:
    """What a pickle asked to build from a `ClassReference`; nothing was executed."""

    def __init__(self, reference: ClassReference, args: tuple, kwargs: dict) -> None:
        self.reference = reference
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None
        self.items: list[Any] = []

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def __repr__(self) -> str:
        return f"RecordedCall({self.reference.qualified_name!r})"


def _storage_dtypes() -> dict[str, Any]:
    import torch

    return {
        "FloatStorage": torch.float32,
        "DoubleStorage": torch.float64,
        "HalfStorage": torch.float16,
        "BFloat16Storage": torch.bfloat16,
        "LongStorage": torch.int64,
        "IntStorage": torch.int32,
        "ShortStorage": torch.int16,
        "CharStorage": torch.int8,
        "ByteStorage": torch.uint8,
        "BoolStorage": torch.bool,
        "UntypedStorage": torch.uint8,
    }


class _StorageType:
    def __init__(self, dtype: Any) -> None:
        self.dtype = dtype


def _rebuild_tensor(storage: Any, storage_offset: int, size: tuple, stride: tuple, *unused: Any) -> Any:
    import torch

    if not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("tensor data is not a storage")
    return storage.as_strided(tuple(size), tuple(stride), storage_offset)


def _rebuild_parameter(data: Any, *unused: Any) -> Any:
    return data


def _codecs_encode(text: str, encoding: str = "utf-8") -> bytes:
    if not isinstance(text, str):
        raise pickle.UnpicklingError("_codecs.encode expects a string")
    return text.encode(encoding)


_DTYPE_NAMES = {
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool",
    "float", "double", "half", "long", "int", "short",
}  # fmt: skip
_SAFE_BUILTINS = {
    "set": set,
    "frozenset": frozenset,
    "slice": slice,
    "complex": complex,
    "bytearray": bytearray,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for ``torch.save`` files that rebuilds tensors and containers and nothing else."""

    def __init__(self, file: Any, load_storage: Any = None) -> None:
        super().__init__(file)
        self._load_storage = load_storage
        self.references: list[ClassReference] = []

    def find_class(self, module: str, name: str) -> Any:
        import torch

        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if module in ("torch", "torch.storage") and name in _storage_dtypes():
            return _StorageType(_storage_dtypes()[name])
        if module == "torch" and name == "Size":
            return torch.Size
        if module == "torch" and name in _DTYPE_NAMES:
            return getattr(torch, name)
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("fractions", "Fraction"):
            return Fraction
        if (module, name) == ("_codecs", "encode"):
            return _codecs_encode
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        reference = ClassReference(module, name)
        self.references.append(reference)
        return reference

    def persistent_load(self, saved_id: Any) -> Any:
        if (
            not isinstance(saved_id, tuple)
            or not saved_id
            or saved_id[0] != "storage"
            or self._load_storage is None
        ):
            raise pickle.UnpicklingError(f"unsupported persistent id {saved_id!r:.80}")
        storage_type = saved_id[1]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        return self._load_storage(storage_type.dtype, *saved_id[2:])


def _restricted_loads(data: bytes) -> Any:
    return RestrictedUnpickler(io.BytesIO(data)).load()


def load_torch_file(path: str | Path) -> Any:
    """Read a ``torch.save`` file (zip or legacy format) without executing anything from it."""
    import torch

    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pickles = [name for name in names if name.endswith("/data.pkl") or name == "data.pkl"]
            if len(pickles) != 1:
                raise ValueError(f"{path}: not a torch.save archive (no single data.pkl)")
            prefix = pickles[0][: -len("data.pkl")]
            if f"{prefix}byteorder" in names and archive.read(f"{prefix}byteorder").strip() != b"little":
                raise ValueError(f"{path}: big-endian checkpoints are not supported")

            loaded: dict[tuple[str, Any], Any] = {}

            def load_storage(dtype: Any, key: str, location: Any, numel: int, *unused: Any) -> Any:
                if (key, dtype) not in loaded:
                    raw = bytearray(archive.read(f"{prefix}data/{key}"))
                    empty = torch.empty(0, dtype=dtype)
                    loaded[key, dtype] = torch.frombuffer(raw, dtype=dtype) if raw else empty
                return loaded[key, dtype]

            unpickler = RestrictedUnpickler(io.BytesIO(archive.read(pickles[0])), load_storage)
            return unpickler.load()

    with open(path, "rb") as file:
        magic = RestrictedUnpickler(file).load()
        if magic != 0x1950A86A20F9469CFC6C:
            raise ValueError(f"{path}: not a torch.save file")
        RestrictedUnpickler(file).load()  # protocol version
        RestrictedUnpickler(file).load()  # system info
        storages: dict[str, Any] = {}

        def load_legacy_storage(dtype: Any, key: str, location: Any, numel: int, view: Any = None) -> Any:
            if key not in storages:
                storages[key] = torch.empty(numel, dtype=dtype)
            storage = storages[key]
            if view is not None:
                _, offset, size = view
                return storage[offset : offset + size]
            return storage

        result = RestrictedUnpickler(file, load_legacy_storage).load()
        keys = RestrictedUnpickler(file).load()
        for key in keys:
            storage = storages[key]
            (numel,) = struct.unpack("<q", file.read(8))
            nbytes = numel * storage.element_size()
            raw = bytearray(file.read(nbytes))
            if numel != storage.numel() or len(raw) != nbytes:
                raise ValueError(f"{path}: truncated or inconsistent storage {key}")
            if nbytes:
                storage.copy_(torch.frombuffer(raw, dtype=storage.dtype))
        return result


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
            module, _, name = str(node["_class"]).rpartition(".")
            return ClassReference(module, name)  # recorded, never imported
        raise ValueError(f"invalid state structure node {node!r:.80}")
    return node


def load_safetensors_package(path: str | Path) -> dict[str, Any]:
    """Read one model of the HF release: tensors + class name and init args from the metadata."""
    from safetensors import safe_open

    path = Path(path)
    with safe_open(str(path), framework="pt") as file:
        metadata = dict(file.metadata() or {})
        tensors = {key: file.get_tensor(key) for key in file.keys()}  # noqa: SIM118 (safe_open is no dict)
    sidecar = path.with_suffix(".json")
    if not {"klass", "args", "kwargs"} <= set(metadata) and sidecar.is_file():
        side = json.loads(sidecar.read_text())
        for key in ("klass", "args", "kwargs"):
            if key not in metadata and key in side:
                metadata[key] = side[key] if isinstance(side[key], str) else json.dumps(side[key])
    missing = {"klass", "args", "kwargs"} - set(metadata)
    if missing:
        raise ValueError(
            f"{path}: no {sorted(missing)} in the safetensors metadata nor in a {sidecar.name} sidecar"
        )
    state = _unflatten(json.loads(metadata["structure"]), tensors) if "structure" in metadata else tensors
    return {
        "klass": str(metadata["klass"]),
        "args": _decode_json(json.loads(metadata["args"])),
        "kwargs": _decode_json(json.loads(metadata["kwargs"])),
        "state": state,
    }


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
        try:
            package = load_torch_file(path)
        except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, struct.error, KeyError) as error:
            reason = f"{type(error).__name__}: {error}"
            raise ValueError(f"{path}: cannot read this checkpoint safely ({reason})") from None
        return model_from_package(package, str(path))
    raise ValueError(f"{path}: expected a .safetensors or .th model file")


def _find_member(folder: Path, signature: str) -> Path:
    for candidate in (folder / f"{signature}.safetensors", folder / f"{signature}.th"):
        if candidate.is_file():
            return candidate
    matches = sorted(folder.glob(f"{signature}-*.th"))
    if len(matches) == 1:
        return matches[0]
    raise FileNotFoundError(f"no {signature}.safetensors / {signature}.th / {signature}-*.th in {folder}")


def load_bag(yaml_path: str | Path):
    """A bag yaml -> one model (single-member bag) or a `DemucsBagForSourceSeparation`."""
    import yaml

    from .configuration_demucs import DemucsBagConfig
    from .modeling_demucs import DemucsBagForSourceSeparation, HTDemucsForSourceSeparation

    yaml_path = Path(yaml_path)
    bag = yaml.safe_load(yaml_path.read_text())
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


def convert(source: str | Path, output: str | Path, overwrite: bool = False):
    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty (pass --overwrite)")
    model = load_original(source)
    model.save_pretrained(output)
    return model


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="bag yaml, .safetensors/.th model file, or a folder holding one bag yaml")
    parser.add_argument("out", help="output folder (save_pretrained layout)")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")


def run(args: argparse.Namespace) -> int:
    model = convert(args.src, args.out, overwrite=args.overwrite)
    count = sum(parameter.numel() for parameter in model.parameters())
    print(f"converted {type(model).__name__} ({count / 1e6:.1f}M parameters) to {args.out}")
    return 0
