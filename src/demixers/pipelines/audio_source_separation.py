"""The ``audio-source-separation`` pipeline: any waveform in, one waveform per source out.

Inputs (one item, or a list/tuple/generator of items):

* a path (``str`` or ``pathlib.Path``) or encoded bytes of any format soundfile decodes (wav
  8/16/24/32-bit int and float, flac, ogg, mp3); URLs are refused, nothing is downloaded;
* a numpy array / torch tensor ``(time,)`` or ``(channels, time)`` with ``sampling_rate=``; a 2-D
  array with more rows than columns is ambiguous and needs ``time_axis=0`` (``(time, channels)``)
  or ``time_axis=1``; integer PCM is scaled to [-1, 1], float64/float16 are cast to float32;
* a dict ``{"array" | "raw": waveform, "sampling_rate": int}`` as ``datasets`` yields it (or
  ``{"bytes" | "path": ...}`` for undecoded ``datasets`` audio), or a decoder object with
  ``get_all_samples()`` (``datasets`` >= 4 with torchcodec).

A list of plain numbers is one mono waveform; any other list is a batch of items, separated one
after the other (``batch_size`` is the number of *chunks* per forward pass, see below).

Each item becomes a list ``[{"label": source_name, "audio": float32 (channels, time),
"sampling_rate": int}, ...]`` in ``model.config.source_names`` order, with the model's number
of channels. Audio is resampled to the model's rate and, by default (``resample_output=True``),
back to the input's rate, with exactly the input's length. Channels follow
`demixers.audio.match_channels` (mono into a stereo model is duplicated, stereo into a mono
model averaged, anything else needs ``channel_policy="mean"`` or ``"first"``).

Long inputs are separated chunk by chunk with overlap-add (`demixers.pipelines.chunking`):
``segment`` (seconds), ``overlap`` (fraction), ``batch_size`` (chunks per forward), ``shifts``
and ``seed`` (random time-shift augmentation for fixed-order models) and ``progress`` (a tqdm bar
on stderr). Defaults come from the model config (``segment``, ``overlap``), else per family:
8 s / 0.5 for permutation-invariant (speech) models and 10 s / 0.25 otherwise. The weighting,
chunk placement and context padding follow the config's chunking policy (Demucs: ``apply_model``'s;
a bag runs each member with its own policy and averages them with its per-source weights).

Models whose config has ``normalize_input=True`` (Demucs) get the whole input standardised by the
mean and std of its mono downmix at the model's rate, and their sources mapped back, as demucs'
``separate`` does (`demixers.pipelines.chunking.Normalization`). A missing flag means False.

Backends (`demixers.pipelines.backends`), chosen when the pipeline is built or with
`AudioSourceSeparationPipeline.set_backend`: ``backend="torch"`` (default, eager),
``backend="onnx"`` (onnxruntime on the CPU, the model exported by
`demixers.export` or given as ``onnx_model=`` from ``demixers export onnx``) and
``quantize="int8"`` (onnxruntime with int8 linear layers). Only the model call changes: chunking,
alignment, normalisation and resampling are the same for all.

Memory: a call returns whole arrays, so it holds the input (at the model's rate) and the output
stems plus O(``segment * batch_size``); nothing else grows with the input's length (the output
is resampled back to the input's rate span by span, straight into the returned array).
`AudioSourceSeparationPipeline.stream_file` separates a file without holding either: it yields
the stems block by block (what ``demixers separate`` writes to disk) with the same numbers.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import Pipeline

from .audio_utils import (
    CHANNEL_POLICIES,
    AudioFile,
    as_channels_first,
    check_sampling_rate,
    fit_blocks,
    match_channels,
    read_audio,
    resample,
    resample_blocks,
)
from .backends import ModelRunners
from .chunking import (
    STATISTICS_BLOCK,
    ChunkMember,
    ChunkSettings,
    MixtureStatistics,
    Normalization,
    count_chunks,
    iter_chunked,
    normalizes_input,
    resolve_chunk_settings,
)
from .feature_extraction_separation import SourceSeparationFeatureExtractor

# Errors re-raised with the failing item's position when a list of inputs is separated (OSError
# covers missing files and folders, RuntimeError and MemoryError a model that fails on one item).
_ITEM_ERRORS = (ValueError, TypeError, OSError, RuntimeError, MemoryError)


class AudioSourceSeparationPipeline(Pipeline):
    """Separate a mixture into the sources named by ``model.config.source_names``."""

    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = None
    _load_tokenizer = False

    def __init__(
        self,
        *args: Any,
        backend: str | None = None,
        onnx_model: str | os.PathLike[str] | None = None,
        quantize: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        config = self.model.config
        for field in ("sampling_rate", "audio_channels", "source_names"):
            if not hasattr(config, field):
                raise ValueError(
                    f"{type(config).__name__} has no `{field}`: the audio-source-separation pipeline needs "
                    "a demixers model (config.sampling_rate, config.audio_channels, config.source_names)"
                )
        normalizes_input(config)  # a malformed `normalize_input` is an error now, not at the first call
        if self.feature_extractor is None:
            self.feature_extractor = SourceSeparationFeatureExtractor(
                feature_size=config.audio_channels, sampling_rate=config.sampling_rate
            )
        self._runners = ModelRunners()
        self.set_backend(backend=backend, onnx_model=onnx_model, quantize=quantize)

    def set_backend(
        self,
        backend: str | None = None,
        onnx_model: str | os.PathLike[str] | None = None,
        quantize: str | None = None,
    ) -> None:
        """How the model's forward runs (`demixers.pipelines.backends`): ``backend="torch"`` (default)
        or ``"onnx"`` (onnxruntime on the CPU; ``onnx_model`` an exported file, else the model is
        exported now) and ``quantize="int8"`` (onnxruntime, int8 linear layers). The chunk engine
        and every option of a call stay the same."""
        runners = ModelRunners(backend=backend, onnx_model=onnx_model, quantize=quantize)
        runners.prepare(self.model, self.device)
        previous, self._runners = self._runners, runners
        previous.close()

    @property
    def backend(self) -> str:
        """``"torch"`` or ``"onnx"``."""
        return self._runners.backend

    def __call__(self, inputs: Any, batch_size: int | None = None, **kwargs: Any) -> Any:
        """Separate one item (returns its list of stems) or several (returns one list per item).

        ``batch_size`` is the number of chunks per forward pass (also settable when the pipeline
        is built); it does not mix different items in one forward.
        """
        batch_size = self._batch_size if batch_size is None else batch_size
        if batch_size is not None:
            kwargs["chunk_batch_size"] = batch_size
        if isinstance(inputs, (list, tuple)) and _is_sample_list(inputs):
            inputs = np.asarray(inputs)  # one mono waveform, not a batch of items
        elif isinstance(inputs, (list, tuple)):
            if not inputs:
                raise ValueError("no inputs: the list of audio items is empty")
            self._sanitize_parameters(**kwargs)  # a bad option is the call's error, not inputs[0]'s
            return [self._call_item(item, f"inputs[{index}]", kwargs) for index, item in enumerate(inputs)]
        if isinstance(inputs, (types.GeneratorType, torch.utils.data.Dataset)):
            self._sanitize_parameters(**kwargs)
            return (self._call_item(item, f"inputs[{index}]", kwargs) for index, item in enumerate(inputs))
        return super().__call__(inputs, **kwargs)

    def _call_item(self, item: Any, name: str, kwargs: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            if isinstance(item, (list, tuple)):  # inside a batch, a list is one waveform
                item = np.asarray(item)
            return super().__call__(item, **kwargs)
        except _ITEM_ERRORS as error:
            message = str(error)
            if isinstance(item, (str, os.PathLike)) and os.fspath(item) in message:
                raise
            named = f"{name}: {message}"
            try:
                renamed = type(error)(named)
                renamed_ok = str(renamed) == named
            except Exception:
                renamed_ok = False
            if not renamed_ok:  # a type with another constructor (LibsndfileError): keep it, add the item
                error.add_note(f"while separating {name}")
                raise
            raise renamed from error

    def _sanitize_parameters(
        self,
        sampling_rate: int | None = None,
        time_axis: int | None = None,
        channel_policy: str | None = None,
        resample_output: bool | None = None,
        segment: float | None = None,
        overlap: float | None = None,
        chunk_batch_size: int | None = None,
        shifts: int | None = None,
        seed: int | None = None,
        progress: bool | None = None,
        **kwargs: Any,
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        if kwargs:
            raise TypeError(f"unexpected argument(s) for audio-source-separation: {sorted(kwargs)}")
        preprocess_params: dict[str, Any] = {}
        forward_params: dict[str, Any] = {}
        postprocess_params: dict[str, Any] = {}
        if sampling_rate is not None:
            preprocess_params["sampling_rate"] = check_sampling_rate(sampling_rate)
        if time_axis is not None:
            if time_axis not in (0, 1, -1, -2):
                raise ValueError(f"time_axis must be 0 or 1, got {time_axis!r}")
            preprocess_params["time_axis"] = time_axis
        if channel_policy is not None:
            if channel_policy not in CHANNEL_POLICIES:
                raise ValueError(f"channel_policy must be one of {CHANNEL_POLICIES}, got {channel_policy!r}")
            preprocess_params["channel_policy"] = channel_policy
        if resample_output is not None:
            forward_params["resample_output"] = bool(resample_output)
        chunking = {
            "segment": segment,
            "overlap": overlap,
            "batch_size": chunk_batch_size,
            "shifts": shifts,
            "seed": seed,
        }
        chunking = {key: value for key, value in chunking.items() if value is not None}
        resolve_chunk_settings(self.model.config, **chunking)  # validate now, before any work
        forward_params.update(chunking)
        if progress is not None:
            forward_params["progress"] = bool(progress)
        return preprocess_params, forward_params, postprocess_params

    # -- stages -------------------------------------------------------------------------------

    def preprocess(
        self,
        inputs: Any,
        sampling_rate: int | None = None,
        time_axis: int | None = None,
        channel_policy: str = "auto",
    ) -> dict[str, Any]:
        waveform, input_rate = decode_input(inputs, sampling_rate=sampling_rate, time_axis=time_axis)
        input_length = waveform.shape[-1]
        config = self.model.config
        waveform = resample(waveform, input_rate, config.sampling_rate)
        waveform = match_channels(waveform, config.audio_channels, channel_policy)
        # numpy, not torch: the base class moves tensors to the model's device, and the whole
        # waveform must stay in host memory (only chunks go to the device).
        return {"waveform": waveform, "input_rate": input_rate, "input_length": input_length}

    def _forward(
        self,
        model_inputs: dict[str, Any],
        segment: float | None = None,
        overlap: float | None = None,
        batch_size: int | None = None,
        shifts: int | None = None,
        seed: int | None = None,
        progress: bool = False,
        resample_output: bool = True,
    ) -> dict[str, Any]:
        config = self.model.config
        settings = resolve_chunk_settings(
            config, segment=segment, overlap=overlap, batch_size=batch_size, shifts=shifts, seed=seed
        )
        waveform = model_inputs.pop("waveform")  # float32 (channels, time) at the model's rate
        total = waveform.shape[-1]
        normalization = None
        if normalizes_input(config):
            statistics = MixtureStatistics()
            for start in range(0, total, STATISTICS_BLOCK):
                statistics.update(waveform[:, start : start + STATISTICS_BLOCK])
            normalization = statistics.normalization()
        input_rate = int(model_inputs["input_rate"])
        output_rate = input_rate if resample_output else config.sampling_rate
        length = int(model_inputs["input_length"]) if output_rate == input_rate else None
        members = self._chunk_members(settings, segment)
        spans = self._separate_blocks(
            [waveform], total, settings, members, normalization, output_rate, length, progress
        )
        if length is None:  # at the model's rate: the chunk engine's own length
            length = total
        sources = np.empty((len(config.source_names), config.audio_channels, length), dtype=np.float32)
        filled = 0
        for span in spans:
            sources[..., filled : filled + span.shape[-1]] = span
            filled += span.shape[-1]
        if filled != length:
            raise RuntimeError(f"internal error: {filled} output samples for {length}")
        return {"sources": sources, "sampling_rate": output_rate}

    def _separate_blocks(
        self,
        blocks: Iterable[np.ndarray],
        total: int,
        settings: ChunkSettings,
        members: list[ChunkMember],
        normalization: Normalization | None,
        output_rate: int,
        length: int | None,
        progress: bool,
    ) -> Iterator[np.ndarray]:
        """The separation both paths share: ``(model channels, n)`` blocks at the model's rate in,
        ``(sources, model channels, n)`` spans at ``output_rate`` out, ``length`` samples in all
        (``None``: as many as come out of the resampler)."""
        config = self.model.config
        num_sources, channels = len(config.source_names), config.audio_channels
        bar = None
        if progress:
            from tqdm.auto import tqdm

            chunks = count_chunks(total, config.sampling_rate, settings, members)
            bar = tqdm(total=chunks, unit="chunk", file=sys.stderr, disable=chunks <= 1, leave=False)
        try:
            if normalization is not None:
                blocks = _normalized_blocks(blocks, normalization.apply)
            spans: Iterator[np.ndarray] = iter_chunked(
                members,
                blocks,
                total,
                channels,
                num_sources,
                config.sampling_rate,
                settings,
                progress=bar.update if bar is not None else None,
            )
            if normalization is not None:
                spans = map(normalization.undo, spans)
            spans = resample_blocks(spans, config.sampling_rate, output_rate)
            if length is not None:
                spans = fit_blocks(spans, length, (num_sources, channels))
            yield from spans
        finally:
            if bar is not None:
                bar.close()

    def _chunk_members(self, settings: ChunkSettings, segment: float | None) -> list[ChunkMember]:
        """What the chunk engine runs: the model, or each member of a bag (a ``models`` list with
        ``config.weights``) with its own chunking policy and segment (``segment`` overrides them
        all, as apply_model's does) and its per-source weight over the bag's per-source total, as
        demucs' apply_model applies a bag (one pass per member, so memory stays bounded)."""
        model, config = self.model, self.model.config
        sub_models = getattr(model, "models", None)
        weights = getattr(config, "weights", None)
        if not isinstance(sub_models, torch.nn.ModuleList) or weights is None:
            return [ChunkMember(self._separate_chunks, settings, None, getattr(model, "valid_length", None))]
        totals = [sum(row[source] for row in weights) for source in range(len(config.source_names))]
        members = []
        for sub_model, row in zip(sub_models, weights, strict=True):
            member_settings = resolve_chunk_settings(
                sub_model.config,
                segment=segment,
                overlap=settings.overlap,
                batch_size=settings.batch_size,
                shifts=settings.shifts,
                seed=settings.seed,
            )
            member_settings = dataclasses.replace(member_settings, max_shift=settings.max_shift)
            members.append(
                ChunkMember(
                    functools.partial(self._separate_chunks, model=sub_model),
                    member_settings,
                    tuple(float(weight) / total for weight, total in zip(row, totals, strict=True)),
                    getattr(sub_model, "valid_length", None),
                )
            )
        return members

    def _separate_chunks(self, chunks: torch.Tensor, model: torch.nn.Module | None = None) -> torch.Tensor:
        """``model``'s (default: the pipeline's) forward on a batch of chunks ``(chunks, channels,
        time)`` through the feature extractor."""
        model = self.model if model is None else model
        config = self.model.config
        features = self.feature_extractor(
            chunks.numpy(), sampling_rate=config.sampling_rate, return_tensors="pt", time_axis=1
        )
        input_values = features["input_values"].to(self.device, dtype=self._model_dtype())
        # inference mode (no autograd bookkeeping at all), also outside Pipeline.forward (streaming)
        with torch.inference_mode():
            return self._runners.runner(model)(input_values)

    def postprocess(self, model_outputs: dict[str, Any]) -> list[dict[str, Any]]:
        config = self.model.config
        sources = model_outputs.pop("sources")  # float32 (sources, channels, time), final rate and length
        rate = int(model_outputs["sampling_rate"])
        return [
            {"label": name, "audio": source, "sampling_rate": rate}
            for name, source in zip(config.source_names, sources, strict=True)
        ]

    # -- streaming files ----------------------------------------------------------------------

    def stream_file(
        self,
        path: str | os.PathLike[str],
        segment: float | None = None,
        overlap: float | None = None,
        batch_size: int | None = None,
        shifts: int | None = None,
        seed: int | None = None,
        channel_policy: str = "auto",
        resample_output: bool = True,
        progress: bool = False,
    ) -> SeparationStream:
        """Separate an audio file without holding it, or its stems, in memory.

        Returns a `SeparationStream`: iterating over it yields float32 ``(sources, channels, n)``
        blocks in ``config.source_names`` order, at the file's rate (or the model's with
        ``resample_output=False``), ``stream.length`` samples in all. The numbers are those of
        ``self(path, ...)`` (same resampler state, chunk engine and statistics; the tests hold them
        within 1e-6). Opening reads the file once (checks, exact length at the model's rate, and the
        whole-track statistics of ``normalize_input`` models), so a bad file raises here, before any
        output exists; iterating reads it a second time. Peak memory is O(``segment *
        batch_size``) whatever the file's length.
        """
        if isinstance(path, str) and path.startswith(("http://", "https://", "ftp://")):
            raise ValueError(f"{path}: demixers does not fetch URLs; download the file and pass its path")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"stream_file takes a file path, got {type(path).__name__}")
        if channel_policy not in CHANNEL_POLICIES:
            raise ValueError(f"channel_policy must be one of {CHANNEL_POLICIES}, got {channel_policy!r}")
        config = self.model.config
        batch_size = self._batch_size if batch_size is None else batch_size
        settings = resolve_chunk_settings(
            config, segment=segment, overlap=overlap, batch_size=batch_size, shifts=shifts, seed=seed
        )
        audio = AudioFile(path)
        statistics = MixtureStatistics() if normalizes_input(config) else None
        counter = _Counter()
        total = 0
        for block in self._model_blocks(audio, channel_policy, counter, check_finite=True):
            total += block.shape[-1]
            if statistics is not None:
                statistics.update(block)
        if counter.count == 0:
            raise ValueError(f"{audio.name}: contains zero samples")
        if total == 0:
            raise ValueError(
                f"{audio.name}: {counter.count} sample(s) at {audio.sampling_rate} Hz is less than one "
                f"sample at the model's {config.sampling_rate} Hz"
            )
        normalization = statistics.normalization() if statistics is not None else None
        output_rate = audio.sampling_rate if resample_output else config.sampling_rate
        length = counter.count if output_rate == audio.sampling_rate else None
        if length is None:
            length = total

        members = self._chunk_members(settings, segment)

        def blocks() -> Iterator[np.ndarray]:
            model_blocks = self._model_blocks(audio, channel_policy, _Counter())
            return self._separate_blocks(
                model_blocks,
                total,
                settings,
                members,
                normalization,
                output_rate,
                length if output_rate == audio.sampling_rate else None,
                progress,
            )

        return SeparationStream(
            labels=list(config.source_names),
            sampling_rate=output_rate,
            channels=config.audio_channels,
            length=length,
            normalization=normalization,
            _blocks=blocks,
        )

    def _model_blocks(
        self, audio: AudioFile, channel_policy: str, counter: _Counter, check_finite: bool = False
    ) -> Iterator[np.ndarray]:
        """The file's blocks at the model's rate and channel count (as `preprocess` converts arrays)."""
        config = self.model.config
        decoded = counter.count_blocks(audio.blocks(check_finite=check_finite))
        for block in resample_blocks(decoded, audio.sampling_rate, config.sampling_rate):
            yield match_channels(block, config.audio_channels, channel_policy, name=audio.name)

    def _model_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype


