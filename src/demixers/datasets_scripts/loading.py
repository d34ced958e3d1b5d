"""`load_separation_dataset`: a prepared separation corpus as a torch dataset.

Items are dicts::

    {"id": str,
     "mixture": float32 tensor (channels, time),
     "sources": float32 tensor (num_sources, channels, time),
     "sampling_rate": int,
     "source_names": list[str]}

Audio is decoded with soundfile from the bytes stored in the dataset (no torchcodec needed) and
resampled with soxr when ``sampling_rate`` is given. By convention the ``noise`` column of the
noisy speech corpora is not a target: it is left out of ``sources`` unless asked for by name.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..audio import resample
from .audio import bytes_info, decode_bytes

MIXTURE_COLUMN = "mixture"
AUXILIARY_COLUMNS = ("noise",)


def _audio_columns(features: Any) -> list[str]:
    from datasets import Audio

    if features is None:
        return []
    return [name for name, feature in features.items() if isinstance(feature, Audio)]


def _default_sources(audio_columns: Sequence[str], mixture_column: str) -> list[str]:
    return [c for c in audio_columns if c != mixture_column and c not in AUXILIARY_COLUMNS]


def _undecoded(dataset: Any, audio_columns: Sequence[str]) -> Any:
    """Cast Audio columns to ``decode=False`` so rows hold the stored bytes."""
    from datasets import Audio

    for column in audio_columns:
        feature = dataset.features[column]
        if getattr(feature, "decode", True):
            dataset = dataset.cast_column(column, Audio(sampling_rate=feature.sampling_rate, decode=False))
    return dataset


def _audio_value(value: Any, name: str) -> tuple[np.ndarray, int] | bytes:
    """The stored bytes of a cell, or ``(array, rate)`` if a decoder already ran."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("array") is not None:
            array = np.asarray(value["array"], dtype=np.float32)
            return (array[None] if array.ndim == 1 else array), int(value["sampling_rate"])
        if value.get("path"):
            with open(value["path"], "rb") as handle:
                return handle.read()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise ValueError(f"{name}: no audio bytes in this cell ({type(value).__name__})")


def decode_cell(
    value: Any,
    name: str,
    target_rate: int | None = None,
    start: int = 0,
    length: int | None = None,
) -> tuple[np.ndarray, int]:
    """Decode one Audio cell to float32 ``(channels, time)``, optionally resampled and cropped.

    ``start``/``length`` are in samples at the output rate. Frames past the end are not padded.
    """
    stored = _audio_value(value, name)
    stop = None if length is None else start + length
    if isinstance(stored, tuple):
        array, rate = stored
        if target_rate and target_rate != rate:
            array, rate = resample(array, rate, target_rate), target_rate
        return np.ascontiguousarray(array[:, start:stop]), rate
    if not target_rate or bytes_info(stored)[2] == target_rate:
        return decode_bytes(stored, start, stop, name)  # seeks: only the frames asked for are decoded
    array, rate = decode_bytes(stored, name=name)
    array = resample(array, rate, target_rate)
    return np.ascontiguousarray(array[:, start:stop]), target_rate


def _stack_sources(sources: list[np.ndarray], names: Sequence[str], item_id: str) -> np.ndarray:
    lengths = {s.shape[-1] for s in sources}
    channels = {s.shape[0] for s in sources}
    if len(channels) > 1:
        raise ValueError(f"{item_id}: sources {list(names)} have different channel counts")
    if len(lengths) > 1:
        shortest = min(lengths)
        sources = [s[:, :shortest] for s in sources]
    return np.stack(sources)


