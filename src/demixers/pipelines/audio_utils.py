"""Self-contained copies of the audio, permutation and model-contract helpers the pipeline runs.

The pipeline files (this module, `chunking`, `feature_extraction_separation` and
`audio_source_separation`) import only each other, so a Hub repo can carry them as remote code and
``pipeline("audio-source-separation", model=repo, trust_remote_code=True)`` runs the same code
without demixers installed. Every definition below is a marked copy of its original in
`demixers.audio`, `demixers.utils.permutations` or `demixers.utils.model_contract`:
``utils/check_copies.py`` fails when they drift, and ``tests/pipelines/test_self_contained.py``
checks the constants, which carry no marker.
"""

from __future__ import annotations

import io
import itertools
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

# ---- demixers.audio.validation -----------------------------------------------------------------
CHANNEL_POLICIES = ("auto", "mean", "first")
MIN_SAMPLING_RATE = 1000


# Copied from demixers.audio.validation.to_numpy
def to_numpy(waveform: Any, name: str = "audio") -> np.ndarray:
    """Return ``waveform`` (numpy array, torch tensor or nested list) as a numpy array."""
    if isinstance(waveform, np.ndarray):
        return waveform
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        torch = None
    if torch is not None and isinstance(waveform, torch.Tensor):
        tensor = waveform.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(waveform, (list, tuple)):
        try:
            return np.asarray(waveform)
        except ValueError as error:
            raise ValueError(f"{name}: could not build an array from a ragged list ({error})") from None
    raise TypeError(
        f"{name}: expected a numpy array, a torch tensor or a list of samples, got {type(waveform).__name__}"
    )


# Copied from demixers.audio.validation.to_float32
def to_float32(waveform: Any, name: str = "audio") -> np.ndarray:
    """Convert samples to float32, scaling integer PCM to [-1, 1]; reject non-audio dtypes."""
    array = to_numpy(waveform, name)
    kind = array.dtype.kind
    if kind == "f":
        return array.astype(np.float32, copy=False)
    if kind == "i":
        scale = float(2 ** (8 * array.dtype.itemsize - 1))
        return (array.astype(np.float64) / scale).astype(np.float32)
    if kind == "u":
        offset = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array.astype(np.float64) - offset) / offset).astype(np.float32)
    raise TypeError(
        f"{name}: unsupported sample dtype {array.dtype} (expected float or integer PCM; "
        "complex, boolean, object and string arrays are not audio)"
    )


# Copied from demixers.audio.validation.check_finite
def check_finite(array: np.ndarray, name: str = "audio") -> None:
    """Raise ``ValueError`` naming the first NaN/Inf sample of ``array``."""
    finite = np.isfinite(array)
    if not finite.all():
        first_bad = tuple(int(i) for i in np.argwhere(~finite)[0])
        value = array[first_bad]
        where = f"index {first_bad[-1]}"
        if len(first_bad) > 1:
            where += f" (channel {first_bad[-2]})" if len(first_bad) == 2 else f" (position {first_bad})"
        raise ValueError(f"{name} contains a non-finite sample ({value}) at sample {where}")


# Copied from demixers.audio.validation.check_sampling_rate
def check_sampling_rate(sampling_rate: Any, name: str = "sampling_rate") -> int:
    """Return ``sampling_rate`` as an int of at least `MIN_SAMPLING_RATE` Hz or raise."""
    if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, (int, np.integer, float)):
        raise TypeError(f"{name} must be a positive integer, got {sampling_rate!r}")
    if not np.isfinite(sampling_rate) or sampling_rate <= 0 or int(sampling_rate) != sampling_rate:
        raise ValueError(f"{name} must be a positive integer, got {sampling_rate!r}")
    if sampling_rate < MIN_SAMPLING_RATE:
        raise ValueError(
            f"{name} is {int(sampling_rate)} Hz: rates below {MIN_SAMPLING_RATE} Hz are not audio a "
            "separation model can use"
        )
    return int(sampling_rate)


