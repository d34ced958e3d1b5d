"""The inference-speed code paths of the Demucs family compute what the straightforward ones do.

* `DConv` runs its plain branches on channels-last views (2-D convolutions, LayerScale fused into
  the residual sum): compared with evaluating each ``nn.Sequential`` branch as it is.
* `multi_head_attention` projects and calls ``scaled_dot_product_attention`` itself: compared with
  ``nn.MultiheadAttention`` (self- and cross-attention).
* In inference (no gradients) every `DConv` branch whose tail is ``1x1 conv, one-group norm, GLU,
  LayerScale`` is fused: the norm statistics come from the narrow activations' Gram matrix and
  the norm folds into per-sample projections. Compared with the straightforward branches, with
  large offsets in the activations (a variance computed as ``E[h^2] - E[h]^2`` would lose it).
* Accuracy against float64 (not only agreement with the float32 branches): channels-last group
  norms must not use PyTorch's one-pass channels-last kernel, and the fused branches centre their
  narrow activations, on inputs and activations with offsets as real music and trained weights give.
* The hybrid models write the de-normalised output spectrum straight into the padded buffer
  ``istft`` reads: compared with the gradient-enabled path.

(The chunk engine's own shortcuts are tested against ``apply_model`` in ``test_apply_demucs.py``.)
"""

from __future__ import annotations

import pytest
import torch

from demixers.modeling.demucs.layers_demucs import DConv, GroupNorm, HEncLayer, _apply_over_bins
from demixers.modeling.demucs.transformer_demucs import multi_head_attention

TOLERANCE = 1e-5


def relative(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).detach().abs().max() / expected.detach().abs().max())


def sequential_dconv(module: DConv, x: torch.Tensor) -> torch.Tensor:
    for layer in module.layers:
        x = x + layer(x)
    return x


@pytest.mark.parametrize("grad", [False, True])
def test_channels_last_dconv_matches_its_branches(grad: bool) -> None:
    torch.manual_seed(0)
    module = DConv(16, compress=4, depth=2, init=0.5).eval()
    with torch.no_grad():  # non-trivial norms
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    x = torch.randn(3, 16, 50)
    with torch.set_grad_enabled(grad):
        actual = module(x)
        expected = sequential_dconv(module, x)
    assert actual.shape == expected.shape == (3, 16, 50)
    assert relative(actual, expected) <= TOLERANCE


def test_dconv_over_bins_keeps_the_layout_and_the_values() -> None:
    torch.manual_seed(1)
    module = DConv(8, compress=2, depth=2, init=0.5).eval()
    y = torch.randn(2, 8, 5, 40)
    for layout in (torch.contiguous_format, torch.channels_last):
        with torch.no_grad():
            actual = _apply_over_bins(module, y.contiguous(memory_format=layout))
            flat = y.permute(0, 2, 1, 3).reshape(-1, 8, 40)
            expected = sequential_dconv(module, flat).view(2, 5, 8, 40).permute(0, 2, 1, 3)
        assert relative(actual, expected) <= TOLERANCE
        assert actual.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("norm", [True, False])
def test_fused_dconv_matches_its_branches(norm: bool) -> None:
    torch.manual_seed(4)
    module = DConv(24, compress=4, depth=3, init=0.3, norm=norm).eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
        for layer in module.layers:
            layer[3].bias.add_(5.0)  # projections far from zero mean
    x = 3.0 * torch.randn(4, 24, 70) + 2.0
    original = x.clone()
    with torch.no_grad():
        actual = module(x)
        expected = sequential_dconv(module, x)
    with torch.enable_grad():
        unfused = module(x)  # the channels-last path, not fused
    assert actual.shape == expected.shape == (4, 24, 70)
    assert relative(actual, expected) <= TOLERANCE
    assert relative(unfused.detach(), expected) <= TOLERANCE
    assert not torch.equal(actual, unfused.detach())  # both paths ran
    assert torch.equal(x, original)  # buffers are reused in place, never the caller's input


# Float32 against float64 of the same module: what the straightforward contiguous float32 path
# reaches on these inputs is 1e-7 to 5e-7 of the output scale; one-pass statistics give 1e-5 to 1e-4.
FLOAT64_TOLERANCE = 2e-6


