"""Configurations of the Demucs family: waveform Demucs (v2/v3), Hybrid Demucs (v3), Hybrid
Transformer Demucs (v4) and bags of them (``htdemucs_ft``, ``mdx*``).

Every default reproduces a released model: `DemucsConfig` the v2 ``demucs`` waveform U-Net,
`HDemucsConfig` the v3 ``hdemucs_mmi`` and `HTDemucsConfig` the v4 ``htdemucs``. ``segment`` is the
length (seconds) the model was trained on; chunked inference uses it as its window, and HTDemucs
needs it to pad every input to the trained length.

This module only imports ``transformers`` and the standard library so that it can be saved as
hub remote code.
"""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, ClassVar

from transformers import PretrainedConfig

DEFAULT_SOURCES = ("drums", "bass", "other", "vocals")
TRANSFORMER_EMBEDDINGS = ("sin", "cape", "scaled")


# with _require_int->_require_int
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


def _check_number(
    name: str,
    value: Any,
    minimum: float | None = None,
    strict: bool = False,
    maximum: float | None = None,
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value < minimum or (strict and value == minimum)):
        relation = ">" if strict else ">="
        raise ValueError(f"{name} must be {relation} {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value!r}")
    return value


def segment_samples(segment: float, sampling_rate: int) -> int:
    """Number of samples in ``segment`` seconds, floored like the reference's ``int(segment * sr)``.

    ``segment`` is stored as a float (7.8 for ``htdemucs``, whose checkpoint holds ``Fraction(39, 5)``),
    so it is turned back into the nearest simple fraction first: a float product such as
    ``7.8 * 44100 = 343979.99999...`` must not lose a sample.
    """
    return int(Fraction(segment).limit_denominator(1_000_000) * sampling_rate)


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


class _DemucsCommonConfig(PretrainedConfig):
    """Fields shared by every Demucs model: audio format, source names and training segment."""

    # demucs.separate standardises the whole track by its mono mix's mean/std before chunking and
    # undoes it afterwards; the pipeline does the same for every config with this flag.
    normalize_input = True
    # Chunking policy (demixers.pipelines.chunking), demucs.apply.apply_model's: chunks start every
    # int((1 - overlap) * segment) samples from 0 and the last ones are cut at the end of the input;
    # each is weighted by a segment-long triangle to `chunk_transition_power`; a chunk is centred in
    # the length the model wants (`valid_length`; HTDemucs: the segment) with the audio around it as
    # context. Shift offsets are apply_model's (uniform in [0, 0.5 s], input delayed by 0.5 s - offset).
    chunk_window = "triangle"
    chunk_transition_power = 1.0
    chunk_layout = "from_start"
    chunk_context = "valid_length"

    def _set_common(
        self,
        sampling_rate: int,
        audio_channels: int,
        source_names: Sequence[str] | None,
        segment: float,
        permutation_invariant: bool = False,
    ) -> None:
        # Named stems (drums, bass, ...), not interchangeable speakers: no cross-chunk permutation search.
        if not isinstance(permutation_invariant, bool):
            raise ValueError(f"permutation_invariant must be a bool, got {permutation_invariant!r}")
        self.permutation_invariant = permutation_invariant
        self.sampling_rate = _require_sampling_rate(sampling_rate)
        self.audio_channels = _require_int("audio_channels", audio_channels, maximum=MAX_AUDIO_CHANNELS)
        self.source_names = _check_source_names(DEFAULT_SOURCES if source_names is None else source_names)
        self.segment = float(
            _check_number("segment", segment, minimum=0.0, strict=True, maximum=MAX_SEGMENT_SECONDS)
        )

    # Copied from demixers.modeling.mossformer.configuration_mossformer.MossFormerConfig.num_sources
    @property
    def num_sources(self) -> int:
        return len(self.source_names)

    @property
    def segment_length(self) -> int:
        """The training segment in samples."""
        return segment_samples(self.segment, self.sampling_rate)

    def architecture_dict(self) -> dict[str, Any]:
        """This config's own fields (its ``__init__`` arguments) and ``model_type``: what a bag stores."""
        parameters = inspect.signature(type(self).__init__).parameters
        values = {name: getattr(self, name) for name in parameters if name not in ("self", "kwargs")}
        values["model_type"] = self.model_type
        return values


