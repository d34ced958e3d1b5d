"""The catalogue's schema: what an entry (an official release, loadable by its alias) holds.

An entry is plain data (the built-in ones live in `demixers.catalogue.entries`; a catalogue can also
be read from a JSON file of the same shape), validated here so that a typo in the data is an error
naming the alias and the field, not a download of the wrong thing:

* ``alias``: the name users type (``htdemucs_ft``); letters, digits, ``_``, ``-``, ``.``;
* ``family``: the demixers ``model_type`` the conversion produces; ``task``: ``music`` or ``speech``;
  ``sources``, ``sampling_rate``: what it separates;
* ``converter``: a name of ``demixers convert`` (`demixers.modeling.convert_cli.CONVERTERS`), and
  ``converter_options``: keyword arguments for its ``convert_checkpoint`` function (or the function
  ``converter_function`` names, for converter modules whose function has another name). A new family's
  entries name its converter: adding them is a data-only change;
* ``files``: what to download, each ``{"url": ..., "path": ...}`` (any host) or ``{"hub": {"repo_id",
  "revision", "filename"}, "path": ...}`` (the Hugging Face Hub), with its checksum: ``sha256`` (the
  full digest), or ``sha256_prefix`` (the prefix the original publishes, e.g. in demucs' file
  names), or ``checksum_from``: ``"hub-lfs"`` (the Hub's LFS digest of the pinned revision) /
  ``"modelscope"`` (the digest ModelScope's file listing publishes) / ``"github-release"`` (the
  ``digest`` GitHub's release API publishes for a ``github.com/OWNER/REPO/releases/download/TAG/NAME``
  asset). A file without any is refused;
* ``inline_files``: small text files the release defines in its code rather than on a server (demucs'
  bag yamls), written next to the downloads; ``entry_point``: the file or folder (``"."``) handed to
  the converter, or a list of files handed to it in that order (converters that take a config and a
  checkpoint, such as ``msst-roformer``);
* ``license``, ``authors``, ``homepage``, ``citation`` (BibTeX), ``description``, ``score``
  (``{"metric", "value", "dataset", "reference"}``: the published score), ``parity`` (the converter's
  measured agreement with the original implementation), ``size`` (bytes of the download, if known);
* ``refused``: why the release cannot be loaded (DiffQ-quantized weights, no direct download link);
  such an alias is listed but loading it is an error giving that reason;
* ``unverified``: the fields whose values could not be verified offline (read from memory of the
  original's documentation, or a Hub revision that is not pinned): ``demixers models`` marks them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

ALIAS_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
SHA256_PREFIX_PATTERN = re.compile(r"^[0-9a-f]{8,63}$")
FUNCTION_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,95}$")
CHECKSUM_SOURCES = ("hub-lfs", "modelscope", "github-release")
GITHUB_RELEASE_ASSET = re.compile(r"^https://github\.com/[^/]+/[^/]+/releases/download/[^/]+/[^/]+$")
TASKS = ("music", "speech")
# every field an entry may carry (anything else is a typo)
ENTRY_FIELDS = frozenset(
    {
        "alias", "family", "task", "sources", "sampling_rate", "converter", "converter_options",
        "converter_function", "files",
        "inline_files", "entry_point", "license", "authors", "homepage", "citation", "description",
        "score", "parity", "size", "refused", "unverified", "notes",
    }
)  # fmt: skip
FILE_FIELDS = frozenset({"url", "hub", "path", "sha256", "sha256_prefix", "checksum_from", "size"})


def _fail(alias: Any, message: str) -> None:
    raise ValueError(f"catalogue entry {alias!r}: {message}")


def _relative_path(alias: str, value: Any, what: str) -> str:
    """A file name inside the release folder: relative, no ``..``, no backslash (it comes from data)."""
    if not isinstance(value, str) or not value or "\\" in value or "\x00" in value:
        _fail(alias, f"{what} must be a relative path, got {value!r}")
    path = PurePosixPath(value)
    if path.is_absolute() or any(part in ("", ".", "..") for part in path.parts):
        _fail(alias, f"{what} must be a relative path without '..', got {value!r}")
    return str(path)


@dataclass(frozen=True)
class ReleaseFile:
    """One downloadable file of a release."""

    path: str  # its name inside the release folder handed to the converter
    url: str | None = None  # any host (http/https)
    hub_repo_id: str | None = None  # or a Hugging Face Hub file
    hub_revision: str | None = None
    hub_filename: str | None = None
    sha256: str | None = None
    sha256_prefix: str | None = None
    checksum_from: str | None = None
    size: int | None = None

    @property
    def on_hub(self) -> bool:
        return self.hub_repo_id is not None

    @property
    def source(self) -> str:
        """Where it comes from, for messages: the URL, or ``hf://repo@revision/filename``."""
        if self.on_hub:
            return f"hf://{self.hub_repo_id}@{self.hub_revision}/{self.hub_filename}"
        return str(self.url)

    @property
    def checksum_status(self) -> str:
        if self.sha256:
            return "sha256"
        if self.sha256_prefix:
            return f"sha256 prefix ({len(self.sha256_prefix)} hex)"
        return {
            "hub-lfs": "Hub LFS sha256",
            "modelscope": "ModelScope sha256",
            "github-release": "GitHub asset sha256",
        }.get(self.checksum_from or "", "none")

    def identity(self) -> dict[str, Any]:
        """What identifies the bytes of this file (part of the converted folder's cache key)."""
        return {
            "path": self.path,
            "source": self.source,
            "sha256": self.sha256,
            "sha256_prefix": self.sha256_prefix,
            "checksum_from": self.checksum_from,
        }

    @classmethod
    def from_dict(cls, alias: str, data: Any) -> ReleaseFile:
        if not isinstance(data, Mapping):
            _fail(alias, f"each file must be a mapping, got {data!r}")
        unknown = set(data) - FILE_FIELDS
        if unknown:
            _fail(alias, f"unknown file field(s) {sorted(unknown)}")
        url, hub = data.get("url"), data.get("hub")
        if (url is None) == (hub is None):
            _fail(alias, f"a file needs exactly one of 'url' and 'hub', got {dict(data)!r}")
        values: dict[str, Any] = {}
        if url is not None:
            parts = urlsplit(str(url))
            if parts.scheme not in ("http", "https") or not parts.netloc:
                _fail(alias, f"file url must be http(s)://host/..., got {url!r}")
            values["url"] = str(url)
            default_path = PurePosixPath(parts.path).name
        else:
            if not isinstance(hub, Mapping) or not {"repo_id", "revision", "filename"} <= set(hub):
                _fail(alias, f"'hub' must give repo_id, revision and filename, got {hub!r}")
            repo_id = str(hub["repo_id"])
            if repo_id.count("/") != 1 or not all(ALIAS_PATTERN.match(part) for part in repo_id.split("/")):
                _fail(alias, f"hub repo_id must look like 'org/name', got {repo_id!r}")
            values.update(
                hub_repo_id=repo_id,
                hub_revision=str(hub["revision"]),
                hub_filename=_relative_path(alias, hub["filename"], "hub filename"),
            )
            default_path = values["hub_filename"]
        values["path"] = _relative_path(alias, data.get("path", default_path), "file path")
        sha256, prefix, checksum_from = (
            data.get("sha256"),
            data.get("sha256_prefix"),
            data.get("checksum_from"),
        )
        if sha256 is not None and not SHA256_PATTERN.match(str(sha256)):
            _fail(alias, f"sha256 must be 64 lowercase hex digits, got {sha256!r}")
        if prefix is not None and not SHA256_PREFIX_PATTERN.match(str(prefix)):
            _fail(alias, f"sha256_prefix must be 8-63 lowercase hex digits, got {prefix!r}")
        if checksum_from is not None and checksum_from not in CHECKSUM_SOURCES:
            _fail(alias, f"checksum_from must be one of {CHECKSUM_SOURCES}, got {checksum_from!r}")
        if checksum_from == "hub-lfs" and hub is None:
            _fail(alias, "checksum_from 'hub-lfs' is only for Hub files")
        if checksum_from == "github-release" and not GITHUB_RELEASE_ASSET.match(str(url)):
            _fail(
                alias,
                "checksum_from 'github-release' is only for https://github.com/OWNER/REPO/releases/download/"
                f"TAG/NAME files, got {url!r}",
            )
        if sha256 is None and prefix is None and checksum_from is None:
            _fail(alias, f"file {values['path']!r} has no checksum (sha256, sha256_prefix or checksum_from)")
        size = data.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            _fail(alias, f"file size must be a non-negative integer, got {size!r}")
        return cls(sha256=sha256, sha256_prefix=prefix, checksum_from=checksum_from, size=size, **values)


