"""Turn a corpus folder into a `datasets.DatasetDict` (one row per mixture), resumably and safely.

The work happens in four steps:

1. *plan and check* (`plan_preparation`, nothing written yet): discover the items (`corpora.py`),
   refuse files the metadata lists outside the corpus root (absolute or ``../`` paths, symlinks; unless
   ``allow_outside_root``), fingerprint the corpus and options, and refuse an output folder that is not
   ours or that holds a finished dataset prepared with other settings (unless ``overwrite``); then check
   what can be checked from file headers: every referenced file exists, rates and lengths agree with
   each other and with the metadata;
2. *build shards*: items are cut into fixed ranges of ``shard_size`` rows; each shard is decoded,
   checked (sources sum to the mixture where the corpus promises it), encoded losslessly (FLAC, or WAV
   for float data) and written as an Arrow file under ``OUTPUT/.demixers_prepare/<split>/`` through a
   temporary name and ``os.replace``. The manifest (``manifest.json``, also replaced atomically)
   records every finished shard, so an interrupted run resumes where it stopped;
3. *assemble*: the shards become a `DatasetDict` saved with ``save_to_disk`` in a staging folder
   beside the output (``.OUTPUT.demixers-staging``);
4. *swap*: the dataset files already in ``OUTPUT`` (``dataset_dict.json`` and its splits, nothing
   else) are moved aside and the new ones moved in, all or nothing; a failed rebuild leaves the old
   dataset as it was. ``.demixers_prepare/dataset.json`` records what the finished dataset was
   prepared from (optionally it is then pushed to the Hub).

Invalid items are never dropped silently: by default they are reported by name in a ``ValueError``;
with ``skip_invalid=True`` they are left out and listed in an `InvalidItemsWarning`.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.files import write_text_atomic
from .audio import PCM, encode_pcm
from .corpora import Corpus, Item, Layout, get_corpus, length_problems

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
WORK_DIR_NAME = ".demixers_prepare"
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "invalid_items.txt"
DATASET_RECORD_NAME = "dataset.json"  # the manifest of the dataset now in the output (kept during a rebuild)
STAGING_SUFFIX = ".demixers-staging"  # ".<output name><suffix>" beside the output: the new dataset
REPLACED_SUFFIX = ".demixers-replaced"  # the old dataset files while the new ones are moved in
MAX_LISTED_INLINE = 10  # items named in a one-line error message
MAX_LISTED = 50  # invalid items spelled out in an error message (all of them go to the report file)
SUM_SNR_DB = 40.0  # a mixture this close to the sum of its sources passes even beyond quantisation
_BATCH_ROWS = 16
_BATCH_BYTES = 64 * 2**20


class InvalidItemsWarning(UserWarning):
    """Items left out of a prepared dataset (``skip_invalid=True``)."""


class InvalidItemError(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


# ---------------------------------------------------------------------------------------------------
# features and rows


def build_features(layout: Layout):
    """The `datasets.Features` of a prepared corpus."""
    from datasets import Audio, Features, List, Value

    kinds = {"string": Value("string"), "int64": Value("int64"), "float64": Value("float64")}
    features: dict[str, Any] = {"id": Value("string")}
    for column in layout.audio_columns:
        features[column] = Audio(sampling_rate=layout.sampling_rate, decode=False)
    features["duration"] = Value("float64")
    features["num_samples"] = Value("int64")
    for name, kind in layout.extra_features.items():
        if kind.startswith("list<") and kind.endswith(">"):
            features[name] = List(kinds[kind[5:-1]])
        else:
            features[name] = kinds[kind]
    return Features(features)


def content_problems(item: Item, layout: Layout, pcms: dict[str, PCM], sum_check: bool = True) -> list[str]:
    """Problems only visible in the decoded samples: lengths, rates, channels, non-finite, sums."""
    problems = []
    for column, pcm in pcms.items():
        if pcm.sampling_rate != layout.sampling_rate:
            problems.append(
                f"{column}: sampling rate {pcm.sampling_rate} Hz, expected {layout.sampling_rate} Hz"
            )
        if pcm.num_frames == 0:
            problems.append(f"{column}: no samples")
        if pcm.samples.dtype.kind == "f" and not np.isfinite(pcm.samples).all():
            problems.append(f"{column}: contains NaN or infinite samples")
    where = {c: str(item.files[c]) for c in pcms if c in item.files}
    problems.extend(length_problems(item, {c: p.num_frames for c, p in pcms.items()}, where))
    channels = {c: p.num_channels for c, p in pcms.items()}
    if len(set(channels.values())) > 1:
        problems.append(f"channel counts differ: {channels}")
    if problems or not sum_check or not layout.sum_of:
        return problems
    mixture = pcms["mixture"].as_float64()
    total = sum(pcms[c].as_float64() for c in layout.sum_of)
    error = mixture - total
    max_error = float(np.abs(error).max(initial=0.0))
    lsb = max(p.lsb() for c, p in pcms.items() if c == "mixture" or c in layout.sum_of)
    allowed = (len(layout.sum_of) + 1) * max(lsb, 2.0**-23) + 1e-9
    if max_error > allowed:
        power = float(np.mean(mixture**2))
        snr = 10 * np.log10(power / max(float(np.mean(error**2)), 1e-30)) if power > 0 else -np.inf
        if snr < SUM_SNR_DB:
            problems.append(
                f"mixture is not the sum of {' + '.join(layout.sum_of)} "
                f"(max error {max_error:.3g}, SNR {snr:.1f} dB)"
            )
    return problems


def build_row(corpus: Corpus, item: Item, layout: Layout, sum_check: bool = True) -> dict[str, Any]:
    """Read, check and encode one item; raise `InvalidItemError` naming what is wrong."""
    try:
        pcms = corpus.read_item(item, layout)
    except (ValueError, OSError) as error:
        files = ", ".join(f"{c}={p}" for c, p in item.files.items())
        raise InvalidItemError([f"cannot read the item's audio ({files}): {error}"]) from None
    problems = content_problems(item, layout, pcms, sum_check)
    if problems:
        raise InvalidItemError(problems)
    num_samples = pcms["mixture"].num_frames
    row: dict[str, Any] = {"id": item.id}
    for column in layout.audio_columns:
        data, extension = encode_pcm(pcms[column])
        row[column] = {"bytes": data, "path": f"{item.id}.{column}.{extension}"}
    row["duration"] = num_samples / layout.sampling_rate
    row["num_samples"] = num_samples
    for name in layout.extra_features:
        row[name] = item.fields.get(name)
    return row


# ---------------------------------------------------------------------------------------------------
# shards


@dataclass
class ShardTask:
    corpus: str
    split: str
    index: int
    items: list[Item]
    layout: Layout
    path: str
    fingerprint: str
    sum_check: bool = True
    skip_invalid: bool = False


@dataclass
class ShardResult:
    split: str
    index: int
    fingerprint: str
    rows: int = 0
    written: bool = False
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (id, reason) left out
    problems: list[tuple[str, str]] = field(default_factory=list)  # (id, reason) that stop the run


def _build_shard(task: ShardTask) -> ShardResult:
    """Build one shard file (atomically); invalid items are skipped or reported back."""
    import pyarrow as pa

    corpus = get_corpus(task.corpus)
    schema = build_features(task.layout).arrow_schema
    result = ShardResult(task.split, task.index, task.fingerprint)
    Path(task.path).parent.mkdir(parents=True, exist_ok=True)
    temporary = f"{task.path}.tmp-{os.getpid()}"
    try:
        with pa.OSFile(temporary, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            batch: list[dict[str, Any]] = []
            batch_bytes = 0
            for item in task.items:
                try:
                    row = build_row(corpus, item, task.layout, task.sum_check)
                except InvalidItemError as error:
                    (result.skipped if task.skip_invalid else result.problems).append((item.id, str(error)))
                    continue
                if result.problems:
                    continue  # this shard will not be kept: only look for further problems
                batch.append(row)
                batch_bytes += sum(len(row[c]["bytes"]) for c in task.layout.audio_columns)
                result.rows += 1
                if len(batch) >= _BATCH_ROWS or batch_bytes >= _BATCH_BYTES:
                    writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                    batch, batch_bytes = [], 0
            if batch and not result.problems:
                writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
        if result.problems:
            os.remove(temporary)
            result.rows = 0
        else:
            os.replace(temporary, task.path)
            result.written = True
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return result


def _hash(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


def _layout_summary(layout: Layout) -> dict[str, Any]:
    return {
        "sampling_rate": layout.sampling_rate,
        "audio_columns": layout.audio_columns,
        "extra_features": layout.extra_features,
        "sum_of": layout.sum_of,
        "num_channels": layout.num_channels,
    }


def _write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=1, ensure_ascii=False))


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("version") == SCHEMA_VERSION else None


def _format_items(entries: Iterable[tuple[str, str, str]], limit: int | None = MAX_LISTED) -> str:
    entries = list(entries)
    shown = entries if limit is None else entries[:limit]
    lines = [f"  {split}/{item_id}: {reason}" for split, item_id, reason in shown]
    if limit is not None and len(entries) > limit:
        lines.append(f"  ... and {len(entries) - limit} more")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# step 1: plan and check (nothing is written)


@dataclass
class PreparationPlan:
    """Everything decided before any file is written: the corpus, its items and the fingerprint."""

    spec: Corpus
    root: Path
    output: Path
    options: dict[str, Any]
    layout: Layout
    shard_size: int
    sum_check: bool
    settings: dict[str, Any]  # what the fingerprint covers, kept in the manifest to explain changes
    fingerprint: str

    @property
    def work(self) -> Path:
        return self.output / WORK_DIR_NAME

    @property
    def staging(self) -> Path:
        # beside the output (same file system, so the swap is a rename) and recognisably ours
        return self.output.parent / f".{self.output.name}{STAGING_SUFFIX}"

    @property
    def replaced(self) -> Path:
        return self.output.parent / f".{self.output.name}{REPLACED_SUFFIX}"


def _absolute(path: str | os.PathLike[str]) -> Path:
    # abspath also folds "..": an output spelled "data/.." must not be named ".." when staging beside it
    return Path(os.path.abspath(Path(path).expanduser()))


def files_outside_root(layout: Layout, root: Path) -> list[tuple[str, str, str, Path]]:
    """``(split, id, column, path)`` of every file that resolves (symlinks included) outside ``root``."""
    real_root = os.path.realpath(root)
    real_folders: dict[str, str] = {}  # items share a few folders: resolve each once, not per file

    def resolve(path: str | os.PathLike[str]) -> str:
        folder, name = os.path.split(os.path.abspath(path))
        if name in ("", ".", ".."):
            return os.path.realpath(path)
        real_folder = real_folders.get(folder)
        if real_folder is None:
            real_folder = real_folders[folder] = os.path.realpath(folder)
        candidate = os.path.join(real_folder, name)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate

    prefix = real_root.rstrip(os.sep) + os.sep
    outside = []
    for split, items in layout.splits.items():
        for item in items:
            for column, path in item.files.items():
                real = resolve(path)
                if real != real_root and not real.startswith(prefix):
                    outside.append((split, item.id, column, Path(path)))
    return outside


def _check_inside_root(spec: Corpus, layout: Layout, root: Path) -> None:
    outside = files_outside_root(layout, root)
    if not outside:
        return
    shown = ", ".join(
        f"{split}/{item_id} {column}={path}" for split, item_id, column, path in outside[:MAX_LISTED_INLINE]
    )
    more = f" and {len(outside) - MAX_LISTED_INLINE} more" if len(outside) > MAX_LISTED_INLINE else ""
    raise ValueError(
        f"{spec.name}: {len(outside)} file(s) listed by the corpus resolve outside its root {root} "
        f"(absolute or ../ paths, or symlinks): {shown}{more}; refusing to read (and publish) them; "
        "pass --allow-outside-root if they are really part of the corpus"
    )


def plan_preparation(
    spec: Corpus,
    root: str | os.PathLike[str],
    output: str | os.PathLike[str],
    options: dict[str, Any],
    *,
    shard_size: int | None,
    num_workers: int,
    sum_check: bool,
    allow_outside_root: bool,
) -> PreparationPlan:
    """Discover the corpus and check everything that can be checked without writing a file."""
    options = spec.resolve_options(options)
    spec.check_requirements()
    root, output = _absolute(root), _absolute(output)
    shard_size = int(shard_size or spec.default_shard_size)
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    if output == output.parent or output.name in ("", ".", ".."):
        raise ValueError(f"--output {output} cannot be a file system root")

    layout = spec.discover(root, **options)
    for split, items in layout.splits.items():
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"{spec.name}: duplicate ids in split {split}: {duplicates[:10]}")
    if not allow_outside_root:
        _check_inside_root(spec, layout, root)

    summary = _layout_summary(layout)
    settings = {
        "corpus": spec.name,
        "root": str(root),
        "options": options,
        "layout": summary,
        "sum_check": sum_check,
        "shard_size": shard_size,
    }
    fingerprint = _hash(SCHEMA_VERSION, spec.name, str(root), options, summary, sum_check, shard_size)
    return PreparationPlan(spec, root, output, options, layout, shard_size, sum_check, settings, fingerprint)


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between the settings recorded in a manifest and the requested ones, in words."""
    new = json.loads(json.dumps(new, default=str))  # as the manifest stores it (tuples become lists)

    def show(value: Any) -> str:
        return "default" if value is None else repr(value)

    def compare(
        before: dict[str, Any], after: dict[str, Any], keys: Iterable[str], label: str = ""
    ) -> list[str]:
        return [
            f"{label}{key}: {show(before.get(key))} then, {show(after.get(key))} now"
            for key in keys
            if key in before and before.get(key) != after.get(key)
        ]

    old_options = old.get("options") or {}
    changes = compare(old, new, ("corpus", "root"))
    changes += compare(
        {key: old_options.get(key) for key in set(old_options) | set(new["options"])},
        new["options"],
        sorted(set(old_options) | set(new["options"])),
    )
    if not changes:  # the layout follows from the options: only worth naming when they did not change
        changes = compare(old.get("layout") or {}, new["layout"], sorted(new["layout"]), "corpus ")
    changes += compare(old, new, ("sum_check", "shard_size"))
    return "; ".join(changes) or "the corpus or the options changed"