def _check_layer_widths(config: Any) -> None:
    """The deepest layer has ``channels * growth ** (depth - 1)`` channels: bound it, not only its factors."""
    _require_int("depth", config.depth, maximum=MAX_DEPTH)
    _check_number("growth", config.growth, minimum=0.0, strict=True, maximum=16)
    deepest = config.channels * config.growth ** (config.depth - 1)
    if deepest > MAX_WIDTH:
        raise ValueError(
            f"channels * growth ** (depth - 1) = {deepest:g} channels in the deepest layer (channels="
            f"{config.channels}, growth={config.growth}, depth={config.depth}); at most {MAX_WIDTH}"
        )


def _check_dconv(config: Any) -> None:
    if config.dconv_mode not in (0, 1, 2, 3):
        raise ValueError(
            f"dconv_mode must be 0 (none), 1 (encoder), 2 (decoder) or 3 (both), got {config.dconv_mode!r}"
        )
    _require_int("dconv_depth", config.dconv_depth, maximum=MAX_DEPTH)
    _check_number("dconv_comp", config.dconv_comp, minimum=0.0, strict=True)
    _check_number("dconv_init", config.dconv_init)
    _require_int("norm_groups", config.norm_groups)
    _require_int("norm_starts", config.norm_starts, minimum=0)
    _check_number("rescale", config.rescale, minimum=0.0)
    _check_layer_widths(config)
    if config.dconv_mode and int(config.channels / config.dconv_comp) < 1:
        raise ValueError(
            f"dconv_comp={config.dconv_comp} leaves no channel in the DConv branches of "
            f"a {config.channels}-channel layer"
        )


class DemucsConfig(_DemucsCommonConfig):
    r"""Configuration of [`DemucsForSourceSeparation`], the waveform U-Net Demucs.

    The defaults are the v2 release (``demucs``: 64 channels, depth 6, growth 2, kernel 8 / stride 4,
    decoder context 3, a 2-layer BiLSTM bottleneck, GLU rewrites, ReLU, x2 internal resampling,
    weight rescaling 0.1, no normalisation layers and no DConv branches). The v3 waveform models of
    the ``mdx`` bags use the same class with GELU, group norms from layer 4 and DConv residual branches.

    Args:
        sampling_rate (`int`, defaults to 44100), audio_channels (`int`, defaults to 2),
        source_names (`list[str]`, defaults to drums/bass/other/vocals): audio format and outputs.
        segment (`float`, defaults to 40.0): chunk length (seconds) for chunked inference.
        channels (`int`): channels of the first encoder layer; growth (`float`): channel multiplier
            per layer; depth (`int`): number of encoder/decoder layers.
        rewrite (`bool`): 1x1 (encoder) / ``2 * context + 1`` (decoder) convolutions after each layer.
        lstm_layers (`int`): BiLSTM layers at the bottleneck (0 = none).
        kernel_size, stride (`int`): the strided (transposed) convolutions; context (`int`): decoder
            rewrite context.
        gelu (`bool`): GELU instead of ReLU; glu (`bool`): GLU (else ReLU) after the rewrites.
        norm_starts (`int`): first layer with GroupNorm(``norm_groups``) (``>= depth``: no norm).
        dconv_mode (`int`): DConv residual branches (0 none, 1 encoder, 2 decoder, 3 both), with
            ``dconv_depth`` layers, compression ``dconv_comp``, LayerScale init ``dconv_init``, local
            attention from layer ``dconv_attn`` and BiLSTMs from layer ``dconv_lstm``.
        normalize (`bool`): standardise each input inside the forward (mean/std of the mono mix).
        resample (`bool`): upsample x2 before the encoder and downsample after the decoder.
        rescale (`float`): initial weight rescaling reference (0 = off).
    """

    model_type = "demucs"

    def __init__(
        self,
        sampling_rate: int = 44100,
        audio_channels: int = 2,
        source_names: Sequence[str] | None = None,
        segment: float = 40.0,
        channels: int = 64,
        growth: float = 2.0,
        depth: int = 6,
        rewrite: bool = True,
        lstm_layers: int = 2,
        kernel_size: int = 8,
        stride: int = 4,
        context: int = 3,
        gelu: bool = False,
        glu: bool = True,
        norm_starts: int = 6,
        norm_groups: int = 4,
        dconv_mode: int = 0,
        dconv_depth: int = 2,
        dconv_comp: float = 4,
        dconv_attn: int = 4,
        dconv_lstm: int = 4,
        dconv_init: float = 1e-4,
        normalize: bool = False,
        resample: bool = True,
        rescale: float = 0.1,
        permutation_invariant: bool = False,
        **kwargs: Any,
    ) -> None:
        self._set_common(sampling_rate, audio_channels, source_names, segment, permutation_invariant)
        self.channels = _require_int("channels", channels)
        self.growth = _check_number("growth", growth, minimum=0.0, strict=True)
        self.depth = _require_int("depth", depth, maximum=MAX_DEPTH)
        self.rewrite = bool(rewrite)
        self.lstm_layers = _require_int("lstm_layers", lstm_layers, minimum=0, maximum=MAX_DEPTH)
        self.kernel_size = _require_int("kernel_size", kernel_size)
        self.stride = _require_int("stride", stride)
        # the waveform U-Net pads every input to a multiple of about stride ** depth samples
        if self.stride**self.depth > 1 << 32:
            raise ValueError(f"stride ** depth = {stride}**{depth} exceeds 2**32 samples of padding")
        self.context = _require_int("context", context, minimum=0)
        self.gelu = bool(gelu)
        self.glu = bool(glu)
        self.norm_starts = norm_starts
        self.norm_groups = norm_groups
        self.dconv_mode = dconv_mode
        self.dconv_depth = dconv_depth
        self.dconv_comp = dconv_comp
        self.dconv_attn = _require_int("dconv_attn", dconv_attn, minimum=0)
        self.dconv_lstm = _require_int("dconv_lstm", dconv_lstm, minimum=0)
        self.dconv_init = dconv_init
        self.normalize = bool(normalize)
        self.resample = bool(resample)
        self.rescale = rescale
        _check_dconv(self)
        super().__init__(**_without_locally_registered_pipelines(kwargs))