@dataclass(frozen=True)
class CatalogueEntry:
    """One official release, loadable by its alias."""

    alias: str
    family: str
    task: str
    sources: tuple[str, ...]
    sampling_rate: int
    converter: str
    files: tuple[ReleaseFile, ...]
    license: str
    entry_point: str | tuple[str, ...] = "."
    converter_options: Mapping[str, Any] = field(default_factory=dict)
    converter_function: str | None = None
    inline_files: Mapping[str, str] = field(default_factory=dict)
    authors: str = ""
    homepage: str = ""
    citation: str = ""
    description: str = ""
    score: Mapping[str, Any] | None = None
    parity: str = ""
    size: int | None = None
    refused: str | None = None
    unverified: tuple[str, ...] = ()
    notes: str = ""

    @property
    def download_size(self) -> int | None:
        """Bytes to download: the entry's ``size``, else the sum of known file sizes."""
        if self.size is not None:
            return self.size
        sizes = [item.size for item in self.files]
        return sum(sizes) if sizes and all(size is not None for size in sizes) else None  # type: ignore[misc]

    @property
    def checksum_status(self) -> str:
        statuses = sorted({item.checksum_status for item in self.files})
        return ", ".join(statuses) if statuses else "-"

    def score_text(self) -> str:
        if not self.score:
            return "-"
        text = f"{self.score['metric']} {self.score['value']} dB ({self.score.get('dataset', '?')})"
        return text + (" [unverified]" if "score" in self.unverified else "")

    @classmethod
    def from_dict(cls, data: Any) -> CatalogueEntry:
        if not isinstance(data, Mapping):
            raise ValueError(f"a catalogue entry must be a mapping, got {data!r:.80}")
        alias = data.get("alias")
        if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias):
            raise ValueError(f"catalogue entry alias must match {ALIAS_PATTERN.pattern}, got {alias!r}")
        unknown = set(data) - ENTRY_FIELDS
        if unknown:
            _fail(alias, f"unknown field(s) {sorted(unknown)}")
        for name in ("family", "task", "converter", "license"):
            if not isinstance(data.get(name), str) or not data[name]:
                _fail(alias, f"{name!r} must be a non-empty string, got {data.get(name)!r}")
        if data["task"] not in TASKS:
            _fail(alias, f"task must be one of {TASKS}, got {data['task']!r}")
        sources = data.get("sources")
        if isinstance(sources, str) or not isinstance(sources, Sequence) or not sources:
            _fail(alias, f"sources must be a non-empty list, got {sources!r}")
        rate = data.get("sampling_rate")
        if not isinstance(rate, int) or isinstance(rate, bool) or rate < 1000:
            _fail(alias, f"sampling_rate must be an integer >= 1000, got {rate!r}")
        refused = data.get("refused")
        if refused is not None and (not isinstance(refused, str) or not refused.strip()):
            _fail(alias, f"refused must be a reason (a non-empty string), got {refused!r}")
        raw_files = data.get("files") or []
        if not isinstance(raw_files, Sequence) or isinstance(raw_files, str):
            _fail(alias, f"files must be a list, got {raw_files!r}")
        files = tuple(ReleaseFile.from_dict(alias, item) for item in raw_files)
        if not files and refused is None:
            _fail(alias, "an entry that is not refused needs files to download")
        inline = data.get("inline_files") or {}
        if not isinstance(inline, Mapping) or not all(isinstance(text, str) for text in inline.values()):
            _fail(alias, "inline_files must map file names to text")
        inline = {_relative_path(alias, name, "inline file name"): text for name, text in inline.items()}
        names = [item.path for item in files] + list(inline)
        if len(set(names)) != len(names):
            _fail(alias, f"two files share a name: {sorted(names)}")
        entry_point = data.get("entry_point", ".")
        if isinstance(entry_point, Sequence) and not isinstance(entry_point, str):
            if not entry_point:
                _fail(alias, "entry_point must not be an empty list")
            entry_point = tuple(_relative_path(alias, item, "entry_point") for item in entry_point)
            missing = [item for item in entry_point if item not in names]
            if missing:
                _fail(alias, f"entry_point {missing!r} is none of its files {sorted(names)}")
        elif entry_point != ".":
            entry_point = _relative_path(alias, entry_point, "entry_point")
            if entry_point not in names:
                _fail(alias, f"entry_point {entry_point!r} is none of its files {sorted(names)}")
        function = data.get("converter_function")
        if function is not None and (not isinstance(function, str) or not FUNCTION_NAME.match(function)):
            _fail(alias, f"converter_function must be a public function name, got {function!r}")
        options = data.get("converter_options") or {}
        if not isinstance(options, Mapping):
            _fail(alias, f"converter_options must be a mapping, got {options!r}")
        score = data.get("score")
        if score is not None and (not isinstance(score, Mapping) or not {"metric", "value"} <= set(score)):
            _fail(alias, f"score must give at least metric and value, got {score!r}")
        unverified = data.get("unverified") or ()
        if isinstance(unverified, str) or not all(isinstance(name, str) for name in unverified):
            _fail(alias, f"unverified must be a list of field names, got {unverified!r}")
        size = data.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            _fail(alias, f"size must be a non-negative integer, got {size!r}")
        return cls(
            alias=alias,
            family=data["family"],
            task=data["task"],
            sources=tuple(str(name) for name in sources),
            sampling_rate=rate,
            converter=data["converter"],
            files=files,
            license=data["license"],
            entry_point=entry_point,
            converter_options=dict(options),
            converter_function=function,
            inline_files=inline,
            authors=str(data.get("authors", "")),
            homepage=str(data.get("homepage", "")),
            citation=str(data.get("citation", "")),
            description=str(data.get("description", "")),
            score=dict(score) if score else None,
            parity=str(data.get("parity", "")),
            size=size,
            refused=refused,
            unverified=tuple(unverified),
            notes=str(data.get("notes", "")),
        )