def _is_dataset_folder(output: Path) -> bool:
    return (output / "dataset_dict.json").is_file() or (output / "state.json").is_file()


def _prepared_record(output: Path) -> dict[str, Any] | None:
    """The manifest of the finished dataset saved in ``output``, if `demixers prepare` wrote it."""
    if not (output / "dataset_dict.json").is_file():
        return None
    for name in (DATASET_RECORD_NAME, MANIFEST_NAME):
        record = _read_manifest(output / WORK_DIR_NAME / name)
        if record is not None and record.get("state") == "complete":
            return record
    return None


def _check_output(
    plan: PreparationPlan, record: dict[str, Any] | None, manifest: dict[str, Any] | None, overwrite: bool
) -> None:
    """Refuse an output folder that is not ours, or a finished dataset that would change silently."""
    output = plan.output
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output} exists and is not a folder")
    if record is not None:
        if record.get("fingerprint") != plan.fingerprint and not overwrite:
            raise ValueError(
                f"--output {output} holds a dataset prepared with other settings "
                f"({describe_changes(record.get('settings') or record, plan.settings)}); "
                "pass --overwrite to replace it, or pick another --output"
            )
        return
    if manifest is not None or not output.exists():
        return
    if all(entry.name == WORK_DIR_NAME for entry in output.iterdir()):
        return  # empty, or only the work folder of an earlier run (e.g. with an unreadable manifest)
    is_dataset = _is_dataset_folder(output)
    if overwrite and is_dataset:
        return  # its dataset files are replaced at the swap; nothing else in the folder is touched
    raise FileExistsError(
        f"--output {output} is not empty and was not written by `demixers prepare`; "
        + ("pass --overwrite to replace the dataset saved there" if is_dataset else "pick an empty folder")
    )


