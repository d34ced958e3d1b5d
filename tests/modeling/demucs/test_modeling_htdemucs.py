from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from demixers.modeling.demucs import HTDemucsConfig, HTDemucsForSourceSeparation
from tests.modeling.common import SourceSeparationModelTesterMixin
from tests.modeling.demucs.tiny_configs import tiny_htdemucs_config


class TestHTDemucs(SourceSeparationModelTesterMixin):
    model_class = HTDemucsForSourceSeparation
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"t_emb": "rope"}, "t_emb"),
        ({"t_heads": 7}, "t_heads"),
        ({"t_dropout": 1.5}, "t_dropout"),
        ({"bottom_channels": -1}, "bottom_channels"),
        ({"t_cape_glob_loc_scale": [1.0]}, "t_cape_glob_loc_scale"),
        ({"segment": 0.0}, "segment"),
    ]

    def get_config(self) -> HTDemucsConfig:
        return tiny_htdemucs_config()

    def test_defaults_are_the_htdemucs_release(self) -> None:
        config = HTDemucsConfig()
        assert (config.channels, config.depth, config.nfft, config.t_layers) == (48, 4, 4096, 5)
        assert (config.bottom_channels, config.dconv_mode, config.dconv_comp, config.t_heads) == (
            512,
            3,
            8,
            8,
        )
        assert config.segment_length == 343980  # 7.8 s at 44.1 kHz, as Fraction(39, 5) in the release
        assert config.use_train_segment and config.t_emb == "sin" and config.t_layer_scale

    def test_short_input_is_padded_to_the_segment_and_trimmed(self) -> None:
        config = tiny_htdemucs_config()
        model = self.make_model(config)
        mix = 0.1 * torch.randn(1, 2, 700)
        padded = torch.nn.functional.pad(mix, (0, config.segment_length - 700))
        with torch.no_grad():
            short = model(input_values=mix).audio_values
            full = model(input_values=padded).audio_values
        assert short.shape == (1, 4, 2, 700)
        torch.testing.assert_close(short, full[..., :700], atol=1e-6, rtol=1e-5)

    def test_input_longer_than_the_segment_raises(self) -> None:
        config = tiny_htdemucs_config()
        model = self.make_model(config)
        with pytest.raises(ValueError, match="longer than"):
            model(input_values=torch.zeros(1, 2, config.segment_length + 1))

    def test_any_length_without_train_segment(self) -> None:
        config = tiny_htdemucs_config(use_train_segment=False)
        model = self.make_model(config)
        with torch.no_grad():
            out = model(input_values=0.1 * torch.randn(1, 2, 5000)).audio_values
        assert out.shape == (1, 4, 2, 5000) and torch.isfinite(out).all()

    def test_other_positional_embeddings_run(self) -> None:
        for emb in ("cape", "scaled"):
            model = self.make_model(tiny_htdemucs_config(t_emb=emb, t_max_positions=512))
            with torch.no_grad():
                out = model(input_values=0.1 * torch.randn(1, 2, 1000)).audio_values
            assert torch.isfinite(out).all()
