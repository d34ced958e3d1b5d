"""Training-time augmentation: gains, channel swap, sign flip, dynamic mixing and remixing, collation.

Randomness always comes from a `numpy.random.Generator` handed in by the caller (see
`segments.epoch_rng`), never from a global RNG, so an item is a pure function of
``(seed, epoch, index)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


def _pad(audio: np.ndarray, length: int) -> np.ndarray:
    if audio.shape[-1] >= length:
        return audio[..., :length]
    padding = [(0, 0)] * (audio.ndim - 1) + [(0, length - audio.shape[-1])]
    return np.pad(audio, padding)


@dataclass
class Augment:
    """Random gain (dB range), channel swap and sign flip.

    With ``per_source=False`` one transform is applied to the mixture and to every source, so
    their relation is kept exactly. With ``per_source=True`` (remixing / dynamic mixing) each source
    gets its own transform and the mixture is rebuilt as the sum of the sources.
    """

    gain_db: tuple[float, float] | None = None
    channel_swap_prob: float = 0.0
    sign_flip_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.gain_db is not None:
            low, high = self.gain_db
            if low > high:
                raise ValueError(f"gain_db must be (low, high) with low <= high, got {self.gain_db}")
        for name in ("channel_swap_prob", "sign_flip_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")

    @property
    def is_identity(self) -> bool:
        return self.gain_db is None and self.channel_swap_prob == 0 and self.sign_flip_prob == 0

    def __call__(
        self,
        rng: np.random.Generator,
        mixture: np.ndarray,
        sources: np.ndarray,
        per_source: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``mixture (C, T)``, ``sources (S, C, T)`` -> augmented copies."""
        count = sources.shape[0] if per_source else 1
        # draw everything in a fixed order whatever is enabled, so options do not shift the stream
        gains_db = rng.uniform(*(self.gain_db or (0.0, 0.0)), size=count)
        swaps = rng.random(count) < self.channel_swap_prob
        flips = rng.random(count) < self.sign_flip_prob
        scales = (10.0 ** (gains_db / 20.0) * np.where(flips, -1.0, 1.0)).astype(np.float32)
        swaps &= sources.shape[1] > 1
        if per_source:
            sources = sources * scales[:, None, None]
            sources = np.stack([s[::-1] if swap else s for s, swap in zip(sources, swaps, strict=True)])
            return sources.sum(axis=0), np.ascontiguousarray(sources)
        mixture, sources = mixture * scales[0], sources * scales[0]
        if swaps[0]:
            mixture, sources = mixture[::-1], sources[:, ::-1]
        return np.ascontiguousarray(mixture), np.ascontiguousarray(sources)