# ---------------------------------------------------------------------------------------------------
# step 2: build (or resume) the shards


def _header_problems(corpus: Corpus, layout: Layout, num_threads: int) -> dict[str, dict[str, list[str]]]:
    jobs = [(split, item) for split, items in layout.splits.items() for item in items]
    found: dict[str, dict[str, list[str]]] = {split: {} for split in layout.splits}
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        for (split, item), problems in zip(
            jobs, pool.map(lambda job: corpus.header_problems(job[1], layout), jobs), strict=True
        ):
            if problems:
                found[split][item.id] = problems
    return found


def _start_manifest(
    plan: PreparationPlan, manifest: dict[str, Any] | None, record: dict[str, Any] | None
) -> dict[str, Any]:
    """The build manifest to continue: the interrupted one, or a fresh one (stale shards removed)."""
    if manifest is not None and manifest.get("fingerprint") == plan.fingerprint:
        return manifest
    if record is not None and not (plan.work / DATASET_RECORD_NAME).is_file():
        # a dataset finished by an older version is only described by manifest.json: keep its record
        # so that it is still recognised if this rebuild fails
        _write_json_atomic(plan.work / DATASET_RECORD_NAME, record)
    if manifest is not None:
        logger.warning("%s: the corpus or the options changed since the last run; starting over", plan.output)
    if plan.work.is_dir():
        # only the build's own files: the record of the finished dataset stays until the swap
        for entry in plan.work.iterdir():
            if entry.name == DATASET_RECORD_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    return {
        "version": SCHEMA_VERSION,
        "fingerprint": plan.fingerprint,
        "corpus": plan.spec.name,
        "root": str(plan.root),
        "options": plan.options,
        "layout": plan.settings["layout"],
        "settings": plan.settings,
        "state": "building",
        "splits": {},
    }


