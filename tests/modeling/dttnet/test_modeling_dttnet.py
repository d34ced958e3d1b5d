from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
import torch

from demixers.modeling.dttnet import DTTNetConfig, DTTNetForSourceSeparation
from demixers.modeling.dttnet.modeling_dttnet import dttnet_istft, dttnet_stft, merge_heads, split_heads
from tests.modeling.common import SourceSeparationModelTesterMixin
from tests.modeling.dttnet.tiny_configs import small_dttnet_config, tiny_dttnet_config


class TestDTTNet(SourceSeparationModelTesterMixin):
    model_class = DTTNetForSourceSeparation
    input_lengths = (1001, 1600)
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"source_names": ["vocals", "drums", "bass"]}, "source_names"),
        ({"source_names": []}, "source_names"),
        ({"num_blocks": 4}, "num_blocks"),
        ({"dim_f": 2050}, "dim_f"),
        ({"dim_f": 4000}, "dim_f"),
        ({"dim_t": 255}, "dim_t"),
        ({"hop_length": 8192}, "hop_length"),
        ({"overlap_samples": 200000}, "overlap_samples"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"tdf_bottleneck_factor": 1024}, "tdf_bottleneck_factor"),
        ({"num_heads": 5}, "num_heads"),
        ({"norm_group_size": 64}, "norm_group_size"),
        ({"rnn_type": "transformer"}, "rnn_type"),
        ({"bidirectional": 1}, "bidirectional"),
        ({"growth": 0}, "growth"),
        ({"audio_channels": True}, "audio_channels"),
    ]

    def get_config(self) -> DTTNetConfig:
        return tiny_dttnet_config()

    # -- defaults ------------------------------------------------------------------------------

    def test_defaults_are_the_released_vocals_model(self) -> None:
        config = DTTNetConfig()
        assert (config.sampling_rate, config.audio_channels) == (44100, 2)
        assert config.source_names == ["vocals", "accompaniment"] and config.target_name == "vocals"
        assert (config.n_fft, config.hop_length, config.dim_f, config.dim_t) == (6144, 1024, 2048, 256)
        assert (config.chunk_size, config.overlap_samples, config.chunk_stride) == (261120, 3072, 254976)
        assert (config.num_blocks, config.num_tfc_layers, config.growth, config.kernel_size) == (5, 3, 32, 3)
        assert (config.tdf_bottleneck_factor, config.tdf_bias) == (8, False)
        assert (config.num_dual_path_layers, config.num_heads, config.rnn_type, config.bidirectional) == (
            4,
            2,
            "lstm",
            True,
        )
        assert config.bottleneck_channels == 96
        model = DTTNetForSourceSeparation(config)
        # the paper's "5.0M parameters" (86.7% fewer than BSRNN's 37.6M); exact count of the release
        assert sum(p.numel() for p in model.parameters()) == 4_958_468

    # -- spectral front / back ends ---------------------------------------------------------------

    def test_stft_planes_are_real_imag_per_channel(self) -> None:
        generator = torch.Generator().manual_seed(0)
        waveform = torch.randn(2, 3, 960, generator=generator)
        planes = dttnet_stft(waveform, n_fft=256, hop_length=64, dim_f=64)
        assert planes.shape == (2, 6, 64, 16)
        window = torch.hann_window(256, periodic=True)
        for channel in range(3):
            spec = torch.stft(waveform[:, channel], 256, 64, window=window, center=True, return_complex=True)[
                :, :64
            ]
            torch.testing.assert_close(planes[:, 2 * channel], spec.real, atol=1e-5, rtol=0)
            torch.testing.assert_close(planes[:, 2 * channel + 1], spec.imag, atol=1e-5, rtol=0)

    def test_stft_then_istft_is_exact_below_dim_f_and_removes_the_rest(self) -> None:
        # Bin-centred tones: an interior Hann frame of cos(2 pi k n / n_fft) has energy in bins
        # k - 1, k, k + 1 only, so keeping `dim_f` bins passes tone k < dim_f - 1 exactly and removes
        # tone k > dim_f. Samples covered by interior frames only (n_fft from each end) are exact.
        n_fft, hop, dim_f, length = 256, 64, 64, 64 * 31
        n = torch.arange(length, dtype=torch.float64)
        low = 0.5 * torch.cos(2 * math.pi * 20 * n / n_fft) + 0.25 * torch.sin(2 * math.pi * 61 * n / n_fft)
        high = 0.4 * torch.cos(2 * math.pi * 90 * n / n_fft + 0.3)
        waveform = torch.stack([low + high, low - high]).float()[None]
        planes = dttnet_stft(waveform, n_fft, hop, dim_f)
        restored = dttnet_istft(planes, n_fft, hop)
        assert restored.shape == waveform.shape
        valid = slice(n_fft, length - n_fft)
        expected = low.float()[valid].expand(1, 2, -1)
        torch.testing.assert_close(restored[..., valid], expected, atol=2e-6, rtol=0)
        # all bins kept: the front/back ends are an exact inverse everywhere
        full = dttnet_istft(dttnet_stft(waveform, n_fft, hop, n_fft // 2 + 1), n_fft, hop)
        torch.testing.assert_close(full, waveform, atol=2e-6, rtol=0)

    def test_chunking_with_an_identity_network_low_passes_the_input(self) -> None:
        # overlap_samples >= n_fft: every kept sample is covered by frames that lie inside its chunk,
        # so split -> STFT -> (identity) -> iSTFT -> trim -> concatenate reproduces the band-limited
        # input away from the signal's own ends; the residual is the removed band.
        config = small_dttnet_config(overlap_samples=256)
        model = DTTNetForSourceSeparation(config).eval()
        model.unet.forward = lambda planes: planes
        length = 3000  # 7 chunks of 448 kept samples
        n = torch.arange(length, dtype=torch.float64)
        low = 0.3 * torch.cos(2 * math.pi * 12 * n / 256) + 0.2 * torch.cos(2 * math.pi * 40 * n / 256 + 1.0)
        high = 0.3 * torch.cos(2 * math.pi * 100 * n / 256)
        mixture = torch.stack([low + high, 0.5 * low - high]).float()[None]
        with torch.no_grad():
            audio = model(input_values=mixture).audio_values
        assert audio.shape == (1, 2, 2, length)
        valid = slice(256, length - 256)
        torch.testing.assert_close(audio[0, 0, 0, valid], low.float()[valid], atol=3e-6, rtol=0)
        torch.testing.assert_close(audio[0, 0, 1, valid], 0.5 * low.float()[valid], atol=3e-6, rtol=0)
        torch.testing.assert_close(audio[0, 1, 0, valid], high.float()[valid], atol=3e-6, rtol=0)
        torch.testing.assert_close(audio[0, 0] + audio[0, 1], mixture[0], atol=1e-6, rtol=0)

    def test_chunk_geometry(self) -> None:
        model = DTTNetForSourceSeparation(small_dttnet_config()).eval()
        config = model.config
        assert (config.chunk_size, config.chunk_stride) == (960, 704)
        mixture = torch.arange(2 * 2 * 1500, dtype=torch.float32).reshape(2, 2, 1500)
        chunks = model.split_into_chunks(mixture)
        assert chunks.shape == (2 * 3, 2, 960)  # ceil(1500 / 704) = 3 chunks per item
        # chunk i of item b starts at i * stride - overlap (zeros before the signal)
        assert torch.equal(chunks[1, :, :924], mixture[0, :, 576:1500])
        assert torch.equal(chunks[1, :, 924:], torch.zeros(2, 36))
        assert torch.equal(chunks[0, :, :128], torch.zeros(2, 128))
        assert torch.equal(chunks[0, :, 128:], mixture[0, :, :832])
        assert torch.equal(chunks[3, :, 128 : 128 + 832], mixture[1, :, :832])
        assert torch.equal(model.merge_chunks(chunks, 2, 1500), mixture)

    # -- dual-path heads ----------------------------------------------------------------------------

    def test_split_and_merge_heads_are_inverse_permutations(self) -> None:
        batch, channels, time, freq, heads = 2, 6, 5, 4, 3
        hidden = torch.arange(batch * channels * time * freq, dtype=torch.float32).reshape(
            batch, channels, time, freq
        )
        split = split_heads(hidden, heads)
        assert split.shape == (batch * heads, freq, time, channels // heads)
        # a permutation: same multiset of values, each exactly once
        assert torch.equal(split.flatten().sort().values, hidden.flatten())
        for b in range(batch):
            for h in range(heads):
                for j in range(channels // heads):
                    assert torch.equal(
                        split[b * heads + h, :, :, j], hidden[b, h * (channels // heads) + j].T
                    )
        assert torch.equal(merge_heads(split, heads), hidden)
        assert torch.equal(split_heads(merge_heads(split, heads), heads), split)

    def test_dual_path_rnn_runs_along_time_then_frequency(self) -> None:
        # Perturbing one (time, freq) bin of the bottleneck must reach, after one time path, only its
        # frequency row, and after the frequency path every bin; heads stay independent.
        config = small_dttnet_config(num_dual_path_layers=1)
        model = DTTNetForSourceSeparation(config).eval()
        layer = model.unet.dual_path.layers[0]
        hidden = torch.randn(1, 32, 8, 6)
        bumped = hidden.clone()
        bumped[0, 3, 2, 4] += 1.0  # channel 3 is in head 0 (channels 0..15)
        with torch.no_grad():
            time_out = layer.time_rnn(split_heads(hidden, 2))  # (b h) t f n after the transpose
            time_out_bumped = layer.time_rnn(split_heads(bumped, 2))
            changed = (time_out - time_out_bumped).abs().amax(dim=-1) > 0  # (b h) t f
            assert changed[0, :, 4].all() and not changed[0, :, :4].any() and not changed[0, :, 5:].any()
            assert not changed[1].any()
            full = model.unet.dual_path(hidden) - model.unet.dual_path(bumped)
        per_head = full.abs().reshape(2, 16, 8, 6).amax(dim=1)
        assert (per_head[0] > 0).all() and not (per_head[1] > 0).any()

    # -- stages ---------------------------------------------------------------------------------

    def test_shapes_per_stage(self) -> None:
        config = small_dttnet_config(num_blocks=5, tdf_bottleneck_factor=2)
        model = DTTNetForSourceSeparation(config).eval()
        unet = model.unet
        shapes: dict[str, tuple[int, ...]] = {}

        def record(name: str):
            return lambda module, inputs, output: shapes.__setitem__(name, tuple(output.shape))

        for index in range(2):
            unet.encoder_blocks[index].register_forward_hook(record(f"encoder{index}"))
            unet.downsamples[index].register_forward_hook(record(f"down{index}"))
            unet.upsamples[index].register_forward_hook(record(f"up{index}"))
            unet.decoder_blocks[index].register_forward_hook(record(f"decoder{index}"))
        unet.bottleneck_block.register_forward_hook(record("bottleneck"))
        unet.dual_path.register_forward_hook(record("dual_path"))
        planes = torch.randn(3, 4, 64, 16)  # b (c ri) f t
        with torch.no_grad():
            output = unet(planes)
        assert output.shape == planes.shape
        # feature maps are b c t f: channels grow by `growth`, time and frequency halve per level
        assert shapes == {
            "encoder0": (3, 16, 16, 64),
            "down0": (3, 32, 8, 32),
            "encoder1": (3, 32, 8, 32),
            "down1": (3, 48, 4, 16),
            "bottleneck": (3, 48, 4, 16),
            "dual_path": (3, 48, 4, 16),
            "up0": (3, 32, 8, 32),
            "decoder0": (3, 32, 8, 32),
            "up1": (3, 16, 16, 64),
            "decoder1": (3, 16, 16, 64),
        }
        tdf = unet.encoder_blocks[1].tdf
        assert (tdf.fc1.in_features, tdf.fc1.out_features, tdf.fc2.out_features) == (32, 16, 32)

    def test_single_source_config_returns_the_target_only(self) -> None:
        config = tiny_dttnet_config(source_names=["bass"])
        model = DTTNetForSourceSeparation(config).eval()
        two = DTTNetForSourceSeparation(tiny_dttnet_config(source_names=["bass", "residual"])).eval()
        two.load_state_dict(model.state_dict())
        mixture = 0.1 * torch.randn(1, 2, 1234)
        with torch.no_grad():
            single = model(input_values=mixture).audio_values
            pair = two(input_values=mixture).audio_values
        assert single.shape == (1, 1, 2, 1234)
        assert torch.equal(pair[:, :1], single)
        torch.testing.assert_close(pair[:, 1], mixture - single[:, 0], atol=0, rtol=0)

    def test_loss_is_l1_on_the_waveforms(self) -> None:
        model = DTTNetForSourceSeparation(tiny_dttnet_config()).eval()
        mixture = 0.1 * torch.randn(2, 2, 1500)
        labels = 0.1 * torch.randn(2, 2, 2, 1500)
        with torch.no_grad():
            output = model(input_values=mixture, labels=labels)
        expected = (output.audio_values - labels).abs().mean()
        torch.testing.assert_close(output.loss, expected, atol=1e-7, rtol=1e-6)
        with pytest.raises(ValueError, match="labels"):
            model(input_values=mixture, labels=labels[:, :1])
