"""`load_separation_dataset` from a saved folder and a raw corpus folder, map-style and streaming."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from demixers.datasets_scripts import (
    IterableSeparationDataset,
    SeparationDataset,
    StreamingSegmentDataset,
    load_separation_dataset,
    prepare_corpus,
)
from tests.datasets_scripts import corpus_factory as factory
from tests.datasets_scripts.conftest import read_int16


@pytest.fixture(scope="module")
def prepared_wham(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("loading") / "dossier à espaces"
    root = factory.make_wham(base / "wham", items_per_split=3)
    prepare_corpus("wham", root, base / "prepared", progress=False)
    return root, base / "prepared"


def test_items_from_a_saved_folder(prepared_wham: tuple[Path, Path]) -> None:
    root, prepared = prepared_wham
    dataset = load_separation_dataset(prepared, "test")
    assert isinstance(dataset, SeparationDataset)
    assert len(dataset) == 3 and dataset.source_names == ["s1", "s2"]  # `noise` is not a target
    item = dataset[1]
    assert set(item) == {"id", "mixture", "sources", "sampling_rate", "source_names"}
    assert item["sampling_rate"] == 8000 and item["source_names"] == ["s1", "s2"]
    assert item["mixture"].dtype == torch.float32 and item["mixture"].ndim == 2
    assert item["sources"].shape == (2, *item["mixture"].shape)
    folder = root / "wav8k" / "min" / "tt"
    expected = read_int16(folder / "mix_both" / f"{item['id']}.wav")[:, 0] / 2**15
    np.testing.assert_array_equal(item["mixture"][0].numpy(), expected.astype(np.float32))
    assert dataset.lengths.tolist() == [dataset[i]["mixture"].shape[-1] for i in range(3)]
    assert dataset[-1]["id"] == dataset[2]["id"]
    with pytest.raises(IndexError):
        dataset[3]
    with_noise = load_separation_dataset(prepared, "test", sources=["s1", "s2", "noise"])
    noisy = with_noise[1]
    torch.testing.assert_close(noisy["mixture"], noisy["sources"].sum(0), rtol=0, atol=4 / 2**15)


def test_resampling_on_the_fly(prepared_wham: tuple[Path, Path]) -> None:
    _, prepared = prepared_wham
    native = load_separation_dataset(prepared, "validation")
    upsampled = load_separation_dataset(prepared, "validation", sampling_rate=16000)
    assert upsampled.sampling_rate == 16000
    item, original = upsampled[0], native[0]
    assert item["sampling_rate"] == 16000
    assert item["mixture"].shape[-1] == 2 * original["mixture"].shape[-1]
    assert upsampled.lengths.tolist() == (2 * native.lengths).tolist()
    # a segment of the resampled signal is the same as cutting the resampled whole
    segment = upsampled.load_audio(0, "mixture", 100, 50)
    np.testing.assert_allclose(segment, item["mixture"][:, 100:150].numpy(), atol=1e-6)


def test_streaming_yields_the_same_items(prepared_wham: tuple[Path, Path]) -> None:
    _, prepared = prepared_wham
    mapped = load_separation_dataset(prepared, "train")
    streamed = load_separation_dataset(prepared, "train", streaming=True)
    assert isinstance(streamed, IterableSeparationDataset)
    items = list(streamed)
    assert [i["id"] for i in items] == [mapped[k]["id"] for k in range(len(mapped))]
    for k, item in enumerate(items):
        torch.testing.assert_close(item["sources"], mapped[k]["sources"])
    segments = list(StreamingSegmentDataset(streamed, 400, segments_per_item=2, seed=1))
    assert len(segments) == 6 and all(s["input_values"].shape == (1, 400) for s in segments)
    again = list(StreamingSegmentDataset(streamed, 400, segments_per_item=2, seed=1))
    assert [s["id"] for s in segments] == [s["id"] for s in again]


def test_raw_corpus_folder_is_detected_and_prepared_once(tmp_path: Path, monkeypatch) -> None:
    root = factory.make_musdb18hq(tmp_path / "musdb hq", {"train": ["A - B"], "test": ["C - D", "E - F"]})
    dataset = load_separation_dataset(root, "test", prepared_dir=tmp_path / "cache")
    assert [dataset[i]["id"] for i in range(len(dataset))] == ["C - D", "E - F"]
    assert dataset.source_names == ["drums", "bass", "other", "vocals"]
    item = dataset[0]
    assert item["mixture"].shape[0] == 2 and item["sources"].shape[:2] == (4, 2)
    # the second load reuses the prepared copy
    import demixers.datasets_scripts.prepare as prepare_module

    monkeypatch.setattr(prepare_module, "_build_shard", lambda task: pytest.fail("rebuilt a shard"))
    again = load_separation_dataset(root, "train", prepared_dir=tmp_path / "cache")
    assert again[0]["id"] == "A - B"


def test_raw_folder_detection_of_each_layout(tmp_path: Path) -> None:
    from demixers.datasets_scripts import detect_corpus

    makers = {
        "librimix": lambda r: factory.make_librimix(r, splits=("dev",), items_per_split=1),
        "wham": lambda r: factory.make_wham(r, items_per_split=1),
        "whamr": lambda r: factory.make_wham(r, items_per_split=1, reverb=True),
        "wsj0-2mix": lambda r: factory.make_wsj0mix(r, items_per_split=1),
        "wsj0-3mix": lambda r: factory.make_wsj0mix(r, n_src=3, items_per_split=1),
        "musdb18hq": lambda r: factory.make_musdb18hq(r, {"test": ["A - B"]}, seconds=0.01),
        "mir1k": lambda r: factory.make_mir1k(r, names=("amy_1_01",)),
    }
    for name, make in makers.items():
        root = make(tmp_path / name)
        detected = detect_corpus(root)
        assert detected is not None and detected.name == name, (name, detected and detected.name)
    (tmp_path / "nothing").mkdir()
    assert detect_corpus(tmp_path / "nothing") is None
    with pytest.raises(ValueError, match="neither a saved dataset nor a corpus layout"):
        load_separation_dataset(tmp_path / "nothing", "train")


def test_loading_errors(prepared_wham: tuple[Path, Path], tmp_path: Path) -> None:
    _, prepared = prepared_wham
    with pytest.raises(ValueError, match=r"no split 'dev' \(splits: \['train', 'validation', 'test'\]\)"):
        load_separation_dataset(prepared, "dev")
    with pytest.raises(ValueError, match="pass split"):
        load_separation_dataset(prepared)
    with pytest.raises(ValueError, match="unknown source"):
        load_separation_dataset(prepared, "test", sources=["s3"])
    with pytest.raises(TypeError, match="already prepared"):
        load_separation_dataset(prepared, "test", mix_type="mix_clean")
    (tmp_path / "file.wav").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        load_separation_dataset(tmp_path / "file.wav", "test")
