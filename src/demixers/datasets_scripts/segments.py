"""Random fixed-length training segments, uniform over every valid start of the whole dataset.

`SegmentIndex` numbers all valid ``(item, start)`` pairs of a dataset consecutively (item ``i``
contributes ``length_i - segment + 1`` starts), so drawing one global number uniformly gives every
start position of every item the same probability -- long items are picked proportionally more
often, unlike "pick a file, then a position".

`RandomSegmentDataset` draws item ``k`` of epoch ``e`` from ``np.random.default_rng([seed, e, k])``:
the same ``(seed, epoch, index)`` always gives the same segment, whatever the worker or the order of
access, and no global RNG is touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from .augment import Augment, DynamicMixing, _pad
from .loading import IterableSeparationDataset, SeparationDataset


def epoch_rng(seed: int, epoch: int, *indices: int) -> np.random.Generator:
    """A generator that depends only on ``(seed, epoch, *indices)``."""
    entropy = [int(seed), int(epoch), *(int(i) for i in indices)]
    if any(value < 0 for value in entropy):
        raise ValueError(f"seed, epoch and indices must be non-negative, got {entropy}")
    return np.random.default_rng(np.random.SeedSequence(entropy))


class SegmentIndex:
    """All valid segment starts of a dataset, numbered ``0 .. total - 1``.

    Items shorter than the segment contribute one start (position 0; the segment is zero-padded)
    unless ``drop_short=True``, which leaves them out.
    """

    def __init__(self, lengths: Any, segment_length: int, *, drop_short: bool = False) -> None:
        if segment_length < 1:
            raise ValueError(f"segment_length must be positive, got {segment_length}")
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.segment_length = int(segment_length)
        counts = np.maximum(self.lengths - self.segment_length + 1, 0)
        if not drop_short:
            counts = np.where((self.lengths > 0) & (counts == 0), 1, counts)
        self.counts = counts
        self.ends = np.cumsum(counts)
        self.total = int(self.ends[-1]) if len(self.ends) else 0
        if self.total == 0:
            raise ValueError(
                f"no item is at least {segment_length} samples long (longest: "
                f"{int(self.lengths.max(initial=0))}); use a shorter segment or drop_short=False"
            )

    def locate(self, position: Any) -> tuple[Any, Any]:
        """Global start number(s) -> ``(item, start)``."""
        position = np.asarray(position, dtype=np.int64)
        if np.any((position < 0) | (position >= self.total)):
            raise IndexError(f"segment position out of range [0, {self.total})")
        item = np.searchsorted(self.ends, position, side="right")
        start = position - np.where(item > 0, self.ends[np.maximum(item - 1, 0)], 0)
        if item.ndim == 0:
            return int(item), int(start)
        return item, start

    def sample(self, rng: np.random.Generator, size: int | None = None) -> tuple[Any, Any]:
        """Uniform draw(s) over every valid start."""
        return self.locate(rng.integers(0, self.total, size=size))


class RandomSegmentDataset(torch.utils.data.Dataset):
    """Fixed-length training items ``{"input_values" (C, T), "labels" (S, C, T), "length", "id"}``.

    ``mixing`` chooses how an item is made:

    * ``None``: a segment of an original mixture and its sources, start drawn uniformly over the
      whole dataset (`SegmentIndex`);
    * ``"remix"`` (music, demucs' remix augmentation): every source comes from its own independent
      uniform draw -- another track, another position -- and the mixture is their sum;
    * a `DynamicMixing` (speech): sources of different speakers re-mixed with random gains.

    ``augment`` (an `Augment`) is applied afterwards; per source when the mixture is rebuilt.
    ``num_segments`` is the epoch length (default: total duration / segment length).
    Call `set_epoch` at the start of every epoch (e.g. from a ``TrainerCallback.on_epoch_begin``):
    without it every epoch draws the same segments (in the sampler's new order).
    """

    def __init__(
        self,
        dataset: SeparationDataset,
        segment_length: int | None = None,
        *,
        segment_seconds: float | None = None,
        num_segments: int | None = None,
        seed: int = 0,
        epoch: int = 0,
        drop_short: bool = False,
        mixing: str | DynamicMixing | None = None,
        augment: Augment | None = None,
    ) -> None:
        if (segment_length is None) == (segment_seconds is None):
            raise ValueError("pass exactly one of segment_length (samples) and segment_seconds")
        if segment_length is None:
            if not dataset.sampling_rate:
                raise ValueError("segment_seconds needs a dataset with a known sampling rate")
            segment_length = round(segment_seconds * dataset.sampling_rate)
        if mixing not in (None, "remix") and not isinstance(mixing, DynamicMixing):
            raise ValueError(f"mixing must be None, 'remix' or a DynamicMixing, got {mixing!r}")
        self.dataset = dataset
        self.segment_length = int(segment_length)
        self.index = SegmentIndex(dataset.lengths, self.segment_length, drop_short=drop_short)
        total_samples = int(dataset.lengths.sum())
        self.num_segments = int(num_segments or max(1, total_samples // self.segment_length))
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.mixing = mixing
        self.augment = augment
        self.source_names = list(dataset.source_names)
        self.sampling_rate = dataset.sampling_rate

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_segments

    def draw(self, index: int) -> dict[str, Any]:
        """Item ``index`` of the current epoch as numpy arrays (see `__getitem__`)."""
        if not 0 <= index < self.num_segments:
            raise IndexError(f"index {index} out of range for {self.num_segments} segments")
        rng = epoch_rng(self.seed, self.epoch, index)
        length = self.segment_length
        info: dict[str, Any] = {}
        if self.mixing is None:
            item, start = self.index.sample(rng)
            mixture, sources = self.dataset.load_segment(item, start, length)
            valid = mixture.shape[-1]
            mixture, sources = _pad(mixture, length), _pad(sources, length)
            item_id = f"{self.dataset.item_id(item)}@{start}"
            per_source = False
        elif self.mixing == "remix":
            parts, names, valid = [], [], 0
            for column in self.source_names:
                item, start = self.index.sample(rng)
                audio = self.dataset.load_audio(item, column, start, length)
                valid = max(valid, audio.shape[-1])
                parts.append(_pad(audio, length))
                names.append(f"{column}={self.dataset.item_id(item)}@{start}")
            sources = np.stack(parts)
            mixture = sources.sum(axis=0)
            item_id = ";".join(names)
            per_source = True
        else:
            mixture, sources, info = self.mixing(self.dataset, rng, length)
            valid = info.pop("length")
            item_id = "+".join(f"{self.dataset.item_id(r)}" for r in info["rows"])
            per_source = True
        if self.augment is not None and not self.augment.is_identity:
            mixture, sources = self.augment(rng, mixture, sources, per_source=per_source)
        return {
            "id": item_id,
            "input_values": mixture.astype(np.float32, copy=False),
            "labels": sources.astype(np.float32, copy=False),
            "length": int(valid),
            **info,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.draw(index)
        item["input_values"] = torch.from_numpy(np.ascontiguousarray(item["input_values"]))
        item["labels"] = torch.from_numpy(np.ascontiguousarray(item["labels"]))
        return item


class StreamingSegmentDataset(torch.utils.data.IterableDataset):
    """Random segments from a streamed split (no random access, so no global index).

    Each streamed item yields ``segments_per_item`` segments, or, by default, about one per
    ``segment_length`` samples it holds (so starts stay close to uniform over the stream), at
    uniform positions drawn from ``epoch_rng(seed, epoch, worker, row)``.
    """

    def __init__(
        self,
        dataset: IterableSeparationDataset,
        segment_length: int,
        *,
        segments_per_item: int | None = None,
        seed: int = 0,
        epoch: int = 0,
        augment: Augment | None = None,
    ) -> None:
        if segment_length < 1:
            raise ValueError(f"segment_length must be positive, got {segment_length}")
        self.dataset = dataset
        self.segment_length = int(segment_length)
        self.segments_per_item = segments_per_item
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.augment = augment

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        length = self.segment_length
        for row, item in enumerate(self.dataset):
            rng = epoch_rng(self.seed, self.epoch, worker, row)
            mixture, sources = item["mixture"].numpy(), item["sources"].numpy()
            total = mixture.shape[-1]
            count = self.segments_per_item or max(1, round(total / length))
            for start in rng.integers(0, max(total - length, 0) + 1, size=count):
                segment_mixture = _pad(mixture[:, start : start + length], length)
                segment_sources = _pad(sources[..., start : start + length], length)
                if self.augment is not None and not self.augment.is_identity:
                    segment_mixture, segment_sources = self.augment(rng, segment_mixture, segment_sources)
                yield {
                    "id": f"{item['id']}@{int(start)}",
                    "input_values": torch.from_numpy(np.ascontiguousarray(segment_mixture, dtype=np.float32)),
                    "labels": torch.from_numpy(np.ascontiguousarray(segment_sources, dtype=np.float32)),
                    "length": int(min(length, total - start)),
                }