def _plan_shards(
    plan: PreparationPlan,
    manifest: dict[str, Any],
    header: dict[str, dict[str, list[str]]],
    skip_invalid: bool,
    skipped: list[tuple[str, str, str]],
) -> tuple[list[ShardTask], dict[str, list[Path]]]:
    """The shard files of every split, and the tasks for those not already built by an earlier run."""
    tasks: list[ShardTask] = []
    shard_files: dict[str, list[Path]] = {}
    for split, items in plan.layout.splits.items():
        records = manifest["splits"].setdefault(split, {"num_items": len(items), "shards": {}})["shards"]
        shard_files[split] = []
        for index, start in enumerate(range(0, len(items), plan.shard_size)):
            chunk = [item for item in items[start : start + plan.shard_size] if item.id not in header[split]]
            shard_fingerprint = _hash(plan.fingerprint, split, index, [item.id for item in chunk])
            path = plan.work / split / f"shard-{index:05d}.arrow"
            shard_files[split].append(path)
            record = records.get(str(index))
            if (
                record is not None
                and record.get("fingerprint") == shard_fingerprint
                and path.is_file()
                and (skip_invalid or not record.get("skipped"))
            ):
                skipped.extend((split, i, reason) for i, reason in record.get("skipped", []))
                continue
            tasks.append(
                ShardTask(
                    plan.spec.name,
                    split,
                    index,
                    chunk,
                    plan.layout,
                    str(path),
                    shard_fingerprint,
                    plan.sum_check,
                    skip_invalid,
                )
            )
        for stale in [key for key in records if int(key) >= len(shard_files[split])]:
            del records[stale]
    return tasks, shard_files