class DynamicMixing:
    """Re-mix speech sources from different utterances and speakers (SpeechBrain/asteroid style).

    Each new mixture takes ``num_sources`` distinct speakers (drawn with probability proportional to
    their number of utterances; speakers come from the dataset's ``speaker_ids`` when it has them,
    otherwise every source recording counts as its own speaker), one random utterance of each, a
    uniformly placed segment of it, and a random gain drawn uniformly from ``gain_db``. With
    ``noise_gain_db`` set and a ``noise`` column present, a random noise segment is added to the
    mixture (it is not a target). If the sum would clip above ``peak``, everything is scaled down.
    """

    def __init__(
        self,
        gain_db: tuple[float, float] = (-5.0, 5.0),
        *,
        num_sources: int | None = None,
        use_speaker_ids: bool = True,
        noise_gain_db: tuple[float, float] | None = None,
        peak: float = 0.99,
    ) -> None:
        if gain_db[0] > gain_db[1]:
            raise ValueError(f"gain_db must be (low, high) with low <= high, got {gain_db}")
        self.gain_db = tuple(gain_db)
        self.num_sources = num_sources
        self.use_speaker_ids = use_speaker_ids
        self.noise_gain_db = noise_gain_db
        self.peak = peak
        self._pools: dict[int, tuple[list[tuple[int, str, str]], list[str], list[list[int]], np.ndarray]] = {}

    def pool(self, dataset: Any) -> tuple[list[tuple[int, str, str]], list[str], list[list[int]], np.ndarray]:
        """``(entries (row, column, speaker), speakers, entries per speaker, speaker weights)``."""
        key = id(dataset)
        if key not in self._pools:
            columns = [c for c in dataset.source_names if c != "noise"]
            entries: list[tuple[int, str, str]] = []
            for row in range(len(dataset)):
                speakers = dataset.speaker_ids(row) if self.use_speaker_ids else None
                for slot, column in enumerate(columns):
                    if speakers and slot < len(speakers) and speakers[slot]:
                        speaker = str(speakers[slot])
                    else:
                        speaker = f"#{row}/{column}"
                    entries.append((row, column, speaker))
            by_speaker: dict[str, list[int]] = {}
            for index, (_, _, speaker) in enumerate(entries):
                by_speaker.setdefault(speaker, []).append(index)
            speakers = sorted(by_speaker)
            groups = [by_speaker[s] for s in speakers]
            weights = np.asarray([len(g) for g in groups], dtype=np.float64)
            self._pools[key] = (entries, speakers, groups, weights / weights.sum())
        return self._pools[key]

    def __call__(
        self, dataset: Any, rng: np.random.Generator, length: int
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        entries, speakers, groups, weights = self.pool(dataset)
        count = self.num_sources or len([c for c in dataset.source_names if c != "noise"])
        if len(speakers) < count:
            raise ValueError(
                f"dynamic mixing needs {count} distinct speakers, the dataset has {len(speakers)}"
            )
        chosen = rng.choice(len(speakers), size=count, replace=False, p=weights)
        lengths = dataset.lengths
        sources, rows, valid = [], [], 0
        for speaker_index in chosen:
            group = groups[speaker_index]
            row, column, _ = entries[group[int(rng.integers(len(group)))]]
            start = int(rng.integers(0, max(int(lengths[row]) - length, 0) + 1))
            audio = dataset.load_audio(row, column, start, length)
            valid = max(valid, audio.shape[-1])
            gain = 10.0 ** (rng.uniform(*self.gain_db) / 20.0)
            sources.append(_pad(audio, length) * np.float32(gain))
            rows.append(row)
        sources_array = np.stack(sources)
        mixture = sources_array.sum(axis=0)
        if self.noise_gain_db is not None and "noise" in dataset.hf_dataset.column_names:
            row = int(rng.integers(len(dataset)))
            start = int(rng.integers(0, max(int(lengths[row]) - length, 0) + 1))
            noise = _pad(dataset.load_audio(row, "noise", start, length), length)
            mixture = mixture + noise * np.float32(10.0 ** (rng.uniform(*self.noise_gain_db) / 20.0))
        peak = float(np.abs(mixture).max(initial=0.0))
        if peak > self.peak:
            mixture, sources_array = mixture * (self.peak / peak), sources_array * (self.peak / peak)
        info = {"speaker_ids": [speakers[i] for i in chosen], "rows": rows, "length": valid}
        return mixture.astype(np.float32), sources_array.astype(np.float32), info


def remix_batch(
    labels: torch.Tensor,
    padding_mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Demucs' remix: shuffle each source independently across the batch, re-sum the mixtures.

    ``labels`` is ``(batch, sources, channels, time)``; returns ``(input_values, labels,
    padding_mask)`` where the new mask marks samples where any of the picked sources is valid.
    """
    batch, num_sources = labels.shape[:2]
    permutations = torch.stack(
        [torch.randperm(batch, generator=generator, device="cpu") for _ in range(num_sources)]
    ).to(labels.device)
    mixed = torch.stack([labels[permutations[s], s] for s in range(num_sources)], dim=1)
    mask = None
    if padding_mask is not None:
        mask = torch.stack([padding_mask[permutations[s]] for s in range(num_sources)]).amax(dim=0)
    return mixed.sum(dim=1), mixed, mask


def _as_tensor(value: Any, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.to(torch.float32)
    return torch.as_tensor(np.asarray(value), dtype=torch.float32)


def collate_separation(
    batch: Sequence[Mapping[str, Any]],
    *,
    pad_to_multiple_of: int | None = None,
    return_ids: bool = False,
) -> dict[str, Any]:
    """Pad a list of items to a batch ``{"input_values", "labels", "padding_mask"}``.

    Items are either training items (``input_values (C, T)``, ``labels (S, C, T)``, optional ``length``)
    or loaded items (``mixture``, ``sources``). ``padding_mask`` is int64 ``(batch, time)``: 1 on
    real samples, 0 on padding (the convention of `SourceSeparationFeatureExtractor`). Labels are
    left out when no item has them (inference batches).
    """
    if not batch:
        raise ValueError("collate_separation got an empty batch")
    inputs, labels, lengths = [], [], []
    for position, item in enumerate(batch):
        mixture = item["input_values"] if "input_values" in item else item.get("mixture")
        if mixture is None:
            raise KeyError(f"batch item {position} has neither `input_values` nor `mixture`")
        mixture = _as_tensor(mixture, "input_values")
        if mixture.ndim == 1:
            mixture = mixture[None]
        inputs.append(mixture)
        target = item["labels"] if "labels" in item else item.get("sources")
        labels.append(None if target is None else _as_tensor(target, "labels"))
        lengths.append(min(int(item.get("length", mixture.shape[-1])), mixture.shape[-1]))
    channels = {x.shape[0] for x in inputs}
    if len(channels) > 1:
        raise ValueError(f"items have different channel counts {sorted(channels)}")
    has_labels = [y is not None for y in labels]
    if any(has_labels) and not all(has_labels):
        raise ValueError("some batch items have labels and some do not")
    time = max(x.shape[-1] for x in inputs)
    if pad_to_multiple_of:
        time = -(-time // pad_to_multiple_of) * pad_to_multiple_of
    input_values = torch.zeros(len(batch), channels.pop(), time)
    padding_mask = torch.zeros(len(batch), time, dtype=torch.long)
    for b, (x, n) in enumerate(zip(inputs, lengths, strict=True)):
        input_values[b, :, : x.shape[-1]] = x
        padding_mask[b, :n] = 1
    output: dict[str, Any] = {"input_values": input_values}
    if all(has_labels):
        shapes = {tuple(y.shape[:-1]) for y in labels}
        if len(shapes) > 1:
            raise ValueError(f"labels have different (sources, channels) shapes {sorted(shapes)}")
        stacked = torch.zeros(len(batch), *shapes.pop(), time)
        for b, y in enumerate(labels):
            stacked[b, ..., : y.shape[-1]] = y
        output["labels"] = stacked
    output["padding_mask"] = padding_mask
    if return_ids:
        output["ids"] = [item.get("id") for item in batch]
    return output
