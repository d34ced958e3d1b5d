"""Conv-TasNet model tests: the common contract, TCN known answers and a short training run."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F

import demixers
from demixers.modeling.conv_tasnet import ConvTasNetConfig, ConvTasNetForSourceSeparation
from demixers.modeling.conv_tasnet.modeling_conv_tasnet import (
    ConvTasNetCumulativeLayerNorm,
    pairwise_si_snr,
    permutation_invariant_si_snr_loss,
)
from demixers.pipelines.chunking import is_permutation_invariant
from tests.modeling.common import SourceSeparationModelTesterMixin

demixers.register_model_family(ConvTasNetConfig, ConvTasNetForSourceSeparation)

# N=512, L=16, B=128, H=512, Sc=128, P=3, X=8, R=3, 2 speakers (paper: 5.1M; asteroid counts 65,664 more
# for the unused residual convolution of the last block)
PAPER_PARAMETERS = 4_984_881


def tiny_config(**overrides) -> ConvTasNetConfig:
    kwargs = dict(
        encoder_channels=8,
        encoder_kernel_size=8,
        bottleneck_channels=8,
        hidden_channels=12,
        skip_channels=6,
        num_blocks=3,
        num_repeats=2,
    )
    kwargs.update(overrides)
    return ConvTasNetConfig(**kwargs)


def music_config(**overrides) -> ConvTasNetConfig:
    """The demucs v2 tasnet layout, shrunk: stereo, named stems, no skips / biases / mask PReLU."""
    kwargs = dict(
        sampling_rate=44100,
        audio_channels=2,
        source_names=["drums", "bass", "other", "vocals"],
        encoder_channels=8,
        encoder_kernel_size=10,
        encoder_activation="relu",
        bottleneck_channels=8,
        hidden_channels=12,
        skip_channels=0,
        num_blocks=2,
        num_repeats=2,
        input_norm_type="cln",
        mask_activation="relu",
        mask_prelu=False,
        separator_bias=False,
        segment=8.0,
    )
    kwargs.update(overrides)
    return ConvTasNetConfig(**kwargs)


class TestConvTasNetModel(SourceSeparationModelTesterMixin):
    model_class = ConvTasNetForSourceSeparation
    input_lengths = (1001, 1600)
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"sampling_rate": 0}, "sampling_rate"),
        ({"audio_channels": 0}, "audio_channels"),
        ({"source_names": []}, "source_names"),
        ({"source_names": ["a", "a"]}, "source_names"),
        ({"source_names": ["a", "b"], "num_speakers": 3}, "num_speakers"),
        ({"num_speakers": 0}, "num_speakers"),
        ({"encoder_channels": 0}, "encoder_channels"),
        ({"encoder_kernel_size": 0}, "encoder_kernel_size"),
        ({"encoder_stride": 17}, "encoder_stride"),
        ({"encoder_activation": "tanh"}, "encoder_activation"),
        ({"bottleneck_channels": 0}, "bottleneck_channels"),
        ({"hidden_channels": -1}, "hidden_channels"),
        ({"skip_channels": -1}, "skip_channels"),
        ({"conv_kernel_size": 4}, "conv_kernel_size"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"num_repeats": 0}, "num_repeats"),
        ({"norm_type": "layer"}, "norm_type"),
        ({"input_norm_type": "rms"}, "input_norm_type"),
        ({"causal": True}, "norm_type"),  # gLN looks at the whole signal
        ({"causal": True, "norm_type": "cln", "input_norm_type": "gln"}, "input_norm_type"),
        ({"causal": 1}, "causal"),
        ({"mask_activation": "gelu"}, "mask_activation"),
        ({"mask_prelu": "yes"}, "mask_prelu"),
        ({"separator_bias": None}, "separator_bias"),
        ({"segment": 0}, "segment"),
    ]

    def get_config(self) -> ConvTasNetConfig:
        return tiny_config()


class TestConvTasNetMusicModel(SourceSeparationModelTesterMixin):
    """The demucs-style variant: stereo, fixed stems (L1 loss), no skip path, causal-free cLN input."""

    model_class = ConvTasNetForSourceSeparation
    input_lengths = (999, 1600)
    # the same modeling file as the speech variant: one remote-code round trip (a subprocess) is enough
    test_remote_code_loads_without_demixers = None

    def get_config(self) -> ConvTasNetConfig:
        return music_config()


# -- configuration --------------------------------------------------------------------------------


def test_default_config_is_the_papers_best_non_causal_model() -> None:
    config = ConvTasNetConfig()
    assert config.model_type == "conv_tasnet"
    assert (config.sampling_rate, config.audio_channels, config.source_names) == (
        8000,
        1,
        ["speaker_1", "speaker_2"],
    )
    assert (config.encoder_channels, config.encoder_kernel_size, config.encoder_stride) == (512, 16, 8)
    assert (config.bottleneck_channels, config.hidden_channels, config.skip_channels) == (128, 512, 128)
    assert (config.conv_kernel_size, config.num_blocks, config.num_repeats) == (3, 8, 3)
    assert (config.norm_type, config.input_norm_type, config.causal) == ("gln", "gln", False)
    assert (config.mask_activation, config.encoder_activation) == ("sigmoid", "linear")
    assert config.permutation_invariant
    model = ConvTasNetForSourceSeparation(config)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMETERS


def test_source_names_decide_permutation_invariance() -> None:
    assert ConvTasNetConfig(num_speakers=3).source_names == ["speaker_1", "speaker_2", "speaker_3"]
    assert ConvTasNetConfig(num_speakers=3).permutation_invariant
    assert is_permutation_invariant(ConvTasNetConfig(num_speakers=3))  # what the pipeline checks
    assert not music_config().permutation_invariant and not is_permutation_invariant(music_config())
    assert not ConvTasNetConfig(source_names=["speech", "noise"]).permutation_invariant


def test_stride_defaults_to_half_the_kernel() -> None:
    assert ConvTasNetConfig(encoder_kernel_size=20).encoder_stride == 10
    assert ConvTasNetConfig(encoder_kernel_size=1).encoder_stride == 1
    assert ConvTasNetConfig(encoder_kernel_size=16, encoder_stride=4).encoder_stride == 4


# -- receptive field and causality -------------------------------------------------------------------


def _frame_support(config: ConvTasNetConfig, frames: int, target: int) -> list[int]:
    """Input frames whose features change the separator's masks at frame ``target``."""
    torch.manual_seed(0)
    model = ConvTasNetForSourceSeparation(config).double().eval()
    features = torch.randn(1, config.encoder_channels, frames, dtype=torch.float64, requires_grad=True)
    model.separator(features)[..., target].sum().backward()
    influence = features.grad.abs().sum(dim=1)[0]
    return torch.nonzero(influence > 0).flatten().tolist()


