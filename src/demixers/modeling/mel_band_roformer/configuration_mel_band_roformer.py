"""Configuration of Mel-Band RoFormer, the mel-band rotary transformer music separator.

Mel-Band RoFormer (Wang et al., 2023, arXiv:2310.01809) is BS-RoFormer with overlapping bands: band
`k` holds the STFT bins where the `k`-th triangle of a mel filterbank (librosa's Slaney mel scale)
is non-zero, and the masks of bins that several bands cover are averaged.

The band map is stored in the config (`band_frequency_indices`), computed once by
`mel_band_frequency_indices` (numpy only, a bit-exact port of ``librosa.filters.mel``'s support), so
running a model never needs librosa.

The defaults reproduce KimberleyJensen's vocals Mel-Band RoFormer as MSST runs it (dim 384, depth 6,
60 bands, stereo, ``n_fft`` 2048, hop 441, mask MLPs with 2 hidden layers; about 228M parameters).
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
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


# Copied from demixers.modeling.bs_roformer.configuration_bs_roformer._require_bool
def _require_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")
    return value


# Copied from demixers.modeling.bs_roformer.configuration_bs_roformer._require_float
def _require_float(name: str, value: Any, minimum: float = 0.0, maximum: float = float("inf")) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be a number in [{minimum}, {maximum}], got {value!r}")
    return float(value)


# Copied from demixers.modeling.bs_roformer.configuration_bs_roformer._require_int_list
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


# Copied from demixers.modeling.bs_roformer.configuration_bs_roformer._check_roformer_fields
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


def _hz_to_mel(frequencies: np.ndarray) -> np.ndarray:
    """librosa's Slaney mel scale: linear below 1 kHz, logarithmic above."""
    frequencies = np.asanyarray(frequencies, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = frequencies / f_sp
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = frequencies >= min_log_hz
    mels = np.where(
        above, min_log_mel + np.log(np.maximum(frequencies, min_log_hz) / min_log_hz) / logstep, mels
    )
    return mels


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asanyarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    frequencies = f_sp * mels
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    above = mels >= min_log_mel
    return np.where(above, min_log_hz * np.exp(logstep * (mels - min_log_mel)), frequencies)


def mel_filterbank(sampling_rate: int, n_fft: int, num_bands: int) -> np.ndarray:
    """``librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=num_bands)`` (Slaney scale and
    area normalisation, 0 Hz to Nyquist, float32): `(num_bands, n_fft // 2 + 1)`."""
    weights = np.zeros((num_bands, 1 + n_fft // 2), dtype=np.float32)
    fft_frequencies = np.fft.rfftfreq(n=n_fft, d=1.0 / sampling_rate)
    mel_points = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sampling_rate / 2.0), num_bands + 2))
    spacing = np.diff(mel_points)
    ramps = np.subtract.outer(mel_points, fft_frequencies)
    for band in range(num_bands):
        lower = -ramps[band] / spacing[band]
        upper = ramps[band + 2] / spacing[band + 1]
        weights[band] = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_points[2 : num_bands + 2] - mel_points[:num_bands]))[:, np.newaxis]
    return weights


def mel_band_frequency_indices(sampling_rate: int, n_fft: int, num_bands: int) -> list[list[int]]:
    """The STFT bins of each mel band: where its filter is non-zero.

    As both originals do, the first bin is forced into the first band and the last bin into the last
    (their triangles are zero there), so every bin belongs to at least one band.
    """
    weights = mel_filterbank(sampling_rate, n_fft, num_bands)
    weights[0, 0] = 1.0
    weights[-1, -1] = 1.0
    return [np.flatnonzero(row > 0).tolist() for row in weights]


