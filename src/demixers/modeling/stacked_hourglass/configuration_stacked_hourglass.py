"""Configuration of the stacked hourglass separator (Park et al., ISMIR 2018, arXiv:1805.08559).

The defaults reproduce the released MIR-1K model (sungheonpark/music_source_sepearation_SH_net,
``config.py`` ``NetConfig_MIR_1K``, name ``4stack_256_mir_1k``): mono audio resampled to 8 kHz,
STFT of 1024 points with hop 256, the lowest 512 bins of the magnitude spectrogram, 4 stacked
hourglasses of 256 channels with 4 max-pooling levels, one mask per source (accompaniment and
singing voice, in the corpus' left/right channel order). The DSD100 release is the same network with
four masks (``source_names=["bass", "drums", "other", "vocals"]``), also at 8 kHz mono.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PretrainedConfig


def _require_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


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
        **kwargs: Any,
    ) -> None:
        _require_int("sampling_rate", sampling_rate)
        _require_int("audio_channels", audio_channels)
        if source_names is None:
            source_names = ["accompaniment", "vocals"]
        if isinstance(source_names, str) or not isinstance(source_names, Sequence):
            raise ValueError(f"source_names must be a list of names, got {source_names!r}")
        source_names = list(source_names)
        if not source_names:
            raise ValueError("source_names must name at least one source")
        if not all(isinstance(name, str) and name for name in source_names):
            raise ValueError(f"source_names must be non-empty strings, got {source_names!r}")
        if len(set(source_names)) != len(source_names):
            raise ValueError(f"source_names must be unique, got {source_names!r}")
        _require_int("n_fft", n_fft, minimum=2)
        _require_int("hop_length", hop_length)
        if hop_length > n_fft:
            raise ValueError(f"hop_length ({hop_length}) must not exceed n_fft ({n_fft})")
        _require_int("num_bins", num_bins)
        if num_bins > n_fft // 2 + 1:
            raise ValueError(
                f"num_bins ({num_bins}) must not exceed the n_fft // 2 + 1 = {n_fft // 2 + 1} STFT bins"
            )
        _require_int("num_stacks", num_stacks)
        _require_int("hourglass_depth", hourglass_depth)
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
        super().__init__(**kwargs)

    @property
    def num_sources(self) -> int:
        return len(self.source_names)

    @property
    def size_multiple(self) -> int:
        """Spectrogram sizes the hourglasses need (`2 ** hourglass_depth`); others are padded."""
        return 2**self.hourglass_depth


__all__ = ["StackedHourglassConfig"]
