"""`demixers prepare`: layouts, contents, lossless storage, validation, skipping and resuming."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from demixers.datasets_scripts import prepare as prepare_module
from demixers.datasets_scripts.audio import encode_pcm, read_pcm
from demixers.datasets_scripts.corpora import MUSDB_VALIDATION_TRACKS, FFmpegNotFoundError
from demixers.datasets_scripts.prepare import InvalidItemsWarning, prepare_corpus
from tests.datasets_scripts import corpus_factory as factory
from tests.datasets_scripts.conftest import decode_int16, read_int16


def _speech_sum_is_exact(row: dict, sources: list[str]) -> None:
    mixture = decode_int16(row["mixture"]).astype(np.int32)
    total = sum(decode_int16(row[s]).astype(np.int32) for s in sources)
    np.testing.assert_array_equal(mixture, total)


# ------------------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize("mix_type", ["mix_clean", "mix_both", "mix_single"])
def test_librimix(odd_dir: Path, mix_type: str) -> None:
    root = factory.make_librimix(odd_dir / "Libri Mix", items_per_split=2)
    dataset = prepare_corpus("librimix", root, odd_dir / "out put", mix_type=mix_type, progress=False)
    assert list(dataset) == ["train_100", "validation", "test"]
    sources = {"mix_clean": ["s1", "s2"], "mix_both": ["s1", "s2", "noise"], "mix_single": ["s1", "noise"]}[
        mix_type
    ]
    train = dataset["train_100"]
    assert train.column_names == [
        "id", "mixture", *sources, "duration", "num_samples", "speaker_ids", "utterance_ids",
    ]  # fmt: skip
    assert train.features["mixture"].sampling_rate == 8000
    assert train.features["mixture"].decode is False
    mode_dir = root / "Libri2Mix" / "wav8k" / "min"
    with open(mode_dir / "metadata" / f"mixture_train-100_{mix_type}.csv", newline="") as handle:
        metadata = list(csv.DictReader(handle))
    assert train["id"] == [row["mixture_ID"] for row in metadata]
    for row, listed in zip(train, metadata, strict=True):
        assert row["num_samples"] == int(listed["length"])
        assert row["duration"] == pytest.approx(int(listed["length"]) / 8000)
        # bit-exact copies of the corpus files
        np.testing.assert_array_equal(decode_int16(row["mixture"]), read_int16(Path(listed["mixture_path"])))
        np.testing.assert_array_equal(decode_int16(row["s1"]), read_int16(Path(listed["source_1_path"])))
        _speech_sum_is_exact(row, sources)
        utterances = listed["mixture_ID"].split("_")
        expected = utterances[:1] if mix_type == "mix_single" else utterances
        assert row["utterance_ids"] == expected
        assert row["speaker_ids"] == [u.split("-")[0] for u in expected]
        assert row["mixture"]["bytes"][:4] == b"fLaC"


def test_librimix_metadata_paths_from_another_machine(odd_dir: Path) -> None:
    """The generator writes absolute paths; a moved corpus resolves them by its own layout."""
    original = factory.make_librimix(odd_dir / "first place", splits=("dev",), items_per_split=2)
    moved = odd_dir / "moved here"
    shutil.move(str(original), str(moved))
    dataset = prepare_corpus("librimix", moved / "Libri2Mix", odd_dir / "out", progress=False)
    assert len(dataset["validation"]) == 2


def test_librimix_three_speakers_16k(tmp_path: Path) -> None:
    root = factory.make_librimix(tmp_path / "c", n_src=3, rate=16000, splits=("test",), items_per_split=2)
    dataset = prepare_corpus("librimix", root, tmp_path / "out", mix_type="mix_both", progress=False)
    test = dataset["test"]
    assert test.features["s3"].sampling_rate == 16000
    assert [len(s) for s in test["speaker_ids"]] == [3, 3]
    _speech_sum_is_exact(test[1], ["s1", "s2", "s3", "noise"])


@pytest.mark.parametrize(
    ("corpus", "make", "options", "sources"),
    [
        ("wsj0-2mix", factory.make_wsj0mix, {}, ["s1", "s2"]),
        ("wsj0-3mix", lambda r: factory.make_wsj0mix(r, n_src=3), {}, ["s1", "s2", "s3"]),
        ("wham", factory.make_wham, {}, ["s1", "s2", "noise"]),
        ("wham", factory.make_wham, {"mix_type": "mix_single"}, ["s1", "noise"]),
        (
            "whamr",
            lambda r: factory.make_wham(r, reverb=True),
            {"mix_type": "mix_clean_reverb", "target": "reverb"},
            ["s1", "s2"],
        ),
    ],
)  # fmt: skip
def test_wsj0_family(odd_dir: Path, corpus: str, make, options: dict, sources: list[str]) -> None:
    root = make(odd_dir / "corpus")
    dataset = prepare_corpus(corpus, root, odd_dir / "out", progress=False, **options)
    assert list(dataset) == ["train", "validation", "test"]
    for split, folder in (("train", "tr"), ("validation", "cv"), ("test", "tt")):
        part = dataset[split]
        assert part.column_names[: 2 + len(sources)] == ["id", "mixture", *sources]
        mode_dirs = list(Path(root).rglob(f"wav8k/min/{folder}"))
        assert len(mode_dirs) == 1
        mixture_folder = {"mix_single": "mix_single", "mix_clean_reverb": "mix_clean_reverb"}.get(
            options.get("mix_type"), "mix_both" if corpus == "wham" else "mix"
        )
        expected_ids = sorted(p.stem for p in (mode_dirs[0] / mixture_folder).iterdir())
        assert part["id"] == expected_ids
        for row in part:
            _speech_sum_is_exact(row, sources)
            num_speakers = len([s for s in sources if s != "noise"])
            utterances = row["id"].split("_")[0::2][:num_speakers]
            assert row["utterance_ids"] == utterances
            assert row["speaker_ids"] == [u[:3] for u in utterances]
            assert row["num_samples"] == len(decode_int16(row["mixture"]))


def test_whamr_anechoic_targets_are_stored_without_sum_check(tmp_path: Path) -> None:
    root = factory.make_wham(tmp_path / "whamr", reverb=True, items_per_split=1)
    dataset = prepare_corpus("whamr", root, tmp_path / "out", progress=False)  # mix_both_reverb, anechoic
    row = dataset["test"][0]
    name = row["id"]
    folder = root / "wav8k" / "min" / "tt"
    np.testing.assert_array_equal(
        decode_int16(row["mixture"]), read_int16(folder / "mix_both_reverb" / f"{name}.wav")
    )
    np.testing.assert_array_equal(decode_int16(row["s1"]), read_int16(folder / "s1_anechoic" / f"{name}.wav"))
    np.testing.assert_array_equal(decode_int16(row["noise"]), read_int16(folder / "noise" / f"{name}.wav"))


def test_musdb18hq_with_official_validation_split(odd_dir: Path) -> None:
    tracks = {
        "train": ["Zeta - Song ñ", "Actions - One Minute Smile"],
        "test": ["Al James - Schoolboy Facination"],
    }
    root = factory.make_musdb18hq(odd_dir / "MUSDB18 HQ", tracks)
    dataset = prepare_corpus("musdb18hq", root, odd_dir / "out", progress=False)
    assert {split: part["id"] for split, part in dataset.items()} == {
        "train": ["Zeta - Song ñ"],
        "validation": ["Actions - One Minute Smile"],
        "test": ["Al James - Schoolboy Facination"],
    }
    row = dataset["validation"][0]
    assert (row["track_name"], row["artist"], row["title"]) == (
        "Actions - One Minute Smile",
        "Actions",
        "One Minute Smile",
    )
    assert dataset["train"].column_names[:6] == ["id", "mixture", "drums", "bass", "other", "vocals"]
    assert dataset["train"].features["vocals"].sampling_rate == 44100
    folder = root / "train" / "Actions - One Minute Smile"
    for stem in ("mixture", *factory.MUSDB_STEMS):
        stored = decode_int16(row[stem])
        assert stored.shape[1] == 2
        np.testing.assert_array_equal(stored, read_int16(folder / f"{stem}.wav"))
    no_validation = prepare_corpus(
        "musdb18hq", root, odd_dir / "out2", validation_split="none", progress=False
    )
    assert sorted(no_validation) == ["test", "train"] and len(no_validation["train"]) == 2


def test_musdb_validation_tracks_match_the_musdb_package() -> None:
    assert len(MUSDB_VALIDATION_TRACKS) == len(set(MUSDB_VALIDATION_TRACKS)) == 14
    spec = importlib.util.find_spec("musdb")
    if spec is None or spec.origin is None:
        pytest.skip("the musdb package is not installed")
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((Path(spec.origin).parent / "configs" / "mus.yaml").read_text())
    assert list(MUSDB_VALIDATION_TRACKS) == config["validation_tracks"]


def test_mir1k_split_channels_and_sum(odd_dir: Path) -> None:
    root = factory.make_mir1k(odd_dir / "data", loud="amy_1_02")
    dataset = prepare_corpus("mir1k", root / "MIR-1K", odd_dir / "out", progress=False)
    assert dataset["train"]["id"] == ["abjones_1_01", "abjones_2_03", "amy_1_02"]
    assert dataset["test"]["id"] == ["Ani_1_01", "bobon_3_01", "yifen_2_05"]
    assert dataset["train"]["singer"] == ["abjones", "abjones", "amy"]
    assert dataset["train"].column_names[:4] == ["id", "mixture", "accompaniment", "vocals"]
    for split in dataset.values():
        for row in split:
            stereo = read_int16(root / "MIR-1K" / "Wavfile" / f"{row['id']}.wav")
            np.testing.assert_array_equal(decode_int16(row["accompaniment"])[:, 0], stereo[:, 0])
            np.testing.assert_array_equal(decode_int16(row["vocals"])[:, 0], stereo[:, 1])
            mixture, _ = sf.read(io.BytesIO(row["mixture"]["bytes"]), dtype="float64", always_2d=True)
            expected = (stereo[:, 0].astype(np.float64) + stereo[:, 1]) / 2**15
            np.testing.assert_array_equal(mixture[:, 0], expected)  # exact, even beyond 16 bits
    loud = dataset["train"][2]
    assert loud["mixture"]["bytes"][:4] == b"RIFF"  # the sum does not fit 16 bits: float WAV
    assert dataset["train"][0]["mixture"]["bytes"][:4] == b"fLaC"


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "PCM_32", "FLOAT", "PCM_U8"])
def test_lossless_round_trip(tmp_path: Path, subtype: str) -> None:
    rng = np.random.default_rng(0)
    samples = rng.uniform(-0.9, 0.9, size=(1000, 2))
    path = factory.write(tmp_path / "x.wav", samples, 22050, subtype=subtype)
    pcm = read_pcm(path)
    data, extension = encode_pcm(pcm)
    assert extension == ("flac" if subtype in ("PCM_16", "PCM_24", "PCM_U8") else "wav")
    original, _ = sf.read(str(path), dtype="float64")
    stored, rate = sf.read(io.BytesIO(data), dtype="float64")
    assert rate == 22050
    np.testing.assert_array_equal(stored, original)


# --------------------------------------------------------------------------------------- validation


def _wsj_file(root: Path, split: str, folder: str, index: int = 0) -> Path:
    files = sorted((root / "2speakers" / "wav8k" / "min" / split / folder).iterdir())
    return files[index]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: 44 + (len(data) - 44) // 2])


def _wrong_rate(path: Path) -> None:
    samples, _ = sf.read(str(path), dtype="int16")
    sf.write(str(path), samples, 16000)


def _not_a_sum(path: Path) -> None:
    samples, rate = sf.read(str(path), dtype="int16")
    sf.write(str(path), np.random.default_rng(1).integers(-3000, 3000, samples.shape).astype(np.int16), rate)


def _garbage(path: Path) -> None:
    path.write_bytes(b"RIFF\x00\x00")


CORRUPTIONS = {
    "truncated": (_truncate, "s1", r"s1: \d+ samples but the other files of this item say \d+"),
    "wrong_rate": (_wrong_rate, "s2", "s2: sampling rate 16000 Hz, expected 8000 Hz"),
    "missing": (lambda p: p.unlink(), "mix", "mixture: missing file"),
    "not_a_sum": (_not_a_sum, "s1", "mixture is not the sum of s1 \\+ s2"),
    "unreadable": (_garbage, "s2", "s2: unreadable file"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_corrupt_file_is_named_and_stops_the_run(odd_dir: Path, kind: str) -> None:
    corrupt, folder, message = CORRUPTIONS[kind]
    root = factory.make_wsj0mix(odd_dir / "wsj", items_per_split=2)
    bad = _wsj_file(root, "cv", folder, 1)
    corrupt(bad)
    with pytest.raises(ValueError, match=message) as error:
        prepare_corpus("wsj0-2mix", root, odd_dir / "out", progress=False)
    text = str(error.value)
    assert f"validation/{bad.stem}" in text
    assert "1 invalid item(s)" in text and "--skip-invalid" in text
    if kind not in ("not_a_sum",):
        assert str(bad) in text  # the file itself is named
    report = odd_dir / "out" / ".demixers_prepare" / "invalid_items.txt"
    assert bad.stem in report.read_text(encoding="utf-8")

    with pytest.warns(InvalidItemsWarning, match=bad.stem):
        dataset = prepare_corpus("wsj0-2mix", root, odd_dir / "out", skip_invalid=True, progress=False)
    assert bad.stem not in dataset["validation"]["id"]
    assert len(dataset["validation"]) == 1 and len(dataset["train"]) == 2 and len(dataset["test"]) == 2
    # a strict re-run does not accept the dataset that skipped an item
    with pytest.raises(ValueError, match=bad.stem):
        prepare_corpus("wsj0-2mix", root, odd_dir / "out", progress=False)


def test_librimix_length_is_checked_against_the_metadata(tmp_path: Path) -> None:
    root = factory.make_librimix(tmp_path / "c", splits=("dev",), items_per_split=2)
    csv_path = root / "Libri2Mix" / "wav8k" / "min" / "metadata" / "mixture_dev_mix_clean.csv"
    rows = list(csv.reader(csv_path.open(newline="")))
    rows[2][-1] = str(int(rows[2][-1]) + 7)
    with csv_path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    with pytest.raises(
        ValueError, match=r"samples but the metadata \(mixture_dev_mix_clean.csv line 3\)"
    ) as error:
        prepare_corpus("librimix", root, tmp_path / "out", progress=False)
    assert rows[2][0] in str(error.value)


def test_every_invalid_item_is_listed(tmp_path: Path) -> None:
    root = factory.make_wsj0mix(tmp_path / "wsj", items_per_split=3)
    bad = [_wsj_file(root, "tr", "s1", 0), _wsj_file(root, "tt", "s2", 2), _wsj_file(root, "tt", "mix", 1)]
    for path in bad:
        path.unlink()
    with pytest.raises(ValueError, match="3 invalid item") as error:
        prepare_corpus("wsj0-2mix", root, tmp_path / "out", progress=False)
    for path in bad:
        assert path.stem in str(error.value)


def test_output_folder_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    root = factory.make_mir1k(tmp_path / "m")
    output = tmp_path / "out"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        prepare_corpus("mir1k", root, output, progress=False)
    with pytest.raises(FileExistsError):
        prepare_corpus("mir1k", root, output, overwrite=True, progress=False)
    assert (output / "notes.txt").read_text() == "mine"


def test_unknown_layout_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"wav8k\|wav16k/min"):
        prepare_corpus("wham", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        prepare_corpus("musdb18hq", tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown corpus"):
        prepare_corpus("timit", tmp_path / "empty", tmp_path / "out")
    with pytest.raises(TypeError, match="unknown option"):
        prepare_corpus("mir1k", tmp_path / "empty", tmp_path / "out", mix_type="mix_both")


# ------------------------------------------------------------------------------------------- resume


def test_interrupted_run_resumes_without_rebuilding_finished_shards(odd_dir: Path, monkeypatch) -> None:
    root = factory.make_wsj0mix(odd_dir / "wsj", items_per_split=5)
    output = odd_dir / "out"
    real_build = prepare_module._build_shard
    built: list[tuple[str, int]] = []

    def failing_build(task):
        if built:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the second shard
        built.append((task.split, task.index))
        return real_build(task)

    monkeypatch.setattr(prepare_module, "_build_shard", failing_build)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus("wsj0-2mix", root, output, shard_size=2, progress=False)
    work = output / ".demixers_prepare"
    manifest = json.loads((work / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["state"] == "building"
    first_split, first_index = built[0]
    assert list(manifest["splits"][first_split]["shards"]) == [str(first_index)]
    finished = work / first_split / f"shard-{first_index:05d}.arrow"
    stamp = finished.stat().st_mtime_ns, finished.stat().st_ino
    assert not [p for p in work.rglob("*") if ".tmp-" in p.name]

    rebuilt: list[tuple[str, int]] = []

    def counting_build(task):
        rebuilt.append((task.split, task.index))
        if (task.split, task.index) == (first_split, first_index + 1):
            assert (finished.stat().st_mtime_ns, finished.stat().st_ino) == stamp
        return real_build(task)

    monkeypatch.setattr(prepare_module, "_build_shard", counting_build)
    dataset = prepare_corpus("wsj0-2mix", root, output, shard_size=2, keep_shards=True, progress=False)
    assert (first_split, first_index) not in rebuilt
    assert len(rebuilt) == 3 * 3 - 1  # 5 items per split in shards of 2 -> 3 shards per split
    assert (finished.stat().st_mtime_ns, finished.stat().st_ino) == stamp
    assert [len(dataset[s]) for s in ("train", "validation", "test")] == [5, 5, 5]
    expected = sorted(p.stem for p in (root / "2speakers" / "wav8k" / "min" / "tr" / "mix").iterdir())
    assert dataset["train"]["id"] == expected
    assert json.loads((work / "manifest.json").read_text(encoding="utf-8"))["state"] == "complete"

    # a finished dataset is returned as it is
    rebuilt.clear()
    again = prepare_corpus("wsj0-2mix", root, output, shard_size=2, progress=False)
    assert rebuilt == [] and again["test"]["id"] == dataset["test"]["id"]


def test_changed_options_start_over(tmp_path: Path) -> None:
    root = factory.make_wham(tmp_path / "wham", items_per_split=1)
    first = prepare_corpus("wham", root, tmp_path / "out", progress=False)
    assert "noise" in first["train"].column_names
    # a finished dataset is only replaced on request (test_prepare_security covers the refusal)
    second = prepare_corpus(
        "wham", root, tmp_path / "out", mix_type="mix_clean", overwrite=True, progress=False
    )
    assert "noise" not in second["train"].column_names


def test_parallel_workers_build_the_same_dataset(tmp_path: Path) -> None:
    root = factory.make_wsj0mix(tmp_path / "wsj", items_per_split=3)
    serial = prepare_corpus("wsj0-2mix", root, tmp_path / "serial", shard_size=2, progress=False)
    parallel = prepare_corpus(
        "wsj0-2mix", root, tmp_path / "parallel", shard_size=2, num_workers=2, progress=False
    )
    for split in serial:
        assert serial[split].to_list() == parallel[split].to_list()


# ------------------------------------------------------------------------------------------- musdb18


def test_musdb18_without_ffmpeg_is_refused_with_what_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("demixers.datasets_scripts.corpora.ffmpeg_executable", lambda: None)
    (tmp_path / "train").mkdir()
    with pytest.raises(FFmpegNotFoundError, match="ffmpeg") as error:
        prepare_corpus("musdb18", tmp_path, tmp_path / "out")
    assert "apt-get install ffmpeg" in str(error.value) and "musdb18hq" in str(error.value)


FAKE_FFMPEG = """\
#!{python} -S
# Stands in for ffmpeg: a test '.stem.mp4' is one JSON line of stream sizes, then raw s16le streams.
import json, sys
args = sys.argv[1:]
stream = int(args[args.index("-map") + 1].split(":")[-1])
with open(args[args.index("-i") + 1], "rb") as handle:
    sizes = json.loads(handle.readline())
    handle.seek(sum(sizes[:stream]), 1)
    sys.stdout.buffer.write(handle.read(sizes[stream]))
