"""The bottom audio layer: validation, reading and resampling, used by every other layer.

`validation` turns raw waveforms into float32 ``(channels, time)`` arrays and checks sampling rates;
`io` reads files (whole or block by block) and resamples (whole or streaming) with soundfile and soxr.
"""

from .io import AudioFile, fit_blocks, read_audio, resample, resample_blocks
from .validation import (
    CHANNEL_POLICIES,
    MIN_SAMPLING_RATE,
    as_channels_first,
    check_finite,
    check_sampling_rate,
    match_channels,
    to_float32,
    to_numpy,
)

__all__ = [
    "CHANNEL_POLICIES",
    "MIN_SAMPLING_RATE",
    "AudioFile",
    "as_channels_first",
    "check_finite",
    "check_sampling_rate",
    "fit_blocks",
    "match_channels",
    "read_audio",
    "resample",
    "resample_blocks",
    "to_float32",
    "to_numpy",
]