def _offset_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """``0.5 + 0.01 N(0, 1)``: a large mean against a small spread, where one-pass variances fail."""
    return 0.5 + 0.01 * torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("channels", [1, 16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_group_norm_is_accurate_in_every_layout(channels: int, layout: torch.memory_format) -> None:
    torch.manual_seed(6)
    norm = GroupNorm(1, channels)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = _offset_input((3, channels, 7, 300), seed=6).contiguous(memory_format=layout)
    with torch.no_grad():
        actual = norm(x)
        expected = torch.nn.functional.group_norm(x.double(), 1, norm.weight.double(), norm.bias.double())
        # PyTorch's kernel for contiguous inputs (two-pass statistics): the accuracy to match
        native = torch.nn.functional.group_norm(x.contiguous(), 1, norm.weight, norm.bias)
    assert actual.is_contiguous(memory_format=layout)
    print(f"layout {layout}: ours {relative(actual, expected):.2e}, native {relative(native, expected):.2e}")
    assert relative(actual, expected) <= 1.5 * relative(native, expected) + 1e-7
    # gradients flow through the channels-last statistics like through the native kernel
    x64 = x.double().requires_grad_()
    x32 = x.clone().requires_grad_()
    norm(x32).square().sum().backward()
    torch.nn.functional.group_norm(x64, 1, norm.weight.double(), norm.bias.double()).square().sum().backward()
    assert relative(x32.grad, x64.grad) <= 1e-4


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("compress", [8, 2])  # one hidden channel (as released HTDemucs' small layers), four
def test_dconv_is_accurate_on_offset_input(grad: bool, compress: int) -> None:
    torch.manual_seed(7)
    module = DConv(8, compress=compress, depth=2, init=0.3).eval()
    with torch.no_grad():  # trained-like weights: norms and projections away from their init
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    module64 = DConv(8, compress=compress, depth=2, init=0.3).eval().double()
    module64.load_state_dict(module.state_dict())
    x = _offset_input((4, 8, 400), seed=7)
    with torch.set_grad_enabled(grad):
        actual = module(x).detach()
    with torch.no_grad():
        expected = sequential_dconv(module64, x.double())
    assert relative(actual, expected) <= FLOAT64_TOLERANCE


def test_fused_dconv_is_accurate_with_offset_activations() -> None:
    """Activations far from zero mean before the fused projection (norm bias 4, gain 0.05) and a
    projection that sums them in every channel (weights 1 + 0.01 N(0, 1)): the branch is a small
    difference of large numbers. The fused branch centres its narrow rows, so its folded shift
    cancels nothing large; it must be clearly more accurate than the straightforward float32
    branch (uncentred folding measured 0.80x of it, centred 0.50x)."""
    torch.manual_seed(8)
    module = DConv(16, compress=4, depth=1, init=0.3).eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        branch = module.layers[0]
        branch[1].weight.fill_(0.05)
        branch[1].bias.fill_(4.0)
        branch[3].weight.copy_(1.0 + 0.01 * torch.randn_like(branch[3].weight))
        branch[3].bias.zero_()
    module64 = DConv(16, compress=4, depth=1, init=0.3).eval().double()
    module64.load_state_dict(module.state_dict())
    x = torch.randn(3, 16, 500, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        fused = module(x) - x  # the one branch, through the fused path
        expected = module64.layers[0](x.double())
        plain = branch(x)  # the straightforward float32 branch
    print(f"fused {relative(fused, expected):.2e}, straightforward float32 {relative(plain, expected):.2e}")
    assert relative(fused, expected) <= 0.65 * relative(plain, expected)


def test_spectral_layer_norms_are_accurate_channels_last() -> None:
    torch.manual_seed(9)
    layer = HEncLayer(4, 8, dconv_kw={"compress": 2, "depth": 2, "init": 0.3}).eval()
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
        layer.conv.bias.add_(1.0)  # an offset before the first norm
    layer64 = HEncLayer(4, 8, dconv_kw={"compress": 2, "depth": 2, "init": 0.3}).eval().double()
    layer64.load_state_dict(layer.state_dict())
    x = _offset_input((2, 4, 64, 50), seed=9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        actual = layer(x)
        expected = layer64(x.double().contiguous())
    assert relative(actual, expected) <= FLOAT64_TOLERANCE


@pytest.mark.parametrize("model_name", ["hdemucs", "htdemucs"])
def test_output_spectrum_buffer_matches_the_gradient_path(model_name: str, monkeypatch) -> None:
    from demixers.modeling.demucs import HDemucsForSourceSeparation, HTDemucsForSourceSeparation
    from tests.modeling.demucs.tiny_configs import tiny_hdemucs_config, tiny_htdemucs_config

    torch.manual_seed(5)
    if model_name == "hdemucs":
        model = HDemucsForSourceSeparation(tiny_hdemucs_config()).eval()
    else:
        model = HTDemucsForSourceSeparation(tiny_htdemucs_config()).eval()
    mix = torch.randn(2, 2, 1500)
    calls = []
    original = model._output_spectrum

    def spy(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "_output_spectrum", spy)
    with torch.no_grad():
        fast = model(input_values=mix).audio_values
    with torch.enable_grad():
        slow = model(input_values=mix).audio_values.detach()
    assert calls == [False]  # the buffer path ran once, without gradients
    assert fast.shape == slow.shape == (2, len(model.config.source_names), 2, 1500)
    assert relative(fast, slow) <= TOLERANCE


def test_dconv_with_lstm_and_attention_keeps_the_plain_path() -> None:
    torch.manual_seed(2)
    module = DConv(8, compress=2, depth=2, lstm=True, attn=True).eval()
    x = torch.randn(2, 8, 24)
    with torch.no_grad():
        assert torch.equal(module(x), sequential_dconv(module, x))


@pytest.mark.parametrize("cross", [False, True])
def test_attention_matches_multihead_attention(cross: bool) -> None:
    torch.manual_seed(3)
    attention = torch.nn.MultiheadAttention(32, 4, dropout=0.1, batch_first=True).eval()
    with torch.no_grad():
        attention.in_proj_bias.normal_()
        attention.out_proj.bias.normal_()
    query = torch.randn(2, 30, 32)
    key_value = torch.randn(2, 17, 32) if cross else query
    with torch.no_grad():
        expected = attention(query, key_value, key_value, need_weights=False)[0]
        actual = multi_head_attention(attention, query, key_value)
    assert relative(actual, expected) <= TOLERANCE
