"""Configuration of BS-RoFormer, the band-split rotary transformer music separator.

BS-RoFormer (Lu et al., 2023, arXiv:2309.02612) splits a stereo STFT into frequency bands, embeds
each band, runs `depth` pairs of (time transformer, frequency transformer) with rotary position
embeddings over the band embeddings, and estimates one complex mask per band and stem.

The defaults reproduce viperx's ``model_bs_roformer_ep_317_sdr_12.9755`` as Music-Source-Separation-
Training ("MSST") runs it today: dim 512, depth 12, 62 bands, stereo, ``n_fft`` 2048, hop 441, one
vocals stem (about 160M parameters). Every flag of MSST's ``model:`` section that changes the
network is a field here, pinned per checkpoint by the converter, so that code defaults drifting
upstream (``zero_dc`` became True in late 2025) cannot change a converted model.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from transformers import PretrainedConfig

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

# The 62 bands of the paper and of viperx's release (1025 bins of a 2048-point STFT).
DEFAULT_FREQS_PER_BANDS: tuple[int, ...] = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)
DEFAULT_MULTI_STFT_WINDOW_SIZES: tuple[int, ...] = (4096, 2048, 1024, 512, 256)


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


def _require_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


def _require_float(name: str, value: Any, minimum: float = 0.0, maximum: float = float("inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be a number in [{minimum}, {maximum}], got {value!r}")
    return float(value)


def _require_int_list(
    name: str, value: Any, maximum: int = MAX_WIDTH, max_length: int = 4096, minimum: int = 1
) -> list[int]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not value:
        raise ValueError(f"{name} must be a non-empty list of ints, got {value!r}")
    if len(value) > max_length:
        raise ValueError(f"{name} holds {len(value)} entries; at most {max_length} are supported")
    return [
        _require_int(f"{name}[{index}]", item, minimum=minimum, maximum=maximum)
        for index, item in enumerate(value)
    ]


def _check_roformer_fields(fields: dict[str, Any]) -> None:
    """Checks shared by both RoFormer families (the fields of MSST's ``model:`` section)."""
    _require_sampling_rate(fields["sampling_rate"])
    _require_int("audio_channels", fields["audio_channels"], maximum=2)
    for name in ("dim", "dim_head", "heads"):
        _require_int(name, fields[name])
    _require_int("depth", fields["depth"], maximum=MAX_DEPTH)
    _require_int("time_transformer_depth", fields["time_transformer_depth"], maximum=MAX_DEPTH)
    _require_int("freq_transformer_depth", fields["freq_transformer_depth"], maximum=MAX_DEPTH)
    _require_int("linear_transformer_depth", fields["linear_transformer_depth"], minimum=0, maximum=MAX_DEPTH)
    _require_int("num_stems", fields["num_stems"], maximum=MAX_SOURCES)
    _require_int("mask_estimator_depth", fields["mask_estimator_depth"], maximum=MAX_DEPTH)
    _require_int("mlp_expansion_factor", fields["mlp_expansion_factor"], maximum=64)
    _require_float("attn_dropout", fields["attn_dropout"], maximum=1.0)
    _require_float("ff_dropout", fields["ff_dropout"], maximum=1.0)
    for name in (
        "flash_attn",
        "sage_attention",
        "stft_normalized",
        "zero_dc",
        "skip_connection",
        "use_torch_checkpoint",
        "use_pope",
        "multi_stft_normalized",
        "permutation_invariant",
    ):
        _require_bool(name, fields[name])
    if fields["use_pope"]:
        raise ValueError(
            "use_pope=True (PoPE positions instead of rotary embeddings) is not supported; "
            "no released checkpoint uses it"
        )
    n_fft = _require_int("stft_n_fft", fields["stft_n_fft"], minimum=2)
    hop = _require_int("stft_hop_length", fields["stft_hop_length"])
    win = _require_int("stft_win_length", fields["stft_win_length"])
    if win > n_fft:
        raise ValueError(f"stft_win_length ({win}) must not exceed stft_n_fft ({n_fft})")
    if hop > win:
        raise ValueError(f"stft_hop_length ({hop}) must not exceed stft_win_length ({win})")
    if fields["dim_freqs_in"] != n_fft // 2 + 1:
        raise ValueError(
            f"dim_freqs_in must be stft_n_fft // 2 + 1 = {n_fft // 2 + 1} (the STFT bins), "
            f"got {fields['dim_freqs_in']!r}"
        )
    _require_float("multi_stft_resolution_loss_weight", fields["multi_stft_resolution_loss_weight"])
    _require_int_list(
        "multi_stft_resolutions_window_sizes", fields["multi_stft_resolutions_window_sizes"], max_length=64
    )
    _require_int("multi_stft_hop_size", fields["multi_stft_hop_size"])
    _require_int("chunk_size", fields["chunk_size"], minimum=hop, maximum=1 << 28)
    _require_int("num_overlap", fields["num_overlap"], maximum=1024)


class BSRoformerConfig(PretrainedConfig):
    r"""Configuration of a [`BSRoformerForSourceSeparation`] model.

    The field names are those of MSST's yaml ``model:`` section, so a converted config reads like
    its source.

    Args:
        sampling_rate (`int`, defaults to 44100): sampling rate of the audio the model works on.
        audio_channels (`int`, defaults to 2): 2 for a stereo model (MSST's ``stereo: true``), 1 for mono.
        source_names (`list[str]`, *optional*): `num_stems` names (one per mask estimator, in order),
            optionally followed by one more name for the residual `mixture - sum(stems)`. Defaults to
            `["vocals", "other"]`: the release predicts vocals, MSST derives "other" as the residual.
        num_stems (`int`, defaults to 1): number of mask estimators (predicted stems).
        dim (`int`, defaults to 512): width of the band embeddings and of the transformers.
        depth (`int`, defaults to 12): number of (time transformer, frequency transformer) layers.
        time_transformer_depth (`int`, defaults to 1): transformer blocks along time per layer.
        freq_transformer_depth (`int`, defaults to 1): transformer blocks across bands per layer.
        linear_transformer_depth (`int`, defaults to 0): blocks of linear (cross-covariance)
            attention over all (time, band) positions before each layer's time transformer.
        freqs_per_bands (`list[int]`, defaults to the 62 bands of the paper): STFT bins per band, low to
            high; they must add up to `stft_n_fft // 2 + 1`.
        dim_head (`int`, defaults to 64) and heads (`int`, defaults to 8): attention heads.
        attn_dropout, ff_dropout (`float`, default 0.1): dropout in training (none in eval).
        flash_attn (`bool`, defaults to True): MSST's switch between fused and plain attention; both
            compute the same softmax attention, which this port always runs through
            `F.scaled_dot_product_attention`. Kept for provenance.
        sage_attention (`bool`, defaults to False): MSST's switch to the approximate SageAttention
            kernel (CUDA, 8-bit); the weights are the same, this port computes exact attention.
        dim_freqs_in (`int`, defaults to 1025): `stft_n_fft // 2 + 1` (checked).
        stft_n_fft, stft_hop_length, stft_win_length (`int`, default 2048, 441, 2048), stft_normalized
            (`bool`, default False): centred STFT with a periodic Hann window of `stft_win_length`.
        zero_dc (`bool`, defaults to True): zero the DC bin of the masked spectrogram (MSST's default
            since late 2025; audio-separator 0.47.1 ignores the flag and never zeroes it).
        mask_estimator_depth (`int`, defaults to 2): the per-band MLP has `mask_estimator_depth - 1`
            hidden layers (BS-RoFormer; Mel-RoFormer's has `mask_estimator_depth`).
        mlp_expansion_factor (`int`, defaults to 4): hidden width of the mask MLPs in units of `dim`.
        skip_connection (`bool`, defaults to False): MSST's dense skips: before layer `i`, the outputs
            of all earlier layers are added to its input.
        use_torch_checkpoint (`bool`, defaults to False): activation checkpointing in training.
        use_pope (`bool`, defaults to False): PoPE positions (not supported; must stay False).
        add_value_residual (`bool`, defaults to False): lucidrains' value residual learning (bs-roformer
            >= 1.0): attention layers after the first model layer mix their values with those of the
            first layer through a learnt per-head sigmoid gate.
        multi_stft_resolution_loss_weight, multi_stft_resolutions_window_sizes, multi_stft_hop_size,
            multi_stft_normalized: the training loss (L1 on waveforms plus this weight times the L1 of
            STFTs at each window size, n_fft `max(window, stft_n_fft)`, hop `multi_stft_hop_size`).
        chunk_size (`int`, defaults to 352800) and num_overlap (`int`, defaults to 2): MSST's
            ``audio.chunk_size`` and ``inference.num_overlap`` (chunked inference reads them).
        permutation_invariant (`bool`, defaults to False): named stems in a fixed order.
    """

    model_type = "bs_roformer"
    # Chunked inference follows MSST's `demix` (demixers.pipelines.chunking): `chunk_size`-sample
    # chunks every `chunk_size // num_overlap` samples over the reflect-padded track, linear fades of
    # a tenth of a chunk, the last chunk completed by reflection (or zeros when under half a chunk).
    chunk_layout = "padded_from_start"
    chunk_window = "linear_fade"
    chunk_context = "reflect_pad"

    def __init__(
        self,
        sampling_rate: int = 44100,
        audio_channels: int = 2,
        source_names: Sequence[str] | None = None,
        num_stems: int = 1,
        dim: int = 512,
        depth: int = 12,
        time_transformer_depth: int = 1,
        freq_transformer_depth: int = 1,
        linear_transformer_depth: int = 0,
        freqs_per_bands: Sequence[int] | None = None,
        dim_head: int = 64,
        heads: int = 8,
        attn_dropout: float = 0.1,
        ff_dropout: float = 0.1,
        flash_attn: bool = True,
        sage_attention: bool = False,
        dim_freqs_in: int = 1025,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 441,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        zero_dc: bool = True,
        mask_estimator_depth: int = 2,
        mlp_expansion_factor: int = 4,
        skip_connection: bool = False,
        use_torch_checkpoint: bool = False,
        use_pope: bool = False,
        add_value_residual: bool = False,
        multi_stft_resolution_loss_weight: float = 1.0,
        multi_stft_resolutions_window_sizes: Sequence[int] | None = None,
        multi_stft_hop_size: int = 147,
        multi_stft_normalized: bool = False,
        chunk_size: int = 352800,
        num_overlap: int = 2,
        permutation_invariant: bool = False,
        **kwargs: Any,
    ) -> None:
        if freqs_per_bands is None:
            freqs_per_bands = DEFAULT_FREQS_PER_BANDS
        if multi_stft_resolutions_window_sizes is None:
            multi_stft_resolutions_window_sizes = DEFAULT_MULTI_STFT_WINDOW_SIZES
        if source_names is None:
            source_names = ["vocals", "other"] if num_stems == 1 else [f"stem{i}" for i in range(num_stems)]
        fields = dict(locals())
        del fields["self"], fields["kwargs"], fields["__class__"]
        _check_roformer_fields(fields)
        _require_bool("add_value_residual", add_value_residual)
        source_names = _check_source_names(source_names)
        if len(source_names) not in (num_stems, num_stems + 1):
            raise ValueError(
                f"source_names must name the {num_stems} stem(s) of num_stems, optionally followed by the "
                f"residual (mixture minus the stems), got {source_names!r}"
            )
        freqs_per_bands = _require_int_list("freqs_per_bands", freqs_per_bands)
        if len(freqs_per_bands) < 2:
            raise ValueError(f"freqs_per_bands must hold at least 2 bands, got {freqs_per_bands!r}")
        if sum(freqs_per_bands) != dim_freqs_in:
            raise ValueError(
                f"freqs_per_bands must add up to the {dim_freqs_in} STFT bins of stft_n_fft {stft_n_fft}, "
                f"got {sum(freqs_per_bands)}"
            )

        self.sampling_rate = sampling_rate
        self.audio_channels = audio_channels
        self.source_names = source_names
        self.num_stems = num_stems
        self.dim = dim
        self.depth = depth
        self.time_transformer_depth = time_transformer_depth
        self.freq_transformer_depth = freq_transformer_depth
        self.linear_transformer_depth = linear_transformer_depth
        self.freqs_per_bands = freqs_per_bands
        self.dim_head = dim_head
        self.heads = heads
        self.attn_dropout = float(attn_dropout)
        self.ff_dropout = float(ff_dropout)
        self.flash_attn = flash_attn
        self.sage_attention = sage_attention
        self.dim_freqs_in = dim_freqs_in
        self.stft_n_fft = stft_n_fft
        self.stft_hop_length = stft_hop_length
        self.stft_win_length = stft_win_length
        self.stft_normalized = stft_normalized
        self.zero_dc = zero_dc
        self.mask_estimator_depth = mask_estimator_depth
        self.mlp_expansion_factor = mlp_expansion_factor
        self.skip_connection = skip_connection
        self.use_torch_checkpoint = use_torch_checkpoint
        self.use_pope = use_pope
        self.add_value_residual = add_value_residual
        self.multi_stft_resolution_loss_weight = float(multi_stft_resolution_loss_weight)
        self.multi_stft_resolutions_window_sizes = list(multi_stft_resolutions_window_sizes)
        self.multi_stft_hop_size = multi_stft_hop_size
        self.multi_stft_normalized = multi_stft_normalized
        self.chunk_size = chunk_size
        self.num_overlap = num_overlap
        self.permutation_invariant = permutation_invariant
        super().__init__(**_without_locally_registered_pipelines(kwargs))

    # Copied from demixers.modeling.mossformer.configuration_mossformer.MossFormerConfig.num_sources
    @property
    def num_sources(self) -> int:
        return len(self.source_names)

    @property
    def has_residual(self) -> bool:
        """Whether the last source is the residual `mixture - sum(stems)` rather than a mask's output."""
        return len(self.source_names) == self.num_stems + 1

    @property
    def band_input_sizes(self) -> list[int]:
        """Features per band entering the band split: real and imaginary parts of its bins, per channel."""
        return [2 * bins * self.audio_channels for bins in self.freqs_per_bands]


__all__ = ["BSRoformerConfig"]
