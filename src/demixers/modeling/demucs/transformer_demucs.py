"""The cross-domain transformer of Hybrid Transformer Demucs (v4).

Two stacks of layers run side by side, one on the spectral tokens (``(frequency, frame)`` pairs)
and one on the waveform tokens. Layers alternate between self-attention within each branch and
cross-attention where each branch attends to the other. Parameter names follow the original
implementation (``layers.0.self_attn.in_proj_weight``, ``layers_t.1.cross_attn...``).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .layers_demucs import EMBEDDING_ATTR, LayerScale


def sin_embedding(
    length: int, dim: int, shift: int = 0, device=None, max_period: float = 10000.0
) -> torch.Tensor:
    """1-D sinusoidal positions as ``(length, 1, dim)``: cosines then sines."""
    positions = shift + torch.arange(length, device=device).view(-1, 1, 1)
    half = dim // 2
    index = torch.arange(half, device=device).view(1, 1, -1)
    phase = positions / (max_period ** (index / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1)


def sin_embedding_2d(
    dim: int, height: int, width: int, device=None, max_period: float = 10000.0
) -> torch.Tensor:
    """2-D sinusoidal positions as ``(1, dim, height, width)``.

    The first half of the channels encodes the width position (interleaved sin/cos), the second
    half the height position.
    """
    half = dim // 2
    frequencies = torch.exp(torch.arange(0.0, half, 2) * -(math.log(max_period) / half))
    along_width = torch.arange(0.0, width).unsqueeze(1) * frequencies  # (width, half / 2)
    along_height = torch.arange(0.0, height).unsqueeze(1) * frequencies  # (height, half / 2)
    table = torch.zeros(dim, height, width)
    table[0:half:2] = torch.sin(along_width).t()[:, None, :].expand(-1, height, -1)
    table[1:half:2] = torch.cos(along_width).t()[:, None, :].expand(-1, height, -1)
    table[half::2] = torch.sin(along_height).t()[:, :, None].expand(-1, -1, width)
    table[half + 1 :: 2] = torch.cos(along_height).t()[:, :, None].expand(-1, -1, width)
    return table[None].to(device)


def cape_embedding(
    length: int,
    dim: int,
    batch_size: int,
    mean_normalize: bool,
    augment: bool,
    max_global_shift: float = 0.0,
    max_local_shift: float = 0.0,
    max_scale: float = 1.0,
    device=None,
    max_period: float = 10000.0,
) -> torch.Tensor:
    """Continuous augmented positional embedding (CAPE) as ``(length, batch, dim)``.

    With ``augment`` (training only) positions get a random global shift, local jitter and scale;
    the draws use torch's generator (the original used numpy's).
    """
    positions = torch.arange(length, dtype=torch.float32).view(-1, 1, 1).repeat(1, batch_size, 1)
    if mean_normalize:
        positions = positions - torch.nanmean(positions, dim=0, keepdim=True)
    if augment:
        shift = (torch.rand(1, batch_size, 1) * 2 - 1) * max_global_shift
        jitter = (torch.rand(length, batch_size, 1) * 2 - 1) * max_local_shift
        log_scale = (torch.rand(1, batch_size, 1) * 2 - 1) * math.log(max_scale)
        positions = (positions + shift + jitter) * torch.exp(log_scale)
    positions = positions.to(device)
    half = dim // 2
    index = torch.arange(half, device=device).view(1, 1, -1)
    phase = positions / (max_period ** (index / (half - 1)))
    return torch.cat([torch.cos(phase), torch.sin(phase)], dim=-1).float()


class PositionEmbedding(nn.Module):
    """Learnt position table (``t_emb="scaled"``), stored divided by ``boost``."""

    def __init__(
        self, num_embeddings: int, embedding_dim: int, scale: float = 1.0, boost: float = 3.0
    ) -> None:
        super().__init__()
        self.boost = boost
        self.embedding = nn.Embedding(num_embeddings, embedding_dim)
        setattr(self.embedding, EMBEDDING_ATTR, ("positions", scale / boost))
        with torch.no_grad():
            self.embedding.weight.mul_(scale / boost)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x) * self.boost


class TokenGroupNorm(nn.GroupNorm):
    """GroupNorm over ``(batch, tokens, channels)`` (one group: normalises tokens and channels together)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)


