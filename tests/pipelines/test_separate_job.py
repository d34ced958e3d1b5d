"""`demixers separate` as a job: discovery, sharding, manifest and resume, templates, --two-stems,
--dataset, --dtype, the out-of-memory message (in-process; the multi-process runs are in
test_separate_job_distributed.py)."""

from __future__ import annotations

import io
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from demixers.cli import main
from demixers.pipelines import cli as separate_cli
from demixers.pipelines.separate_job import (
    MANIFEST_NAME,
    WORK_DIR_NAME,
    JobManifest,
    balanced_shards,
    discover_inputs,
)
from tests.pipelines.conftest import sines


def write_wav(path: Path, seconds: float, frequency: float, rate: int = 8000, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    signal = sines([frequency] * channels, rate, seconds)
    soundfile.write(path, signal.T, rate, subtype="PCM_16")
    return path


def manifest_records(out: Path) -> dict[str, dict]:
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    return {Path(record["key"]).name: record for record in map(json.loads, lines)}


def stem_files(out: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(out)): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file() and WORK_DIR_NAME not in path.parts and path.name != MANIFEST_NAME
    }


def test_balanced_shards_take_the_longest_first_onto_the_least_loaded_rank() -> None:
    durations = [1.0, 7.0, 3.0, 3.0, 5.0, 2.0]
    keys = ["a", "b", "c", "d", "e", "f"]
    shards = balanced_shards(durations, keys, 2)
    # b(7)->0, e(5)->1, c(3)->1 (5 < 7), d(3)->0 (7 < 8), f(2)->1 (8 < 10), a(1)->0 (tie 10/10: lower rank)
    assert shards == [[1, 3, 0], [4, 2, 5]]
    assert [sum(durations[i] for i in shard) for shard in shards] == [11.0, 10.0]
    assert balanced_shards(durations, keys, 2) == shards  # deterministic
    assert sorted(i for shard in balanced_shards(durations, keys, 4) for i in shard) == list(range(6))
    assert balanced_shards([2.0, 2.0, 2.0], ["z", "y", "x"], 3) == [[2], [1], [0]]  # ties by key
    with pytest.raises(ValueError, match="num_shards"):
        balanced_shards(durations, keys, 0)


def test_discover_inputs_walks_folders_filters_extensions_and_skips_the_output(tmp_path: Path) -> None:
    music = tmp_path / "music"
    for name in ("b.wav", "a.FLAC", "notes.txt", ".hidden.wav", "sub/c.wav", ".cache/d.wav", "out/old.wav"):
        (music / name).parent.mkdir(parents=True, exist_ok=True)
        (music / name).write_bytes(b"")
    single = tmp_path / "single.mp3"
    single.write_bytes(b"")
    listing = tmp_path / "lists" / "inputs.txt"
    listing.parent.mkdir()
    listing.write_text("# comment\n\n../single.mp3\n" + str(music / "b.wav") + "\n")
    found = discover_inputs([str(music)], recursive=False, exclude=music / "out")
    assert [Path(path).relative_to(music).as_posix() for path in found] == ["a.FLAC", "b.wav"]
    found = discover_inputs([str(music)], input_list=listing, recursive=True, exclude=music / "out")
    names = [Path(path).name for path in found]
    assert names == ["a.FLAC", "b.wav", "c.wav", "single.mp3"]  # b.wav listed twice: kept once
    assert discover_inputs([str(music)], recursive=True, extensions=["flac"]) == [str(music / "a.FLAC")]
    with pytest.raises(ValueError, match="pass --recursive"):
        discover_inputs([str(music / "sub" / "..")], extensions=["ogg"])


def test_manifest_journal_tolerates_a_cut_line_and_merges_atomically(tmp_path: Path) -> None:
    manifest = JobManifest(tmp_path)
    manifest.append({"key": "a", "status": "started"})
    manifest.append({"key": "a", "status": "done", "seconds": 2.0})
    manifest.append({"key": "b", "status": "failed", "error": "bad"})
    manifest.close()
    with open(manifest.journal, "a") as handle:
        handle.write('{"key": "c", "status": "do')  # what SIGKILL leaves: half a line
    assert {key: record["status"] for key, record in manifest.state().items()} == {"a": "done", "b": "failed"}
    merged = manifest.merge()
    assert sorted(merged) == ["a", "b"] and not manifest.journal.exists()
    lines = (tmp_path / MANIFEST_NAME).read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b"]


