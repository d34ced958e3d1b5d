from __future__ import annotations

from typing import Any, ClassVar

import torch

from demixers.modeling.demucs import HDemucsConfig, HDemucsForSourceSeparation
from tests.modeling.common import SourceSeparationModelTesterMixin
from tests.modeling.demucs.tiny_configs import tiny_hdemucs_config


class TestHDemucs(SourceSeparationModelTesterMixin):
    model_class = HDemucsForSourceSeparation
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"nfft": 4098}, "nfft"),
        ({"cac": False}, "cac"),
        ({"multi_freqs": [0.5]}, "multi_freqs"),
        ({"hybrid": False, "hybrid_old": True}, "hybrid_old"),
        ({"channels": 0}, "channels"),
        ({"segment": -1.0}, "segment"),
    ]

    def get_config(self) -> HDemucsConfig:
        return tiny_hdemucs_config()

    def test_defaults_are_the_hdemucs_mmi_release(self) -> None:
        config = HDemucsConfig()
        assert (config.channels, config.depth, config.nfft, config.growth) == (48, 6, 4096, 2)
        assert (config.dconv_mode, config.dconv_attn, config.dconv_lstm, config.norm_starts) == (1, 4, 4, 4)
        assert config.hybrid and not config.hybrid_old and config.cac and config.freq_emb == 0.2
        assert config.segment == 44.0

    def test_spectrogram_only_and_old_padding_variants_run(self) -> None:
        for overrides in ({"hybrid": False}, {"hybrid_old": True}):
            config = tiny_hdemucs_config(**overrides)
            model = self.make_model(config)
            with torch.no_grad():
                out = model(input_values=0.1 * torch.randn(1, 2, 1234)).audio_values
            assert out.shape == (1, 4, 2, 1234) and torch.isfinite(out).all()

    def test_very_short_input(self) -> None:
        model = self.make_model()
        for length in (1, 5, 40):
            with torch.no_grad():
                out = model(input_values=0.1 * torch.randn(1, 2, length)).audio_values
            assert out.shape == (1, 4, 2, length) and torch.isfinite(out).all()