def _norm(dim: int, group_norm: bool, eps: float = 1e-5) -> nn.Module:
    return TokenGroupNorm(1, dim, eps=eps) if group_norm else nn.LayerNorm(dim, eps=eps)


def multi_head_attention(
    attention: nn.MultiheadAttention, query: torch.Tensor, key_value: torch.Tensor
) -> torch.Tensor:
    """``attention(query, key_value, key_value)`` for ``(batch, tokens, channels)`` inputs.

    In training (dropout on the weights) this is the module itself. Otherwise the projections
    are computed here and the attention runs through ``F.scaled_dot_product_attention``, whose
    fused kernels are also used for self-attention (the module's own inference fast path
    computes the full attention matrix on CPU).
    """
    if attention.training and attention.dropout > 0:
        return attention(query, key_value, key_value, need_weights=False)[0]
    batch, length, width = query.shape
    heads = attention.num_heads
    weight, bias = attention.in_proj_weight, attention.in_proj_bias
    if query is key_value:
        queries, keys, values = F.linear(query, weight, bias).chunk(3, dim=-1)
    else:
        queries = F.linear(query, weight[:width], None if bias is None else bias[:width])
        keys, values = F.linear(key_value, weight[width:], None if bias is None else bias[width:]).chunk(
            2, dim=-1
        )
    # (batch, tokens, channels) -> (batch, heads, tokens, channels / heads)
    queries, keys, values = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (queries, keys, values))
    attended = F.scaled_dot_product_attention(queries, keys, values)
    attended = attended.transpose(1, 2).reshape(batch, length, width)
    return attention.out_proj(attended)


