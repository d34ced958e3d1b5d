"""Training and validation data for the trainer, built on `demixers.datasets_scripts`.

Exact resume rests on two facts:

* an item of the training set is a pure function of ``(seed, epoch, index)``
  (`RandomSegmentDataset`, which draws from ``epoch_rng(seed, epoch, index)``);
* `ShardedBatchSampler` is a pure function of ``(seed, epoch, batch position)``: each epoch is a
  seeded permutation cut into *global* batches of ``batch_size * world_size`` indices, of which
  process ``rank`` takes the slice ``[rank * batch_size, (rank + 1) * batch_size)``, and it can start
  at any batch position.

So the position in the data is fully described by ``(epoch, batches consumed)``, which the trainer
derives from its step counter. It also makes ``N`` processes with batch ``B`` see exactly the samples
of one process with batch ``N * B``, in the same order.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

SAMPLER_STREAM = 0x5A3  # separates the sampler's random stream from the items' streams


def sampler_seed(seed: int, epoch: int) -> int:
    state = np.random.SeedSequence([int(seed), int(epoch), SAMPLER_STREAM]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 32 | int(state[1])


class ShardedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Seeded, resumable, sharded batch sampler (see the module doc)."""

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        seed: int,
        epoch: int = 0,
        world_size: int = 1,
        rank: int = 0,
        start_batch: int = 0,
        shuffle: bool = True,
    ) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"bad sampler geometry batch_size={batch_size} world_size={world_size} rank={rank}"
            )
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.world_size = int(world_size)
        self.rank = int(rank)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)
        self.shuffle = shuffle

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.world_size

    @property
    def batches_per_epoch(self) -> int:
        return self.num_items // self.global_batch_size

    def order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_items)
        generator = torch.Generator().manual_seed(sampler_seed(self.seed, self.epoch))
        return torch.randperm(self.num_items, generator=generator)

    def __len__(self) -> int:
        return max(self.batches_per_epoch - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.order()
        size = self.global_batch_size
        for position in range(self.start_batch, self.batches_per_epoch):
            global_batch = order[position * size : (position + 1) * size]
            yield global_batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size].tolist()


