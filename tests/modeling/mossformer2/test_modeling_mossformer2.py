"""MossFormer2 model tests: the common contract plus MossFormer2-specific behaviour."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F

from demixers import MossFormer2Config, MossFormer2ForSourceSeparation
from demixers.modeling.mossformer2 import MOSSFORMER2_PRESETS
from demixers.modeling.mossformer2.modeling_mossformer2 import (
    MossFormer2DilatedMemory,
    MossFormer2GatedFSMN,
)
from tests.modeling.common import SourceSeparationModelTesterMixin
from tests.modeling.mossformer2.references import build_clearvoice_reference, build_modelscope_reference

# trainable parameters of damo/speech_mossformer2_separation_temporal_8k and MossFormer2_SS_16K
RELEASED_PARAMETERS = 55_735_394


def tiny_config(**overrides: Any) -> MossFormer2Config:
    kwargs: dict[str, Any] = dict(
        encoder_kernel_size=8, encoder_stride=4, encoder_channels=16, hidden_size=16, num_hidden_layers=2,
        group_size=32, query_key_dim=8, conv_kernel_size=5, attention_dropout=0.0, fsmn_inner_channels=8,
        fsmn_memory_order=3, fsmn_dilation_depth=2, fsmn_dropout=0.0,
    )  # fmt: skip
    kwargs.update(overrides)
    return MossFormer2Config(**kwargs)


class TestMossFormer2Model(SourceSeparationModelTesterMixin):
    model_class = MossFormer2ForSourceSeparation
    input_lengths = (1001, 1600)
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"sampling_rate": 0}, "sampling_rate"),
        ({"audio_channels": 2}, "audio_channels"),
        ({"source_names": ["a", "a"]}, "source_names"),
        ({"num_speakers": 0}, "num_speakers"),
        ({"encoder_stride": 32}, "encoder_stride"),
        ({"hidden_size": 31}, "hidden_size"),
        ({"num_hidden_layers": 0}, "num_hidden_layers"),
        ({"conv_kernel_size": 4}, "conv_kernel_size"),
        ({"attention_dropout": 1.0}, "attention_dropout"),
        ({"fsmn_inner_channels": 0}, "fsmn_inner_channels"),
        ({"fsmn_inner_channels": True}, "fsmn_inner_channels"),
        ({"fsmn_memory_order": 0}, "fsmn_memory_order"),
        ({"fsmn_memory_order": 10**9}, "fsmn_memory_order"),
        ({"fsmn_dilation_depth": 0}, "fsmn_dilation_depth"),
        ({"fsmn_dilation_depth": 17}, "fsmn_dilation_depth"),
        ({"fsmn_dropout": 1.0}, "fsmn_dropout"),
        ({"fsmn_dropout": "0.1"}, "fsmn_dropout"),
        ({"norm_type": "rms"}, "norm_type"),
    ]

    def get_config(self) -> MossFormer2Config:
        return tiny_config()


# -- configuration --------------------------------------------------------------------------------


def test_default_config_is_the_release() -> None:
    config = MossFormer2Config()
    assert config.model_type == "mossformer2"
    assert (config.sampling_rate, config.audio_channels, config.num_speakers) == (8000, 1, 2)
    assert (config.encoder_kernel_size, config.encoder_stride, config.encoder_channels) == (16, 8, 512)
    assert (config.num_hidden_layers, config.hidden_size, config.group_size, config.query_key_dim) == (
        24,
        512,
        256,
        128,
    )
    assert (config.fsmn_inner_channels, config.fsmn_memory_order, config.fsmn_dilation_depth) == (256, 20, 2)
    assert MossFormer2Config(**MOSSFORMER2_PRESETS["clearvoice-16k"]).sampling_rate == 16000
    assert MossFormer2Config(**MOSSFORMER2_PRESETS["modelscope-8k"]).to_diff_dict() == config.to_diff_dict()


def test_default_parameter_count_matches_both_releases() -> None:
    with torch.device("meta"):
        ours = MossFormer2ForSourceSeparation(MossFormer2Config())
        references = [build_modelscope_reference(), build_clearvoice_reference()]
    ours_count = sum(p.numel() for p in ours.parameters())
    for reference in references:
        # the references also register the 16 fixed rotary frequencies as a frozen parameter
        assert sum(p.numel() for p in reference.parameters() if p.requires_grad) == ours_count
    assert ours_count == RELEASED_PARAMETERS
    assert round(ours_count / 1e6, 1) == 55.7  # the paper's 55.7M


# -- forward behaviour ----------------------------------------------------------------------------


def make_model(**overrides: Any) -> MossFormer2ForSourceSeparation:
    torch.manual_seed(0)
    model = MossFormer2ForSourceSeparation(tiny_config(**overrides)).eval()
    with torch.no_grad():  # non-trivial gains, scales, norm affines and slopes
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).detach().abs().max() / expected.detach().abs().max())


@pytest.mark.parametrize("samples", [16, 68, 300])
def test_inference_path_equals_autograd_path(samples: int) -> None:
    """The in-place inference path (fused FSMN projections, in-place attention) equals autograd's."""
    model = make_model(group_size=8)
    mixture = torch.randn(2, samples, generator=torch.Generator().manual_seed(samples))
    expected = model(input_values=mixture).audio_values
    assert expected.requires_grad
    with torch.inference_mode():
        fast = model(input_values=mixture).audio_values
    assert relative(fast, expected) <= 1e-5


