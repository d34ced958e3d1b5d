"""Segments (uniformity, determinism), dynamic mixing, remixing, augmentations and collation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from demixers.datasets_scripts import (
    Augment,
    DynamicMixing,
    RandomSegmentDataset,
    SegmentIndex,
    collate_separation,
    epoch_rng,
    load_separation_dataset,
    remix_batch,
)
from tests.datasets_scripts import corpus_factory as factory


class RampDataset:
    """Stands in for `SeparationDataset`: sample ``t`` of row ``r``, source ``s`` holds a code of (r, s, t).

    Mixture = sum of sources, so that segment positions and origins can be read back from values.
    """

    def __init__(self, lengths, speakers=None, num_sources=2, channels=1):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self._speakers = speakers
        self.source_names = [f"s{i + 1}" for i in range(num_sources)]
        self.sampling_rate = 8000
        self.channels = channels
        self.hf_dataset = type("HF", (), {"column_names": ["id", "mixture", *self.source_names]})()
        self.loads: list[tuple[int, str, int, int]] = []

    def __len__(self):
        return len(self.lengths)

    def item_id(self, index):
        return f"row{index}"

    def speaker_ids(self, index):
        return None if self._speakers is None else self._speakers[index]

    def _values(self, index, slot, start, length):
        stop = min(int(self.lengths[index]), start + length)
        t = np.arange(start, stop, dtype=np.float64)
        code = (index * 10 + slot + 1) * 1e-3 + t * 1e-9
        return np.repeat(code[None].astype(np.float32), self.channels, axis=0)

    def load_audio(self, index, column, start=0, length=None):
        length = int(self.lengths[index]) if length is None else length
        self.loads.append((index, column, start, length))
        if column == "mixture":
            return sum(self._values(index, s, start, length) for s in range(len(self.source_names)))
        return self._values(index, self.source_names.index(column), start, length)

    def load_segment(self, index, start=0, length=None):
        sources = np.stack([self.load_audio(index, c, start, length) for c in self.source_names])
        return sources.sum(axis=0), sources


def _origin(segment: np.ndarray) -> tuple[int, int]:
    """(row, start) encoded in the first sample of a RampDataset source."""
    value = float(segment[0, 0])
    code = round(value * 1e3)
    start = round((value - code * 1e-3) * 1e9)
    return code, start


def _chi_square(observed: np.ndarray, expected: np.ndarray) -> float:
    return float(((observed - expected) ** 2 / expected).sum())


# -------------------------------------------------------------------------------------- segment index


def test_segment_index_is_uniform_over_every_start_of_the_dataset() -> None:
    lengths = [120, 1_000, 5_000, 40]  # very different lengths; the last one is shorter than a segment
    index = SegmentIndex(lengths, 100)
    assert index.counts.tolist() == [21, 901, 4901, 1]
    assert index.total == 5824
    items, starts = index.sample(np.random.default_rng(0), size=300_000)
    # item frequencies follow the number of valid starts (not 1/4 each)
    observed = np.bincount(items, minlength=4)
    expected = index.counts / index.total * len(items)
    assert _chi_square(observed, expected) < 16.3  # chi-square, 3 dof, p = 0.001
    # positions inside the long item are uniform over [0, 4900]
    long_starts = starts[items == 2]
    assert long_starts.min() >= 0 and long_starts.max() <= 4900
    histogram = np.bincount(long_starts * 10 // 4901, minlength=10)
    assert _chi_square(histogram, np.full(10, len(long_starts) / 10)) < 27.9  # 9 dof, p = 0.001
    assert set(starts[items == 3].tolist()) == {0}
    # every global position maps back to a valid (item, start)
    assert index.locate(0) == (0, 0)
    assert index.locate(20) == (0, 20)
    assert index.locate(21) == (1, 0)
    assert index.locate(index.total - 1) == (3, 0)
    with pytest.raises(IndexError):
        index.locate(index.total)


def test_segment_index_drop_short_and_errors() -> None:
    index = SegmentIndex([50, 300], 100, drop_short=True)
    assert index.counts.tolist() == [0, 201]
    with pytest.raises(ValueError, match="no item is at least"):
        SegmentIndex([50, 60], 100, drop_short=True)


def test_random_segments_are_uniform_deterministic_and_ignore_global_rngs() -> None:
    data = RampDataset([300, 3_000, 12_000])
    segments = RandomSegmentDataset(data, 200, seed=7, num_segments=6000)
    rows = np.array([_origin(segments.draw(k)["labels"][0])[0] // 10 for k in range(6000)])
    counts = SegmentIndex(data.lengths, 200).counts
    assert _chi_square(np.bincount(rows, minlength=3), counts / counts.sum() * 6000) < 13.8  # 2 dof

    first = segments.draw(123)
    np.random.seed(999)
    torch.manual_seed(999)
    for k in (5, 400, 17):  # other accesses in between change nothing
        segments.draw(k)
    again = segments.draw(123)
    np.testing.assert_array_equal(first["labels"], again["labels"])
    assert first["id"] == again["id"]
    epoch_zero = [segments.draw(k)["id"] for k in range(50)]
    segments.set_epoch(1)
    epoch_one = [segments.draw(k)["id"] for k in range(50)]
    other_seed = RandomSegmentDataset(data, 200, seed=8, num_segments=6000)
    seed_eight = [other_seed.draw(k)["id"] for k in range(50)]
    assert sum(a != b for a, b in zip(epoch_zero, epoch_one, strict=True)) > 45
    assert sum(a != b for a, b in zip(epoch_zero, seed_eight, strict=True)) > 45
    segments.set_epoch(0)
    assert segments.draw(123)["id"] == first["id"]
    item = segments[3]
    assert item["input_values"].shape == (1, 200) and item["labels"].shape == (2, 1, 200)
    row, start = _origin(item["labels"][0].numpy())
    assert 0 <= start <= data.lengths[row // 10] - 200
    torch.testing.assert_close(item["input_values"], item["labels"].sum(0))


def test_short_items_are_padded_and_their_length_reported() -> None:
    data = RampDataset([50])
    item = RandomSegmentDataset(data, 80, num_segments=1)[0]
    assert item["length"] == 50
    assert item["input_values"].shape == (1, 80)
    assert torch.all(item["input_values"][:, 50:] == 0) and torch.all(item["input_values"][:, :50] != 0)


# ------------------------------------------------------------------------------------ dynamic mixing


def test_dynamic_mixing_never_mixes_a_speaker_with_itself() -> None:
    speakers = [["a", "b"], ["a", "c"], ["b", "c"], ["c", "a"], ["b", "a"], ["d", "a"]]
    data = RampDataset([400, 500, 600, 700, 800, 900], speakers=speakers)
    mixing = DynamicMixing(gain_db=(0.0, 0.0), peak=10.0)  # unit gains: sample values encode origins
    segments = RandomSegmentDataset(data, 300, mixing=mixing, seed=3, num_segments=400)
    seen_speakers, seen_pairs = set(), set()
    for k in range(400):
        item = segments.draw(k)
        assert len(set(item["speaker_ids"])) == 2, item["speaker_ids"]
        # the sources really are utterances of the announced speakers
        for label, speaker in zip(item["labels"], item["speaker_ids"], strict=True):
            code, _ = _origin(label)
            row, slot = divmod(code, 10)
            assert speakers[row][slot - 1] == speaker
        np.testing.assert_allclose(item["input_values"], item["labels"].sum(0), rtol=1e-6, atol=1e-9)
        seen_speakers.update(item["speaker_ids"])
        seen_pairs.add(frozenset(item["speaker_ids"]))
    assert seen_speakers == {"a", "b", "c", "d"}
    assert len(seen_pairs) >= 5  # new combinations, not only the original pairs


def test_dynamic_mixing_gains_and_origins() -> None:
    data = RampDataset([1000] * 4, speakers=[["p", "q"], ["r", "s"], ["t", "u"], ["v", "w"]])
    mixing = DynamicMixing(gain_db=(-6.0, 6.0), peak=10.0)
    rng = epoch_rng(0, 0, 1)
    _, sources, info = mixing(data, rng, 300)
    assert sources.shape == (2, 1, 300) and info["length"] == 300
    speakers = [["p", "q"], ["r", "s"], ["t", "u"], ["v", "w"]]
    for source, row, speaker in zip(sources, info["rows"], info["speaker_ids"], strict=True):
        slot = speakers[row].index(speaker)
        start = next(s for r, c, s, _ in data.loads if r == row and c == f"s{slot + 1}")
        original = data._values(row, slot, start, 300)
        gain_db = 20 * np.log10(np.abs(source / original).mean())
        assert -6.0 - 1e-3 <= gain_db <= 6.0 + 1e-3


def test_dynamic_mixing_without_speaker_ids_uses_distinct_recordings_and_limits_peaks() -> None:
    data = RampDataset([500, 500, 500])
    mixing = DynamicMixing(gain_db=(20.0, 20.0), peak=0.05)
    for k in range(50):
        mixture, sources, info = mixing(data, epoch_rng(1, 0, k), 200)
        assert len(set(info["speaker_ids"])) == 2
        assert np.abs(mixture).max() <= 0.05 + 1e-7
        np.testing.assert_allclose(mixture, sources.sum(0), rtol=1e-6, atol=1e-9)
    with pytest.raises(ValueError, match="distinct speakers"):
        DynamicMixing(num_sources=3)(RampDataset([500], speakers=[["x", "x"]]), epoch_rng(0, 0), 10)


# ----------------------------------------------------------------------------------------- remixing


def test_remix_draws_every_source_independently() -> None:
    data = RampDataset([2_000, 2_000, 2_000, 2_000], num_sources=4, channels=2)
    segments = RandomSegmentDataset(data, 256, mixing="remix", seed=0, num_segments=200)
    mixed_rows = 0
    for k in range(200):
        item = segments.draw(k)
        rows = [_origin(item["labels"][s])[0] // 10 for s in range(4)]
        slots = [_origin(item["labels"][s])[0] % 10 - 1 for s in range(4)]
        assert slots == [0, 1, 2, 3]  # drums stays drums, bass stays bass, ...
        mixed_rows += len(set(rows)) > 1
        np.testing.assert_allclose(item["input_values"], item["labels"].sum(0), rtol=1e-6)
    assert mixed_rows > 150


def test_remix_batch_shuffles_each_source_across_the_batch() -> None:
    labels = (
        torch.arange(4)[:, None, None, None].float().expand(4, 3, 2, 10)
        * torch.tensor([1.0, 10.0, 100.0])[None, :, None, None]
    )
    mask = torch.ones(4, 10, dtype=torch.long)
    mask[2, 5:] = 0
    generator = torch.Generator().manual_seed(0)
    inputs, mixed, new_mask = remix_batch(labels, mask, generator=generator)
    torch.testing.assert_close(inputs, mixed.sum(1))
    for s in range(3):
        assert sorted(mixed[:, s, 0, 0].tolist()) == sorted(labels[:, s, 0, 0].tolist())
    scales = torch.tensor([1.0, 10.0, 100.0])
    for b in range(4):
        origins = [round(float(mixed[b, s, 0, 0] / scales[s])) for s in range(3)]
        expected = torch.stack([mask[r] for r in origins]).amax(0)
        torch.testing.assert_close(new_mask[b], expected)


# ------------------------------------------------------------------------------------ augmentations


def test_consistent_augmentation_keeps_the_mixture_relation() -> None:
    rng = np.random.default_rng(0)
    sources = rng.standard_normal((2, 2, 50)).astype(np.float32)
    mixture = sources.sum(0)
    augment = Augment(gain_db=(-6, 6), channel_swap_prob=1.0, sign_flip_prob=1.0)
    new_mixture, new_sources = augment(epoch_rng(0, 0, 0), mixture, sources)
    np.testing.assert_allclose(new_mixture, new_sources.sum(0), rtol=1e-5, atol=1e-6)
    ratio = new_mixture[1] / mixture[0]  # channels swapped, sign flipped
    assert np.allclose(ratio, ratio[0]) and ratio[0] < 0
    assert 10 ** (-6 / 20) - 1e-6 <= abs(ratio[0]) <= 10 ** (6 / 20) + 1e-6


def test_per_source_augmentation_rebuilds_the_mixture() -> None:
    sources = np.ones((4, 2, 30), dtype=np.float32)
    sources[:, 1] = 2.0
    augment = Augment(gain_db=(0, 0), channel_swap_prob=0.5, sign_flip_prob=0.5)
    mixture, new_sources = augment(epoch_rng(0, 0, 3), sources.sum(0), sources, per_source=True)
    np.testing.assert_allclose(mixture, new_sources.sum(0))
    assert set(np.unique(np.abs(new_sources))) == {1.0, 2.0}
    with pytest.raises(ValueError):
        Augment(sign_flip_prob=2.0)
    with pytest.raises(ValueError):
        Augment(gain_db=(3, -3))
    assert Augment().is_identity


# ---------------------------------------------------------------------------------------- collation


def test_collate_pads_and_returns_a_padding_mask() -> None:
    batch = [
        {"input_values": torch.ones(2, 5), "labels": torch.ones(3, 2, 5), "id": "a"},
        {"input_values": torch.ones(2, 9), "labels": torch.ones(3, 2, 9), "id": "b"},
        {"input_values": np.ones((2, 7), dtype=np.float32), "labels": np.ones((3, 2, 7)), "length": 4},
    ]
    out = collate_separation(batch)
    assert set(out) == {"input_values", "labels", "padding_mask"}
    assert out["input_values"].shape == (3, 2, 9) and out["labels"].shape == (3, 3, 2, 9)
    assert out["padding_mask"].dtype == torch.long
    assert out["padding_mask"].sum(1).tolist() == [5, 9, 4]
    assert torch.all(out["input_values"][0, :, 5:] == 0) and torch.all(out["labels"][0, ..., 5:] == 0)
    padded = collate_separation(batch, pad_to_multiple_of=4, return_ids=True)
    assert padded["input_values"].shape[-1] == 12 and padded["ids"] == ["a", "b", None]
    # loaded items (mixture / sources) and inference items without labels
    loaded = collate_separation([{"mixture": torch.ones(1, 3), "sources": torch.ones(2, 1, 3)}])
    assert loaded["labels"].shape == (1, 2, 1, 3)
    assert "labels" not in collate_separation([{"mixture": torch.ones(1, 3)}])
    with pytest.raises(ValueError, match="channel"):
        collate_separation([{"input_values": torch.ones(1, 3)}, {"input_values": torch.ones(2, 3)}])


# ---------------------------------------------------------------------------- on a prepared dataset


def test_training_items_from_a_prepared_corpus_feed_the_model_contract(tmp_path: Path) -> None:
    root = factory.make_wsj0mix(tmp_path / "wsj", items_per_split=4)
    dataset = load_separation_dataset(root, "train", prepared_dir=tmp_path / "prepared")
    segments = RandomSegmentDataset(
        dataset, segment_seconds=0.1, seed=0, mixing=DynamicMixing(), augment=Augment(gain_db=(-2, 2))
    )
    loader = torch.utils.data.DataLoader(segments, batch_size=3, collate_fn=collate_separation)
    batch = next(iter(loader))
    assert batch["input_values"].shape == (3, 1, 800)
    assert batch["labels"].shape == (3, 2, 1, 800)
    torch.testing.assert_close(batch["input_values"], batch["labels"].sum(1), rtol=1e-5, atol=1e-6)
    plain = RandomSegmentDataset(dataset, 800, seed=0)
    item = plain[0]
    torch.testing.assert_close(item["input_values"], item["labels"].sum(0), rtol=0, atol=3 / 2**15)
