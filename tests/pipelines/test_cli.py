"""`demixers separate`: outputs on disk, formats, clipping, overwrite, failures, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from demixers import bundled
from demixers.cli import main
from tests.pipelines.conftest import sines

MUSIC_STEMS = ["drums", "bass", "other", "vocals"]


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


def error_lines(captured: str) -> list[str]:
    return [line for line in captured.splitlines() if line.strip()]


@pytest.fixture()
def mixture_file(tmp_path: Path) -> tuple[Path, np.ndarray]:
    mixture = sines([330.0, 550.0], 22050, 1.2)
    path = tmp_path / "inputs" / "song.flac"
    path.parent.mkdir()
    soundfile.write(path, mixture.T, 22050, subtype="PCM_24")
    return path, soundfile.read(path, dtype="float32", always_2d=True)[0].T


@pytest.mark.parametrize(
    ("fmt", "bit_depth", "subtype"),
    [
        ("wav", None, "PCM_16"),
        ("wav", "24", "PCM_24"),
        ("wav", "32", "FLOAT"),
        ("flac", "24", "PCM_24"),
        ("mp3", None, None),
    ],
)
def test_writes_every_stem_in_every_format(
    tmp_path: Path, music_toy_dir: str, mixture_file, fmt: str, bit_depth: str | None, subtype: str | None
) -> None:
    path, mixture = mixture_file
    out = tmp_path / "out"
    argv = [
        "separate",
        str(path),
        "-m",
        music_toy_dir,
        "-o",
        str(out),
        "--format",
        fmt,
        "--segment",
        "0.5",
        "-q",
    ]
    if bit_depth:
        argv += ["--bit-depth", bit_depth]
    assert main(argv) == 0
    assert files_under(out) == ["song", *sorted(f"song/{name}.{fmt}" for name in MUSIC_STEMS)]
    stems = []
    for name in MUSIC_STEMS:
        info = soundfile.info(out / "song" / f"{name}.{fmt}")
        assert info.samplerate == 22050 and info.channels == 2
        if subtype is not None:
            assert info.subtype == subtype and info.frames == mixture.shape[1]
        stems.append(soundfile.read(out / "song" / f"{name}.{fmt}", dtype="float32", always_2d=True)[0].T)
    if fmt != "mp3":  # lossless: the written stems add up to the input mixture
        total = np.sum(stems, axis=0)
        np.testing.assert_allclose(total[:, 200:-200], mixture[:, 200:-200], atol=2e-3)


def test_clipping_rescales_all_stems_together_for_integer_formats(
    tmp_path: Path, music_toy_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    loud = sines([220.0, 330.0], 44100, 0.5, amplitude=8.0)  # the loudest toy stem peaks near 2.5
    path = tmp_path / "loud.wav"
    soundfile.write(path, loud.T, 44100, subtype="FLOAT")
    assert main(["separate", str(path), "-m", music_toy_dir, "-o", str(tmp_path / "int"), "-q"]) == 0
    warning = capsys.readouterr().err
    assert "scaled together" in warning and "loud.wav" in warning
    stems = [soundfile.read(tmp_path / "int" / "loud" / f"{n}.wav", always_2d=True)[0].T for n in MUSIC_STEMS]
    peak = max(np.abs(s).max() for s in stems)
    assert 0.99 < peak <= 1.0
    # one common factor: the written stems still add up to the mixture, scaled
    total = np.sum(stems, axis=0)[:, 300:-300]
    scale = float(np.sum(total * loud[:, 300:-300]) / np.sum(total * total))
    assert scale > 2.0
    np.testing.assert_allclose(total * scale, loud[:, 300:-300], atol=2e-3 * scale)
    # 32-bit float keeps values beyond [-1, 1] and warns about nothing
    assert (
        main(
            [
                "separate",
                str(path),
                "-m",
                music_toy_dir,
                "-o",
                str(tmp_path / "float"),
                "--bit-depth",
                "32",
                "-q",
            ]
        )
        == 0
    )
    assert "scaled" not in capsys.readouterr().err
    floats = [
        soundfile.read(tmp_path / "float" / "loud" / f"{n}.wav", always_2d=True)[0].T for n in MUSIC_STEMS
    ]
    np.testing.assert_allclose(np.sum(floats, axis=0), loud, atol=1e-5)


def test_existing_outputs_need_overwrite_and_are_checked_before_separating(
    tmp_path: Path, music_toy_dir: str, mixture_file, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    path, _ = mixture_file
    out = tmp_path / "out"
    argv = ["separate", str(path), "-m", music_toy_dir, "-o", str(out), "-q"]
    assert main(argv) == 0
    before = {name: (out / "song" / f"{name}.wav").read_bytes() for name in MUSIC_STEMS}
    (out / "song" / "bass.wav").write_bytes(b"keep me")

    def no_separation(*args, **kwargs):
        raise AssertionError("separated although the outputs exist")

    with monkeypatch.context() as patch:
        patch.setattr(
            "demixers.pipelines.audio_source_separation.AudioSourceSeparationPipeline.__call__", no_separation
        )
        assert main(argv) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "bass.wav" in lines[0] and "--overwrite" in lines[0]
    (out / "song" / "drums.wav").unlink()
    assert main(argv) == 1  # a partly present set of stems is refused too
    assert "drums.wav" not in capsys.readouterr().err
    assert (out / "song" / "bass.wav").read_bytes() == b"keep me"
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "song" / "bass.wav").read_bytes() == before["bass"]
    assert files_under(out) == ["song", *sorted(f"song/{name}.wav" for name in MUSIC_STEMS)]


def test_several_inputs_report_each_failure_and_separate_the_good_ones(
    tmp_path: Path, speech_toy_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.wav"
    soundfile.write(good, sines([300.0], 16000, 0.5)[0], 16000, subtype="PCM_16")
    (tmp_path / "text.wav").write_text("not audio")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "noise.wav").write_bytes(np.random.default_rng(0).bytes(2000))
    (tmp_path / "dir.wav").mkdir()
    nan = np.zeros(800, dtype=np.float32)
    nan[123] = np.nan
    soundfile.write(tmp_path / "nan.wav", nan, 8000, subtype="FLOAT")
    bad = ["missing.wav", "text.wav", "empty.wav", "noise.wav", "dir.wav", "nan.wav"]
    out = tmp_path / "out"
    argv = [
        "separate",
        *[str(tmp_path / name) for name in [bad[0], "good.wav", *bad[1:]]],
        "-m",
        speech_toy_dir,
        "-o",
        str(out),
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = error_lines(captured.err)
    assert len(lines) == len(bad), lines
    for name, line in zip(bad, lines, strict=True):
        assert line.startswith("demixers separate: error: ") and name in line
    assert "index 123" in lines[-1]
    assert "good.wav" in captured.out
    assert files_under(out) == ["good", "good/speaker_1.wav", "good/speaker_2.wav"]
    assert soundfile.info(out / "good" / "speaker_1.wav").frames == 8000


def test_usage_errors_exit_2_with_one_line(
    tmp_path: Path, music_toy_dir: str, mixture_file, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    path, _ = mixture_file
    out = str(tmp_path / "out")
    monkeypatch.setattr(bundled, "DEFAULT_MODEL_DIR", tmp_path / "not_installed")  # a broken installation
    cases = [
        (["separate", str(path), "-o", out], "bundled default model is incomplete"),
        (["separate", str(path), "-m", str(tmp_path / "nope"), "-o", out], "could not load model"),
        (
            ["separate", str(path), "-m", music_toy_dir, "-o", out, "--format", "flac", "--bit-depth", "32"],
            "bit-depth",
        ),
        (
            ["separate", str(path), "-m", music_toy_dir, "-o", out, "--format", "mp3", "--bit-depth", "24"],
            "mp3",
        ),
        (["separate", str(path), "-m", music_toy_dir, "-o", out, "--overlap", "1.5"], "overlap"),
        (["separate", str(path), "-m", music_toy_dir, "-o", out, "--segment", "0"], "segment"),
        (["separate", str(path), "-m", music_toy_dir, "-o", out, "--batch-size", "0"], "batch_size"),
        (["separate", str(path), "-m", music_toy_dir, "-o", str(path)], "not a directory"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        lines = error_lines(capsys.readouterr().err)
        assert len(lines) == 1 and message in lines[0], (argv, lines)
    monkeypatch.setitem(sys.modules, "lameenc", None)  # not installed
    assert main(["separate", str(path), "-m", music_toy_dir, "-o", out, "--format", "mp3"]) == 2
    assert "lameenc" in capsys.readouterr().err
    assert not Path(out).exists()


def test_same_stem_twice_is_refused_for_the_second_input(tmp_path: Path, speech_toy_dir: str, capsys) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        soundfile.write(tmp_path / folder / "take.wav", sines([300.0], 8000, 0.2)[0], 8000)
    out = tmp_path / "out"
    code = main(
        [
            "separate",
            str(tmp_path / "a" / "take.wav"),
            str(tmp_path / "b" / "take.wav"),
            "-m",
            speech_toy_dir,
            "-o",
            str(out),
            "-q",
        ]
    )
    assert code == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "b/take.wav" in lines[0] and "already used" in lines[0]


def test_real_subprocess_with_mossformer(tmp_path: Path, mossformer_dir: str) -> None:
    path = tmp_path / "talk.wav"
    soundfile.write(path, sines([300.0, 1200.0], 16000, 1.0).sum(axis=0), 16000, subtype="PCM_16")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    command = [sys.executable, "-m", "demixers", "separate", str(path), str(tmp_path / "missing.wav")]
    command += ["-m", mossformer_dir, "-o", str(out), "--format", "flac", "--segment", "0.5"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert lines == [f"demixers separate: error: {tmp_path / 'missing.wav'}: no such file"], lines
    assert files_under(out) == ["talk", "talk/speaker_1.flac", "talk/speaker_2.flac"]
    for name in ("speaker_1", "speaker_2"):
        info = soundfile.info(out / "talk" / f"{name}.flac")
        assert (info.samplerate, info.channels, info.frames) == (16000, 1, 16000)