def _build_shards(
    plan: PreparationPlan,
    manifest: dict[str, Any],
    tasks: list[ShardTask],
    shard_files: dict[str, list[Path]],
    num_workers: int,
    progress: bool | None,
    skipped: list[tuple[str, str, str]],
) -> list[tuple[str, str, str]]:
    """Build ``tasks`` (in ``num_workers`` processes), recording each finished shard; return the problems."""
    from tqdm.auto import tqdm

    manifest_path = plan.work / MANIFEST_NAME
    problems: list[tuple[str, str, str]] = []

    def record_result(result: ShardResult) -> None:
        problems.extend((result.split, i, reason) for i, reason in result.problems)
        skipped.extend((result.split, i, reason) for i, reason in result.skipped)
        if result.written:
            manifest["splits"][result.split]["shards"][str(result.index)] = {
                "fingerprint": result.fingerprint,
                "rows": result.rows,
                "skipped": result.skipped,
            }
            _write_json_atomic(manifest_path, manifest)

    if not tasks:
        return problems
    name = plan.spec.name
    total_shards = sum(len(files) for files in shard_files.values())
    logger.info("%s: building %d of %d shard(s)", name, len(tasks), total_shards)
    bar = tqdm(total=len(tasks), desc=f"prepare {name}", unit="shard", disable=_disable(progress))
    if num_workers == 1 or len(tasks) == 1:
        for task in tasks:
            record_result(_build_shard(task))
            bar.update()
    else:
        # fork is much faster to start than spawn (which re-imports torch and transformers); the
        # workers only use numpy, soundfile and pyarrow
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        context = multiprocessing.get_context(method)
        with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
            futures = [pool.submit(_build_shard, task) for task in tasks]
            for future in concurrent.futures.as_completed(futures):
                record_result(future.result())
                bar.update()
    bar.close()
    return problems


# ---------------------------------------------------------------------------------------------------
# step 3: assemble the dataset in the staging folder


