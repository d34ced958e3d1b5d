"""``demixers separate --dataset``: a dataset's rows in, a dataset with one column per stem out.

The input is a dataset prepared by ``demixers prepare`` (its ``mixture`` column), or any dataset with
an ``Audio`` column (a ``save_to_disk`` folder, a Hub id or a local data folder ``datasets`` loads).
Audio is read from the stored bytes (``Audio(decode=False)``, decoded with soundfile: no
torchcodec needed) and every stem is stored the same way, as bytes of a lossless file.

While the job runs each finished row's stems are files under
``DIR/.demixers_separate/rows/<split>/<row>/`` (a folder written under a temporary name and renamed
into place), recorded in the job manifest like files are; rows are sharded over the processes by
their encoded size (the duration for one codec, read from Arrow's offsets without loading any audio).
At the end rank 0 assembles the new split (the input's columns plus the stem columns, rows that
failed left out and reported) in a staging folder and swaps it into ``DIR`` (other splits already
there are kept), then optionally pushes it to the Hub.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .separate_job import WORK_DIR_NAME

ROWS_DIR_NAME = "rows"
MIXTURE_COLUMN = "mixture"


def open_split(name_or_path: str, split: str | None) -> tuple[Any, str]:
    """The ``split`` of a dataset as a `datasets.Dataset` whose Audio columns hold bytes (not decoded),
    and the split's name (the only split when ``split`` is None)."""
    from datasets import Audio, DatasetDict, load_dataset, load_from_disk

    path = Path(name_or_path).expanduser()
    if path.is_dir() and ((path / "dataset_dict.json").is_file() or (path / "state.json").is_file()):
        dataset = load_from_disk(str(path))
    elif path.exists() and not path.is_dir():
        raise NotADirectoryError(f"--dataset {name_or_path}: a file; expected a dataset folder or a Hub id")
    else:
        dataset = load_dataset(str(name_or_path), split=split) if split else load_dataset(str(name_or_path))
    if isinstance(dataset, DatasetDict):
        if split is None:
            if len(dataset) != 1:
                raise ValueError(f"--dataset {name_or_path} has splits {list(dataset)}: pass --split")
            split = next(iter(dataset))
        if split not in dataset:
            raise ValueError(f"--dataset {name_or_path} has no split {split!r} (splits: {list(dataset)})")
        dataset = dataset[split]
    name = split or str(dataset.split or "train")
    for column, feature in dataset.features.items():
        if isinstance(feature, Audio) and feature.decode:
            dataset = dataset.cast_column(column, Audio(sampling_rate=feature.sampling_rate, decode=False))
    return dataset, name


def audio_column(dataset: Any, requested: str | None) -> str:
    """The column to separate: ``requested``, else ``mixture``, else the only Audio column."""
    from datasets import Audio

    audio_columns = [name for name, feature in dataset.features.items() if isinstance(feature, Audio)]
    if requested is not None:
        if requested not in audio_columns:
            raise ValueError(
                f"--audio-column {requested}: not an Audio column of the dataset (Audio columns: "
                f"{', '.join(audio_columns) or 'none'}; all columns: {', '.join(dataset.column_names)})"
            )
        return requested
    if MIXTURE_COLUMN in audio_columns:
        return MIXTURE_COLUMN
    if len(audio_columns) == 1:
        return audio_columns[0]
    raise ValueError(
        f"--dataset: cannot tell which column to separate among the Audio columns "
        f"{audio_columns or 'none'}; pass --audio-column NAME"
    )


def stem_columns(dataset: Any, stems: Sequence[str], prefix: str) -> list[str]:
    """``prefix + stem`` for each stem; a ValueError when one is already a column of the dataset."""
    columns = [f"{prefix}{stem}" for stem in stems]
    taken = [column for column in columns if column in dataset.column_names]
    if taken:
        raise ValueError(
            f"--dataset: the stem column(s) {', '.join(taken)} already exist in the dataset; pass "
            "--stem-column-prefix (e.g. --stem-column-prefix separated_)"
        )
    return columns


def row_weights(dataset: Any, column: str) -> list[float]:
    """Each row's encoded size in bytes (a proxy of its duration), read from Arrow's offsets; rows
    stored by path weigh their file's size."""
    import pyarrow.compute as compute

    try:
        table = (
            dataset.flatten_indices().data if getattr(dataset, "_indices", None) is not None else dataset.data
        )
        cells = table.column(column)
        sizes = compute.binary_length(compute.struct_field(cells, "bytes"))
        weights = [float(size) if size is not None else 0.0 for size in sizes.to_pylist()]
    except (KeyError, TypeError, ValueError, NotImplementedError, AttributeError):
        return [1.0] * len(dataset)
    if any(weight == 0.0 for weight in weights):
        paths = dataset.select_columns([column])
        for index, weight in enumerate(weights):
            if weight == 0.0:
                path = (paths[index][column] or {}).get("path")
                with contextlib.suppress(OSError, TypeError):
                    weights[index] = float(os.path.getsize(path)) if path else 0.0
    return weights


