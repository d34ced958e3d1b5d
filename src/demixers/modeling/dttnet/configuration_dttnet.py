"""Configuration of DTTNet, the dual-path TFC-TDF UNet (Chen et al., ICASSP 2024, arXiv:2309.08684).

The defaults reproduce the released vocals model (``configs/model/vocals.yaml`` of
junyuchen-cjy/DTTNet-Pytorch): 44.1 kHz stereo, ``n_fft`` 6144, hop 1024, the lowest 2048
frequency bins, chunks of 256 frames, TFC-TDF v3 residual blocks (``num_blocks`` 5, ``l`` 3,
``g`` 32, ``k`` 3, ``bn`` 8, no TDF bias) and 4 improved dual-path layers (bidirectional LSTMs) with
2 heads at the bottleneck (about 5.0M parameters).

The released network predicts one target. `source_names` holds that target's name and, optionally, a
second name for the residual ``mixture - target`` (by default ``["vocals", "accompaniment"]``, as
MUSDB18 names ``drums + bass + other``). With a single name the model returns only the target.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from transformers import PretrainedConfig

RNN_TYPES = ("lstm", "gru")


# Upper bounds of the fields that size memory or a loop: generous for every published checkpoint,
# small enough that an absurd (or hostile) config.json fails here instead of hanging or allocating
# terabytes. A downloaded config is untrusted input.
MIN_SAMPLING_RATE = 1000
MAX_SAMPLING_RATE = 1_000_000
MAX_AUDIO_CHANNELS = 64
MAX_SOURCES = 64
MAX_SOURCE_NAME_LENGTH = 64
MAX_WIDTH = 65536  # channels, kernel sizes, FFT sizes, frame counts
MAX_DEPTH = 256  # layers, blocks, repeats, stacks
MAX_SEGMENT_SECONDS = 3600.0
# Source names become stem file names: characters that separate paths or are invalid on some platform.
_FORBIDDEN_NAME_CHARACTERS = frozenset('/\\<>:"|?*')


# Copied from demixers.modeling.mossformer.configuration_mossformer._require_int
def _require_int(name: str, value: Any, minimum: int = 1, maximum: int = MAX_WIDTH) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be an int in [{minimum}, {maximum}], got {value!r}")
    return value


# Copied from demixers.modeling.mossformer.configuration_mossformer._require_sampling_rate
def _require_sampling_rate(value: Any) -> int:
    return _require_int("sampling_rate", value, minimum=MIN_SAMPLING_RATE, maximum=MAX_SAMPLING_RATE)


# Copied from demixers.modeling.mossformer.configuration_mossformer._check_source_names
def _check_source_names(source_names: Any) -> list[str]:
    """Validated ``source_names``: each one names an output file, so it must be a safe file name."""
    if isinstance(source_names, (str, bytes)) or not isinstance(source_names, Sequence):
        raise ValueError(f"source_names must be a list of names, got {source_names!r}")
    names = list(source_names)
    if not names:
        raise ValueError("source_names must name at least one source")
    if len(names) > MAX_SOURCES:
        raise ValueError(f"source_names holds {len(names)} names; at most {MAX_SOURCES} are supported")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"source_names must be non-empty strings, got {name!r} in {names!r}")
        if len(name) > MAX_SOURCE_NAME_LENGTH:
            raise ValueError(
                f"source_names: {name[:MAX_SOURCE_NAME_LENGTH]!r}... is {len(name)} characters long; "
                f"at most {MAX_SOURCE_NAME_LENGTH} are allowed"
            )
        if not name.isprintable():
            raise ValueError(f"source_names: {name!r} contains control or non-printable characters")
        forbidden = sorted(set(name) & _FORBIDDEN_NAME_CHARACTERS)
        if forbidden:
            raise ValueError(
                f"source_names: {name!r} contains {''.join(forbidden)!r}; names become file names and "
                "may not hold path separators or characters reserved on Windows"
            )
        if name.startswith(".") or name.endswith(".") or name != name.strip():
            raise ValueError(
                f"source_names: {name!r} may not start or end with a dot or with white space "
                "(names become file names: '.', '..' and hidden files are refused)"
            )
    # case-insensitive file systems (macOS, Windows) would write two such stems to one file
    if len({name.casefold() for name in names}) != len(names):
        raise ValueError(f"source_names must be unique (ignoring case), got {names!r}")
    return names


# Copied from demixers.modeling.mossformer.configuration_mossformer._without_locally_registered_pipelines
def _without_locally_registered_pipelines(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` less the ``custom_pipelines`` entries of tasks this process has registered itself.

    A Hub repo pushed by demixers declares its pipeline in ``custom_pipelines`` so that plain
    transformers runs it with ``trust_remote_code=True``; transformers then demands that flag for
    the task even when it is registered locally. Where demixers is imported (the task is in the
    pipeline registry), the installed pipeline runs and the flag is not needed.
    """
    declared = kwargs.get("custom_pipelines")
    registry = getattr(sys.modules.get("transformers.pipelines"), "PIPELINE_REGISTRY", None)
    if not isinstance(declared, dict) or registry is None:
        return kwargs
    supported = set(registry.get_supported_tasks())
    kept = {task: info for task, info in declared.items() if task not in supported}
    cleaned = {key: value for key, value in kwargs.items() if key != "custom_pipelines"}
    if kept:
        cleaned["custom_pipelines"] = kept
    return cleaned


