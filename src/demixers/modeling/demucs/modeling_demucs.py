"""Demucs models as ``PreTrainedModel``s: waveform Demucs (v2/v3), Hybrid Demucs (v3), Hybrid
Transformer Demucs (v4) and bags of them.

Every model maps ``input_values`` ``(batch, channels, time)`` to ``audio_values``
``(batch, sources, channels, time)`` of the same length, in ``config.source_names`` order.

Normalisation: the models standardise their input exactly where the original models do (HDemucs
and HTDemucs always, per branch; Demucs only with ``config.normalize``). The original separation
entry point additionally standardises the whole track by the mean/std of its mono mix before
chunking and undoes it afterwards; here the ``audio-source-separation`` pipeline does that (and
apply_model's chunking, per the configs' chunking policy), not ``forward``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import julius
import torch
from torch import nn
from torch.nn import functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_demucs import (
    DemucsBagConfig,
    DemucsConfig,
    HDemucsConfig,
    HTDemucsConfig,
    member_config_from_dict,
)
from .layers_demucs import (
    BLSTM,
    DConv,
    FrequencyEmbedding,
    HDecLayer,
    HEncLayer,
    center_trim,
    fresh_parameters,
    inverse_spectrogram,
    mark_rescaled_convolutions,
    pad1d,
    spectrogram,
)
from .transformer_demucs import CrossDomainTransformer


@dataclass
class DemucsSourceSeparationOutput(ModelOutput):
    """Output of every Demucs model.

    Args:
        loss (`torch.FloatTensor`, *optional*): L1 distance between ``audio_values`` and ``labels``
            (mean over every sample), returned when ``labels`` are given.
        audio_values (`torch.FloatTensor` of shape `(batch, num_sources, channels, time)`): the
            separated sources, same length as the input.
    """

    loss: torch.FloatTensor | None = None
    audio_values: torch.FloatTensor | None = None


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


class DemucsPreTrainedModel(PreTrainedModel):
    """Input checks, loss and weight initialisation shared by the Demucs family."""

    main_input_name = "input_values"
    base_model_prefix = "demucs"
    supports_gradient_checkpointing = False
    _no_split_modules: ClassVar[list[str]] = [
        "HEncLayer",
        "HDecLayer",
        "DConv",
        "SelfAttentionLayer",
        "CrossAttentionLayer",
    ]

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
        values = fresh_parameters(module)
        if not values:
            return
        for name, value in values.items():
            init.copy_(getattr(module, name), value)

    def _check_input(self, input_values: torch.Tensor) -> torch.Tensor:
        channels = self.config.audio_channels
        if not isinstance(input_values, torch.Tensor):
            raise TypeError(f"input_values must be a torch.Tensor, got {type(input_values).__name__}")
        if input_values.dim() != 3:
            raise ValueError(
                f"input_values must be (batch, {channels}, time), got shape {tuple(input_values.shape)}"
            )
        if input_values.shape[1] != channels:
            raise ValueError(
                f"input_values has {input_values.shape[1]} channels but the model expects {channels} "
                "(convert mono/stereo before calling the model; the pipeline does it)"
            )
        if input_values.shape[-1] == 0 or input_values.shape[0] == 0:
            raise ValueError(f"input_values is empty: shape {tuple(input_values.shape)}")
        if not input_values.is_floating_point():
            raise TypeError(f"input_values must be a floating-point tensor, got {input_values.dtype}")
        if not torch.isfinite(input_values).all():
            raise ValueError("input_values contains NaN or Inf samples")
        return input_values

    def _loss(self, audio_values: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        if labels is None:
            return None
        if labels.shape != audio_values.shape:
            raise ValueError(
                f"labels must have shape (batch, sources, channels, time) = {tuple(audio_values.shape)}, "
                f"got {tuple(labels.shape)}"
            )
        return F.l1_loss(audio_values, labels.to(audio_values.dtype))

    def valid_length(self, length: int) -> int:
        """Length the model is best evaluated on for ``length`` input samples (see subclasses)."""
        return length

    def forward(
        self,
        input_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> DemucsSourceSeparationOutput | tuple[torch.Tensor, ...]:
        r"""
        Args:
            input_values (`torch.FloatTensor` of shape `(batch, channels, time)`): the mixture.
            labels (`torch.FloatTensor` of shape `(batch, sources, channels, time)`, *optional*):
                reference sources for the L1 loss.
            padding_mask (`torch.Tensor` of shape `(batch, time)`, *optional*): 1 on real samples, 0 on
                padding. Items with padding are separated at their own length, their padded tail is
                zero in the output, and the loss is the mean of the items' own losses (padding never
                counts).
            return_dict (`bool`, *optional*): return a tuple instead of a `ModelOutput` when False.
        """
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        mix = self._check_input(input_values)
        batch, channels, length = mix.shape
        lengths = _check_padding_mask(padding_mask, batch, length)
        if labels is not None:
            self._check_labels(labels, (batch, len(self.config.source_names), channels, length))
        if lengths is None:
            audio_values = self._separate(mix)
            loss = self._loss(audio_values, labels)
        else:
            audio_values = mix.new_zeros(batch, len(self.config.source_names), channels, length)
            losses = []
            for index, item_length in enumerate(lengths.tolist()):
                item = self._separate(mix[index : index + 1, :, :item_length])
                audio_values[index, ..., :item_length] = item[0]
                if labels is not None:
                    losses.append(self._loss(item, labels[index : index + 1, ..., :item_length]))
            loss = torch.stack(losses).mean() if losses else None
        if not return_dict:
            return (loss, audio_values) if loss is not None else (audio_values,)
        return DemucsSourceSeparationOutput(loss=loss, audio_values=audio_values)

    @staticmethod
    def _check_labels(labels: torch.Tensor, expected: tuple[int, ...]) -> None:
        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        if tuple(labels.shape) != expected:
            raise ValueError(
                f"labels must have shape (batch, sources, channels, time) = {expected}, "
                f"got {tuple(labels.shape)}"
            )
        if not labels.is_floating_point():
            raise TypeError(f"labels must be a floating-point tensor, got {labels.dtype}")

    def _separate(self, mix: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


# -- waveform Demucs -------------------------------------------------------------------------


class DemucsForSourceSeparation(DemucsPreTrainedModel):
    """Waveform U-Net Demucs (v2 release; v3 waveform models with DConv branches and norms)."""

    config_class = DemucsConfig

    def __init__(self, config: DemucsConfig) -> None:
        super().__init__(config)
        sources = len(config.source_names)
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        in_channels = config.audio_channels
        channels = config.channels
        rewrite_scale = 2 if config.glu else 1
        for index in range(config.depth):
            use_norm = index >= config.norm_starts

            def norm(width: int, use_norm: bool = use_norm) -> nn.Module:
                return nn.GroupNorm(config.norm_groups, width) if use_norm else nn.Identity()

            def dconv(width: int, index: int = index) -> DConv:
                return DConv(
                    width,
                    depth=config.dconv_depth,
                    init=config.dconv_init,
                    compress=config.dconv_comp,
                    attn=index >= config.dconv_attn,
                    lstm=index >= config.dconv_lstm,
                )

            act = nn.GELU() if config.gelu else nn.ReLU()
            rewrite_act = nn.GLU(dim=1) if config.glu else nn.ReLU()
            encode: list[nn.Module] = [
                nn.Conv1d(in_channels, channels, config.kernel_size, config.stride),
                norm(channels),
                act,
            ]
            if config.dconv_mode & 1:
                encode.append(dconv(channels))
            if config.rewrite:
                encode += [
                    nn.Conv1d(channels, rewrite_scale * channels, 1),
                    norm(rewrite_scale * channels),
                    rewrite_act,
                ]
            self.encoder.append(nn.Sequential(*encode))

            out_channels = in_channels if index > 0 else sources * config.audio_channels
            decode: list[nn.Module] = []
            if config.rewrite:
                decode += [
                    nn.Conv1d(
                        channels, rewrite_scale * channels, 2 * config.context + 1, padding=config.context
                    ),
                    norm(rewrite_scale * channels),
                    nn.GLU(dim=1) if config.glu else nn.ReLU(),
                ]
            if config.dconv_mode & 2:
                decode.append(dconv(channels))
            decode.append(nn.ConvTranspose1d(channels, out_channels, config.kernel_size, config.stride))
            if index > 0:
                decode += [norm(out_channels), nn.GELU() if config.gelu else nn.ReLU()]
            self.decoder.insert(0, nn.Sequential(*decode))
            in_channels = channels
            channels = int(config.growth * channels)
        self.lstm = BLSTM(in_channels, config.lstm_layers) if config.lstm_layers else None
        mark_rescaled_convolutions(self, config.rescale)
        self.post_init()

    def valid_length(self, length: int) -> int:
        """Smallest length >= ``length`` that the strided convolutions consume without remainder."""
        config = self.config
        if config.resample:
            length *= 2
        for _ in range(config.depth):
            length = max(1, math.ceil((length - config.kernel_size) / config.stride) + 1)
        for _ in range(config.depth):
            length = (length - 1) * config.stride + config.kernel_size
        if config.resample:
            length = math.ceil(length / 2)
        return int(length)

    def _separate(self, mix: torch.Tensor) -> torch.Tensor:
        config = self.config
        batch, _, length = mix.shape
        x = mix
        if config.normalize:
            mono = mix.mean(dim=1, keepdim=True)
            mean = mono.mean(dim=-1, keepdim=True)
            std = mono.std(dim=-1, keepdim=True)
            x = (x - mean) / (1e-5 + std)
        excess = self.valid_length(length) - length
        x = F.pad(x, (excess // 2, excess - excess // 2))
        if config.resample:
            x = julius.resample_frac(x, 1, 2)
        skips = []
        for encode in self.encoder:
            x = encode(x)
            skips.append(x)
        if self.lstm is not None:
            x = self.lstm(x)
        for decode in self.decoder:
            x = decode(x + center_trim(skips.pop(), x.shape[-1]))
        if config.resample:
            x = julius.resample_frac(x, 2, 1)
        if config.normalize:
            x = x * std + mean
        x = center_trim(x, length)
        return x.reshape(batch, len(config.source_names), config.audio_channels, length)


# -- hybrid models ----------------------------------------------------------------------------


class _HybridDemucsBase(DemucsPreTrainedModel):
    """Spectral U-Net (+ parallel waveform U-Net) shared by HDemucs and HTDemucs.

    The spectral branch works on the complex STFT with real and imaginary parts as channels
    (``cac``). Its first layers convolve over frequencies until a single bin is left; from then on
    layers convolve over time, and in hybrid models the waveform branch merges into it there.
    """

    _local_branches = False  # DConv with local attention / BiLSTM in deep layers (HDemucs only)
    _hybrid = True

    def _build_layers(self, config) -> None:
        hybrid = self._hybrid
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        if hybrid:
            self.tencoder = nn.ModuleList()
            self.tdecoder = nn.ModuleList()
        chin = config.audio_channels
        chin_z = chin * 2  # complex as channels
        chout = config.channels_time or config.channels
        chout_z = config.channels
        freqs = config.nfft // 2
        self.freq_emb = None
        for index in range(config.depth):
            freq = freqs > 1
            kernel, stride = config.kernel_size, config.stride
            if not freq:
                kernel, stride = config.time_stride * 2, config.time_stride
            pad = True
            last_freq = False
            if freq and freqs <= config.kernel_size:
                kernel, pad, last_freq = freqs, False, True
            dconv_kw = {
                "depth": config.dconv_depth,
                "compress": config.dconv_comp,
                "init": config.dconv_init,
                "gelu": True,
            }
            if self._local_branches:
                dconv_kw.update(lstm=index >= config.dconv_lstm, attn=index >= config.dconv_attn)
            common = {
                "norm": index >= config.norm_starts,
                "rewrite": config.rewrite,
                "norm_groups": config.norm_groups,
                "dconv_kw": dconv_kw,
            }
            spectral = dict(common, kernel_size=kernel, stride=stride, freq=freq, pad=pad)
            temporal = dict(
                common, kernel_size=config.kernel_size, stride=config.stride, freq=False, pad=True
            )
            if last_freq:
                chout_z = max(chout, chout_z)
                chout = chout_z
            self.encoder.append(
                HEncLayer(
                    chin_z, chout_z, dconv=bool(config.dconv_mode & 1), context=config.context_enc, **spectral
                )
            )
            if hybrid and freq:
                self.tencoder.append(
                    HEncLayer(
                        chin,
                        chout,
                        dconv=bool(config.dconv_mode & 1),
                        context=config.context_enc,
                        empty=last_freq,
                        **temporal,
                    )
                )
            if index == 0:
                chin = config.audio_channels * len(config.source_names)
                chin_z = chin * 2
            self.decoder.insert(
                0,
                HDecLayer(
                    chout_z,
                    chin_z,
                    dconv=bool(config.dconv_mode & 2),
                    last=index == 0,
                    context=config.context,
                    **spectral,
                ),
            )
            if hybrid and freq:
                self.tdecoder.insert(
                    0,
                    HDecLayer(
                        chout,
                        chin,
                        dconv=bool(config.dconv_mode & 2),
                        empty=last_freq,
                        last=index == 0,
                        context=config.context,
                        **temporal,
                    ),
                )
            chin, chin_z = chout, chout_z
            chout, chout_z = int(config.growth * chout), int(config.growth * chout_z)
            if freq:
                freqs = 1 if freqs <= config.kernel_size else freqs // config.stride
            if index == 0 and config.freq_emb:
                self.freq_emb = FrequencyEmbedding(
                    freqs, chin_z, smooth=config.emb_smooth, scale=config.emb_scale
                )
                self.freq_emb_scale = config.freq_emb
        mark_rescaled_convolutions(self, config.rescale)

    @property
    def _hop_length(self) -> int:
        return self.config.nfft // 4

    @property
    def _hybrid_old(self) -> bool:
        return bool(getattr(self.config, "hybrid_old", False))

    def _spec(self, x: torch.Tensor) -> torch.Tensor:
        hop = self._hop_length
        if not self._hybrid:
            return spectrogram(x, self.config.nfft, hop)[..., :-1, :]
        # pad so that the number of frames is exactly ceil(length / hop)
        frames = math.ceil(x.shape[-1] / hop)
        pad = hop // 2 * 3
        mode = "constant" if self._hybrid_old else "reflect"
        x = pad1d(x, (pad, pad + frames * hop - x.shape[-1]), mode=mode)
        z = spectrogram(x, self.config.nfft, hop)[..., :-1, :]
        return z[..., 2 : 2 + frames]

    def _ispec(self, z: torch.Tensor, length: int) -> torch.Tensor:
        z = F.pad(z, (0, 0, 0, 1))
        if self._hybrid:
            z = F.pad(z, (2, 2))
        return self._ispec_padded(z, length)

    def _ispec_padded(self, z: torch.Tensor, length: int) -> torch.Tensor:
        """`_ispec` of a spectrum already padded with the Nyquist bin (and, hybrid, 2 frames per side)."""
        hop = self._hop_length
        if not self._hybrid:
            return inverse_spectrogram(z, hop, length)
        if self._hybrid_old:
            return inverse_spectrogram(z, hop, hop * math.ceil(length / hop))[..., :length]
        pad = hop // 2 * 3
        x = inverse_spectrogram(z, hop, hop * math.ceil(length / hop) + 2 * pad)
        return x[..., pad : pad + length]

    def _output_spectrum(
        self, x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, sources: int
    ) -> torch.Tensor:
        """The de-normalised complex output spectrum, padded as `_ispec_padded` expects (inference).

        ``x`` ``(B, S * C * 2, F, T)`` -> complex ``(B, S, C, F + 1, T [+ 4])``. One pass writes
        ``x * std + mean`` into a buffer whose memory is ``(..., frames, bins)``: the layout the
        inverse FFT reads, so ``istft`` needs no transposed copy either. The pass runs on complex
        values (``x`` is channels-last: ``(B, F, T, S * C, re/im)`` in memory, a view), so that each
        element moved is a whole complex number.
        """
        batch, _, bins, frames = x.shape
        margin = 2 if self._hybrid else 0
        pairs = x.permute(0, 2, 3, 1).reshape(batch, bins, frames, -1, 2)  # (B, F, T, S * C, 2)
        odd = pairs.storage_offset() % 2 or any(step % 2 for step in pairs.stride()[:-1])
        if odd or pairs.stride(-1) != 1:
            pairs = pairs.contiguous()  # x was not channels-last
        spectrum = torch.view_as_complex(pairs)
        width = spectrum.shape[-1]
        buffer = spectrum.new_empty(batch, width, frames + 2 * margin, bins + 1)
        buffer[..., bins] = 0
        if margin:
            buffer[:, :, :margin] = 0
            buffer[:, :, -margin:] = 0
        target = buffer[:, :, margin : margin + frames, :bins].permute(0, 3, 2, 1)  # (B, F, T, S * C)
        # x * std + mean on both parts: complex (re + i im) * (std + 0i) + (mean + i mean)
        shift = torch.complex(mean, mean).view(batch, 1, 1, 1)
        scale = torch.complex(std, torch.zeros_like(std)).view(batch, 1, 1, 1)
        torch.addcmul(shift, spectrum, scale, out=target)
        return buffer.view(batch, sources, -1, frames + 2 * margin, bins + 1).transpose(-1, -2)

    def _bottleneck(
        self, x: torch.Tensor, xt: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        raise NotImplementedError

    def _run(self, mix: torch.Tensor) -> torch.Tensor:
        """Run both branches on ``mix`` ``(batch, channels, length)``.

        Returns ``(batch, sources, channels, length)``.
        """
        length = mix.shape[-1]
        x = self._spectral_features(mix)
        batch, _, bins, frames = x.shape
        x, xt, (mean, std), (mean_t, std_t) = self._run_branches(x, mix)
        sources = len(self.config.source_names)
        if torch.is_grad_enabled():
            x = x.reshape(batch, sources, -1, bins, frames) * std[:, None] + mean[:, None]
            spec = x.view(batch, sources, -1, 2, bins, frames).permute(0, 1, 2, 4, 5, 3)
            out = self._ispec(torch.view_as_complex(spec.contiguous()), length)
        else:
            out = self._ispec_padded(self._output_spectrum(x, mean, std, sources), length)
        if self._hybrid:
            out = xt.view(batch, sources, -1, length) * std_t[:, None] + mean_t[:, None] + out
        return out

    def _spectral_features(self, mix: torch.Tensor) -> torch.Tensor:
        """The spectral branch's input: ``(B, C, L)`` -> real ``(B, 2C, F, T)`` ([re, im] per channel).

        Complex numbers stay out of `_run_branches`, so that it exports to ONNX (no complex type).
        """
        z = self._spec(mix)
        batch, channels, bins, frames = z.shape
        # complex as channels: (B, C, F, T) complex -> (B, 2C, F, T) as [re, im] per channel
        return torch.view_as_real(z).permute(0, 1, 4, 2, 3).reshape(batch, channels * 2, bins, frames)

    def _run_branches(
        self, x: torch.Tensor, mix: torch.Tensor
    ) -> tuple[
        torch.Tensor,
        torch.Tensor | None,
        tuple[torch.Tensor, torch.Tensor],
        tuple[torch.Tensor | None, torch.Tensor | None],
    ]:
        """Both U-Nets on the spectral features ``x`` (`_spectral_features`) and the waveform ``mix``.

        Returns the normalised spectral output ``(B, S * C * 2, F, T)``, the normalised waveform
        output ``(B, S * C, L)`` (None for non-hybrid models), and the ``(mean, std)`` of each
        input that undo the normalisation.
        """
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) / (1e-5 + std)
        # The spectral branch runs channels-last ((B, F, T, C) in memory): faster convolutions, and
        # the per-bin DConv branches see every bin without a transposed copy.
        x = x.contiguous(memory_format=torch.channels_last)
        xt = mean_t = std_t = None
        if self._hybrid:
            mean_t = mix.mean(dim=(1, 2), keepdim=True)
            std_t = mix.std(dim=(1, 2), keepdim=True)
            xt = (mix - mean_t) / (1e-5 + std_t)

        skips, skips_t, lengths, lengths_t = [], [], [], []
        for index, encode in enumerate(self.encoder):
            lengths.append(x.shape[-1])
            inject = None
            if self._hybrid and index < len(self.tencoder):
                lengths_t.append(xt.shape[-1])
                tencode = self.tencoder[index]
                xt = tencode(xt)
                if tencode.empty:
                    inject = xt  # the branches merge here
                else:
                    skips_t.append(xt)
            x = encode(x, inject)
            if index == 0 and self.freq_emb is not None:
                bins_index = torch.arange(x.shape[-2], device=x.device)
                embedding = self.freq_emb(bins_index).t()[None, :, :, None].expand_as(x)
                x = x + self.freq_emb_scale * embedding
            skips.append(x)

        x, xt = self._bottleneck(x, xt)

        offset = len(self.decoder) - (len(self.tdecoder) if self._hybrid else 0)
        for index, decode in enumerate(self.decoder):
            x, pre = decode(x, skips.pop(), lengths.pop())
            if self._hybrid and index >= offset:
                tdecode = self.tdecoder[index - offset]
                length_t = lengths_t.pop()
                if tdecode.empty:
                    xt, _ = tdecode(pre[:, :, 0], None, length_t)  # the branches split here
                else:
                    xt, _ = tdecode(xt, skips_t.pop(), length_t)
        return x, xt, (mean, std), (mean_t, std_t)


class HDemucsForSourceSeparation(_HybridDemucsBase):
    """Hybrid Demucs (v3): spectral and waveform U-Nets merged in their deepest layers."""

    config_class = HDemucsConfig
    _local_branches = True

    def __init__(self, config: HDemucsConfig) -> None:
        super().__init__(config)
        self._hybrid = config.hybrid
        self._build_layers(config)
        self.post_init()

    def _bottleneck(self, x, xt):
        # decoding starts from zeros: the signal reaches the decoders through the skip connections
        return torch.zeros_like(x), None if xt is None else torch.zeros_like(xt)

    def _separate(self, mix: torch.Tensor) -> torch.Tensor:
        return self._run(mix)


class HTDemucsForSourceSeparation(_HybridDemucsBase):
    """Hybrid Transformer Demucs (v4): a cross-domain transformer between both U-Nets' encoders
    and decoders.

    With ``config.use_train_segment`` (the release), evaluation always runs on exactly the trained
    segment length: shorter inputs are zero-padded on the right and trimmed back, longer inputs raise
    ``ValueError`` (the original model cannot process them either; the ``audio-source-separation``
    pipeline chunks them). In training mode the input length is used as is.
    """

    config_class = HTDemucsConfig

    def __init__(self, config: HTDemucsConfig) -> None:
        super().__init__(config)
        self._build_layers(config)
        width = config.channels * config.growth ** (config.depth - 1)
        if config.bottom_channels:
            self.channel_upsampler = nn.Conv1d(width, config.bottom_channels, 1)
            self.channel_downsampler = nn.Conv1d(config.bottom_channels, width, 1)
            self.channel_upsampler_t = nn.Conv1d(width, config.bottom_channels, 1)
            self.channel_downsampler_t = nn.Conv1d(config.bottom_channels, width, 1)
        self.crosstransformer = CrossDomainTransformer(config) if config.t_layers else None
        self.post_init()

    def valid_length(self, length: int) -> int:
        """The trained segment length (``config.use_train_segment``), else ``length`` itself."""
        if not self.config.use_train_segment:
            return length
        trained = self.config.segment_length
        if length > trained:
            raise ValueError(
                f"input of {length} samples is longer than the {trained} samples ({self.config.segment} s) "
                "this HTDemucs model was trained on; split it into chunks (the separation pipeline does)"
            )
        return trained

    def _bottleneck(self, x, xt):
        if self.crosstransformer is None:
            return x, xt
        if self.config.bottom_channels:
            batch, channels, bins, frames = x.shape
            x = self.channel_upsampler(x.reshape(batch, channels, bins * frames)).view(
                batch, -1, bins, frames
            )
            xt = self.channel_upsampler_t(xt)
        x, xt = self.crosstransformer(x, xt)
        if self.config.bottom_channels:
            batch, channels, bins, frames = x.shape
            x = self.channel_downsampler(x.reshape(batch, channels, bins * frames)).view(
                batch, -1, bins, frames
            )
            xt = self.channel_downsampler_t(xt)
        return x, xt

    def _separate(self, mix: torch.Tensor) -> torch.Tensor:
        length = mix.shape[-1]
        if self.training or not self.config.use_train_segment:
            return self._run(mix)
        target = self.valid_length(length)
        if target > length:
            mix = F.pad(mix, (0, target - length))
        return self._run(mix)[..., :length]


# -- bags -------------------------------------------------------------------------------------

# Whitelist model_type -> class: a bag never instantiates a class named in data.
BAG_MEMBER_MODELS: dict[str, type[DemucsPreTrainedModel]] = {
    DemucsConfig.model_type: DemucsForSourceSeparation,
    HDemucsConfig.model_type: HDemucsForSourceSeparation,
    HTDemucsConfig.model_type: HTDemucsForSourceSeparation,
}


class DemucsBagForSourceSeparation(DemucsPreTrainedModel):
    """Several Demucs models whose outputs are averaged with per-source weights.

    ``forward`` runs every member on the same input and returns, for each source ``k``,
    ``sum_i weights[i][k] * member_i[k] / sum_i weights[i][k]`` (``htdemucs_ft``'s one-hot weights
    select one specialised member per source). Members keep their own length rules (an HTDemucs
    member pads to its segment).
    """

    config_class = DemucsBagConfig

    def __init__(self, config: DemucsBagConfig) -> None:
        super().__init__(config)
        members = []
        for values in config.models:
            member_config = member_config_from_dict(values)
            members.append(BAG_MEMBER_MODELS[member_config.model_type](member_config))
        self.models = nn.ModuleList(members)
        self.post_init()

    def valid_length(self, length: int) -> int:
        return length

    def _separate(self, mix: torch.Tensor) -> torch.Tensor:
        total = None
        totals = [0.0] * len(self.config.source_names)
        for member, row in zip(self.models, self.config.weights, strict=True):
            out = member._separate(mix)
            weighted = out * torch.tensor(row, dtype=out.dtype, device=out.device)[None, :, None, None]
            for index, weight in enumerate(row):
                totals[index] += weight
            total = weighted if total is None else total + weighted
        return total / torch.tensor(totals, dtype=total.dtype, device=total.device)[None, :, None, None]


__all__ = [
    "DemucsBagForSourceSeparation",
    "DemucsForSourceSeparation",
    "DemucsPreTrainedModel",
    "DemucsSourceSeparationOutput",
    "HDemucsForSourceSeparation",
    "HTDemucsForSourceSeparation",
]