class _HybridConfigMixin:
    """Validation shared by the two hybrid (time + spectrogram) models."""

    # ``nfft`` is the name of the reference implementation and of configs saved before the rename to
    # the transformers-style ``n_fft`` (DTTNet, stacked hourglass): reading it keeps working.
    attribute_map: ClassVar[dict[str, str]] = {"nfft": "n_fft"}

    def _check_hybrid(self) -> int:
        """Validate; return the number of encoder layers after the frequency axis is one bin."""
        _require_int("channels", self.channels)
        if self.channels_time is not None:
            _require_int("channels_time", self.channels_time)
        _require_int("growth", self.growth)
        _require_int("depth", self.depth, maximum=MAX_DEPTH)
        _require_int("kernel_size", self.kernel_size)
        _require_int("stride", self.stride)
        _require_int("time_stride", self.time_stride)
        _require_int("context", self.context, minimum=0)
        _require_int("context_enc", self.context_enc, minimum=0)
        nfft = _require_int("n_fft (formerly nfft)", self.n_fft, minimum=4)
        if nfft % 4:
            raise ValueError(f"n_fft (formerly nfft) must be a multiple of 4 (hop = n_fft // 4), got {nfft}")
        if not self.cac:
            raise ValueError(
                "cac=False (magnitude masking with Wiener filtering) is not supported: every released "
                "hybrid model uses complex-as-channels (cac=True)"
            )
        if self.multi_freqs:
            raise ValueError(
                "multi_freqs (frequency-band MultiWrap layers) is not supported: no released model uses it"
            )
        _check_number("freq_emb", self.freq_emb, minimum=0.0)
        _check_number("emb_scale", self.emb_scale, minimum=0.0, strict=True)
        _check_dconv(self)
        freqs = nfft // 2
        time_layers = 0
        for _ in range(self.depth):
            if freqs <= 1:
                time_layers += 1
                continue
            if freqs <= self.kernel_size:
                freqs = 1
            else:
                if freqs % self.stride:
                    raise ValueError(
                        f"n_fft={nfft} with stride={self.stride}: {freqs} frequency bins "
                        "cannot be split evenly"
                    )
                freqs //= self.stride
        return time_layers


