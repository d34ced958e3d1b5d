"""Self-contained copy of `demixers.feature_extraction_separation` that Hub repos carry as remote code.

``AutoFeatureExtractor.from_pretrained(repo, trust_remote_code=True)`` loads this file without
demixers installed; the class is a marked copy of the installed one (``utils/check_copies.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from transformers import BatchFeature, SequenceFeatureExtractor

from .audio_utils import CHANNEL_POLICIES, as_channels_first, check_sampling_rate, match_channels


# Copied from demixers.feature_extraction_separation.SourceSeparationFeatureExtractor
class SourceSeparationFeatureExtractor(SequenceFeatureExtractor):
    r"""Turns one or several waveforms into the model input of a source-separation model.

    Args:
        feature_size (`int`, defaults to 1): number of audio channels the model expects.
        sampling_rate (`int`, defaults to 8000): the model's sampling rate; input at another
            rate is an error (resample first, as the pipeline does).
        padding_value (`float`, defaults to 0.0): value used to pad shorter items of a batch.
        channel_policy (`str`, defaults to `"auto"`): see `demixers.audio.match_channels`.

    Returns a `BatchFeature` with

    * `input_values`: float32 `(batch, channels, time)`;
    * `padding_mask`: int64 `(batch, time)`, 1 on real samples and 0 on padding.
    """

    model_input_names: ClassVar[list[str]] = ["input_values", "padding_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 8000,
        padding_value: float = 0.0,
        channel_policy: str = "auto",
        **kwargs: Any,
    ) -> None:
        if not isinstance(feature_size, int) or feature_size < 1:
            raise ValueError(f"feature_size (audio channels) must be a positive int, got {feature_size!r}")
        check_sampling_rate(sampling_rate)
        if channel_policy not in CHANNEL_POLICIES:
            raise ValueError(f"channel_policy must be one of {CHANNEL_POLICIES}, got {channel_policy!r}")
        super().__init__(
            feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value, **kwargs
        )
        self.channel_policy = channel_policy

    def __call__(
        self,
        raw_audio: Any,
        sampling_rate: int | None = None,
        padding: bool | str = True,
        max_length: int | None = None,
        truncation: bool = False,
        return_tensors: str | None = "pt",
        time_axis: int | None = None,
    ) -> BatchFeature:
        """Validate and batch ``raw_audio``.

        ``raw_audio`` is one waveform ``(time,)`` / ``(channels, time)`` or a list of them (a list
        of floats is one mono waveform). ``sampling_rate`` should always be given: a mismatch with
        the extractor's rate raises instead of silently producing garbage.
        """
        if sampling_rate is not None:
            sampling_rate = check_sampling_rate(sampling_rate)
            if sampling_rate != self.sampling_rate:
                raise ValueError(
                    f"audio sampled at {sampling_rate} Hz was given to a feature extractor for "
                    f"{self.sampling_rate} Hz; resample it first (the audio-source-separation pipeline does)"
                )
        if padding not in (True, False, "longest", "max_length", "do_not_pad"):
            raise ValueError(
                f"padding must be True, False, 'longest', 'max_length' or 'do_not_pad', got {padding!r}"
            )

        items = self._split_batch(raw_audio)
        waveforms = []
        for index, item in enumerate(items):
            name = "audio" if len(items) == 1 else f"audio[{index}]"
            waveform = as_channels_first(item, name=name, time_axis=time_axis)
            waveforms.append(match_channels(waveform, self.feature_size, self.channel_policy, name=name))

        lengths = [w.shape[-1] for w in waveforms]
        if padding in (True, "longest"):
            target = max(lengths)
        elif padding == "max_length":
            if max_length is None:
                raise ValueError("padding='max_length' needs max_length")
            target = max_length
        else:
            target = None
            if len(set(lengths)) > 1:
                raise ValueError(f"items have different lengths {lengths}; enable padding to batch them")
        if truncation:
            if max_length is None:
                raise ValueError("truncation=True needs max_length")
            waveforms = [w[:, :max_length] for w in waveforms]
            lengths = [min(length, max_length) for length in lengths]
            target = max_length if target is None else min(target, max_length)
        if target is None:
            target = lengths[0]

        batch = np.full((len(waveforms), self.feature_size, target), self.padding_value, dtype=np.float32)
        mask = np.zeros((len(waveforms), target), dtype=np.int64)
        for row, waveform in enumerate(waveforms):
            length = min(waveform.shape[-1], target)
            batch[row, :, :length] = waveform[:, :length]
            mask[row, :length] = 1
        return BatchFeature({"input_values": batch, "padding_mask": mask}, tensor_type=return_tensors)

    @staticmethod
    def _split_batch(raw_audio: Any) -> list[Any]:
        if isinstance(raw_audio, (list, tuple)):
            if len(raw_audio) == 0:
                raise ValueError("raw_audio is an empty list")
            if all(np.isscalar(x) for x in raw_audio):
                return [np.asarray(raw_audio)]
            return list(raw_audio)
        array_like = getattr(raw_audio, "ndim", None)
        if array_like == 3:
            return list(raw_audio)
        return [raw_audio]