class CroppedDataset(torch.utils.data.Dataset):
    """Validation items (``mixture``/``sources``), centre-cropped to at most ``max_length`` samples."""

    def __init__(self, dataset: Any, max_length: int | None = None, max_items: int | None = None) -> None:
        self.dataset = dataset
        self.max_length = max_length
        self.count = len(dataset) if max_items is None else min(len(dataset), int(max_items))
        self.source_names = list(dataset.source_names)
        self.sampling_rate = dataset.sampling_rate

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.count:
            raise IndexError(index)
        if (
            self.max_length is not None
            and hasattr(self.dataset, "lengths")
            and hasattr(self.dataset, "load_segment")
        ):
            total = int(self.dataset.lengths[index])
            start = max((total - self.max_length) // 2, 0)
            mixture, sources = self.dataset.load_segment(index, start, self.max_length)
            return {
                "id": self.dataset.item_id(index),
                "mixture": torch.from_numpy(np.ascontiguousarray(mixture)),
                "sources": torch.from_numpy(np.ascontiguousarray(sources)),
            }
        item = self.dataset[index]
        if self.max_length is not None and item["mixture"].shape[-1] > self.max_length:
            start = (item["mixture"].shape[-1] - self.max_length) // 2
            item = dict(item)
            item["mixture"] = item["mixture"][..., start : start + self.max_length]
            item["sources"] = item["sources"][..., start : start + self.max_length]
        return item


def _load(data: dict[str, Any], split: str, sampling_rate: int, sources: Sequence[str] | None) -> Any:
    from ..datasets_scripts import load_separation_dataset

    options = dict(data.get("options") or {})
    options.pop("sources", None)
    if options.pop("streaming", False):
        raise ValueError(
            "data.options.streaming is not supported by the trainer: exact resume needs random access "
            "(prepare the corpus with `demixers prepare` and train from the prepared folder)"
        )
    return load_separation_dataset(
        data["dataset"], split, sampling_rate=sampling_rate, sources=sources, **options
    )


def resolve_sources(
    dataset_sources: Sequence[str], model_sources: Sequence[str], fixed_order: bool
) -> list[str] | None:
    """Which dataset columns feed which model output.

    Returns the list of columns to request (in the model's order) when the names match, ``None`` to
    keep the dataset's order; raises when the counts differ.
    """
    dataset_sources, model_sources = list(dataset_sources), list(model_sources)
    if len(dataset_sources) != len(model_sources):
        raise ValueError(
            f"the dataset has {len(dataset_sources)} target source(s) {dataset_sources} but the model "
            f"separates {len(model_sources)} {model_sources}; set data.sources to pick "
            f"{len(model_sources)} columns"
        )
    if set(dataset_sources) == set(model_sources):
        return model_sources if dataset_sources != model_sources else None
    if fixed_order:
        warnings.warn(
            f"dataset sources {dataset_sources} are fed to model outputs {model_sources} in this order "
            "(the loss is not permutation invariant)",
            stacklevel=2,
        )
    return None


def load_split(
    data: dict[str, Any], split: str, sampling_rate: int, model_sources: Sequence[str], fixed_order: bool
) -> Any:
    """``load_separation_dataset`` for one split, with the model's rate and source order."""
    requested = data.get("sources")
    dataset = _load(data, split, sampling_rate, requested)
    if requested is None:
        order = resolve_sources(dataset.source_names, model_sources, fixed_order)
        if order is not None:
            dataset = _load(data, split, sampling_rate, order)
    elif len(dataset.source_names) != len(model_sources):
        resolve_sources(dataset.source_names, model_sources, fixed_order)
    return dataset


def build_train_dataset(
    data: dict[str, Any], seed: int, sampling_rate: int, model_sources: Sequence[str], fixed_order: bool
) -> Any:
    from ..datasets_scripts import Augment, DynamicMixing, RandomSegmentDataset

    base = load_split(data, data["train_split"], sampling_rate, model_sources, fixed_order)
    if data["dynamic_mixing"] and data["remix"]:
        raise ValueError("data.dynamic_mixing (speech) and data.remix (music) are exclusive")
    mixing: Any = None
    if data["dynamic_mixing"]:
        low, high = data["dynamic_mixing_gain_db"]
        mixing = DynamicMixing(gain_db=(float(low), float(high)), num_sources=len(model_sources))
    elif data["remix"]:
        mixing = "remix"
    augment = None
    if data["gain_db_range"] is not None or data["channel_swap_prob"] or data["sign_flip_prob"]:
        gain = data["gain_db_range"]
        augment = Augment(
            gain_db=None if gain is None else (float(gain[0]), float(gain[1])),
            channel_swap_prob=float(data["channel_swap_prob"]),
            sign_flip_prob=float(data["sign_flip_prob"]),
        )
    if data["segment_seconds"] is None:
        raise ValueError("data.segment_seconds is required for training (fixed-length random segments)")
    return RandomSegmentDataset(
        base,
        segment_seconds=float(data["segment_seconds"]),
        num_segments=data["samples_per_epoch"],
        seed=seed,
        drop_short=bool(data["drop_short"]),
        mixing=mixing,
        augment=augment,
    )


def build_eval_dataset(
    data: dict[str, Any], sampling_rate: int, model_sources: Sequence[str], fixed_order: bool
) -> CroppedDataset | None:
    if not data["eval_split"]:
        return None
    base = load_split(data, data["eval_split"], sampling_rate, model_sources, fixed_order)
    max_length = None if data["eval_max_seconds"] is None else round(data["eval_max_seconds"] * sampling_rate)
    return CroppedDataset(base, max_length=max_length, max_items=data["max_eval_samples"])


__all__ = [
    "CroppedDataset",
    "ShardedBatchSampler",
    "build_eval_dataset",
    "build_train_dataset",
    "load_split",
    "resolve_sources",
    "sampler_seed",
]