class HDemucsConfig(_HybridConfigMixin, _DemucsCommonConfig):
    r"""Configuration of [`HDemucsForSourceSeparation`], Hybrid Demucs (v3).

    Defaults: the released ``hdemucs_mmi`` (48 channels, depth 6, growth 2, n_fft 4096, complex as
    channels, frequency embedding 0.2, DConv branches in the encoder with local attention and
    BiLSTMs from layer 4, group norms from layer 4, segment 44 s as its bag sets it).

    The time branch and the spectrogram branch are merged once the frequency axis is reduced to a
    single bin; ``hybrid=False`` keeps only the spectrogram branch and ``hybrid_old=True``
    reproduces the padding of the first MDX hybrid models. See `DemucsConfig` for the shared fields.
    """

    model_type = "hdemucs"

    def __init__(
        self,
        sampling_rate: int = 44100,
        audio_channels: int = 2,
        source_names: Sequence[str] | None = None,
        segment: float = 44.0,
        channels: int = 48,
        channels_time: int | None = None,
        growth: int = 2,
        n_fft: int = 4096,
        cac: bool = True,
        depth: int = 6,
        rewrite: bool = True,
        hybrid: bool = True,
        hybrid_old: bool = False,
        multi_freqs: Sequence[float] | None = None,
        freq_emb: float = 0.2,
        emb_scale: float = 10.0,
        emb_smooth: bool = True,
        kernel_size: int = 8,
        time_stride: int = 2,
        stride: int = 4,
        context: int = 1,
        context_enc: int = 0,
        norm_starts: int = 4,
        norm_groups: int = 4,
        dconv_mode: int = 1,
        dconv_depth: int = 2,
        dconv_comp: float = 4,
        dconv_attn: int = 4,
        dconv_lstm: int = 4,
        dconv_init: float = 1e-3,
        rescale: float = 0.1,
        permutation_invariant: bool = False,
        **kwargs: Any,
    ) -> None:
        self._set_common(sampling_rate, audio_channels, source_names, segment, permutation_invariant)
        self.channels = channels
        self.channels_time = channels_time
        self.growth = growth
        self.n_fft = kwargs.pop("nfft", n_fft)  # configs saved before the rename
        self.cac = bool(cac)
        self.depth = depth
        self.rewrite = bool(rewrite)
        self.hybrid = bool(hybrid)
        self.hybrid_old = bool(hybrid_old)
        if self.hybrid_old and not self.hybrid:
            raise ValueError("hybrid_old=True requires hybrid=True")
        self.multi_freqs = list(multi_freqs or [])
        self.freq_emb = freq_emb
        self.emb_scale = emb_scale
        self.emb_smooth = bool(emb_smooth)
        self.kernel_size = kernel_size
        self.time_stride = time_stride
        self.stride = stride
        self.context = context
        self.context_enc = context_enc
        self.norm_starts = norm_starts
        self.norm_groups = norm_groups
        self.dconv_mode = dconv_mode
        self.dconv_depth = dconv_depth
        self.dconv_comp = dconv_comp
        self.dconv_attn = _require_int("dconv_attn", dconv_attn, minimum=0)
        self.dconv_lstm = _require_int("dconv_lstm", dconv_lstm, minimum=0)
        self.dconv_init = dconv_init
        self.rescale = rescale
        self._check_hybrid()
        super().__init__(**_without_locally_registered_pipelines(kwargs))