def test_job_resumes_by_fingerprint_and_records_a_corrupt_input(
    tmp_path: Path, speech_toy_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    write_wav(folder / "long.wav", 0.6, 300.0)
    write_wav(folder / "short.wav", 0.3, 500.0)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wave file")
    out = tmp_path / "out"
    argv = ["separate", str(folder), "-m", speech_toy_dir, "-o", str(out), "--manifest", "-q"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "broken.wav" in err and "1 failed" in err and "2 done" in err
    records = manifest_records(out)
    assert {name: r["status"] for name, r in records.items()} == {
        "long.wav": "done",
        "short.wav": "done",
        "broken.wav": "failed",
    }
    assert records["long.wav"]["seconds"] == pytest.approx(0.6)
    assert "not a readable audio file" in records["broken.wav"]["error"]
    first = stem_files(out)
    assert sorted(first) == [f"{n}/speaker_{k}.wav" for n in ("long", "short") for k in (1, 2)]
    stamps = {name: (out / name).stat().st_mtime_ns for name in first}

    # same command: finished items skipped (not rewritten), the failure retried (and failing again)
    assert main(argv) == 1
    assert "0 done, 2 skipped (already done), 1 failed" in capsys.readouterr().err
    assert {name: (out / name).stat().st_mtime_ns for name in first} == stamps
    # content changed (same name, same size): only that item is separated again, over its own outputs
    stat = (folder / "short.wav").stat()
    write_wav(folder / "short.wav", 0.3, 700.0)
    os.utime(folder / "short.wav", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later edit
    soundfile.write(folder / "broken.wav", sines([250.0], 8000, 0.2)[0], 8000)
    assert main(argv) == 0
    assert capsys.readouterr().err == ""  # -q: the summary is printed only when something failed
    assert (out / "long" / "speaker_1.wav").stat().st_mtime_ns == stamps["long/speaker_1.wav"]
    assert (out / "short" / "speaker_1.wav").read_bytes() != first["short/speaker_1.wav"]
    summary = json.loads((out / WORK_DIR_NAME / "summary.json").read_text())
    assert summary["done"] == 2 and summary["skipped"] == 1 and summary["num_processes"] == 1
    assert summary["audio_hours"] == pytest.approx(0.5 / 3600)
    # other settings are another job: its outputs are not replaced without --overwrite
    assert main([*argv, "--segment", "0.1"]) == 1
    assert "already exist" in capsys.readouterr().err


def test_filename_template_layout_and_collisions_refused_before_any_work(
    tmp_path: Path, speech_toy_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    first = write_wav(tmp_path / "a" / "take.wav", 0.2, 300.0)
    second = write_wav(tmp_path / "b" / "other.flac", 0.2, 400.0)
    out = tmp_path / "out"
    base = ["separate", str(first), str(second), "-m", speech_toy_dir, "-o", str(out), "-q"]
    assert main([*base, "--filename", "{stem}/{track}.{trackext}.{ext}"]) == 0
    assert sorted(stem_files(out)) == [
        "speaker_1/other.flac.wav",
        "speaker_1/take.wav.wav",
        "speaker_2/other.flac.wav",
        "speaker_2/take.wav.wav",
    ]
    cases = [
        ("{stem}.{ext}", "would both write"),  # the two inputs collide
        ("{track}.{ext}", "must contain {stem}"),
        ("../{track}/{stem}.{ext}", "not a file path inside the output folder"),
        ("/abs/{stem}.{ext}", "relative"),
        ("{track}/{stem}.{format}", "unknown variable(s) format"),
    ]
    for template, message in cases:
        fresh = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
        assert main([*base[:-3], "-o", str(fresh), "--filename", template]) == 2, template
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (template, lines)
        assert not fresh.exists()  # refused before anything was separated or written


def test_two_stems_keeps_the_source_and_sums_the_others(
    tmp_path: Path, music_toy_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    song = write_wav(tmp_path / "song.wav", 0.3, 440.0, rate=22050, channels=2)
    full, two = tmp_path / "full", tmp_path / "two"
    base = ["separate", str(song), "-m", music_toy_dir, "--bit-depth", "32", "-q"]
    assert main([*base, "-o", str(full)]) == 0
    assert main([*base, "-o", str(two), "--two-stems", "vocals"]) == 0
    assert sorted(stem_files(two)) == ["song/no_vocals.wav", "song/vocals.wav"]

    def read(path: Path) -> np.ndarray:
        return soundfile.read(path, dtype="float32")[0]

    stems = {name: read(full / "song" / f"{name}.wav") for name in ("drums", "bass", "other", "vocals")}
    np.testing.assert_array_equal(read(two / "song" / "vocals.wav"), stems["vocals"])
    rest = stems["drums"] + stems["bass"] + stems["other"]
    np.testing.assert_allclose(read(two / "song" / "no_vocals.wav"), rest, atol=1e-6)
    assert main([*base, "-o", str(tmp_path / "x"), "--two-stems", "piano"]) == 2
    err = capsys.readouterr().err
    assert "has no source 'piano'" in err and "drums, bass, other, vocals" in err


def test_out_of_memory_names_the_flag_to_lower(
    tmp_path: Path, speech_toy_dir: str, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from demixers.pipelines.audio_source_separation import AudioSourceSeparationPipeline

    def out_of_memory(self, chunks, model=None):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(AudioSourceSeparationPipeline, "_separate_chunks", out_of_memory)
    song = write_wav(tmp_path / "talk.wav", 0.2, 300.0)
    assert (
        main(["separate", str(song), "-m", speech_toy_dir, "-o", str(tmp_path / "o"), "--batch-size", "4"])
        == 1
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "out of memory on cpu with --batch-size 4" in lines[0] and "lower --batch-size" in lines[0]


def test_bfloat16_output_stays_close_to_float32(tmp_path: Path, mossformer_dir: str) -> None:
    talk = tmp_path / "talk.wav"
    soundfile.write(talk, sines([300.0, 1200.0], 8000, 0.5).sum(axis=0), 8000, subtype="FLOAT")
    outputs = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype
        argv = ["separate", str(talk), "-m", mossformer_dir, "-o", str(out), "--dtype", dtype]
        assert main([*argv, "--bit-depth", "32", "-q"]) == 0
        outputs[dtype] = np.stack(
            [soundfile.read(out / "talk" / f"speaker_{k}.wav", dtype="float32")[0] for k in (1, 2)]
        )
    difference = np.abs(outputs["bfloat16"] - outputs["float32"]).max()
    scale = np.abs(outputs["float32"]).max()
    relative = difference / scale
    print(
        f"bfloat16 vs float32 (tiny MossFormer, CPU): max abs diff {difference:.3g}, relative {relative:.3g}"
    )
    assert 0 < difference < 0.05 * scale  # bfloat16 keeps 8 bits of mantissa: ~1% per op


def test_without_option_drops_num_processes_and_its_value() -> None:
    words = ["in", "--num-processes", "2", "-o", "out", "--num-proc=3", "--", "--num-processes"]
    assert separate_cli._without_option(words, "--num-processes") == [
        "in",
        "-o",
        "out",
        "--",
        "--num-processes",
    ]


def encode(signal: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, signal.T, rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def test_dataset_mode_writes_one_column_per_stem_resumes_and_pushes(
    tmp_path: Path, speech_toy_dir: str, hub_server, capsys: pytest.CaptureFixture[str]
) -> None:
    from datasets import Audio, Dataset, DatasetDict, load_dataset, load_from_disk
    from transformers import pipeline

    mixtures = [sines([300.0 + 100 * k], 8000, 0.2 + 0.1 * k) for k in range(3)]
    cells = [{"bytes": encode(mixture, 8000), "path": None} for mixture in mixtures]
    cells.insert(1, {"bytes": b"not audio at all", "path": None})
    source = Dataset.from_dict({"id": ["r0", "bad", "r2", "r3"], "mixture": cells})
    DatasetDict({"test": source.cast_column("mixture", Audio(decode=False))}).save_to_disk(
        tmp_path / "corpus"
    )
    out = tmp_path / "separated"
    repo = f"{hub_server.username}/separated-{uuid.uuid4().hex[:8]}"
    argv = ["separate", "--dataset", str(tmp_path / "corpus"), "--split", "test", "-m", speech_toy_dir]
    argv += ["--output-dataset", str(out), "--bit-depth", "32", "-q"]
    assert main([*argv, "--push-to-hub", repo]) == 1
    err = capsys.readouterr().err
    assert "[test][1]: cannot decode the stored audio (Error opening the stored bytes" in err
    assert "3 done" in err and "1 failed" in err
    result = load_from_disk(str(out))["test"]
    assert result.column_names == ["id", "mixture", "speaker_1", "speaker_2"]
    assert result["id"] == ["r0", "r2", "r3"]  # the failed row is left out
    separator = pipeline("audio-source-separation", model=speech_toy_dir)
    for row in result:
        mixture, _ = soundfile.read(io.BytesIO(row["mixture"]["bytes"]), dtype="float32")
        expected = separator(mixture, sampling_rate=8000)
        for k, stem in enumerate(("speaker_1", "speaker_2")):
            stored, rate = soundfile.read(io.BytesIO(row[stem]["bytes"]), dtype="float32")
            assert rate == 8000
            np.testing.assert_array_equal(stored, expected[k]["audio"][0])
    pushed = load_dataset(repo, split="test").cast_column("speaker_2", Audio(decode=False))
    assert pushed["id"] == ["r0", "r2", "r3"]
    assert pushed[2]["speaker_2"]["bytes"] == result[2]["speaker_2"]["bytes"]

    # rerun: the three finished rows are skipped, the bad one retried; the dataset is the same
    assert main(argv) == 1
    assert "0 done, 3 skipped" in capsys.readouterr().err
    assert load_from_disk(str(out))["test"]["id"] == ["r0", "r2", "r3"]


def test_dataset_mode_takes_any_audio_column_and_refuses_taken_stem_names(
    tmp_path: Path, speech_toy_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from datasets import Audio, Dataset, load_from_disk

    cells = [{"bytes": encode(sines([200.0 + 50 * k], 8000, 0.2), 8000), "path": None} for k in range(2)]
    podcast = Dataset.from_dict({"text": ["hello", "world"], "audio": cells, "speaker_1": ["a", "b"]})
    podcast.cast_column("audio", Audio()).save_to_disk(tmp_path / "podcast")  # decoded by default
    argv = ["separate", "--dataset", str(tmp_path / "podcast"), "-m", speech_toy_dir, "-q"]
    assert main([*argv, "--output-dataset", str(tmp_path / "refused")]) == 2
    assert "stem column(s) speaker_1 already exist" in capsys.readouterr().err
    out = tmp_path / "out"
    assert (
        main([*argv, "--output-dataset", str(out), "--stem-column-prefix", "sep_", "--format", "flac"]) == 0
    )
    result = load_from_disk(str(out))["train"]  # a plain Dataset becomes the "train" split
    assert result.column_names == ["text", "audio", "speaker_1", "sep_speaker_1", "sep_speaker_2"]
    assert result.features["sep_speaker_1"].decode is False and result["text"] == ["hello", "world"]
    stem, rate = soundfile.read(io.BytesIO(result[1]["sep_speaker_2"]["bytes"]))
    assert (
        rate == 8000
        and stem.shape == (1600,)
        and soundfile.info(io.BytesIO(result[1]["sep_speaker_2"]["bytes"])).format == "FLAC"
    )


def test_job_option_errors_are_one_line_before_any_model_is_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "out")
    cases = [
        (["separate", "-o", out], "nothing to separate"),
        (["separate", "a.wav", "--dataset", "d", "--output-dataset", out], "give no INPUT"),
        (["separate", "--dataset", "d"], "needs --output-dataset"),
        (["separate", "--dataset", "d", "--output-dataset", out, "--format", "mp3"], "lossless"),
        (["separate", "a.wav", "--output-dataset", out], "--output-dataset only applies with --dataset"),
        (["separate", "a.wav", "--num-processes", "0"], "--num-processes must be >= 1"),
        (["separate", "a.wav", "--num-processes", "2", "--no-manifest"], "need the manifest"),
        (["separate", "a.wav", "--extensions", ","], "--extensions must name"),
        (["separate", "a.wav", "--two-stems", ""], "--two-stems needs a source"),
        (["separate", "a.wav", "-m", "/nonexistent/model", "--filename", "{track}"], "must contain {stem}"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (argv, lines)
    assert not Path(out).exists()
