"""Large ``demixers separate`` jobs: input discovery, balanced sharding, the resumable manifest.

A *job* is one ``demixers separate`` run over a collection (folders, ``--input-list``, a dataset),
possibly on several processes started by Accelerate's launcher (``accelerate launch -m demixers
separate ...`` or ``demixers separate --num-processes N``). This module holds what the command needs
besides the model, without importing torch:

* `discover_inputs`: folders walked (``--recursive``, extension filter), ``--input-list`` files read,
  duplicates dropped, and nothing below the output folder taken as an input;
* `balanced_shards`: the deterministic, duration-balanced assignment of items to ranks (longest first,
  each to the least loaded rank), computed identically by every rank from the same list;
* `OutputLayout`: ``--filename`` templates with demucs' variables (``track``, ``trackext``, ``stem``,
  ``ext``), validated (relative, inside OUT, no collisions between inputs before any work);
* `JobManifest`: per-process JSON-lines journals (one append + fsync per record, so a killed process
  loses at most the line it was writing, which readers ignore) merged under a file lock into
  ``OUT/demixers_manifest.jsonl`` (rewritten to a temporary name and ``os.replace``-d);
* fingerprints: an item is finished when its record says done for the same input content (sha256,
  re-hashed when the file's size or mtime changed) *and* the same job key (model identity + settings).
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import os
import socket
import string
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils.files import write_text_atomic

AUDIO_EXTENSIONS = ("wav", "flac", "mp3", "ogg", "oga", "opus", "aif", "aiff", "aifc", "w64", "caf", "au")
MANIFEST_NAME = "demixers_manifest.jsonl"
WORK_DIR_NAME = ".demixers_separate"
JOURNAL_PREFIX = "journal-"
LOCK_NAME = "lock"
DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
TEMPLATE_FIELDS = ("track", "trackext", "stem", "ext")
HASH_BLOCK = 1 << 20

STARTED, DONE, FAILED, SKIPPED = "started", "done", "failed", "skipped"
FINISHED = (DONE, SKIPPED)


# -- inputs ------------------------------------------------------------------------------------


def parse_extensions(text: str) -> tuple[str, ...]:
    """``"wav,flac"`` -> ``("wav", "flac")`` (lower case, leading dots dropped); a ValueError when empty."""
    extensions = tuple(part.strip().lstrip(".").lower() for part in text.split(",") if part.strip())
    if not extensions:
        raise ValueError(f"--extensions must name at least one file extension, got {text!r}")
    return extensions


def read_input_list(path: str | os.PathLike[str]) -> list[str]:
    """Paths listed in ``path``, one per line; blank lines and ``#`` comments are ignored and relative
    paths are taken relative to the list's folder (so a list travels with its collection)."""
    list_path = Path(path)
    try:
        text = list_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"--input-list {path}: no such file") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"--input-list {path}: not UTF-8 text ({error.reason})") from None
    entries = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        entries.append(str(entry if os.path.isabs(entry) else list_path.parent / entry))
    return entries


def discover_inputs(
    inputs: Sequence[str],
    input_list: str | os.PathLike[str] | None = None,
    recursive: bool = False,
    extensions: Sequence[str] = AUDIO_EXTENSIONS,
    exclude: str | os.PathLike[str] | None = None,
    keep_empty_folders: bool = False,
    deduplicate: bool = True,
) -> list[str]:
    """Every input file, in a deterministic order: each input given (a file as is, a folder replaced
    by its audio files, sorted; ``recursive`` walks sub-folders; hidden files and folders are left
    out), then the ``input_list`` entries. Files found in folders under ``exclude`` (the output folder)
    are not inputs. With ``deduplicate`` a path listed twice (after resolving) is kept once. A missing
    file stays in the list (it fails as an item); so does a folder without audio files with
    ``keep_empty_folders``, else it is a ValueError when nothing at all is found."""
    wanted = {extension.lower().lstrip(".") for extension in extensions}
    excluded = Path(os.path.realpath(exclude)) if exclude is not None else None
    found: list[str] = []
    seen: set[str] = set()

    def add(path: str) -> None:
        resolved = os.path.realpath(path)
        if not deduplicate or resolved not in seen:
            seen.add(resolved)
            found.append(path)

    listed = [*inputs, *(read_input_list(input_list) if input_list is not None else [])]
    for entry in listed:
        if os.path.isdir(entry):
            matching = [
                path
                for path in _walk(Path(entry), recursive)
                if path.suffix.lower().lstrip(".") in wanted
                and not (excluded is not None and Path(os.path.realpath(path)).is_relative_to(excluded))
            ]
            for path in matching:
                add(str(path))
            if not matching and keep_empty_folders:
                found.append(entry)
        else:
            add(entry)
    if not found:
        raise ValueError(
            f"no audio files with extension(s) {', '.join(sorted(wanted))} in {', '.join(map(str, listed))}"
            + ("" if recursive else " (pass --recursive to walk sub-folders)")
        )
    return found


