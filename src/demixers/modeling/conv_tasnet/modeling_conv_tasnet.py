"""PyTorch Conv-TasNet: a learned filterbank and a temporal convolutional network that predicts masks.

Conv-TasNet (Luo & Mesgarani, IEEE/ACM TASLP 2019, arXiv:1809.07454) separates in the time domain:

* the encoder, a strided 1-D convolution (N filters of L samples, hop L/2 by default), turns the
  waveform into frames of features;
* the separator, a temporal convolutional network (TCN), normalises the features, squeezes them to
  B bottleneck channels and runs R repeats of X convolutional blocks. Block ``x`` of every repeat
  is ``1x1 conv (B -> H) -> PReLU -> norm -> depthwise conv (kernel P, dilation 2^x) -> PReLU -> norm``
  followed by a residual ``1x1 conv (H -> B)`` added to its input and, optionally, a skip
  ``1x1 conv (H -> Sc)`` summed over all blocks (the last block then needs no residual
  convolution). The skip sum (or the residual stream when there
  are no skips) goes through an optional PReLU and a ``1x1 conv`` to one mask per source and
  feature, squashed by the mask non-linearity;
* the decoder, a transposed convolution with the same geometry, turns every masked feature map
  back into a waveform (overlap-add of N learned basis signals).

The frames cover the input up to the last full window; the few samples after it (fewer than the
hop) are zero in the output, as in asteroid and demucs. The receptive field of one output frame is
``1 + R (P - 1) (2^X - 1)`` frames (`ConvTasNetConfig.receptive_field`).
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

from .configuration_conv_tasnet import ConvTasNetConfig

NORM_EPS = 1e-8
SI_SNR_EPS = 1e-8


@dataclass
class ConvTasNetSourceSeparationOutput(ModelOutput):
    """Output of [`ConvTasNetForSourceSeparation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): returned when `labels` are given. For
            speakers (`config.permutation_invariant`) the permutation-invariant negative SI-SNR in
            dB (mean over sources, channels and batch); otherwise the L1 distance to the labels.
        audio_values (`torch.FloatTensor` of shape `(batch, num_sources, audio_channels, time)`): the
            separated sources, as long as the input.
    """

    loss: torch.FloatTensor | None = None
    audio_values: torch.FloatTensor | None = None


# ---------------------------------------------------------------------------------------------
# Normalisations of (batch, channels, *positions)
# ---------------------------------------------------------------------------------------------


class ConvTasNetNorm(nn.Module):
    """Base of the layer norms: a per-channel gain `weight` and offset `bias` on dimension 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def _affine(self, normed: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (normed.dim() - 2)
        return normed * self.weight.view(shape) + self.bias.view(shape)


class ConvTasNetGlobalLayerNorm(ConvTasNetNorm):
    """gLN: mean and variance over channels and every position, one pair per batch item."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, hidden_states.dim()))
        mean = hidden_states.mean(dim=dims, keepdim=True)
        var = (hidden_states - mean).pow(2).mean(dim=dims, keepdim=True)
        return self._affine((hidden_states - mean) / torch.sqrt(var + NORM_EPS))


class ConvTasNetChannelLayerNorm(ConvTasNetNorm):
    """cLN: mean and variance over the channels at every position."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mean = hidden_states.mean(dim=1, keepdim=True)
        var = (hidden_states - mean).pow(2).mean(dim=1, keepdim=True)
        return self._affine((hidden_states - mean) / torch.sqrt(var + NORM_EPS))


class ConvTasNetCumulativeLayerNorm(ConvTasNetNorm):
    """cgLN: statistics over the channels and all frames up to the current one (causal gLN).

    Input ``(batch, channels, time)``.
    """

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        channels, length = hidden_states.shape[1], hidden_states.shape[-1]
        cumulative_sum = hidden_states.sum(dim=1, keepdim=True).cumsum(dim=-1)
        cumulative_power = hidden_states.pow(2).sum(dim=1, keepdim=True).cumsum(dim=-1)
        count = torch.arange(1, length + 1, device=hidden_states.device, dtype=hidden_states.dtype) * channels
        mean = cumulative_sum / count
        var = cumulative_power / count - mean.pow(2)
        return self._affine((hidden_states - mean) / torch.sqrt(var + NORM_EPS))


def build_norm(norm_type: str, channels: int) -> nn.Module:
    """The normalisation named by `config.norm_type` / `config.input_norm_type`."""
    if norm_type == "gln":
        return ConvTasNetGlobalLayerNorm(channels)
    if norm_type == "cln":
        return ConvTasNetChannelLayerNorm(channels)
    if norm_type == "cgln":
        return ConvTasNetCumulativeLayerNorm(channels)
    if norm_type == "bn":
        return nn.BatchNorm1d(channels)
    if norm_type == "id":
        return nn.Identity()
    raise ValueError(f"unknown norm_type {norm_type!r}")


def apply_mask_activation(scores: torch.Tensor, activation: str) -> torch.Tensor:
    """Mask non-linearity of ``(batch, sources, channels, frames)`` scores (softmax over sources)."""
    if activation == "sigmoid":
        return torch.sigmoid(scores)
    if activation == "relu":
        return F.relu(scores)
    if activation == "softmax":
        return torch.softmax(scores, dim=1)
    if activation == "tanh":
        return torch.tanh(scores)
    if activation == "linear":
        return scores
    raise ValueError(f"unknown mask_activation {activation!r}")


# ---------------------------------------------------------------------------------------------
# Encoder, separator, decoder
# ---------------------------------------------------------------------------------------------


class ConvTasNetEncoder(nn.Module):
    """``(batch, audio_channels, time)`` -> ``(batch, encoder_channels, frames)``.

    ``frames = (time - kernel_size) // stride + 1``; the filters are `weight`
    ``(encoder_channels, audio_channels, kernel_size)``.
    """

    def __init__(self, config: ConvTasNetConfig) -> None:
        super().__init__()
        self.stride = config.encoder_stride
        self.activation = config.encoder_activation
        self.weight = nn.Parameter(
            torch.empty(config.encoder_channels, config.audio_channels, config.encoder_kernel_size)
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        features = F.conv1d(waveform, self.weight, stride=self.stride)
        return F.relu(features) if self.activation == "relu" else features


class ConvTasNetDecoder(nn.Module):
    """``(batch, encoder_channels, frames)`` -> ``(batch, audio_channels, samples)``.

    ``samples = (frames - 1) * stride + kernel_size``. Overlap-add of learned basis signals: a
    transposed convolution with filters `weight`
    ``(encoder_channels, audio_channels, kernel_size)``.
    """

    def __init__(self, config: ConvTasNetConfig) -> None:
        super().__init__()
        self.stride = config.encoder_stride
        self.weight = nn.Parameter(
            torch.empty(config.encoder_channels, config.audio_channels, config.encoder_kernel_size)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(features, self.weight, stride=self.stride)


class ConvTasNetBlock(GradientCheckpointingLayer):
    """One dilated convolutional block of the TCN on ``(batch, bottleneck_channels, frames)``.

    Returns ``(residual, skip)``: ``residual`` ``(batch, bottleneck_channels, frames)`` is added to the
    block input by the caller; ``skip`` ``(batch, skip_channels, frames)`` is None without skip path.
    ``residual`` is None for a block built with ``residual=False``: the last block of a TCN with
    skip connections, whose residual output nothing reads (asteroid stores one; it is dropped).
    """

    def __init__(self, config: ConvTasNetConfig, dilation: int, residual: bool = True) -> None:
        super().__init__()
        bottleneck, hidden, kernel = (
            config.bottleneck_channels,
            config.hidden_channels,
            config.conv_kernel_size,
        )
        bias = config.separator_bias
        self.causal = config.causal
        self.left_padding = (kernel - 1) * dilation
        self.in_conv = nn.Conv1d(bottleneck, hidden, 1, bias=bias)
        self.in_activation = nn.PReLU()
        self.in_norm = build_norm(config.norm_type, hidden)
        self.depthwise_conv = nn.Conv1d(
            hidden,
            hidden,
            kernel,
            dilation=dilation,
            groups=hidden,
            padding=0 if config.causal else (kernel - 1) * dilation // 2,
            bias=bias,
        )
        self.depthwise_activation = nn.PReLU()
        self.depthwise_norm = build_norm(config.norm_type, hidden)
        self.residual_conv = nn.Conv1d(hidden, bottleneck, 1, bias=bias) if residual else None
        self.skip_conv = (
            nn.Conv1d(hidden, config.skip_channels, 1, bias=bias) if config.skip_channels else None
        )

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        hidden_states = self.in_norm(self.in_activation(self.in_conv(hidden_states)))
        if self.causal and self.left_padding:
            hidden_states = F.pad(hidden_states, (self.left_padding, 0))
        hidden_states = self.depthwise_conv(hidden_states)
        hidden_states = self.depthwise_norm(self.depthwise_activation(hidden_states))
        skip = self.skip_conv(hidden_states) if self.skip_conv is not None else None
        residual = self.residual_conv(hidden_states) if self.residual_conv is not None else None
        return residual, skip


class ConvTasNetSeparator(nn.Module):
    """Temporal convolutional network: features -> one mask per source.

    ``(batch, encoder_channels, frames)`` -> ``(batch, sources, encoder_channels, frames)``.
    """

    def __init__(self, config: ConvTasNetConfig) -> None:
        super().__init__()
        self.num_sources = config.num_sources
        self.mask_activation = config.mask_activation
        self.use_skip = config.skip_channels > 0
        bias = config.separator_bias
        self.input_norm = build_norm(config.input_norm_type, config.encoder_channels)
        self.bottleneck = nn.Conv1d(config.encoder_channels, config.bottleneck_channels, 1, bias=bias)
        dilations = [2**block for _ in range(config.num_repeats) for block in range(config.num_blocks)]
        self.blocks = nn.ModuleList(
            [
                ConvTasNetBlock(
                    config, dilation, residual=not (self.use_skip and index == len(dilations) - 1)
                )
                for index, dilation in enumerate(dilations)
            ]
        )
        self.output_activation = nn.PReLU() if config.mask_prelu else nn.Identity()
        mask_input = config.skip_channels if self.use_skip else config.bottleneck_channels
        self.mask_conv = nn.Conv1d(mask_input, config.num_sources * config.encoder_channels, 1, bias=bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, frames = features.shape
        hidden_states = self.bottleneck(self.input_norm(features))
        skip_sum = None
        for block in self.blocks:
            residual, skip = block(hidden_states)
            if residual is not None:
                hidden_states = hidden_states + residual
            if skip is not None:
                skip_sum = skip if skip_sum is None else skip_sum + skip
        mask_input = skip_sum if self.use_skip else hidden_states
        scores = self.mask_conv(self.output_activation(mask_input))
        scores = scores.reshape(batch, self.num_sources, channels, frames)
        return apply_mask_activation(scores, self.mask_activation)


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def pairwise_si_snr(
    estimates: torch.Tensor, references: torch.Tensor, eps: float = SI_SNR_EPS
) -> torch.Tensor:
    """SI-SNR in dB of every (estimate, reference) pair, averaged over audio channels.

    Args:
        estimates: `(batch, sources, channels, time)`.
        references: `(batch, sources, channels, time)`.

    Returns:
        `(batch, sources, sources)`: entry `[b, i, j]` scores estimate `i` against reference `j`.
    """
    estimates = estimates - estimates.mean(dim=-1, keepdim=True)
    references = references - references.mean(dim=-1, keepdim=True)
    dots = torch.einsum("bict,bjct->bijc", estimates, references)
    reference_energy = references.pow(2).sum(dim=-1)[:, None]  # (batch, 1, sources, channels)
    scale = dots / (reference_energy + eps)
    target_energy = scale.pow(2) * reference_energy
    # noise of every pair: e_i - a_ij r_j (direct difference, not the expanded energies, for stability)
    projections = scale[..., None] * references[:, None]  # (batch, i, j, channels, time)
    noise_energy = (estimates[:, :, None] - projections).pow(2).sum(dim=-1)
    ratio = target_energy / (noise_energy + eps)
    return (10 * torch.log10(ratio + eps)).mean(dim=-1)


def permutation_invariant_si_snr_loss(estimates: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Negative SI-SNR (dB) of the best assignment of estimates to references, averaged over the batch.

    Args:
        estimates: `(batch, sources, channels, time)`.
        references: same shape as `estimates`.
    """
    sources = estimates.shape[1]
    scores = pairwise_si_snr(estimates.float(), references.float())
    permutations = torch.tensor(list(itertools.permutations(range(sources))), device=scores.device)
    # per_permutation[b, p] = mean_i scores[b, i, permutations[p, i]]
    per_permutation = scores[:, torch.arange(sources, device=scores.device), permutations].mean(dim=-1)
    return -per_permutation.max(dim=-1).values.mean()


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


# Copied from demixers.modeling.mossformer.modeling_mossformer._LoadReportFilter
class _LoadReportFilter(logging.Filter):
    """Drops transformers' multi-line load report while a strict load is running: a mismatch raises
    one ``ValueError`` instead, and a match has nothing to report."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


class ConvTasNetPreTrainedModel(PreTrainedModel):
    config_class = ConvTasNetConfig
    base_model_prefix = "conv_tasnet"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["ConvTasNetBlock"]

    # Copied from demixers.modeling.mossformer.modeling_mossformer.MossFormerPreTrainedModel.from_pretrained
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

    # Copied from demixers.modeling.dprnn_tasnet.modeling_dprnn_tasnet.DPRNNTasNetPreTrainedModel._init_weights with DPRNNTasNet->ConvTasNet  # noqa: E501
    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Xavier-normal filterbanks (as asteroid), PyTorch's defaults elsewhere."""
        if isinstance(module, (ConvTasNetEncoder, ConvTasNetDecoder)):
            init.xavier_normal_(module.weight)
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.RNNBase):
            bound = 1 / math.sqrt(module.hidden_size)
            for parameter in module.parameters(recurse=False):
                init.uniform_(parameter, -bound, bound)
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)
        elif isinstance(module, (ConvTasNetNorm, nn.modules.batchnorm._BatchNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)


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


class ConvTasNetForSourceSeparation(ConvTasNetPreTrainedModel):
    """Conv-TasNet: a mixture in, one waveform per source out.

    Example:

    ```python
    >>> import torch
    >>> config = ConvTasNetConfig(num_blocks=2, num_repeats=1)
    >>> model = ConvTasNetForSourceSeparation(config).eval()
    >>> mixture = torch.randn(1, 1, 8000)  # one second at 8 kHz
    >>> model(input_values=mixture).audio_values.shape
    torch.Size([1, 2, 1, 8000])
    ```
    """

    def __init__(self, config: ConvTasNetConfig) -> None:
        super().__init__(config)
        self.encoder = ConvTasNetEncoder(config)
        self.separator = ConvTasNetSeparator(config)
        self.decoder = ConvTasNetDecoder(config)
        self.post_init()

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

    def separate(self, mixture: torch.Tensor) -> torch.Tensor:
        """``(batch, audio_channels, time)`` -> ``(batch, sources, audio_channels, time)``."""
        batch, channels, length = mixture.shape
        kernel_size = self.config.encoder_kernel_size
        if length < kernel_size:  # too short for one frame: zero-pad, trimmed back below
            mixture = F.pad(mixture, (0, kernel_size - length))
        features = self.encoder(mixture)
        masks = self.separator(features)
        masked = (features[:, None] * masks).flatten(0, 1)
        audio = self.decoder(masked).reshape(batch, self.config.num_sources, channels, -1)
        if audio.shape[-1] < length:  # samples after the last full frame are left at zero
            audio = F.pad(audio, (0, length - audio.shape[-1]))
        return audio[..., :length]

    def compute_loss(self, audio_values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """PIT negative SI-SNR for speakers, L1 for fixed stems (see the output's `loss`)."""
        if tuple(labels.shape) != tuple(audio_values.shape):
            raise ValueError(
                f"labels must be (batch, num_sources, audio_channels, time) = {tuple(audio_values.shape)}, "
                f"got {tuple(labels.shape)}"
            )
        labels = labels.to(device=audio_values.device, dtype=audio_values.dtype)
        if self.config.permutation_invariant:
            return permutation_invariant_si_snr_loss(audio_values, labels)
        return F.l1_loss(audio_values, labels)

    def forward(
        self,
        input_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> ConvTasNetSourceSeparationOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, audio_channels, time)`): mixtures at
                `config.sampling_rate`; `(batch, time)` is accepted for mono models.
            labels (`torch.FloatTensor` of shape `(batch, num_sources, audio_channels, time)`, *optional*):
                reference sources; gives `loss`.
            padding_mask (`torch.Tensor` of shape `(batch, time)`, *optional*): 1 on real samples, 0 on
                padding. Items with padding are separated at their own length; their padded tail is
                zero in the output.
            return_dict (`bool`, *optional*): return a tuple instead of a `ModelOutput` when False.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        mixture = self._check_input_values(input_values).to(self.encoder.weight.dtype)
        batch, _, length = mixture.shape
        lengths = _check_padding_mask(padding_mask, batch, length)
        if lengths is None:
            audio_values = self.separate(mixture)
        else:
            audio_values = mixture.new_zeros(batch, self.config.num_sources, mixture.shape[1], length)
            for index, item_length in enumerate(lengths.tolist()):
                audio_values[index, ..., :item_length] = self.separate(
                    mixture[index : index + 1, :, :item_length]
                )[0]

        if labels is not None and lengths is not None and tuple(labels.shape) == tuple(audio_values.shape):
            # the padded tail is zero in both: its content never counts
            keep = torch.arange(length, device=labels.device)[None, :] < lengths.to(labels.device)[:, None]
            labels = labels * keep[:, None, None, :].to(labels.dtype)
        loss = self.compute_loss(audio_values, labels) if labels is not None else None
        if not return_dict:
            return (loss, audio_values) if loss is not None else (audio_values,)
        return ConvTasNetSourceSeparationOutput(loss=loss, audio_values=audio_values)


__all__ = [
    "ConvTasNetForSourceSeparation",
    "ConvTasNetPreTrainedModel",
    "ConvTasNetSourceSeparationOutput",
    "pairwise_si_snr",
    "permutation_invariant_si_snr_loss",
]
