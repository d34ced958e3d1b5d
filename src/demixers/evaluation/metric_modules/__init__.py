"""🤗 ``evaluate`` metric modules backed by `demixers.evaluation`.

Each metric lives in ``metric_modules/<name>/<name>.py``, the layout ``evaluate.load`` expects for
a local module; load it by path (nothing is fetched from the Hub)::

    import evaluate
    from demixers.evaluation.metric_modules import metric_module_path

    si_snr = evaluate.load(metric_module_path("si_snr"))
    si_snr.compute(predictions=[estimate], references=[reference])

The scripts are thin: they convert evaluate's inputs and call the helpers below, which call the
metric functions of `demixers.evaluation.metrics` and `demixers.evaluation.bss_eval`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MODULE_NAMES", "metric_module_path"]

MODULE_NAMES = ("si_snr", "sdr", "csdr", "usdr")


def metric_module_path(name: str) -> str:
    """Absolute path of the local ``evaluate`` module folder for metric ``name``."""
    if name not in MODULE_NAMES:
        raise ValueError(f"no evaluate module named {name!r}; available: {MODULE_NAMES}")
    return str(Path(__file__).resolve().parent / name)


def _as_item(value: Any, name: str) -> np.ndarray:
    """One example as float64 ``(sources, channels, time)``: 1-D is one mono source, 2-D mono sources."""
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, None]
    elif array.ndim == 2:
        array = array[:, None]
    if array.ndim != 3:
        raise ValueError(
            f"{name}: expected (time,), (sources, time) or (sources, channels, time), got {array.shape}"
        )
    return array


def _pairs(predictions: Sequence[Any], references: Sequence[Any]) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not len(predictions):
        raise ValueError("no examples to score")
    pairs = []
    for index, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        estimate = _as_item(prediction, f"predictions[{index}]")
        target = _as_item(reference, f"references[{index}]")
        if estimate.shape != target.shape:
            raise ValueError(
                f"example {index}: prediction {estimate.shape} and reference {target.shape} differ"
            )
        pairs.append((estimate, target))
    return pairs


def _per_source(values: list[np.ndarray], reduce: str) -> list[float | None]:
    """Reduce ``(sources,)`` per-example values over examples, per source, ignoring NaN."""
    if len({len(value) for value in values}) != 1:
        raise ValueError("every example must have the same number of sources")
    stacked = np.stack(values)  # (examples, sources)
    out: list[float | None] = []
    for column in stacked.T:
        kept = column[~np.isnan(column)]
        if not kept.size:
            out.append(None)
        else:
            out.append(float(np.mean(kept) if reduce == "mean" else np.median(kept)))
    return out


def _headline(per_source: list[float | None]) -> float | None:
    if any(value is None for value in per_source):
        return None
    return float(np.mean(per_source))


def compute_si_snr(
    predictions: Sequence[Any],
    references: Sequence[Any],
    mixtures: Sequence[Any] | None = None,
    permutation_invariant: bool = False,
    zero_mean: bool = True,
) -> dict[str, Any]:
    """Mean SI-SNR (or SI-SDR with ``zero_mean=False``) over examples, sources and channels.

    With ``mixtures`` (one ``(time,)`` or ``(channels, time)`` array per example) the improvement is
    returned too. ``permutation_invariant`` matches estimates to references by the best mean SI-SNR.
    """
    from demixers.evaluation.metrics import best_permutation, pairwise, si_sdr

    if mixtures is not None and len(mixtures) != len(predictions):
        raise ValueError(f"{len(mixtures)} mixtures for {len(predictions)} predictions")
    key = "si_snr" if zero_mean else "si_sdr"
    scores, improvements = [], []
    for index, (estimate, target) in enumerate(_pairs(predictions, references)):
        if permutation_invariant:
            matrix = pairwise(target.transpose(1, 0, 2), estimate.transpose(1, 0, 2), key).mean(axis=0)
            perm, _ = best_permutation(matrix)
            estimate = estimate[perm]
        value = si_sdr(target, estimate, zero_mean=zero_mean)  # (sources, channels)
        scores.append(value.mean())
        if mixtures is not None:
            mixture = np.asarray(mixtures[index], dtype=np.float64)
            mixture = mixture[None] if mixture.ndim == 1 else mixture
            baseline = si_sdr(target, np.broadcast_to(mixture, target.shape), zero_mean=zero_mean)
            improvements.append((value - baseline).mean())
    result: dict[str, Any] = {key: float(np.mean(scores))}
    if mixtures is not None:
        result[key + "i"] = float(np.mean(improvements))
    return result


def compute_bss_eval(
    predictions: Sequence[Any],
    references: Sequence[Any],
    sampling_rate: int | None = None,
    window: float | None = None,
    hop: float | None = None,
    version: str = "v4",
) -> dict[str, Any]:
    """museval-style BSS Eval: per example and source the median over frames (NaN frames skipped),
    then the median over examples per source; the headline is the mean over sources.

    ``window``/``hop`` are in seconds when ``sampling_rate`` is given, else in samples (default one
    second, 44100 samples); ``math.inf`` evaluates whole signals.
    """
    from demixers.evaluation.bss_eval import bss_eval
    from demixers.evaluation.metrics import _nanmedian_rows

    if sampling_rate is not None:
        window = None if window is None else (window if math.isinf(window) else round(window * sampling_rate))
        hop = None if hop is None else (hop if math.isinf(hop) else round(hop * sampling_rate))
    names = ("sdr", "isr", "sir", "sar") if version == "v4" else ("sdr", "sir", "sar")
    per_example: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for estimate, target in _pairs(predictions, references):
        scores = bss_eval(
            target.transpose(0, 2, 1),
            estimate.transpose(0, 2, 1),
            sampling_rate,
            window=window,
            hop=hop,
            version=version,
            on_silent="nan",
        )
        for name in names:
            per_example[name].append(_nanmedian_rows(scores[name]))
    result: dict[str, Any] = {}
    for name in names:
        per_source = _per_source(per_example[name], "median")
        result[name] = _headline(per_source)
        result[f"{name}_per_source"] = per_source
    return result


def compute_csdr(
    predictions: Sequence[Any],
    references: Sequence[Any],
    sampling_rate: int | None = None,
    chunk_seconds: float = 1.0,
    pooled: bool = True,
) -> dict[str, Any]:
    """Chunk-level SDR: per source the median over all non-silent chunks of all examples pooled
    (DTTNet), or with ``pooled=False`` the median over examples of per-example medians (museval)."""
    from demixers.evaluation.metrics import _nanmedian_rows, chunk_sdr

    chunk = None if sampling_rate is None else max(1, round(chunk_seconds * sampling_rate))
    chunks = [
        chunk_sdr(target, estimate, sampling_rate, chunk)
        for estimate, target in _pairs(predictions, references)
    ]
    if pooled:
        if len({value.shape[0] for value in chunks}) != 1:
            raise ValueError("every example must have the same number of sources")
        per_source = []
        for row in range(chunks[0].shape[0]):
            values = np.concatenate([value[row] for value in chunks])
            values = values[~np.isnan(values)]
            per_source.append(float(np.median(values)) if values.size else None)
    else:
        per_source = _per_source([_nanmedian_rows(value) for value in chunks], "median")
    return {"csdr": _headline(per_source), "csdr_per_source": per_source}


def compute_usdr(
    predictions: Sequence[Any], references: Sequence[Any], delta: float = 1e-7
) -> dict[str, Any]:
    """Utterance-level SDR (MDX/SDX): per source the mean over examples; headline the mean over sources."""
    from demixers.evaluation.metrics import usdr

    values = [usdr(target, estimate, delta=delta) for estimate, target in _pairs(predictions, references)]
    per_source = _per_source(values, "mean")
    return {"usdr": _headline(per_source), "usdr_per_source": per_source}
