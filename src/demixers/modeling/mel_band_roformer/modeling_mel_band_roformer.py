"""PyTorch Mel-Band RoFormer: mel-band rotary transformers for music source separation.

Mel-Band RoFormer (Wang et al., 2023, arXiv:2310.01809) is BS-RoFormer (see `modeling_bs_roformer`
of the `bs_roformer` family) with overlapping bands taken from a mel filterbank:

* band `k` gathers the STFT bins of `config.band_frequency_indices[k]` (all channels, real and
  imaginary parts, ordered bin, channel, real/imag) and embeds them with its own RMSNorm + Linear;
* `depth` layers of (optional linear transformer, time transformer, band transformer); unlike
  BS-RoFormer every transformer ends with an RMSNorm and there is no final norm;
* per stem and band an MLP with `mask_estimator_depth` hidden Tanh layers and a GLU gives the band's
  complex mask; a bin covered by several bands gets the mean of their masks;
* masks times the mixture's spectrogram, optional zeroing of the DC bin, inverse STFT.

When `config.source_names` has one more name than `num_stems`, that source is the residual
`mixture - sum(stems)`.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_mel_band_roformer import MelBandRoformerConfig

ROTARY_THETA = 10000.0
# MSST's linear attention (El-Nouby et al., XCiT) uses a fixed softmax scale of 8 on l2-normalised q, k
LINEAR_ATTENTION_SCALE = 8.0


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerSourceSeparationOutput with BSRoformer->MelBandRoformer  # noqa: E501
@dataclass
class MelBandRoformerSourceSeparationOutput(ModelOutput):
    """Output of [`MelBandRoformerForSourceSeparation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): the training loss of the original
            code, returned when `labels` are given: the mean absolute error of the predicted stems'
            waveforms plus `multi_stft_resolution_loss_weight` times the sum, over
            `multi_stft_resolutions_window_sizes`, of the mean absolute error of their complex STFTs.
        audio_values (`torch.FloatTensor` of shape `(batch, num_sources, audio_channels, time)`): the
            stems in the order of `config.source_names` (then the residual, when configured), as
            long as the input.
    """

    loss: torch.FloatTensor | None = None
    audio_values: torch.FloatTensor | None = None


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerRMSNorm with BSRoformer->MelBandRoformer  # noqa: E501
class MelBandRoformerRMSNorm(nn.Module):
    """RMSNorm as the originals write it: `normalize(x) * sqrt(dim) * weight` (L2 norm, eps 1e-12)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.normalize(hidden_states, dim=-1) * self.scale * self.weight


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerRotaryEmbedding with BSRoformer->MelBandRoformer  # noqa: E501
class MelBandRoformerRotaryEmbedding(nn.Module):
    """Rotary position embedding on interleaved pairs of the head features (rotary-embedding-torch's
    layout). `inverse_frequencies` is a buffer: a converted checkpoint's values are kept as stored."""

    def __init__(self, dim_head: int) -> None:
        super().__init__()
        self.dim_head = dim_head
        self.register_buffer(
            "inverse_frequencies", self.default_inverse_frequencies(dim_head), persistent=True
        )

    @staticmethod
    def default_inverse_frequencies(dim_head: int) -> torch.Tensor:
        exponents = torch.arange(0, dim_head, 2)[: dim_head // 2].float() / dim_head
        return 1.0 / (ROTARY_THETA**exponents)

    def rotation(self, length: int, device: torch.device) -> torch.Tensor:
        """`(length, dim_head // 2)` unit complex numbers `exp(i * position * frequency)` (complex64)."""
        positions = torch.arange(length, device=device, dtype=torch.float32)
        angles = positions[:, None] * self.inverse_frequencies.to(device=device, dtype=torch.float32)[None]
        return torch.complex(angles.cos(), angles.sin())


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.apply_rotary with BSRoformer->MelBandRoformer
def apply_rotary(states: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate `(..., length, dim_head)` by `rotation` (`(length, dim_head // 2)` complex): pair
    `(2i, 2i + 1)`, read as the complex number `x_2i + i x_2i+1`, is multiplied by `rotation[:, i]`
    (one complex product per pair in float32, returned in the input's dtype)."""
    pairs = torch.view_as_complex(states.float().unflatten(-1, (-1, 2)))
    return torch.view_as_real(pairs * rotation).flatten(-2).to(states.dtype)


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerAttention with BSRoformer->MelBandRoformer  # noqa: E501
class MelBandRoformerAttention(nn.Module):
    """Pre-norm multi-head attention with rotary positions and a sigmoid gate per head.

    With `value_residual`, the values are mixed with those of the first model layer's attention
    (`v + sigmoid(gate(x)) * (v_first - v)`, lucidrains' value residual learning).
    """

    def __init__(self, config: PretrainedConfig, value_residual: bool = False) -> None:
        super().__init__()
        self.heads, self.dim_head = config.heads, config.dim_head
        inner = config.heads * config.dim_head
        self.dropout = config.attn_dropout
        self.norm = MelBandRoformerRMSNorm(config.dim)
        self.qkv = nn.Linear(config.dim, 3 * inner, bias=False)
        self.value_residual_gate = nn.Linear(config.dim, config.heads) if value_residual else None
        self.gate = nn.Linear(config.dim, config.heads)
        self.out_proj = nn.Linear(inner, config.dim, bias=False)
        # the originals drop out both the attention weights and the projected output
        self.out_dropout = nn.Dropout(config.attn_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: torch.Tensor,
        value_residual: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`(batch, length, dim)` -> (output, this layer's values `(batch, heads, length, dim_head)`)."""
        batch, length, _ = hidden_states.shape
        hidden_states = self.norm(hidden_states)
        qkv = self.qkv(hidden_states).view(batch, length, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
        query, key, value = qkv.unbind(0)
        values = value
        if self.value_residual_gate is not None:
            if value_residual is None:
                raise ValueError("this attention layer mixes in the first layer's values, none were given")
            mix = self.value_residual_gate(hidden_states).sigmoid().transpose(1, 2).unsqueeze(-1)
            value = value.lerp(value_residual, mix)
        query, key = apply_rotary(query, rotary), apply_rotary(key, rotary)
        attended = F.scaled_dot_product_attention(
            query, key, value, dropout_p=self.dropout if self.training else 0.0
        )
        gates = self.gate(hidden_states).sigmoid().unsqueeze(-1)  # b n h 1
        attended = attended.transpose(1, 2) * gates  # b n h d
        projected = self.out_proj(attended.reshape(batch, length, self.heads * self.dim_head))
        return self.out_dropout(projected), values


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerLinearAttention with BSRoformer->MelBandRoformer  # noqa: E501
class MelBandRoformerLinearAttention(nn.Module):
    """MSST's linear (cross-covariance) attention: softmax over the `dim_head x dim_head` similarities
    of the l2-normalised queries and keys (normalised along the positions), scale 8, per-head
    learnt temperature."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.heads, self.dim_head = config.heads, config.dim_head
        inner = config.heads * config.dim_head
        self.dropout = config.attn_dropout
        self.norm = MelBandRoformerRMSNorm(config.dim)
        self.qkv = nn.Linear(config.dim, 3 * inner, bias=False)
        self.temperature = nn.Parameter(torch.ones(config.heads, 1, 1))
        self.out_proj = nn.Linear(inner, config.dim, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: torch.Tensor | None = None,
        value_residual: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, _ = hidden_states.shape
        hidden_states = self.norm(hidden_states)
        qkv = self.qkv(hidden_states).view(batch, length, 3, self.heads, self.dim_head).permute(2, 0, 3, 4, 1)
        query, key, value = qkv.unbind(0)  # b h d n
        query = F.normalize(query, dim=-1) * self.temperature.exp()
        key = F.normalize(key, dim=-1)
        attended = F.scaled_dot_product_attention(
            query, key, value, dropout_p=self.dropout if self.training else 0.0, scale=LINEAR_ATTENTION_SCALE
        )
        attended = attended.permute(0, 3, 1, 2).reshape(batch, length, self.heads * self.dim_head)
        return self.out_proj(attended), value


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerFeedForward with BSRoformer->MelBandRoformer  # noqa: E501
class MelBandRoformerFeedForward(nn.Module):
    """Pre-norm `Linear -> GELU -> Linear` with 4x expansion."""

    def __init__(self, config: PretrainedConfig) -> None:
        super().__init__()
        self.norm = MelBandRoformerRMSNorm(config.dim)
        self.fc1 = nn.Linear(config.dim, 4 * config.dim)
        self.fc2 = nn.Linear(4 * config.dim, config.dim)
        self.dropout = nn.Dropout(config.ff_dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(F.gelu(self.fc1(self.norm(hidden_states))))
        return self.dropout(self.fc2(hidden_states))


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerTransformerBlock with BSRoformer->MelBandRoformer  # noqa: E501
class MelBandRoformerTransformerBlock(nn.Module):
    def __init__(self, config: PretrainedConfig, linear: bool, value_residual: bool) -> None:
        super().__init__()
        if linear:
            self.attention: nn.Module = MelBandRoformerLinearAttention(config)
        else:
            self.attention = MelBandRoformerAttention(config, value_residual)
        self.feed_forward = MelBandRoformerFeedForward(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: torch.Tensor | None,
        value_residual: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        attended, values = self.attention(hidden_states, rotary, value_residual)
        hidden_states = attended + hidden_states
        return self.feed_forward(hidden_states) + hidden_states, values


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerTransformer with BSRoformer->MelBandRoformer  # noqa: E501
class MelBandRoformerTransformer(nn.Module):
    """`depth` residual blocks over `(batch, length, dim)` sequences, then an optional RMSNorm."""

    def __init__(
        self, config: PretrainedConfig, depth: int, linear: bool, value_residual: bool, output_norm: bool
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            MelBandRoformerTransformerBlock(config, linear, value_residual) for _ in range(depth)
        )
        self.norm = MelBandRoformerRMSNorm(config.dim) if output_norm else None

    def forward(
        self,
        hidden_states: torch.Tensor,
        rotary: torch.Tensor | None = None,
        value_residual: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns the output and the values of the first block (the value residual of later layers)."""
        first_values = None
        for layer in self.layers:
            hidden_states, values = layer(hidden_states, rotary, value_residual)
            if first_values is None:
                first_values = values
        if self.norm is not None:
            hidden_states = self.norm(hidden_states)
        return hidden_states, first_values


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerLayer with BSRoformer->MelBandRoformer  # noqa: E501
class MelBandRoformerLayer(nn.Module):
    """One axial layer: optional linear transformer over all positions, then time, then bands."""

    def __init__(self, config: PretrainedConfig, value_residual: bool, output_norm: bool) -> None:
        super().__init__()
        self.linear_transformer = (
            MelBandRoformerTransformer(config, config.linear_transformer_depth, True, False, output_norm)
            if config.linear_transformer_depth > 0
            else None
        )
        self.time_transformer = MelBandRoformerTransformer(
            config, config.time_transformer_depth, False, value_residual, output_norm
        )
        self.freq_transformer = MelBandRoformerTransformer(
            config, config.freq_transformer_depth, False, value_residual, output_norm
        )


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerBandEmbedding with BSRoformer->MelBandRoformer  # noqa: E501
class MelBandRoformerBandEmbedding(nn.Module):
    def __init__(self, input_size: int, dim: int) -> None:
        super().__init__()
        self.norm = MelBandRoformerRMSNorm(input_size)
        self.proj = nn.Linear(input_size, dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(features))


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerBandSplit with BSRoformer->MelBandRoformer  # noqa: E501
class MelBandRoformerBandSplit(nn.Module):
    """`(batch, frames, sum(input_sizes))` -> `(batch, frames, bands, dim)`: RMSNorm + Linear per band."""

    def __init__(self, input_sizes: Sequence[int], dim: int) -> None:
        super().__init__()
        self.input_sizes = list(input_sizes)
        self.bands = nn.ModuleList(MelBandRoformerBandEmbedding(size, dim) for size in self.input_sizes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pieces = features.split(self.input_sizes, dim=-1)
        return torch.stack([band(piece) for band, piece in zip(self.bands, pieces, strict=True)], dim=-2)


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerBandMaskMLP with BSRoformer->MelBandRoformer  # noqa: E501
class MelBandRoformerBandMaskMLP(nn.Module):
    """`dim -> hidden (Tanh) x hidden_layers -> 2 * output_size -> GLU`: one band's mask features."""

    def __init__(self, dim: int, hidden: int, output_size: int, hidden_layers: int) -> None:
        super().__init__()
        sizes = [dim, *([hidden] * hidden_layers), 2 * output_size]
        self.layers = nn.ModuleList(
            nn.Linear(size_in, size_out) for size_in, size_out in itertools.pairwise(sizes)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            hidden_states = torch.tanh(layer(hidden_states))
        return F.glu(self.layers[-1](hidden_states), dim=-1)


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerMaskEstimator with BSRoformer->MelBandRoformer  # noqa: E501
class MelBandRoformerMaskEstimator(nn.Module):
    """`(batch, frames, bands, dim)` -> `(batch, frames, sum(output_sizes))`: one MLP per band."""

    def __init__(self, config: PretrainedConfig, output_sizes: Sequence[int], hidden_layers: int) -> None:
        super().__init__()
        hidden = config.dim * config.mlp_expansion_factor
        self.bands = nn.ModuleList(
            MelBandRoformerBandMaskMLP(config.dim, hidden, size, hidden_layers) for size in output_sizes
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not self.training and not torch.is_grad_enabled():
            return self.inference_forward(hidden_states)
        bands = hidden_states.unbind(dim=-2)
        return torch.cat([mlp(band) for mlp, band in zip(self.bands, bands, strict=True)], dim=-1)

    def inference_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`forward` without autograd: each band's MLP reads its band through a strided view, runs
        in two reused buffers (Tanh in place) and writes its GLU straight into the output."""
        batch, frames, _, dim = hidden_states.shape
        rows = batch * frames
        sizes = [mlp.layers[-1].out_features // 2 for mlp in self.bands]
        output = hidden_states.new_empty(batch, frames, sum(sizes))
        flat_output = output.view(rows, -1)
        hidden_widths = [layer.out_features for mlp in self.bands for layer in mlp.layers[:-1]]
        widest = max(hidden_widths, default=0)
        hidden_buffers = [hidden_states.new_empty(rows * widest) for _ in range(min(2, len(hidden_widths)))]
        glu_buffer = hidden_states.new_empty(rows * 2 * max(sizes))
        offset = 0
        for band, (mlp, size) in enumerate(zip(self.bands, sizes, strict=True)):
            states = hidden_states[:, :, band].reshape(rows, dim)  # a strided view when batch == 1
            for index, layer in enumerate(mlp.layers[:-1]):
                buffer = hidden_buffers[index % 2][: rows * layer.out_features].view(rows, -1)
                states = torch.addmm(layer.bias, states, layer.weight.t(), out=buffer).tanh_()
            last = mlp.layers[-1]
            gated = torch.addmm(
                last.bias, states, last.weight.t(), out=glu_buffer[: rows * 2 * size].view(rows, -1)
            )
            torch.mul(gated[:, :size], gated[:, size:].sigmoid_(), out=flat_output[:, offset : offset + size])
            offset += size
        return output


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.roformer_stft with BSRoformer->MelBandRoformer  # noqa: E501
def roformer_stft(
    waveform: torch.Tensor, n_fft: int, hop_length: int, win_length: int, normalized: bool
) -> torch.Tensor:
    """Complex spectrogram `(batch, channels, bins, frames)` of `(batch, channels, time)` (float32)."""
    batch, channels, length = waveform.shape
    window = torch.hann_window(win_length, device=waveform.device, dtype=torch.float32)
    spectrogram = torch.stft(
        waveform.reshape(batch * channels, length).float(),
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=True,
        pad_mode="reflect",
        normalized=normalized,
        return_complex=True,
    )
    return spectrogram.view(batch, channels, *spectrogram.shape[1:])


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.roformer_istft with BSRoformer->MelBandRoformer  # noqa: E501
def roformer_istft(
    spectrogram: torch.Tensor, n_fft: int, hop_length: int, win_length: int, normalized: bool, length: int
) -> torch.Tensor:
    """Inverse of `roformer_stft`: `(..., bins, frames)` complex -> `(..., length)` float32."""
    leading = spectrogram.shape[:-2]
    window = torch.hann_window(win_length, device=spectrogram.device, dtype=torch.float32)
    waveform = torch.istft(
        spectrogram.reshape(-1, *spectrogram.shape[-2:]),
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=win_length,
        window=window,
        center=True,
        normalized=normalized,
        length=length,
    )
    return waveform.view(*leading, length)


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.multi_resolution_stft_loss with BSRoformer->MelBandRoformer  # noqa: E501
def multi_resolution_stft_loss(
    estimate: torch.Tensor, target: torch.Tensor, config: PretrainedConfig
) -> torch.Tensor:
    """The originals' loss: waveform L1 plus the weighted sum of STFT L1s over the window sizes."""
    loss = F.l1_loss(estimate, target)
    if not config.multi_stft_resolution_loss_weight:
        return loss
    estimate_flat = estimate.reshape(-1, estimate.shape[-1])
    target_flat = target.reshape(-1, target.shape[-1])
    spectral = estimate.new_zeros(())
    for window_size in config.multi_stft_resolutions_window_sizes:
        n_fft = max(window_size, config.stft_n_fft)
        kwargs: dict[str, Any] = {
            "n_fft": n_fft,
            # the originals' reflect padding needs more than n_fft // 2 samples; shorter (test-sized)
            # excerpts, on which they fail, get zero padding
            "pad_mode": "reflect" if estimate_flat.shape[-1] > n_fft // 2 else "constant",
            "win_length": window_size,
            "hop_length": config.multi_stft_hop_size,
            "normalized": config.multi_stft_normalized,
            "window": torch.hann_window(window_size, device=estimate.device, dtype=estimate_flat.dtype),
            "return_complex": True,
        }
        # complex L1 as the originals take it: the mean modulus of the difference
        spectral = spectral + F.l1_loss(
            torch.stft(estimate_flat, **kwargs), torch.stft(target_flat, **kwargs)
        )
    return loss + config.multi_stft_resolution_loss_weight * spectral


# Rows of the (batch, frames, bands, dim) layout that the inference fast path processes at a time: the
# position-wise work (norm, projections, GELU, residuals) of a block stays in the CPU's caches, and
# its scratch buffers are reused instead of allocating (and page-faulting) a fresh tensor per op.
FAST_PATH_BLOCK_ROWS = 256


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.use_fast_path with BSRoformer->MelBandRoformer  # noqa: E501
def use_fast_path(layers: nn.ModuleList, hidden_states: torch.Tensor) -> bool:
    """Whether `run_axial_layers` takes the inference fast path: eval mode (no dropout), no autograd
    (the training path keeps autograd's graph as it is) and float32 (the rotary is applied in place
    as complex64 products)."""
    return not layers.training and not torch.is_grad_enabled() and hidden_states.dtype == torch.float32


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer._normalize_rows with BSRoformer->MelBandRoformer  # noqa: E501
def _normalize_rows(rows: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """`F.normalize(rows, dim=-1)` written into `out` (the RMSNorm without its scale and gain, which
    the fast path folds into the next Linear's weight)."""
    norm = torch.linalg.vector_norm(rows, dim=-1, keepdim=True).clamp_min_(1e-12)
    return torch.div(rows, norm, out=out)


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer._norm_gain with BSRoformer->MelBandRoformer
def _norm_gain(norm: nn.Module) -> torch.Tensor:
    return norm.weight * norm.scale


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer._FusedAttentionWeights with BSRoformer->MelBandRoformer  # noqa: E501
class _FusedAttentionWeights:
    """One attention block's projections for the fast path: the RMSNorm gain folded into the input
    side of `qkv`, the head gate (and the value-residual gate) appended as extra output rows (their
    biases; zero for the qkv rows), padded to an even width so that q and k read as complex pairs."""

    def __init__(self, attention: nn.Module) -> None:
        heads, inner = attention.heads, attention.heads * attention.dim_head
        gain = _norm_gain(attention.norm)
        pieces = [attention.qkv.weight, attention.gate.weight]
        biases = [attention.qkv.weight.new_zeros(3 * inner), attention.gate.bias]
        if attention.value_residual_gate is not None:
            pieces.append(attention.value_residual_gate.weight)
            biases.append(attention.value_residual_gate.bias)
        width = 3 * inner + heads * (len(pieces) - 1)
        padding = -width % 8
        if padding:
            pieces.append(attention.qkv.weight.new_zeros(padding, attention.qkv.in_features))
            biases.append(attention.qkv.weight.new_zeros(padding))
        self.weight_t = (torch.cat(pieces) * gain).t()
        self.bias = torch.cat(biases)
        self.width = width + padding
        self.gate = slice(3 * inner, 3 * inner + heads)
        self.value_gate = slice(3 * inner + heads, 3 * inner + 2 * heads)
        self.out_t = attention.out_proj.weight.t()


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer._scratch
def _scratch(
    scratch: dict[str, torch.Tensor], name: str, rows: int, columns: int, like: torch.Tensor
) -> torch.Tensor:
    """A `(rows, columns)` view of the reusable buffer `name` (grown when too small): one allocation per
    forward instead of one per block, whose fresh pages the kernel would have to fault in and zero."""
    buffer = scratch.get(name)
    if buffer is None or buffer.numel() < rows * columns:
        buffer = scratch[name] = like.new_empty(rows * columns)
    return buffer[: rows * columns].view(rows, columns)


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer._fast_transformer with BSRoformer->MelBandRoformer  # noqa: E501
def _fast_transformer(
    transformer: nn.Module,
    hidden_states: torch.Tensor,
    along_time: bool,
    rotation: torch.Tensor,
    first_values: torch.Tensor | None,
    keep_values: bool,
    scratch: dict[str, torch.Tensor],
) -> torch.Tensor | None:
    """Runs a time or frequency transformer of standard attention blocks in place on the `(batch,
    frames, bands, dim)` hidden states, without changing their layout: the attention reads q, k and v
    through strided views of the fused projection. Returns the first block's values `(batch, frames,
    bands, heads * dim_head)` (a copy) when `keep_values` (later layers mix them in as a value
    residual). `scratch` holds the buffers that all transformers of a forward reuse."""
    batch, frames, bands, dim = hidden_states.shape
    flat = hidden_states.view(-1, dim)
    total = flat.shape[0]
    first = transformer.layers[0].attention
    heads, dim_head = first.heads, first.dim_head
    inner = heads * dim_head
    device = hidden_states.device
    frames_per_block = max(1, FAST_PATH_BLOCK_ROWS // bands) if device.type == "cpu" else frames
    blocks = [
        (item, start, min(start + frames_per_block, frames))
        for item in range(batch)
        for start in range(0, frames, frames_per_block)
    ]
    block_rows = min(frames_per_block, frames) * bands
    expansion = transformer.layers[0].feed_forward.fc1.out_features
    normed = _scratch(scratch, "normed", block_rows, dim, hidden_states)
    gated = _scratch(scratch, "gated", block_rows, inner, hidden_states)
    expanded = _scratch(scratch, "expanded", block_rows, expansion, hidden_states)
    values_out: torch.Tensor | None = None
    # rotation of each position along the attended axis, broadcast over (q/k, heads)
    if along_time:
        rotation = rotation.view(frames, 1, 1, 1, dim_head // 2)
    else:
        rotation = rotation.view(1, bands, 1, 1, dim_head // 2)

    def rows_of(item: int, start: int, stop: int) -> slice:
        offset = (item * frames + start) * bands
        return slice(offset, offset + (stop - start) * bands)

    for layer in transformer.layers:
        attention, feed_forward = layer.attention, layer.feed_forward
        weights = _FusedAttentionWeights(attention)
        projected = _scratch(scratch, "projected", total, weights.width, hidden_states)
        for item, start, stop in blocks:
            rows = rows_of(item, start, stop)
            count = rows.stop - rows.start
            block = projected[rows]
            torch.addmm(
                weights.bias, _normalize_rows(flat[rows], normed[:count]), weights.weight_t, out=block
            )
            pairs = torch.view_as_complex(block[:, : 2 * inner].view(stop - start, bands, 2, heads, -1, 2))
            pairs.mul_(rotation[start:stop] if along_time else rotation)
            block[:, weights.gate].sigmoid_()
            if attention.value_residual_gate is not None:
                if first_values is None:
                    raise ValueError(
                        "this attention layer mixes in the first layer's values, none were given"
                    )
                mix = block[:, weights.value_gate].sigmoid_().unsqueeze(-1)
                values = block[:, 2 * inner : 3 * inner].view(count, heads, dim_head)
                values.lerp_(first_values.view(total, heads, dim_head)[rows], mix)
        if keep_values and values_out is None:  # the first block's values, before any mixing
            values_out = projected[:, 2 * inner : 3 * inner].clone()
        grid = projected.view(batch, frames, bands, weights.width)
        query, key, value = (
            grid[..., part * inner : (part + 1) * inner].unflatten(-1, (heads, dim_head)) for part in range(3)
        )
        if along_time:  # one sequence per (item, band): (bands, heads, frames, dim_head) per item
            attended = [
                F.scaled_dot_product_attention(
                    *(t[item].permute(1, 2, 0, 3) for t in (query, key, value))
                ).permute(2, 0, 1, 3)
                for item in range(batch)
            ]  # each (frames, bands, heads, dim_head)
        else:  # one sequence per (item, frame)
            sequences = [t.reshape(batch * frames, bands, heads, dim_head).transpose(1, 2)
                         for t in (query, key, value)]  # fmt: skip
            output = F.scaled_dot_product_attention(*sequences).transpose(1, 2)
            attended = list(output.reshape(batch, frames, bands, heads, dim_head))
        gates = grid[..., weights.gate]
        for item, start, stop in blocks:
            rows = rows_of(item, start, stop)
            count = rows.stop - rows.start
            out = gated[:count].view(stop - start, bands, heads, dim_head)
            torch.mul(attended[item][start:stop], gates[item, start:stop].unsqueeze(-1), out=out)
            flat[rows].addmm_(gated[:count], weights.out_t)
        del attended
        fc1_t = (feed_forward.fc1.weight * _norm_gain(feed_forward.norm)).t()
        fc2_t = feed_forward.fc2.weight.t()
        for item, start, stop in blocks:
            rows = rows_of(item, start, stop)
            count = rows.stop - rows.start
            hidden = torch.addmm(
                feed_forward.fc1.bias,
                _normalize_rows(flat[rows], normed[:count]),
                fc1_t,
                out=expanded[:count],
            )
            torch.ops.aten.gelu_(hidden)  # exact (erf) GELU, as the originals
            flat[rows].add_(feed_forward.fc2.bias).addmm_(hidden, fc2_t)
    if transformer.norm is not None:
        for item, start, stop in blocks:
            rows = rows_of(item, start, stop)
            flat[rows] = transformer.norm(flat[rows])
    return values_out


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.fast_axial_layers with BSRoformer->MelBandRoformer  # noqa: E501
def fast_axial_layers(
    layers: nn.ModuleList,
    hidden_states: torch.Tensor,
    time_rotary: MelBandRoformerRotaryEmbedding,
    freq_rotary: MelBandRoformerRotaryEmbedding,
    skip_connection: bool,
) -> torch.Tensor:
    """`run_axial_layers` for inference (see `use_fast_path`): the same function of the weights, in
    one `(batch, frames, bands, dim)` buffer updated in place by every block."""
    batch, frames, bands, dim = hidden_states.shape
    device = hidden_states.device
    time_rotation = time_rotary.rotation(frames, device)
    freq_rotation = freq_rotary.rotation(bands, device)
    first_values: dict[str, torch.Tensor | None] = {"time": None, "freq": None}
    outputs: list[torch.Tensor] = []
    keep_values = any(
        block.attention.value_residual_gate is not None
        for layer in layers
        for block in (*layer.time_transformer.layers, *layer.freq_transformer.layers)
    )
    hidden_states = hidden_states.contiguous().clone()  # updated in place
    scratch: dict[str, torch.Tensor] = {}
    for layer in layers:
        if layer.linear_transformer is not None:
            flat, _ = layer.linear_transformer(hidden_states.view(batch, frames * bands, dim))
            hidden_states = flat.view(batch, frames, bands, dim).contiguous()
        for earlier in outputs:
            hidden_states += earlier
        for kind, transformer, rotation in (
            ("time", layer.time_transformer, time_rotation),
            ("freq", layer.freq_transformer, freq_rotation),
        ):
            values = _fast_transformer(
                transformer, hidden_states, kind == "time", rotation, first_values[kind],
                keep_values and first_values[kind] is None, scratch,
            )  # fmt: skip
            if first_values[kind] is None:
                first_values[kind] = values
        if skip_connection:
            outputs.append(hidden_states.clone())
    return hidden_states


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.run_axial_layers with BSRoformer->MelBandRoformer  # noqa: E501
def run_axial_layers(
    layers: nn.ModuleList,
    hidden_states: torch.Tensor,
    time_rotary: MelBandRoformerRotaryEmbedding,
    freq_rotary: MelBandRoformerRotaryEmbedding,
    skip_connection: bool,
    use_checkpoint: bool,
) -> torch.Tensor:
    """The transformer stack on `(batch, frames, bands, dim)` band embeddings (same shape out).

    With `skip_connection` (MSST), the outputs of all earlier layers are added to a layer's input
    after its linear transformer. Value residuals (when the layers have them) are the first layer's
    values, per transformer kind.
    """
    if use_fast_path(layers, hidden_states):
        return fast_axial_layers(layers, hidden_states, time_rotary, freq_rotary, skip_connection)
    batch, frames, bands, dim = hidden_states.shape
    device = hidden_states.device
    time_rotation = time_rotary.rotation(frames, device)
    freq_rotation = freq_rotary.rotation(bands, device)
    first_values: dict[str, torch.Tensor | None] = {"time": None, "freq": None}
    outputs: list[torch.Tensor] = []

    def run(transformer: nn.Module, states: torch.Tensor, *args: Any) -> tuple[torch.Tensor, Any]:
        if use_checkpoint and torch.is_grad_enabled():
            return checkpoint(transformer, states, *args, use_reentrant=False)
        return transformer(states, *args)

    for layer in layers:
        if layer.linear_transformer is not None:
            flat, _ = run(layer.linear_transformer, hidden_states.reshape(batch, frames * bands, dim))
            hidden_states = flat.view(batch, frames, bands, dim)
        for earlier in outputs:
            hidden_states = hidden_states + earlier
        # along time: one sequence per (item, band)
        sequences = hidden_states.transpose(1, 2).reshape(batch * bands, frames, dim)
        sequences, values = run(layer.time_transformer, sequences, time_rotation, first_values["time"])
        if first_values["time"] is None:
            first_values["time"] = values
        hidden_states = sequences.view(batch, bands, frames, dim).transpose(1, 2)
        # across bands: one sequence per (item, frame)
        sequences = hidden_states.reshape(batch * frames, bands, dim)
        sequences, values = run(layer.freq_transformer, sequences, freq_rotation, first_values["freq"])
        if first_values["freq"] is None:
            first_values["freq"] = values
        hidden_states = sequences.view(batch, frames, bands, dim)
        if skip_connection:
            outputs.append(hidden_states)
    return hidden_states


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer._check_padding_mask
def _check_padding_mask(padding_mask: torch.Tensor | None, batch: int, length: int) -> torch.Tensor | None:
    """Per-item lengths from a ``(batch, time)`` padding mask, or None when every item is full."""
    if padding_mask is None:
        return None
    if not isinstance(padding_mask, torch.Tensor):
        raise TypeError(f"padding_mask must be a torch.Tensor, got {type(padding_mask).__name__}")
    if tuple(padding_mask.shape) != (batch, length):
        raise ValueError(
            f"padding_mask must be (batch, time) = {(batch, length)}, got {tuple(padding_mask.shape)}"
        )
    lengths = padding_mask.to(torch.bool).sum(dim=-1)
    if (lengths == 0).any():
        raise ValueError("padding_mask marks an item with no samples at all")
    return None if bool((lengths == length).all()) else lengths


# Copied from demixers.modeling.bs_roformer.modeling_bs_roformer._LoadReportFilter
class _LoadReportFilter(logging.Filter):
    """Drops transformers' multi-line load report while a strict load is running: a mismatch raises
    one ``ValueError`` instead, and a match has nothing to report."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


class MelBandRoformerPreTrainedModel(PreTrainedModel):
    config_class = MelBandRoformerConfig
    base_model_prefix = "mel_band_roformer"
    main_input_name = "input_values"

    # Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerPreTrainedModel.from_pretrained
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        *model_args: Any,
        strict: bool = True,
        **kwargs: Any,
    ) -> Any:
        """Load like transformers does, but strictly: a missing, unexpected or mismatched tensor, or a
        folder whose ``model_type`` names another model, is a ``ValueError`` naming the first keys and
        the folder. transformers only warns and leaves random weights, which then separate garbage.

        ``strict=False`` restores transformers' lenient loading (e.g. to fine-tune a changed head).
        ``output_loading_info=True`` returns ``(model, loading_info)`` as usual.
        """
        if not strict:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        config = kwargs.get("config")
        expected_type = cls.config_class.model_type
        if isinstance(config, PretrainedConfig):
            found_type = getattr(config, "model_type", None)
        else:
            hub_kwargs = {
                key: kwargs[key]
                for key in (
                    "cache_dir",
                    "force_download",
                    "local_files_only",
                    "token",
                    "revision",
                    "subfolder",
                )
                if key in kwargs
            }
            config_dict, _ = PretrainedConfig.get_config_dict(
                config or pretrained_model_name_or_path, **hub_kwargs
            )
            found_type = config_dict.get("model_type")
        if found_type != expected_type:
            raise ValueError(
                f"{pretrained_model_name_or_path}: its config's model_type {found_type!r} is not "
                f"{expected_type!r}; "
                f"{cls.__name__} cannot load it (use AutoModel, or the model's own class)"
            )
        wants_info = bool(kwargs.pop("output_loading_info", False))
        # Mismatched shapes are collected (transformers would raise a RuntimeError after a report) and
        # refused below, unless the caller asked to ignore them.
        check_shapes = not kwargs.pop("ignore_mismatched_sizes", False)
        report_logger = logging.getLogger("transformers.modeling_utils")
        report_filter = _LoadReportFilter()
        report_logger.addFilter(report_filter)  # the error below says it in one line
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path,
                *model_args,
                output_loading_info=True,
                ignore_mismatched_sizes=True,
                **kwargs,
            )
        finally:
            report_logger.removeFilter(report_filter)
        fields = [("missing_keys", "missing"), ("unexpected_keys", "unexpected")]
        if check_shapes:
            fields.append(("mismatched_keys", "mismatched"))
        problems = []
        for field, label in fields:
            keys = sorted(str(key if isinstance(key, str) else key[0]) for key in info.get(field) or ())
            if keys:
                more = f" and {len(keys) - 5} more" if len(keys) > 5 else ""
                problems.append(f"{len(keys)} {label} tensor(s): {', '.join(keys[:5])}{more}")
        if problems:
            raise ValueError(
                f"{pretrained_model_name_or_path}: the weights do not match the {cls.__name__} its "
                f"config.json describes ({'; '.join(problems)}); refusing to run with random weights "
                "(strict=False loads anyway)"
            )
        return (model, info) if wants_info else model

    # Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerPreTrainedModel._init_weights with BSRoformer->MelBandRoformer  # noqa: E501
    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default Linear initialisation (as the originals train from), unit RMSNorm gains
        and linear-attention temperatures, the standard rotary frequencies."""
        if isinstance(module, nn.Linear):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.in_features) if module.in_features > 0 else 0.0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, MelBandRoformerRMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, MelBandRoformerLinearAttention):
            init.ones_(module.temperature)
        elif isinstance(module, MelBandRoformerRotaryEmbedding):
            init.copy_(module.inverse_frequencies, module.default_inverse_frequencies(module.dim_head))


class MelBandRoformerForSourceSeparation(MelBandRoformerPreTrainedModel):
    """Mel-Band RoFormer: a mixture in, `num_stems` masked stems (and optionally the residual) out.

    Example:

    ```python
    >>> import torch
    >>> config = MelBandRoformerConfig(dim=32, depth=1, stft_n_fft=256, stft_hop_length=64,
    ...     stft_win_length=256, dim_freqs_in=129, num_bands=8, heads=2, dim_head=16)
    >>> model = MelBandRoformerForSourceSeparation(config).eval()
    >>> model(input_values=torch.randn(1, 2, 4410)).audio_values.shape
    torch.Size([1, 2, 2, 4410])
    ```
    """

    def __init__(self, config: MelBandRoformerConfig) -> None:
        super().__init__(config)
        input_sizes = config.band_input_sizes
        self.band_split = MelBandRoformerBandSplit(input_sizes, config.dim)
        self.time_rotary = MelBandRoformerRotaryEmbedding(config.dim_head)
        self.freq_rotary = MelBandRoformerRotaryEmbedding(config.dim_head)
        self.layers = nn.ModuleList(
            MelBandRoformerLayer(config, value_residual=False, output_norm=True) for _ in range(config.depth)
        )
        # Mel-Band RoFormer's mask MLP has mask_estimator_depth hidden layers
        self.mask_estimators = nn.ModuleList(
            MelBandRoformerMaskEstimator(config, input_sizes, config.mask_estimator_depth)
            for _ in range(config.num_stems)
        )
        # gather indices into the (bin, channel) axis, band by band; and how many bands cover each bin
        channels = config.audio_channels
        gathered = [
            index * channels + channel
            for indices in config.band_frequency_indices
            for index in indices
            for channel in range(channels)
        ]
        coverage = [0] * config.dim_freqs_in
        for indices in config.band_frequency_indices:
            for index in indices:
                coverage[index] += 1
        # plain tensors on the CPU (not buffers: derived from the config, and valid even when the
        # model is built on the meta device), moved to the input's device in `estimate_masks`
        self._gather_indices = torch.tensor(gathered, dtype=torch.long, device="cpu")
        self._bands_per_bin = torch.tensor(coverage, dtype=torch.float32, device="cpu").repeat_interleave(
            channels
        )
        self.post_init()

    # Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.ConvTasNetForSourceSeparation._check_input_values  # noqa: E501
    def _check_input_values(self, input_values: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_values, torch.Tensor):
            raise TypeError(f"input_values must be a torch.Tensor, got {type(input_values).__name__}")
        channels = self.config.audio_channels
        if input_values.dim() == 2 and channels == 1:
            input_values = input_values[:, None]
        if input_values.dim() != 3:
            expected = "(batch, 1, time) or (batch, time)" if channels == 1 else f"(batch, {channels}, time)"
            raise ValueError(f"input_values must be {expected}, got shape {tuple(input_values.shape)}")
        if input_values.shape[1] != channels:
            raise ValueError(
                f"input_values has {input_values.shape[1]} channels but the model expects {channels} "
                "(convert mono/stereo before calling the model; the pipeline does it)"
            )
        if input_values.shape[0] == 0 or input_values.shape[-1] == 0:
            raise ValueError(f"input_values is empty: shape {tuple(input_values.shape)}")
        if not input_values.is_floating_point():
            raise TypeError(f"input_values must be a floating-point tensor, got {input_values.dtype}")
        if not torch.isfinite(input_values).all():
            raise ValueError("input_values contains NaN or infinite samples")
        return input_values

    def estimate_masks(self, spectrogram: torch.Tensor) -> torch.Tensor:
        """`(batch, channels, bins, frames)` complex mixture -> `(batch, num_stems, channels, bins,
        frames)` complex masks (averaged over the bands that cover each bin)."""
        config = self.config
        batch, channels, bins, frames = spectrogram.shape
        device = spectrogram.device
        gather = self._gather_indices.to(device)
        # (batch, frames, bins * channels, 2): einops `b s f t c -> b t (f s) c`, then the bands' bins
        features = (
            torch.view_as_real(spectrogram).permute(0, 3, 2, 1, 4).reshape(batch, frames, bins * channels, 2)
        )
        features = features.index_select(2, gather).reshape(batch, frames, -1)
        dtype = self.band_split.bands[0].proj.weight.dtype
        hidden_states = self.band_split(features.to(dtype))
        hidden_states = run_axial_layers(
            self.layers,
            hidden_states,
            self.time_rotary,
            self.freq_rotary,
            config.skip_connection,
            config.use_torch_checkpoint and self.training,
        )
        masks = torch.stack([estimator(hidden_states) for estimator in self.mask_estimators], dim=1)
        masks = torch.view_as_complex(masks.float().view(batch, config.num_stems, frames, -1, 2))
        summed = masks.new_zeros(batch, config.num_stems, frames, bins * channels).index_add_(
            -1, gather, masks
        )
        averaged = summed / self._bands_per_bin.to(device).clamp(min=1e-8)
        return averaged.view(batch, config.num_stems, frames, bins, channels).permute(0, 1, 4, 3, 2)

    # Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerForSourceSeparation.separate
    def separate(self, mixture: torch.Tensor) -> torch.Tensor:
        """`(batch, channels, time)` float32 -> `(batch, num_stems, channels, time)` float32 stems."""
        config = self.config
        length = mixture.shape[-1]
        # reflect padding of the centred STFT needs more than n_fft // 2 samples: pad short inputs with
        # silence (the output is cut back to the input's length)
        minimum = config.stft_n_fft // 2 + 1
        if length < minimum:
            mixture = F.pad(mixture, (0, minimum - length))
        stft_args = (
            config.stft_n_fft,
            config.stft_hop_length,
            config.stft_win_length,
            config.stft_normalized,
        )
        spectrogram = roformer_stft(mixture, *stft_args)
        masked = spectrogram.unsqueeze(1) * self.estimate_masks(spectrogram)
        if config.zero_dc:
            masked = masked.index_fill(-2, torch.tensor([0], device=masked.device), 0.0)
        stems = roformer_istft(masked, *stft_args, length=mixture.shape[-1])
        return stems[..., :length]

    # Copied from demixers.modeling.bs_roformer.modeling_bs_roformer.BSRoformerForSourceSeparation.forward with BSRoformer->MelBandRoformer  # noqa: E501
    def forward(
        self,
        input_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> MelBandRoformerSourceSeparationOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, audio_channels, time)`): mixtures at
                `config.sampling_rate`, any length (MSST runs the model on `config.chunk_size` chunks).
            labels (`torch.FloatTensor` of shape `(batch, num_sources, audio_channels, time)`, *optional*):
                reference sources in the order of `config.source_names`; gives the `loss` (on the
                `num_stems` predicted stems; a residual's label is not used).
            padding_mask (`torch.Tensor` of shape `(batch, time)`, *optional*): 1 on real samples, 0 on
                padding. Items with padding are separated at their own length, their padded tail is
                zero in the output, and the loss is the mean of the items' own losses.
            return_dict (`bool`, *optional*): return a tuple instead of a `ModelOutput` when False.
        """
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        input_values = self._check_input_values(input_values)
        batch, channels, length = input_values.shape
        config = self.config
        expected = (batch, config.num_sources, channels, length)
        if labels is not None and tuple(labels.shape) != expected:
            raise ValueError(
                f"labels must be (batch, num_sources, audio_channels, time) = {expected}, "
                f"got {tuple(labels.shape)}"
            )
        lengths = _check_padding_mask(padding_mask, batch, length)
        if lengths is not None:
            audio_values = input_values.new_zeros(expected)
            losses = []
            for index, item_length in enumerate(lengths.tolist()):
                item = self(
                    input_values[index : index + 1, :, :item_length],
                    labels=None if labels is None else labels[index : index + 1, ..., :item_length],
                    return_dict=True,
                )
                audio_values[index, ..., :item_length] = item.audio_values[0]
                if item.loss is not None:
                    losses.append(item.loss)
            loss = torch.stack(losses).mean() if losses else None
            if not return_dict:
                return (loss, audio_values) if loss is not None else (audio_values,)
            return MelBandRoformerSourceSeparationOutput(loss=loss, audio_values=audio_values)

        mixture = input_values.float()
        stems = self.separate(mixture)
        sources = [stems]
        if config.has_residual:
            sources.append((mixture - stems.sum(dim=1)).unsqueeze(1))
        audio_values = torch.cat(sources, dim=1).to(input_values.dtype)

        loss = None
        if labels is not None:
            target = labels[:, : config.num_stems].to(stems.device).float()
            loss = multi_resolution_stft_loss(stems, target, config)

        if not return_dict:
            return (loss, audio_values) if loss is not None else (audio_values,)
        return MelBandRoformerSourceSeparationOutput(loss=loss, audio_values=audio_values)


__all__ = [
    "MelBandRoformerForSourceSeparation",
    "MelBandRoformerPreTrainedModel",
    "MelBandRoformerSourceSeparationOutput",
]
