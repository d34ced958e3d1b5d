"""Configuration of MossFormer2, MossFormer with a recurrent gated FSMN module after every block.

The defaults reproduce ModelScope's released ``damo/speech_mossformer2_separation_temporal_8k``
(about 55.7M parameters, 2 speakers at 8 kHz); ClearerVoice-Studio's ``MossFormer2_SS_16K`` has the
same architecture at 16 kHz (`MOSSFORMER2_PRESETS`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, ClassVar

from transformers import PretrainedConfig

NORM_TYPES = ("ln", "gln", "cln", "bn")


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


class MossFormer2Config(PretrainedConfig):
    r"""Configuration of a [`MossFormer2ForSourceSeparation`] model.

    Args:
        sampling_rate (`int`, defaults to 8000): sampling rate of the audio the model works on.
        audio_channels (`int`, defaults to 1): MossFormer2 is a mono model; only 1 is supported.
        source_names (`list[str]`, defaults to `["speaker_1", "speaker_2"]`): one name per separated
            source, in output order. When omitted and `num_speakers` is given, the names are
            `speaker_1` ... `speaker_{num_speakers}`.
        num_speakers (`int`, *optional*): number of sources; must agree with `source_names` when
            both are given. Not stored: it is always `len(source_names)`.
        encoder_kernel_size (`int`, defaults to 16): kernel of the convolutional encoder/decoder.
        encoder_stride (`int`, defaults to 8): hop of the encoder/decoder (the releases use
            `encoder_kernel_size // 2`).
        encoder_channels (`int`, defaults to 512): number of encoder filters.
        hidden_size (`int`, defaults to 512): width of the MossFormer and FSMN blocks (`d_model`).
        num_hidden_layers (`int`, defaults to 24): number of (MossFormer block, gated FSMN block) pairs.
        group_size (`int`, defaults to 256): frames per group of the local (quadratic) attention.
        query_key_dim (`int`, defaults to 128): dimension of the shared query/key projection.
        expansion_factor (`float`, defaults to 4.0): width of the value/gate projection is
            `int(hidden_size * expansion_factor)`, split into two halves.
        conv_kernel_size (`int`, defaults to 17): kernel of the depthwise convolution modules (odd),
            in the MossFormer blocks and in the gated FSMN's projections.
        max_rotary_dim (`int`, defaults to 32): rotary embeddings rotate the first
            `min(max_rotary_dim, query_key_dim)` query/key features.
        attention_dropout (`float`, defaults to 0.1): dropout on the attention weights and after
            each convolution-augmented projection of the MossFormer blocks (training only).
        fsmn_inner_channels (`int`, defaults to 256): width of the gated FSMN blocks, which project
            `hidden_size` down to it and back.
        fsmn_memory_order (`int`, defaults to 20): the FSMN memory's dilated convolutions have
            `2 * fsmn_memory_order - 1` taps, centred (non-causal).
        fsmn_dilation_depth (`int`, defaults to 2): layers of the FSMN memory's dense dilated
            network; layer `i` is dilated by `2**i` and sees the outputs of all layers before it.
        fsmn_dropout (`float`, defaults to 0.1): dropout after the gated FSMN's projections
            (training only).
        causal (`bool`, defaults to `False`): causal attention (the released models are non-causal;
            the convolutions, the FSMN memory and normalisations stay non-causal, as in the reference).
        norm_type (`str`, defaults to `"ln"`): normalisation of the mask net, one of `"ln"`
            (one-group GroupNorm), `"gln"` (global layer norm), `"cln"` (channel-wise layer norm)
            or `"bn"` (batch norm).
        decoder_bias (`bool`, defaults to `False`): bias of the transposed-convolution decoder.
        permutation_invariant (`bool`, defaults to `True`): the sources are unordered speakers: the
            pipeline aligns them across chunks, evaluation and training use permutation-invariant SI-SNR.
    """

    model_type = "mossformer2"
    attribute_map: ClassVar[dict[str, str]] = {"num_blocks": "num_hidden_layers", "d_model": "hidden_size"}

    def __init__(
        self,
        sampling_rate: int = 8000,
        audio_channels: int = 1,
        source_names: Sequence[str] | None = None,
        num_speakers: int | None = None,
        encoder_kernel_size: int = 16,
        encoder_stride: int = 8,
        encoder_channels: int = 512,
        hidden_size: int = 512,
        num_hidden_layers: int = 24,
        group_size: int = 256,
        query_key_dim: int = 128,
        expansion_factor: float = 4.0,
        conv_kernel_size: int = 17,
        max_rotary_dim: int = 32,
        attention_dropout: float = 0.1,
        fsmn_inner_channels: int = 256,
        fsmn_memory_order: int = 20,
        fsmn_dilation_depth: int = 2,
        fsmn_dropout: float = 0.1,
        causal: bool = False,
        norm_type: str = "ln",
        decoder_bias: bool = False,
        permutation_invariant: bool = True,
        **kwargs: Any,
    ) -> None:
        _require_sampling_rate(sampling_rate)
        if audio_channels != 1 or isinstance(audio_channels, bool):
            raise ValueError(
                f"audio_channels must be 1 (MossFormer2 is a mono model), got {audio_channels!r}"
            )
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
        _require_int("encoder_kernel_size", encoder_kernel_size)
        _require_int("encoder_stride", encoder_stride)
        if encoder_stride > encoder_kernel_size:
            raise ValueError(
                f"encoder_stride ({encoder_stride}) must not exceed "
                f"encoder_kernel_size ({encoder_kernel_size})"
            )
        _require_int("encoder_channels", encoder_channels)
        _require_int("hidden_size", hidden_size, minimum=2)
        if hidden_size % 2:
            raise ValueError(
                f"hidden_size must be even (sinusoidal embedding, token shift), got {hidden_size}"
            )
        _require_int("num_hidden_layers", num_hidden_layers, maximum=MAX_DEPTH)
        _require_int("group_size", group_size)
        _require_int("query_key_dim", query_key_dim, minimum=2)
        _require_int("max_rotary_dim", max_rotary_dim, minimum=2)
        if min(max_rotary_dim, query_key_dim) % 2:
            raise ValueError(
                f"max_rotary_dim: the rotated width min(max_rotary_dim, query_key_dim) must be even, "
                f"got {min(max_rotary_dim, query_key_dim)}"
            )
        if (
            isinstance(expansion_factor, bool)
            or not isinstance(expansion_factor, (int, float))
            or not 0 < expansion_factor <= 64
        ):
            raise ValueError(f"expansion_factor must be a number in (0, 64], got {expansion_factor!r}")
        expansion_factor = float(expansion_factor)
        inner = int(hidden_size * expansion_factor)
        if inner < 2 or inner % 2:
            raise ValueError(
                f"expansion_factor: int(hidden_size * expansion_factor) must be an even number >= 2, "
                f"got {inner}"
            )
        _require_int("conv_kernel_size", conv_kernel_size)
        if conv_kernel_size % 2 == 0:
            raise ValueError(f"conv_kernel_size must be odd ('same' padding), got {conv_kernel_size}")
        if isinstance(attention_dropout, bool) or not isinstance(attention_dropout, (int, float)):
            raise ValueError(f"attention_dropout must be a number in [0, 1), got {attention_dropout!r}")
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must be in [0, 1), got {attention_dropout!r}")
        _require_int("fsmn_inner_channels", fsmn_inner_channels)
        _require_int("fsmn_memory_order", fsmn_memory_order, maximum=MAX_WIDTH // 2)
        _require_int("fsmn_dilation_depth", fsmn_dilation_depth, maximum=16)
        if isinstance(fsmn_dropout, bool) or not isinstance(fsmn_dropout, (int, float)):
            raise ValueError(f"fsmn_dropout must be a number in [0, 1), got {fsmn_dropout!r}")
        if not 0.0 <= fsmn_dropout < 1.0:
            raise ValueError(f"fsmn_dropout must be in [0, 1), got {fsmn_dropout!r}")
        if not isinstance(causal, bool):
            raise ValueError(f"causal must be a bool, got {causal!r}")
        if norm_type not in NORM_TYPES:
            raise ValueError(f"norm_type must be one of {NORM_TYPES}, got {norm_type!r}")
        if not isinstance(decoder_bias, bool):
            raise ValueError(f"decoder_bias must be a bool, got {decoder_bias!r}")
        if not isinstance(permutation_invariant, bool):
            raise ValueError(f"permutation_invariant must be a bool, got {permutation_invariant!r}")

        self.sampling_rate = sampling_rate
        self.audio_channels = audio_channels
        self.source_names = source_names
        self.encoder_kernel_size = encoder_kernel_size
        self.encoder_stride = encoder_stride
        self.encoder_channels = encoder_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.group_size = group_size
        self.query_key_dim = query_key_dim
        self.expansion_factor = expansion_factor
        self.conv_kernel_size = conv_kernel_size
        self.max_rotary_dim = max_rotary_dim
        self.attention_dropout = float(attention_dropout)
        self.fsmn_inner_channels = fsmn_inner_channels
        self.fsmn_memory_order = fsmn_memory_order
        self.fsmn_dilation_depth = fsmn_dilation_depth
        self.fsmn_dropout = float(fsmn_dropout)
        self.causal = causal
        self.norm_type = norm_type
        self.decoder_bias = decoder_bias
        self.permutation_invariant = permutation_invariant
        super().__init__(**_without_locally_registered_pipelines(kwargs))

    @property
    def num_speakers(self) -> int:
        """Number of separated sources (`len(source_names)`)."""
        return len(self.source_names)

    @property
    def num_sources(self) -> int:
        return len(self.source_names)

    @property
    def intermediate_size(self) -> int:
        """Width of the value/gate projection (both halves together)."""
        return int(self.hidden_size * self.expansion_factor)

    @property
    def rotary_dim(self) -> int:
        return min(self.max_rotary_dim, self.query_key_dim)


# The released checkpoints' architectures (`MossFormer2Config(**MOSSFORMER2_PRESETS[name])`). Both are
# the paper's MossFormer2 (24 layers of width 512, FSMN width 256); they differ in sampling rate.
MOSSFORMER2_PRESETS: dict[str, dict[str, Any]] = {
    # ModelScope damo/speech_mossformer2_separation_temporal_8k (WSJ0-2mix 8 kHz)
    "modelscope-8k": {"sampling_rate": 8000},
    # ClearerVoice-Studio alibabasglab/MossFormer2_SS_16K (trained on 16 kHz mixtures)
    "clearvoice-16k": {"sampling_rate": 16000},
}


__all__ = ["MOSSFORMER2_PRESETS", "MossFormer2Config"]
