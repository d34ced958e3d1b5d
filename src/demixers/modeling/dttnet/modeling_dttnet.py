"""PyTorch DTTNet: the dual-path TFC-TDF UNet for music source separation.

DTTNet (Chen et al., ICASSP 2024, arXiv:2309.08684) separates one target source from a stereo
mixture in the complex STFT domain:

* the mixture is cut into chunks of `hop_length * (dim_t - 1)` samples that overlap by
  `2 * overlap_samples` (each chunk's `overlap_samples` outer samples on both sides are discarded,
  as the released inference does);
* a centred STFT (`n_fft`, periodic Hann window) turns every chunk into `dim_t` frames; the real and
  imaginary parts of the lowest `dim_f` bins of each channel become the `2 * audio_channels` input
  planes of the network;
* a UNet of TFC-TDF v3 blocks (time-frequency convolutions, then a time-distributed fully connected
  layer across frequency, inside a residual block) with `num_blocks // 2` strided 2x2 down/up
  samplings; decoder levels multiply (not add or concatenate) the upsampled features with the
  encoder's skip features;
* at the bottleneck, the improved dual-path module splits the channels into `num_heads` heads that
  go through stacked (RNN along time, RNN along frequency) pairs, each with a GroupNorm before and a
  residual connection around it;
* a 1x1 convolution gives the target's complex spectrogram directly (no mask); the dropped bins are
  zero-filled and the inverse STFT gives the target waveform.

The released network predicts one source. When `config.source_names` has a second name, that source
is the residual `mixture - target`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_dttnet import DTTNetConfig


@dataclass
class DTTNetSourceSeparationOutput(ModelOutput):
    """Output of [`DTTNetForSourceSeparation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): mean absolute error between
            `audio_values` and `labels` (the released training loss, an L1 on the target waveform),
            returned when `labels` are given.
        audio_values (`torch.FloatTensor` of shape `(batch, num_sources, audio_channels, time)`): the
            target (and, with two `source_names`, the residual `mixture - target`), as long as the
            input.
    """

    loss: torch.FloatTensor | None = None
    audio_values: torch.FloatTensor | None = None


# ---------------------------------------------------------------------------------------------
# Spectral front and back ends
# ---------------------------------------------------------------------------------------------


def dttnet_stft(waveform: torch.Tensor, n_fft: int, hop_length: int, dim_f: int) -> torch.Tensor:
    """Complex spectrogram planes of a batch of chunks.

    `waveform` is `(batch, channels, time)`; returns `(batch, channels * 2, dim_f, frames)` float32
    with the planes ordered `[c0.real, c0.imag, c1.real, c1.imag, ...]` (einops:
    `b c f t ri -> b (c ri) f t`), `frames = 1 + time // hop_length`.
    """
    batch, channels, length = waveform.shape
    window = torch.hann_window(n_fft, periodic=True, device=waveform.device, dtype=torch.float32)
    spec = torch.stft(
        waveform.reshape(batch * channels, length).float(),
        n_fft=n_fft,
        hop_length=hop_length,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    spec = torch.view_as_real(spec[:, :dim_f])  # (b c) f t ri
    frames = spec.shape[2]
    return spec.permute(0, 3, 1, 2).reshape(batch, channels * 2, dim_f, frames)


def dttnet_istft(planes: torch.Tensor, n_fft: int, hop_length: int) -> torch.Tensor:
    """Inverse of `dttnet_stft`: `(batch, channels * 2, dim_f, frames)` -> `(batch, channels, time)`.

    The bins above `dim_f` are zero; `time = hop_length * (frames - 1)`.
    """
    batch, planes_count, dim_f, frames = planes.shape
    channels = planes_count // 2
    n_bins = n_fft // 2 + 1
    planes = F.pad(planes.float(), (0, 0, 0, n_bins - dim_f))
    planes = planes.reshape(batch * channels, 2, n_bins, frames).permute(0, 2, 3, 1).contiguous()
    window = torch.hann_window(n_fft, periodic=True, device=planes.device, dtype=torch.float32)
    waveform = torch.istft(
        torch.view_as_complex(planes), n_fft=n_fft, hop_length=hop_length, window=window, center=True
    )
    return waveform.reshape(batch, channels, -1)


# ---------------------------------------------------------------------------------------------
# TFC-TDF blocks
# ---------------------------------------------------------------------------------------------


class DTTNetConvNormAct(nn.Module):
    """`conv -> BatchNorm2d -> ReLU` on `(batch, channels, time, freq)` feature maps."""

    def __init__(self, conv: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.conv = conv
        self.norm = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(hidden_states)))


class DTTNetTFC(nn.Module):
    """Time-frequency convolutions: `num_layers` x (`k x k` conv, BatchNorm, ReLU), channels kept."""

    def __init__(self, channels: int, num_layers: int, kernel_size: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DTTNetConvNormAct(nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2), channels)
            for _ in range(num_layers)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class DTTNetTDF(nn.Module):
    """Time-distributed fully connected layers across the frequency axis (the last one).

    `f -> f // factor -> f` (each followed by BatchNorm2d over the channels and ReLU), or a single
    `f -> f` layer when `factor` is 0.
    """

    def __init__(self, channels: int, bins: int, factor: int, bias: bool) -> None:
        super().__init__()
        hidden = bins // factor if factor else bins
        self.fc1 = nn.Linear(bins, hidden, bias=bias)
        self.norm1 = nn.BatchNorm2d(channels)
        if factor:
            self.fc2 = nn.Linear(hidden, bins, bias=bias)
            self.norm2 = nn.BatchNorm2d(channels)
        else:
            self.fc2 = None
            self.norm2 = None

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = F.relu(self.norm1(self.fc1(hidden_states)))
        if self.fc2 is not None:
            hidden_states = F.relu(self.norm2(self.fc2(hidden_states)))
        return hidden_states


class DTTNetTFCTDFBlock(nn.Module):
    """TFC-TDF v3 residual block: `TFC -> (+ TDF) -> TFC`, plus a one-convolution shortcut.

    `out = tfc2(h + tdf(h)) + shortcut(x)` with `h = tfc1(x)`, on `(batch, channels, time, bins)`.
    """

    def __init__(self, channels: int, bins: int, config: DTTNetConfig) -> None:
        super().__init__()
        self.tfc1 = DTTNetTFC(channels, config.num_tfc_layers, config.kernel_size)
        self.tdf = DTTNetTDF(channels, bins, config.tdf_bottleneck_factor, config.tdf_bias)
        self.tfc2 = DTTNetTFC(channels, config.num_tfc_layers, config.kernel_size)
        self.shortcut = DTTNetConvNormAct(
            nn.Conv2d(channels, channels, config.kernel_size, padding=config.kernel_size // 2), channels
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(hidden_states)
        hidden_states = self.tfc1(hidden_states)
        hidden_states = hidden_states + self.tdf(hidden_states)
        return self.tfc2(hidden_states) + residual


# ---------------------------------------------------------------------------------------------
# Improved dual-path module
# ---------------------------------------------------------------------------------------------


def split_heads(hidden_states: torch.Tensor, num_heads: int) -> torch.Tensor:
    """`(batch, channels, time, freq)` -> `(batch * heads, freq, time, channels // heads)`.

    einops: `b (h n) t f -> (b h) f t n`: head `h` holds channels `h * n ... (h + 1) * n - 1`.
    """
    batch, channels, time, freq = hidden_states.shape
    hidden_states = hidden_states.reshape(batch * num_heads, channels // num_heads, time, freq)
    return hidden_states.permute(0, 3, 2, 1).contiguous()


def merge_heads(hidden_states: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Inverse of `split_heads`: `(batch * heads, freq, time, n)` -> `(batch, heads * n, time, freq)`."""
    batch_heads, freq, time, head_channels = hidden_states.shape
    hidden_states = hidden_states.permute(0, 3, 2, 1).contiguous()
    return hidden_states.reshape(batch_heads // num_heads, num_heads * head_channels, time, freq)


class DTTNetRNNPath(nn.Module):
    """GroupNorm -> RNN -> Linear along the third axis of `(batch, K, L, features)`, plus a residual.

    The RNN runs over `L` for each of the `batch * K` sequences; the output is transposed to
    `(batch, L, K, features)` so that the next path runs along the other axis.
    """

    def __init__(
        self, features: int, hidden_size: int, groups: int, rnn_type: str, bidirectional: bool
    ) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(groups, features)
        rnn_class = nn.LSTM if rnn_type == "lstm" else nn.GRU
        self.rnn = rnn_class(features, hidden_size, batch_first=True, bidirectional=bidirectional)
        self.proj = nn.Linear(hidden_size * (2 if bidirectional else 1), features)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, outer, length, features = hidden_states.shape
        sequences = hidden_states.reshape(batch * outer, length, features)
        sequences = self.norm(sequences.transpose(1, 2)).transpose(1, 2)
        sequences = self.proj(self.rnn(sequences)[0])
        hidden_states = hidden_states + sequences.reshape(batch, outer, length, features)
        return hidden_states.transpose(1, 2).contiguous()


class DTTNetDualPathLayer(nn.Module):
    """One improved dual-path module: an RNN along time, then one along frequency."""

    def __init__(self, features: int, hidden_size: int, groups: int, config: DTTNetConfig) -> None:
        super().__init__()
        self.time_rnn = DTTNetRNNPath(features, hidden_size, groups, config.rnn_type, config.bidirectional)
        self.freq_rnn = DTTNetRNNPath(features, hidden_size, groups, config.rnn_type, config.bidirectional)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch_heads, freq, time, n)` -> same layout (each path transposes the two middle axes)."""
        return self.freq_rnn(self.time_rnn(hidden_states))


class DTTNetDualPath(nn.Module):
    """Stack of dual-path layers applied to `num_heads` channel groups of the bottleneck features."""

    def __init__(self, config: DTTNetConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        features = config.bottleneck_channels // config.num_heads
        hidden_size = 2 * config.bottleneck_channels // config.num_heads
        groups = max(features // config.norm_group_size, 1)
        self.layers = nn.ModuleList(
            DTTNetDualPathLayer(features, hidden_size, groups, config)
            for _ in range(config.num_dual_path_layers)
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """`(batch, channels, time, freq)` -> same shape."""
        if not self.layers:
            return hidden_states
        hidden_states = split_heads(hidden_states, self.num_heads)
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return merge_heads(hidden_states, self.num_heads)


# ---------------------------------------------------------------------------------------------
# UNet
# ---------------------------------------------------------------------------------------------


class DTTNetUNet(nn.Module):
    """The network proper: complex spectrogram planes of the mixture -> those of the target.

    `(batch, 2 * audio_channels, dim_f, frames)` -> same shape; `frames` and `dim_f` must be divisible
    by `2 ** num_levels`. Inside, feature maps are `(batch, channels, time, freq)`.
    """

    def __init__(self, config: DTTNetConfig) -> None:
        super().__init__()
        planes = 2 * config.audio_channels
        growth = config.growth
        self.input_conv = DTTNetConvNormAct(nn.Conv2d(planes, growth, 1), growth)
        channels, bins = growth, config.dim_f
        self.encoder_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for _ in range(config.num_levels):
            self.encoder_blocks.append(DTTNetTFCTDFBlock(channels, bins, config))
            self.downsamples.append(
                DTTNetConvNormAct(nn.Conv2d(channels, channels + growth, 2, stride=2), channels + growth)
            )
            channels, bins = channels + growth, bins // 2
        self.bottleneck_block = DTTNetTFCTDFBlock(channels, bins, config)
        self.dual_path = DTTNetDualPath(config)
        self.upsamples = nn.ModuleList()
        self.decoder_blocks = nn.ModuleList()
        for _ in range(config.num_levels):
            self.upsamples.append(
                DTTNetConvNormAct(
                    nn.ConvTranspose2d(channels, channels - growth, 2, stride=2), channels - growth
                )
            )
            channels, bins = channels - growth, bins * 2
            self.decoder_blocks.append(DTTNetTFCTDFBlock(channels, bins, config))
        self.output_conv = nn.Conv2d(channels, planes, 1)

    def forward(self, planes: torch.Tensor) -> torch.Tensor:
        hidden_states = self.input_conv(planes).transpose(-1, -2)  # b c f t -> b c t f
        skips = []
        for block, downsample in zip(self.encoder_blocks, self.downsamples, strict=True):
            hidden_states = block(hidden_states)
            skips.append(hidden_states)
            hidden_states = downsample(hidden_states)
        hidden_states = self.dual_path(self.bottleneck_block(hidden_states))
        for upsample, block in zip(self.upsamples, self.decoder_blocks, strict=True):
            hidden_states = upsample(hidden_states) * skips.pop()
            hidden_states = block(hidden_states)
        return self.output_conv(hidden_states.transpose(-1, -2))


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------


# Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet._check_padding_mask
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


# Copied from demixers.modeling.mossformer.modeling_mossformer._LoadReportFilter
class _LoadReportFilter(logging.Filter):
    """Drops transformers' multi-line load report while a strict load is running: a mismatch raises
    one ``ValueError`` instead, and a match has nothing to report."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


class DTTNetPreTrainedModel(PreTrainedModel):
    config_class = DTTNetConfig
    base_model_prefix = "dttnet"
    main_input_name = "input_values"

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

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default initialisation, as the released model trains from."""
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.LSTM, nn.GRU)):
            bound = 1.0 / math.sqrt(module.hidden_size)
            for parameter in module.parameters(recurse=False):
                init.uniform_(parameter, -bound, bound)
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)


class DTTNetForSourceSeparation(DTTNetPreTrainedModel):
    """DTTNet: a mixture in, the target source (and optionally the residual) out.

    Example:

    ```python
    >>> import torch
    >>> config = DTTNetConfig(n_fft=512, hop_length=128, dim_f=128, dim_t=32, overlap_samples=256, growth=16)
    >>> model = DTTNetForSourceSeparation(config).eval()
    >>> model(input_values=torch.randn(1, 2, 44100)).audio_values.shape
    torch.Size([1, 2, 2, 44100])
    ```
    """

    def __init__(self, config: DTTNetConfig) -> None:
        super().__init__(config)
        self.unet = DTTNetUNet(config)
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

    def split_into_chunks(self, mixture: torch.Tensor) -> torch.Tensor:
        """`(batch, channels, time)` -> `(batch * num_chunks, channels, chunk_size)` (einops
        `b c (n s) -> (b n) c s` with `overlap_samples` of context on each side of every chunk).

        Chunk `i` covers samples `i * stride - overlap_samples ... i * stride + stride + overlap_samples`
        of the mixture (zeros outside it), `stride = chunk_size - 2 * overlap_samples`, as the released
        inference; only as many chunks as needed to cover the input are made.
        """
        config = self.config
        batch, channels, length = mixture.shape
        stride, overlap = config.chunk_stride, config.overlap_samples
        num_chunks = -(-length // stride)
        padded = F.pad(mixture, (overlap, num_chunks * stride + overlap - length))
        chunks = padded.unfold(-1, config.chunk_size, stride)  # b c n s
        return chunks.permute(0, 2, 1, 3).reshape(batch * num_chunks, channels, config.chunk_size)

    def merge_chunks(self, chunks: torch.Tensor, batch: int, length: int) -> torch.Tensor:
        """Inverse of `split_into_chunks`: drop each chunk's context and concatenate the rest."""
        config = self.config
        stride, overlap = config.chunk_stride, config.overlap_samples
        num_chunks, channels = chunks.shape[0] // batch, chunks.shape[1]
        kept = chunks[..., overlap : overlap + stride].reshape(batch, num_chunks, channels, stride)
        return kept.permute(0, 2, 1, 3).reshape(batch, channels, num_chunks * stride)[..., :length]

    def separate_target(self, mixture: torch.Tensor) -> torch.Tensor:
        """`(batch, channels, time)` float32 mixture -> `(batch, channels, time)` float32 target."""
        config = self.config
        batch, _, length = mixture.shape
        chunks = self.split_into_chunks(mixture)
        planes = dttnet_stft(chunks, config.n_fft, config.hop_length, config.dim_f)
        dtype = self.unet.output_conv.weight.dtype
        estimate = self.unet(planes.to(dtype))
        waveform = dttnet_istft(estimate.float(), config.n_fft, config.hop_length)
        return self.merge_chunks(waveform, batch, length)

    def forward(
        self,
        input_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> DTTNetSourceSeparationOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, audio_channels, time)`): mixtures at
                `config.sampling_rate`, any length.
            labels (`torch.FloatTensor` of shape `(batch, num_sources, audio_channels, time)`, *optional*):
                reference sources in the order of `config.source_names`; gives the L1 `loss`.
            padding_mask (`torch.Tensor` of shape `(batch, time)`, *optional*): 1 on real samples, 0 on
                padding. Items with padding are separated at their own length, their padded tail is
                zero in the output, and the loss is the mean of the items' own losses.
            return_dict (`bool`, *optional*): return a tuple instead of a `ModelOutput` when False.
        """
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        input_values = self._check_input_values(input_values)
        batch, channels, length = input_values.shape
        lengths = _check_padding_mask(padding_mask, batch, length)
        if lengths is not None:
            expected = (batch, self.config.num_sources, channels, length)
            if labels is not None and tuple(labels.shape) != expected:
                raise ValueError(
                    f"labels must be (batch, num_sources, audio_channels, time) = {expected}, "
                    f"got {tuple(labels.shape)}"
                )
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
            return DTTNetSourceSeparationOutput(loss=loss, audio_values=audio_values)
        mixture = input_values.float()
        target = self.separate_target(mixture)
        sources = [target]
        if self.config.num_sources == 2:
            sources.append(mixture - target)
        audio_values = torch.stack(sources, dim=1).to(input_values.dtype)

        loss = None
        if labels is not None:
            if tuple(labels.shape) != tuple(audio_values.shape):
                raise ValueError(
                    "labels must be (batch, num_sources, audio_channels, time) = "
                    f"{tuple(audio_values.shape)}, got {tuple(labels.shape)}"
                )
            loss = F.l1_loss(audio_values.float(), labels.to(audio_values.device).float())

        if not return_dict:
            return (loss, audio_values) if loss is not None else (audio_values,)
        return DTTNetSourceSeparationOutput(loss=loss, audio_values=audio_values)


__all__ = [
    "DTTNetForSourceSeparation",
    "DTTNetPreTrainedModel",
    "DTTNetSourceSeparationOutput",
    "dttnet_istft",
    "dttnet_stft",
    "merge_heads",
    "split_heads",
]
