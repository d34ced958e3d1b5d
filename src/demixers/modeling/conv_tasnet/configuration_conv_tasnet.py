"""Configuration of Conv-TasNet, the fully convolutional time-domain audio separation network.

The defaults are the best non-causal configuration of Luo & Mesgarani, "Conv-TasNet: Surpassing
Ideal Time-Frequency Magnitude Masking for Speech Separation" (IEEE/ACM TASLP 2019,
arXiv:1809.07454), Table I: N=512 filters of L=16 samples (hop 8), B=128 bottleneck channels,
H=512 hidden channels, Sc=128 skip channels, P=3, X=8 blocks, R=3 repeats, global layer norm,
sigmoid masks; 2 speakers at 8 kHz (WSJ0-2mix / Libri2Mix). This is also asteroid's `ConvTasNet`
architecture, whose checkpoints convert exactly.

Two sets of switches cover the other published variants without changing the module tree:

* asteroid / the paper: biases in the separator convolutions, a PReLU before the mask
  convolution, skip connections, the input normalised with `norm_type`;
* the demucs v2 ``tasnet`` music release (Kaituo Xu's implementation): no biases
  (``separator_bias=False``), no PReLU before the mask convolution (``mask_prelu=False``), no
  skip path (``skip_channels=0``: the masks come from the residual stream), a channel-wise layer
  norm on the input (``input_norm_type="cln"``), a ReLU after the encoder
  (``encoder_activation="relu"``), ReLU masks, stereo in and out.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from transformers import PretrainedConfig

NORM_TYPES = ("gln", "cln", "cgln", "bn", "id")
MASK_ACTIVATIONS = ("sigmoid", "relu", "softmax", "tanh", "linear")
ENCODER_ACTIVATIONS = ("linear", "relu")


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


def _require_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def _require_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value.lower()


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


class ConvTasNetConfig(PretrainedConfig):
    r"""Configuration of a [`ConvTasNetForSourceSeparation`] model.

    Args:
        sampling_rate (`int`, defaults to 8000): sampling rate of the audio the model works on.
        audio_channels (`int`, defaults to 1): channels of the mixture and of every source (the
            encoder reads all channels at once, the decoder writes all of them).
        source_names (`list[str]`, defaults to `["speaker_1", "speaker_2"]`): one name per separated
            source, in output order.
        num_speakers (`int`, *optional*): number of sources when `source_names` is omitted (names
            `speaker_1` ... `speaker_{num_speakers}`). Not stored.
        encoder_channels (`int`, defaults to 512): number of encoder/decoder filters (N).
        encoder_kernel_size (`int`, defaults to 16): length of the filters in samples (L).
        encoder_stride (`int`, *optional*): hop of the encoder/decoder; `encoder_kernel_size // 2`
            (50% overlap) when omitted.
        encoder_activation (`str`, defaults to `"linear"`): `"linear"` (the paper, asteroid) or
            `"relu"` (non-negative features, as in the demucs v2 release).
        bottleneck_channels (`int`, defaults to 128): channels of the residual path (B).
        hidden_channels (`int`, defaults to 512): channels inside each convolutional block (H).
        skip_channels (`int`, defaults to 128): channels of the skip-connection path (Sc); 0 means no
            skip path, the masks are then computed from the residual stream (the paper's v1 design).
        conv_kernel_size (`int`, defaults to 3): kernel of the depthwise convolutions (P); odd unless
            `causal`.
        num_blocks (`int`, defaults to 8): blocks per repeat (X); block `x` has dilation `2**x`.
        num_repeats (`int`, defaults to 3): number of repeats (R).
        norm_type (`str`, defaults to `"gln"`): normalisation inside the blocks: `"gln"` (global
            layer norm), `"cln"` (channel-wise layer norm), `"cgln"` (cumulative global layer norm,
            causal), `"bn"` (batch norm) or `"id"` (none).
        input_norm_type (`str`, *optional*): normalisation of the encoder features before the
            bottleneck; `norm_type` when omitted.
        causal (`bool`, defaults to `False`): causal depthwise convolutions (left padding only). A
            causal model needs causal normalisations (`cln`, `cgln`, `bn` or `id`).
        mask_activation (`str`, defaults to `"sigmoid"`): `"sigmoid"`, `"relu"`, `"softmax"` (over the
            sources), `"tanh"` or `"linear"`.
        mask_prelu (`bool`, defaults to `True`): PReLU before the mask convolution.
        separator_bias (`bool`, defaults to `True`): biases of the separator's convolutions.
        segment (`float`, *optional*): training segment in seconds; the pipeline uses it as its
            default chunk length.
        permutation_invariant (`bool`, *optional*): whether the sources are unordered speakers (the loss
            is then permutation-invariant SI-SNR and the pipeline aligns them across chunks) or named
            stems in a fixed order (L1 loss). Saved in config.json; when omitted, True for speakers
            named by their count (`speaker_1` ... `speaker_N`, the default), False for other names.
        normalize_input (`bool`, defaults to `False`): ask the pipeline to standardise the whole input
            by the mean and standard deviation of its mono mix (and to undo it on the sources), as
            demucs' `separate` does for its tasnet release. `forward` itself never normalises.
    """

    model_type = "conv_tasnet"

    def __init__(
        self,
        sampling_rate: int = 8000,
        audio_channels: int = 1,
        source_names: Sequence[str] | None = None,
        num_speakers: int | None = None,
        encoder_channels: int = 512,
        encoder_kernel_size: int = 16,
        encoder_stride: int | None = None,
        encoder_activation: str = "linear",
        bottleneck_channels: int = 128,
        hidden_channels: int = 512,
        skip_channels: int = 128,
        conv_kernel_size: int = 3,
        num_blocks: int = 8,
        num_repeats: int = 3,
        norm_type: str = "gln",
        input_norm_type: str | None = None,
        causal: bool = False,
        mask_activation: str = "sigmoid",
        mask_prelu: bool = True,
        separator_bias: bool = True,
        segment: float | None = None,
        permutation_invariant: bool | None = None,
        normalize_input: bool = False,
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
        _require_int("hidden_channels", hidden_channels)
        _require_int("skip_channels", skip_channels, minimum=0)
        _require_int("conv_kernel_size", conv_kernel_size)
        # block x is dilated 2**x: past 2**15 the padding alone would be gigabytes
        _require_int("num_blocks", num_blocks, maximum=16)
        _require_int("num_repeats", num_repeats, maximum=MAX_DEPTH)
        norm_type = _require_choice("norm_type", norm_type, NORM_TYPES)
        if input_norm_type is None:
            input_norm_type = norm_type
        input_norm_type = _require_choice("input_norm_type", input_norm_type, NORM_TYPES)
        _require_bool("causal", causal)
        if not causal and conv_kernel_size % 2 == 0:
            raise ValueError(
                f"conv_kernel_size must be odd for a non-causal model ('same' padding), "
                f"got {conv_kernel_size}"
            )
        if causal and norm_type == "gln":
            raise ValueError(
                "norm_type 'gln' uses statistics of the whole signal and breaks causality; "
                "use 'cln' or 'cgln' with causal=True"
            )
        if causal and input_norm_type == "gln":
            raise ValueError("input_norm_type 'gln' breaks causality; use 'cln' or 'cgln' with causal=True")
        mask_activation = _require_choice("mask_activation", mask_activation, MASK_ACTIVATIONS)
        _require_bool("mask_prelu", mask_prelu)
        _require_bool("separator_bias", separator_bias)
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
        _require_bool("normalize_input", normalize_input)

        self.sampling_rate = sampling_rate
        self.audio_channels = audio_channels
        self.source_names = source_names
        self.encoder_channels = encoder_channels
        self.encoder_kernel_size = encoder_kernel_size
        self.encoder_stride = encoder_stride
        self.encoder_activation = encoder_activation
        self.bottleneck_channels = bottleneck_channels
        self.hidden_channels = hidden_channels
        self.skip_channels = skip_channels
        self.conv_kernel_size = conv_kernel_size
        self.num_blocks = num_blocks
        self.num_repeats = num_repeats
        self.norm_type = norm_type
        self.input_norm_type = input_norm_type
        self.causal = causal
        self.mask_activation = mask_activation
        self.mask_prelu = mask_prelu
        self.separator_bias = separator_bias
        self.segment = segment
        self.permutation_invariant = permutation_invariant
        self.normalize_input = normalize_input
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

    @property
    def receptive_field(self) -> int:
        """Receptive field of the separator in encoder frames: `1 + R (P - 1) (2^X - 1)`."""
        return 1 + self.num_repeats * (self.conv_kernel_size - 1) * (2**self.num_blocks - 1)

    @property
    def receptive_field_samples(self) -> int:
        """Receptive field of one output frame in input samples (frames to samples through the encoder)."""
        return (self.receptive_field - 1) * self.encoder_stride + self.encoder_kernel_size


__all__ = ["ConvTasNetConfig"]
