"""PyTorch MossFormer: gated single-head transformer with convolution-augmented joint self-attentions.

MossFormer (Zhao & Ma, ICASSP 2023, arXiv:2302.11824) separates speakers in the time domain:

* a convolutional encoder (``Conv1d`` + ReLU) turns the waveform into frames;
* a mask net normalises and projects the frames, adds a scaled sinusoidal position embedding and
  runs a stack of MossFormer blocks. Each block is a gated single-head transformer: token shift,
  convolution-augmented projections (scale norm, linear, SiLU, depthwise convolution), rotary
  query/key features, and a *joint* attention that is quadratic inside non-overlapping groups of
  frames and linear over the whole sequence. A gated output layer then predicts one mask per
  speaker;
* a transposed-convolution decoder turns each masked representation back into a waveform.

This implementation reproduces ModelScope's released ``damo/speech_mossformer_separation_temporal_8k``
numerically (see ``convert_mossformer_original_to_hf.py``), with batched speakers, a shared
value/gate attention product and no Python loop over time.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput

from .configuration_mossformer import MossFormerConfig

SI_SNR_EPS = 1e-8


@dataclass
class MossFormerSourceSeparationOutput(ModelOutput):
    """Output of [`MossFormerForSourceSeparation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): permutation-invariant negative SI-SNR
            (in dB, averaged over the batch), returned when `labels` are given.
        audio_values (`torch.FloatTensor` of shape `(batch, num_sources, 1, time)`): the separated
            sources, as long as the input.
    """

    loss: torch.FloatTensor | None = None
    audio_values: torch.FloatTensor | None = None


# ---------------------------------------------------------------------------------------------
# Positional parts
# ---------------------------------------------------------------------------------------------


def _sinusoid_frequencies(dim: int, device: torch.device) -> torch.Tensor:
    """``1 / 10000^(2i/dim)`` for ``i < dim // 2`` in float32 (as the reference computes them)."""
    exponents = torch.arange(0, dim, 2, device=device)[: dim // 2].float() / dim
    return 1.0 / (10000.0**exponents)


class MossFormerScaledSinusoidalEmbedding(nn.Module):
    """Absolute ``[sin | cos]`` position embedding with one learned scale, added to the mask-net input."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, length: int, device: torch.device) -> torch.Tensor:
        """Returns the embedding of positions ``0 .. length - 1`` as ``(length, dim)`` float32."""
        positions = torch.arange(length, device=device, dtype=torch.float32)
        angles = positions[:, None] * _sinusoid_frequencies(self.dim, device)[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1) * self.scale.float()


class MossFormerRotaryEmbedding(nn.Module):
    """Rotary position embedding on the first ``dim`` query/key features (interleaved pairs).

    Parameter-free; cosines and sines are computed once per forward and shared by every block.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(cos, sin)``, each ``(length, dim)`` float32, every frequency repeated twice."""
        positions = torch.arange(length, device=device, dtype=torch.float32)
        angles = positions[:, None] * _sinusoid_frequencies(self.dim, device)[None, :]
        angles = angles.repeat_interleave(2, dim=-1)
        return angles.cos(), angles.sin()


def apply_rotary_embedding(
    features: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, inplace: bool = False
) -> torch.Tensor:
    """Rotates the first ``cos.shape[-1]`` features of ``(batch, time, heads, dim)`` ``features``.

    ``cos``/``sin`` are ``(time, rotary_dim)``; pairs ``(x[2i], x[2i+1])`` rotate by the same angle.
    With ``inplace`` the rotated features are written back into ``features`` (no copy of the
    features that are not rotated).
    """
    rotary_dim = cos.shape[-1]
    rotated = features[..., :rotary_dim]
    pairs = rotated.unflatten(-1, (-1, 2))
    half_turn = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    cos = cos[:, None, :].to(features.dtype)
    sin = sin[:, None, :].to(features.dtype)
    rotated = rotated * cos + half_turn * sin
    if inplace:
        features[..., :rotary_dim] = rotated
        return features
    return torch.cat((rotated, features[..., rotary_dim:]), dim=-1)


# ---------------------------------------------------------------------------------------------
# Normalisations
# ---------------------------------------------------------------------------------------------


class MossFormerScaleNorm(nn.Module):
    """``x / max(||x|| / sqrt(dim), eps) * gain`` over the last dimension (one learned gain)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        norm = torch.norm(hidden_states, dim=-1, keepdim=True) * self.scale
        return hidden_states / norm.clamp(min=self.eps) * self.gain


class MossFormerGlobalLayerNorm(nn.Module):
    """Global layer norm of ``(batch, channels, time)``: statistics over channels and time."""

    def __init__(self, channels: int, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mean = torch.mean(hidden_states, (1, 2), keepdim=True)
        var = torch.mean((hidden_states - mean) ** 2, (1, 2), keepdim=True)
        normed = self.weight[:, None] * (hidden_states - mean) / torch.sqrt(var + self.eps)
        return normed + self.bias[:, None]


class MossFormerChannelLayerNorm(nn.LayerNorm):
    """Layer norm over the channels of ``(batch, channels, time)`` at every frame."""

    def __init__(self, channels: int, eps: float = 1e-8) -> None:
        super().__init__(channels, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return super().forward(hidden_states.transpose(1, 2)).transpose(1, 2)


# frames summed per level of `_blockwise_mean_over_channels_and_time` (three levels: 64**3 frames
# before the top level sums more than 64 partial sums)
_EXPORT_SUM_BLOCK = 64


def _blockwise_mean_over_channels_and_time(hidden_states: torch.Tensor) -> torch.Tensor:
    """Mean over channels and time of ``(batch, channels, time)``, summed in blocks of 64 frames.

    For the exported graph: onnxruntime's ReduceMean over a long axis accumulates sequentially in
    float32, so its error grows with the number of frames (1.3e-4 of a group norm's output at 40000
    frames of non-negative features, against 8e-8 in torch). Summing 64 frames at a time (an
    average pool times 64, exact in binary), then the partial sums 64 at a time, keeps every
    accumulation short. The zero padding adds nothing; it is one block longer than needed so that
    no level ever has a single block (`torch.export` would specialise the graph on that size).
    """
    _, channels, length = hidden_states.shape
    sums = hidden_states
    for _ in range(3):
        padded = F.pad(sums, (0, 2 * _EXPORT_SUM_BLOCK - 1))
        sums = F.avg_pool1d(padded, _EXPORT_SUM_BLOCK, _EXPORT_SUM_BLOCK) * _EXPORT_SUM_BLOCK
    total = sums.sum(dim=-1, keepdim=True).sum(dim=1, keepdim=True)  # (batch, 1, 1)
    return total / (channels * length)


def exportable_mask_net_norm(norm: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
    """``norm(hidden_states)``, with the statistics of the whole-sequence norms ("ln": one-group
    `nn.GroupNorm`, "gln") computed blockwise while exporting (see
    `_blockwise_mean_over_channels_and_time`); other norms and eager runs call ``norm`` itself."""
    if not torch.compiler.is_exporting():
        return norm(hidden_states)
    whole_sequence = isinstance(norm, MossFormerGlobalLayerNorm) or (
        isinstance(norm, nn.GroupNorm) and norm.num_groups == 1
    )
    if not whole_sequence:
        return norm(hidden_states)
    weight, bias, eps = norm.weight, norm.bias, norm.eps
    centered = hidden_states - _blockwise_mean_over_channels_and_time(hidden_states)
    variance = _blockwise_mean_over_channels_and_time(centered.square())
    normed = centered / torch.sqrt(variance + eps)
    if weight is not None:
        normed = normed * weight[:, None]
    if bias is not None:
        normed = normed + bias[:, None]
    return normed


def build_mask_net_norm(norm_type: str, channels: int) -> nn.Module:
    """The mask net's normalisation of ``(batch, channels, time)`` (`config.norm_type`)."""
    if norm_type == "ln":
        return nn.GroupNorm(1, channels, eps=1e-8)
    if norm_type == "gln":
        return MossFormerGlobalLayerNorm(channels)
    if norm_type == "cln":
        return MossFormerChannelLayerNorm(channels)
    if norm_type == "bn":
        return nn.BatchNorm1d(channels)
    raise ValueError(f"unknown norm_type {norm_type!r}")


# ---------------------------------------------------------------------------------------------
# MossFormer block
# ---------------------------------------------------------------------------------------------


def depthwise_conv_over_time(hidden_states: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """'Same'-padded depthwise convolution over time of ``(batch, time, channels)``.

    The same convolution as ``F.conv1d`` on ``hidden_states.transpose(1, 2)`` with ``weight``
    ``(channels, 1, kernel)``, run as a 2-D convolution on a ``(batch, channels, 1, time)`` view:
    that view is channels-last in memory, so no transpose is copied and oneDNN/cuDNN use their
    fast channels-last depthwise kernels.
    """
    kernel_size = weight.shape[-1]
    convolved = F.conv2d(
        hidden_states.transpose(1, 2).unsqueeze(2),
        weight.unsqueeze(2),
        padding=(0, (kernel_size - 1) // 2),
        groups=weight.shape[0],
    )
    return convolved.squeeze(2).transpose(1, 2)


class MossFormerConvModule(nn.Module):
    """Residual depthwise convolution over time of ``(batch, time, channels)``."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv1d(
            channels, channels, kernel_size, padding=(kernel_size - 1) // 2, groups=channels, bias=False
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # the convolution's output is a fresh tensor that autograd does not need: add in place
        return depthwise_conv_over_time(hidden_states, self.depthwise.weight).add_(hidden_states)


class MossFormerConvProjection(nn.Module):
    """Convolution-augmented projection: scale norm, linear, SiLU, depthwise conv module, dropout."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int, dropout: float) -> None:
        super().__init__()
        self.norm = MossFormerScaleNorm(in_features)
        self.linear = nn.Linear(in_features, out_features)
        self.activation = nn.SiLU()
        self.conv = MossFormerConvModule(out_features, kernel_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            hidden_states = F.silu(self.linear(self.norm(hidden_states)))
        else:
            # linear(x / norm * gain) as (x W^T) * (gain / norm) + bias: the scale goes to the
            # narrower side of the projection, and no normalised copy of the input is made
            norm = self.norm
            scaled_norm = torch.norm(hidden_states, dim=-1, keepdim=True) * norm.scale
            scale = norm.gain / scaled_norm.clamp(min=norm.eps)
            hidden_states = torch.matmul(hidden_states, self.linear.weight.t())
            hidden_states = F.silu(hidden_states.mul_(scale).add_(self.linear.bias), inplace=True)
        return self.dropout(self.conv(hidden_states))


class MossFormerOffsetScale(nn.Module):
    """Per-head scale and offset producing several query/key variants from one projection."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(heads, dim))
        self.beta = nn.Parameter(torch.zeros(heads, dim))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``(..., dim)`` -> ``(..., heads, dim)``."""
        return torch.addcmul(self.beta, hidden_states[..., None, :], self.gamma)


class MossFormerBlock(GradientCheckpointingLayer):
    """Gated single-head transformer block with joint local (quadratic) and global (linear) attention.

    Operates on ``(batch, time, hidden_size)``; ``cos``/``sin`` are the shared rotary tables.
    """

    def __init__(self, config: MossFormerConfig) -> None:
        super().__init__()
        hidden, inner = config.hidden_size, config.intermediate_size
        self.group_size = config.group_size
        self.causal = config.causal
        self.value_gate_proj = MossFormerConvProjection(
            hidden, inner, config.conv_kernel_size, config.attention_dropout
        )
        self.query_key_proj = MossFormerConvProjection(
            hidden, config.query_key_dim, config.conv_kernel_size, config.attention_dropout
        )
        # four variants of the shared query/key: local query, global query, local key, global key
        self.query_key_offset_scale = MossFormerOffsetScale(config.query_key_dim, heads=4)
        self.out_proj = MossFormerConvProjection(
            inner // 2, hidden, config.conv_kernel_size, config.attention_dropout
        )
        self.attention_dropout = nn.Dropout(config.attention_dropout)

    # frames per depthwise-convolution call of the inference path: the released model's 2176
    # channels times 1024 frames (8.9 MB) stay far below glibc's 32 MB mmap threshold
    inference_chunk_frames: ClassVar[int] = 1024

    def forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        workspace: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``(batch, time, hidden)`` -> same shape.

        ``workspace`` (inference only) holds the block's large intermediate buffers between calls:
        the mask net passes one dictionary to all its blocks, so the buffers are allocated once per
        forward instead of once per block (see `_inference_forward`).
        """
        # Without autograd, intermediate tensors are overwritten in place (fewer passes over memory).
        inplace = not torch.is_grad_enabled()
        if inplace and not self.training and not self.causal and not torch.compiler.is_exporting():
            return self._inference_forward(hidden_states, cos, sin, {} if workspace is None else workspace)
        # token shift: the first half of the channels sees the previous frame
        half = (hidden_states.shape[-1] + 1) // 2
        block_input = torch.empty_like(hidden_states, memory_format=torch.contiguous_format)
        block_input[:, 1:, :half] = hidden_states[:, :-1, :half]
        block_input[:, :1, :half] = 0.0
        block_input[..., half:] = hidden_states[..., half:]

        value_gate, query_key = self._input_projections(block_input)  # (b t inner), (b t qk)
        query_key = self.query_key_offset_scale(query_key)  # (batch, time, 4, qk)
        query_key = apply_rotary_embedding(query_key, cos, sin, inplace=inplace)
        local_query, global_query, local_key, global_key = query_key.unbind(dim=-2)

        # value and gate share one attention map: attend over their concatenation at once
        attended = self._joint_attention(local_query, global_query, local_key, global_key, value_gate)
        attended_value, attended_gate = attended.chunk(2, dim=-1)
        value, gate = value_gate.chunk(2, dim=-1)
        if inplace:
            gated = attended_gate.mul_(value).mul_(attended_value.mul_(gate).sigmoid_())
        else:
            gated = (attended_gate * value) * torch.sigmoid(attended_value * gate)
        output = self.out_proj(gated)
        return output.add_(hidden_states) if inplace else hidden_states + output

    @staticmethod
    def _workspace_buffer(
        workspace: dict[str, torch.Tensor], name: str, shape: tuple[int, ...], like: torch.Tensor
    ) -> torch.Tensor:
        """The uninitialised buffer ``name`` of ``workspace``, (re)allocated when its shape differs."""
        buffer = workspace.get(name)
        if buffer is None or (buffer.shape, buffer.dtype, buffer.device) != (shape, like.dtype, like.device):
            buffer = torch.empty(shape, dtype=like.dtype, device=like.device)
            workspace[name] = buffer
        return buffer

    @classmethod
    def _projection_into_padded(
        cls,
        inputs: torch.Tensor,
        weight: torch.Tensor,
        padded: torch.Tensor,
        padding: int,
    ) -> torch.Tensor:
        """``inputs @ weight.T`` written into the rows ``padding .. padding + time`` of ``padded``
        ``(batch, padding + time + padding, out)``, whose ``padding`` rows on each side are zeroed
        (the depthwise convolution's 'same' padding). Returns the unpadded view."""
        length = inputs.shape[1]
        padded[:, :padding].zero_()
        padded[:, padding + length :].zero_()
        for index in range(inputs.shape[0]):  # mm's out= needs a contiguous matrix per item
            torch.mm(inputs[index], weight.t(), out=padded[index, padding : padding + length])
        return padded[:, padding : padding + length]

    @classmethod
    def _chunked_depthwise_with_residual(
        cls,
        padded: torch.Tensor,
        weight: torch.Tensor,
        output: torch.Tensor,
        extra: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``output = depthwise_conv(x) + x (+ extra)`` of ``x = padded[:, p : p + time]``, time chunk
        by time chunk.

        ``padded`` is ``(batch, p + time + p, channels)`` with zero borders (``p = (kernel - 1) // 2``).
        Each chunk's convolution reads its neighbours' frames from ``padded`` (no padded copies) and
        its small result is added to the residual(s) while still in cache, straight into ``output``:
        a whole-sequence convolution result would be a fresh allocation of ``time * channels``
        floats (87 MB for the released model at 10 s), which glibc maps and the kernel faults in
        page by page at every block.
        """
        kernel = weight.shape[-1]
        padding = (kernel - 1) // 2
        batch, length = output.shape[:2]
        conv_weight = weight.unsqueeze(2)  # (channels, 1, 1, kernel)
        # the chunks are for one CPU thread's allocator and caches: with several threads oneDNN
        # splits a chunk's convolution poorly (2x slower per frame at 2 threads), and an
        # accelerator takes the whole sequence
        single_cpu_thread = output.device.type == "cpu" and torch.get_num_threads() == 1
        chunk = cls.inference_chunk_frames if single_cpu_thread else max(length, 1)
        for index in range(batch):
            for start in range(0, length, chunk):
                stop = min(length, start + chunk)
                window = padded[index : index + 1, start : stop + 2 * padding]
                # (1, channels, 1, frames) view of channels-last memory: oneDNN's depthwise kernel
                convolved = F.conv2d(window.transpose(1, 2).unsqueeze(2), conv_weight, groups=weight.shape[0])
                target = output[index : index + 1, start:stop]
                torch.add(
                    convolved.squeeze(2).transpose(1, 2),
                    padded[index : index + 1, start + padding : stop + padding],
                    out=target,
                )
                if extra is not None:
                    target.add_(extra[index : index + 1, start:stop])
        return output

    def _inference_forward(
        self,
        hidden_states: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        workspace: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """The block without autograd, in eval mode (dropout off), non-causal: same arithmetic as
        the autograd path, with the large intermediates in ``workspace`` buffers reused by every
        block, the depthwise convolutions run over time chunks into them (see
        `_chunked_depthwise_with_residual`), and the token shift fused with the scale norm."""
        batch, length, hidden = hidden_states.shape
        value_gate_proj, query_key_proj, out_proj = self.value_gate_proj, self.query_key_proj, self.out_proj
        padding = (value_gate_proj.conv.depthwise.kernel_size[0] - 1) // 2

        # token shift (the first half of the channels sees the previous frame) and the scale norm
        # of the shifted rows, written once: the row norm is assembled from the two halves' norms
        half = (hidden + 1) // 2
        first_half_squares = torch.linalg.vector_norm(hidden_states[..., :half], dim=-1).square_()
        squares = torch.linalg.vector_norm(hidden_states[..., half:], dim=-1).square_()
        squares[:, 1:] += first_half_squares[:, :-1]
        norm = value_gate_proj.norm
        inverse_norm = squares.sqrt_().mul_(norm.scale).clamp_(min=norm.eps).reciprocal_()[..., None]
        block_input = self._workspace_buffer(workspace, "block_input", (batch, length, hidden), hidden_states)
        torch.mul(hidden_states[:, :-1, :half], inverse_norm[:, 1:], out=block_input[:, 1:, :half])
        block_input[:, :1, :half] = 0.0
        torch.mul(hidden_states[..., half:], inverse_norm, out=block_input[..., half:])

        # value/gate and query/key projections as one linear layer (gains folded into the weights)
        # rows ordered [gate | value | query/key]: the attended gate then comes first, where the GLU
        # below takes its multiplicand (the attention treats every channel alike)
        inner = value_gate_proj.linear.out_features
        gate_first = torch.cat((torch.arange(inner // 2, inner), torch.arange(inner // 2)))
        gate_first = gate_first.to(hidden_states.device)
        weight = torch.cat(
            (
                value_gate_proj.linear.weight[gate_first] * value_gate_proj.norm.gain,
                query_key_proj.linear.weight * query_key_proj.norm.gain,
            )
        )
        bias = torch.cat((value_gate_proj.linear.bias[gate_first], query_key_proj.linear.bias))
        width = weight.shape[0]
        padded = self._workspace_buffer(
            workspace, "projection_padded", (batch, length + 2 * padding, width), hidden_states
        )
        projected = self._projection_into_padded(block_input, weight, padded, padding)
        F.silu(projected.add_(bias), inplace=True)
        conv_weight = torch.cat(
            (value_gate_proj.conv.depthwise.weight[gate_first], query_key_proj.conv.depthwise.weight)
        )
        projected = self._workspace_buffer(workspace, "projection", (batch, length, width), hidden_states)
        self._chunked_depthwise_with_residual(padded, conv_weight, projected)
        gate_value, query_key = projected.split((inner, width - inner), dim=-1)

        offset_scale = self.query_key_offset_scale
        query_key_variants = self._workspace_buffer(
            workspace, "query_key", (batch, length, 4, query_key.shape[-1]), hidden_states
        )
        torch.addcmul(offset_scale.beta, query_key[..., None, :], offset_scale.gamma, out=query_key_variants)
        query_key_variants = apply_rotary_embedding(query_key_variants, cos, sin, inplace=True)
        local_query, global_query, local_key, global_key = query_key_variants.unbind(dim=-2)

        attended = self._workspace_buffer(workspace, "attended", (batch, length, inner), hidden_states)
        self._joint_attention(local_query, global_query, local_key, global_key, gate_value, output=attended)
        attended_gate, attended_value = attended.chunk(2, dim=-1)
        gate, value = gate_value.chunk(2, dim=-1)
        attended_gate.mul_(value)
        attended_value.mul_(gate)
        # (attended_gate * value) * sigmoid(attended_value * gate) as one GLU pass, into a
        # contiguous buffer (the output projection's norm and matmul then read dense rows)
        gated = self._workspace_buffer(workspace, "gated", (batch, length, inner // 2), hidden_states)
        torch._C._nn.glu(attended, -1, out=gated)

        # output projection: linear(x / norm * gain) as (x W^T) * (gain / norm) + bias, SiLU,
        # depthwise convolution with its residual, and the block's residual, chunk by chunk
        out_norm = out_proj.norm
        gated_norm = torch.linalg.vector_norm(gated, dim=-1, keepdim=True).mul_(out_norm.scale)
        scale = out_norm.gain / gated_norm.clamp_(min=out_norm.eps)
        out_padded = self._workspace_buffer(
            workspace, "output_padded", (batch, length + 2 * padding, hidden), hidden_states
        )
        out_projected = self._projection_into_padded(gated, out_proj.linear.weight, out_padded, padding)
        F.silu(out_projected.mul_(scale).add_(out_proj.linear.bias), inplace=True)
        output = torch.empty_like(hidden_states, memory_format=torch.contiguous_format)
        return self._chunked_depthwise_with_residual(
            out_padded, out_proj.conv.depthwise.weight, output, extra=hidden_states
        )

    def _input_projections(self, block_input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``value_gate_proj`` and ``query_key_proj`` of the same input, computed together.

        Both scale-normalise the same input (only their gains differ, folded into the weights here),
        so the norm is computed once, and the two linear layers and depthwise convolutions run as
        one wider linear layer and one wider convolution. Returns views ``(b, t, inner)`` and
        ``(b, t, qk)`` of one ``(b, t, inner + qk)`` tensor.
        """
        value_gate_proj, query_key_proj = self.value_gate_proj, self.query_key_proj
        norm = value_gate_proj.norm
        scaled_norm = torch.norm(block_input, dim=-1, keepdim=True) * norm.scale
        normed = block_input / scaled_norm.clamp(min=norm.eps)
        weight = torch.cat(
            (
                value_gate_proj.linear.weight * value_gate_proj.norm.gain,
                query_key_proj.linear.weight * query_key_proj.norm.gain,
            )
        )
        bias = torch.cat((value_gate_proj.linear.bias, query_key_proj.linear.bias))
        if torch.is_grad_enabled():
            projected = F.silu(F.linear(normed, weight, bias))
        else:  # a plain matmul, then the bias added in place (cheaper than addmm's broadcast copy)
            projected = F.silu(torch.matmul(normed, weight.t()).add_(bias), inplace=True)
        conv_weight = torch.cat((value_gate_proj.conv.depthwise.weight, query_key_proj.conv.depthwise.weight))
        projected = depthwise_conv_over_time(projected, conv_weight).add_(projected)
        projected = value_gate_proj.dropout(projected)  # both projections use the same dropout rate
        inner = value_gate_proj.linear.out_features
        return projected.split((inner, projected.shape[-1] - inner), dim=-1)

    def _local_attention_weights(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """``relu(q k^T / group_size)^2`` of ``(..., n, d)`` groups (causally masked when causal)."""
        scores = torch.matmul(query, key.transpose(-1, -2))
        if torch.is_grad_enabled():
            weights = self.attention_dropout(F.relu(scores / self.group_size) ** 2)
        else:  # the same arithmetic in place
            weights = self.attention_dropout(F.relu_(scores.div_(self.group_size)).square_())
        if self.causal:
            size = query.shape[-2]
            future = torch.ones(size, size, dtype=torch.bool, device=query.device).triu(1)
            weights = weights.masked_fill(future, 0.0)
        return weights

    def _joint_attention(
        self,
        local_query: torch.Tensor,
        global_query: torch.Tensor,
        local_key: torch.Tensor,
        global_key: torch.Tensor,
        values: torch.Tensor,
        output: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Joint attention of queries/keys ``(b t d)`` over ``values`` ``(b t e)``; returns ``(b t e)``
        (written into ``output`` when given: inference only).

        Legend: b batch, t frames, g groups of n = ``group_size`` frames (the last group may be
        shorter), d ``query_key_dim``, e ``intermediate_size``.

        * local: ``relu(q k^T / n)^2 v`` inside each group (``b g n d, b g m d -> b g n m``);
        * global: ``q (k^T v) / t`` over the whole sequence (``b t d, b t e -> b d e``); when causal,
          each group only sees the sum over the groups before it, divided by n.

        The reference zero-pads the last group to n frames; padded keys contribute exactly
        nothing, so the last group is computed at its own length instead (no padded copies).
        """
        if self.causal:
            return self._causal_joint_attention(local_query, global_query, local_key, global_key, values)
        if torch.compiler.is_exporting():
            return self._padded_joint_attention(local_query, global_query, local_key, global_key, values)
        batch, length, width = values.shape
        group = self.group_size
        full = length - length % group
        parts = [(start, stop) for start, stop in ((0, full), (full, length)) if stop > start]

        # global: linear attention over the whole sequence
        key_values = torch.matmul(global_key.transpose(1, 2), values) / length  # (batch, qk, e)
        output = torch.matmul(global_query, key_values, out=output)  # (batch, time, e)

        # local: squared-ReLU attention inside each group, added to the global part
        local_parts = []
        for start, stop in parts:
            size = min(group, stop - start)
            query, key, value = (
                t[:, start:stop].unflatten(1, (-1, size)) for t in (local_query, local_key, values)
            )
            weights = self._local_attention_weights(query, key)  # (batch, groups, size, size)
            if torch.is_grad_enabled():
                local_parts.append(torch.matmul(weights, value).flatten(1, 2))
            else:
                for index in range(batch):
                    output[index, start:stop].view(-1, size, width).baddbmm_(weights[index], value[index])
        if local_parts:
            output = output + torch.cat(local_parts, dim=1)
        return output

    def _padded_joint_attention(
        self,
        local_query: torch.Tensor,
        global_query: torch.Tensor,
        local_key: torch.Tensor,
        global_key: torch.Tensor,
        values: torch.Tensor,
    ) -> torch.Tensor:
        """`_joint_attention` on zero-padded groups, as the reference computes it: one graph for
        every length (what `torch.export` / ONNX need: no branch on ``length % group_size``)."""
        batch, length, width = values.shape
        group = self.group_size
        key_values = torch.matmul(global_key.transpose(1, 2), values) / length  # (batch, qk, e)
        output = torch.matmul(global_query, key_values)  # (batch, time, e)
        padding = (-length) % group
        query, key, value = (
            F.pad(t, (0, 0, 0, padding)).reshape(batch, -1, group, t.shape[-1])
            for t in (local_query, local_key, values)
        )
        local = torch.matmul(self._local_attention_weights(query, key), value)  # padded keys add 0
        return output + local.reshape(batch, -1, width)[:, :length]

    def _causal_joint_attention(
        self,
        local_query: torch.Tensor,
        global_query: torch.Tensor,
        local_key: torch.Tensor,
        global_key: torch.Tensor,
        values: torch.Tensor,
    ) -> torch.Tensor:
        """`_joint_attention` with causal attention, on zero-padded groups (as the reference)."""
        batch, length, _ = values.shape
        group = self.group_size
        padding = (-length) % group
        if padding:
            local_query, local_key, global_query, global_key, values = (
                F.pad(t, (0, 0, 0, padding))
                for t in (local_query, local_key, global_query, global_key, values)
            )
        num_groups = (length + padding) // group
        local_query, local_key, global_query, global_key, values = (
            t.reshape(batch, num_groups, group, t.shape[-1])
            for t in (local_query, local_key, global_query, global_key, values)
        )
        # local: squared-ReLU attention inside each group (padded keys are exactly zero)
        output = torch.matmul(self._local_attention_weights(local_query, local_key), values)
        # global: each group sees the sum over the groups before it
        key_values = torch.matmul(global_key.transpose(-1, -2), values) / group  # (b, g, qk, e)
        key_values = key_values.cumsum(dim=1)
        key_values = F.pad(key_values, (0, 0, 0, 0, 1, -1))  # exclusive: earlier groups only
        output = output + torch.matmul(global_query, key_values)
        return output.reshape(batch, num_groups * group, -1)[:, :length]


# ---------------------------------------------------------------------------------------------
# Encoder, mask net, decoder
# ---------------------------------------------------------------------------------------------


class MossFormerEncoder(nn.Module):
    """``(batch, time)`` waveform -> ``(batch, encoder_channels, frames)`` non-negative features."""

    def __init__(self, config: MossFormerConfig) -> None:
        super().__init__()
        self.conv = nn.Conv1d(
            1, config.encoder_channels, config.encoder_kernel_size, stride=config.encoder_stride, bias=False
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(waveform[:, None, :]))


class MossFormerDecoder(nn.Module):
    """``(batch, encoder_channels, frames)`` -> ``(batch, samples)`` by transposed convolution."""

    def __init__(self, config: MossFormerConfig) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose1d(
            config.encoder_channels,
            1,
            config.encoder_kernel_size,
            stride=config.encoder_stride,
            bias=config.decoder_bias,
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.conv(features)[:, 0]


class MossFormerMaskNet(nn.Module):
    """Encoder features ``(batch, channels, frames)`` -> masks ``(batch, sources, channels, frames)``."""

    def __init__(self, config: MossFormerConfig) -> None:
        super().__init__()
        channels, hidden = config.encoder_channels, config.hidden_size
        self.num_sources = config.num_sources
        self.input_norm = build_mask_net_norm(config.norm_type, channels)
        self.input_proj = nn.Conv1d(channels, hidden, 1, bias=False)
        self.position_embedding = MossFormerScaledSinusoidalEmbedding(hidden)
        self.rotary_embedding = MossFormerRotaryEmbedding(config.rotary_dim)
        self.layers = nn.ModuleList([MossFormerBlock(config) for _ in range(config.num_hidden_layers)])
        self.layers_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.residual_norm = build_mask_net_norm(config.norm_type, hidden)
        self.activation = nn.PReLU()
        self.sources_proj = nn.Conv1d(hidden, hidden * config.num_sources, 1)
        self.output_proj = nn.Conv1d(hidden, hidden, 1)
        self.output_gate_proj = nn.Conv1d(hidden, hidden, 1)
        self.mask_proj = nn.Conv1d(hidden, channels, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, _, frames = features.shape
        hidden_states = self.input_proj(exportable_mask_net_norm(self.input_norm, features))
        position = self.position_embedding(frames, features.device).to(hidden_states.dtype)
        hidden_states = hidden_states + position.transpose(0, 1)
        residual = hidden_states

        cos, sin = self.rotary_embedding(frames, features.device)
        hidden_states = hidden_states.transpose(1, 2)
        workspace: dict[str, torch.Tensor] = {}  # the blocks' inference buffers, shared by all
        for layer in self.layers:
            hidden_states = layer(hidden_states, cos, sin, workspace)
        hidden_states = self.layers_norm(hidden_states).transpose(1, 2)
        hidden_states = exportable_mask_net_norm(self.residual_norm, hidden_states) + residual

        hidden_states = self.sources_proj(self.activation(hidden_states))
        hidden_states = hidden_states.reshape(batch * self.num_sources, -1, frames)
        hidden_states = torch.tanh(self.output_proj(hidden_states)) * torch.sigmoid(
            self.output_gate_proj(hidden_states)
        )
        masks = F.relu(self.mask_proj(hidden_states))
        return masks.reshape(batch, self.num_sources, -1, frames)


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------


def flat_pairwise_si_snr(
    estimates: torch.Tensor, references: torch.Tensor, eps: float = SI_SNR_EPS
) -> torch.Tensor:
    """SI-SNR in dB of every (estimate, reference) pair of flat signals.

    Not a copy of conv_tasnet's ``pairwise_si_snr``: that one scores ``(batch, sources, channels,
    time)`` per audio channel and averages; this one takes one flat signal per source (the
    ModelScope recipe's mono loss), so the tests hold it to the 3-D definition.

    Args:
        estimates: `(batch, sources, time)`.
        references: `(batch, sources, time)`.

    Returns:
        `(batch, sources, sources)`: entry `[b, i, j]` scores estimate `i` against reference `j`.
    """
    estimates = estimates - estimates.mean(dim=-1, keepdim=True)
    references = references - references.mean(dim=-1, keepdim=True)
    dots = torch.einsum("bit,bjt->bij", estimates, references)
    reference_energy = references.pow(2).sum(dim=-1)[:, None, :]  # (batch, 1, sources)
    projections = (dots / (reference_energy + eps))[..., None] * references[:, None, :, :]
    noise = estimates[:, :, None, :] - projections
    ratio = projections.pow(2).sum(dim=-1) / (noise.pow(2).sum(dim=-1) + eps)
    return 10 * torch.log10(ratio + eps)


def flat_permutation_invariant_si_snr_loss(estimates: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Negative SI-SNR of the best assignment of estimates to references, averaged over the batch.

    Every source's trailing dimensions form one signal (`flat_pairwise_si_snr`); for MossFormer's
    single channel this equals conv_tasnet's per-channel ``permutation_invariant_si_snr_loss``.

    Args:
        estimates: `(batch, sources, ...)`; trailing dimensions are flattened into time.
        references: same shape as `estimates`.
    """
    batch, sources = estimates.shape[:2]
    scores = flat_pairwise_si_snr(
        estimates.reshape(batch, sources, -1).float(), references.reshape(batch, sources, -1).float()
    )
    permutations = torch.tensor(list(itertools.permutations(range(sources))), device=scores.device)
    # per_permutation[b, p] = mean_i scores[b, i, permutations[p, i]]
    per_permutation = scores[:, torch.arange(sources, device=scores.device), permutations].mean(dim=-1)
    return -per_permutation.max(dim=-1).values.mean()


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


class _LoadReportFilter(logging.Filter):
    """Drops transformers' multi-line load report while a strict load is running: a mismatch raises
    one ``ValueError`` instead, and a match has nothing to report."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


class MossFormerPreTrainedModel(PreTrainedModel):
    config_class = MossFormerConfig
    base_model_prefix = "mossformer"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["MossFormerBlock"]

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

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default initialisation, as the reference model trains from."""
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, MossFormerOffsetScale):
            init.normal_(module.gamma, std=0.02)
            init.zeros_(module.beta)
        elif isinstance(module, MossFormerScaleNorm):
            init.ones_(module.gain)
        elif isinstance(module, MossFormerScaledSinusoidalEmbedding):
            init.ones_(module.scale)
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)
        elif isinstance(module, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, MossFormerGlobalLayerNorm)):
            if getattr(module, "weight", None) is not None:
                init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)


class MossFormerForSourceSeparation(MossFormerPreTrainedModel):
    """MossFormer speech separation: a mono mixture in, one waveform per speaker out.

    Example:

    ```python
    >>> import torch
    >>> model = MossFormerForSourceSeparation(MossFormerConfig(num_hidden_layers=2)).eval()
    >>> mixture = torch.randn(1, 8000)  # one second at 8 kHz
    >>> model(input_values=mixture).audio_values.shape
    torch.Size([1, 2, 1, 8000])
    ```
    """

    def __init__(self, config: MossFormerConfig) -> None:
        super().__init__(config)
        self.encoder = MossFormerEncoder(config)
        self.mask_net = MossFormerMaskNet(config)
        self.decoder = MossFormerDecoder(config)
        self.post_init()

    def _check_input_values(self, input_values: torch.Tensor) -> torch.Tensor:
        if not isinstance(input_values, torch.Tensor):
            raise TypeError(f"input_values must be a torch.Tensor, got {type(input_values).__name__}")
        if input_values.dim() == 3:
            if input_values.shape[1] != 1:
                raise ValueError(
                    "MossFormer is mono: input_values must be (batch, time) or (batch, 1, time), "
                    f"got {input_values.shape[1]} channels (shape {tuple(input_values.shape)})"
                )
            input_values = input_values[:, 0]
        elif input_values.dim() != 2:
            raise ValueError(
                "input_values must be (batch, time) or (batch, 1, time), "
                f"got shape {tuple(input_values.shape)}"
            )
        if input_values.shape[0] == 0 or input_values.shape[-1] == 0:
            raise ValueError(f"input_values is empty: shape {tuple(input_values.shape)}")
        if not input_values.is_floating_point():
            raise TypeError(f"input_values must be a floating-point tensor, got {input_values.dtype}")
        if not torch.isfinite(input_values).all():
            raise ValueError("input_values contains NaN or infinite samples")
        return input_values

    def _separate(self, mixture: torch.Tensor) -> torch.Tensor:
        """``(batch, time)`` -> ``(batch, sources, time)`` with the reference's length handling."""
        batch, length = mixture.shape
        kernel_size = self.config.encoder_kernel_size
        if length < kernel_size:  # too short for one frame: zero-pad, then trim back below
            mixture = F.pad(mixture, (0, kernel_size - length))
        features = self.encoder(mixture)
        masks = self.mask_net(features)
        masked = (features[:, None] * masks).flatten(0, 1)
        audio = self.decoder(masked).reshape(batch, self.config.num_sources, -1)
        # the frames cover at most the input: zero-pad the tail (or trim), as the reference does
        if audio.shape[-1] < length:
            audio = F.pad(audio, (0, length - audio.shape[-1]))
        return audio[..., :length]

    def forward(
        self,
        input_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> MossFormerSourceSeparationOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, time)` or `(batch, 1, time)`):
                mono mixtures at `config.sampling_rate`.
            labels (`torch.FloatTensor` of shape `(batch, num_sources, 1, time)`, *optional*):
                reference sources; gives a permutation-invariant negative SI-SNR `loss`.
            padding_mask (`torch.Tensor` of shape `(batch, time)`, *optional*): 1 on real samples,
                0 on padding (as the feature extractor returns). Items with padding are separated at
                their own length and their padded tail is zero in the output.
            return_dict (`bool`, *optional*): return a tuple instead of a `ModelOutput` when False.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        mixture = self._check_input_values(input_values)
        mixture = mixture.to(self.encoder.conv.weight.dtype)
        batch, length = mixture.shape

        lengths = None
        if padding_mask is not None:
            if not isinstance(padding_mask, torch.Tensor):
                raise TypeError(f"padding_mask must be a torch.Tensor, got {type(padding_mask).__name__}")
            if padding_mask.shape != (batch, length):
                raise ValueError(
                    f"padding_mask must be (batch, time) = {(batch, length)}, got {tuple(padding_mask.shape)}"
                )
            lengths = padding_mask.to(torch.bool).sum(dim=-1)
            if (lengths == 0).any():
                raise ValueError("padding_mask marks an item with no samples at all")
            if bool((lengths == length).all()):
                lengths = None

        if lengths is None:
            audio = self._separate(mixture)
        else:
            audio = mixture.new_zeros(batch, self.config.num_sources, length)
            for index, item_length in enumerate(lengths.tolist()):
                audio[index, :, :item_length] = self._separate(mixture[index : index + 1, :item_length])[0]
        audio_values = audio[:, :, None, :]

        loss = None
        if labels is not None:
            expected = tuple(audio_values.shape)
            if tuple(labels.shape) != expected:
                raise ValueError(
                    f"labels must be (batch, num_sources, 1, time) = {expected}, got {tuple(labels.shape)}"
                )
            labels = labels.to(audio_values.device)
            if lengths is not None:  # the padded tail is zero in both: its content never counts
                positions = torch.arange(length, device=labels.device)[None, :]
                keep = positions < lengths.to(labels.device)[:, None]
                labels = labels * keep[:, None, None, :].to(labels.dtype)
            loss = flat_permutation_invariant_si_snr_loss(audio_values, labels)

        if not return_dict:
            return (loss, audio_values) if loss is not None else (audio_values,)
        return MossFormerSourceSeparationOutput(loss=loss, audio_values=audio_values)


__all__ = [
    "MossFormerForSourceSeparation",
    "MossFormerPreTrainedModel",
    "MossFormerSourceSeparationOutput",
    "flat_permutation_invariant_si_snr_loss",
]
