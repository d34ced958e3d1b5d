"""Separation corpora as Hub datasets: preparing, loading, segments and training-time augmentation.

* `prepare_corpus` (``demixers prepare``) turns LibriMix, WHAM!, WHAMR!, wsj0-2mix/3mix, MUSDB18(-HQ)
  and MIR-1K folders into a `datasets.DatasetDict` (one row per mixture, lossless FLAC/WAV bytes);
* `load_separation_dataset` returns a torch dataset from a Hub repo, a saved folder or a raw corpus;
* `RandomSegmentDataset`, `DynamicMixing`, `Augment` and `collate_separation` build training batches
  ``{"input_values", "labels", "padding_mask"}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils.lazy import make_lazy

if TYPE_CHECKING:
    from .augment import Augment, DynamicMixing, collate_separation, remix_batch
    from .corpora import CORPORA, Corpus, Item, Layout, detect_corpus, get_corpus, register_corpus
    from .loading import IterableSeparationDataset, SeparationDataset, load_separation_dataset
    from .prepare import InvalidItemsWarning, prepare_corpus
    from .segments import RandomSegmentDataset, SegmentIndex, StreamingSegmentDataset, epoch_rng

# Public names load on first access: `demixers --help` imports this package's cli module.
make_lazy(
    __name__,
    {
        "Augment": ".augment",
        "DynamicMixing": ".augment",
        "collate_separation": ".augment",
        "remix_batch": ".augment",
        "CORPORA": ".corpora",
        "Corpus": ".corpora",
        "Item": ".corpora",
        "Layout": ".corpora",
        "detect_corpus": ".corpora",
        "get_corpus": ".corpora",
        "register_corpus": ".corpora",
        "IterableSeparationDataset": ".loading",
        "SeparationDataset": ".loading",
        "load_separation_dataset": ".loading",
        "InvalidItemsWarning": ".prepare",
        "prepare_corpus": ".prepare",
        "RandomSegmentDataset": ".segments",
        "SegmentIndex": ".segments",
        "StreamingSegmentDataset": ".segments",
        "epoch_rng": ".segments",
    },
)

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
