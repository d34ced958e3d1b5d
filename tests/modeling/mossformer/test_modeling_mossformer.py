"""MossFormer model tests: the common contract plus MossFormer-specific behaviour."""

from __future__ import annotations

import itertools
from typing import Any, ClassVar

import pytest
import torch

from demixers import MossFormerConfig, MossFormerForSourceSeparation
from demixers.modeling.mossformer.modeling_mossformer import (
    flat_pairwise_si_snr,
    flat_permutation_invariant_si_snr_loss,
)
from tests.modeling.common import SourceSeparationModelTesterMixin
from tests.modeling.mossformer.reference_modelscope import build_reference_model

RELEASED_PARAMETERS = 42_101_834  # trainable parameters of damo/speech_mossformer_separation_temporal_8k


def tiny_config(**overrides) -> MossFormerConfig:
    kwargs = dict(
        encoder_kernel_size=8,
        encoder_stride=4,
        encoder_channels=16,
        hidden_size=16,
        num_hidden_layers=2,
        group_size=32,
        query_key_dim=8,
        conv_kernel_size=5,
        attention_dropout=0.0,
    )
    kwargs.update(overrides)
    return MossFormerConfig(**kwargs)


class TestMossFormerModel(SourceSeparationModelTesterMixin):
    model_class = MossFormerForSourceSeparation
    input_lengths = (1001, 1600)
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"sampling_rate": 0}, "sampling_rate"),
        ({"audio_channels": 2}, "audio_channels"),
        ({"source_names": []}, "source_names"),
        ({"source_names": ["a", "a"]}, "source_names"),
        ({"source_names": ["a", "b"], "num_speakers": 3}, "num_speakers"),
        ({"num_speakers": 0}, "num_speakers"),
        ({"encoder_kernel_size": 0}, "encoder_kernel_size"),
        ({"encoder_stride": 32}, "encoder_stride"),
        ({"encoder_channels": -4}, "encoder_channels"),
        ({"hidden_size": 31}, "hidden_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"group_size": 0}, "group_size"),
        ({"query_key_dim": 1}, "query_key_dim"),
        ({"expansion_factor": 0.001}, "expansion_factor"),
        ({"expansion_factor": "4"}, "expansion_factor"),
        ({"conv_kernel_size": 4}, "conv_kernel_size"),
        ({"max_rotary_dim": 3, "query_key_dim": 8}, "max_rotary_dim"),
        ({"attention_dropout": 1.0}, "attention_dropout"),
        ({"causal": "yes"}, "causal"),
        ({"norm_type": "rms"}, "norm_type"),
        ({"decoder_bias": 1}, "decoder_bias"),
    ]

    def get_config(self) -> MossFormerConfig:
        return tiny_config()


# -- configuration --------------------------------------------------------------------------------


def test_default_config_is_the_release() -> None:
    config = MossFormerConfig()
    assert config.model_type == "mossformer"
    assert (config.sampling_rate, config.audio_channels) == (8000, 1)
    assert config.source_names == ["speaker_1", "speaker_2"] and config.num_speakers == 2
    assert (config.encoder_kernel_size, config.encoder_stride, config.encoder_channels) == (16, 8, 512)
    assert (config.num_hidden_layers, config.hidden_size) == (24, 512)
    assert (config.group_size, config.query_key_dim, config.expansion_factor) == (256, 128, 4.0)
    assert config.num_blocks == 24 and config.d_model == 512  # the paper's names


def test_num_speakers_names_the_sources() -> None:
    config = MossFormerConfig(num_speakers=3)
    assert config.source_names == ["speaker_1", "speaker_2", "speaker_3"]
    assert MossFormerConfig(source_names=["a", "b"], num_speakers=2).num_speakers == 2
    assert "num_speakers" not in config.to_dict()  # derived, never stored twice


def test_default_parameter_count_matches_the_release() -> None:
    with torch.device("meta"):
        ours = MossFormerForSourceSeparation(MossFormerConfig())
        reference = build_reference_model(randomize=False)
    ours_count = sum(p.numel() for p in ours.parameters())
    reference_trainable = sum(p.numel() for p in reference.parameters() if p.requires_grad)
    # the reference also registers the 16 fixed rotary frequencies as a (frozen) parameter
    reference_all = sum(p.numel() for p in reference.parameters())
    assert ours_count == reference_trainable == RELEASED_PARAMETERS
    assert abs(ours_count - reference_all) / reference_all < 0.005
    assert abs(ours_count - 42.1e6) / 42.1e6 < 0.005


# -- forward behaviour ----------------------------------------------------------------------------


def make_model(**overrides) -> MossFormerForSourceSeparation:
    torch.manual_seed(0)
    return MossFormerForSourceSeparation(tiny_config(**overrides)).eval()


def test_two_and_three_dimensional_inputs_agree() -> None:
    model = make_model()
    mixture = 0.1 * torch.randn(2, 777)
    with torch.no_grad():
        flat = model(input_values=mixture).audio_values
        channel = model(input_values=mixture[:, None]).audio_values
    assert flat.shape == (2, 2, 1, 777)
    assert torch.equal(flat, channel)


@pytest.mark.parametrize("length", [1, 5, 8, 9, 12, 131])
def test_any_length_gives_the_same_length(length: int) -> None:
    model = make_model()
    with torch.no_grad():
        output = model(input_values=0.1 * torch.randn(1, length)).audio_values
    assert output.shape == (1, 2, 1, length)
    assert torch.isfinite(output).all()