def _walk(folder: Path, recursive: bool) -> list[Path]:
    if not recursive:
        return sorted(path for path in folder.iterdir() if path.is_file() and not path.name.startswith("."))
    files = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        files.extend(Path(root) / name for name in sorted(names) if not name.startswith("."))
    return sorted(files)


def audio_seconds(path: str) -> float | None:
    """The file's duration from its header, or None when it cannot be read (it fails as an item)."""
    import soundfile

    try:
        info = soundfile.info(path)
    except (RuntimeError, OSError, ValueError, TypeError):
        return None
    return float(info.frames) / float(info.samplerate) if info.samplerate > 0 else None


def balanced_shards(weights: Sequence[float], keys: Sequence[str], num_shards: int) -> list[list[int]]:
    """Assign item indices to ``num_shards`` ranks, balancing the summed ``weights`` (durations).

    Longest first, each item to the rank with the least work so far (ties: the lower rank); items of
    equal weight in ``keys`` order. The result depends only on the arguments, so every rank computes
    the same assignment. Each shard lists its indices in processing order (longest first).
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards!r}")
    if len(weights) != len(keys):
        raise ValueError(f"{len(weights)} weights for {len(keys)} keys")
    order = sorted(range(len(weights)), key=lambda index: (-float(weights[index]), keys[index]))
    loads = [(0.0, rank) for rank in range(num_shards)]
    shards: list[list[int]] = [[] for _ in range(num_shards)]
    for index in order:
        load, rank = heapq.heappop(loads)
        shards[rank].append(index)
        heapq.heappush(loads, (load + float(weights[index]), rank))
    return shards


def safe_folder_name(stem: str) -> str:
    """An input's stem as one folder name inside OUTDIR (see the module notes of `demixers.pipelines.cli`):
    separators and control characters become ``_``; a stem of dots only, or none, becomes as many ``_``."""
    name = "".join(
        "_" if character in ("/", "\\", os.sep, os.altsep) or not character.isprintable() else character
        for character in stem
    )
    if set(name) <= {"."}:
        name = "_" * max(len(name), 1)
    return name


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this machine may still be running (never False for our own pid or
    for a pid we may not signal)."""
    if pid <= 0:
        return True  # not a pid we wrote: leave its files alone
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


# -- fingerprints ------------------------------------------------------------------------------


