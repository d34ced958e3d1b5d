"""Separation corpora as Hub datasets: preparing, loading, segments and training-time augmentation.

* `prepare_corpus` (``demixers prepare``) turns LibriMix, WHAM!, WHAMR!, wsj0-2mix/3mix, MUSDB18(-HQ)
  and MIR-1K folders into a `datasets.DatasetDict` (one row per mixture, lossless FLAC/WAV bytes);
* `load_separation_dataset` returns a torch dataset from a Hub repo, a saved folder or a raw corpus;
* `RandomSegmentDataset`, `DynamicMixing`, `Augment` and `collate_separation` build training batches
  ``{"input_values", "labels", "padding_mask"}``.
"""

from __future__ import annotations

from .augment import Augment, DynamicMixing, collate_separation, remix_batch
from .corpora import CORPORA, Corpus, Item, Layout, detect_corpus, get_corpus, register_corpus
from .loading import IterableSeparationDataset, SeparationDataset, load_separation_dataset
from .prepare import InvalidItemsWarning, prepare_corpus
from .segments import RandomSegmentDataset, SegmentIndex, StreamingSegmentDataset, epoch_rng

__all__ = [
    "CORPORA",
    "Augment",
    "Corpus",
    "DynamicMixing",
    "InvalidItemsWarning",
    "Item",
    "IterableSeparationDataset",
    "Layout",
    "RandomSegmentDataset",
    "SegmentIndex",
    "SeparationDataset",
    "StreamingSegmentDataset",
    "collate_separation",
    "detect_corpus",
    "epoch_rng",
    "get_corpus",
    "load_separation_dataset",
    "prepare_corpus",
    "register_corpus",
    "remix_batch",
]