def cell_bytes(cell: Any, name: str) -> bytes:
    """The stored bytes of an undecoded Audio cell (read from its path when only that is stored)."""
    if isinstance(cell, dict):
        if cell.get("bytes") is not None:
            return bytes(cell["bytes"])
        if cell.get("path"):
            try:
                with open(cell["path"], "rb") as handle:
                    return handle.read()
            except OSError as error:
                raise OSError(f"{name}: cannot read {cell['path']} ({error.strerror or error})") from None
    raise ValueError(f"{name}: no audio in this cell")


def encode_stems(stems: np.ndarray, sampling_rate: int, fmt: str, subtype: str, name: str) -> list[bytes]:
    """``(stems, channels, time)`` float32 -> one encoded file per stem. Integer formats get the
    file writer's rule: when any stem exceeds [-1, 1] all are scaled by one factor (a warning)."""
    import soundfile

    if subtype != "FLOAT":
        peak = float(np.max(np.abs(stems))) if stems.size else 0.0
        if peak > 1.0:
            factor = 1.0 / peak
            print(
                f"demixers separate: warning: {name}: stems peak at {peak:.3f}, beyond [-1, 1]; all stems of "
                f"this row were scaled together by {factor:.4f} to avoid clipping",
                file=sys.stderr,
            )
            stems = np.clip(stems * np.float32(factor), -1.0, 1.0)
    encoded = []
    for stem in stems:
        buffer = io.BytesIO()
        soundfile.write(
            buffer, np.ascontiguousarray(stem.T), sampling_rate, format=fmt.upper(), subtype=subtype
        )
        encoded.append(buffer.getvalue())
    return encoded


class RowStore:
    """The finished rows' stems under ``DIR/.demixers_separate/rows/<split>/``."""

    def __init__(self, output_dir: Path, split: str, stems: Sequence[str], ext: str) -> None:
        self.folder = Path(output_dir) / WORK_DIR_NAME / ROWS_DIR_NAME / split
        self.stems = list(stems)
        self.ext = ext

    def row_folder(self, index: int) -> Path:
        return self.folder / f"{index:010d}"

    def complete(self, index: int) -> bool:
        folder = self.row_folder(index)
        return all((folder / f"{stem}.{self.ext}").is_file() for stem in self.stems)

    def write(self, index: int, encoded: Sequence[bytes]) -> None:
        """All stems of a row, or none: written in a temporary folder that is renamed into place."""
        final = self.row_folder(index)
        temporary = final.with_name(f".{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        try:
            for stem, data in zip(self.stems, encoded, strict=True):
                with open(temporary / f"{stem}.{self.ext}", "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise

    def read(self, index: int, stem: str) -> bytes:
        return (self.row_folder(index) / f"{stem}.{self.ext}").read_bytes()

    def remove_stale(self) -> None:
        """Temporary row folders of processes that are gone (a killed run)."""
        from .separate_job import process_alive

        if not self.folder.is_dir():
            return
        for entry in self.folder.iterdir():
            name, _, pid = entry.name.rpartition(".tmp-")
            if name.startswith(".") and pid.isdigit() and not process_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


def assemble(
    dataset: Any,
    split: str,
    rows: Sequence[int],
    store: RowStore,
    columns: Sequence[str],
    output_dir: Path,
) -> Any:
    """The new ``split``: ``rows`` of ``dataset`` with one bytes column per stem, saved into
    ``output_dir`` beside the splits already there (swapped in from a staging folder)."""
    from datasets import Audio, DatasetDict, load_from_disk
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # the command prints its own lines; keep stderr for errors
    work = Path(output_dir) / WORK_DIR_NAME
    work.mkdir(parents=True, exist_ok=True)
    features = dataset.features.copy()
    for column in columns:
        features[column] = Audio(decode=False)
    selected = dataset.select(list(rows))

    def add_stems(batch: dict[str, list[Any]], positions: list[int]) -> dict[str, list[Any]]:
        for column, stem in zip(columns, store.stems, strict=True):
            batch[column] = [
                {"bytes": store.read(rows[position], stem), "path": f"{rows[position]}_{stem}.{store.ext}"}
                for position in positions
            ]
        return batch

    cache = work / f"assembled-{split}.arrow"
    result = selected.map(
        add_stems,
        with_indices=True,
        batched=True,
        batch_size=32,
        features=features,
        cache_file_name=str(cache),
        load_from_cache_file=False,
        desc=None,
    )
    others: dict[str, Any] = {}
    if (Path(output_dir) / "dataset_dict.json").is_file():
        existing = load_from_disk(str(output_dir))
        others = {name: part for name, part in existing.items() if name != split}
    staging = work / "staging"
    replaced = work / "replaced"
    for folder in (staging, replaced):
        shutil.rmtree(folder, ignore_errors=True)
    DatasetDict({**others, split: result}).save_to_disk(str(staging))
    replaced.mkdir()
    old = ["dataset_dict.json", *others, split]
    for name in old:
        if (Path(output_dir) / name).exists():
            os.replace(Path(output_dir) / name, replaced / name)
    for entry in sorted(staging.iterdir()):
        os.replace(entry, Path(output_dir) / entry.name)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(replaced, ignore_errors=True)
    with contextlib.suppress(OSError):
        cache.unlink()
    return load_from_disk(str(output_dir))