class HTDemucsConfig(_HybridConfigMixin, _DemucsCommonConfig):
    r"""Configuration of [`HTDemucsForSourceSeparation`], Hybrid Transformer Demucs (v4).

    Defaults: the released ``htdemucs`` (48 channels, depth 4, n_fft 4096, DConv in encoder and
    decoder, 512 bottom channels, a 5-layer cross-domain transformer with 8 heads, sinusoidal
    positions, layer scale, GELU, trained on 7.8 s segments).

    With ``use_train_segment=True`` (the release) the model always runs on exactly
    ``segment * sampling_rate`` samples: shorter inputs are zero-padded on the right and the output
    trimmed back; longer ones are a ``ValueError`` (chunk them: the audio-source-separation pipeline does).

    Transformer fields (``t_*``): ``t_layers`` alternating self-/cross-attention layers per branch,
    ``t_heads`` heads, feed-forward width ``t_hidden_scale`` x channels, ``t_dropout``,
    ``t_emb`` positional embedding (``"sin"``, ``"cape"`` or ``"scaled"``) weighted by
    ``t_weight_pos_embed``, ``t_norm_in``/``t_norm_in_group`` input norms, ``t_group_norm`` group
    norms inside the layers, ``t_norm_first`` pre-norm, ``t_norm_out`` an output group norm per
    layer, ``t_layer_scale`` LayerScale, ``t_gelu`` GELU (else ReLU), ``t_cross_first`` starts with a
    cross-attention layer. ``bottom_channels`` adds 1x1 convolutions to and from that width around
    the transformer (0 = none).
    """

    # Chunking policy: apply_model pads every HTDemucs chunk to the segment (see _DemucsCommonConfig).
    chunk_context = "segment"

    model_type = "htdemucs"

    def __init__(
        self,
        sampling_rate: int = 44100,
        audio_channels: int = 2,
        source_names: Sequence[str] | None = None,
        segment: float = 7.8,
        use_train_segment: bool = True,
        channels: int = 48,
        channels_time: int | None = None,
        growth: int = 2,
        n_fft: int = 4096,
        cac: bool = True,
        depth: int = 4,
        rewrite: bool = True,
        multi_freqs: Sequence[float] | None = None,
        freq_emb: float = 0.2,
        emb_scale: float = 10.0,
        emb_smooth: bool = True,
        kernel_size: int = 8,
        time_stride: int = 2,
        stride: int = 4,
        context: int = 1,
        context_enc: int = 0,
        norm_starts: int = 4,
        norm_groups: int = 4,
        dconv_mode: int = 3,
        dconv_depth: int = 2,
        dconv_comp: float = 8,
        dconv_init: float = 1e-3,
        bottom_channels: int = 512,
        t_layers: int = 5,
        t_emb: str = "sin",
        t_hidden_scale: float = 4.0,
        t_heads: int = 8,
        t_dropout: float = 0.02,
        t_max_positions: int = 10000,
        t_norm_in: bool = True,
        t_norm_in_group: bool = False,
        t_group_norm: bool = False,
        t_norm_first: bool = True,
        t_norm_out: bool = True,
        t_max_period: float = 10000.0,
        t_layer_scale: bool = True,
        t_gelu: bool = True,
        t_weight_pos_embed: float = 1.0,
        t_sin_random_shift: int = 0,
        t_cape_mean_normalize: bool = True,
        t_cape_augment: bool = True,
        t_cape_glob_loc_scale: Sequence[float] = (5000.0, 1.0, 1.4),
        t_cross_first: bool = False,
        rescale: float = 0.1,
        permutation_invariant: bool = False,
        **kwargs: Any,
    ) -> None:
        self._set_common(sampling_rate, audio_channels, source_names, segment, permutation_invariant)
        self.use_train_segment = bool(use_train_segment)
        self.channels = channels
        self.channels_time = channels_time
        self.growth = growth
        self.n_fft = kwargs.pop("nfft", n_fft)  # configs saved before the rename
        self.cac = bool(cac)
        self.depth = depth
        self.rewrite = bool(rewrite)
        self.multi_freqs = list(multi_freqs or [])
        self.freq_emb = freq_emb
        self.emb_scale = emb_scale
        self.emb_smooth = bool(emb_smooth)
        self.kernel_size = kernel_size
        self.time_stride = time_stride
        self.stride = stride
        self.context = context
        self.context_enc = context_enc
        self.norm_starts = norm_starts
        self.norm_groups = norm_groups
        self.dconv_mode = dconv_mode
        self.dconv_depth = dconv_depth
        self.dconv_comp = dconv_comp
        self.dconv_init = dconv_init
        self.bottom_channels = _require_int("bottom_channels", bottom_channels, minimum=0)
        self.t_layers = _require_int("t_layers", t_layers, minimum=0, maximum=MAX_DEPTH)
        if t_emb not in TRANSFORMER_EMBEDDINGS:
            raise ValueError(f"t_emb must be one of {TRANSFORMER_EMBEDDINGS}, got {t_emb!r}")
        self.t_emb = t_emb
        self.t_hidden_scale = _check_number(
            "t_hidden_scale", t_hidden_scale, minimum=0.0, strict=True, maximum=64
        )
        self.t_heads = _require_int("t_heads", t_heads)
        self.t_dropout = _check_number("t_dropout", t_dropout, minimum=0.0)
        if self.t_dropout >= 1:
            raise ValueError(f"t_dropout must be < 1, got {t_dropout!r}")
        self.t_max_positions = _require_int("t_max_positions", t_max_positions, maximum=1 << 20)
        self.t_norm_in = bool(t_norm_in)
        self.t_norm_in_group = bool(t_norm_in_group)
        self.t_group_norm = bool(t_group_norm)
        self.t_norm_first = bool(t_norm_first)
        self.t_norm_out = bool(t_norm_out)
        self.t_max_period = _check_number("t_max_period", t_max_period, minimum=0.0, strict=True)
        self.t_layer_scale = bool(t_layer_scale)
        self.t_gelu = bool(t_gelu)
        self.t_weight_pos_embed = _check_number("t_weight_pos_embed", t_weight_pos_embed)
        self.t_sin_random_shift = _require_int("t_sin_random_shift", t_sin_random_shift, minimum=0)
        self.t_cape_mean_normalize = bool(t_cape_mean_normalize)
        self.t_cape_augment = bool(t_cape_augment)
        scales = [float(value) for value in t_cape_glob_loc_scale]
        if len(scales) != 3:
            raise ValueError(f"t_cape_glob_loc_scale must hold 3 numbers, got {t_cape_glob_loc_scale!r}")
        self.t_cape_glob_loc_scale = scales
        self.t_cross_first = bool(t_cross_first)
        self.rescale = rescale
        time_layers = self._check_hybrid()
        if self.t_layers and time_layers:
            raise ValueError(
                f"depth={self.depth} with n_fft={self.n_fft}: {time_layers} encoder layer(s) after the "
                "frequency axis is reduced to one bin; the transformer needs a spectral input "
                "(reduce depth or raise n_fft)"
            )
        if self.t_layers:
            width = self.transformer_channels
            if width % self.t_heads:
                raise ValueError(f"t_heads={self.t_heads} must divide the transformer width {width}")
            if width % 4:
                raise ValueError(
                    f"the transformer width {width} must be a multiple of 4 (2-D sinusoidal embedding)"
                )
        super().__init__(**_without_locally_registered_pipelines(kwargs))

    @property
    def transformer_channels(self) -> int:
        """Width of the cross-domain transformer."""
        if self.bottom_channels:
            return self.bottom_channels
        return self.channels * self.growth ** (self.depth - 1)


