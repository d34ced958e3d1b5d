from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F

from demixers.modeling.stacked_hourglass import StackedHourglassConfig, StackedHourglassForSourceSeparation
from demixers.modeling.stacked_hourglass.modeling_stacked_hourglass import StackedHourglassModule
from tests.modeling.common import SourceSeparationModelTesterMixin
from tests.modeling.stacked_hourglass.tiny_configs import tiny_stacked_hourglass_config


def release_conv_shapes(
    features: int,
    sources: int,
    stacks: int = 4,
    depth: int = 4,
    growth: int = 0,
    stem: tuple[int, int] = (64, 128),
) -> list[tuple[int, int, int, int]]:
    """(kh, kw, in, out) of every convolution of the release's `model.infer` (with `nf = f + growth`
    in `hourglass`; the release has growth 0)."""
    first, second = stem
    shapes = [(7, 7, 1, first), (3, 3, first, second), (3, 3, second, second), (3, 3, second, second)]
    shapes.append((3, 3, second, features))

    def hourglass(level: int, f: int) -> list[tuple[int, int, int, int]]:
        nf = f + growth
        inner = hourglass(level - 1, nf) if level > 1 else [(3, 3, nf, nf)]
        return [(3, 3, f, f), (3, 3, f, nf), *inner, (3, 3, nf, f)]

    for stack in range(stacks):
        shapes += hourglass(depth, features)
        shapes += [(3, 3, features, features), (1, 1, features, features), (1, 1, features, sources)]
        if stack < stacks - 1:
            shapes += [(1, 1, features, features), (1, 1, sources, features)]
    return shapes