@dataclass
class SeparationStream:
    """The stems of one file, produced block by block (see `AudioSourceSeparationPipeline.stream_file`).

    Iterate over it (once or again: each iteration reads the file anew) for float32
    ``(len(labels), channels, n)`` blocks, ``length`` samples at ``sampling_rate`` in all.
    ``normalization`` holds the whole-track statistics of ``normalize_input`` models (else None).
    """

    labels: list[str]
    sampling_rate: int
    channels: int
    length: int
    normalization: Normalization | None = None
    _blocks: Callable[[], Iterator[np.ndarray]] = dataclasses.field(default=lambda: iter(()), repr=False)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self._blocks()


class _Counter:
    def __init__(self) -> None:
        self.count = 0

    def count_blocks(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for block in blocks:
            self.count += block.shape[-1]
            yield block


def _normalized_blocks(
    blocks: Iterable[np.ndarray], apply: Callable[[np.ndarray], np.ndarray]
) -> Iterator[np.ndarray]:
    """Normalise block by block, cutting large blocks so the float64 temporaries stay small."""
    for block in blocks:
        for start in range(0, block.shape[-1], STATISTICS_BLOCK):
            yield apply(block[..., start : start + STATISTICS_BLOCK])


def _is_sample_list(inputs: list[Any] | tuple[Any, ...]) -> bool:
    """A non-empty list of plain numbers is one mono waveform, not a batch of items."""
    return bool(inputs) and all(
        isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in inputs
    )


def decode_input(
    inputs: Any, sampling_rate: int | None = None, time_axis: int | None = None, name: str = "audio"
) -> tuple[np.ndarray, int]:
    """Turn any supported pipeline input into float32 ``(channels, time)`` and its rate."""
    if isinstance(inputs, (str, os.PathLike)):
        if isinstance(inputs, str) and inputs.startswith(("http://", "https://", "ftp://")):
            raise ValueError(f"{inputs}: demixers does not fetch URLs; download the file and pass its path")
        return read_audio(inputs)
    if isinstance(inputs, (bytes, bytearray, memoryview)):
        return read_audio(inputs, name="audio bytes" if name == "audio" else name)
    if isinstance(inputs, dict):
        keys = [key for key in ("array", "raw") if key in inputs]
        if not keys:
            # undecoded `datasets` audio: {"bytes": b"...", "path": "..."}
            if inputs.get("bytes") is not None:
                return read_audio(inputs["bytes"], name=str(inputs.get("path") or "audio bytes"))
            if inputs.get("path") is not None:
                return decode_input(inputs["path"])
        if len(keys) != 1 or "sampling_rate" not in inputs:
            raise ValueError(
                "a dict input needs exactly one of 'array' or 'raw' and a 'sampling_rate' "
                f"(or 'bytes'/'path'), got keys {sorted(inputs)}"
            )
        if sampling_rate is not None and sampling_rate != inputs["sampling_rate"]:
            raise ValueError(
                f"sampling_rate={sampling_rate} disagrees with the input dict's "
                f"sampling_rate={inputs['sampling_rate']}"
            )
        rate = check_sampling_rate(inputs["sampling_rate"], name=f"{name}['sampling_rate']")
        return decode_input(inputs[keys[0]], sampling_rate=rate, time_axis=time_axis, name=name)
    if hasattr(inputs, "get_all_samples"):
        # datasets >= 4 yields torchcodec AudioDecoder objects: samples.data is (channels, time)
        samples = inputs.get_all_samples()
        rate = check_sampling_rate(samples.sample_rate, name=f"{name} sample_rate")
        return as_channels_first(samples.data, name=name, time_axis=1), rate
    if sampling_rate is None:
        raise ValueError(
            f"{name}: an array input needs sampling_rate= (the rate the samples were recorded at)"
        )
    rate = check_sampling_rate(sampling_rate)
    return as_channels_first(inputs, name=name, time_axis=time_axis), rate