@pytest.mark.parametrize(("blocks", "repeats", "kernel"), [(3, 2, 3), (4, 1, 5), (2, 3, 3)])
def test_receptive_field_matches_the_formula(blocks: int, repeats: int, kernel: int) -> None:
    # cLN keeps every operation local in time (gLN would couple all frames through its statistics)
    config = tiny_config(num_blocks=blocks, num_repeats=repeats, conv_kernel_size=kernel, norm_type="cln")
    expected = 1 + repeats * (kernel - 1) * (2**blocks - 1)
    assert config.receptive_field == expected
    frames, target = 3 * expected, 3 * expected // 2
    support = _frame_support(config, frames, target)
    half = (expected - 1) // 2
    assert support == list(range(target - half, target + half + 1))
    assert (
        config.receptive_field_samples == (expected - 1) * config.encoder_stride + config.encoder_kernel_size
    )


def test_causal_separator_sees_exactly_the_past_receptive_field() -> None:
    config = tiny_config(causal=True, norm_type="cln", conv_kernel_size=2)
    expected = 1 + 2 * 1 * (2**3 - 1)
    assert config.receptive_field == expected
    target = 40
    assert _frame_support(config, 60, target) == list(range(target - expected + 1, target + 1))


@pytest.mark.parametrize("norm_type", ["cln", "cgln", "bn", "id"])
def test_causal_model_output_does_not_depend_on_future_samples(norm_type: str) -> None:
    config = tiny_config(causal=True, norm_type=norm_type)
    torch.manual_seed(0)
    model = ConvTasNetForSourceSeparation(config).eval()
    mixture = torch.randn(1, 1, 1200)
    changed = mixture.clone()
    start = 700
    changed[..., start:] = torch.randn(1, 1, 500)
    with torch.no_grad():
        before = model(mixture).audio_values
        after = model(changed).audio_values
    # a sample is written by the frames covering it; those end at most kernel_size - 1 samples later
    safe = start - config.encoder_kernel_size + 1
    torch.testing.assert_close(after[..., :safe], before[..., :safe], atol=1e-6, rtol=1e-5)
    assert (after[..., start:] - before[..., start:]).abs().max() > 1e-3


