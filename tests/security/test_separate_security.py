"""Issue #14, output side: `demixers separate`, the pipeline and the CLI under hostile or careless use.

Untrusted model folders (labels that are paths, corrupt weights, configs that are not JSON),
hostile inputs (file names, headers that lie about their size, absurd rates and batch sizes) and
hostile conditions (a full disk, a failure half-way through replacing stems, SIGTERM, SIGKILL).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile

from demixers.audio import AudioFile, check_sampling_rate, read_audio
from demixers.audio import validation as audio_validation
from demixers.cli import main
from demixers.feature_extraction_separation import SourceSeparationFeatureExtractor
from demixers.pipelines import cli as separate_cli

REPO = Path(__file__).resolve().parents[2]
MUSIC_STEMS = ["drums", "bass", "other", "vocals"]
TEMPORARY = re.compile(r"demixers-tmp|\.tmp$|\.part$")


def tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


def temporaries(folder: Path) -> list[str]:
    return [name for name in tree(folder) if TEMPORARY.search(name)]


def stereo_mixture(path: Path, seconds: float = 0.6, sampling_rate: int = 22050) -> np.ndarray:
    t = np.arange(round(seconds * sampling_rate)) / sampling_rate
    mixture = np.stack([0.3 * np.sin(2 * np.pi * 330 * t), 0.3 * np.sin(2 * np.pi * 550 * t + 1)])
    soundfile.write(path, mixture.T.astype(np.float32), sampling_rate, subtype="FLOAT")
    return mixture.astype(np.float32)


def flac_claiming_frames(frames: int, sampling_rate: int = 8000) -> bytes:
    """A valid 100-sample FLAC whose STREAMINFO claims ``frames`` samples (a 36-bit field)."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(100, dtype=np.float32), sampling_rate, format="FLAC", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    # STREAMINFO bytes 18..25: rate (20 bits), channels - 1 (3), bits - 1 (5), total samples (36)
    bits = int.from_bytes(data[18:26], "big")
    bits = (bits & ~((1 << 36) - 1)) | frames
    data[18:26] = bits.to_bytes(8, "big")
    return bytes(data)


def wav_header_claiming_frames(frames: int) -> bytes:
    """A 44-byte PCM_16 mono wav header that claims ``frames`` frames of data and holds none."""
    import struct

    data_bytes = min(2 * frames, 0xFFFFFFFF - 36)
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + fmt
        + b"data"
        + struct.pack("<I", data_bytes)
    )


# -- 6. sizes claimed by a header are not trusted; rates below 1 kHz are refused ----------------


