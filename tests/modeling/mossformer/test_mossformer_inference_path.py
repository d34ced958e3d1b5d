"""Without autograd, MossFormer computes in place and skips the padded last group: same numbers.

`MossFormerBlock` has one arithmetic and two ways to run it: with autograd enabled it only uses
out-of-place operations; under ``torch.no_grad``/``torch.inference_mode`` it overwrites its own
intermediate tensors and adds the local attention into the global one group by group. Both must
give the same output, for every way a length can fall on the attention groups.
"""

from __future__ import annotations

import pytest
import torch

from demixers import MossFormerConfig, MossFormerForSourceSeparation
from demixers.modeling.mossformer.modeling_mossformer import MossFormerBlock, depthwise_conv_over_time

TOLERANCE = 1e-5


def tiny_model(**overrides) -> MossFormerForSourceSeparation:
    kwargs = dict(
        encoder_kernel_size=8, encoder_stride=4, encoder_channels=16, hidden_size=16, num_hidden_layers=2,
        group_size=8, query_key_dim=8, conv_kernel_size=5, attention_dropout=0.1, max_rotary_dim=4,
    )  # fmt: skip
    kwargs.update(overrides)
    torch.manual_seed(0)
    model = MossFormerForSourceSeparation(MossFormerConfig(**kwargs)).eval()
    with torch.no_grad():  # non-trivial gains, scales and offsets
        for parameter in model.parameters():
            if parameter.numel() <= 8 or float(parameter.std()) == 0.0:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).detach().abs().max() / expected.detach().abs().max())


# frames = (samples - 8) // 4 + 1: 3 frames (less than a group), 16 (two full groups), 21 (a partial group)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("samples", [16, 68, 88])
def test_inference_path_equals_autograd_path(samples: int, causal: bool) -> None:
    model = tiny_model(causal=causal)
    mixture = torch.randn(2, samples, generator=torch.Generator().manual_seed(samples))
    expected = model(input_values=mixture).audio_values  # autograd enabled: out-of-place path
    assert expected.requires_grad
    with torch.inference_mode():
        fast = model(input_values=mixture).audio_values
    with torch.no_grad():
        no_grad = model(input_values=mixture).audio_values
    assert relative(fast, expected) <= TOLERANCE
    assert relative(no_grad, expected) <= TOLERANCE


def test_block_does_not_modify_its_input() -> None:
    block = tiny_model().mask_net.layers[0]
    assert isinstance(block, MossFormerBlock)
    hidden = torch.randn(1, 21, 16)
    original = hidden.clone()
    cos, sin = torch.ones(21, 4), torch.zeros(21, 4)
    with torch.inference_mode():
        block(hidden, cos, sin)
    assert torch.equal(hidden, original)


def test_depthwise_conv_over_time_matches_conv1d() -> None:
    hidden = torch.randn(2, 30, 6)
    weight = torch.randn(6, 1, 5)
    expected = torch.nn.functional.conv1d(hidden.transpose(1, 2), weight, padding=2, groups=6).transpose(1, 2)
    assert relative(depthwise_conv_over_time(hidden, weight), expected) <= TOLERANCE


# frames = (samples - 8) // 4 + 1 = 21 and 37: several convolution chunks of 4 frames, a partial last one
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("samples", [88, 152])
def test_chunked_inference_convolutions_equal_autograd_path(
    samples: int, threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the inference path convolves time chunks read from a zero-bordered buffer (one thread) or the
    # whole buffer at once (several threads): chunk borders, the sequence's edges and every batch
    # item must see exactly the 'same'-padded convolution
    monkeypatch.setattr(MossFormerBlock, "inference_chunk_frames", 4)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    model = tiny_model(num_hidden_layers=3)
    mixture = torch.randn(3, samples, generator=torch.Generator().manual_seed(samples))
    expected = model(input_values=mixture).audio_values
    with torch.inference_mode():
        fast = model(input_values=mixture).audio_values
    assert relative(fast, expected) <= TOLERANCE


def test_block_workspace_is_reused_and_follows_the_length() -> None:
    block = tiny_model().mask_net.layers[0]
    workspace: dict[str, torch.Tensor] = {}
    results = {}
    for frames in (21, 21, 13):
        hidden = torch.randn(2, frames, 16, generator=torch.Generator().manual_seed(frames))
        cos, sin = torch.ones(frames, 4), torch.zeros(frames, 4)
        reference = block(hidden, cos, sin)  # autograd path
        before = {name: buffer.data_ptr() for name, buffer in workspace.items()}
        with torch.no_grad():
            output = block(hidden, cos, sin, workspace)
        after = {name: buffer.data_ptr() for name, buffer in workspace.items()}
        if frames in results:  # same length again: the same buffers, the same result
            assert after == before
            assert torch.equal(output, results[frames])
        results[frames] = output
        # the output is never one of the shared buffers (the next block overwrites them)
        assert all(output.data_ptr() != pointer for pointer in after.values())
        assert relative(output, reference) <= TOLERANCE
    names = {"block_input", "projection_padded", "projection", "query_key", "attended", "output_padded"}
    assert names <= set(workspace)
    assert workspace["projection"].shape[1] == 13  # reallocated for the new length