def test_non_causal_model_looks_ahead() -> None:
    config = tiny_config(norm_type="cln")
    torch.manual_seed(0)
    model = ConvTasNetForSourceSeparation(config).eval()
    mixture = torch.randn(1, 1, 1200)
    changed = mixture.clone()
    changed[..., 700:] = 0.0
    with torch.no_grad():
        difference = model(changed).audio_values[..., 600:690] - model(mixture).audio_values[..., 600:690]
    assert difference.abs().max() > 1e-4


def test_cumulative_layer_norm_uses_statistics_up_to_each_frame() -> None:
    torch.manual_seed(0)
    norm = ConvTasNetCumulativeLayerNorm(5)
    hidden = torch.randn(2, 5, 30, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    expected = torch.empty_like(hidden)
    for t in range(30):
        past = hidden[:, :, : t + 1]
        mean = past.mean(dim=(1, 2), keepdim=True)
        var = past.var(dim=(1, 2), unbiased=False, keepdim=True)
        normed = (hidden[:, :, t : t + 1] - mean) / torch.sqrt(var + 1e-8)
        expected[:, :, t : t + 1] = normed * norm.weight.double()[:, None] + norm.bias.double()[:, None]
    torch.testing.assert_close(norm.double()(hidden), expected)


# -- shapes, masks, inputs -----------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 7, 8, 9, 12, 17, 1003])
def test_any_length_gives_the_same_length(length: int) -> None:
    config = tiny_config()
    model = ConvTasNetForSourceSeparation(config).eval()
    with torch.no_grad():
        output = model(input_values=torch.randn(2, 1, length)).audio_values
    assert output.shape == (2, 2, 1, length)
    assert torch.isfinite(output).all()


def test_tail_after_the_last_full_frame_is_zero() -> None:
    config = tiny_config()  # kernel 8, hop 4: 1003 samples -> 249 frames covering 1000 samples
    model = ConvTasNetForSourceSeparation(config).eval()
    with torch.no_grad():
        output = model(input_values=torch.randn(1, 1, 1003)).audio_values
    assert torch.equal(output[..., 1000:], torch.zeros_like(output[..., 1000:]))
    assert output[..., 990:1000].abs().max() > 0


def test_softmax_masks_sum_to_one_over_sources_and_mixture_is_recovered() -> None:
    config = tiny_config(mask_activation="softmax", num_speakers=3)
    torch.manual_seed(0)
    model = ConvTasNetForSourceSeparation(config).eval()
    features = torch.randn(2, config.encoder_channels, 50)
    with torch.no_grad():
        masks = model.separator(features)
        assert masks.shape == (2, 3, config.encoder_channels, 50)
        torch.testing.assert_close(masks.sum(dim=1), torch.ones(2, config.encoder_channels, 50))
        # masks summing to one over sources: the sources add up to the encoded-decoded mixture
        mixture = torch.randn(2, 1, 804)
        sources = model(mixture).audio_values.sum(dim=1)
        reconstruction = model.decoder(model.encoder(mixture))
    torch.testing.assert_close(sources, reconstruction, atol=1e-5, rtol=1e-5)


def test_two_and_three_dimensional_mono_inputs_agree() -> None:
    model = ConvTasNetForSourceSeparation(tiny_config()).eval()
    mixture = torch.randn(2, 900)
    with torch.no_grad():
        assert torch.equal(model(mixture).audio_values, model(mixture[:, None]).audio_values)


def test_stereo_model_refuses_two_dimensional_input() -> None:
    model = ConvTasNetForSourceSeparation(music_config()).eval()
    with pytest.raises(ValueError, match=r"\(batch, 2, time\)"):
        model(torch.randn(2, 900))


def test_integer_input_raises_type_error() -> None:
    model = ConvTasNetForSourceSeparation(tiny_config()).eval()
    with pytest.raises(TypeError):
        model(torch.zeros(1, 1, 100, dtype=torch.int64))


def test_padding_mask_separates_each_item_at_its_own_length() -> None:
    model = ConvTasNetForSourceSeparation(tiny_config()).eval()
    torch.manual_seed(1)
    first, second = torch.randn(1, 1, 800), torch.randn(1, 1, 500)
    batch = torch.zeros(2, 1, 800)
    batch[0], batch[1, :, :500] = first[0], second[0]
    mask = torch.zeros(2, 800, dtype=torch.long)
    mask[0], mask[1, :500] = 1, 1
    with torch.no_grad():
        output = model(batch, padding_mask=mask).audio_values
        torch.testing.assert_close(output[0:1], model(first).audio_values)
        torch.testing.assert_close(output[1:2, ..., :500], model(second).audio_values)
    assert torch.equal(output[1, ..., 500:], torch.zeros_like(output[1, ..., 500:]))
    with pytest.raises(ValueError, match="padding_mask"):
        model(batch, padding_mask=mask[:, :10])


def test_return_dict_false_gives_a_tuple() -> None:
    model = ConvTasNetForSourceSeparation(tiny_config()).eval()
    mixture = torch.randn(1, 1, 400)
    labels = torch.randn(1, 2, 1, 400)
    loss, audio = model(mixture, labels=labels, return_dict=False)
    assert loss.dim() == 0 and audio.shape == (1, 2, 1, 400)
    (audio_only,) = model(mixture, return_dict=False)
    assert torch.equal(audio, audio_only)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    config = tiny_config()
    mixture, labels = torch.randn(2, 1, 600), torch.randn(2, 2, 1, 600)
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = ConvTasNetForSourceSeparation(config).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert all(block.gradient_checkpointing for block in model.separator.blocks)
        model(mixture, labels=labels).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, atol=1e-6, rtol=1e-5)