"""


def _write_fake_stem(path: Path, streams: list[np.ndarray]) -> None:
    payloads = [s.astype("<i2").tobytes() for s in streams]
    with open(path, "wb") as handle:
        handle.write(json.dumps([len(p) for p in payloads]).encode() + b"\n")
        for payload in payloads:
            handle.write(payload)


def test_musdb18_stems_are_decoded_with_ffmpeg(odd_dir: Path, monkeypatch) -> None:
    bin_dir = odd_dir / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ffmpeg"
    fake.write_text(FAKE_FFMPEG.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    rng = np.random.default_rng(0)
    stems = {}
    for split, track in (("train", "Leaf - Summerghost"), ("train", "A - B"), ("test", "C - D")):
        streams = [factory.speech(rng, 3000, channels=2) for _ in range(5)]
        stems[track] = streams
        (odd_dir / "musdb" / split).mkdir(parents=True, exist_ok=True)
        _write_fake_stem(odd_dir / "musdb" / split / f"{track}.stem.mp4", streams)
    dataset = prepare_corpus("musdb18", odd_dir / "musdb", odd_dir / "out", progress=False)
    assert {s: d["id"] for s, d in dataset.items()} == {
        "train": ["A - B"], "validation": ["Leaf - Summerghost"], "test": ["C - D"]
    }  # fmt: skip
    row = dataset["validation"][0]
    for column, stream in (("mixture", 0), ("drums", 1), ("bass", 2), ("other", 3), ("vocals", 4)):
        np.testing.assert_array_equal(decode_int16(row[column]), stems["Leaf - Summerghost"][stream])


def test_corpus_registry_leaves_room_for_new_corpora(tmp_path: Path) -> None:
    from demixers.datasets_scripts.corpora import CORPORA, Corpus, Item, Layout, register_corpus

    class Tiny(Corpus):
        name = "tiny-test-corpus"
        default_shard_size = 2

        def discover(self, root: Path, **options) -> Layout:
            items = [Item(p.stem, {"mixture": p, "s1": p}) for p in sorted(root.glob("*.wav"))]
            return Layout(8000, ["mixture", "s1"], {"train": items}, sum_of=("s1",))

    try:
        register_corpus(Tiny())
        rng = np.random.default_rng(0)
        for name in ("a", "b", "c"):
            factory.write(tmp_path / "tiny" / f"{name}.wav", factory.speech(rng, 400), 8000)
        dataset = prepare_corpus("tiny-test-corpus", tmp_path / "tiny", tmp_path / "out", progress=False)
        assert dataset["train"]["id"] == ["a", "b", "c"]
    finally:
        CORPORA.pop("tiny-test-corpus", None)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_musdb18_real_stem_file_with_ffmpeg(odd_dir: Path) -> None:
    import subprocess

    rng = np.random.default_rng(0)
    inputs = []
    for stream in range(5):
        samples = rng.standard_normal((8000, 2)) * 0.02 * (stream + 1)
        inputs.append(factory.write(odd_dir / f"stream {stream}.wav", samples, 44100))
    stem = odd_dir / "musdb" / "test" / "Al James - Schoolboy Facination.stem.mp4"
    stem.parent.mkdir(parents=True)
    command = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    for path in inputs:
        command += ["-i", str(path)]
    for stream in range(5):
        command += ["-map", str(stream)]
    subprocess.run([*command, "-c:a", "aac", str(stem)], check=True)
    dataset = prepare_corpus("musdb18", odd_dir / "musdb", odd_dir / "out", progress=False)
    row = dataset["test"][0]
    levels = [
        np.sqrt(np.mean(decode_int16(row[c]).astype(np.float64) ** 2))
        for c in ("mixture", "drums", "bass", "other", "vocals")
    ]
    assert levels == sorted(levels)  # streams 0..4 in musdb's order: mixture, drums, bass, other, vocals
    assert row["num_samples"] >= 8000