class DTTNetConfig(PretrainedConfig):
    r"""Configuration of a [`DTTNetForSourceSeparation`] model.

    Args:
        sampling_rate (`int`, defaults to 44100): sampling rate of the audio the model works on.
        audio_channels (`int`, defaults to 2): channels of the mixture; each channel contributes its
            real and imaginary spectrogram as two input planes of the network.
        source_names (`list[str]`, defaults to `["vocals", "accompaniment"]`): one or two names. The
            first is the source the network predicts; a second one, when given, is the residual
            `mixture - target` (so the two outputs sum to the input exactly).
        n_fft (`int`, defaults to 6144): STFT size (periodic Hann window of the same length, centred
            frames with reflect padding).
        hop_length (`int`, defaults to 1024): STFT hop.
        dim_f (`int`, defaults to 2048): number of frequency bins the network sees (the lowest ones;
            the others are set to zero before the inverse STFT). Must be divisible by
            `2 ** (num_blocks // 2)`.
        dim_t (`int`, defaults to 256): STFT frames per chunk; a chunk is `hop_length * (dim_t - 1)`
            samples (261120 for the release). Must be divisible by `2 ** (num_blocks // 2)`.
        overlap_samples (`int`, defaults to 3072): samples of context discarded at each side of every
            chunk (the release's `overlap`); chunks start every `chunk_size - 2 * overlap_samples`.
        num_blocks (`int`, defaults to 5): odd number of TFC-TDF stages of the UNet; the encoder and
            the decoder have `num_blocks // 2` levels each, the bottleneck one.
        num_tfc_layers (`int`, defaults to 3): convolutions per TFC sub-block (`l`).
        growth (`int`, defaults to 32): channels of the first level and channel increment per level
            (`g`).
        kernel_size (`int`, defaults to 3): odd kernel of the TFC convolutions (`k`).
        tdf_bottleneck_factor (`int`, defaults to 8): the TDF maps `f -> f // bn -> f` frequency bins
            (`bn`); 0 gives a single `f -> f` layer.
        tdf_bias (`bool`, defaults to `False`): bias of the TDF linear layers.
        num_dual_path_layers (`int`, defaults to 4): improved dual-path modules at the bottleneck
            (each: one RNN along time, then one along frequency).
        num_heads (`int`, defaults to 2): the bottleneck channels are split into this many heads that
            run through the dual-path RNNs as separate batch items.
        rnn_type (`str`, defaults to `"lstm"`): `"lstm"` or `"gru"`.
        bidirectional (`bool`, defaults to `True`): bidirectional dual-path RNNs.
        norm_group_size (`int`, defaults to 16): channels per group of the dual-path GroupNorms
            (`channels_per_head // norm_group_size` groups).
        permutation_invariant (`bool`, defaults to `False`): named stems in a fixed order (music);
            True would make the pipeline align the sources across chunks and evaluation use PIT.
    """

    model_type = "dttnet"

    def __init__(
        self,
        sampling_rate: int = 44100,
        audio_channels: int = 2,
        source_names: Sequence[str] | None = None,
        n_fft: int = 6144,
        hop_length: int = 1024,
        dim_f: int = 2048,
        dim_t: int = 256,
        overlap_samples: int = 3072,
        num_blocks: int = 5,
        num_tfc_layers: int = 3,
        growth: int = 32,
        kernel_size: int = 3,
        tdf_bottleneck_factor: int = 8,
        tdf_bias: bool = False,
        num_dual_path_layers: int = 4,
        num_heads: int = 2,
        rnn_type: str = "lstm",
        bidirectional: bool = True,
        norm_group_size: int = 16,
        permutation_invariant: bool = False,
        **kwargs: Any,
    ) -> None:
        _require_sampling_rate(sampling_rate)
        _require_int("audio_channels", audio_channels, maximum=MAX_AUDIO_CHANNELS)
        if source_names is None:
            source_names = ["vocals", "accompaniment"]
        source_names = _check_source_names(source_names)
        if not 1 <= len(source_names) <= 2:
            raise ValueError(
                f"source_names must hold the target and optionally the residual (1 or 2 names), "
                f"got {source_names!r}"
            )

        _require_int("n_fft", n_fft, minimum=2)
        _require_int("hop_length", hop_length)
        if hop_length > n_fft:
            raise ValueError(f"hop_length ({hop_length}) must not exceed n_fft ({n_fft})")
        # the UNet halves both axes num_blocks // 2 times: 2 ** (num_blocks // 2) must divide dim_f, dim_t
        _require_int("num_blocks", num_blocks, maximum=31)
        if num_blocks % 2 == 0:
            raise ValueError(
                f"num_blocks must be odd (encoder levels + bottleneck + decoder levels), got {num_blocks}"
            )
        scale = 2 ** (num_blocks // 2)
        _require_int("dim_f", dim_f, minimum=scale)
        if dim_f > n_fft // 2 + 1:
            raise ValueError(
                f"dim_f ({dim_f}) must not exceed the n_fft // 2 + 1 = {n_fft // 2 + 1} STFT bins"
            )
        if dim_f % scale:
            raise ValueError(f"dim_f ({dim_f}) must be divisible by 2 ** (num_blocks // 2) = {scale}")
        _require_int("dim_t", dim_t, minimum=2)
        if dim_t % scale:
            raise ValueError(f"dim_t ({dim_t}) must be divisible by 2 ** (num_blocks // 2) = {scale}")
        chunk_size = hop_length * (dim_t - 1)
        if chunk_size <= n_fft // 2:
            raise ValueError(
                f"dim_t: a chunk of hop_length * (dim_t - 1) = {chunk_size} samples must be longer than "
                f"n_fft // 2 = {n_fft // 2} (reflect padding of the centred STFT)"
            )
        _require_int("overlap_samples", overlap_samples, minimum=0, maximum=1 << 24)
        if chunk_size - 2 * overlap_samples <= 0:
            raise ValueError(
                f"overlap_samples ({overlap_samples}) leaves no output: chunks are {chunk_size} samples "
                "and lose 2 * overlap_samples"
            )
        _require_int("num_tfc_layers", num_tfc_layers, maximum=MAX_DEPTH)
        _require_int("growth", growth)
        _require_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd ('same' padding), got {kernel_size}")
        _require_int("tdf_bottleneck_factor", tdf_bottleneck_factor, minimum=0)
        if tdf_bottleneck_factor and dim_f // scale // tdf_bottleneck_factor < 1:
            raise ValueError(
                f"tdf_bottleneck_factor ({tdf_bottleneck_factor}) leaves no TDF units at the bottleneck "
                f"({dim_f // scale} bins)"
            )
        if not isinstance(tdf_bias, bool):
            raise ValueError(f"tdf_bias must be a bool, got {tdf_bias!r}")
        _require_int("num_dual_path_layers", num_dual_path_layers, minimum=0, maximum=MAX_DEPTH)
        _require_int("num_heads", num_heads)
        _require_int("norm_group_size", norm_group_size)
        bottleneck_channels = growth * (num_blocks // 2 + 1)
        if bottleneck_channels % num_heads:
            raise ValueError(
                f"num_heads ({num_heads}) must divide the bottleneck channels "
                f"growth * (num_blocks // 2 + 1) = {bottleneck_channels}"
            )
        head_channels = bottleneck_channels // num_heads
        if num_dual_path_layers:
            groups = head_channels // norm_group_size
            if groups < 1 or head_channels % groups:
                raise ValueError(
                    f"norm_group_size ({norm_group_size}): {head_channels} channels per head must form a "
                    "whole number (>= 1) of GroupNorm groups of about norm_group_size channels"
                )
        if rnn_type not in RNN_TYPES:
            raise ValueError(f"rnn_type must be one of {RNN_TYPES}, got {rnn_type!r}")
        if not isinstance(bidirectional, bool):
            raise ValueError(f"bidirectional must be a bool, got {bidirectional!r}")

        self.sampling_rate = sampling_rate
        self.audio_channels = audio_channels
        self.source_names = source_names
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.dim_f = dim_f
        self.dim_t = dim_t
        self.overlap_samples = overlap_samples
        self.num_blocks = num_blocks
        self.num_tfc_layers = num_tfc_layers
        self.growth = growth
        self.kernel_size = kernel_size
        self.tdf_bottleneck_factor = tdf_bottleneck_factor
        self.tdf_bias = tdf_bias
        self.num_dual_path_layers = num_dual_path_layers
        self.num_heads = num_heads
        self.rnn_type = rnn_type
        self.bidirectional = bidirectional
        self.norm_group_size = norm_group_size
        if not isinstance(permutation_invariant, bool):
            raise ValueError(f"permutation_invariant must be a bool, got {permutation_invariant!r}")
        self.permutation_invariant = permutation_invariant
        super().__init__(**_without_locally_registered_pipelines(kwargs))

    # Copied from demixers.modeling.mossformer.configuration_mossformer.MossFormerConfig.num_sources
    @property
    def num_sources(self) -> int:
        return len(self.source_names)

    @property
    def target_name(self) -> str:
        """Name of the source the network predicts (the residual, if any, is derived from it)."""
        return self.source_names[0]

    @property
    def num_levels(self) -> int:
        """Encoder (and decoder) levels: `num_blocks // 2`."""
        return self.num_blocks // 2

    @property
    def chunk_size(self) -> int:
        """Samples per network pass: `hop_length * (dim_t - 1)` (gives exactly `dim_t` frames)."""
        return self.hop_length * (self.dim_t - 1)

    @property
    def chunk_stride(self) -> int:
        """Output samples per chunk once `overlap_samples` are discarded at each side."""
        return self.chunk_size - 2 * self.overlap_samples

    @property
    def bottleneck_channels(self) -> int:
        return self.growth * (self.num_levels + 1)


__all__ = ["DTTNetConfig"]