# -- losses ---------------------------------------------------------------------------------------


def test_pairwise_si_snr_matches_the_definition() -> None:
    torch.manual_seed(0)
    estimates, references = (
        torch.randn(2, 3, 2, 500, dtype=torch.float64),
        torch.randn(2, 3, 2, 500, dtype=torch.float64),
    )
    scores = pairwise_si_snr(estimates, references)
    for b, i, j in itertools.product(range(2), range(3), range(3)):
        values = []
        for c in range(2):
            e = estimates[b, i, c] - estimates[b, i, c].mean()
            r = references[b, j, c] - references[b, j, c].mean()
            target = (e @ r) / (r @ r + 1e-8) * r
            # the convention: eps = 1e-8 added to the noise energy and to the ratio
            ratio = float(target @ target) / (float((e - target) @ (e - target)) + 1e-8)
            values.append(10 * math.log10(ratio + 1e-8))
        assert scores[b, i, j].item() == pytest.approx(sum(values) / 2, rel=1e-9)


def test_pit_loss_finds_the_best_permutation() -> None:
    torch.manual_seed(0)
    references = torch.randn(3, 3, 1, 800)
    estimates = references[:, [2, 0, 1]] + 0.01 * torch.randn(3, 3, 1, 800)
    loss = permutation_invariant_si_snr_loss(estimates, references)
    aligned = pairwise_si_snr(estimates[:, [1, 2, 0]], references).diagonal(dim1=1, dim2=2).mean()
    assert loss.item() == pytest.approx(-aligned.item(), rel=1e-5)
    assert loss.item() < -30


def test_model_loss_is_pit_for_speakers_and_l1_for_stems() -> None:
    torch.manual_seed(0)
    speech = ConvTasNetForSourceSeparation(tiny_config()).eval()
    mixture, labels = torch.randn(2, 1, 700), torch.randn(2, 2, 1, 700)
    output = speech(mixture, labels=labels)
    swapped = speech(mixture, labels=labels[:, [1, 0]])
    assert output.loss.item() == pytest.approx(swapped.loss.item(), rel=1e-6)
    assert output.loss.item() == pytest.approx(
        permutation_invariant_si_snr_loss(output.audio_values, labels).item()
    )

    music = ConvTasNetForSourceSeparation(music_config()).eval()
    mixture, labels = torch.randn(2, 2, 700), torch.randn(2, 4, 2, 700)
    output = music(mixture, labels=labels)
    assert output.loss.item() == pytest.approx(F.l1_loss(output.audio_values, labels).item(), rel=1e-6)
    with pytest.raises(ValueError, match="labels"):
        music(mixture, labels=labels[:, :3])