# Copied from demixers.audio.validation.as_channels_first
def as_channels_first(waveform: Any, name: str = "audio", time_axis: int | None = None) -> np.ndarray:
    """Validate one waveform and return it as float32 ``(channels, time)``.

    A 2-D array is read as ``(channels, time)``. When its first axis is longer than its second the
    layout is ambiguous (``(time, channels)`` is what soundfile returns), so ``time_axis`` must say
    which axis is time.
    """
    array = to_float32(waveform, name)
    if array.ndim == 1:
        array = array[None, :]
    elif array.ndim == 2:
        if time_axis is None:
            if array.shape[0] > array.shape[1]:
                raise ValueError(
                    f"{name} has shape {tuple(array.shape)}: more channels than samples is ambiguous; "
                    "pass time_axis=0 for (time, channels) data or time_axis=1 for (channels, time)"
                )
        elif time_axis in (0, -2):
            array = array.T
        elif time_axis not in (1, -1):
            raise ValueError(f"time_axis must be 0 or 1 for a 2-D waveform, got {time_axis}")
    else:
        raise ValueError(
            f"{name} must be 1-D (time,) or 2-D (channels, time), got shape {tuple(array.shape)}"
        )
    if array.shape[-1] == 0:
        raise ValueError(f"{name} is empty (zero samples)")
    if array.shape[0] == 0:
        raise ValueError(f"{name} has zero channels")
    check_finite(array, name)
    return np.ascontiguousarray(array)


# Copied from demixers.audio.validation.match_channels
def match_channels(
    waveform: np.ndarray, num_channels: int, policy: str = "auto", name: str = "audio"
) -> np.ndarray:
    """Adapt ``(channels, time)`` to ``num_channels``.

    ``policy="auto"``: equal counts pass through, mono is duplicated into every channel, and
    several channels into a mono model are averaged; any other mismatch is a ``ValueError``.
    ``"mean"`` always down-mixes to mono first (then duplicates if needed); ``"first"`` keeps the
    first channel (then duplicates if needed).
    """
    if policy not in CHANNEL_POLICIES:
        raise ValueError(f"channel_policy must be one of {CHANNEL_POLICIES}, got {policy!r}")
    channels = waveform.shape[0]
    if channels == num_channels and policy == "auto":
        return waveform
    if policy == "mean" or (policy == "auto" and num_channels == 1):
        mono = waveform.mean(axis=0, keepdims=True, dtype=np.float64).astype(np.float32)
    elif policy == "first":
        mono = waveform[:1]
    elif channels == 1:
        mono = waveform
    else:
        raise ValueError(
            f"{name} has {channels} channels but the model expects {num_channels}; "
            "pick a channel policy ('mean' or 'first') to convert it"
        )
    return np.ascontiguousarray(np.repeat(mono, num_channels, axis=0))


# ---- demixers.audio.io -------------------------------------------------------------------------


# Copied from demixers.audio.io.read_audio
def read_audio(source: str | os.PathLike[str] | bytes, name: str | None = None) -> tuple[np.ndarray, int]:
    """Decode a file path or encoded bytes into float32 ``(channels, time)`` and its rate.

    Raises ``FileNotFoundError`` for a missing path, ``IsADirectoryError`` for a folder and
    ``ValueError`` for anything soundfile cannot decode or that holds no samples.
    """
    import soundfile

    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "audio bytes"
        if len(source) == 0:
            raise ValueError(f"{label}: empty input (0 bytes)")
        handle: Any = io.BytesIO(bytes(source))
    else:
        path = Path(source)
        label = name or str(path)
        if path.is_dir():
            raise IsADirectoryError(f"{label}: is a directory, not an audio file")
        if not path.exists():
            raise FileNotFoundError(f"{label}: no such file")
        if path.stat().st_size == 0:
            raise ValueError(f"{label}: empty file (0 bytes)")
        handle = str(path)
    size = len(source) if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).stat().st_size
    try:
        data, sampling_rate = _read_channels_first(soundfile, handle, size)
    except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
        raise ValueError(f"{label}: not a readable audio file ({error})") from None
    if data.shape[-1] == 0:
        raise ValueError(f"{label}: contains zero samples")
    sampling_rate = check_sampling_rate(sampling_rate, name=f"{label} sampling rate")
    return as_channels_first(data, name=label, time_axis=1), sampling_rate


