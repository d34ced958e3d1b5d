"""Configuration of the stacked hourglass separator (Park et al., ISMIR 2018, arXiv:1805.08559).

The defaults reproduce the released MIR-1K model (sungheonpark/music_source_sepearation_SH_net,
``config.py`` ``NetConfig_MIR_1K``, name ``4stack_256_mir_1k``): mono audio resampled to 8 kHz,
STFT of 1024 points with hop 256, the lowest 512 bins of the magnitude spectrogram, 4 stacked
hourglasses of 256 channels with 4 max-pooling levels, one mask per source (accompaniment and
singing voice, in the corpus' left/right channel order). The DSD100 release is the same network with
four masks (``source_names=["bass", "drums", "other", "vocals"]``), also at 8 kHz mono.
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


class StackedHourglassConfig(PretrainedConfig):
    r"""Configuration of a [`StackedHourglassForSourceSeparation`] model.

    Args:
        sampling_rate (`int`, defaults to 8000): sampling rate of the audio the model works on (both
            releases resample their corpora to 8 kHz).
        audio_channels (`int`, defaults to 1): channels of the mixture. The network is mono: each
            channel is separated on its own (with its own magnitude normalisation).
        source_names (`list[str]`, defaults to `["accompaniment", "vocals"]`): one mask, in this order,
            per source.
        n_fft (`int`, defaults to 1024): STFT size (periodic Hann window, centred frames).
        hop_length (`int`, defaults to 256): STFT hop.
        num_bins (`int`, defaults to 512): lowest frequency bins given to the network (the release
            drops the Nyquist bin); the others are zero in the separated spectrograms.
        num_stacks (`int`, defaults to 4): stacked hourglass modules; each one predicts masks and
            contributes a term to the loss.
        hourglass_depth (`int`, defaults to 4): max-pooling levels per hourglass. Spectrograms are
            zero-padded to multiples of `2 ** hourglass_depth` frames and bins, and trimmed back.
        num_features (`int`, defaults to 256): channels of the hourglasses at full resolution.
        feature_growth (`int`, defaults to 0): channels added at every pooling level (0: the paper's
            constant 256 channels; `num_features=64, feature_growth=64` gives the variant with
            64 + 64 channels per level, i.e. 64, 128, 192, 256, 320 from the top level down).
        stem_channels (`list[int]`, defaults to `[64, 128]`): output channels of the first convolution
            (7x7) and of the three 3x3 convolutions that follow it, before the 3x3 projection to
            `num_features`.
        normalize_magnitude (`bool`, defaults to `True`): divide each magnitude spectrogram (and the
            targets of the loss) by its maximum, as the release does per track (here: per input).
        permutation_invariant (`bool`, defaults to `False`): named stems in a fixed order (music);
            True would make the pipeline align the sources across chunks and evaluation use PIT.
    """

    model_type = "stacked_hourglass"

    def __init__(
        self,
        sampling_rate: int = 8000,
        audio_channels: int = 1,
        source_names: Sequence[str] | None = None,
        n_fft: int = 1024,
        hop_length: int = 256,
        num_bins: int = 512,
        num_stacks: int = 4,
        hourglass_depth: int = 4,
        num_features: int = 256,
        feature_growth: int = 0,
        stem_channels: Sequence[int] | None = None,
        normalize_magnitude: bool = True,
        permutation_invariant: bool = False,
        **kwargs: Any,
    ) -> None:
        _require_sampling_rate(sampling_rate)
        _require_int("audio_channels", audio_channels, maximum=MAX_AUDIO_CHANNELS)
        if source_names is None:
            source_names = ["accompaniment", "vocals"]
        source_names = _check_source_names(source_names)
        _require_int("n_fft", n_fft, minimum=2)
        _require_int("hop_length", hop_length)
        if hop_length > n_fft:
            raise ValueError(f"hop_length ({hop_length}) must not exceed n_fft ({n_fft})")
        _require_int("num_bins", num_bins)
        if num_bins > n_fft // 2 + 1:
            raise ValueError(
                f"num_bins ({num_bins}) must not exceed the n_fft // 2 + 1 = {n_fft // 2 + 1} STFT bins"
            )
        _require_int("num_stacks", num_stacks, maximum=MAX_DEPTH)
        # spectrograms are padded to multiples of 2**hourglass_depth frames and bins
        _require_int("hourglass_depth", hourglass_depth, maximum=16)
        _require_int("num_features", num_features)
        _require_int("feature_growth", feature_growth, minimum=0)
        if stem_channels is None:
            stem_channels = [64, 128]
        if isinstance(stem_channels, (str, bytes)) or not isinstance(stem_channels, Sequence):
            raise ValueError(f"stem_channels must be a list of two ints, got {stem_channels!r}")
        stem_channels = list(stem_channels)
        if len(stem_channels) != 2:
            raise ValueError(f"stem_channels must be a list of two ints, got {stem_channels!r}")
        for value in stem_channels:
            _require_int("stem_channels", value)
        if not isinstance(normalize_magnitude, bool):
            raise ValueError(f"normalize_magnitude must be a bool, got {normalize_magnitude!r}")

        self.sampling_rate = sampling_rate
        self.audio_channels = audio_channels
        self.source_names = source_names
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.num_bins = num_bins
        self.num_stacks = num_stacks
        self.hourglass_depth = hourglass_depth
        self.num_features = num_features
        self.feature_growth = feature_growth
        self.stem_channels = stem_channels
        self.normalize_magnitude = normalize_magnitude
        if not isinstance(permutation_invariant, bool):
            raise ValueError(f"permutation_invariant must be a bool, got {permutation_invariant!r}")
        self.permutation_invariant = permutation_invariant
        super().__init__(**_without_locally_registered_pipelines(kwargs))

    # Copied from demixers.modeling.mossformer.configuration_mossformer.MossFormerConfig.num_sources
    @property
    def num_sources(self) -> int:
        return len(self.source_names)

    @property
    def size_multiple(self) -> int:
        """Spectrogram sizes the hourglasses need (`2 ** hourglass_depth`); others are padded."""
        return 2**self.hourglass_depth


__all__ = ["StackedHourglassConfig"]
