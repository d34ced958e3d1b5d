"""`pipeline("audio-source-separation")`: inputs, outputs, chunking, alignment, bad input."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from transformers import pipeline

import demixers
from demixers.audio import resample
from demixers.pipelines.chunking import normalizes_input
from tests.pipelines.conftest import (
    BandSwapperConfig,
    BandSwapperForSourceSeparation,
    PositionalSplitterConfig,
    PositionalSplitterForSourceSeparation,
    save_model,
    sines,
)

# (format, subtype, integer-PCM quantisation step or codec tolerance)
FILE_FORMATS = [
    ("WAV", "PCM_U8", 1 / 64),
    ("WAV", "PCM_16", 1e-3),
    ("WAV", "PCM_24", 1e-3),
    ("WAV", "PCM_32", 1e-3),
    ("WAV", "FLOAT", 1e-3),
    ("WAV", "DOUBLE", 1e-3),
    ("FLAC", "PCM_16", 1e-3),
    ("FLAC", "PCM_24", 1e-3),
    ("OGG", "VORBIS", None),
    ("MP3", "MPEG_LAYER_III", None),
]


def stem_sum(stems: list[dict]) -> np.ndarray:
    return np.sum([stem["audio"] for stem in stems], axis=0)


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / np.sum((reference - estimate) ** 2)))


# -- files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "subtype", "tolerance"), FILE_FORMATS, ids=[f"{f}-{s}" for f, s, _ in FILE_FORMATS]
)
def test_every_file_format_separates_at_its_own_rate_and_length(
    tmp_path: Path, music_toy, fmt: str, subtype: str, tolerance: float | None
) -> None:
    mixture = sines([330.0, 550.0], 16000, 1.5)  # stereo, 16 kHz into a 44.1 kHz stereo model
    path = tmp_path / f"mix.{fmt.lower()}"
    soundfile.write(path, mixture.T, 16000, format=fmt, subtype=subtype)
    decoded, rate = soundfile.read(path, dtype="float32", always_2d=True)
    stems = music_toy(path)  # pathlib.Path
    assert [stem["label"] for stem in stems] == ["drums", "bass", "other", "vocals"]
    for stem in stems:
        assert stem["sampling_rate"] == rate == 16000
        assert stem["audio"].shape == (2, decoded.shape[0])
        assert stem["audio"].dtype == np.float32
    # the toy is exactly additive: the stems add up to the decoded mixture (resampling round trip)
    interior = slice(200, -200)
    total = stem_sum(stems)
    np.testing.assert_allclose(total[:, interior], decoded.T[:, interior], atol=2e-3)
    if tolerance is not None:  # lossless formats also match the original signal
        np.testing.assert_allclose(total[:, interior], mixture[:, interior], atol=tolerance + 2e-3)
    # str path and encoded bytes give the same result
    np.testing.assert_array_equal(music_toy(str(path))[0]["audio"], stems[0]["audio"])
    np.testing.assert_array_equal(music_toy(path.read_bytes())[0]["audio"], stems[0]["audio"])


def test_resampling_round_trip_and_resample_output_false(speech_toy) -> None:
    mixture = sines([440.0], 44100, 2.0)[0]
    stems = speech_toy(mixture, sampling_rate=44100)
    assert stems[0]["sampling_rate"] == 44100 and stems[0]["audio"].shape == (1, mixture.size)
    assert snr_db(mixture[1000:-1000], stem_sum(stems)[0, 1000:-1000]) > 60
    at_model_rate = speech_toy(mixture, sampling_rate=44100, resample_output=False)
    assert at_model_rate[0]["sampling_rate"] == 8000
    assert at_model_rate[0]["audio"].shape == (1, 16000)
    np.testing.assert_allclose(
        stem_sum(at_model_rate)[0, 100:-100], resample(mixture[None], 44100, 8000)[0, 100:-100], atol=1e-6
    )


# -- arrays, tensors, dicts, lists ---------------------------------------------------------------


def test_array_tensor_dict_and_integer_inputs_agree(speech_toy) -> None:
    mixture = sines([300.0], 8000, 1.0)[0]
    reference = speech_toy(mixture, sampling_rate=8000)
    assert len(reference) == 2 and reference[0]["audio"].shape == (1, 8000)
    np.testing.assert_allclose(stem_sum(reference)[0], mixture, atol=1e-6)
    same = [
        speech_toy(torch.from_numpy(mixture), sampling_rate=8000),
        speech_toy(mixture.astype(np.float64), sampling_rate=8000),
        speech_toy({"array": mixture, "sampling_rate": 8000}),
        speech_toy({"raw": mixture.tolist(), "sampling_rate": 8000}),
        speech_toy(mixture[None], sampling_rate=8000),  # (1, time)
        speech_toy(mixture[:, None], sampling_rate=8000, time_axis=0),  # (time, 1)
        speech_toy(mixture.tolist(), sampling_rate=8000),  # a list of numbers is one waveform
    ]
    for stems in same:
        for got, want in zip(stems, reference, strict=True):
            np.testing.assert_allclose(got["audio"], want["audio"], atol=1e-6)
    half = speech_toy(mixture.astype(np.float16), sampling_rate=8000)
    np.testing.assert_allclose(stem_sum(half)[0], mixture, atol=1e-3)
    pcm16 = np.round(mixture * 32767).astype(np.int16)
    as_int = speech_toy(pcm16, sampling_rate=8000)
    np.testing.assert_allclose(stem_sum(as_int)[0], pcm16 / 32768, atol=1e-6)
    pcm32 = pcm16.astype(np.int32) << 16
    np.testing.assert_allclose(stem_sum(speech_toy(pcm32, sampling_rate=8000))[0], pcm16 / 32768, atol=1e-6)


def test_channel_rule(music_toy, speech_toy) -> None:
    mono = sines([220.0], 44100, 0.5)
    stems = music_toy(mono, sampling_rate=44100)  # mono into stereo: duplicated
    assert stems[0]["audio"].shape == (2, mono.shape[1])
    np.testing.assert_allclose(stem_sum(stems), np.repeat(mono, 2, axis=0), atol=1e-6)
    stereo = sines([220.0, 330.0], 8000, 0.5)
    stems = speech_toy(stereo, sampling_rate=8000)  # stereo into mono: averaged
    np.testing.assert_allclose(stem_sum(stems)[0], stereo.mean(axis=0), atol=1e-6)
    three = sines([220.0, 330.0, 440.0], 44100, 0.5)
    with pytest.raises(ValueError, match="channel policy"):
        music_toy(three, sampling_rate=44100)
    stems = music_toy(three, sampling_rate=44100, channel_policy="first")
    np.testing.assert_allclose(stem_sum(stems), np.repeat(three[:1], 2, axis=0), atol=1e-6)


def test_ambiguous_two_d_arrays_raise_unless_time_axis_is_given(music_toy) -> None:
    stereo = sines([220.0, 330.0], 44100, 0.1)
    with pytest.raises(ValueError, match="time_axis"):
        music_toy(stereo.T, sampling_rate=44100)
    stems = music_toy(stereo.T, sampling_rate=44100, time_axis=0)
    np.testing.assert_allclose(stem_sum(stems), stereo, atol=1e-6)


def test_list_input_equals_single_items_and_names_the_bad_item(speech_toy, tmp_path: Path) -> None:
    a = sines([300.0], 8000, 0.7)[0]
    b = sines([500.0], 16000, 1.2)[0]
    path = tmp_path / "b.wav"
    soundfile.write(path, b, 16000, subtype="FLOAT")
    items = [
        {"array": a, "sampling_rate": 8000},
        str(path),
        {"bytes": path.read_bytes(), "path": "b.wav"},
        {"path": str(path)},
    ]
    batched = speech_toy(items, batch_size=4)
    assert len(batched) == 4
    singles = [speech_toy(item) for item in items]
    for got, want in zip(batched, singles, strict=True):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g["audio"], w["audio"])
            assert g["sampling_rate"] == w["sampling_rate"]
    assert batched[1][0]["audio"].shape == (1, b.size) and batched[1][0]["sampling_rate"] == 16000
    streamed = list(speech_toy(item for item in items[:2]))
    np.testing.assert_array_equal(streamed[1][1]["audio"], singles[1][1]["audio"])
    with pytest.raises(ValueError, match=r"inputs\[1\].*non-finite.*index 3"):
        speech_toy([a, np.array([0.0, 0.1, 0.2, np.nan, 0.0], dtype=np.float32)], sampling_rate=8000)
    with pytest.raises(ValueError, match="empty"):
        speech_toy([])


# -- chunking ------------------------------------------------------------------------------------


def test_chunked_equals_unchunked_for_the_additive_toy(speech_toy, music_toy) -> None:
    rng = np.random.default_rng(0)
    mixture = (0.1 * rng.standard_normal(8000 * 5)).astype(np.float32)
    whole = speech_toy(mixture, sampling_rate=8000, segment=10.0)
    for segment, overlap, batch_size in ((0.5, 0.25, 1), (0.37, 0.5, 3), (1.0, 0.0, 2), (0.25, 0.9, 7)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            chunked = speech_toy(
                mixture, sampling_rate=8000, segment=segment, overlap=overlap, batch_size=batch_size
            )
        # speaker alignment needs a common region: overlap=0 warns (speech toy), the others do not
        assert any("overlap=0" in str(w.message) for w in caught) == (overlap == 0.0)
        for got, want in zip(chunked, whole, strict=True):
            np.testing.assert_allclose(got["audio"], want["audio"], atol=1e-6)
        np.testing.assert_allclose(stem_sum(chunked)[0], mixture, atol=1e-6)
    stereo = (0.1 * rng.standard_normal((2, 44100 * 2))).astype(np.float32)
    stems = music_toy(stereo, sampling_rate=44100, segment=0.3, overlap=0.25, batch_size=2)
    np.testing.assert_allclose(stem_sum(stems), stereo, atol=1e-6)


def test_chunked_equals_unchunked_mossformer_when_the_chunk_covers_the_input(mossformer_dir: str) -> None:
    separator = pipeline("audio-source-separation", model=mossformer_dir)
    model = separator.model
    mixture = sines([300.0, 1200.0], 8000, 1.5).sum(axis=0)
    with torch.no_grad():
        direct = model(input_values=torch.from_numpy(mixture)[None, None]).audio_values[0].numpy()
    stems = separator(mixture, sampling_rate=8000, segment=1.5)  # exactly one chunk
    assert len(stems) == 2 and stems[0]["audio"].shape == (1, mixture.size)
    for index, stem in enumerate(stems):
        np.testing.assert_allclose(stem["audio"], direct[index], atol=1e-6)
    longer = separator(mixture, sampling_rate=8000, segment=30.0)  # the default, longer than the input
    np.testing.assert_allclose(longer[1]["audio"], direct[1], atol=1e-6)
    # several chunks, batched or not, give the same numbers; silence stays silence
    one = separator(mixture, sampling_rate=8000, segment=0.5, overlap=0.5, batch_size=1)
    four = separator(mixture, sampling_rate=8000, segment=0.5, overlap=0.5, batch_size=4)
    for a, b in zip(one, four, strict=True):
        np.testing.assert_allclose(a["audio"], b["audio"], atol=1e-5)
        assert np.isfinite(a["audio"]).all()
    silent = separator(np.zeros(4000, dtype=np.float32), sampling_rate=8000)
    assert all(np.isfinite(s["audio"]).all() and not np.any(s["audio"]) for s in silent)


def test_speakers_do_not_swap_between_chunks(models_dir: Path) -> None:
    # speaker 1: 200-600 Hz tones, speaker 2: 1.5-3 kHz tones; the model swaps every other chunk
    rate = 8000
    low = sines([210.0, 330.0, 470.0], rate, 6.0, amplitude=0.2).sum(axis=0)
    high = sines([1530.0, 2210.0, 2890.0], rate, 6.0, amplitude=0.2).sum(axis=0)
    mixture = low + high
    folder = save_model(
        BandSwapperForSourceSeparation(BandSwapperConfig(cutoff_hz=1000.0)), models_dir / "swapper"
    )
    for batch_size in (1, 3):
        stems = pipeline("audio-source-separation", model=folder)(
            mixture, sampling_rate=rate, segment=1.0, overlap=0.5, batch_size=batch_size
        )
        assert snr_db(low, stems[0]["audio"][0]) > 25, batch_size
        assert snr_db(high, stems[1]["audio"][0]) > 25, batch_size
    # without alignment the same model scrambles the speakers (the test does test something)
    unaligned_folder = models_dir / "swapper_unaligned"
    config = BandSwapperConfig(cutoff_hz=1000.0, permutation_invariant=False)
    save_model(BandSwapperForSourceSeparation(config), unaligned_folder)
    scrambled = pipeline("audio-source-separation", model=str(unaligned_folder))(
        mixture, sampling_rate=rate, segment=1.0, overlap=0.5
    )
    assert snr_db(low, scrambled[0]["audio"][0]) < 5


def test_shifts_are_reproducible_with_a_seed(models_dir: Path, music_toy) -> None:
    config = PositionalSplitterConfig(sampling_rate=8000, audio_channels=2, source_names=["drums", "bass"])
    folder = save_model(PositionalSplitterForSourceSeparation(config).eval(), models_dir / "positional")
    separator = pipeline("audio-source-separation", model=folder)
    mixture = sines([200.0, 300.0], 8000, 3.0)
    torch_state = torch.random.get_rng_state()
    first = separator(mixture, sampling_rate=8000, segment=1.0, shifts=2, seed=1)
    again = separator(mixture, sampling_rate=8000, segment=1.0, shifts=2, seed=1)
    other = separator(mixture, sampling_rate=8000, segment=1.0, shifts=2, seed=2)
    plain = separator(mixture, sampling_rate=8000, segment=1.0)
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    np.testing.assert_array_equal(first[0]["audio"], again[0]["audio"])
    assert np.abs(first[0]["audio"] - other[0]["audio"]).max() > 1e-4
    assert np.abs(first[0]["audio"] - plain[0]["audio"]).max() > 1e-4
    # the additive toy is time-invariant: shifting and averaging changes nothing
    stereo = sines([200.0, 300.0], 44100, 1.0)
    np.testing.assert_allclose(
        music_toy(stereo, sampling_rate=44100, shifts=3)[2]["audio"],
        music_toy(stereo, sampling_rate=44100)[2]["audio"],
        atol=1e-6,
    )


def test_htdemucs_through_the_pipeline() -> None:
    tiny = pytest.importorskip("tests.modeling.demucs.tiny_configs")  # registers the Demucs family
    from demixers.modeling.demucs import HTDemucsForSourceSeparation

    torch.manual_seed(0)
    model = HTDemucsForSourceSeparation(tiny.tiny_htdemucs_config()).eval()  # segment 0.04 s = 1764 samples
    separator = pipeline("audio-source-separation", model=model)
    # shorter than apply_model's stride (0.75 segment): one chunk
    stereo = sines([220.0, 330.0], 44100, 0.025)
    wav = torch.from_numpy(stereo)
    mean, std = torch.tensor(0.0), torch.tensor(1.0)
    if normalizes_input(model.config):  # Demucs configs ask for demucs' whole-track standardisation
        ref = wav.mean(0)
        mean, std = ref.mean(), ref.std() + 1e-8
    # as demucs' apply_model: the short chunk is centred in a segment-long window (zeros around it)
    excess = model.config.segment_length - wav.shape[-1]
    centred = torch.nn.functional.pad((wav - mean) / std, (excess // 2, excess - excess // 2))
    with torch.no_grad():
        output = model(input_values=centred[None]).audio_values[0]
    direct = (output[..., excess // 2 : excess // 2 + wav.shape[-1]] * std + mean).numpy()
    stems = separator(stereo, sampling_rate=44100)
    assert [stem["label"] for stem in stems] == model.config.source_names
    for index, stem in enumerate(stems):
        assert stem["audio"].shape == (2, stereo.shape[1])
        np.testing.assert_allclose(stem["audio"], direct[index], atol=1e-6)
    # a longer input goes through several chunks of the trained segment (3 chunks, one forward)
    longer = sines([220.0], 44100, 0.08)
    stems = separator(longer, sampling_rate=44100, batch_size=3)
    assert all(s["audio"].shape == (2, longer.shape[1]) and s["sampling_rate"] == 44100 for s in stems)
    assert all(np.isfinite(s["audio"]).all() for s in stems)
    with pytest.raises(ValueError):  # chunks longer than the trained segment are refused by the model
        separator(longer, sampling_rate=44100, segment=0.06)


# -- bad input ---------------------------------------------------------------------------------


def test_bad_files_raise_clear_errors(tmp_path: Path, speech_toy) -> None:
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_text("this is not audio\n")
    (tmp_path / "noise.flac").write_bytes(np.random.default_rng(0).bytes(4096))
    (tmp_path / "folder.wav").mkdir()
    soundfile.write(tmp_path / "zero.wav", np.zeros((0, 1), dtype=np.float32), 8000)
    cases = [
        (tmp_path / "missing.wav", FileNotFoundError, "no such file"),
        (tmp_path / "empty.wav", ValueError, "empty file"),
        (tmp_path / "text.wav", ValueError, "not a readable audio file"),
        (tmp_path / "noise.flac", ValueError, "not a readable audio file"),
        (tmp_path / "folder.wav", IsADirectoryError, "directory"),
        (tmp_path / "zero.wav", ValueError, "zero samples"),
    ]
    for path, error, message in cases:
        with pytest.raises(error, match=message) as info:
            speech_toy(path)
        assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="empty input"):
        speech_toy(b"")
    with pytest.raises(ValueError, match="not a readable audio file"):
        speech_toy(b"RIFF1234WAVEgarbage")
    with pytest.raises(ValueError, match="URL"):
        speech_toy("https://example.com/song.wav")


def test_bad_arrays_raise_clear_errors(speech_toy) -> None:
    good = np.zeros(100, dtype=np.float32)
    nan = good.copy()
    nan[42] = np.nan
    inf = np.zeros((2, 100), dtype=np.float32)
    inf[1, 7] = np.inf
    with pytest.raises(ValueError, match="index 42"):
        speech_toy(nan, sampling_rate=8000)
    with pytest.raises(ValueError, match=r"index.*7"):
        speech_toy(inf, sampling_rate=8000)
    with pytest.raises(ValueError, match="empty"):
        speech_toy(np.zeros(0, dtype=np.float32), sampling_rate=8000)
    for rate in (0, -8000):
        with pytest.raises(ValueError, match="sampling_rate"):
            speech_toy(good, sampling_rate=rate)
    with pytest.raises(ValueError, match="sampling_rate"):
        speech_toy({"array": good, "sampling_rate": 0})
    with pytest.raises(ValueError, match="sampling_rate"):
        speech_toy(good)
    for bad in (good.astype(np.complex64), good.astype(bool), good.astype(object)):
        with pytest.raises(TypeError, match="dtype"):
            speech_toy(bad, sampling_rate=8000)
    with pytest.raises(ValueError, match=r"1-D|3-D"):
        speech_toy(np.zeros((1, 1, 100), dtype=np.float32), sampling_rate=8000)
    with pytest.raises(TypeError, match="unexpected"):
        speech_toy(good, sampling_rate=8000, segmnet=3)
    with pytest.raises(ValueError, match="overlap"):
        speech_toy(good, sampling_rate=8000, overlap=1.5)


def test_silence_in_silence_out(speech_toy, music_toy) -> None:
    for separator, rate, channels in ((speech_toy, 8000, 1), (music_toy, 44100, 2)):
        stems = separator(np.zeros((channels, rate * 3), dtype=np.float32), sampling_rate=rate, segment=1.0)
        for stem in stems:
            assert np.isfinite(stem["audio"]).all() and not np.any(stem["audio"])


def test_decoded_bytes_match_file(tmp_path: Path, speech_toy) -> None:
    buffer = io.BytesIO()
    soundfile.write(buffer, sines([250.0], 8000, 0.5)[0], 8000, format="WAV", subtype="PCM_16")
    stems = speech_toy(buffer.getvalue())
    assert stems[0]["audio"].shape == (1, 4000) and stems[0]["sampling_rate"] == 8000
    assert demixers.PIPELINE_TASK == "audio-source-separation"