# Whitelist of the model types a bag may hold: data never names a class.
BAG_MEMBER_CONFIGS: dict[str, type[_DemucsCommonConfig]] = {
    DemucsConfig.model_type: DemucsConfig,
    HDemucsConfig.model_type: HDemucsConfig,
    HTDemucsConfig.model_type: HTDemucsConfig,
}


def member_config_from_dict(values: dict[str, Any]) -> _DemucsCommonConfig:
    """Build one bag member's config from its stored dict (``model_type`` picks the class)."""
    if not isinstance(values, dict):
        raise ValueError(f"models: each entry must be a config dict, got {type(values).__name__}")
    model_type = values.get("model_type")
    if model_type not in BAG_MEMBER_CONFIGS:
        raise ValueError(
            f"models: unknown model_type {model_type!r}; expected one of {sorted(BAG_MEMBER_CONFIGS)}"
        )
    fields = {key: value for key, value in values.items() if key != "model_type"}
    return BAG_MEMBER_CONFIGS[model_type](**fields)


class DemucsBagConfig(PretrainedConfig):
    r"""Configuration of [`DemucsBagForSourceSeparation`]: several Demucs models averaged per source.

    Args:
        models (`list[dict]`): one config dict per member (each with its ``model_type``: ``demucs``,
            ``hdemucs`` or ``htdemucs``). Defaults to a single default `HTDemucsConfig`.
        weights (`list[list[float]]`, *optional*): ``weights[i][k]`` is member ``i``'s weight for
            source ``k`` (``htdemucs_ft`` uses one-hot rows: each member owns one source). Defaults to
            all ones. Every source needs a positive total weight.
        segment (`float`, *optional*): the bag's segment override as stored in the release yaml
            (already applied to the members' ``segment`` by the converter, as the reference does).

    ``sampling_rate``, ``audio_channels`` and ``source_names`` come from the members, which must agree.
    """

    model_type = "demucs_bag"
    # demucs.separate standardises the whole track by its mono mix's mean/std before chunking and
    # undoes it afterwards; the pipeline does the same for every config with this flag.
    normalize_input = True

    def __init__(
        self,
        models: Sequence[dict[str, Any]] | None = None,
        weights: Sequence[Sequence[float]] | None = None,
        segment: float | None = None,
        **kwargs: Any,
    ) -> None:
        for key in ("sampling_rate", "audio_channels", "source_names"):
            kwargs.pop(key, None)  # derived from the members (a saved config.json repeats them)
        # the members' decision unless the bag's own config.json declares one
        permutation_invariant = kwargs.pop("permutation_invariant", None)
        if models is None:
            models = [HTDemucsConfig().architecture_dict()]
        if isinstance(models, (str, bytes)) or not isinstance(models, Sequence) or not models:
            raise ValueError(f"models must be a non-empty list of member config dicts, got {models!r}")
        if len(models) > MAX_SOURCES:
            raise ValueError(f"models: a bag of {len(models)} members; at most {MAX_SOURCES} are supported")
        members = [
            member if isinstance(member, _DemucsCommonConfig) else member_config_from_dict(dict(member))
            for member in models
        ]
        first = members[0]
        for index, member in enumerate(members[1:], start=1):
            for field in ("sampling_rate", "audio_channels", "source_names", "permutation_invariant"):
                if getattr(member, field) != getattr(first, field):
                    raise ValueError(
                        f"models: member {index} has {field}={getattr(member, field)!r} but member 0 has "
                        f"{getattr(first, field)!r}"
                    )
        self.models = [member.architecture_dict() for member in members]
        num_sources = len(first.source_names)
        if weights is None:
            rows = [[1.0] * num_sources for _ in members]
        else:
            rows = [[float(_check_number("weights", value)) for value in row] for row in weights]
            if len(rows) != len(members) or any(len(row) != num_sources for row in rows):
                raise ValueError(
                    f"weights must be {len(members)} rows (one per model) of {num_sources} values "
                    "(one per source)"
                )
        for source in range(num_sources):
            if sum(row[source] for row in rows) <= 0:
                raise ValueError(
                    f"weights: source {first.source_names[source]!r} has no positive total weight"
                )
        self.weights = rows
        if segment is not None:
            segment = float(
                _check_number("segment", segment, minimum=0.0, strict=True, maximum=MAX_SEGMENT_SECONDS)
            )
        self.segment = segment
        self.sampling_rate = first.sampling_rate
        self.audio_channels = first.audio_channels
        self.source_names = list(first.source_names)
        if permutation_invariant is None:
            permutation_invariant = first.permutation_invariant
        if not isinstance(permutation_invariant, bool):
            raise ValueError(f"permutation_invariant must be a bool, got {permutation_invariant!r}")
        self.permutation_invariant = permutation_invariant
        super().__init__(**_without_locally_registered_pipelines(kwargs))

    @property
    def member_configs(self) -> list[_DemucsCommonConfig]:
        return [member_config_from_dict(values) for values in self.models]