@pytest.mark.parametrize("as_path", [True, False])
def test_reader_does_not_preallocate_the_claimed_frame_count(tmp_path: Path, as_path: bool) -> None:
    encoded = flac_claiming_frames(2**33)
    with soundfile.SoundFile(io.BytesIO(encoded)) as handle:
        assert handle.frames == 2**33  # libsndfile believes the header
    source: Path | bytes = encoded
    if as_path:
        source = tmp_path / "liar.flac"
        source.write_bytes(encoded)
    tracemalloc.start()
    try:
        # libsndfile decodes the 100 samples, or (from a file) fails seeking past the end: either is
        # fine for a corrupt file, as long as it is a one-line error and nothing huge was allocated
        try:
            waveform, rate = read_audio(source)
        except ValueError as error:
            assert "not a readable audio file" in str(error)
        else:
            assert rate == 8000 and waveform.shape == (1, 100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB allocated for 100 samples"


def test_44_byte_wav_claiming_2_31_frames_is_an_empty_file_not_an_allocation(tmp_path: Path) -> None:
    path = tmp_path / "header_only.wav"
    path.write_bytes(wav_header_claiming_frames(2**31))
    assert path.stat().st_size == 44
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="zero samples"):
            read_audio(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20


def test_streamed_reader_of_a_lying_header_reads_only_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "liar.flac"
    path.write_bytes(flac_claiming_frames(2**33))
    tracemalloc.start()
    samples = 0
    try:
        with pytest.raises(ValueError, match="not a readable audio file"):
            for block in AudioFile(path).blocks():
                samples += block.shape[-1]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert samples <= 100
    assert peak < 16 * 2**20


@pytest.mark.parametrize("rate", [1, 8, 999])
def test_rates_below_1_khz_are_refused_with_the_value(tmp_path: Path, rate: int) -> None:
    assert audio_validation.MIN_SAMPLING_RATE == 1000
    with pytest.raises(ValueError, match=f"{rate} Hz"):
        check_sampling_rate(rate)
    with pytest.raises(ValueError, match=f"{rate} Hz"):
        SourceSeparationFeatureExtractor(sampling_rate=8000)(np.zeros(100, np.float32), sampling_rate=rate)
    with pytest.raises(ValueError, match=f"{rate} Hz"):
        SourceSeparationFeatureExtractor(sampling_rate=rate)
    path = tmp_path / "slow.wav"
    soundfile.write(path, np.zeros(2000, dtype=np.float32), rate)
    with pytest.raises(ValueError, match=f"slow.wav sampling rate is {rate} Hz"):
        read_audio(path)
    with pytest.raises(ValueError, match=f"slow.wav sampling rate is {rate} Hz"):
        AudioFile(path)
    assert check_sampling_rate(1000) == 1000


def test_pipeline_refuses_rates_below_1_khz(speech_toy) -> None:
    with pytest.raises(ValueError, match="500 Hz"):
        speech_toy(np.zeros(4000, np.float32), sampling_rate=500)
    with pytest.raises(ValueError, match="500 Hz"):
        speech_toy({"array": np.zeros(4000, np.float32), "sampling_rate": 500})


# -- 7. a list input: an error names the right item ------------------------------------------


def test_list_input_error_names_the_failing_item_for_model_errors(speech_toy, monkeypatch) -> None:
    quiet = np.full(8000, 0.1, dtype=np.float32)
    loud = np.full(8000, 0.9, dtype=np.float32)
    forward = speech_toy._separate_chunks

    def fails_on_loud_chunks(chunks):
        if float(chunks.abs().max()) > 0.5:
            raise RuntimeError("CUDA out of memory (simulated)")
        return forward(chunks)

    monkeypatch.setattr(speech_toy, "_separate_chunks", fails_on_loud_chunks)
    with pytest.raises(RuntimeError, match=r"^inputs\[1\]: CUDA out of memory"):
        speech_toy([quiet, loud], sampling_rate=8000)
    with pytest.raises(RuntimeError, match=r"^inputs\[2\]: CUDA out of memory"):
        speech_toy([{"array": quiet, "sampling_rate": 8000}] * 2 + [{"array": loud, "sampling_rate": 8000}])


def test_list_input_bad_option_is_not_blamed_on_inputs_0(speech_toy) -> None:
    good = np.zeros(8000, dtype=np.float32)
    with pytest.raises(ValueError) as error_info:
        speech_toy([good, good], sampling_rate=8000, segment=-1.0)
    assert "segment" in str(error_info.value)
    assert "inputs[" not in str(error_info.value)
    with pytest.raises(ValueError) as error_info:
        speech_toy([good, good], sampling_rate=10)
    assert "10 Hz" in str(error_info.value) and "inputs[" not in str(error_info.value)


def test_list_input_error_from_an_unrebuildable_exception_keeps_its_type_and_names_the_item(
    speech_toy, monkeypatch
) -> None:
    class CodedError(RuntimeError):
        def __init__(self, code: int) -> None:
            super().__init__(code)
            self.code = code

        def __str__(self) -> str:
            return f"decoder error {self.code}"

    good = np.full(8000, 0.25, dtype=np.float32)
    calls = iter(range(100))
    forward = speech_toy._separate_chunks

    def fails_on_second_item(chunks):
        if next(calls) >= 1:
            raise CodedError(7)
        return forward(chunks)

    monkeypatch.setattr(speech_toy, "_separate_chunks", fails_on_second_item)
    with pytest.raises(CodedError) as error_info:
        speech_toy([good, good], sampling_rate=8000, segment=1.0)
    assert error_info.value.code == 7
    assert "while separating inputs[1]" in error_info.value.__notes__


# -- 1. every output path stays inside -o -----------------------------------------------------


def model_with_labels(source_dir: str, destination: Path, labels: list[str]) -> str:
    """A copy of a saved model whose config.json is edited on disk (no validation on the way)."""
    shutil.copytree(source_dir, destination)
    config_path = destination / "config.json"
    config = json.loads(config_path.read_text())
    config["source_names"] = labels
    config_path.write_text(json.dumps(config))
    return str(destination)


def test_source_names_that_are_paths_write_nothing_outside_the_output_folder(
    tmp_path: Path, speech_toy_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    absolute = tmp_path / "elsewhere" / "y"  # an absolute label (under tmp_path, not the real /tmp)
    model = model_with_labels(speech_toy_dir, tmp_path / "evil_model", ["../../x", str(absolute)])
    work = tmp_path / "work"
    out = work / "deep" / "out"
    work.mkdir()
    song = work / "song.wav"
    soundfile.write(song, np.full(8000, 0.1, dtype=np.float32), 8000)
    before = tree(tmp_path)
    code = main(["separate", str(song), "-m", model, "-o", str(out), "-q"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    # refused at the writer (this branch) or where the config is loaded (label validation): one line
    assert len(lines) == 1 and ("../../x" in lines[0] or "source_names" in lines[0]), err
    assert "Traceback" not in err
    assert tree(tmp_path) == before  # nothing created anywhere: not x.wav, not y.wav, not even out/


@pytest.mark.parametrize(
    "labels",
    [["ok", ".."], ["ok", "."], ["ok", ""], ["a/b", "ok"], ["ok", "ok"], ["ok", "bad\nname"], ["a\\b", "ok"]],
)
def test_labels_that_are_not_plain_file_names_are_refused(labels: list[str]) -> None:
    with pytest.raises(ValueError, match="source name"):
        separate_cli.check_labels(labels, "model")
    assert separate_cli.check_labels(["vocals", "drums.v2", "speaker 1"], "model") == [
        "vocals",
        "drums.v2",
        "speaker 1",
    ]


def test_writer_refuses_targets_outside_its_root_even_from_a_direct_caller(tmp_path: Path) -> None:
    out = tmp_path / "out"

    class OneBlock:
        sampling_rate, channels, length = 8000, 1, 4

        def __iter__(self):
            yield np.zeros((2, 1, 4), dtype=np.float32)

    escaping = [out / "song" / "a.wav", out / "song" / ".." / ".." / "b.wav"]
    with pytest.raises(ValueError, match="outside the output folder"):
        separate_cli.write_stream(OneBlock(), escaping, "wav", 32, name="song", root=out)
    (tmp_path / "outside").mkdir()
    (out / "song").mkdir(parents=True)
    (out / "song" / "link").symlink_to(tmp_path / "outside")  # a folder symlink out of -o
    with pytest.raises(ValueError, match="outside the output folder"):
        separate_cli.write_stream(
            OneBlock(),
            [out / "song" / "link" / "a.wav", out / "song" / "link" / "b.wav"],
            "wav",
            32,
            root=out,
        )
    assert tree(tmp_path / "outside") == []
    separate_cli.write_stream(
        OneBlock(), [out / "song" / "a.wav", out / "song" / "b.wav"], "wav", 32, root=out
    )
    assert sorted(p.name for p in (out / "song").iterdir()) == ["a.wav", "b.wav", "link"]


@pytest.mark.parametrize(("file_name", "folder"), [("...wav", "__"), ("..wav", "_"), ("a\\b.wav", "a_b")])
def test_input_whose_stem_is_not_a_folder_name_gets_a_safe_one(
    tmp_path: Path, speech_toy_dir: str, file_name: str, folder: str
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    source = inputs / file_name
    soundfile.write(source, np.full(8000, 0.1, dtype=np.float32), 8000, format="WAV")
    out = tmp_path / "space" / "out"
    assert main(["separate", str(source), "-m", speech_toy_dir, "-o", str(out), "-q"]) == 0
    assert tree(tmp_path / "space") == [
        "out",
        f"out/{folder}",
        f"out/{folder}/speaker_1.wav",
        f"out/{folder}/speaker_2.wav",
    ]


# -- 2. --overwrite replaces the stems of one input all or nothing ----------------------------


def write_old_stems(folder: Path) -> None:
    folder.mkdir(parents=True)
    for index, name in enumerate(MUSIC_STEMS):
        soundfile.write(
            folder / f"{name}.wav", np.full((100, 2), 0.01 * (index + 1), dtype=np.float32), 22050
        )


def assert_old_stems(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{name}.wav" for name in MUSIC_STEMS)
    for index, name in enumerate(MUSIC_STEMS):
        data, _ = soundfile.read(folder / f"{name}.wav", dtype="float32")
        assert data.shape == (100, 2)
        np.testing.assert_allclose(data, 0.01 * (index + 1), atol=1e-4)


@pytest.mark.parametrize("fmt_options", [[], ["--bit-depth", "32"]])
def test_overwrite_failing_on_the_second_rename_keeps_every_old_stem(
    tmp_path: Path,
    music_toy_dir: str,
    monkeypatch,
    capsys: pytest.CaptureFixture[str],
    fmt_options: list[str],
) -> None:
    song = tmp_path / "song.wav"
    stereo_mixture(song)
    out = tmp_path / "out"
    write_old_stems(out / "song")
    real_replace = os.replace

    def replace(source, destination, *args, **kwargs):
        staged = Path(source).name.endswith(".tmp")  # a new stem, not a backup (.old)
        if Path(destination).name == "bass.wav" and staged:
            raise OSError(errno.EIO, "Input/output error (injected)", str(destination))
        return real_replace(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    argv = ["separate", str(song), "-m", music_toy_dir, "-o", str(out), "--overwrite", "-q", *fmt_options]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "injected" in err and "Traceback" not in err
    assert_old_stems(out / "song")  # drums.wav was renamed first: it must be the old one again
    monkeypatch.setattr(os, "replace", real_replace)
    assert main(argv) == 0  # and a later run replaces the whole set
    assert sorted(p.name for p in (out / "song").iterdir()) == sorted(f"{n}.wav" for n in MUSIC_STEMS)
    assert soundfile.info(out / "song" / "drums.wav").frames == round(0.6 * 22050)


def test_overwrite_where_some_stems_are_new_removes_the_new_ones_on_failure(
    tmp_path: Path, music_toy_dir: str, monkeypatch
) -> None:
    song = tmp_path / "song.wav"
    stereo_mixture(song)
    out = tmp_path / "out"
    (out / "song").mkdir(parents=True)
    soundfile.write(out / "song" / "vocals.wav", np.full((100, 2), 0.04, dtype=np.float32), 22050)
    real_replace = os.replace

    def replace(source, destination, *args, **kwargs):
        if Path(destination).name == "vocals.wav" and Path(source).name.endswith(".tmp"):
            raise OSError(errno.EIO, "Input/output error (injected)")
        return real_replace(source, destination, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    assert main(["separate", str(song), "-m", music_toy_dir, "-o", str(out), "--overwrite", "-q"]) == 1
    assert tree(out) == ["song", "song/vocals.wav"]
    np.testing.assert_allclose(soundfile.read(out / "song" / "vocals.wav")[0], 0.04, atol=1e-4)


def test_overwrite_failing_in_the_encoder_of_the_second_stem_keeps_every_old_stem(
    tmp_path: Path, music_toy_dir: str, monkeypatch
) -> None:
    song = tmp_path / "song.wav"
    stereo_mixture(song)
    out = tmp_path / "out"
    write_old_stems(out / "song")
    real_transcode = separate_cli._transcode
    calls = []

    def transcode(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise RuntimeError("encoder crashed (injected)")
        return real_transcode(*args, **kwargs)

    monkeypatch.setattr(separate_cli, "_transcode", transcode)
    assert main(["separate", str(song), "-m", music_toy_dir, "-o", str(out), "--overwrite", "-q"]) == 1
    assert len(calls) == 2
    assert_old_stems(out / "song")


# -- 4. a full disk is reported as such, with the path ----------------------------------------


def test_full_disk_in_libsndfile_is_reported_with_the_path(
    tmp_path: Path, speech_toy_dir: str, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    song = tmp_path / "song.wav"
    soundfile.write(song, np.full(8000, 0.1, dtype=np.float32), 8000)
    out = tmp_path / "out"

    def write(self, data):
        raise soundfile.LibsndfileError(2)  # SF_ERR_SYSTEM: what a failed write(2) becomes

    class Usage:
        total, used, free = 10 * 2**30, 10 * 2**30, 0

    monkeypatch.setattr(soundfile.SoundFile, "write", write)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage())
    assert str(soundfile.LibsndfileError(2)) == "System error."
    assert main(["separate", str(song), "-m", speech_toy_dir, "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "disk is full" in lines[0] and str(out / "song" / "speaker_1.wav") in lines[0]
    assert "System error" not in lines[0]
    assert tree(out) == []


def test_enospc_while_encoding_mp3_is_reported_with_the_path(
    tmp_path: Path, speech_toy_dir: str, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("lameenc")
    song = tmp_path / "song.wav"
    soundfile.write(song, np.full(8000, 0.1, dtype=np.float32), 8000)
    out = tmp_path / "out"
    real_transcode = separate_cli._transcode

    def transcode(source, target, *args):
        if Path(target).name.startswith(".speaker_2"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_transcode(source, target, *args)

    monkeypatch.setattr(separate_cli, "_transcode", transcode)
    assert main(["separate", str(song), "-m", speech_toy_dir, "-o", str(out), "--format", "mp3", "-q"]) == 1
    line = capsys.readouterr().err.strip()
    assert "\n" not in line
    assert "disk is full" in line and str(out / "song" / "speaker_2.mp3") in line
    assert tree(out) == []


def test_other_libsndfile_write_errors_name_the_path(
    tmp_path: Path, speech_toy_dir: str, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    song = tmp_path / "song.wav"
    soundfile.write(song, np.full(8000, 0.1, dtype=np.float32), 8000)
    out = tmp_path / "out"

    def write(self, data):
        raise soundfile.LibsndfileError(2)

    monkeypatch.setattr(soundfile.SoundFile, "write", write)  # plenty of space left: not "disk full"
    assert main(["separate", str(song), "-m", speech_toy_dir, "-o", str(out), "-q"]) == 1
    line = capsys.readouterr().err.strip()
    assert str(out / "song" / "speaker_1.wav") in line and "could not write" in line
    assert "disk is full" not in line


# -- 3. SIGTERM like SIGINT; temporaries of a SIGKILLed run are cleaned by the next one -------

SLOW_RUN = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    import demixers
    from tests.toy_models import ToySplitterConfig, ToySplitterForSourceSeparation
    demixers.register_model_family(ToySplitterConfig, ToySplitterForSourceSeparation)
    from demixers.cli import main
    from demixers.pipelines.audio_source_separation import AudioSourceSeparationPipeline

    forward = AudioSourceSeparationPipeline._separate_chunks

    def slow(self, chunks):
        time.sleep(0.5)  # long enough to be interrupted while the temporaries exist
        return forward(self, chunks)

    AudioSourceSeparationPipeline._separate_chunks = slow
    sys.exit(main(sys.argv[1:]))
    """
)


def start_slow_run(tmp_path: Path, model: str, out: Path, *options: str) -> subprocess.Popen:
    script = tmp_path / "slow_run.py"
    script.write_text(SLOW_RUN.format(repo=str(REPO)))
    song = tmp_path / "song.wav"
    stereo_mixture(song, seconds=20.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(script), "separate", str(song), "-m", model, "-o", str(out)]
    return subprocess.Popen(
        [*command, "--segment", "0.5", "-q", *options], env=env, stderr=subprocess.PIPE, text=True
    )


def wait_for_temporaries(process: subprocess.Popen, folder: Path, timeout: float = 240.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = temporaries(folder)
        if found:
            time.sleep(1.0)  # well inside the separation loop
            return found
        if process.poll() is not None:
            raise AssertionError(f"the run ended early ({process.returncode}): {process.stderr.read()}")
        time.sleep(0.1)
    process.kill()
    raise AssertionError("no temporary file appeared")


def test_sigterm_mid_run_removes_temporaries_and_exits_143(tmp_path: Path, music_toy_dir: str) -> None:
    out = tmp_path / "out"
    process = start_slow_run(tmp_path, music_toy_dir, out)
    try:
        wait_for_temporaries(process, out)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 143, err
    assert "Traceback" not in err and "terminated" in err
    assert tree(out) == []  # no temporaries, no stems, and the folder it created is gone


def test_sigkill_leaves_recognisable_temporaries_that_the_next_run_removes(
    tmp_path: Path, music_toy_dir: str
) -> None:
    out = tmp_path / "out"
    process = start_slow_run(tmp_path, music_toy_dir, out, "--bit-depth", "32")
    try:
        wait_for_temporaries(process, out)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    left = temporaries(out)
    assert left and all(f"demixers-tmp-{process.pid}-" in name for name in left), left
    folder = out / "song"
    # not ours: a live process's temporary (this test's pid), names that only look similar, user files
    foreign = {
        f".drums.wav.demixers-tmp-{os.getpid()}-0123abcd.tmp": b"live run",
        ".drums.wav.demixers-tmp-x-0123abcd.tmp": b"not a pid",
        "drums.wav.demixers-tmp-1-0123abcd.tmp.keep": b"not the pattern",
        "notes.txt": b"mine",
    }
    for name, content in foreign.items():
        (folder / name).write_bytes(content)
    assert main(["separate", str(tmp_path / "song.wav"), "-m", music_toy_dir, "-o", str(out), "-q"]) == 0
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([*foreign, *(f"{n}.wav" for n in MUSIC_STEMS)])
    for name, content in foreign.items():
        assert (folder / name).read_bytes() == content


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_backup_of_a_killed_replacement_is_put_back(tmp_path: Path) -> None:
    folder = tmp_path / "song"
    folder.mkdir()
    pid = dead_pid()
    (folder / "drums.wav").write_bytes(b"new drums")  # the killed run had renamed this one
    (folder / f".drums.wav.demixers-tmp-{pid}-0123abcd.old").write_bytes(b"old drums")
    (folder / "bass.wav").write_bytes(b"old bass")  # ... not yet this one
    (folder / f".bass.wav.demixers-tmp-{pid}-0123abcd.old").write_bytes(b"old bass")
    (folder / f".bass.wav.demixers-tmp-{pid}-0123abcd.tmp").write_bytes(b"new bass")
    (folder / "other.wav").write_bytes(b"old other")  # backed up as a hard link, not replaced yet
    os.link(folder / "other.wav", folder / f".other.wav.demixers-tmp-{pid}-0123abcd.old")
    cleaned = separate_cli.remove_stale_temporaries(folder)
    assert len(cleaned) == 4
    assert sorted(p.name for p in folder.iterdir()) == ["bass.wav", "drums.wav", "other.wav"]
    assert (folder / "other.wav").read_bytes() == b"old other"
    assert (folder / "drums.wav").read_bytes() == b"old drums"
    assert (folder / "bass.wav").read_bytes() == b"old bass"


# -- 5. corrupt model files, absurd sizes, memory errors: one line, never a traceback ----------


def corrupt_copy(source_dir: str, destination: Path, how: str) -> str:
    shutil.copytree(source_dir, destination)
    if how == "truncated safetensors":
        weights = destination / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "garbage safetensors":
        (destination / "model.safetensors").write_bytes(b"\xff" * 8 + b"not a header")
    elif how == "config not json":
        (destination / "config.json").write_text('{"model_type": "demixers_toy_splitter", ')
    return str(destination)


@pytest.mark.parametrize("how", ["truncated safetensors", "garbage safetensors", "config not json"])
def test_separate_with_a_corrupt_model_folder_is_one_line_and_exit_2(
    tmp_path: Path, speech_toy_dir: str, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    model = corrupt_copy(speech_toy_dir, tmp_path / "model", how)
    song = tmp_path / "song.wav"
    soundfile.write(song, np.full(8000, 0.1, dtype=np.float32), 8000)
    assert main(["separate", str(song), "-m", model, "-o", str(tmp_path / "out"), "-q"]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "could not load model" in lines[0] and model in lines[0], lines
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("how", ["truncated safetensors", "config not json"])
def test_evaluate_with_a_corrupt_model_folder_is_one_line_and_exit_2(
    tmp_path: Path, speech_toy_dir: str, capsys: pytest.CaptureFixture[str], how: str
) -> None:
    model = corrupt_copy(speech_toy_dir, tmp_path / "model", how)
    code = main(
        ["evaluate", "-m", model, "-d", str(tmp_path / "nowhere"), "-o", str(tmp_path / "eval"), "-q"]
    )
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "could not load model" in lines[0], lines


def test_absurd_batch_size_is_refused_before_allocating(
    tmp_path: Path, speech_toy_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    song = tmp_path / "song.wav"
    soundfile.write(song, np.full(8000, 0.1, dtype=np.float32), 8000)
    tracemalloc.start()
    try:
        code = main(
            [
                "separate",
                str(song),
                "-m",
                speech_toy_dir,
                "-o",
                str(tmp_path / "out"),
                "--batch-size",
                "1000000000",
                "-q",
            ]
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 2
    line = capsys.readouterr().err.strip()
    assert "--batch-size 1000000000" in line and "GiB" in line and "\n" not in line
    assert peak < 256 * 2**20
    assert not (tmp_path / "out").exists()
    code = main(
        [
            "evaluate",
            "-m",
            speech_toy_dir,
            "-d",
            str(tmp_path / "nowhere"),
            "--batch-size",
            "1000000000",
            "-q",
        ]
    )
    assert code == 2
    assert "--batch-size 1000000000" in capsys.readouterr().err


def test_memory_error_while_separating_an_input_is_one_line_and_exit_1(
    tmp_path: Path, speech_toy_dir: str, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from demixers.pipelines.audio_source_separation import AudioSourceSeparationPipeline

    def no_memory(self, chunks):
        raise MemoryError

    monkeypatch.setattr(AudioSourceSeparationPipeline, "_separate_chunks", no_memory)
    song = tmp_path / "song.wav"
    soundfile.write(song, np.full(8000, 0.1, dtype=np.float32), 8000)
    assert main(["separate", str(song), "-m", speech_toy_dir, "-o", str(tmp_path / "out"), "-q"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "out of memory" in lines[0] and str(song) in lines[0], lines
    assert tree(tmp_path / "out") == []


@pytest.fixture()
def failing_subcommand(monkeypatch):
    """A subcommand ``boom`` whose run raises ``failing_subcommand.error`` (the dispatch every
    subcommand goes through)."""
    import types

    from demixers import cli as demixers_cli

    module = types.ModuleType("demixers_test_boom")
    module.configure_parser = lambda parser: None

    def run(args):
        raise module.error

    module.run = run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(demixers_cli.SUBCOMMANDS, "boom", (module.__name__, "raises"))
    return module


def safetensor_error() -> BaseException:
    from safetensors import SafetensorError

    return SafetensorError("Error while deserializing header: invalid header length")


@pytest.mark.parametrize(
    ("make_error", "code", "text"),
    [
        (safetensor_error, 2, "Error while deserializing header: invalid header length"),
        (lambda: json.JSONDecodeError("Expecting value", "{", 1), 2, "Expecting value"),
        (lambda: ValueError("first line\nsecond line"), 2, "first line"),
        (lambda: MemoryError(), 1, "out of memory"),
        (lambda: OSError(errno.ENOSPC, "No space left on device"), 1, "No space left on device"),
        (lambda: __import__("torch").OutOfMemoryError("CUDA out of memory"), 1, "CUDA out of memory"),
    ],
)
def test_top_level_dispatch_turns_expected_errors_into_one_line(
    failing_subcommand, monkeypatch, capsys: pytest.CaptureFixture[str], make_error, code: int, text: str
) -> None:
    monkeypatch.delenv("DEMIXERS_DEBUG", raising=False)
    failing_subcommand.error = make_error()
    assert main(["boom"]) == code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("demixers boom: error: ") and text in lines[0], lines


def test_top_level_dispatch_keeps_tracebacks_of_bugs_and_shows_all_with_demixers_debug(
    failing_subcommand, monkeypatch
) -> None:
    monkeypatch.delenv("DEMIXERS_DEBUG", raising=False)
    failing_subcommand.error = ZeroDivisionError("a bug")
    with pytest.raises(ZeroDivisionError):
        main(["boom"])
    monkeypatch.setenv("DEMIXERS_DEBUG", "1")
    failing_subcommand.error = ValueError("expected, but debugging")
    with pytest.raises(ValueError, match="debugging"):
        main(["boom"])


# -- 8. `demixers evaluate`: bad inputs are one line ------------------------------------------


@pytest.mark.parametrize(
    ("options", "text"),
    [
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--device", "tpu-ish"], "not a device name"),
        (["--segment", "-1"], "segment must be > 0"),
        (["--max-items", "0"], "--max-items must be positive"),
    ],
)
def test_evaluate_bad_options_are_one_line_and_exit_2(
    tmp_path: Path, speech_toy_dir: str, capsys: pytest.CaptureFixture[str], options: list[str], text: str
) -> None:
    import torch

    if options[0] == "--device" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    code = main(["evaluate", "-m", speech_toy_dir, "-d", str(tmp_path / "nowhere"), "-q", *options])
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and text in lines[0], lines


def test_evaluate_missing_dataset_is_one_line_and_exit_2(
    tmp_path: Path, speech_toy_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a corpus")
    for dataset in (tmp_path / "nowhere", tmp_path / "junk"):
        assert (
            main(["evaluate", "-m", speech_toy_dir, "-d", str(dataset), "-q", "-o", str(tmp_path / "e")]) == 2
        )
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(lines) == 1 and str(dataset) in lines[0], lines


def test_sigterm_handler_covers_model_loading_and_is_restored_after(
    tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = signal.getsignal(signal.SIGTERM)
    seen = []

    def load(model_id: str, device: str):
        seen.append(signal.getsignal(signal.SIGTERM))
        raise separate_cli.SeparationTerminatedError  # what that handler raises on SIGTERM

    monkeypatch.setattr(separate_cli, "_load_pipeline", load)
    song = tmp_path / "song.wav"
    soundfile.write(song, np.full(8000, 0.1, dtype=np.float32), 8000)
    assert main(["separate", str(song), "-m", str(tmp_path), "-o", str(tmp_path / "out"), "-q"]) == 143
    assert "terminated" in capsys.readouterr().err
    assert len(seen) == 1 and seen[0] not in (before, signal.SIG_DFL, signal.SIG_IGN)
    assert signal.getsignal(signal.SIGTERM) == before
