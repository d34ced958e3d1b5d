"""Turn a corpus folder into a `datasets.DatasetDict` (one row per mixture), resumably.

The work happens in three steps:

1. *discover* the items (`corpora.py`) and check what can be checked from file headers: every
   referenced file exists, rates and lengths agree with each other and with the metadata;
2. *build shards*: items are cut into fixed ranges of ``shard_size`` rows; each shard is decoded,
   checked (sources sum to the mixture where the corpus promises it), encoded losslessly (FLAC, or WAV
   for float data) and written as an Arrow file under ``OUTPUT/.demixers_prepare/<split>/`` through a
   temporary name and ``os.replace``. The manifest (``manifest.json``, also replaced atomically)
   records every finished shard, so an interrupted run resumes where it stopped;
3. *assemble*: the shards become a `DatasetDict` saved with ``save_to_disk`` in ``OUTPUT`` (and
   optionally pushed to the Hub).

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
import shutil
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .audio import PCM, encode_pcm
from .corpora import Corpus, Item, Layout, get_corpus, length_problems

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
WORK_DIR_NAME = ".demixers_prepare"
MANIFEST_NAME = "manifest.json"
REPORT_NAME = "invalid_items.txt"
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
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, ensure_ascii=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


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
# the driver


def _check_output(output: Path, manifest: dict[str, Any] | None, overwrite: bool) -> None:
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output} exists and is not a folder")
    if manifest is not None or not output.exists():
        return
    if all(entry.name == WORK_DIR_NAME for entry in output.iterdir()):
        return  # empty, or only the work folder of an earlier run (e.g. with an unreadable manifest)
    is_dataset = (output / "dataset_dict.json").is_file() or (output / "state.json").is_file()
    if overwrite and is_dataset:
        shutil.rmtree(output)
        return
    raise FileExistsError(
        f"--output {output} is not empty and was not written by `demixers prepare`; "
        + ("pass --overwrite to replace the dataset saved there" if is_dataset else "pick an empty folder")
    )


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
    push_to_hub: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    progress: bool | None = None,
    **options: Any,
):
    """Prepare ``corpus`` found in ``root`` as a `datasets.DatasetDict` saved in ``output``.

    ``options`` are the corpus options (e.g. ``mix_type="mix_both"``, ``sample_rate=8000``, ``n_src=2``
    for LibriMix; see ``demixers prepare <corpus> --help``). Re-running with the same arguments
    resumes an interrupted run, or just returns the finished dataset. Returns the `DatasetDict`
    loaded back from ``output``.
    """
    from datasets import Dataset, DatasetDict, concatenate_datasets, load_from_disk
    from tqdm.auto import tqdm

    spec = get_corpus(corpus) if isinstance(corpus, str) else corpus
    options = spec.resolve_options(options)
    spec.check_requirements()
    root = Path(root).expanduser().absolute()
    output = Path(output).expanduser().absolute()
    shard_size = int(shard_size or spec.default_shard_size)
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")

    layout = spec.discover(root, **options)
    for split, items in layout.splits.items():
        ids = [item.id for item in items]
        if len(set(ids)) != len(ids):
            duplicates = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"{spec.name}: duplicate ids in split {split}: {duplicates[:10]}")

    work = output / WORK_DIR_NAME
    manifest_path = work / MANIFEST_NAME
    manifest = _read_manifest(manifest_path)
    _check_output(output, manifest, overwrite)
    fingerprint = _hash(
        SCHEMA_VERSION, spec.name, str(root), options, _layout_summary(layout), sum_check, shard_size
    )
    if manifest is not None and manifest.get("fingerprint") != fingerprint:
        logger.warning("%s: the corpus or the options changed since the last run; starting over", output)
        shutil.rmtree(work, ignore_errors=True)
        manifest = None

    if (
        manifest is not None
        and manifest.get("state") == "complete"
        and (output / "dataset_dict.json").is_file()
    ):
        skipped = [tuple(entry) for entry in manifest.get("skipped", [])]
        if skipped and not skip_invalid:
            raise ValueError(
                f"{output} was prepared with --skip-invalid, which left out {len(skipped)} item(s):\n"
                + _format_items(skipped)
                + "\nfix them and re-run, or pass --skip-invalid to accept the dataset as it is"
            )
        if skipped:
            _warn_skipped(skipped, output)
        logger.info("%s is already prepared", output)
        result = load_from_disk(str(output))
        if push_to_hub:
            result.push_to_hub(push_to_hub, private=private, token=token)
        return result

    if manifest is None:
        manifest = {
            "version": SCHEMA_VERSION,
            "fingerprint": fingerprint,
            "corpus": spec.name,
            "root": str(root),
            "options": options,
            "layout": _layout_summary(layout),
            "state": "building",
            "splits": {},
        }
    work.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(manifest_path, manifest)

    # 1. header checks
    header = _header_problems(spec, layout, num_threads=min(32, 4 * num_workers))
    invalid = [(s, i, "; ".join(p)) for s, bad in header.items() for i, p in bad.items()]
    if invalid and not skip_invalid:
        _raise_invalid(invalid, spec, work)

    # 2. shards
    tasks: list[ShardTask] = []
    shard_files: dict[str, list[Path]] = {}
    skipped: list[tuple[str, str, str]] = list(invalid)
    for split, items in layout.splits.items():
        records = manifest["splits"].setdefault(split, {"num_items": len(items), "shards": {}})["shards"]
        shard_files[split] = []
        for index, start in enumerate(range(0, len(items), shard_size)):
            chunk = [item for item in items[start : start + shard_size] if item.id not in header[split]]
            shard_fingerprint = _hash(fingerprint, split, index, [item.id for item in chunk])
            path = work / split / f"shard-{index:05d}.arrow"
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
                    spec.name,
                    split,
                    index,
                    chunk,
                    layout,
                    str(path),
                    shard_fingerprint,
                    sum_check,
                    skip_invalid,
                )
            )
        for stale in [key for key in records if int(key) >= len(shard_files[split])]:
            del records[stale]

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

    if tasks:
        total_shards = sum(len(files) for files in shard_files.values())
        logger.info("%s: building %d of %d shard(s)", spec.name, len(tasks), total_shards)
        bar = tqdm(total=len(tasks), desc=f"prepare {spec.name}", unit="shard", disable=_disable(progress))
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

    if problems:
        _raise_invalid(sorted(problems) + invalid, spec, work)
    if skipped:
        _warn_skipped(skipped, output, work)

    # 3. assemble
    parts: dict[str, Any] = {}
    for split, files in shard_files.items():
        datasets = [Dataset.from_file(str(path)) for path in files]
        datasets = [d for d in datasets if len(d)]
        if not datasets:
            warnings.warn(
                f"{spec.name}: split {split} has no valid item and is left out", InvalidItemsWarning, 2
            )
            continue
        parts[split] = datasets[0] if len(datasets) == 1 else concatenate_datasets(datasets)
    if not parts:
        raise ValueError(f"{spec.name}: no valid item in {root}")
    dataset_dict = DatasetDict(parts)
    for dataset in dataset_dict.values():
        dataset.info.description = f"{layout.description}, prepared by demixers from {spec.name}"
    dataset_dict.save_to_disk(str(output))
    del dataset_dict, parts
    manifest["state"] = "complete"
    manifest["skipped"] = sorted(skipped)
    _write_json_atomic(manifest_path, manifest)
    if not keep_shards:
        for split in shard_files:
            shutil.rmtree(work / split, ignore_errors=True)
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
    "build_features",
    "build_row",
    "content_problems",
    "prepare_corpus",
]
