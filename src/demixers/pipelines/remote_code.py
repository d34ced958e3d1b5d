"""Make a saved model folder runnable with plain transformers (``trust_remote_code=True``).

`add_remote_code` copies into the folder the family's self-contained ``configuration_``/``modeling_``
files (and the sibling files they import with single dots), the feature extractor and the pipeline
files (`PIPELINE_CODE_FILES`, which import only each other), then writes into ``config.json``

* ``auto_map`` for ``AutoConfig``, ``AutoModel`` and ``AutoFeatureExtractor``;
* ``custom_pipelines`` for the ``audio-source-separation`` task, transformers' mechanism for a task
  it does not know: ``pipeline("audio-source-separation", model=repo, trust_remote_code=True)``
  loads `AudioSourceSeparationPipeline` from the repo,

and ``preprocessor_config.json`` (with its own ``auto_map``). Where demixers is imported, the
installed code runs instead and ``trust_remote_code`` is not needed: the family configs drop a
``custom_pipelines`` entry for a task the local pipeline registry already knows (transformers
would otherwise demand ``trust_remote_code`` even for a locally registered task).
"""

from __future__ import annotations

import ast
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..conversion.output import preprocessor_config

PIPELINE_TASK = "audio-source-separation"
# The pipeline files a repo carries, in import order (each imports only the ones before it).
PIPELINE_CODE_FILES = (
    "audio_utils.py",
    "chunking.py",
    "feature_extraction_separation.py",
    "backends.py",
    "audio_source_separation.py",
)
FEATURE_EXTRACTOR_REFERENCE = "feature_extraction_separation.SourceSeparationFeatureExtractor"
PIPELINE_REFERENCE = "audio_source_separation.AudioSourceSeparationPipeline"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")

_PIPELINES_DIR = Path(__file__).resolve().parent


def family_classes(model_type: Any) -> tuple[type, type]:
    """The installed (config class, model class) of ``model_type``: a demixers family, or a family
    registered with the Auto classes (`demixers.register_model_family`).

    Raises:
        ValueError: no registered family has this ``model_type``.
    """
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    from ..modeling import MODEL_FAMILIES

    for config_class, model_class in MODEL_FAMILIES:
        if config_class.model_type == model_type:
            return config_class, model_class
    if isinstance(model_type, str) and model_type in CONFIG_MAPPING:
        config_class = CONFIG_MAPPING[model_type]
        if config_class in MODEL_MAPPING:
            return config_class, MODEL_MAPPING[config_class]
    known = sorted(config_class.model_type for config_class, _ in MODEL_FAMILIES)
    raise ValueError(
        f"model_type {model_type!r} is no demixers family (known: {known}) nor a family registered "
        "with AutoConfig and AutoModel; push it with --no-code or register it first"
    )


def _module_file(cls: type) -> Path:
    return Path(sys.modules[cls.__module__].__file__ or "").resolve()


def _sibling_imports(path: Path) -> list[Path]:
    """The files of ``path``'s folder that it imports with a single dot (``from .x import y``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level != 1 or not node.module:
                raise ValueError(
                    f"{path}: `from {'.' * node.level}{node.module or ''} import ...` (line {node.lineno}) "
                    "leaves the folder; remote code may import only single-dot siblings"
                )
            sibling = path.parent / f"{node.module.replace('.', '/')}.py"
            if not sibling.is_file():
                raise ValueError(f"{path}: imports .{node.module}, which is not a file next to it")
            found.append(sibling)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            )
            if any(name == "demixers" or name.startswith("demixers.") for name in names):
                raise ValueError(f"{path}: imports demixers (line {node.lineno}); remote code must not")
    return found


def code_files(paths: list[Path]) -> list[Path]:
    """``paths`` and every file they import with single dots, transitively (each once, in order)."""
    ordered: list[Path] = []
    pending = list(paths)
    while pending:
        path = pending.pop(0)
        if path in ordered:
            continue
        ordered.append(path)
        pending.extend(_sibling_imports(path))
    return ordered


def _write_atomic(path: Path, text: str) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _copy_atomic(source: Path, target: Path) -> None:
    _write_atomic(target, source.read_text(encoding="utf-8"))


def add_remote_code(folder: str | os.PathLike[str]) -> list[str]:
    """Copy the code and write ``auto_map``/``custom_pipelines``/``preprocessor_config.json`` into
    ``folder`` (a ``save_pretrained`` model folder); returns the names of the files written.

    Raises:
        FileNotFoundError: ``folder`` has no ``config.json`` or no safetensors weights.
        ValueError: the config's ``model_type`` is no demixers family, or a code file would
            overwrite a different file of the same name.
    """
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{folder} has no config.json: is it a save_pretrained folder?")
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise FileNotFoundError(
            f"{folder} has no safetensors weights ({' or '.join(WEIGHT_FILES)}); save the model with "
            "save_pretrained(..., safe_serialization=True)"
        )
    config: dict[str, Any] = json.loads(config_path.read_text(encoding="utf-8"))
    config_class, model_class = family_classes(config.get("model_type"))

    family_files = code_files([_module_file(config_class), _module_file(model_class)])
    pipeline_files = code_files([_PIPELINES_DIR / name for name in PIPELINE_CODE_FILES])
    written: list[str] = []
    sources: dict[str, Path] = {}
    for source in family_files + pipeline_files:
        previous = sources.setdefault(source.name, source)
        if previous != source:
            raise ValueError(f"two code files are named {source.name}: {previous} and {source}")
    for name, source in sources.items():
        _copy_atomic(source, folder / name)
        written.append(name)

    config_module = _module_file(config_class).stem
    model_module = _module_file(model_class).stem
    config["auto_map"] = {
        "AutoConfig": f"{config_module}.{config_class.__name__}",
        "AutoModel": f"{model_module}.{model_class.__name__}",
        "AutoFeatureExtractor": FEATURE_EXTRACTOR_REFERENCE,
    }
    custom_pipelines = dict(config.get("custom_pipelines") or {})
    custom_pipelines[PIPELINE_TASK] = {
        "impl": PIPELINE_REFERENCE,
        "pt": ["AutoModel"],
        "tf": [],
        "type": "audio",
    }
    config["custom_pipelines"] = custom_pipelines
    _write_atomic(config_path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    written.append("config.json")

    preprocessor_path = folder / "preprocessor_config.json"
    if preprocessor_path.is_file():
        preprocessor: dict[str, Any] = json.loads(preprocessor_path.read_text(encoding="utf-8"))
    else:
        preprocessor = preprocessor_config(config.get("sampling_rate"), config.get("audio_channels", 1))
    preprocessor["auto_map"] = {"AutoFeatureExtractor": FEATURE_EXTRACTOR_REFERENCE}
    _write_atomic(preprocessor_path, json.dumps(preprocessor, indent=2, sort_keys=True) + "\n")
    written.append("preprocessor_config.json")
    return written


__all__ = [
    "FEATURE_EXTRACTOR_REFERENCE",
    "PIPELINE_CODE_FILES",
    "PIPELINE_REFERENCE",
    "PIPELINE_TASK",
    "add_remote_code",
    "code_files",
    "family_classes",
]