def file_fingerprint(path: str, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``{"fingerprint": sha256 of the content, "size", "mtime_ns"}``; the hash of ``previous`` (a
    manifest record) is reused when the size and modification time are unchanged."""
    stat = os.stat(path)
    if (
        previous is not None
        and previous.get("size") == stat.st_size
        and previous.get("mtime_ns") == stat.st_mtime_ns
        and isinstance(previous.get("fingerprint"), str)
    ):
        return {"fingerprint": previous["fingerprint"], "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return {"fingerprint": digest.hexdigest(), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def bytes_fingerprint(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def job_key(model_identity: str, settings: Mapping[str, Any]) -> str:
    """What makes two runs produce the same outputs: the model (id and weights digest) and every
    setting that changes the stems (not the batch size or device: throughput knobs)."""
    text = json.dumps({"model": model_identity, "settings": dict(settings)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# -- output layout -----------------------------------------------------------------------------


def check_template(template: str) -> str:
    """A ``--filename`` template using only ``{track}``, ``{trackext}``, ``{stem}`` and ``{ext}``, as
    a relative path; a ValueError naming the problem otherwise."""
    try:
        parsed = [
            (field, spec, conversion) for _, field, spec, conversion in string.Formatter().parse(template)
        ]
        fields = [field for field, _, _ in parsed if field is not None]
        specs = [(spec, conversion) for field, spec, conversion in parsed if field]
    except ValueError as error:
        raise ValueError(f"--filename {template!r}: {error}") from None
    unknown = sorted({field for field in fields if field not in TEMPLATE_FIELDS})
    if unknown:
        raise ValueError(
            f"--filename {template!r}: unknown variable(s) {', '.join(unknown)} "
            f"(available: {', '.join('{' + name + '}' for name in TEMPLATE_FIELDS)})"
        )
    if any(spec or conversion for spec, conversion in specs):
        raise ValueError(f"--filename {template!r}: format specs and conversions are not supported")
    if "stem" not in fields:
        raise ValueError(f"--filename {template!r} must contain {{stem}}: every stem needs its own file")
    if os.path.isabs(template) or template.startswith(("/", "\\")):
        raise ValueError(f"--filename {template!r} must be a path relative to the output folder")
    return template


@dataclass(frozen=True)
class OutputLayout:
    """Where the stems of each input go: ``root / template.format(...)`` with the variables made
    safe (see `render`)."""

    root: Path
    template: str
    labels: tuple[str, ...]
    ext: str

    def render(self, source: str) -> list[Path]:
        """The target of every label for ``source``; a ValueError when a target is not a plain file
        path inside ``root`` (``..`` parts, the job's work folder, the manifest)."""
        path = Path(source)
        variables = {
            "track": safe_folder_name(path.stem),
            "trackext": safe_folder_name(path.suffix.lstrip(".")) if path.suffix else "",
            "ext": self.ext,
        }
        targets = []
        for label in self.labels:
            relative = self.template.format(stem=label, **variables)
            parts = [part for part in relative.replace("\\", "/").split("/") if part not in ("", ".")]
            if not parts or ".." in parts or parts[0] in (WORK_DIR_NAME, MANIFEST_NAME):
                raise ValueError(
                    f"{source}: --filename {self.template!r} gives {relative!r} for stem {label!r}, "
                    "not a file path inside the output folder"
                )
            targets.append(self.root.joinpath(*parts))
        return targets

    def plan(self, sources: Sequence[str]) -> list[list[Path]]:
        """Targets of every input, refusing (before any work) two stems that would share a file,
        within one input or between inputs."""
        claimed: dict[Path, str] = {}
        plans = []
        for source in sources:
            targets = self.render(source)
            for target in targets:
                normalized = Path(os.path.normcase(os.path.abspath(target)))
                if normalized in claimed:
                    other = claimed[normalized]
                    raise ValueError(
                        f"--filename {self.template!r}: {source} and {other} would both write {target}"
                        if other != source
                        else f"--filename {self.template!r}: two stems of {source} would both write {target}"
                    )
                claimed[normalized] = source
            plans.append(targets)
        return plans


# -- manifest ----------------------------------------------------------------------------------


def _read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSON-lines file; a line cut short by a killed writer (or otherwise unreadable) is
    skipped."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict) and isinstance(record.get("key"), str):
                        yield record
    except FileNotFoundError:
        return


def latest_records(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last record of each key, by ``time`` (ties: the later in ``records``)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in records:
        key = record["key"]
        current = latest.get(key)
        if current is None or float(record.get("time", 0.0)) >= float(current.get("time", 0.0)):
            latest[key] = dict(record)
    return latest


class JobManifest:
    """The job's records in ``root``: `MANIFEST_NAME` (merged, one line per item) and this process'
    journal under `WORK_DIR_NAME` (see the module notes)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.work_dir = self.root / WORK_DIR_NAME
        self.path = self.root / MANIFEST_NAME
        self.host = socket.gethostname().replace(os.sep, "_") or "host"
        self.pid = os.getpid()
        self.journal = self.work_dir / f"{JOURNAL_PREFIX}{self.host}-{self.pid}.jsonl"
        self._journal_handle: Any = None

    def state(self) -> dict[str, dict[str, Any]]:
        """The latest record of every item, from the merged manifest and every journal (merged or not)."""
        records = list(_read_jsonl(self.path))
        if self.work_dir.is_dir():
            for journal in sorted(self.work_dir.glob(f"{JOURNAL_PREFIX}*.jsonl")):
                records.extend(_read_jsonl(journal))
        return latest_records(records)

    def append(self, record: Mapping[str, Any]) -> None:
        """Add one record to this process' journal: one ``write`` of one line, flushed and fsync-ed."""
        if self._journal_handle is None:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._journal_handle = open(self.journal, "a", encoding="utf-8")  # noqa: SIM115 (kept open)
        line = json.dumps({**record, "host": self.host, "pid": self.pid, "time": time.time()}, sort_keys=True)
        self._journal_handle.write(line + "\n")
        self._journal_handle.flush()
        os.fsync(self._journal_handle.fileno())

    def close(self) -> None:
        if self._journal_handle is not None:
            self._journal_handle.close()
            self._journal_handle = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock over the merged manifest (``fcntl.flock``; where there is none, the merge
        relies on the atomic replace alone)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work_dir / LOCK_NAME, "a+") as handle:
            try:
                import fcntl
            except ImportError:  # Windows: no flock
                yield
                return
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def merge(self) -> dict[str, dict[str, Any]]:
        """Fold this process' journal, and those of dead processes of this host, into the merged
        manifest (atomically replaced), then delete them; return the merged records."""
        self.close()
        with self.locked():
            records = list(_read_jsonl(self.path))
            merged: list[Path] = []
            for journal in sorted(self.work_dir.glob(f"{JOURNAL_PREFIX}*.jsonl")):
                if journal == self.journal or self._journal_is_dead(journal):
                    records.extend(_read_jsonl(journal))
                    merged.append(journal)
            latest = latest_records(records)
            text = "".join(json.dumps(latest[key], sort_keys=True) + "\n" for key in sorted(latest))
            write_text_atomic(self.path, text)
            for journal in merged:
                with contextlib.suppress(OSError):
                    journal.unlink()
        return latest

    def _journal_is_dead(self, journal: Path) -> bool:
        name = journal.name[len(JOURNAL_PREFIX) : -len(".jsonl")]
        host, _, pid = name.rpartition("-")
        if host != self.host or not pid.isdigit():
            return False  # another machine's process: it merges its own journal
        return int(pid) != self.pid and not process_alive(int(pid))


@dataclass
class ItemDecision:
    """What to do with one item given its last record: skip it, or run it (``overwrite``: its
    existing outputs were being written by this same job and may be replaced)."""

    skip: bool
    overwrite: bool
    previous: dict[str, Any] | None


def decide(
    previous: Mapping[str, Any] | None, fingerprint: str, job: str, targets_exist: bool, overwrite: bool
) -> ItemDecision:
    """Skip an item finished by the same job on the same content whose outputs are still there;
    otherwise run it, replacing outputs only with ``--overwrite`` or when this job's own earlier
    attempt on the same content (started, or done and since changed on disk) wrote them."""
    record = dict(previous) if previous is not None else None
    same = record is not None and record.get("job") == job
    if (
        same
        and record.get("fingerprint") == fingerprint
        and record.get("status") in FINISHED
        and targets_exist
    ):
        return ItemDecision(skip=True, overwrite=False, previous=record)
    ours = same and (record.get("status") in (STARTED, DONE, SKIPPED) or bool(record.get("owns_outputs")))
    return ItemDecision(skip=False, overwrite=overwrite or ours, previous=record)


@dataclass
class JobSummary:
    items: int
    done: int
    skipped: int
    failed: int
    audio_seconds: float
    wall_seconds: float
    num_processes: int
    failures: list[tuple[str, str]]

    @property
    def audio_hours_per_hour_per_process(self) -> float:
        if self.wall_seconds <= 0:
            return 0.0
        return self.audio_seconds / self.wall_seconds / max(1, self.num_processes)

    def line(self) -> str:
        return (
            f"demixers separate: {self.items} item(s): {self.done} done, {self.skipped} skipped (already "
            f"done), {self.failed} failed; {self.audio_seconds / 3600:.4f} h of audio separated in "
            f"{self.wall_seconds:.1f} s on {self.num_processes} process(es): "
            f"{self.audio_hours_per_hour_per_process:.2f} audio-hours/hour per process"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "done": self.done,
            "skipped": self.skipped,
            "failed": self.failed,
            "audio_hours": self.audio_seconds / 3600,
            "wall_seconds": self.wall_seconds,
            "num_processes": self.num_processes,
            "audio_hours_per_hour_per_process": self.audio_hours_per_hour_per_process,
            "failures": [{"input": name, "error": error} for name, error in self.failures],
        }


def summarize(
    records: Mapping[str, Mapping[str, Any]],
    keys: Sequence[str],
    run_id: str,
    wall_seconds: float,
    processes: int,
) -> JobSummary:
    """This run's outcome (records written with ``run_id``) over the items ``keys``."""
    done = skipped = failed = 0
    seconds = 0.0
    failures = []
    for key in keys:
        record = records.get(key)
        if record is None or record.get("run") != run_id:
            continue
        status = record.get("status")
        if status == DONE:
            done += 1
            seconds += float(record.get("seconds") or 0.0)
        elif status == SKIPPED:
            skipped += 1
        elif status in (FAILED, STARTED):  # started and never finished: that process died
            failed += 1
            failures.append((str(record.get("input", key)), str(record.get("error", "interrupted"))))
    return JobSummary(len(keys), done, skipped, failed, seconds, wall_seconds, processes, failures)
