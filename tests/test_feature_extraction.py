from __future__ import annotations

import numpy as np
import pytest
import torch

from demixers import SourceSeparationFeatureExtractor
from demixers.audio import as_channels_first, match_channels, to_float32


def test_batch_of_different_lengths_is_padded_with_mask() -> None:
    extractor = SourceSeparationFeatureExtractor(feature_size=1, sampling_rate=8000)
    short = np.linspace(-0.5, 0.5, 5, dtype=np.float32)
    long = np.ones(8, dtype=np.float32)
    batch = extractor([short, long], sampling_rate=8000)
    assert tuple(batch["input_values"].shape) == (2, 1, 8)
    assert batch["input_values"].dtype == torch.float32
    np.testing.assert_array_equal(batch["padding_mask"].numpy(), [[1] * 5 + [0] * 3, [1] * 8])
    np.testing.assert_array_equal(batch["input_values"][0, 0, :5].numpy(), short)
    assert batch["input_values"][0, 0, 5:].abs().sum() == 0


def test_int16_is_scaled_and_float64_cast() -> None:
    extractor = SourceSeparationFeatureExtractor(feature_size=1, sampling_rate=8000)
    pcm = np.array([-32768, 0, 16384, 32767], dtype=np.int16)
    values = extractor(pcm, sampling_rate=8000)["input_values"][0, 0].numpy()
    np.testing.assert_allclose(values, [-1.0, 0.0, 0.5, 32767 / 32768], rtol=0, atol=1e-7)
    as64 = extractor(np.array([0.25, -0.25]), sampling_rate=8000)["input_values"]
    assert as64.dtype == torch.float32


def test_uint8_is_centred() -> None:
    np.testing.assert_allclose(to_float32(np.array([0, 128, 255], dtype=np.uint8)), [-1.0, 0.0, 127 / 128])


def test_channel_rule() -> None:
    stereo_extractor = SourceSeparationFeatureExtractor(feature_size=2, sampling_rate=44100)
    mono = np.arange(4, dtype=np.float32) / 10
    out = stereo_extractor(mono, sampling_rate=44100)["input_values"][0].numpy()
    np.testing.assert_array_equal(out, np.stack([mono, mono]))

    mono_extractor = SourceSeparationFeatureExtractor(feature_size=1, sampling_rate=44100)
    stereo = np.stack([np.full(4, 0.2, np.float32), np.full(4, 0.4, np.float32)])
    np.testing.assert_allclose(mono_extractor(stereo, sampling_rate=44100)["input_values"][0, 0].numpy(), 0.3)

    three = np.zeros((3, 10), np.float32)
    with pytest.raises(ValueError, match="3 channels"):
        stereo_extractor(three, sampling_rate=44100)
    np.testing.assert_array_equal(match_channels(three + 1, 2, policy="first"), np.ones((2, 10)))


@pytest.mark.parametrize(
    ("audio", "error", "message"),
    [
        (np.zeros(0, np.float32), ValueError, "empty"),
        (np.array([0.0, np.nan, 1.0], np.float32), ValueError, "index 1"),
        (np.array([0.0, 0.0, np.inf], np.float32), ValueError, "index 2"),
        (np.zeros((1, 1, 2, 3), np.float32), ValueError, "1-D"),
        (np.zeros(4, np.complex64), TypeError, "complex64"),
        (np.zeros(4, bool), TypeError, "bool"),
        (np.array(["a", "b"], dtype=object), TypeError, "object"),
        ("not audio", TypeError, "str"),
    ],
)
def test_bad_audio_is_rejected(audio, error, message) -> None:
    extractor = SourceSeparationFeatureExtractor(feature_size=1, sampling_rate=8000)
    with pytest.raises(error, match=message):
        extractor(audio, sampling_rate=8000)


def test_ambiguous_2d_layout_needs_time_axis() -> None:
    time_major = np.zeros((100, 2), np.float32)
    with pytest.raises(ValueError, match="time_axis"):
        as_channels_first(time_major)
    assert as_channels_first(time_major, time_axis=0).shape == (2, 100)


def test_wrong_sampling_rate_is_rejected() -> None:
    extractor = SourceSeparationFeatureExtractor(feature_size=1, sampling_rate=8000)
    with pytest.raises(ValueError, match="16000 Hz"):
        extractor(np.zeros(10, np.float32), sampling_rate=16000)
    for rate in (0, -8000, 8000.5):
        with pytest.raises(ValueError, match="sampling_rate"):
            extractor(np.zeros(10, np.float32), sampling_rate=rate)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"feature_size": 0}, "feature_size"),
        ({"sampling_rate": -1}, "sampling_rate"),
        ({"channel_policy": "loud"}, "channel_policy"),
    ],
)
def test_invalid_constructor_arguments(kwargs, field) -> None:
    with pytest.raises(ValueError, match=field):
        SourceSeparationFeatureExtractor(**kwargs)


def test_save_load_round_trip(tmp_path) -> None:
    extractor = SourceSeparationFeatureExtractor(feature_size=2, sampling_rate=44100, channel_policy="mean")
    extractor.save_pretrained(tmp_path)
    loaded = SourceSeparationFeatureExtractor.from_pretrained(tmp_path)
    assert loaded.to_dict() == extractor.to_dict()
    assert loaded.channel_policy == "mean"
