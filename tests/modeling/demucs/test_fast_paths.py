"""The inference-speed code paths of the Demucs family compute what the straightforward ones do.

* `DConv` runs its plain branches on channels-last views (2-D convolutions, LayerScale fused into
  the residual sum): compared with evaluating each ``nn.Sequential`` branch as it is.
* `multi_head_attention` projects and calls ``scaled_dot_product_attention`` itself: compared with
  ``nn.MultiheadAttention`` (self- and cross-attention).
* In inference (no gradients) every `DConv` branch whose tail is ``1x1 conv, one-group norm, GLU,
  LayerScale`` is fused: the norm statistics come from the narrow activations' Gram matrix and
  the norm folds into per-sample projections. Compared with the straightforward branches, with
  large offsets in the activations (a variance computed as ``E[h^2] - E[h]^2`` would lose it).
* The hybrid models write the de-normalised output spectrum straight into the padded buffer
  ``istft`` reads: compared with the gradient-enabled path.

(The chunk engine's own shortcuts are tested against ``apply_model`` in ``test_apply_demucs.py``.)
"""

from __future__ import annotations

import pytest
import torch

from demixers.modeling.demucs.layers_demucs import DConv, _apply_over_bins
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