def _check_band_frequency_indices(value: Any, num_bands: int, bins: int) -> list[list[int]]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != num_bands:
        raise ValueError(
            f"band_frequency_indices must hold one list of STFT bins per band ({num_bands}), got "
            f"{type(value).__name__} of length {len(value) if isinstance(value, Sequence) else '?'}"
        )
    bands = []
    covered = np.zeros(bins, dtype=bool)
    for band, indices in enumerate(value):
        indices = _require_int_list(
            f"band_frequency_indices[{band}]", indices, maximum=bins - 1, max_length=bins, minimum=0
        )
        if any(b <= a for a, b in itertools.pairwise(indices)):
            raise ValueError(f"band_frequency_indices[{band}] must be strictly increasing, got {indices!r}")
        covered[indices] = True
        bands.append(indices)
    if not covered.all():
        missing = np.flatnonzero(~covered).tolist()
        raise ValueError(f"band_frequency_indices leave STFT bins {missing[:10]} in no band")
    return bands


class MelBandRoformerConfig(PretrainedConfig):
    r"""Configuration of a [`MelBandRoformerForSourceSeparation`] model.

    The field names are those of MSST's yaml ``model:`` section. The fields shared with
    [`BSRoformerConfig`] mean the same (see there); these differ:

    Args:
        num_bands (`int`, defaults to 60): number of mel bands.
        band_frequency_indices (`list[list[int]]`, *optional*): the STFT bins of each band, ascending;
            bands may overlap and must cover every bin. Defaults to
            `mel_band_frequency_indices(sampling_rate, stft_n_fft, num_bands)`.
        mask_estimator_depth (`int`, defaults to 2): the per-band mask MLP has `mask_estimator_depth`
            hidden layers (one more than BS-RoFormer's for the same value).
        add_value_residual (`bool`, defaults to False): must stay False (lucidrains' Mel value residual
            is not supported; `add_value_residual: false` checkpoints convert).

    Every transformer (linear, time, frequency) ends with its own RMSNorm; there is no final norm.
    """

    model_type = "mel_band_roformer"
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
        dim: int = 384,
        depth: int = 6,
        time_transformer_depth: int = 1,
        freq_transformer_depth: int = 1,
        linear_transformer_depth: int = 0,
        num_bands: int = 60,
        band_frequency_indices: Sequence[Sequence[int]] | None = None,
        dim_head: int = 64,
        heads: int = 8,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
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
        if multi_stft_resolutions_window_sizes is None:
            multi_stft_resolutions_window_sizes = DEFAULT_MULTI_STFT_WINDOW_SIZES
        if source_names is None:
            source_names = ["vocals", "other"] if num_stems == 1 else [f"stem{i}" for i in range(num_stems)]
        fields = dict(locals())
        del fields["self"], fields["kwargs"], fields["__class__"]
        _check_roformer_fields(fields)
        if add_value_residual is not False:
            raise ValueError(
                f"add_value_residual must be False for Mel-Band RoFormer, got {add_value_residual!r} "
                "(lucidrains' Mel value residual is not supported)"
            )
        source_names = _check_source_names(source_names)
        if len(source_names) not in (num_stems, num_stems + 1):
            raise ValueError(
                f"source_names must name the {num_stems} stem(s) of num_stems, optionally followed by the "
                f"residual (mixture minus the stems), got {source_names!r}"
            )
        _require_int("num_bands", num_bands, minimum=2, maximum=dim_freqs_in)
        if band_frequency_indices is None:
            band_frequency_indices = mel_band_frequency_indices(sampling_rate, stft_n_fft, num_bands)
        band_frequency_indices = _check_band_frequency_indices(
            band_frequency_indices, num_bands, dim_freqs_in
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
        self.num_bands = num_bands
        self.band_frequency_indices = band_frequency_indices
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

    # Copied from demixers.modeling.bs_roformer.configuration_bs_roformer.BSRoformerConfig.has_residual
    @property
    def has_residual(self) -> bool:
        """Whether the last source is the residual `mixture - sum(stems)` rather than a mask's output."""
        return len(self.source_names) == self.num_stems + 1

    @property
    def band_input_sizes(self) -> list[int]:
        """Features per band entering the band split: real and imaginary parts of its bins, per channel."""
        return [2 * len(indices) * self.audio_channels for indices in self.band_frequency_indices]


__all__ = ["MelBandRoformerConfig", "mel_band_frequency_indices", "mel_filterbank"]
