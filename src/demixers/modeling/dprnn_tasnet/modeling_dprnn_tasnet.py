"""PyTorch DPRNN-TasNet: a learned filterbank and dual-path RNN blocks that predict masks.

DPRNN-TasNet (Luo, Chen & Yoshioka, ICASSP 2020, arXiv:1910.06379) models very long frame
sequences (a 2-sample window gives 8000 frames per second) with RNNs of short inputs only:

* the encoder, a strided 1-D convolution, turns the waveform into frames of N features;
* the separator normalises the features, squeezes them to B channels and *segments* the frame
  sequence into overlapping chunks of K frames (hop K/2; the sequence is zero-padded by K frames
  at both ends), giving a ``(batch, B, K, chunks)`` tensor;
* each dual-path block runs an *intra-chunk* bidirectional RNN along the K frames of every chunk,
  then an *inter-chunk* RNN along the chunks at every position in the chunk; each RNN is followed
  by a linear projection back to B channels, a normalisation and a residual connection;
* a PReLU and a ``1x1`` 2-D convolution give one feature map per source, the chunks are
  overlap-added back into a sequence (the exact adjoint of the segmentation: every frame receives
  the sum of its K/hop copies), then a tanh/sigmoid gated ``1x1`` convolution, a bias-free ``1x1``
  convolution to N channels and the mask non-linearity give the masks;
* the decoder, a transposed convolution, turns every masked feature map back into a waveform.

Frames cover the input up to the last full window; the few samples after it (fewer than the
encoder hop) are zero in the output, as in asteroid.
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

from .configuration_dprnn_tasnet import DPRNNTasNetConfig

NORM_EPS = 1e-8
SI_SNR_EPS = 1e-8


# Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.ConvTasNetSourceSeparationOutput with ConvTasNet->DPRNNTasNet  # noqa: E501
@dataclass
class DPRNNTasNetSourceSeparationOutput(ModelOutput):
    """Output of [`DPRNNTasNetForSourceSeparation`].

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
# Segmentation and overlap-add
# ---------------------------------------------------------------------------------------------


def split_into_chunks(features: torch.Tensor, chunk_size: int, hop_size: int) -> torch.Tensor:
    """Overlapping chunks of a sequence, zero-padded by ``chunk_size`` frames at both ends.

    ``(batch, channels, frames)`` -> ``(batch, channels, chunk_size, chunks)`` with
    ``chunks = (frames + chunk_size) // hop_size + 1``; chunk ``j`` holds padded frames
    ``[j * hop_size, j * hop_size + chunk_size)``.
    """
    padded = F.pad(features, (chunk_size, chunk_size))
    return padded.unfold(-1, chunk_size, hop_size).transpose(-1, -2)


def overlap_add(chunks: torch.Tensor, frames: int, hop_size: int) -> torch.Tensor:
    """Adjoint of `split_into_chunks`: sums every chunk back at its place and drops the padding.

    ``(batch, channels, chunk_size, chunks)`` -> ``(batch, channels, frames)``. When ``hop_size``
    divides ``chunk_size`` every frame receives exactly ``chunk_size // hop_size`` copies, so
    ``overlap_add(split_into_chunks(x, K, H), frames, H) == (K // H) * x``.
    """
    batch, channels, chunk_size, num_chunks = chunks.shape
    folded = F.fold(
        chunks.reshape(batch, channels * chunk_size, num_chunks),
        output_size=(frames, 1),
        kernel_size=(chunk_size, 1),
        padding=(chunk_size, 0),
        stride=(hop_size, 1),
    )
    return folded.reshape(batch, channels, frames)


# ---------------------------------------------------------------------------------------------
# Normalisations of (batch, channels, *positions)
# ---------------------------------------------------------------------------------------------


# Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.ConvTasNetNorm with ConvTasNet->DPRNNTasNet
class DPRNNTasNetNorm(nn.Module):
    """Base of the layer norms: a per-channel gain `weight` and offset `bias` on dimension 1."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def _affine(self, normed: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (normed.dim() - 2)
        return normed * self.weight.view(shape) + self.bias.view(shape)


# Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.ConvTasNetGlobalLayerNorm with ConvTasNet->DPRNNTasNet  # noqa: E501
class DPRNNTasNetGlobalLayerNorm(DPRNNTasNetNorm):
    """gLN: mean and variance over channels and every position, one pair per batch item."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1, hidden_states.dim()))
        mean = hidden_states.mean(dim=dims, keepdim=True)
        var = (hidden_states - mean).pow(2).mean(dim=dims, keepdim=True)
        return self._affine((hidden_states - mean) / torch.sqrt(var + NORM_EPS))


# Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.ConvTasNetChannelLayerNorm with ConvTasNet->DPRNNTasNet  # noqa: E501
class DPRNNTasNetChannelLayerNorm(DPRNNTasNetNorm):
    """cLN: mean and variance over the channels at every position."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mean = hidden_states.mean(dim=1, keepdim=True)
        var = (hidden_states - mean).pow(2).mean(dim=1, keepdim=True)
        return self._affine((hidden_states - mean) / torch.sqrt(var + NORM_EPS))


class DPRNNTasNetBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm over dimension 1 of a 3-D ``(batch, channels, frames)`` or 4-D chunked tensor."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() not in (3, 4):
            raise ValueError(f"expected a 3-D or 4-D input, got {input.dim()}-D")


def build_norm(norm_type: str, channels: int) -> nn.Module:
    """The normalisation named by `config.norm_type`."""
    if norm_type == "gln":
        return DPRNNTasNetGlobalLayerNorm(channels)
    if norm_type == "cln":
        return DPRNNTasNetChannelLayerNorm(channels)
    if norm_type == "bn":
        return DPRNNTasNetBatchNorm(channels)
    raise ValueError(f"unknown norm_type {norm_type!r}")


def apply_mask_activation(scores: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "sigmoid":
        return torch.sigmoid(scores)
    if activation == "relu":
        return F.relu(scores)
    if activation == "tanh":
        return torch.tanh(scores)
    if activation == "linear":
        return scores
    raise ValueError(f"unknown mask_activation {activation!r}")


# ---------------------------------------------------------------------------------------------
# Encoder, dual-path blocks, separator, decoder
# ---------------------------------------------------------------------------------------------


# Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.ConvTasNetEncoder with ConvTasNet->DPRNNTasNet  # noqa: E501
class DPRNNTasNetEncoder(nn.Module):
    """``(batch, audio_channels, time)`` -> ``(batch, encoder_channels, frames)``.

    ``frames = (time - kernel_size) // stride + 1``; the filters are `weight`
    ``(encoder_channels, audio_channels, kernel_size)``.
    """

    def __init__(self, config: DPRNNTasNetConfig) -> None:
        super().__init__()
        self.stride = config.encoder_stride
        self.activation = config.encoder_activation
        self.weight = nn.Parameter(
            torch.empty(config.encoder_channels, config.audio_channels, config.encoder_kernel_size)
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        features = F.conv1d(waveform, self.weight, stride=self.stride)
        return F.relu(features) if self.activation == "relu" else features


# Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.ConvTasNetDecoder with ConvTasNet->DPRNNTasNet  # noqa: E501
class DPRNNTasNetDecoder(nn.Module):
    """``(batch, encoder_channels, frames)`` -> ``(batch, audio_channels, samples)``.

    ``samples = (frames - 1) * stride + kernel_size``. Overlap-add of learned basis signals: a
    transposed convolution with filters `weight`
    ``(encoder_channels, audio_channels, kernel_size)``.
    """

    def __init__(self, config: DPRNNTasNetConfig) -> None:
        super().__init__()
        self.stride = config.encoder_stride
        self.weight = nn.Parameter(
            torch.empty(config.encoder_channels, config.audio_channels, config.encoder_kernel_size)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose1d(features, self.weight, stride=self.stride)


_RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class DPRNNTasNetPath(nn.Module):
    """One RNN pass (intra- or inter-chunk): RNN, linear projection, normalisation.

    ``forward`` takes sequences ``(sequences, length, channels)`` and returns the projected
    ``(sequences, length, channels)`` RNN output; the caller normalises and adds the residual.
    With MulCat the RNN output is ``rnn(x) * gate_rnn(x)`` concatenated with ``x``.
    """

    def __init__(self, config: DPRNNTasNetConfig, bidirectional: bool) -> None:
        super().__init__()
        channels, hidden = config.bottleneck_channels, config.hidden_size
        rnn_class = _RNN_CLASSES[config.rnn_type]
        rnn_kwargs = dict(
            num_layers=config.num_rnn_layers,
            dropout=config.dropout if config.num_rnn_layers > 1 else 0.0,
            batch_first=True,
            bidirectional=bidirectional,
        )
        self.rnn = rnn_class(channels, hidden, **rnn_kwargs)
        self.gate_rnn = rnn_class(channels, hidden, **rnn_kwargs) if config.use_mulcat else None
        rnn_output = hidden * (2 if bidirectional else 1) + (channels if config.use_mulcat else 0)
        self.projection = nn.Linear(rnn_output, channels)
        self.norm = build_norm(config.norm_type, channels)

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        output, _ = self.rnn(sequences)
        if self.gate_rnn is not None:
            gate, _ = self.gate_rnn(sequences)
            output = torch.cat((output * gate, sequences), dim=-1)
        return self.projection(output)


class DPRNNTasNetBlock(GradientCheckpointingLayer):
    """Dual-path block on chunks ``(batch, channels, chunk_size, chunks)`` (same shape out)."""

    def __init__(self, config: DPRNNTasNetConfig) -> None:
        super().__init__()
        self.intra = DPRNNTasNetPath(config, bidirectional=True)
        self.inter = DPRNNTasNetPath(config, bidirectional=config.bidirectional)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, channels, chunk_size, chunks = hidden_states.shape
        # intra-chunk: one sequence of chunk_size frames per (item, chunk)
        sequences = hidden_states.permute(0, 3, 2, 1).reshape(batch * chunks, chunk_size, channels)
        intra = self.intra(sequences).reshape(batch, chunks, chunk_size, channels).permute(0, 3, 2, 1)
        hidden_states = hidden_states + self.intra.norm(intra)
        # inter-chunk: one sequence of chunks per (item, position in the chunk)
        sequences = hidden_states.permute(0, 2, 3, 1).reshape(batch * chunk_size, chunks, channels)
        inter = self.inter(sequences).reshape(batch, chunk_size, chunks, channels).permute(0, 3, 1, 2)
        return hidden_states + self.inter.norm(inter)


class DPRNNTasNetSeparator(nn.Module):
    """Dual-path RNN mask estimator.

    Features ``(batch, encoder_channels, frames)`` -> masks ``(batch, sources, encoder_channels, frames)``.
    """

    def __init__(self, config: DPRNNTasNetConfig) -> None:
        super().__init__()
        channels = config.bottleneck_channels
        self.num_sources = config.num_sources
        self.chunk_size = config.chunk_size
        self.hop_size = config.hop_size
        self.mask_activation = config.mask_activation
        self.input_norm = build_norm(config.norm_type, config.encoder_channels)
        self.bottleneck = nn.Conv1d(config.encoder_channels, channels, 1)
        self.blocks = nn.ModuleList([DPRNNTasNetBlock(config) for _ in range(config.num_blocks)])
        self.output_activation = nn.PReLU()
        self.output_conv = nn.Conv2d(channels, config.num_sources * channels, 1)
        self.output_value_conv = nn.Conv1d(channels, channels, 1)
        self.output_gate_conv = nn.Conv1d(channels, channels, 1)
        self.mask_conv = nn.Conv1d(channels, config.encoder_channels, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, _, frames = features.shape
        hidden_states = self.bottleneck(self.input_norm(features))
        hidden_states = split_into_chunks(hidden_states, self.chunk_size, self.hop_size)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        hidden_states = self.output_conv(self.output_activation(hidden_states))
        channels, chunk_size, chunks = hidden_states.shape[1] // self.num_sources, *hidden_states.shape[2:]
        hidden_states = hidden_states.reshape(batch * self.num_sources, channels, chunk_size, chunks)
        hidden_states = overlap_add(hidden_states, frames, self.hop_size)
        hidden_states = torch.tanh(self.output_value_conv(hidden_states)) * torch.sigmoid(
            self.output_gate_conv(hidden_states)
        )
        masks = apply_mask_activation(self.mask_conv(hidden_states), self.mask_activation)
        return masks.reshape(batch, self.num_sources, -1, frames)


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


# Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.pairwise_si_snr
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


# Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.permutation_invariant_si_snr_loss
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


class DPRNNTasNetPreTrainedModel(PreTrainedModel):
    config_class = DPRNNTasNetConfig
    base_model_prefix = "dprnn_tasnet"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["DPRNNTasNetBlock"]

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
        """Xavier-normal filterbanks (as asteroid), PyTorch's defaults elsewhere."""
        if isinstance(module, (DPRNNTasNetEncoder, DPRNNTasNetDecoder)):
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
        elif isinstance(module, (DPRNNTasNetNorm, nn.modules.batchnorm._BatchNorm)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if getattr(module, "running_mean", None) is not None:
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)


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


