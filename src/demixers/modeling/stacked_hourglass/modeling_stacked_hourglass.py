"""PyTorch stacked hourglass network for music source separation (Park et al., ISMIR 2018).

The stacked hourglass network of Newell et al. (pose estimation), applied to magnitude spectrograms
as images, predicts one mask per source:

* every mixture channel is transformed with a centred STFT; the lowest `num_bins` bins of its
  magnitude, divided by their maximum, are a one-channel image `(bins, frames)` (zero-padded to
  multiples of `2 ** hourglass_depth`);
* a stem of convolutions (7x7, then 3x3; ReLU after each) lifts it to `num_features` channels at
  full resolution (no pooling, so masks have the input's size);
* `num_stacks` hourglasses follow. An hourglass is recursive: an upper branch (3x3 conv) at the
  current resolution plus a lower branch (2x2 max pooling, 3x3 conv, the next hourglass level or a
  3x3 conv at the bottom, 3x3 conv, nearest-neighbour upsampling); the two are added. All
  convolutions are followed by ReLU (no normalisation layers, as in the release);
* after each hourglass, a 3x3 and a 1x1 convolution (ReLU) and a linear 1x1 convolution give the
  stack's masks; the next stack's input is the previous one plus 1x1 projections of the features
  and of the masks;
* training minimises, for every stack, the mean absolute error between the target magnitudes and
  the mixture magnitude times that stack's masks, summed over stacks (intermediate supervision);
* at inference the last stack's masks, clipped at zero, multiply the mixture magnitude, and the
  mixture phase gives the complex spectrograms that the inverse STFT turns into waveforms.
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

from .configuration_stacked_hourglass import StackedHourglassConfig

NORMALIZATION_FLOOR = 1e-8


@dataclass
class StackedHourglassSourceSeparationOutput(ModelOutput):
    """Output of [`StackedHourglassForSourceSeparation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): sum over the stacks of the mean absolute
            error between the (normalised) target magnitudes and the mixture magnitude times the
            stack's masks, returned when `labels` are given.
        audio_values (`torch.FloatTensor` of shape `(batch, num_sources, audio_channels, time)`): the
            separated sources (last stack's masks, mixture phase), as long as the input.
        masks (`tuple(torch.FloatTensor)`, *optional*): with `output_masks=True`, the raw (unclipped)
            masks of every stack, each `(batch, num_sources, audio_channels, num_bins, frames)`.
    """

    loss: torch.FloatTensor | None = None
    audio_values: torch.FloatTensor | None = None
    masks: tuple[torch.FloatTensor, ...] | None = None


class StackedHourglassConv(nn.Module):
    """`k x k` convolution with 'same' padding, optionally followed by ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.relu = relu

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.conv(hidden_states)
        return F.relu(hidden_states) if self.relu else hidden_states


class StackedHourglassModule(nn.Module):
    """One hourglass level (recursive): `(batch, features, H, W) -> (batch, features, H, W)`.

    `H` and `W` must be divisible by `2 ** depth`. The lower branch works on `features + growth`
    channels at half resolution and holds the next level (`depth - 1`), or a single convolution when
    `depth` is 1.
    """

    def __init__(self, depth: int, features: int, growth: int) -> None:
        super().__init__()
        inner_features = features + growth
        self.depth = depth
        self.upper = StackedHourglassConv(features, features, 3)
        self.lower_in = StackedHourglassConv(features, inner_features, 3)
        if depth > 1:
            self.inner = StackedHourglassModule(depth - 1, inner_features, growth)
        else:
            self.inner = StackedHourglassConv(inner_features, inner_features, 3)
        self.lower_out = StackedHourglassConv(inner_features, features, 3)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        upper = self.upper(hidden_states)
        lower = self.lower_in(F.max_pool2d(hidden_states, 2))
        lower = self.lower_out(self.inner(lower))
        return upper + F.interpolate(lower, scale_factor=2.0, mode="nearest")


class StackedHourglassStem(nn.Module):
    """7x7 conv, three 3x3 convs and a 3x3 projection to `num_features`, all with ReLU, stride 1."""

    def __init__(self, config: StackedHourglassConfig) -> None:
        super().__init__()
        first, second = config.stem_channels
        self.layers = nn.ModuleList(
            [
                StackedHourglassConv(1, first, 7),
                StackedHourglassConv(first, second, 3),
                StackedHourglassConv(second, second, 3),
                StackedHourglassConv(second, second, 3),
                StackedHourglassConv(second, config.num_features, 3),
            ]
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            hidden_states = layer(hidden_states)
        return hidden_states


class StackedHourglassHead(nn.Module):
    """Features of one hourglass -> (features for the next stack, masks `(batch, sources, H, W)`)."""

    def __init__(self, config: StackedHourglassConfig) -> None:
        super().__init__()
        features = config.num_features
        self.conv = StackedHourglassConv(features, features, 3)
        self.proj = StackedHourglassConv(features, features, 1)
        self.mask = StackedHourglassConv(features, config.num_sources, 1, relu=False)

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_states = self.proj(self.conv(hidden_states))
        return hidden_states, self.mask(hidden_states)


class StackedHourglassMerge(nn.Module):
    """Residual link to the next stack: `x + conv1x1(features) + conv1x1(masks)` (no ReLU)."""

    def __init__(self, config: StackedHourglassConfig) -> None:
        super().__init__()
        self.feature_proj = StackedHourglassConv(config.num_features, config.num_features, 1, relu=False)
        self.mask_proj = StackedHourglassConv(config.num_sources, config.num_features, 1, relu=False)

    def forward(self, inputs: torch.Tensor, features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        return inputs + self.feature_proj(features) + self.mask_proj(masks)


class StackedHourglassNetwork(nn.Module):
    """Normalised magnitudes `(batch, 1, bins, frames)` -> masks of every stack, each
    `(batch, num_sources, bins, frames)`; sizes not divisible by `2 ** hourglass_depth` are
    zero-padded (bottom/right) and the masks trimmed back."""

    def __init__(self, config: StackedHourglassConfig) -> None:
        super().__init__()
        self.size_multiple = config.size_multiple
        self.stem = StackedHourglassStem(config)
        self.hourglasses = nn.ModuleList(
            StackedHourglassModule(config.hourglass_depth, config.num_features, config.feature_growth)
            for _ in range(config.num_stacks)
        )
        self.heads = nn.ModuleList(StackedHourglassHead(config) for _ in range(config.num_stacks))
        self.merges = nn.ModuleList(StackedHourglassMerge(config) for _ in range(config.num_stacks - 1))

    def forward(self, magnitudes: torch.Tensor) -> list[torch.Tensor]:
        bins, frames = magnitudes.shape[-2:]
        multiple = self.size_multiple
        pad_bins, pad_frames = (-bins) % multiple, (-frames) % multiple
        hidden_states = self.stem(F.pad(magnitudes, (0, pad_frames, 0, pad_bins)))
        masks = []
        for index, (hourglass, head) in enumerate(zip(self.hourglasses, self.heads, strict=True)):
            features, stack_masks = head(hourglass(hidden_states))
            masks.append(stack_masks[..., :bins, :frames])
            if index < len(self.merges):
                hidden_states = self.merges[index](hidden_states, features, stack_masks)
        return masks


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


class StackedHourglassPreTrainedModel(PreTrainedModel):
    config_class = StackedHourglassConfig
    base_model_prefix = "stacked_hourglass"
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
        """The release's initialisation: normal weights with std `1 / sqrt(fan_in)`, zero biases."""
        if isinstance(module, nn.Conv2d):
            fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
            init.normal_(module.weight, mean=0.0, std=1.0 / math.sqrt(fan_in))
            if module.bias is not None:
                init.zeros_(module.bias)


class StackedHourglassForSourceSeparation(StackedHourglassPreTrainedModel):
    """Stacked hourglass masking network: a mixture in, one waveform per source out.

    Example:

    ```python
    >>> import torch
    >>> config = StackedHourglassConfig(num_stacks=2, hourglass_depth=2, num_features=16)
    >>> model = StackedHourglassForSourceSeparation(config).eval()
    >>> model(input_values=torch.randn(1, 1, 8000)).audio_values.shape
    torch.Size([1, 2, 1, 8000])
    ```
    """

    def __init__(self, config: StackedHourglassConfig) -> None:
        super().__init__(config)
        self.network = StackedHourglassNetwork(config)
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

    def _stft(self, waveforms: torch.Tensor) -> torch.Tensor:
        """`(n, time)` -> complex `(n, n_fft // 2 + 1, frames)` (float32 computation)."""
        config = self.config
        window = torch.hann_window(config.n_fft, periodic=True, device=waveforms.device, dtype=torch.float32)
        return torch.stft(
            waveforms.float(),
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            window=window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )

    def _istft(self, spectrograms: torch.Tensor, length: int) -> torch.Tensor:
        """Complex `(n, num_bins, frames)` (missing top bins are zero) -> `(n, length)`."""
        config = self.config
        spectrograms = F.pad(spectrograms, (0, 0, 0, config.n_fft // 2 + 1 - config.num_bins))
        window = torch.hann_window(
            config.n_fft, periodic=True, device=spectrograms.device, dtype=torch.float32
        )
        return torch.istft(
            spectrograms,
            n_fft=config.n_fft,
            hop_length=config.hop_length,
            window=window,
            center=True,
            length=length,
        )

    def forward(
        self,
        input_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        output_masks: bool = False,
    ) -> StackedHourglassSourceSeparationOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, audio_channels, time)`): mixtures at
                `config.sampling_rate` (`(batch, time)` is accepted for mono models), any length.
            labels (`torch.FloatTensor` of shape `(batch, num_sources, audio_channels, time)`, *optional*):
                reference sources in the order of `config.source_names`; gives the stacked mask `loss`.
            padding_mask (`torch.Tensor` of shape `(batch, time)`, *optional*): 1 on real samples, 0 on
                padding. Items with padding are separated at their own length, their padded tail is
                zero in the output, and the loss is the mean of the items' own losses.
            return_dict (`bool`, *optional*): return a tuple instead of a `ModelOutput` when False.
            output_masks (`bool`, defaults to False): also return every stack's raw masks (not with a
                padding mask that pads some item: the items' masks then differ in size).
        """
        config = self.config
        return_dict = return_dict if return_dict is not None else config.use_return_dict
        input_values = self._check_input_values(input_values)
        batch, channels, length = input_values.shape
        sources = config.num_sources
        lengths = _check_padding_mask(padding_mask, batch, length)
        if lengths is not None:
            if output_masks:
                raise ValueError("output_masks=True cannot be combined with a padding_mask that pads an item")
            expected = (batch, sources, channels, length)
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
            return StackedHourglassSourceSeparationOutput(loss=loss, audio_values=audio_values)

        # einops: b c t -> (b c) t; each channel is a separate mono spectrogram
        spectrogram = self._stft(input_values.reshape(batch * channels, length))[:, : config.num_bins]
        magnitude = spectrogram.abs()  # (b c) f t
        if config.normalize_magnitude:
            scale = magnitude.amax(dim=(1, 2), keepdim=True).clamp_min(NORMALIZATION_FLOOR)
        else:
            scale = torch.ones_like(magnitude[:, :1, :1])
        normalized = magnitude / scale
        dtype = self.network.stem.layers[0].conv.weight.dtype
        stack_masks = [
            mask.float() for mask in self.network(normalized[:, None].to(dtype))
        ]  # (b c) s f t each

        # last stack: masks clipped at zero times the mixture magnitude, with the mixture phase
        separated = stack_masks[-1].clamp_min(0.0) * spectrogram[:, None]
        waveforms = self._istft(separated.reshape(batch * channels * sources, *separated.shape[-2:]), length)
        # einops: (b c s) t -> b s c t
        audio_values = (
            waveforms.reshape(batch, channels, sources, length).transpose(1, 2).to(input_values.dtype)
        )

        loss = None
        if labels is not None:
            if tuple(labels.shape) != tuple(audio_values.shape):
                raise ValueError(
                    "labels must be (batch, num_sources, audio_channels, time) = "
                    f"{tuple(audio_values.shape)}, got {tuple(labels.shape)}"
                )
            references = labels.to(input_values.device).float().transpose(1, 2).reshape(-1, length)
            target = self._stft(references)[:, : config.num_bins].abs()
            target = target.reshape(batch * channels, sources, *target.shape[-2:]) / scale[:, None]
            loss = sum((target - normalized[:, None] * mask).abs().mean() for mask in stack_masks)

        masks = None
        if output_masks:
            masks = tuple(
                mask.reshape(batch, channels, sources, *mask.shape[-2:]).transpose(1, 2)
                for mask in stack_masks
            )
        if not return_dict:
            return tuple(value for value in (loss, audio_values, masks) if value is not None)
        return StackedHourglassSourceSeparationOutput(loss=loss, audio_values=audio_values, masks=masks)


__all__ = [
    "StackedHourglassForSourceSeparation",
    "StackedHourglassModule",
    "StackedHourglassPreTrainedModel",
    "StackedHourglassSourceSeparationOutput",
]