def test_padding_mask_separates_each_item_at_its_own_length() -> None:
    model = make_model()
    long, short = 0.1 * torch.randn(1, 900), 0.1 * torch.randn(1, 613)
    batch = torch.zeros(2, 900)
    batch[0], batch[1, :613] = long[0], short[0]
    mask = torch.zeros(2, 900, dtype=torch.long)
    mask[0], mask[1, :613] = 1, 1
    with torch.no_grad():
        padded = model(input_values=batch, padding_mask=mask).audio_values
        alone_long = model(input_values=long).audio_values
        alone_short = model(input_values=short).audio_values
    torch.testing.assert_close(padded[0:1], alone_long, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(padded[1:2, ..., :613], alone_short, atol=1e-6, rtol=1e-5)
    assert torch.equal(padded[1, ..., 613:], torch.zeros_like(padded[1, ..., 613:]))
    with pytest.raises(ValueError, match="padding_mask"):
        model(input_values=batch, padding_mask=mask[:, :10])


def test_causal_model_does_not_look_ahead_in_attention() -> None:
    """With causal attention, changing the future leaves the attention output of the past unchanged."""
    model = make_model(causal=True, group_size=8)
    block = model.mask_net.layers[0]
    hidden = torch.randn(1, 40, 16)
    cos, sin = model.mask_net.rotary_embedding(40, hidden.device)
    changed = hidden.clone()
    changed[:, 30:] = torch.randn(1, 10, 16)
    # the depthwise convolutions (kernel 5) and token shift reach 3 frames ahead; attention must not
    with torch.no_grad():
        first, second = block(hidden, cos, sin), block(changed, cos, sin)
    torch.testing.assert_close(first[:, :24], second[:, :24])


def test_labels_with_wrong_shape_raise() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="labels"):
        model(input_values=torch.randn(2, 400), labels=torch.randn(2, 2, 400))


def test_integer_input_raises_type_error() -> None:
    model = make_model()
    with pytest.raises(TypeError):
        model(input_values=torch.ones(1, 400, dtype=torch.long))


def test_return_dict_false_gives_a_tuple() -> None:
    model = make_model()
    mixture = 0.1 * torch.randn(1, 400)
    with torch.no_grad():
        (audio,) = model(input_values=mixture, return_dict=False)
        loss, audio_with_loss = model(
            input_values=mixture, labels=torch.randn(1, 2, 1, 400), return_dict=False
        )
    assert audio.shape == audio_with_loss.shape == (1, 2, 1, 400)
    assert loss.dim() == 0


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    mixture, labels = 0.1 * torch.randn(2, 600), 0.1 * torch.randn(2, 2, 1, 600)
    gradients = []
    for checkpointing in (False, True):
        model = make_model().train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model(input_values=mixture, labels=labels).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, msg=name)


# -- permutation-invariant SI-SNR ------------------------------------------------------------------


def naive_si_snr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    estimate = estimate - estimate.mean()
    reference = reference - reference.mean()
    target = (estimate @ reference) / (reference @ reference + eps) * reference
    noise = estimate - target
    return 10 * torch.log10((target @ target) / (noise @ noise + eps) + eps)


def naive_pit_loss(estimates: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    batch, sources = estimates.shape[:2]
    estimates, references = estimates.reshape(batch, sources, -1), references.reshape(batch, sources, -1)
    losses = []
    for b in range(batch):
        best = max(
            sum(naive_si_snr(estimates[b, i], references[b, p[i]]) for i in range(sources)) / sources
            for p in itertools.permutations(range(sources))
        )
        losses.append(-best)
    return torch.stack(losses).mean()


def test_pairwise_si_snr_matches_the_definition() -> None:
    estimates, references = torch.randn(2, 3, 500), torch.randn(2, 3, 500)
    matrix = flat_pairwise_si_snr(estimates, references)
    for b, i, j in itertools.product(range(2), range(3), range(3)):
        torch.testing.assert_close(matrix[b, i, j], naive_si_snr(estimates[b, i], references[b, j]))


@pytest.mark.parametrize("sources", [2, 3])
def test_pit_loss_matches_brute_force(sources: int) -> None:
    generator = torch.Generator().manual_seed(sources)
    references = torch.randn(4, sources, 1, 800, generator=generator)
    estimates = references + 0.5 * torch.randn(4, sources, 1, 800, generator=generator)
    torch.testing.assert_close(
        flat_permutation_invariant_si_snr_loss(estimates, references), naive_pit_loss(estimates, references)
    )


@pytest.mark.parametrize("sources", [2, 3])
def test_pit_loss_finds_the_right_permutation(sources: int) -> None:
    generator = torch.Generator().manual_seed(10 + sources)
    references = torch.randn(3, sources, 1, 800, generator=generator)
    estimates = references + 0.1 * torch.randn(3, sources, 1, 800, generator=generator)
    aligned = flat_permutation_invariant_si_snr_loss(estimates, references)
    for permutation in itertools.permutations(range(sources)):
        swapped = flat_permutation_invariant_si_snr_loss(estimates, references[:, list(permutation)])
        torch.testing.assert_close(swapped, aligned)
    # roughly 20 dB of SNR for 10 % noise, far better than any wrong assignment
    assert aligned < -15
    perfect = flat_permutation_invariant_si_snr_loss(references, references[:, list(range(sources))[::-1]])
    assert perfect < -60


def test_model_loss_is_permutation_invariant() -> None:
    model = make_model()
    mixture = 0.1 * torch.randn(2, 700)
    labels = 0.1 * torch.randn(2, 2, 1, 700)
    with torch.no_grad():
        loss = model(input_values=mixture, labels=labels).loss
        swapped = model(input_values=mixture, labels=labels.flip(1)).loss
        estimates = model(input_values=mixture).audio_values
        perfect = model(input_values=mixture, labels=estimates.flip(1)).loss
    torch.testing.assert_close(loss, swapped)
    assert perfect < -60