# Copied from demixers.audio.io._read_channels_first
def _read_channels_first(
    soundfile: Any, handle: Any, size: int, block: int = 1 << 16
) -> tuple[np.ndarray, int]:
    """Decode block by block straight into a float32 ``(channels, time)`` array.

    soundfile returns ``(time, channels)``; transposing a whole decoded file would hold two copies
    of it at once, so blocks are copied into a channels-first array instead. Its first capacity
    is the header's frame count only up to what the ``size`` bytes of the file can hold (at
    least one byte per sample): a header is a claim, and a 100-byte file claiming 2**33 frames
    must not allocate 32 GiB. Compressed files that hold more grow the array by doubling.
    """
    with soundfile.SoundFile(handle) as audio_file:
        channels, sampling_rate = audio_file.channels, audio_file.samplerate
        claimed = max(int(audio_file.frames), 0) if 0 <= audio_file.frames < 2**62 else 0
        capacity = max(min(claimed, size // max(channels, 1)), 1)
        data = np.empty((channels, capacity), dtype=np.float32)
        filled = 0
        while True:
            # read() until it comes back empty: blocks() would count down the claimed frames, one
            # empty read per block of a header that lies
            chunk = audio_file.read(block, dtype="float32", always_2d=True)
            if len(chunk) == 0:
                break
            if filled + len(chunk) > data.shape[1]:  # more than the first capacity (compressed formats)
                grown = np.empty((channels, max(2 * data.shape[1], filled + len(chunk))), dtype=np.float32)
                grown[:, :filled] = data[:, :filled]
                data = grown
            data[:, filled : filled + len(chunk)] = chunk.T
            filled += len(chunk)
    if filled < data.shape[1]:
        data = np.ascontiguousarray(data[:, :filled])
    return data, sampling_rate


# Copied from demixers.audio.io.resample
def resample(waveform: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample ``(time,)`` or ``(channels, time)`` audio with soxr's high-quality filter.

    float64 input stays float64 (corpus preparation keeps full precision); anything else comes back
    float32. Equal rates return the input unchanged.
    """
    orig_rate = check_sampling_rate(orig_rate)
    target_rate = check_sampling_rate(target_rate)
    if orig_rate == target_rate:
        return waveform
    import soxr

    dtype = np.float64 if waveform.dtype == np.float64 else np.float32
    # soxr expects (time, channels)
    resampled = soxr.resample(
        np.ascontiguousarray(waveform.T, dtype=dtype), orig_rate, target_rate, quality="HQ"
    )
    return np.ascontiguousarray(resampled.T)


DEFAULT_BLOCK = 1 << 16


# Copied from demixers.audio.io.AudioFile
class AudioFile:
    """An audio file decoded block by block, checked like `read_audio` when it is opened.

    ``channels``, ``sampling_rate`` and ``format`` come from the header; the number of frames is
    only known for sure once `blocks` has been read to the end (compressed formats estimate it).
    """

    def __init__(
        self, path: str | os.PathLike[str], name: str | None = None, block: int = DEFAULT_BLOCK
    ) -> None:
        import soundfile

        self.path = Path(path)
        self.name = name or str(path)
        self.block = int(block)
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.name}: is a directory, not an audio file")
        if not self.path.exists():
            raise FileNotFoundError(f"{self.name}: no such file")
        if self.path.stat().st_size == 0:
            raise ValueError(f"{self.name}: empty file (0 bytes)")
        try:
            with soundfile.SoundFile(str(self.path)) as handle:
                self.channels = int(handle.channels)
                self.sampling_rate = check_sampling_rate(handle.samplerate, name=f"{self.name} sampling rate")
                self.format = str(handle.format)
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
            raise ValueError(f"{self.name}: not a readable audio file ({error})") from None
        if self.channels < 1:
            raise ValueError(f"{self.name}: has zero channels")

    def blocks(self, check_finite: bool = False) -> Iterator[np.ndarray]:
        """Yield contiguous float32 ``(channels, n)`` blocks in order.

        With ``check_finite`` a NaN/Inf sample raises a ``ValueError`` naming its index in the whole
        file (the earliest in time, then the lowest channel), like `read_audio`'s check.
        """
        import soundfile

        offset = 0
        try:
            with soundfile.SoundFile(str(self.path)) as handle:
                while True:
                    chunk = handle.read(self.block, dtype="float32", always_2d=True)
                    if len(chunk) == 0:
                        break
                    block = np.ascontiguousarray(chunk.T)
                    del chunk
                    if check_finite:
                        _check_block_finite(block, offset, self.name)
                    offset += block.shape[1]
                    yield block
        except (soundfile.LibsndfileError, RuntimeError, TypeError) as error:
            raise ValueError(f"{self.name}: not a readable audio file ({error})") from None


# Copied from demixers.audio.io._check_block_finite
def _check_block_finite(block: np.ndarray, offset: int, name: str) -> None:
    finite = np.isfinite(block)
    if finite.all():
        return
    bad_time = np.flatnonzero(~finite.all(axis=0))[0]
    channel = int(np.flatnonzero(~finite[:, bad_time])[0])
    value = block[channel, bad_time]
    raise ValueError(
        f"{name} contains a non-finite sample ({value}) at sample index {offset + int(bad_time)} "
        f"(channel {channel})"
    )


# Copied from demixers.audio.io.resample_blocks
def resample_blocks(blocks: Iterable[np.ndarray], orig_rate: int, target_rate: int) -> Iterator[np.ndarray]:
    """Resample consecutive float32 ``(..., time)`` blocks with soxr's streaming resampler.

    The concatenated output equals `resample` of the concatenated input exactly (same filter, same
    state; soxr's one-shot and streaming paths agree bit for bit, lengths included, which the tests
    check), so a file resampled block by block matches the in-memory pipeline. Equal rates pass the
    blocks through. Every leading index (channel, or source and channel) is an independent channel.
    """
    orig_rate = check_sampling_rate(orig_rate)
    target_rate = check_sampling_rate(target_rate)
    if orig_rate == target_rate:
        yield from blocks
        return
    import soxr

    stream = None
    leading: tuple[int, ...] = ()
    for block in blocks:
        if stream is None:
            leading = block.shape[:-1]
            width = int(np.prod(leading))
            stream = soxr.ResampleStream(orig_rate, target_rate, width, dtype="float32", quality="HQ")
        # soxr wants (time, channels)
        flat = np.ascontiguousarray(block.reshape(-1, block.shape[-1]).T, dtype=np.float32)
        out = stream.resample_chunk(flat, last=False)
        if len(out):
            yield np.ascontiguousarray(out.T).reshape(*leading, -1)
    if stream is not None:
        out = stream.resample_chunk(np.zeros((0, int(np.prod(leading))), dtype=np.float32), last=True)
        if len(out):
            yield np.ascontiguousarray(out.T).reshape(*leading, -1)


# Copied from demixers.audio.io.fit_blocks
def fit_blocks(blocks: Iterable[np.ndarray], length: int, leading: tuple[int, ...]) -> Iterator[np.ndarray]:
    """Cut or zero-pad consecutive ``(*leading, n)`` blocks to exactly ``length`` samples in all."""
    produced = 0
    for block in blocks:
        keep = min(block.shape[-1], length - produced)
        if keep > 0:
            yield block[..., :keep]
            produced += keep
    if produced < length:
        yield np.zeros((*leading, length - produced), dtype=np.float32)


# ---- demixers.utils.model_contract -------------------------------------------------------------


# Copied from demixers.utils.model_contract.is_permutation_invariant
def is_permutation_invariant(config: Any) -> bool:
    """Whether the model's sources come out in an arbitrary order (speech separation).

    Reads ``config.permutation_invariant`` (a config object's field, or the key of a config dict such
    as a loaded ``config.json``) and nothing else: every family's config declares it, with the
    family's default (speech families True, music families False) saved in ``config.json``.

    Raises:
        TypeError: the config does not declare ``permutation_invariant`` as a bool.
    """
    if isinstance(config, Mapping):
        flag = config.get("permutation_invariant")
    else:
        flag = getattr(config, "permutation_invariant", None)
    if not isinstance(flag, bool):
        name = config.get("model_type") if isinstance(config, Mapping) else type(config).__name__
        raise TypeError(
            f"{name}: the config must declare permutation_invariant as a bool (True: unordered "
            f"speakers, False: named stems in a fixed order), got {flag!r}; every demixers family "
            "sets it, a custom config needs the field"
        )
    return flag


# ---- demixers.utils.permutations ---------------------------------------------------------------
MAX_EXHAUSTIVE_SOURCES = 8
_NAN_POLICIES = ("raise", "identity")
_METHODS = ("auto", "exhaustive", "hungarian")
# Candidates scored per step of the exhaustive search (8! = 40320, so up to 8 sources in one step).
_CANDIDATE_BLOCK = math.factorial(MAX_EXHAUSTIVE_SOURCES)
# Budget of gathered score elements per step (bounds memory for large batches).
_STEP_ELEMENTS = 1 << 23


# Copied from demixers.utils.permutations.best_permutation
def best_permutation(
    scores: Any,
    *,
    maximize: bool = True,
    tie_tolerance: Any = 0.0,
    nan: str = "raise",
    method: str = "auto",
) -> tuple[Any, Any]:
    """Best assignment on ``(..., references, estimates)`` score matrices: ``(perm, values)``.

    Args:
        scores: numpy array (or anything `numpy.asarray` takes) or torch tensor of real numbers,
            ``(..., references, estimates)`` with ``references <= estimates``.
        maximize: ``True`` when a higher score is better (SI-SNR, inner products), ``False`` for
            costs (losses, distances).
        tie_tolerance: keep the identity unless the best total beats the identity's total by more
            than this (score units, ``>= 0``); a scalar or an array broadcasting to ``scores.shape[:-2]``.
        nan: ``"raise"`` (ValueError on a NaN score) or ``"identity"`` (an item with a NaN score
            keeps the identity and its NaN values, e.g. a loss that is NaN anyway).
        method: ``"auto"`` (exhaustive up to `MAX_EXHAUSTIVE_SOURCES` estimates, Hungarian above),
            ``"exhaustive"`` or ``"hungarian"``.

    Returns:
        ``perm``: int64 ``(..., references)``; ``values``: the chosen scores, same dtype as ``scores``.
        numpy arrays for numpy input, tensors (on the scores' device) for tensor input.

    Infinite scores are allowed: a total holding both ``+inf`` and ``-inf`` counts as ``-inf``.
    """
    matrix, as_numpy = _as_tensor(scores)
    if not isinstance(maximize, bool):
        raise TypeError(f"maximize must be a bool, got {maximize!r}")
    if nan not in _NAN_POLICIES:
        raise ValueError(f"nan must be one of {_NAN_POLICIES}, got {nan!r}")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    num_refs, num_ests = matrix.shape[-2], matrix.shape[-1]
    if num_refs > num_ests:
        raise ValueError(
            f"scores must be (..., references, estimates) with at most as many references as "
            f"estimates, got shape {tuple(matrix.shape)}"
        )
    batch_shape = matrix.shape[:-2]
    tolerance = _tolerance(tie_tolerance, batch_shape)

    device = matrix.device
    work_dtype = torch.float32 if device.type == "mps" else torch.float64
    flat = matrix.reshape(-1, num_refs, num_ests).to(work_dtype)
    has_nan = torch.isnan(flat).flatten(1).any(dim=1)  # (N,)
    if bool(has_nan.any()):
        if nan == "raise":
            first = tuple(int(i) for i in torch.isnan(matrix).nonzero()[0].tolist())
            raise ValueError(
                f"scores contain NaN (first at index {first}); a permutation cannot be chosen. "
                "Pass nan='identity' to keep the identity for such items."
            )
        flat = torch.where(has_nan[:, None, None], torch.zeros_like(flat), flat)
    signed = flat if maximize else -flat

    identity = torch.arange(num_refs, device=device)
    identity_total = _totals(signed, identity[None, :])[:, 0]  # (N,)
    if flat.shape[0] == 0 or num_refs == 0:
        perm = identity.expand(flat.shape[0], num_refs)
    else:
        use_exhaustive = method == "exhaustive" or (method == "auto" and num_ests <= MAX_EXHAUSTIVE_SOURCES)
        if use_exhaustive:
            perm, best_total = _exhaustive(signed, num_refs, num_ests)
        else:
            perm = _hungarian(signed)
            best_total = _totals(signed, perm[:, None, :])[:, 0]
        margin = tolerance.to(device=device, dtype=work_dtype)
        keep_identity = ~(best_total > identity_total + margin) | has_nan
        perm = torch.where(keep_identity[:, None], identity[None, :], perm)
    perm = perm.reshape(*batch_shape, num_refs)
    values = torch.gather(matrix, -1, perm[..., None]).squeeze(-1)
    if as_numpy:
        return perm.cpu().numpy(), values.cpu().numpy()
    return perm, values


# Copied from demixers.utils.permutations._as_tensor
def _as_tensor(scores: Any) -> tuple[torch.Tensor, bool]:
    if isinstance(scores, torch.Tensor):
        tensor = scores.detach()
        as_numpy = False
    else:
        array = np.asarray(scores)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"scores must hold real numbers, got dtype {array.dtype}")
        tensor = torch.from_numpy(np.array(array, copy=True))  # owns writable, contiguous memory
        as_numpy = True
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"scores must hold real numbers, got {tensor.dtype}")
    if tensor.ndim < 2:
        raise ValueError(f"scores must be (..., references, estimates), got shape {tuple(tensor.shape)}")
    return tensor, as_numpy


# Copied from demixers.utils.permutations._tolerance
def _tolerance(tie_tolerance: Any, batch_shape: torch.Size) -> torch.Tensor:
    """Per-item float64 tolerance, flattened like the batch."""
    if isinstance(tie_tolerance, torch.Tensor):
        value = tie_tolerance.detach().to(device="cpu", dtype=torch.float64)
    else:
        array = np.asarray(tie_tolerance)
        if array.dtype.kind not in "fiu":
            raise TypeError(f"tie_tolerance must be a real number or array, got {tie_tolerance!r}")
        value = torch.from_numpy(np.array(array, dtype=np.float64))
    if torch.isnan(value).any() or (value < 0).any():
        raise ValueError(f"tie_tolerance must be >= 0 (and not NaN), got {tie_tolerance!r}")
    try:
        value = value.expand(batch_shape)
    except RuntimeError:
        raise ValueError(
            f"tie_tolerance of shape {tuple(value.shape)} does not broadcast to the batch shape "
            f"{tuple(batch_shape)} of the scores"
        ) from None
    return value.reshape(-1)


# Copied from demixers.utils.permutations._totals
def _totals(signed: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``(N, P)`` summed scores of ``candidates`` ``(P, R)`` or ``(N, P, R)``; ``+inf + -inf`` → ``-inf``."""
    rows = torch.arange(signed.shape[1], device=signed.device)
    if candidates.ndim == 2:
        gathered = signed[:, rows, candidates]  # (N, P, R)
    else:
        gathered = torch.gather(signed, 2, candidates.transpose(1, 2)).transpose(1, 2)  # (N, P, R)
    totals = gathered.sum(dim=-1)
    return torch.nan_to_num(totals, nan=-math.inf, posinf=math.inf, neginf=-math.inf)


# Copied from demixers.utils.permutations._arrangements
@lru_cache(maxsize=16)
def _arrangements(num_items: int, length: int) -> torch.Tensor:
    """``itertools.permutations(range(num_items), length)`` as a ``(P, length)`` int64 tensor."""
    return torch.tensor(list(itertools.permutations(range(num_items), length)), dtype=torch.long).reshape(
        -1, length
    )


# Copied from demixers.utils.permutations._candidate_blocks
def _candidate_blocks(num_refs: int, num_ests: int) -> Any:
    """The candidates in ``itertools.permutations(range(num_ests), num_refs)`` order, in blocks.

    A fixed prefix followed by every arrangement of the remaining estimates (kept sorted) walks the
    lexicographic order; the prefix is as short as keeps each block within `_CANDIDATE_BLOCK`.
    """
    prefix_length = 0
    while math.perm(num_ests - prefix_length, num_refs - prefix_length) > _CANDIDATE_BLOCK:
        prefix_length += 1
    tails = _arrangements(num_ests - prefix_length, num_refs - prefix_length)
    for prefix in itertools.permutations(range(num_ests), prefix_length):
        remaining = torch.tensor([k for k in range(num_ests) if k not in prefix], dtype=torch.long)
        block = remaining[tails]
        if prefix_length:
            block = torch.cat([torch.tensor(prefix).expand(block.shape[0], -1), block], dim=1)
        yield block


# Copied from demixers.utils.permutations._exhaustive
def _exhaustive(signed: torch.Tensor, num_refs: int, num_ests: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First maximising permutation per item (``(N, R)``) and its total (``(N,)``)."""
    items = signed.shape[0]
    device = signed.device
    best_total = torch.full((items,), -math.inf, dtype=signed.dtype, device=device)
    best_perm = torch.arange(num_refs, device=device).repeat(items, 1)
    for block in _candidate_blocks(num_refs, num_ests):
        block = block.to(device)
        per_step = max(1, _STEP_ELEMENTS // max(1, block.numel()))
        for start in range(0, items, per_step):
            part = slice(start, start + per_step)
            totals = _totals(signed[part], block)  # (n, P)
            value, index = totals.max(dim=-1)  # the first maximum
            better = value > best_total[part]  # strict: an earlier candidate wins a tie
            best_total[part] = torch.where(better, value, best_total[part])
            best_perm[part] = torch.where(better[:, None], block[index], best_perm[part])
    return best_perm, best_total


# Copied from demixers.utils.permutations._hungarian
def _hungarian(signed: torch.Tensor) -> torch.Tensor:
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as error:  # pragma: no cover - scipy ships with the test extras
        raise ImportError(
            f"best_permutation over more than {MAX_EXHAUSTIVE_SOURCES} estimates uses scipy's Hungarian "
            "algorithm: pip install scipy"
        ) from error
    matrices = signed.detach().to(device="cpu", dtype=torch.float64).numpy()
    result = np.empty(matrices.shape[:2], dtype=np.int64)
    for item, matrix in enumerate(matrices):
        result[item] = linear_sum_assignment(_finite_for_assignment(matrix), maximize=True)[1]
    return torch.from_numpy(result).to(signed.device)


# Copied from demixers.utils.permutations._finite_for_assignment
def _finite_for_assignment(matrix: np.ndarray) -> np.ndarray:
    """scipy refuses infinite entries: ±inf become ±(more than any sum of finite entries)."""
    infinite = np.isinf(matrix)
    if not infinite.any():
        return matrix
    finite = matrix[~infinite]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    big = (scale + 1.0) * 2.0 * matrix.shape[1]
    return np.where(infinite, np.sign(matrix) * big, matrix)
