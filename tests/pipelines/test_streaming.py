"""The streaming file path (`stream_file`, `demixers separate`) against the in-memory pipeline.

Tolerances: soxr's streaming resampler reproduces its one-shot output bit for bit, the chunk
engine is the same generator for both paths and the whole-track statistics are accumulated over
the same fixed blocks, so streamed stems equal the in-memory ones exactly; the tests allow 1e-6
(absolute, signals of amplitude <= 1) so that a future change of float summation order would not
break them, and check exact equality where it is the design (resampling, engine blocking).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from transformers import pipeline

from demixers.audio import fit_blocks, resample, resample_blocks
from demixers.cli import main
from demixers.pipelines import cli as separate_cli
from demixers.pipelines.audio_source_separation import AudioSourceSeparationPipeline
from demixers.pipelines.chunking import (
    ChunkSettings,
    MixtureStatistics,
    iter_chunked,
    normalizes_input,
    separate_chunked,
)
from tests.pipelines.conftest import (
    BandSwapperConfig,
    BandSwapperForSourceSeparation,
    PositionalSplitterConfig,
    PositionalSplitterForSourceSeparation,
    SaturatingSplitterConfig,
    SaturatingSplitterForSourceSeparation,
    save_model,
    sines,
)

STREAM_TOLERANCE = 1e-6


def cut(array: np.ndarray, sizes: list[int]):
    """``array`` in consecutive pieces along its last axis, cycling through ``sizes``."""
    start, k = 0, 0
    while start < array.shape[-1]:
        yield array[..., start : start + sizes[k % len(sizes)]]
        start += sizes[k % len(sizes)]
        k += 1


def streamed(stream) -> np.ndarray:
    return np.concatenate(list(stream), axis=-1)


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) if folder.exists() else []


# -- building blocks -----------------------------------------------------------------------------


@pytest.mark.parametrize(("orig", "target"), [(16000, 44100), (44100, 8000), (48000, 44100), (8000, 8000)])
def test_block_resampling_equals_whole_signal_resampling_exactly(orig: int, target: int) -> None:
    rng = np.random.default_rng(0)
    for length in (1, 333, 50_001):
        stereo = (0.3 * rng.standard_normal((2, length))).astype(np.float32)
        whole = resample(stereo, orig, target)
        blocks = [
            np.zeros((2, 0), np.float32),
            *resample_blocks(cut(stereo, [4096, 17, 65536]), orig, target),
        ]
        np.testing.assert_array_equal(np.concatenate(blocks, axis=-1), whole)  # tolerance 0, length too
    # (sources, channels, time) blocks: every leading index is an independent channel
    stems = (0.3 * rng.standard_normal((3, 2, 20_000))).astype(np.float32)
    got = np.concatenate(list(resample_blocks(cut(stems, [999, 5000]), orig, target)), axis=-1)
    np.testing.assert_array_equal(got, np.stack([resample(stem, orig, target) for stem in stems]))
    fitted = list(fit_blocks(cut(stems, [7000]), 25_000, (3, 2)))
    assert sum(b.shape[-1] for b in fitted) == 25_000 and not np.any(fitted[-1])
    assert sum(b.shape[-1] for b in fit_blocks(cut(stems, [7000]), 9_000, (3, 2))) == 9_000


def test_chunk_engine_output_does_not_depend_on_how_the_input_is_cut() -> None:
    rng = np.random.default_rng(1)
    waveform = rng.standard_normal((2, 23_456)).astype(np.float32)

    def positional(batch: torch.Tensor) -> torch.Tensor:  # depends on chunk boundaries and order
        ramp = torch.linspace(0.5, 1.5, batch.shape[-1])
        return torch.stack([batch / (1 + batch.abs()) * ramp, batch * (2 - ramp)], dim=1)

    for settings in (
        ChunkSettings(1.0, 0.25, 1, 3, 7, 0.5, False),  # shifts, interleaved passes
        ChunkSettings(0.7, 0.5, 3, 0, 0, 0.5, True),  # speaker alignment, batches of 3
    ):
        whole = separate_chunked(positional, waveform, 2, 1000, settings)
        for sizes in ([1, 4000], [97, 1500], [5000]):
            spans = list(iter_chunked(positional, cut(waveform, sizes), 23_456, 2, 2, 1000, settings))
            np.testing.assert_array_equal(np.concatenate(spans, axis=-1), whole)
            assert max(span.shape[-1] for span in spans) < 23_456  # really spans, not the whole output
    with pytest.raises(RuntimeError, match="ended after"):
        list(iter_chunked(positional, cut(waveform[:, :20_000], [4096]), 23_456, 2, 2, 1000, settings))
    with pytest.raises(RuntimeError, match="holds 23456 samples, 23455"):
        list(iter_chunked(positional, cut(waveform, [4096]), 23_455, 2, 2, 1000, settings))


def test_mixture_statistics_follow_demucs_separate() -> None:
    rng = np.random.default_rng(2)
    stereo = (0.2 * rng.standard_normal((2, 300_001)) + 0.05).astype(np.float32)
    # demucs.api.Separator.separate_tensor: ref = wav.mean(0); (wav - ref.mean()) / (ref.std() + 1e-8)
    reference = torch.from_numpy(stereo).double().mean(0)
    mean, std = float(reference.mean()), float(reference.std()) + 1e-8
    results = set()
    for sizes in ([300_001], [65_536], [1, 70_000, 333]):
        statistics = MixtureStatistics()
        for block in cut(stereo, sizes):
            statistics.update(block)
        normalization = statistics.normalization()
        results.add((normalization.mean, normalization.std))
    assert len(results) == 1  # bit-identical whatever the cut
    ((got_mean, got_std),) = results
    assert abs(got_mean - mean) < 1e-12 and abs(got_std - std) < 1e-12
    silent = MixtureStatistics()
    silent.update(np.zeros((1, 10), dtype=np.float32))
    assert silent.normalization().std == 1e-8
    assert normalizes_input(SaturatingSplitterConfig()) is False
    assert normalizes_input(SaturatingSplitterConfig(normalize_input=True)) is True
    with pytest.raises(ValueError, match="normalize_input"):
        normalizes_input(SaturatingSplitterConfig(normalize_input="yes"))


# -- stream_file against the in-memory pipeline ------------------------------------------------------


@pytest.fixture(scope="module")
def swapper(models_dir: Path) -> AudioSourceSeparationPipeline:
    folder = save_model(BandSwapperForSourceSeparation(BandSwapperConfig()), models_dir / "stream_swapper")
    return pipeline("audio-source-separation", model=folder)


@pytest.mark.parametrize("file_rate", [8000, 16000])
def test_streamed_speech_equals_in_memory_with_speaker_alignment(
    tmp_path: Path, swapper, file_rate: int
) -> None:
    low = sines([210.0, 330.0, 470.0], file_rate, 4.0, amplitude=0.2).sum(axis=0)
    high = sines([1530.0, 2210.0, 2890.0], file_rate, 4.0, amplitude=0.2).sum(axis=0)
    path = tmp_path / "talk.wav"
    soundfile.write(path, low + high, file_rate, subtype="FLOAT")
    options = {"segment": 0.5, "overlap": 0.5, "batch_size": 2}  # 15 chunks at 8 kHz
    swapper.model.items_seen = 0
    in_memory = np.stack([stem["audio"] for stem in swapper(path, **options)])
    swapper.model.items_seen = 0
    stream = swapper.stream_file(path, **options)
    assert (stream.labels, stream.sampling_rate, stream.channels, stream.length) == (
        ["speaker_1", "speaker_2"],
        file_rate,
        1,
        low.size,
    )
    got = streamed(stream)
    assert got.shape == in_memory.shape == (2, 1, low.size)
    assert np.abs(got - in_memory).max() <= STREAM_TOLERANCE
    # the model swaps its outputs every other chunk: alignment keeps each speaker in its stem
    interior = slice(file_rate // 10, -file_rate // 10)
    assert np.abs(got[0, 0, interior] - low[interior]).max() < 0.05
    assert np.abs(got[1, 0, interior] - high[interior]).max() < 0.05
    at_model_rate = streamed(swapper.stream_file(path, resample_output=False, **options))
    assert at_model_rate.shape == (2, 1, 32_000)


@pytest.mark.parametrize("file_rate", [8000, 11025])
def test_streamed_music_with_shifts_equals_in_memory(
    tmp_path: Path, models_dir: Path, file_rate: int
) -> None:
    config = PositionalSplitterConfig(sampling_rate=8000, audio_channels=2, source_names=["drums", "bass"])
    folder = save_model(
        PositionalSplitterForSourceSeparation(config).eval(), models_dir / "stream_positional"
    )
    separator = pipeline("audio-source-separation", model=folder)
    path = tmp_path / "song.flac"
    soundfile.write(path, sines([200.0, 310.0], file_rate, 5.0).T, file_rate, subtype="PCM_24")
    options = {"segment": 0.6, "shifts": 2, "seed": 3, "batch_size": 3}
    in_memory = np.stack([stem["audio"] for stem in separator(path, **options)])
    got = streamed(separator.stream_file(path, **options))
    assert got.shape == in_memory.shape == (2, 2, 5 * file_rate)
    assert np.abs(got - in_memory).max() <= STREAM_TOLERANCE
    other_seed = streamed(separator.stream_file(path, **{**options, "seed": 4}))
    assert np.abs(other_seed - got).max() > 1e-4  # the shifts do change the numbers


@pytest.mark.parametrize("file_rate", [8000, 16000])
def test_normalize_input_streamed_equals_in_memory_and_demucs_formula(
    tmp_path: Path, models_dir: Path, file_rate: int
) -> None:
    folder = save_model(
        SaturatingSplitterForSourceSeparation(SaturatingSplitterConfig(normalize_input=True)),
        models_dir / "stream_saturating",
    )
    separator = pipeline("audio-source-separation", model=folder)
    assert separator.model.config.normalize_input is True  # saved and reloaded with the config
    mixture = (sines([150.0, 260.0], file_rate, 3.0, amplitude=0.05) + 0.02).astype(np.float32)
    path = tmp_path / "offset.wav"
    soundfile.write(path, mixture.T, file_rate, subtype="FLOAT")
    options = {"segment": 0.4, "shifts": 1, "seed": 0}
    in_memory = np.stack([stem["audio"] for stem in separator(path, **options)])
    stream = separator.stream_file(path, **options)
    got = streamed(stream)
    assert np.abs(got - in_memory).max() <= STREAM_TOLERANCE
    # the statistics are those of the mixture at the model's rate
    at_model_rate = torch.from_numpy(resample(mixture, file_rate, 8000)).double()
    reference = at_model_rate.mean(0)
    assert abs(stream.normalization.mean - float(reference.mean())) < 1e-9
    assert abs(stream.normalization.std - (float(reference.std()) + 1e-8)) < 1e-9
    # one chunk over the whole input: exactly demucs' separate around the model
    if file_rate == 8000:
        wav = torch.from_numpy(mixture)
        ref = wav.mean(0)
        mean, std = ref.mean(), ref.std() + 1e-8
        with torch.no_grad():
            direct = separator.model(input_values=((wav - mean) / std)[None]).audio_values[0] * std + mean
        whole = np.stack([stem["audio"] for stem in separator(path, segment=3.0)])
        np.testing.assert_allclose(whole, direct.numpy(), atol=1e-6)
        plain = SaturatingSplitterForSourceSeparation(SaturatingSplitterConfig())
        with torch.no_grad():
            unnormalised = plain(input_values=wav[None]).audio_values[0].numpy()
        assert np.abs(whole - unnormalised).max() > 1e-2  # the flag changes the result


# -- demixers separate: streamed files on disk -----------------------------------------------------


def test_cli_writes_the_in_memory_result_and_rescales_all_stems_by_one_factor(
    tmp_path: Path, music_toy_dir: str, music_toy, capsys: pytest.CaptureFixture[str]
) -> None:
    # loud only near the end: the peak is found after the first blocks were already written
    quiet = sines([220.0, 330.0], 22050, 3.0, amplitude=0.1)
    quiet[:, -11025:] *= 60.0
    path = tmp_path / "late.wav"
    soundfile.write(path, quiet.T, 22050, subtype="FLOAT")
    options = ["--segment", "0.5", "-q"]
    names = ["drums", "bass", "other", "vocals"]
    assert (
        main(
            [
                "separate",
                str(path),
                "-m",
                music_toy_dir,
                "-o",
                str(tmp_path / "f32"),
                "--bit-depth",
                "32",
                *options,
            ]
        )
        == 0
    )
    floats = np.stack(
        [soundfile.read(tmp_path / "f32" / "late" / f"{n}.wav", dtype="float32")[0].T for n in names]
    )
    in_memory = np.stack([stem["audio"] for stem in music_toy(path, segment=0.5)])
    assert np.abs(floats - in_memory).max() <= STREAM_TOLERANCE  # 32-bit float wav is lossless
    assert "scaled" not in capsys.readouterr().err
    peak = float(np.abs(floats).max())
    assert peak > 1.5
    for fmt, depth, step in (("wav", "24", 2.0**-23), ("flac", "16", 2.0**-15)):
        out = tmp_path / f"{fmt}{depth}"
        argv = [
            "separate",
            str(path),
            "-m",
            music_toy_dir,
            "-o",
            str(out),
            "--format",
            fmt,
            "--bit-depth",
            depth,
        ]
        assert main([*argv, *options]) == 0
        assert f"scaled together by {1 / peak:.4f}" in capsys.readouterr().err
        ints = np.stack([soundfile.read(out / "late" / f"{n}.{fmt}", dtype="float32")[0].T for n in names])
        # every stem, quiet start included, is the float stem times the one common factor
        np.testing.assert_allclose(ints, floats / peak, atol=step)
        assert np.abs(ints).max() <= 1.0
        assert files_under(out) == ["late", *sorted(f"late/{n}.{fmt}" for n in names)]
    out = tmp_path / "mp3"
    assert (
        main(["separate", str(path), "-m", music_toy_dir, "-o", str(out), "--format", "mp3", *options]) == 0
    )
    assert "scaled together" in capsys.readouterr().err
    decoded = soundfile.read(out / "late" / "vocals.mp3", dtype="float32")[0]
    assert decoded.shape[1] == 2 and 0.5 < np.abs(decoded).max() <= 1.0


@pytest.mark.parametrize("stage", ["separating", "transcoding", "interrupt"])
def test_failures_leave_no_stem_and_no_temporary(
    tmp_path: Path, music_toy_dir: str, monkeypatch, capsys: pytest.CaptureFixture[str], stage: str
) -> None:
    path = tmp_path / "song.wav"
    soundfile.write(path, sines([220.0, 330.0], 44100, 3.0).T, 44100, subtype="PCM_16")
    out = tmp_path / "out"
    seen: list[list[str]] = []  # what the output folder held when the failure struck
    if stage == "transcoding":
        real = separate_cli._transcode
        calls = []

        def failing(source, target, *args):
            calls.append(target)
            if len(calls) == 2:
                real(source, target, *args)  # a complete final temporary...
                seen.append(files_under(out))
                raise OSError("disk full")  # ...then the failure
            return real(source, target, *args)

        monkeypatch.setattr(separate_cli, "_transcode", failing)
    else:
        real = AudioSourceSeparationPipeline._separate_chunks
        calls = []
        error = KeyboardInterrupt() if stage == "interrupt" else RuntimeError("the model broke")

        def failing(self, chunks):
            calls.append(chunks.shape[0])
            if len(calls) == 4:  # spans of the first chunks are already on disk by now
                seen.append(files_under(out))
                raise error
            return real(self, chunks)

        monkeypatch.setattr(AudioSourceSeparationPipeline, "_separate_chunks", failing)
    code = main(["separate", str(path), "-m", music_toy_dir, "-o", str(out), "--segment", "0.5", "-q"])
    assert code == (130 if stage == "interrupt" else 1)
    assert (
        "disk full" if stage == "transcoding" else "broke" if stage == "separating" else "interrupted"
    ) in (capsys.readouterr().err)
    temporaries = [name for name in seen[0] if name.endswith(".tmp")]
    assert len(temporaries) >= 4 and all(os.path.basename(name).startswith(".") for name in temporaries)
    assert files_under(out) == []  # no stem, no temporary, not even the folder


def test_bad_file_fails_before_anything_is_written(tmp_path: Path, music_toy_dir: str, capsys) -> None:
    noisy = sines([220.0, 330.0], 44100, 2.0)
    noisy[1, 70_000] = np.inf  # late in the file: the checking pass finds it first
    soundfile.write(tmp_path / "inf.wav", noisy.T, 44100, subtype="FLOAT")
    out = tmp_path / "out"
    assert main(["separate", str(tmp_path / "inf.wav"), "-m", music_toy_dir, "-o", str(out)]) == 1
    message = capsys.readouterr().err
    assert "inf.wav" in message and "index 70000 (channel 1)" in message
    assert not out.exists()
    soundfile.write(tmp_path / "zero.wav", np.zeros((0, 2), dtype=np.float32), 44100)
    assert main(["separate", str(tmp_path / "zero.wav"), "-m", music_toy_dir, "-o", str(out)]) == 1
    assert "zero.wav: contains zero samples" in capsys.readouterr().err
    assert not out.exists()