def _assemble(plan: PreparationPlan, shard_files: dict[str, list[Path]]) -> list[str]:
    """Save the shards as a `DatasetDict` in ``plan.staging``; return the split names."""
    from datasets import Dataset, DatasetDict, concatenate_datasets

    parts: dict[str, Any] = {}
    for split, files in shard_files.items():
        datasets = [Dataset.from_file(str(path)) for path in files]
        datasets = [d for d in datasets if len(d)]
        if not datasets:
            warnings.warn(
                f"{plan.spec.name}: split {split} has no valid item and is left out", InvalidItemsWarning, 3
            )
            continue
        parts[split] = datasets[0] if len(datasets) == 1 else concatenate_datasets(datasets)
    if not parts:
        raise ValueError(f"{plan.spec.name}: no valid item in {plan.root}")
    dataset_dict = DatasetDict(parts)
    for dataset in dataset_dict.values():
        dataset.info.description = f"{plan.layout.description}, prepared by demixers from {plan.spec.name}"
    _remove_ours(plan.staging)
    dataset_dict.save_to_disk(str(plan.staging))
    return list(parts)


# ---------------------------------------------------------------------------------------------------
# step 4: swap the new dataset in


def _plain_name(name: Any) -> bool:
    return (
        isinstance(name, str)
        and name not in ("", ".", "..", WORK_DIR_NAME)
        and "/" not in name
        and "\\" not in name
        and "\x00" not in name
    )


def dataset_entries(folder: Path) -> list[str]:
    """Names in ``folder`` that belong to the dataset saved there (never anything else)."""
    if (folder / "dataset_dict.json").is_file():
        try:
            splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8")).get("splits")
        except (OSError, ValueError, AttributeError):
            splits = None
        names = ["dataset_dict.json"]
        # split names come from a file in the folder: only plain names of existing sub-folders count
        names += [s for s in splits or [] if _plain_name(s) and (folder / s).is_dir()]
        return names
    if (folder / "state.json").is_file():  # a single `Dataset` saved with save_to_disk
        return [
            entry.name
            for entry in folder.iterdir()
            if entry.is_file()
            and (
                entry.name in ("state.json", "dataset_info.json")
                or re.fullmatch(r"data-\d+-of-\d+\.arrow", entry.name)
            )
        ]
    return []


