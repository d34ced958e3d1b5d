from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from demixers.modeling.demucs import DemucsConfig, DemucsForSourceSeparation
from tests.modeling.common import SourceSeparationModelTesterMixin
from tests.modeling.demucs.tiny_configs import tiny_demucs_config


class TestDemucs(SourceSeparationModelTesterMixin):
    model_class = DemucsForSourceSeparation
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"channels": 0}, "channels"),
        ({"depth": 0}, "depth"),
        ({"source_names": []}, "source_names"),
        ({"source_names": ["a", "a"]}, "source_names"),
        ({"segment": 0}, "segment"),
        ({"dconv_mode": 4}, "dconv_mode"),
        ({"sampling_rate": -1}, "sampling_rate"),
    ]

    def get_config(self) -> DemucsConfig:
        return tiny_demucs_config()

    def test_defaults_are_the_v2_release(self) -> None:
        config = DemucsConfig()
        assert (config.channels, config.depth, config.growth, config.context) == (64, 6, 2.0, 3)
        assert (config.kernel_size, config.stride, config.lstm_layers, config.rescale) == (8, 4, 2, 0.1)
        assert config.resample and config.glu and not config.gelu and config.dconv_mode == 0
        assert (config.sampling_rate, config.audio_channels) == (44100, 2)
        assert config.source_names == ["drums", "bass", "other", "vocals"]

    def test_mono_input_to_stereo_model_raises(self) -> None:
        model = self.make_model()
        with pytest.raises(ValueError, match="channels"):
            model(input_values=torch.zeros(1, 1, 1000))

    def test_very_short_input_is_padded_and_trimmed(self) -> None:
        model = self.make_model()
        for length in (1, 7, 33):
            with torch.no_grad():
                out = model(input_values=0.1 * torch.randn(1, 2, length)).audio_values
            assert out.shape == (1, 4, 2, length)
            assert torch.isfinite(out).all()

    def test_valid_length_leaves_no_remainder(self) -> None:
        model = self.make_model()
        for length in (1, 100, 1001, 4096):
            valid = model.valid_length(length)
            assert valid >= length
            assert model.valid_length(valid) == valid

    def test_wrong_labels_shape_raises(self) -> None:
        model = self.make_model()
        with pytest.raises(ValueError, match="labels"):
            model(input_values=torch.zeros(1, 2, 500), labels=torch.zeros(1, 2, 500))