# -- training ---------------------------------------------------------------------------------------


def synthetic_two_source_batch(
    generator: torch.Generator, batch: int, length: int, sampling_rate: int = 8000
):
    """Mixtures of a low harmonic tone and a high-pass noise burst train, with random gains and pitches."""
    t = torch.arange(length) / sampling_rate
    f0 = 150 + 150 * torch.rand(batch, 1, generator=generator)
    tone = sum(
        torch.sin(2 * math.pi * k * f0 * t + 6.28 * torch.rand(batch, 1, generator=generator)) / k
        for k in (1, 2, 3)
    )
    noise = torch.randn(batch, length, generator=generator)
    noise = noise - F.avg_pool1d(noise[:, None], 5, stride=1, padding=2, count_include_pad=False)[:, 0]
    envelope = (torch.sin(2 * math.pi * (3 + 3 * torch.rand(batch, 1, generator=generator)) * t) > 0).float()
    sources = torch.stack((tone, noise * envelope), dim=1)
    sources = (
        sources / sources.std(dim=-1, keepdim=True) * (0.5 + torch.rand(batch, 2, 1, generator=generator))
    )
    return sources.sum(dim=1, keepdim=True), sources[:, :, None]


def test_short_training_run_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = ConvTasNetForSourceSeparation(
        tiny_config(encoder_channels=12, bottleneck_channels=12, hidden_channels=12)
    ).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(20):
        mixture, sources = synthetic_two_source_batch(generator, batch=4, length=600)
        loss = model(mixture, labels=sources).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 8.0, (first, last)  # at least 8 dB of SI-SNR gained (about 16 dB here)


def test_permutation_invariant_is_a_saved_field_with_the_task_default(tmp_path: Path) -> None:
    from demixers.utils.model_contract import is_permutation_invariant

    assert ConvTasNetConfig().permutation_invariant is True  # speech: speaker_1, speaker_2
    assert ConvTasNetConfig(num_speakers=3).permutation_invariant is True
    assert ConvTasNetConfig(source_names=["drums", "bass"]).permutation_invariant is False
    # the field decides, not the names: speakers can be declared ordered, stems unordered
    assert not is_permutation_invariant(ConvTasNetConfig(permutation_invariant=False))
    assert is_permutation_invariant(ConvTasNetConfig(source_names=["a", "b"], permutation_invariant=True))
    declared = ConvTasNetConfig(source_names=["a", "b"], permutation_invariant=True)
    assert declared.to_dict()["permutation_invariant"] is True
    with pytest.raises(ValueError, match="permutation_invariant"):
        ConvTasNetConfig(permutation_invariant="yes")
    # a config.json saved before the field existed loads with the same decision as before
    music = music_config()
    music.save_pretrained(tmp_path)
    values = json.loads((tmp_path / "config.json").read_text())
    del values["permutation_invariant"]
    (tmp_path / "config.json").write_text(json.dumps(values))
    assert ConvTasNetConfig.from_pretrained(tmp_path).permutation_invariant is False


def test_is_permutation_invariant_reads_only_the_field() -> None:
    from types import SimpleNamespace

    from demixers.utils.model_contract import is_permutation_invariant

    with pytest.raises(TypeError, match="permutation_invariant"):
        is_permutation_invariant(SimpleNamespace(source_names=["speaker_1", "speaker_2"]))
    with pytest.raises(TypeError, match="permutation_invariant"):
        is_permutation_invariant(SimpleNamespace(source_names=["a", "b"], permutation_invariant="no"))
    assert is_permutation_invariant({"permutation_invariant": True}) is True


def test_model_card_domain_follows_the_config_not_the_family(tmp_path: Path) -> None:
    from demixers.model_cards.render import render_model_card

    music_config().save_pretrained(tmp_path / "music")
    card = render_model_card(tmp_path / "music")
    assert "music source separation" in card and "music-source-separation" in card
    assert "speech-separation" not in card
    tiny_config().save_pretrained(tmp_path / "speech")
    card = render_model_card(tmp_path / "speech")
    assert "speech separation" in card and "speech-separation" in card
