from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from demixers.modeling.mel_band_roformer import MelBandRoformerConfig, MelBandRoformerForSourceSeparation
from demixers.modeling.mel_band_roformer.configuration_mel_band_roformer import (
    mel_band_frequency_indices,
    mel_filterbank,
)
from tests.modeling.common import SourceSeparationModelTesterMixin
from tests.modeling.mel_band_roformer.tiny_configs import tiny_mel_band_roformer_config


class TestMelBandRoformer(SourceSeparationModelTesterMixin):
    model_class = MelBandRoformerForSourceSeparation
    input_lengths = (1001, 1600)
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"num_bands": 1}, "num_bands"),
        ({"num_bands": 4, "band_frequency_indices": [[0], [1], [2]]}, "band_frequency_indices"),
        ({"num_bands": 2, "band_frequency_indices": [list(range(500)), list(range(600, 1025))]}, "bins"),
        ({"num_bands": 2, "band_frequency_indices": [[1, 0], list(range(1025))]}, "increasing"),
        ({"num_bands": 2, "band_frequency_indices": [[], list(range(1025))]}, "band_frequency_indices"),
        ({"num_bands": 2, "band_frequency_indices": [[2000], list(range(1025))]}, "band_frequency_indices"),
        ({"add_value_residual": True}, "add_value_residual"),
        ({"dim_freqs_in": 1024}, "dim_freqs_in"),
        ({"zero_dc": None}, "zero_dc"),
        ({"source_names": ["vocals", "a", "b"]}, "source_names"),
        ({"use_pope": True}, "use_pope"),
        ({"sage_attention": 1}, "sage_attention"),
    ]

    def get_config(self) -> MelBandRoformerConfig:
        return tiny_mel_band_roformer_config()

    def test_defaults_are_kimberleyjensen_vocals(self) -> None:
        config = MelBandRoformerConfig()
        assert (config.dim, config.depth, config.num_bands, config.audio_channels) == (384, 6, 60, 2)
        assert (config.stft_n_fft, config.stft_hop_length, config.mask_estimator_depth) == (2048, 441, 2)
        assert config.band_frequency_indices == mel_band_frequency_indices(44100, 2048, 60)
        with torch.device("meta"):
            model = MelBandRoformerForSourceSeparation(config)
        count = sum(parameter.numel() for parameter in model.parameters())
        assert 220e6 < count < 236e6, count  # the release's "~228M"
        assert model._gather_indices.device.type == "cpu"  # usable although built on meta

    def test_band_map_matches_librosa(self) -> None:
        filters = pytest.importorskip("librosa.filters")
        for sampling_rate, n_fft, bands in ((44100, 2048, 60), (44100, 128, 8), (48000, 2048, 64)):
            reference = filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=bands)
            ours = mel_filterbank(sampling_rate, n_fft, bands)
            np.testing.assert_array_equal(ours > 0, reference > 0)
            np.testing.assert_allclose(ours, reference, rtol=1e-6, atol=1e-9)

    def test_band_map_covers_every_bin_and_overlaps(self) -> None:
        bands = mel_band_frequency_indices(44100, 2048, 60)
        covered = sorted({index for band in bands for index in band})
        assert covered == list(range(1025))
        assert bands[0][0] == 0 and bands[-1][-1] == 1024  # the forced edge bins
        assert sum(len(band) for band in bands) > 1025  # neighbouring triangles overlap

    def test_overlapping_masks_are_averaged(self) -> None:
        """A bin in two bands gets the mean of the two bands' masks (checked with constant masks)."""
        config = tiny_mel_band_roformer_config(source_names=["vocals"], num_stems=1)
        model = self.make_model(config)
        with torch.no_grad():
            for band_index, mlp in enumerate(model.mask_estimators[0].bands):
                last = mlp.layers[-1]
                last.weight.zero_()
                # GLU(a, b) = a * sigmoid(b): real part = band index + 1, imaginary 0, sigmoid(20) ~ 1
                half = last.out_features // 2
                last.bias[:half] = torch.tensor([band_index + 1.0, 0.0]).repeat(half // 2)
                last.bias[half:] = 20.0
            spectrogram = torch.randn(1, 2, 65, 3, dtype=torch.complex64)
            masks = model.estimate_masks(spectrogram)
        gate = torch.sigmoid(torch.tensor(20.0))
        for frequency in (0, 10, 40, 64):
            owners = [k + 1.0 for k, band in enumerate(config.band_frequency_indices) if frequency in band]
            expected = gate * sum(owners) / len(owners)
            torch.testing.assert_close(
                masks[0, 0, :, frequency].real, expected.expand(2, 3), atol=1e-6, rtol=0
            )

    def test_every_transformer_ends_with_a_norm(self) -> None:
        model = self.make_model()
        for layer in model.layers:
            for transformer in (layer.linear_transformer, layer.time_transformer, layer.freq_transformer):
                assert transformer.norm is not None
        assert not hasattr(model, "final_norm")
        # mask MLP: mask_estimator_depth hidden layers (BS-RoFormer has one fewer)
        assert len(model.mask_estimators[0].bands[0].layers) == 2

    def test_residual_source_is_mixture_minus_stems(self) -> None:
        config = self.get_config()
        model = self.make_model(config)
        mixture = self.make_inputs(config)
        with torch.no_grad():
            sources = model(mixture).audio_values
        torch.testing.assert_close(sources.sum(dim=1), mixture, atol=1e-6, rtol=0)