class SeparationDataset(torch.utils.data.Dataset):
    """Map-style view of a prepared split; ``dataset[i]`` decodes row ``i``."""

    def __init__(
        self,
        hf_dataset: Any,
        *,
        sources: Sequence[str] | None = None,
        mixture_column: str = MIXTURE_COLUMN,
        sampling_rate: int | None = None,
    ) -> None:
        audio_columns = _audio_columns(hf_dataset.features)
        if mixture_column not in audio_columns:
            raise ValueError(
                f"the dataset has no audio column {mixture_column!r} (audio columns: {audio_columns})"
            )
        self.source_names = (
            list(sources) if sources is not None else _default_sources(audio_columns, mixture_column)
        )
        missing = [s for s in self.source_names if s not in audio_columns]
        if missing or not self.source_names:
            raise ValueError(
                f"unknown source column(s) {missing or '(none)'}; audio columns: {audio_columns}"
            )
        self.mixture_column = mixture_column
        self.hf_dataset = _undecoded(hf_dataset, audio_columns)
        self.native_sampling_rate = hf_dataset.features[mixture_column].sampling_rate
        self.target_sampling_rate = sampling_rate
        self._columns = {c: self.hf_dataset.select_columns([c]) for c in [mixture_column, *self.source_names]}
        self._lengths: np.ndarray | None = None
        self._speakers: list[list[str]] | None = None
        self._tempdir: Any = None  # keeps a temporary preparation alive

    @property
    def sampling_rate(self) -> int | None:
        return self.target_sampling_rate or self.native_sampling_rate

    def __len__(self) -> int:
        return len(self.hf_dataset)

    def item_id(self, index: int) -> str:
        return str(self._column_value("id", index)) if "id" in self.hf_dataset.column_names else str(index)

    def _column_value(self, column: str, index: int) -> Any:
        if column not in self._columns:
            self._columns[column] = self.hf_dataset.select_columns([column])
        return self._columns[column][int(index)][column]

    @property
    def lengths(self) -> np.ndarray:
        """Samples per item at the output rate (from ``num_samples``, else from the audio headers)."""
        if self._lengths is None:
            if "num_samples" in self.hf_dataset.column_names:
                native = np.asarray(list(self.hf_dataset["num_samples"]), dtype=np.int64)
                rate = self.native_sampling_rate
            else:
                infos = [
                    bytes_info(_audio_value(self._column_value(self.mixture_column, i), "mixture"))
                    for i in range(len(self))
                ]
                native = np.asarray([frames for frames, _, _ in infos], dtype=np.int64)
                rate = infos[0][2] if infos else None
            if self.target_sampling_rate and rate and self.target_sampling_rate != rate:
                native = (native * self.target_sampling_rate) // rate
            self._lengths = native
        return self._lengths

    def speaker_ids(self, index: int) -> list[str] | None:
        """Speaker id of each (speech) source of row ``index``, when the corpus has them."""
        if "speaker_ids" not in self.hf_dataset.column_names:
            return None
        if self._speakers is None:
            self._speakers = [list(s or []) for s in self.hf_dataset["speaker_ids"]]
        speakers = self._speakers[int(index)]
        return speakers or None

    def load_audio(self, index: int, column: str, start: int = 0, length: int | None = None) -> np.ndarray:
        """One column of row ``index`` as float32 ``(channels, time)`` at the output rate."""
        array, _ = decode_cell(
            self._column_value(column, index),
            f"{self.item_id(index)}/{column}",
            self.target_sampling_rate,
            start,
            length,
        )
        return array

    def load_segment(
        self, index: int, start: int = 0, length: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(mixture (C, T), sources (S, C, T))`` of row ``index``, frames ``[start, start+length)``."""
        mixture = self.load_audio(index, self.mixture_column, start, length)
        sources = [self.load_audio(index, column, start, length) for column in self.source_names]
        sources_array = _stack_sources(sources, self.source_names, self.item_id(index))
        shortest = min(mixture.shape[-1], sources_array.shape[-1])
        return mixture[:, :shortest], sources_array[..., :shortest]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        mixture, sources = self.load_segment(index)
        return {
            "id": self.item_id(index),
            "mixture": torch.from_numpy(mixture),
            "sources": torch.from_numpy(sources),
            "sampling_rate": self.sampling_rate,
            "source_names": list(self.source_names),
        }


class IterableSeparationDataset(torch.utils.data.IterableDataset):
    """Streaming view of a split (``datasets`` streaming); decodes rows as they arrive."""

    def __init__(
        self,
        hf_dataset: Any,
        *,
        sources: Sequence[str] | None = None,
        mixture_column: str = MIXTURE_COLUMN,
        sampling_rate: int | None = None,
    ) -> None:
        features = hf_dataset.features
        audio_columns = _audio_columns(features)
        if features is not None and mixture_column not in audio_columns:
            raise ValueError(
                f"the dataset has no audio column {mixture_column!r} (audio columns: {audio_columns})"
            )
        if sources is None:
            if features is None:
                raise ValueError("this stream has no known features: pass sources=[...] explicitly")
            sources = _default_sources(audio_columns, mixture_column)
        self.source_names = list(sources)
        self.mixture_column = mixture_column
        self.hf_dataset = _undecoded(hf_dataset, audio_columns) if features else hf_dataset
        self.native_sampling_rate = features[mixture_column].sampling_rate if features else None
        self.target_sampling_rate = sampling_rate

    @property
    def sampling_rate(self) -> int | None:
        return self.target_sampling_rate or self.native_sampling_rate

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.hf_dataset, "set_epoch"):
            self.hf_dataset.set_epoch(epoch)

    def decode_row(self, row: dict[str, Any]) -> dict[str, Any]:
        item_id = str(row.get("id", ""))
        mixture, rate = decode_cell(row[self.mixture_column], f"{item_id}/mixture", self.target_sampling_rate)
        sources = [
            decode_cell(row[c], f"{item_id}/{c}", self.target_sampling_rate)[0] for c in self.source_names
        ]
        sources_array = _stack_sources(sources, self.source_names, item_id)
        shortest = min(mixture.shape[-1], sources_array.shape[-1])
        return {
            "id": item_id,
            "mixture": torch.from_numpy(np.ascontiguousarray(mixture[:, :shortest])),
            "sources": torch.from_numpy(np.ascontiguousarray(sources_array[..., :shortest])),
            "sampling_rate": rate,
            "source_names": list(self.source_names),
            **({"speaker_ids": list(row["speaker_ids"])} if row.get("speaker_ids") else {}),
        }

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for row in self.hf_dataset:
            yield self.decode_row(row)


def _is_saved_dataset(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _select_split(dataset: Any, split: str | None, where: str) -> Any:
    from datasets import DatasetDict

    if isinstance(dataset, DatasetDict):
        if split is None:
            if len(dataset) == 1:
                return next(iter(dataset.values()))
            raise ValueError(f"{where} has splits {list(dataset)}: pass split=...")
        if split not in dataset:
            raise ValueError(f"{where} has no split {split!r} (splits: {list(dataset)})")
        return dataset[split]
    return dataset


def _prepared_cache_dir(root: Path, corpus: str, options: dict[str, Any]) -> Path:
    import datasets.config

    key = hashlib.sha256(repr((str(root.resolve()), corpus, sorted(options.items()))).encode()).hexdigest()[
        :16
    ]
    return Path(datasets.config.HF_DATASETS_CACHE) / "demixers_prepared" / f"{corpus}-{key}"


def load_separation_dataset(
    name_or_path: str | os.PathLike[str],
    split: str | None = None,
    *,
    sampling_rate: int | None = None,
    streaming: bool = False,
    sources: Sequence[str] | None = None,
    mixture_column: str = MIXTURE_COLUMN,
    corpus: str | None = None,
    prepared_dir: str | os.PathLike[str] | None = None,
    skip_invalid: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | None = None,
    **corpus_options: Any,
) -> SeparationDataset | IterableSeparationDataset:
    """Load a separation dataset for training or evaluation.

    ``name_or_path`` is a Hub dataset repo id (``"org/Libri2Mix_8k"``), a folder written by
    ``save_to_disk`` / ``demixers prepare``, or a raw corpus folder in one of the layouts
    ``demixers prepare`` knows (detected automatically, or named with ``corpus=``; it is prepared once
    into ``prepared_dir``, by default a folder in the ``datasets`` cache, and reused afterwards).

    ``sampling_rate`` resamples on the fly; ``streaming=True`` streams rows instead of downloading the
    whole split (for a local folder, rows are read lazily from disk); ``sources`` picks the target
    columns (default: every audio column but ``mixture`` and ``noise``).
    """
    from datasets import load_dataset, load_from_disk

    wrapper_kwargs = {"sources": sources, "mixture_column": mixture_column, "sampling_rate": sampling_rate}
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_dir():
        if _is_saved_dataset(path):
            if corpus_options or corpus:
                raise TypeError(
                    f"{path} is already prepared; corpus options {sorted(corpus_options)} do not apply"
                )
            dataset = _select_split(load_from_disk(str(path)), split, str(path))
        else:
            from .corpora import detect_corpus, get_corpus
            from .prepare import prepare_corpus

            spec = get_corpus(corpus) if corpus else detect_corpus(path)
            if spec is None:
                raise ValueError(
                    f"{path} is neither a saved dataset nor a corpus layout demixers knows; "
                    "pass corpus=... (see `demixers prepare --help`)"
                )
            options = spec.resolve_options(corpus_options)
            target = Path(prepared_dir) if prepared_dir else _prepared_cache_dir(path, spec.name, options)
            # the automatic cache folder is ours: rebuilt when the corpus changed, as before; a folder
            # the caller named is theirs, so a dataset with other settings there is an error instead
            prepared = prepare_corpus(
                spec,
                path,
                target,
                skip_invalid=skip_invalid,
                overwrite=not prepared_dir,
                progress=False,
                **options,
            )
            dataset = _select_split(prepared, split, str(path))
        if streaming:
            return IterableSeparationDataset(dataset.to_iterable_dataset(), **wrapper_kwargs)
        return SeparationDataset(dataset, **wrapper_kwargs)
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; expected a dataset folder or a Hub repo id")
    if corpus_options or corpus:
        raise TypeError(f"corpus options {sorted(corpus_options)} only apply to raw corpus folders")
    dataset = load_dataset(
        os.fspath(name_or_path),
        split=split,
        streaming=streaming,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
    )
    dataset = _select_split(dataset, split, os.fspath(name_or_path))
    if streaming:
        return IterableSeparationDataset(dataset, **wrapper_kwargs)
    return SeparationDataset(dataset, **wrapper_kwargs)
