"""Alias -> a converted ``save_pretrained`` folder: download, verify, convert once, cache.

The converted folder lives in ``$HF_HOME/demixers/converted/<alias>/<key>/`` where ``key`` hashes
what determines its content: the release's files as the catalogue pins them (URL or Hub revision and
their checksums), the inline files, the converter's name, options and version
(`converter_version`). A cached folder is used without any request (offline too); a new catalogue
checksum or a new converter gives a new key, so a stale conversion is never loaded. The folder is
built in a staging folder beside it and renamed into place under a file lock, so concurrent
processes never see (or load) a half-written folder.

`resolve_model` is the one entry point: ``demixers separate -m ALIAS``, ``demixers evaluate -m
ALIAS``, ``demixers download`` and ``demixers.resolve_model`` all go through it. transformers 5's
``pipeline(task, model="name")`` resolves the string itself before any of our code runs and offers no
hook for a name resolver, so plain ``pipeline`` users write
``pipeline("audio-source-separation", model=demixers.resolve_model("htdemucs_ft"))``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import inspect
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .download import cache_root, fetch_release, is_offline
from .schema import Catalogue, CatalogueEntry

SOURCE_RECORD = "demixers_source.json"  # what the folder was converted from (written into it)
_CONVERTER_FUNCTIONS = ("convert_checkpoint", "convert")

_active: Catalogue | None = None
_active_lock = threading.Lock()


def builtin_catalogue() -> Catalogue:
    from .entries import BUILTIN_ENTRIES

    return Catalogue(BUILTIN_ENTRIES)


def get_catalogue() -> Catalogue:
    """The catalogue in use: the built-in one unless `use_catalogue` installed another."""
    global _active
    with _active_lock:
        if _active is None:
            _active = builtin_catalogue()
        return _active


@contextlib.contextmanager
def use_catalogue(catalogue: Catalogue) -> Iterator[Catalogue]:
    """Use ``catalogue`` (same schema as the built-in one: a mirror's own files, or the test suite's)
    within the block. Verification is unchanged: its entries carry their own checksums."""
    global _active
    with _active_lock:
        previous, _active = _active, catalogue
    try:
        yield catalogue
    finally:
        with _active_lock:
            _active = previous


def lookup(alias: str) -> CatalogueEntry | None:
    """The entry of ``alias`` in the catalogue in use, or None (a path or a Hub id, then)."""
    return get_catalogue().get(alias) if isinstance(alias, str) else None


def converter_module_name(name: str) -> str:
    from ..modeling.convert_cli import CONVERTERS

    if name not in CONVERTERS:
        raise ValueError(f"unknown converter {name!r}; known: {sorted(CONVERTERS)}")
    return CONVERTERS[name][0]


def converter_module(name: str) -> Any:
    return importlib.import_module(converter_module_name(name))


_VERSION_PATTERN = re.compile(r"^CONVERTER_VERSION\s*(?::[^=]*)?=\s*[\"']([^\"']+)[\"']", re.MULTILINE)


def converter_version(name: str) -> str:
    """The converter's ``CONVERTER_VERSION = "..."`` if it declares one, else the demixers version plus
    a digest of the converter's source: editing a converter invalidates the folders it converted.
    Read from the source file, without importing the converter (and torch): `demixers models` is light."""
    module_name = converter_module_name(name)
    package_root = Path(__file__).resolve().parents[1]  # src/demixers
    path = package_root.joinpath(*module_name.split(".")[1:]).with_suffix(".py")
    if not path.is_file():  # a converter outside the package tree: ask the import system
        path = Path(inspect.getfile(converter_module(name)))
    source = path.read_bytes()
    declared = _VERSION_PATTERN.search(source.decode("utf-8", "replace"))
    if declared is not None:
        return declared.group(1)
    return f"{_package_version()}+{hashlib.sha256(source).hexdigest()[:12]}"


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("demixers")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def cache_key(entry: CatalogueEntry) -> str:
    record = {
        "files": [item.identity() for item in entry.files],
        "inline": {
            name: hashlib.sha256(text.encode()).hexdigest()
            for name, text in sorted(entry.inline_files.items())
        },
        "entry_point": entry.entry_point if isinstance(entry.entry_point, str) else list(entry.entry_point),
        "converter": entry.converter,
        "converter_options": dict(entry.converter_options),
        "converter_version": converter_version(entry.converter),
    }
    if entry.converter_function is not None:  # absent otherwise: the keys of older entries stay
        record["converter_function"] = entry.converter_function
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]


def converted_path(entry: CatalogueEntry) -> Path:
    return cache_root() / "converted" / entry.alias / cache_key(entry)


def is_converted(entry: CatalogueEntry) -> bool:
    folder = converted_path(entry)
    return (folder / "config.json").is_file() and (folder / SOURCE_RECORD).is_file()


def converter_inputs(entry: CatalogueEntry, release: Path) -> list[Path]:
    """The paths handed to the converter: the release folder, its entry point, or its entry points
    in order (a config and a checkpoint)."""
    if isinstance(entry.entry_point, str):
        return [release if entry.entry_point == "." else release / entry.entry_point]
    return [release / name for name in entry.entry_point]


def run_converter(entry: CatalogueEntry, source: Path | list[Path], output: Path) -> None:
    """Convert ``source`` (the release folder, or the entry point(s) in it) into ``output``."""
    module = converter_module(entry.converter)
    sources = source if isinstance(source, list) else [source]
    names = (entry.converter_function,) if entry.converter_function else _CONVERTER_FUNCTIONS
    for function_name in names:
        function = getattr(module, function_name, None)
        if callable(function):
            function(*sources, output, overwrite=True, **dict(entry.converter_options))
            return
    raise ValueError(
        f"{entry.alias}: converter {entry.converter!r} ({module.__name__}) has no function "
        f"{' or '.join(names)}"
    )


def resolve_model(name: str, *, quiet: bool = False) -> str:
    """The local model folder of a catalogue alias (downloaded, verified, converted and cached as
    needed); any other name (a folder, a Hub id) is returned unchanged.

    Raises:
        ValueError: the alias is refused (with the reason), a checksum does not match (the download
            was deleted), or ``HF_HUB_OFFLINE`` is set and the alias is not in the cache (one line
            naming the alias).
    """
    entry = lookup(name)
    if entry is None:
        return name
    return str(prepare(entry, quiet=quiet))


def prepare(entry: CatalogueEntry, *, quiet: bool = False) -> Path:
    """The converted folder of ``entry``, built when missing (see `resolve_model`)."""
    if entry.refused:
        raise ValueError(f"{entry.alias} cannot be loaded: {entry.refused}")
    folder = converted_path(entry)
    if is_converted(entry):
        return folder
    from filelock import FileLock

    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if is_converted(entry):  # another process finished it while we waited
            return folder
        if is_offline() and not _downloads_present(entry):
            raise ValueError(
                f"{entry.alias} is not in the cache and HF_HUB_OFFLINE is set: run `demixers download "
                f"{entry.alias}` online first"
            )
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
        try:
            release = staging / "release"
            digests = fetch_release(entry, release, quiet=quiet)
            output = staging / "model"
            run_converter(entry, converter_inputs(entry, release), output)
            record = {
                "alias": entry.alias,
                "converter": entry.converter,
                "converter_options": dict(entry.converter_options),
                "converter_version": converter_version(entry.converter),
                "files": {item.path: item.source for item in entry.files},
                "sha256": digests,
            }
            (output / SOURCE_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
            shutil.rmtree(folder, ignore_errors=True)  # a folder without its record is incomplete
            os.replace(output, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return folder


def _downloads_present(entry: CatalogueEntry) -> bool:
    from .download import is_downloaded

    return is_downloaded(entry)


def resolve_model_id(model_id: str, *, quiet: bool = False) -> str:
    """For the commands: an alias becomes its folder; a path that exists or a Hub id stays as given
    (an existing folder named like an alias wins: the user pointed at it)."""
    if os.path.exists(model_id):
        return model_id
    return resolve_model(model_id, quiet=quiet)


__all__ = [
    "SOURCE_RECORD",
    "builtin_catalogue",
    "cache_key",
    "converted_path",
    "converter_version",
    "get_catalogue",
    "is_converted",
    "lookup",
    "prepare",
    "resolve_model",
    "resolve_model_id",
    "use_catalogue",
]
