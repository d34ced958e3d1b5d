"""The converters' toolkit: safe checkpoint reading, key mapping and output writing.

Converters never travel to the Hub (they are not remote code), so they share this package rather
than copying it: `unpickler` (the one restricted reader of ``torch.save`` files), `keys` (renaming
with checks that every source key is consumed and every target key produced), `output` (staging
and per-file replacement that never deletes the user's files), `utils` (checks on loaded data).
"""

from __future__ import annotations

from .keys import check_state_dict, load_into_model, map_key, map_keys
from .output import check_output_dir, preprocessor_config, save_model_folder, source_files, write_model_folder
from .unpickler import (
    CheckpointFormatError,
    ClassReference,
    OpaqueObject,
    RestrictedUnpickler,
    is_opaque,
    load_torch_file,
    opaque_class,
    restricted_load,
)
from .utils import load_checkpoint, load_safetensors, require_plain, strip_prefixes, tensor_state_dict

__all__ = [
    "CheckpointFormatError",
    "ClassReference",
    "OpaqueObject",
    "RestrictedUnpickler",
    "check_output_dir",
    "check_state_dict",
    "is_opaque",
    "load_checkpoint",
    "load_into_model",
    "load_safetensors",
    "load_torch_file",
    "map_key",
    "map_keys",
    "opaque_class",
    "preprocessor_config",
    "require_plain",
    "restricted_load",
    "save_model_folder",
    "source_files",
    "strip_prefixes",
    "tensor_state_dict",
    "write_model_folder",
]