class Catalogue:
    """Entries by alias (aliases are unique; lookups are exact, with a suggestion on a miss)."""

    def __init__(self, entries: Iterable[CatalogueEntry | Mapping[str, Any]]) -> None:
        self._entries: dict[str, CatalogueEntry] = {}
        for item in entries:
            entry = item if isinstance(item, CatalogueEntry) else CatalogueEntry.from_dict(item)
            if entry.alias in self._entries:
                raise ValueError(f"catalogue alias {entry.alias!r} appears twice")
            self._entries[entry.alias] = entry

    def __iter__(self) -> Iterator[CatalogueEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, alias: object) -> bool:
        return alias in self._entries

    def get(self, alias: str) -> CatalogueEntry | None:
        return self._entries.get(alias)

    def __getitem__(self, alias: str) -> CatalogueEntry:
        entry = self._entries.get(alias)
        if entry is None:
            import difflib

            close = difflib.get_close_matches(alias, list(self._entries), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; `demixers models` lists them"
            raise KeyError(f"{alias!r} is not in the catalogue{hint}")
        return entry

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> Catalogue:
        """A catalogue from a JSON file: a list of entries, or ``{"entries": [...]}``."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except ValueError as error:
            raise ValueError(f"{path}: invalid JSON ({error})") from None
        if isinstance(data, Mapping):
            data = data.get("entries")
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a list of entries or {{'entries': [...]}}")
        return cls(data)


__all__ = ["Catalogue", "CatalogueEntry", "ReleaseFile"]