def _identity_convs(module: torch.nn.Module) -> None:
    """Every convolution passes channel i to channel i (centre tap 1), other weights and biases 0."""
    with torch.no_grad():
        for conv in module.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.weight.zero_()
                conv.bias.zero_()
                kh, kw = conv.kernel_size
                for channel in range(min(conv.in_channels, conv.out_channels)):
                    conv.weight[channel, channel, kh // 2, kw // 2] = 1.0


class TestStackedHourglass(SourceSeparationModelTesterMixin):
    model_class = StackedHourglassForSourceSeparation
    input_lengths = (1001, 1600)
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"source_names": []}, "source_names"),
        ({"source_names": ["vocals", "vocals"]}, "source_names"),
        ({"num_bins": 600}, "num_bins"),
        ({"hop_length": 2048}, "hop_length"),
        ({"num_stacks": 0}, "num_stacks"),
        ({"hourglass_depth": 0}, "hourglass_depth"),
        ({"num_features": 2.5}, "num_features"),
        ({"feature_growth": -64}, "feature_growth"),
        ({"stem_channels": [64]}, "stem_channels"),
        ({"stem_channels": [64, 0]}, "stem_channels"),
        ({"normalize_magnitude": "yes"}, "normalize_magnitude"),
        ({"audio_channels": 0}, "audio_channels"),
    ]

    def get_config(self) -> StackedHourglassConfig:
        return tiny_stacked_hourglass_config()

    # -- defaults ------------------------------------------------------------------------------

    def test_defaults_are_the_released_mir1k_model(self) -> None:
        config = StackedHourglassConfig()
        assert (config.sampling_rate, config.audio_channels) == (8000, 1)
        assert config.source_names == ["accompaniment", "vocals"]
        assert (config.n_fft, config.hop_length, config.num_bins) == (1024, 256, 512)
        assert (config.num_stacks, config.hourglass_depth, config.num_features, config.feature_growth) == (
            4,
            4,
            256,
            0,
        )
        assert config.stem_channels == [64, 128] and config.normalize_magnitude is True
        expected = sum(kh * kw * ci * co + co for kh, kw, ci, co in release_conv_shapes(256, 2))
        model = StackedHourglassForSourceSeparation(config)
        assert sum(p.numel() for p in model.parameters()) == expected == 34_176_776

    def test_variants_parameter_counts(self) -> None:
        dsd = StackedHourglassConfig(source_names=["bass", "drums", "other", "vocals"])
        expected = sum(kh * kw * ci * co + co for kh, kw, ci, co in release_conv_shapes(256, 4))
        assert sum(p.numel() for p in StackedHourglassForSourceSeparation(dsd).parameters()) == expected
        grown = StackedHourglassConfig(num_features=64, feature_growth=64)
        model = StackedHourglassForSourceSeparation(grown)
        expected = sum(kh * kw * ci * co + co for kh, kw, ci, co in release_conv_shapes(64, 2, growth=64))
        assert sum(p.numel() for p in model.parameters()) == expected
        # 64, 128, 192, 256 channels at the four pooled levels, 320 at the bottom convolution
        hourglass = model.network.hourglasses[0]
        widths = []
        while isinstance(hourglass, StackedHourglassModule):
            widths.append(hourglass.lower_in.conv.out_channels)
            hourglass = hourglass.inner
        assert widths == [128, 192, 256, 320] and hourglass.conv.in_channels == 320

    # -- hourglass geometry ----------------------------------------------------------------------

    @pytest.mark.parametrize("depth", [1, 2, 3])
    def test_hourglass_keeps_the_shape_of_divisible_inputs(self, depth: int) -> None:
        module = StackedHourglassModule(depth, 6, growth=3)
        for size in [(2**depth, 2**depth), (3 * 2**depth, 5 * 2**depth)]:
            inputs = torch.randn(2, 6, *size)
            assert module(inputs).shape == inputs.shape

    @pytest.mark.parametrize("depth", [1, 2, 4])
    def test_hourglass_with_identity_convolutions_is_a_pyramid_sum(self, depth: int) -> None:
        # identity convolutions and positive input: hourglass(x) = x + up(hourglass'(pool(x))), so a
        # constant c gives (depth + 1) c, and at depth 1 an impulse spreads onto its 2x2 pooling cell
        module = StackedHourglassModule(depth, 4, growth=2)
        _identity_convs(module)
        constant = torch.full((1, 4, 2**depth * 2, 2**depth * 3), 0.5)
        torch.testing.assert_close(module(constant), constant * (depth + 1), atol=0, rtol=0)
        impulse = torch.zeros(1, 4, 2**depth * 2, 2**depth * 2)
        impulse[0, 1, 2, 3] = 1.0
        output = module(impulse)
        expected = impulse.clone()
        for level in range(1, depth + 1):  # the impulse survives every pooling, up-sampled by 2**level
            cell = 2**level
            row, col = (2 // cell) * cell, (3 // cell) * cell
            expected[0, 1, row : row + cell, col : col + cell] += 1.0
        torch.testing.assert_close(output, expected, atol=0, rtol=0)

    def test_other_sizes_are_padded_then_trimmed(self) -> None:
        config = tiny_stacked_hourglass_config()
        model = StackedHourglassForSourceSeparation(config).eval()
        magnitudes = torch.rand(2, 1, 30, 21)  # neither size divisible by 4
        with torch.no_grad():
            masks = model.network(magnitudes)
            padded = model.network(F.pad(magnitudes, (0, 3, 0, 2)))
        assert len(masks) == 2 and all(mask.shape == (2, 2, 30, 21) for mask in masks)
        for mask, reference in zip(masks, padded, strict=True):
            torch.testing.assert_close(mask, reference[..., :30, :21], atol=0, rtol=0)

    # -- masks, loss and reconstruction ------------------------------------------------------------

    def test_loss_is_the_sum_over_stacks_of_the_masked_magnitude_l1(self) -> None:
        config = tiny_stacked_hourglass_config(num_stacks=3, audio_channels=2)
        model = StackedHourglassForSourceSeparation(config).eval()
        generator = torch.Generator().manual_seed(0)
        mixture = 0.2 * torch.randn(2, 2, 777, generator=generator)
        labels = 0.2 * torch.randn(2, 2, 2, 777, generator=generator)
        with torch.no_grad():
            output = model(input_values=mixture, labels=labels, output_masks=True)
        assert len(output.masks) == 3
        frames = 1 + 777 // 16
        assert all(mask.shape == (2, 2, 2, 32, frames) for mask in output.masks)
        window = torch.hann_window(64, periodic=True)

        def magnitude(x: torch.Tensor) -> torch.Tensor:
            return torch.stft(x, 64, 16, window=window, center=True, return_complex=True).abs()[..., :32, :]

        mix_mag = magnitude(mixture.reshape(-1, 777)).reshape(2, 2, 32, frames)
        scale = mix_mag.amax(dim=(-2, -1), keepdim=True)  # per item and channel
        target = magnitude(labels.reshape(-1, 777)).reshape(2, 2, 2, 32, frames) / scale[:, None]
        per_stack = [(target - (mix_mag / scale)[:, None] * mask).abs().mean() for mask in output.masks]
        torch.testing.assert_close(output.loss, sum(per_stack), atol=1e-6, rtol=1e-5)
        assert not torch.isclose(output.loss, per_stack[-1])  # every stack contributes

    def test_unit_masks_give_back_the_mixture_and_negative_masks_silence(self) -> None:
        # mixture phase and magnitude with a mask of one: the STFT round trip (all bins kept)
        config = tiny_stacked_hourglass_config(num_bins=33, audio_channels=2)
        model = StackedHourglassForSourceSeparation(config).eval()
        mixture = 0.3 * torch.randn(1, 2, 999)
        model.network.forward = lambda magnitudes: [
            torch.ones(magnitudes.shape[0], 2, *magnitudes.shape[-2:])
        ]
        with torch.no_grad():
            audio = model(input_values=mixture).audio_values
        torch.testing.assert_close(audio, mixture[:, None].expand(-1, 2, -1, -1), atol=2e-6, rtol=0)
        # masks (0.25, -3): the first source is a quarter of the mixture, the negative one is clipped to 0
        model.network.forward = lambda magnitudes: [
            torch.stack(
                [torch.full(magnitudes.shape[-2:], 0.25), torch.full(magnitudes.shape[-2:], -3.0)]
            ).expand(magnitudes.shape[0], -1, -1, -1)
        ]
        with torch.no_grad():
            audio = model(input_values=mixture).audio_values
        torch.testing.assert_close(audio[:, 0], 0.25 * mixture, atol=1e-6, rtol=0)
        assert torch.equal(audio[:, 1], torch.zeros_like(mixture))

    def test_dropping_the_nyquist_bin_keeps_band_limited_signals(self) -> None:
        config = tiny_stacked_hourglass_config()  # 32 of 33 bins, as the release (512 of 513)
        model = StackedHourglassForSourceSeparation(config).eval()
        model.network.forward = lambda magnitudes: [
            torch.ones(magnitudes.shape[0], 2, *magnitudes.shape[-2:])
        ]
        n = torch.arange(1200, dtype=torch.float64)
        tones = 0.3 * torch.cos(2 * math.pi * 5 * n / 64) + 0.2 * torch.sin(2 * math.pi * 29 * n / 64 + 0.5)
        with torch.no_grad():
            audio = model(input_values=tones.float()[None, None]).audio_values
        torch.testing.assert_close(audio[0, 0, 0, 64:-64], tones.float()[64:-64], atol=2e-6, rtol=0)

    def test_channels_are_separated_independently_and_gain_invariantly(self) -> None:
        stereo = StackedHourglassForSourceSeparation(tiny_stacked_hourglass_config(audio_channels=2)).eval()
        mono = StackedHourglassForSourceSeparation(tiny_stacked_hourglass_config()).eval()
        mono.load_state_dict(stereo.state_dict())
        mixture = 0.1 * torch.randn(2, 2, 1100)
        with torch.no_grad():
            both = stereo(input_values=mixture).audio_values
            right = mono(input_values=mixture[:, 1:]).audio_values
            louder = stereo(input_values=8.0 * mixture).audio_values
        torch.testing.assert_close(both[:, :, 1:], right, atol=1e-6, rtol=1e-5)
        # magnitudes are divided by their maximum: masks do not change with the input gain
        torch.testing.assert_close(louder, 8.0 * both, atol=1e-5, rtol=1e-4)

    def test_silent_channel_next_to_a_loud_one(self) -> None:
        model = StackedHourglassForSourceSeparation(tiny_stacked_hourglass_config(audio_channels=2)).eval()
        mixture = torch.zeros(1, 2, 800)
        mixture[0, 0] = torch.randn(800)
        with torch.no_grad():
            output = model(input_values=mixture, labels=torch.zeros(1, 2, 2, 800))
        assert torch.equal(output.audio_values[:, :, 1], torch.zeros(1, 2, 800))
        assert torch.isfinite(output.loss)
