"""Configuration of DPRNN-TasNet, the dual-path recurrent network separator on a learned filterbank.

The defaults follow the best system of Luo, Chen & Yoshioka, "Dual-path RNN: efficient long sequence
modeling for time-domain single-channel speech separation" (ICASSP 2020, arXiv:1910.06379): a
learned encoder of N=64 filters with a 2-sample window (hop 1), a 64-channel feature dimension,
6 DPRNN blocks of bidirectional LSTMs with 128 hidden units per direction, chunks of K=250 frames
with 50% overlap, global layer norm; 2 speakers at 8 kHz (about 2.6M parameters, the paper's size).
The masking head (PReLU, a 2-D ``1x1`` convolution to one feature map per source, overlap-add,
tanh/sigmoid gating, a bias-free ``1x1`` convolution and sigmoid masks) is asteroid's
`DPRNNTasNet`, whose checkpoints convert exactly.

The cheaper configuration of the paper (and asteroid's default) uses 16-sample windows with hop
8 and chunks of 100 frames: ``DPRNNTasNetConfig(encoder_kernel_size=16, encoder_stride=8,
chunk_size=100)`` (asteroid's recipes also widen the features to ``bottleneck_channels=128``). A
2-sample window gives 8x more frames than a 16-sample one, so it costs about 8x more compute and
activation memory per second of audio.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from transformers import PretrainedConfig

NORM_TYPES = ("gln", "cln", "bn")
MASK_ACTIVATIONS = ("sigmoid", "relu", "tanh", "linear")
ENCODER_ACTIVATIONS = ("linear", "relu")
RNN_TYPES = ("lstm", "gru", "rnn")


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


# Copied from demixers.modeling.conv_tasnet.configuration_conv_tasnet._require_bool
def _require_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


# Copied from demixers.modeling.conv_tasnet.configuration_conv_tasnet._require_choice
def _require_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value.lower()


# Copied from demixers.modeling.conv_tasnet.configuration_conv_tasnet._resolve_source_names
def _resolve_source_names(source_names: Any, num_speakers: Any) -> list[str]:
    if num_speakers is not None:
        _require_int("num_speakers", num_speakers, maximum=MAX_SOURCES)
    if source_names is None:
        source_names = [f"speaker_{index + 1}" for index in range(num_speakers or 2)]
    source_names = _check_source_names(source_names)
    if num_speakers is not None and num_speakers != len(source_names):
        raise ValueError(
            f"num_speakers={num_speakers} disagrees with source_names={source_names!r} "
            f"({len(source_names)} names)"
        )
    return source_names


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


class DPRNNTasNetConfig(PretrainedConfig):
    r"""Configuration of a [`DPRNNTasNetForSourceSeparation`] model.

    Args:
        sampling_rate (`int`, defaults to 8000): sampling rate of the audio the model works on.
        audio_channels (`int`, defaults to 1): channels of the mixture and of every source.
        source_names (`list[str]`, defaults to `["speaker_1", "speaker_2"]`): one name per separated
            source, in output order.
        num_speakers (`int`, *optional*): number of sources when `source_names` is omitted. Not stored.
        encoder_channels (`int`, defaults to 64): number of encoder/decoder filters (N).
        encoder_kernel_size (`int`, defaults to 2): length of the filters in samples (L).
        encoder_stride (`int`, *optional*): hop of the encoder/decoder; `max(encoder_kernel_size // 2, 1)`
            when omitted.
        encoder_activation (`str`, defaults to `"linear"`): `"linear"` or `"relu"` after the encoder.
        bottleneck_channels (`int`, defaults to 64): feature dimension of the dual-path blocks.
        hidden_size (`int`, defaults to 128): hidden units of each RNN direction.
        chunk_size (`int`, defaults to 250): frames per chunk (K).
        hop_size (`int`, *optional*): hop between chunks; `chunk_size // 2` (50% overlap) when omitted.
        num_blocks (`int`, defaults to 6): number of dual-path blocks.
        norm_type (`str`, defaults to `"gln"`): `"gln"` (global layer norm), `"cln"` (channel-wise)
            or `"bn"` (batch norm), for the input and after every intra/inter-chunk RNN.
        mask_activation (`str`, defaults to `"sigmoid"`): `"sigmoid"`, `"relu"`, `"tanh"` or `"linear"`.
        bidirectional (`bool`, defaults to `True`): bidirectional inter-chunk RNN (the intra-chunk RNN
            is always bidirectional).
        rnn_type (`str`, defaults to `"lstm"`): `"lstm"`, `"gru"` or `"rnn"` (tanh).
        num_rnn_layers (`int`, defaults to 1): stacked layers in each RNN.
        dropout (`float`, defaults to 0.0): dropout between stacked RNN layers (training only).
        use_mulcat (`bool`, defaults to `False`): MulCat RNNs (Nachmani et al. 2020): two RNNs whose
            outputs are multiplied and concatenated with the input before the projection.
        segment (`float`, *optional*): training segment in seconds; the pipeline uses it as its
            default chunk length.
        permutation_invariant (`bool`, *optional*): whether the sources are unordered speakers (the loss
            is then permutation-invariant SI-SNR and the pipeline aligns them across chunks) or named
            stems in a fixed order (L1 loss). Saved in config.json; when omitted, True for speakers
            named by their count (`speaker_1` ... `speaker_N`, the default), False for other names.
    """

    model_type = "dprnn_tasnet"

    def __init__(
        self,
        sampling_rate: int = 8000,
        audio_channels: int = 1,
        source_names: Sequence[str] | None = None,
        num_speakers: int | None = None,
        encoder_channels: int = 64,
        encoder_kernel_size: int = 2,
        encoder_stride: int | None = None,
        encoder_activation: str = "linear",
        bottleneck_channels: int = 64,
        hidden_size: int = 128,
        chunk_size: int = 250,
        hop_size: int | None = None,
        num_blocks: int = 6,
        norm_type: str = "gln",
        mask_activation: str = "sigmoid",
        bidirectional: bool = True,
        rnn_type: str = "lstm",
        num_rnn_layers: int = 1,
        dropout: float = 0.0,
        use_mulcat: bool = False,
        segment: float | None = None,
        permutation_invariant: bool | None = None,
        **kwargs: Any,
    ) -> None:
        _require_sampling_rate(sampling_rate)
        _require_int("audio_channels", audio_channels, maximum=MAX_AUDIO_CHANNELS)
        source_names = _resolve_source_names(source_names, num_speakers)
        if permutation_invariant is None:
            # the speech task (the default): speakers named by the count alone, speaker_1 ... speaker_N;
            # named stems (a music release) keep their order
            speakers = [f"speaker_{index + 1}" for index in range(len(source_names))]
            permutation_invariant = len(source_names) > 1 and source_names == speakers
        _require_bool("permutation_invariant", permutation_invariant)
        _require_int("encoder_channels", encoder_channels)
        _require_int("encoder_kernel_size", encoder_kernel_size)
        if encoder_stride is None:
            encoder_stride = max(encoder_kernel_size // 2, 1)
        _require_int("encoder_stride", encoder_stride)
        if encoder_stride > encoder_kernel_size:
            raise ValueError(
                f"encoder_stride ({encoder_stride}) must not exceed encoder_kernel_size "
                f"({encoder_kernel_size}): the frames would leave samples out"
            )
        encoder_activation = _require_choice("encoder_activation", encoder_activation, ENCODER_ACTIVATIONS)
        _require_int("bottleneck_channels", bottleneck_channels)
        _require_int("hidden_size", hidden_size)
        _require_int("chunk_size", chunk_size)
        if hop_size is None:
            hop_size = max(chunk_size // 2, 1)
        _require_int("hop_size", hop_size)
        if hop_size > chunk_size:
            raise ValueError(f"hop_size ({hop_size}) must not exceed chunk_size ({chunk_size})")
        _require_int("num_blocks", num_blocks, maximum=MAX_DEPTH)
        norm_type = _require_choice("norm_type", norm_type, NORM_TYPES)
        mask_activation = _require_choice("mask_activation", mask_activation, MASK_ACTIVATIONS)
        _require_bool("bidirectional", bidirectional)
        rnn_type = _require_choice("rnn_type", rnn_type, RNN_TYPES)
        _require_int("num_rnn_layers", num_rnn_layers, maximum=MAX_DEPTH)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
        _require_bool("use_mulcat", use_mulcat)
        if segment is not None:
            if (
                isinstance(segment, bool)
                or not isinstance(segment, (int, float))
                or not 0 < segment <= MAX_SEGMENT_SECONDS
            ):
                raise ValueError(
                    f"segment must be seconds in (0, {MAX_SEGMENT_SECONDS}] or None, got {segment!r}"
                )
            segment = float(segment)

        self.sampling_rate = sampling_rate
        self.audio_channels = audio_channels
        self.source_names = source_names
        self.encoder_channels = encoder_channels
        self.encoder_kernel_size = encoder_kernel_size
        self.encoder_stride = encoder_stride
        self.encoder_activation = encoder_activation
        self.bottleneck_channels = bottleneck_channels
        self.hidden_size = hidden_size
        self.chunk_size = chunk_size
        self.hop_size = hop_size
        self.num_blocks = num_blocks
        self.norm_type = norm_type
        self.mask_activation = mask_activation
        self.bidirectional = bidirectional
        self.rnn_type = rnn_type
        self.num_rnn_layers = num_rnn_layers
        self.dropout = float(dropout)
        self.use_mulcat = use_mulcat
        self.segment = segment
        self.permutation_invariant = permutation_invariant
        super().__init__(**_without_locally_registered_pipelines(kwargs))

    # Copied from demixers.modeling.mossformer.configuration_mossformer.MossFormerConfig.num_sources
    @property
    def num_sources(self) -> int:
        return len(self.source_names)

    # Copied from demixers.modeling.mossformer.configuration_mossformer.MossFormerConfig.num_speakers
    @property
    def num_speakers(self) -> int:
        """Number of separated sources (`len(source_names)`)."""
        return len(self.source_names)


__all__ = ["DPRNNTasNetConfig"]