def _remove_ours(path: Path) -> None:
    """Remove a staging / replaced folder left by an earlier (killed) run; only our own names get here."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _swap_in(plan: PreparationPlan, new_entries: list[str]) -> None:
    """Replace the dataset files in the output by the staged ones; leave every other file alone.

    The old entries are first moved aside (a rename on the same file system), then the new ones are
    moved in; any failure moves everything back, so the output holds either dataset, never a mix.
    """
    output, staging, replaced = plan.output, plan.staging, plan.replaced
    output.mkdir(parents=True, exist_ok=True)
    old_entries = dataset_entries(output)
    foreign = [n for n in new_entries if n not in old_entries and os.path.lexists(output / n)]
    if foreign:
        raise FileExistsError(
            f"--output {output} already holds {', '.join(foreign)} which is not part of the dataset saved "
            "there; move it away or pick another --output"
        )
    _remove_ours(replaced)
    replaced.mkdir()
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for name in old_entries:
            os.replace(output / name, replaced / name)
            moved_out.append(name)
        for name in new_entries:
            os.replace(staging / name, output / name)
            moved_in.append(name)
    except BaseException:
        for name in reversed(moved_in):
            os.replace(output / name, staging / name)
        for name in reversed(moved_out):
            os.replace(replaced / name, output / name)
        raise
    shutil.rmtree(replaced, ignore_errors=True)
    _remove_ours(staging)


# ---------------------------------------------------------------------------------------------------
# the driver


def prepare_corpus(
    corpus: str | Corpus,
    root: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    skip_invalid: bool = False,
    shard_size: int | None = None,
    num_workers: int = 1,
    sum_check: bool = True,
    overwrite: bool = False,
    keep_shards: bool = False,
    allow_outside_root: bool = False,
    push_to_hub: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    progress: bool | None = None,
    **options: Any,
):
    """Prepare ``corpus`` found in ``root`` as a `datasets.DatasetDict` saved in ``output``.

    ``options`` are the corpus options (e.g. ``mix_type="mix_both"``, ``sample_rate=8000``, ``n_src=2``
    for LibriMix; see ``demixers prepare <corpus> --help``). Re-running with the same arguments
    resumes an interrupted run, or just returns the finished dataset; a finished dataset prepared with
    other settings is replaced only with ``overwrite=True`` (and only once the new one is complete).
    Files the corpus lists outside ``root`` (absolute or ``../`` paths, symlinks) are refused unless
    ``allow_outside_root=True``. Returns the `DatasetDict` loaded back from ``output``.
    """
    spec = get_corpus(corpus) if isinstance(corpus, str) else corpus
    plan = plan_preparation(
        spec,
        root,
        output,
        options,
        shard_size=shard_size,
        num_workers=num_workers,
        sum_check=sum_check,
        allow_outside_root=allow_outside_root,
    )
    output_path, work = plan.output, plan.work
    record = _prepared_record(output_path)
    manifest = _read_manifest(work / MANIFEST_NAME)
    _check_output(plan, record, manifest, overwrite)

    if record is not None and record.get("fingerprint") == plan.fingerprint:
        skipped = [tuple(entry) for entry in record.get("skipped", [])]
        if skipped and not skip_invalid:
            raise ValueError(
                f"{output_path} was prepared with --skip-invalid, which left out {len(skipped)} item(s):\n"
                + _format_items(skipped)
                + "\nfix them and re-run, or pass --skip-invalid to accept the dataset as it is"
            )
        if skipped:
            _warn_skipped(skipped, output_path)
        logger.info("%s is already prepared", output_path)
        return _finish(output_path, push_to_hub, private, token)

    manifest = _start_manifest(plan, manifest, record)
    work.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(work / MANIFEST_NAME, manifest)

    header = _header_problems(spec, plan.layout, num_threads=min(32, 4 * num_workers))
    invalid = [(s, i, "; ".join(p)) for s, bad in header.items() for i, p in bad.items()]
    if invalid and not skip_invalid:
        _raise_invalid(invalid, spec, work)
    skipped = list(invalid)
    tasks, shard_files = _plan_shards(plan, manifest, header, skip_invalid, skipped)
    problems = _build_shards(plan, manifest, tasks, shard_files, num_workers, progress, skipped)
    if problems:
        _raise_invalid(sorted(problems) + invalid, spec, work)
    if skipped:
        _warn_skipped(skipped, output_path, work)

    try:
        _assemble(plan, shard_files)
        _swap_in(plan, dataset_entries(plan.staging))
    finally:
        _remove_ours(plan.staging)
    manifest["state"] = "complete"
    manifest["skipped"] = sorted(skipped)
    _write_json_atomic(work / MANIFEST_NAME, manifest)
    _write_json_atomic(work / DATASET_RECORD_NAME, manifest)
    if not keep_shards:
        for split in shard_files:
            shutil.rmtree(work / split, ignore_errors=True)
    return _finish(output_path, push_to_hub, private, token)


def _finish(output: Path, push_to_hub: str | None, private: bool | None, token: str | bool | None):
    from datasets import load_from_disk

    result = load_from_disk(str(output))
    if push_to_hub:
        result.push_to_hub(push_to_hub, private=private, token=token)
    return result


def _disable(progress: bool | None) -> bool | None:
    return None if progress is None else not progress


def _raise_invalid(entries: list[tuple[str, str, str]], corpus: Corpus, work: Path) -> None:
    report = work / REPORT_NAME
    try:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(_format_items(entries, limit=None) + "\n", encoding="utf-8")
        where = f"\n(full list in {report}; re-run with --skip-invalid to leave them out)"
    except OSError:
        where = "\n(re-run with --skip-invalid to leave them out)"
    raise ValueError(f"{corpus.name}: {len(entries)} invalid item(s):\n{_format_items(entries)}{where}")


def _warn_skipped(entries: list[tuple[str, str, str]], output: Path, work: Path | None = None) -> None:
    message = f"{len(entries)} invalid item(s) left out of {output}:\n{_format_items(entries)}"
    if work is not None:
        try:
            (work / REPORT_NAME).write_text(_format_items(entries, limit=None) + "\n", encoding="utf-8")
            message += f"\n(full list in {work / REPORT_NAME})"
        except OSError:
            pass
    logger.warning(message)
    warnings.warn(message, InvalidItemsWarning, stacklevel=3)


__all__ = [
    "InvalidItemsWarning",
    "PreparationPlan",
    "build_features",
    "build_row",
    "content_problems",
    "dataset_entries",
    "describe_changes",
    "files_outside_root",
    "plan_preparation",
    "prepare_corpus",
]