class DPRNNTasNetForSourceSeparation(DPRNNTasNetPreTrainedModel):
    """DPRNN-TasNet: a mixture in, one waveform per source out.

    Example:

    ```python
    >>> import torch
    >>> config = DPRNNTasNetConfig(num_blocks=2, encoder_kernel_size=16, encoder_stride=8, chunk_size=100)
    >>> model = DPRNNTasNetForSourceSeparation(config).eval()
    >>> mixture = torch.randn(1, 1, 8000)  # one second at 8 kHz
    >>> model(input_values=mixture).audio_values.shape
    torch.Size([1, 2, 1, 8000])
    ```
    """

    # Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.ConvTasNetForSourceSeparation.__init__ with ConvTasNet->DPRNNTasNet  # noqa: E501
    def __init__(self, config: DPRNNTasNetConfig) -> None:
        super().__init__(config)
        self.encoder = DPRNNTasNetEncoder(config)
        self.separator = DPRNNTasNetSeparator(config)
        self.decoder = DPRNNTasNetDecoder(config)
        self.post_init()

    # Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.ConvTasNetForSourceSeparation._check_input_values with ConvTasNet->DPRNNTasNet  # noqa: E501
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

    # Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.ConvTasNetForSourceSeparation.separate with ConvTasNet->DPRNNTasNet  # noqa: E501
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

    # Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.ConvTasNetForSourceSeparation.compute_loss with ConvTasNet->DPRNNTasNet  # noqa: E501
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

    # Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.ConvTasNetForSourceSeparation.forward with ConvTasNet->DPRNNTasNet  # noqa: E501
    def forward(
        self,
        input_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> DPRNNTasNetSourceSeparationOutput | tuple[torch.Tensor, ...]:
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
        return DPRNNTasNetSourceSeparationOutput(loss=loss, audio_values=audio_values)


__all__ = [
    "DPRNNTasNetForSourceSeparation",
    "DPRNNTasNetPreTrainedModel",
    "DPRNNTasNetSourceSeparationOutput",
    "overlap_add",
    "pairwise_si_snr",
    "permutation_invariant_si_snr_loss",
    "split_into_chunks",
]