def naive_dilated_memory(memory: MossFormer2DilatedMemory, hidden: torch.Tensor, order: int) -> torch.Tensor:
    """The references' definition: 2-D grouped convolutions over ``[out_{i-1}, ..., input]``."""
    dense, output = hidden, hidden
    for index, (conv, norm, activation) in enumerate(
        zip(memory.convs, memory.norms, memory.activations, strict=True)
    ):
        dilation = 2**index
        padded = F.pad(dense[..., None], (0, 0, dilation * (order - 1), dilation * (order - 1)))
        output = F.conv2d(padded, conv.weight[..., None], dilation=(dilation, 1), groups=hidden.shape[1])[
            ..., 0
        ]
        output = F.instance_norm(output, weight=norm.weight, bias=norm.bias, eps=1e-5)
        output = F.prelu(output, activation.weight)
        dense = torch.cat((output, dense), dim=1)
    return output


def test_dilated_memory_matches_the_reference_definition() -> None:
    torch.manual_seed(3)
    memory = MossFormer2DilatedMemory(channels=6, memory_order=4, depth=3)
    with torch.no_grad():
        for parameter in memory.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        for length in (50, 51, 1):  # odd lengths: the phases of the dilated layers differ in length
            hidden = torch.randn(2, 6, length)
            ours = memory(hidden.transpose(1, 2)).transpose(1, 2)  # ours runs on (batch, time, channels)
            expected = naive_dilated_memory(memory, hidden, order=4) if length > 1 else None
            if expected is not None:
                assert relative(ours, expected) <= 1e-6, length


def test_gated_fsmn_fused_projections_equal_the_separate_ones() -> None:
    config = tiny_config()
    torch.manual_seed(1)
    gated = MossFormer2GatedFSMN(config).eval()
    with torch.no_grad():
        for parameter in gated.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        hidden = torch.randn(2, 40, config.fsmn_inner_channels)
        u, v = gated._input_projections(hidden)
        assert relative(u, gated.u_proj(hidden)) <= 1e-6
        assert relative(v, gated.v_proj(hidden)) <= 1e-6
        expected = gated.v_proj(hidden) * gated.fsmn(gated.u_proj(hidden)) + hidden
        assert relative(gated(hidden), expected) <= 1e-6


@pytest.mark.parametrize("length", [1, 5, 9, 131])
def test_any_length_gives_the_same_length(length: int) -> None:
    model = make_model()
    with torch.no_grad():
        output = model(input_values=0.1 * torch.randn(1, length)).audio_values
    assert output.shape == (1, 2, 1, length)
    assert torch.isfinite(output).all()


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


def test_model_loss_is_permutation_invariant() -> None:
    model = make_model()
    mixture, labels = 0.1 * torch.randn(2, 700), 0.1 * torch.randn(2, 2, 1, 700)
    with torch.no_grad():
        loss = model(input_values=mixture, labels=labels).loss
        swapped = model(input_values=mixture, labels=labels.flip(1)).loss
        estimates = model(input_values=mixture).audio_values
        perfect = model(input_values=mixture, labels=estimates.flip(1)).loss
    torch.testing.assert_close(loss, swapped)
    assert perfect < -60


def test_single_frame_instance_norm_gives_its_bias() -> None:
    """PyTorch refuses instance norm over one frame; its limit (normalised value 0) is the bias."""
    memory = MossFormer2DilatedMemory(channels=4, memory_order=3, depth=2)
    with torch.no_grad():
        for norm in memory.norms:
            norm.bias.copy_(torch.tensor([0.5, -1.0, 2.0, 0.0]))
        output = memory(torch.randn(3, 1, 4)).transpose(1, 2)
        two_frames = memory(torch.randn(3, 2, 4))
        with pytest.raises(ValueError, match="spatial element"):  # what PyTorch's instance norm does
            F.instance_norm(torch.randn(3, 4, 1))
    expected = F.prelu(torch.tensor([[0.5, -1.0, 2.0, 0.0]]), memory.activations[-1].weight)[0]
    torch.testing.assert_close(output, expected[None, :, None].expand(3, 4, 1))
    assert torch.isfinite(two_frames).all()


def test_model_card_names_the_paper_and_the_16k_release() -> None:
    from demixers.model_cards.architectures import architecture_for

    architecture = architecture_for(MossFormer2Config.model_type)
    assert architecture is not None and architecture.domain == "speech"
    assert "2312.11825" in architecture.paper_url and "zhao2024mossformer2" in architecture.bibtex
    assert "demixers convert clearvoice-mossformer2" in architecture.description