class _TransformerLayerBase(nn.Module):
    """Feed-forward block, norms, layer scales and dropouts shared by both layer kinds."""

    def __init__(
        self,
        dim: int,
        heads: int,
        hidden: int,
        dropout: float,
        gelu: bool,
        group_norm: bool,
        norm_first: bool,
        norm_out: bool,
        layer_scale: bool,
        num_input_norms: int,
    ) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.linear1 = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(hidden, dim)
        for index in range(1, num_input_norms + 2):
            setattr(self, f"norm{index}", _norm(dim, group_norm))
        self.norm_out = TokenGroupNorm(1, dim) if (norm_first and norm_out) else None
        self.gamma_1 = LayerScale(dim, 1e-4, channel_last=True) if layer_scale else nn.Identity()
        self.gamma_2 = LayerScale(dim, 1e-4, channel_last=True) if layer_scale else nn.Identity()
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = F.gelu if gelu else F.relu

    def _feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class SelfAttentionLayer(_TransformerLayerBase):
    """Self-attention + feed-forward layer over ``(batch, tokens, channels)``."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0, **kwargs) -> None:
        super().__init__(dim, heads, hidden, dropout, num_input_norms=1, **kwargs)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout1(multi_head_attention(self.self_attn, x, x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.gamma_1(self._attend(self.norm1(x)))
            x = x + self.gamma_2(self._feed_forward(self.norm2(x)))
            if self.norm_out is not None:
                x = self.norm_out(x)
            return x
        x = self.norm1(x + self.gamma_1(self._attend(x)))
        return self.norm2(x + self.gamma_2(self._feed_forward(x)))


class CrossAttentionLayer(_TransformerLayerBase):
    """Cross-attention (queries from this branch, keys/values from the other) + feed-forward."""

    def __init__(self, dim: int, heads: int, hidden: int, dropout: float = 0.0, **kwargs) -> None:
        super().__init__(dim, heads, hidden, dropout, num_input_norms=2, **kwargs)
        self.cross_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)

    def _attend(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.dropout1(multi_head_attention(self.cross_attn, q, k))

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = q + self.gamma_1(self._attend(self.norm1(q), self.norm2(k)))
            x = x + self.gamma_2(self._feed_forward(self.norm3(x)))
            if self.norm_out is not None:
                x = self.norm_out(x)
            return x
        x = self.norm1(q + self.gamma_1(self._attend(q, k)))
        return self.norm2(x + self.gamma_2(self._feed_forward(x)))


class CrossDomainTransformer(nn.Module):
    """Interleaved self-/cross-attention over the spectral and the waveform tokens."""

    def __init__(self, config) -> None:
        super().__init__()
        dim = config.transformer_channels
        self.num_layers = config.t_layers
        self.classic_parity = 1 if config.t_cross_first else 0
        self.emb = config.t_emb
        self.max_period = config.t_max_period
        self.weight_pos_embed = config.t_weight_pos_embed
        self.sin_random_shift = config.t_sin_random_shift
        self.cape_mean_normalize = config.t_cape_mean_normalize
        self.cape_augment = config.t_cape_augment
        self.cape_glob_loc_scale = list(config.t_cape_glob_loc_scale)
        if self.emb == "scaled":
            self.position_embeddings = PositionEmbedding(config.t_max_positions, dim, scale=0.2)
        if config.t_norm_in:
            self.norm_in, self.norm_in_t = nn.LayerNorm(dim), nn.LayerNorm(dim)
        elif config.t_norm_in_group:
            self.norm_in, self.norm_in_t = TokenGroupNorm(1, dim), TokenGroupNorm(1, dim)
        else:
            self.norm_in, self.norm_in_t = nn.Identity(), nn.Identity()
        common = {
            "dim": dim,
            "heads": config.t_heads,
            "hidden": int(dim * config.t_hidden_scale),
            "dropout": config.t_dropout,
            "gelu": config.t_gelu,
            "group_norm": config.t_group_norm,
            "norm_first": config.t_norm_first,
            "norm_out": config.t_norm_out,
            "layer_scale": config.t_layer_scale,
        }
        self.layers = nn.ModuleList()
        self.layers_t = nn.ModuleList()
        for index in range(self.num_layers):
            layer_class = SelfAttentionLayer if index % 2 == self.classic_parity else CrossAttentionLayer
            self.layers.append(layer_class(**common))
            self.layers_t.append(layer_class(**common))

    def _time_positions(self, length: int, batch: int, dim: int, device) -> torch.Tensor:
        if self.emb == "sin":
            shift = 0
            if self.training and self.sin_random_shift:
                shift = int(torch.randint(0, self.sin_random_shift + 1, ()).item())
            return sin_embedding(length, dim, shift=shift, device=device, max_period=self.max_period)
        if self.emb == "cape":
            global_shift, local_shift, scale = self.cape_glob_loc_scale
            return cape_embedding(
                length,
                dim,
                batch,
                mean_normalize=self.cape_mean_normalize,
                augment=self.training and self.cape_augment,
                max_global_shift=global_shift,
                max_local_shift=local_shift,
                max_scale=scale,
                device=device,
                max_period=self.max_period,
            )
        return self.position_embeddings(torch.arange(length, device=device))[:, None]

    def forward(self, x: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, channels, bins, frames = x.shape
        positions_2d = sin_embedding_2d(channels, bins, frames, x.device, self.max_period)
        # (batch, channels, bins, frames) -> (batch, frames * bins, channels), frame-major
        positions_2d = positions_2d.permute(0, 3, 2, 1).reshape(1, frames * bins, channels)
        x = x.permute(0, 3, 2, 1).reshape(batch, frames * bins, channels)
        x = self.norm_in(x) + self.weight_pos_embed * positions_2d

        _, _, length = xt.shape
        xt = xt.transpose(1, 2)  # (batch, time, channels)
        positions = self._time_positions(length, batch, channels, x.device).transpose(0, 1)
        xt = self.norm_in_t(xt) + self.weight_pos_embed * positions

        for index in range(self.num_layers):
            if index % 2 == self.classic_parity:
                x = self.layers[index](x)
                xt = self.layers_t[index](xt)
            else:
                previous_x = x
                x = self.layers[index](x, xt)
                xt = self.layers_t[index](xt, previous_x)

        x = x.reshape(batch, frames, bins, channels).permute(0, 3, 2, 1)
        return x, xt.transpose(1, 2)
