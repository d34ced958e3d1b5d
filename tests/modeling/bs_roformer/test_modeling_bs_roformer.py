from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from demixers.modeling.bs_roformer import BSRoformerConfig, BSRoformerForSourceSeparation
from demixers.modeling.bs_roformer.modeling_bs_roformer import apply_rotary, roformer_istft, roformer_stft
from tests.modeling.bs_roformer.tiny_configs import tiny_bs_roformer_config
from tests.modeling.common import SourceSeparationModelTesterMixin


class TestBSRoformer(SourceSeparationModelTesterMixin):
    model_class = BSRoformerForSourceSeparation
    input_lengths = (1001, 1600)
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"freqs_per_bands": [2, 2]}, "freqs_per_bands"),
        ({"freqs_per_bands": [1025]}, "freqs_per_bands"),
        ({"dim_freqs_in": 1024}, "dim_freqs_in"),
        ({"source_names": ["a", "b", "c"]}, "source_names"),
        ({"audio_channels": 3}, "audio_channels"),
        ({"zero_dc": 1}, "zero_dc"),
        ({"skip_connection": "yes"}, "skip_connection"),
        ({"use_pope": True}, "use_pope"),
        ({"mask_estimator_depth": 0}, "mask_estimator_depth"),
        ({"stft_hop_length": 4096}, "stft_hop_length"),
        ({"stft_win_length": 4096}, "stft_win_length"),
        ({"attn_dropout": 1.5}, "attn_dropout"),
        ({"linear_transformer_depth": -1}, "linear_transformer_depth"),
        ({"num_stems": 0}, "num_stems"),
        ({"multi_stft_resolutions_window_sizes": []}, "multi_stft_resolutions_window_sizes"),
        ({"chunk_size": 0}, "chunk_size"),
    ]

    def get_config(self) -> BSRoformerConfig:
        return tiny_bs_roformer_config()

    def test_defaults_are_viperx_ep317(self) -> None:
        config = BSRoformerConfig()
        assert (config.dim, config.depth, len(config.freqs_per_bands), config.audio_channels) == (
            512,
            12,
            62,
            2,
        )
        assert (config.stft_n_fft, config.stft_hop_length, config.zero_dc) == (2048, 441, True)
        assert config.source_names == ["vocals", "other"] and config.has_residual
        assert (config.chunk_size, config.num_overlap, config.permutation_invariant) == (352800, 2, False)
        with torch.device("meta"):
            model = BSRoformerForSourceSeparation(config)
        # the release's parameter count ("~160M"); rotary frequencies are buffers, not parameters
        count = sum(parameter.numel() for parameter in model.parameters())
        assert 150e6 < count < 170e6, count
        assert not [name for name, _ in model.named_parameters() if "rotary" in name]
        assert {name for name, _ in model.named_buffers()} == {
            "time_rotary.inverse_frequencies",
            "freq_rotary.inverse_frequencies",
        }

    def test_rotary_is_rotary_embedding_torch_interleaved_layout(self) -> None:
        """Pair (2i, 2i + 1) turns by angle position * theta^(-2i / d); dot products depend only on the
        distance between positions."""
        model = self.make_model()
        rotation = model.time_rotary.rotation(5, torch.device("cpu"))
        states = torch.randn(1, 1, 5, 8, generator=torch.Generator().manual_seed(0))
        rotated = apply_rotary(states, rotation)
        inverse = 1.0 / 10000 ** (torch.arange(0, 8, 2).double() / 8)
        angle = 3 * inverse[1]
        x0, x1 = states[0, 0, 3, 2].double(), states[0, 0, 3, 3].double()
        expected = torch.stack((x0 * angle.cos() - x1 * angle.sin(), x1 * angle.cos() + x0 * angle.sin()))
        torch.testing.assert_close(rotated[0, 0, 3, 2:4].double(), expected, atol=1e-6, rtol=0)
        query = torch.randn(8, generator=torch.Generator().manual_seed(1)).expand(1, 1, 5, 8)
        key = torch.randn(8, generator=torch.Generator().manual_seed(2)).expand(1, 1, 5, 8)
        q, k = apply_rotary(query, rotation)[0, 0], apply_rotary(key, rotation)[0, 0]
        torch.testing.assert_close((q[3] * k[1]).sum(), (q[4] * k[2]).sum(), atol=1e-5, rtol=0)

    def test_zero_dc_removes_exactly_the_dc_bin_of_the_masked_spectrogram(self) -> None:
        config = self.get_config()
        with_dc = self.make_model(tiny_bs_roformer_config(zero_dc=False))
        without_dc = self.make_model(tiny_bs_roformer_config(zero_dc=True))
        without_dc.load_state_dict(with_dc.state_dict())
        mixture = self.make_inputs(config, length=3200) + 0.3  # a DC offset the masks pass on
        args = (config.stft_n_fft, config.stft_hop_length, config.stft_win_length, False)
        with torch.no_grad():
            kept = with_dc(mixture).audio_values[:, :2]
            zeroed = without_dc(mixture).audio_values[:, :2]
            spectrogram = roformer_stft(mixture, *args)
            masked = spectrogram.unsqueeze(1) * with_dc.estimate_masks(spectrogram)
        dc_only = torch.zeros_like(masked)
        dc_only[..., 0, :] = masked[..., 0, :]
        expected = roformer_istft(dc_only, *args, length=3200)
        assert expected.abs().max() > 1e-3
        torch.testing.assert_close(kept - zeroed, expected, atol=1e-5, rtol=0)

    def test_residual_source_is_mixture_minus_stems(self) -> None:
        config = self.get_config()
        model = self.make_model(config)
        mixture = self.make_inputs(config)
        with torch.no_grad():
            sources = model(mixture).audio_values
        assert sources.shape[1] == 3 and config.has_residual
        torch.testing.assert_close(sources.sum(dim=1), mixture, atol=1e-6, rtol=0)
        no_residual = self.make_model(tiny_bs_roformer_config(source_names=["vocals", "drums"]))
        no_residual.load_state_dict(model.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(no_residual(mixture).audio_values, sources[:, :2], atol=0, rtol=0)

    def test_skip_connection_changes_the_output(self) -> None:
        config = self.get_config()
        model = self.make_model(config)
        plain = self.make_model(tiny_bs_roformer_config(skip_connection=False))
        plain.load_state_dict(model.state_dict())
        mixture = self.make_inputs(config)
        with torch.no_grad():
            difference = (model(mixture).audio_values - plain(mixture).audio_values).abs().max()
        assert difference > 1e-4

    def test_short_inputs_are_separated(self) -> None:
        """Inputs shorter than the STFT's reflect padding (n_fft // 2) still give their own length."""
        config = self.get_config()
        model = self.make_model(config)
        for length in (1, 40, 64, 65):
            with torch.no_grad():
                out = model(self.make_inputs(config, batch_size=1, length=length)).audio_values
            assert out.shape == (1, 3, 2, length) and torch.isfinite(out).all()

    def test_mono_model(self) -> None:
        config = tiny_bs_roformer_config(audio_channels=1)
        model = self.make_model(config)
        with torch.no_grad():
            out = model(self.make_inputs(config, length=800)).audio_values
        assert out.shape == (2, 3, 1, 800)
        assert model.band_split.bands[0].proj.in_features == 2 * 8  # real + imaginary of 8 bins

    def test_torch_checkpoint_gives_the_same_gradients(self) -> None:
        config = self.get_config()
        model = self.make_model(tiny_bs_roformer_config(attn_dropout=0.0, ff_dropout=0.0)).train()
        checkpointed = self.make_model(
            tiny_bs_roformer_config(attn_dropout=0.0, ff_dropout=0.0, use_torch_checkpoint=True)
        ).train()
        checkpointed.load_state_dict(model.state_dict())
        mixture = self.make_inputs(config, length=800)
        labels = 0.1 * torch.randn(2, 3, 2, 800, generator=torch.Generator().manual_seed(3))
        model(mixture, labels=labels).loss.backward()
        checkpointed(mixture, labels=labels).loss.backward()
        for (name, parameter), other in zip(model.named_parameters(), checkpointed.parameters(), strict=True):
            torch.testing.assert_close(other.grad, parameter.grad, atol=1e-6, rtol=1e-5, msg=name)

    def test_loss_is_l1_plus_multi_resolution_stft(self) -> None:
        config = tiny_bs_roformer_config(multi_stft_resolution_loss_weight=0.0)
        model = self.make_model(config)
        mixture = self.make_inputs(config, length=800)
        labels = 0.1 * torch.randn(2, 3, 2, 800, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            output = model(mixture, labels=labels)
        torch.testing.assert_close(output.loss, (output.audio_values[:, :2] - labels[:, :2]).abs().mean())
        weighted = self.make_model(tiny_bs_roformer_config(multi_stft_resolution_loss_weight=0.5))
        weighted.load_state_dict(model.state_dict())
        with torch.no_grad():
            total = weighted(mixture, labels=labels).loss
        stems, target = output.audio_values[:, :2].reshape(-1, 800), labels[:, :2].reshape(-1, 800)
        spectral = 0.0
        for window in (256, 128):
            kwargs = {
                "n_fft": max(window, 128),
                "win_length": window,
                "hop_length": 32,
                "return_complex": True,
            }
            window_values = torch.hann_window(window)
            difference = torch.stft(stems, window=window_values, **kwargs) - torch.stft(
                target, window=window_values, **kwargs
            )
            spectral = spectral + difference.abs().mean()
        torch.testing.assert_close(total, output.loss + 0.5 * spectral, atol=1e-6, rtol=1e-5)

    def test_half_precision_weights_run(self) -> None:
        config = self.get_config()
        model = self.make_model(config)
        mixture = self.make_inputs(config)
        with torch.no_grad():
            full = model(mixture).audio_values
            half = model.to(torch.bfloat16)(mixture).audio_values
        assert half.dtype == torch.float32 and torch.isfinite(half).all()
        assert (half - full).abs().max() < 0.1 * full.abs().max()


@pytest.mark.parametrize("length", [4410])
def test_output_length_equals_input_length_at_release_hop(length: int) -> None:
    """Hop 441 does not divide the length: the output keeps every input sample."""
    config = tiny_bs_roformer_config(
        stft_n_fft=256, stft_win_length=256, stft_hop_length=63, dim_freqs_in=129, freqs_per_bands=[64, 65]
    )
    model = BSRoformerForSourceSeparation(config).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 2, length)).audio_values
    assert out.shape[-1] == length
