"""A model-agnostic evaluation loop: separate each item, score it, aggregate, write the results.

`evaluate_separation` knows nothing about models or datasets: it takes a ``separate_fn`` and an
iterable of items, so ``demixers evaluate`` (and tests) can plug any pipeline and any loader into it.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .aggregate import METRICS, aggregate_items, write_results
from .bss_eval import bss_eval, pad_or_truncate
from .metrics import (
    _nanmedian_rows,
    best_permutation,
    nsdr,
    pairwise,
    sdr_improvement,
    si_sdr,
    si_sdr_improvement,
    si_snr,
    si_snr_improvement,
    usdr,
)

__all__ = ["DEFAULT_METRICS", "evaluate_item", "evaluate_separation"]

DEFAULT_METRICS = {
    "speech": ("si_snri", "sdri"),
    "music": ("sdr", "csdr", "usdr"),
}
_BSS_V4 = ("sdr", "isr", "sir", "sar")

SeparateFn = Callable[[np.ndarray, int], Any]


def evaluate_separation(
    separate_fn: SeparateFn,
    items: Iterable[Mapping[str, Any]],
    source_names: Sequence[str],
    metrics: Sequence[str] | None = None,
    *,
    task: str = "speech",
    max_items: int | None = None,
    permutation_invariant: bool | None = None,
    chunk_seconds: float = 1.0,
    output_dir: str | os.PathLike | None = None,
    metadata: Mapping[str, Any] | None = None,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Separate and score every item; return (and optionally write) the results.

    Args:
        separate_fn: ``separate_fn(mixture (channels, time) float32, sampling_rate) -> (sources,
            channels, time)`` in ``source_names`` order (numpy or torch).
        items: dicts with ``id``, ``mixture`` ``(channels, time)``, ``sources``
            ``(sources, channels, time)`` and ``sampling_rate``.
        source_names: names of the reference sources, in item order.
        metrics: names from `demixers.evaluation.aggregate.METRICS`; default
            ``DEFAULT_METRICS[task]`` (speech: SI-SNRi and SDRi; music: museval SDR, cSDR, uSDR).
        task: ``"speech"`` or ``"music"``; picks the default metrics and whether the estimates are
            matched to the references by PIT.
        max_items: stop after this many items.
        permutation_invariant: reorder each item's estimates by the best mean SI-SNR (default: on for
            speech, off for music, whose stems are named).
        chunk_seconds: BSS Eval v4 frame / cSDR chunk length (museval: 1 s).
        output_dir: when given, write ``results.json`` and ``results.md`` there (atomically).
        metadata: extra fields for the results (model id, dataset, split, ...).
        device: where BSS Eval runs (``"cpu"`` by default, ``"cuda"`` to use a GPU).
        progress: show a tqdm progress bar.

    Returns:
        ``{"task", "metrics", "source_names", "num_items", "settings", "items": [...],
        "aggregate": {source | "average": {metric: summary}}, ...metadata}`` (see `aggregate`).
    """
    if task not in DEFAULT_METRICS:
        raise ValueError(f"task must be one of {sorted(DEFAULT_METRICS)}, got {task!r}")
    metrics = tuple(DEFAULT_METRICS[task] if metrics is None else dict.fromkeys(metrics))
    unknown = [name for name in metrics if name not in METRICS]
    if unknown or not metrics:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {sorted(METRICS)}")
    if max_items is not None and max_items < 1:
        raise ValueError(f"max_items must be positive, got {max_items}")
    if chunk_seconds <= 0:
        raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}")
    source_names = list(source_names)
    pit = (task == "speech") if permutation_invariant is None else bool(permutation_invariant)

    records: list[dict[str, Any]] = []
    iterator: Iterable[Mapping[str, Any]] = items if max_items is None else itertools.islice(items, max_items)
    if progress:
        from tqdm.auto import tqdm

        total = len(items) if hasattr(items, "__len__") else None
        if max_items is not None:
            total = max_items if total is None else min(total, max_items)
        iterator = tqdm(iterator, total=total, desc="evaluate", unit="item")
    started = time.perf_counter()
    for index, item in enumerate(iterator):
        records.append(
            evaluate_item(
                separate_fn,
                item,
                source_names,
                metrics,
                permutation_invariant=pit,
                chunk_seconds=chunk_seconds,
                default_id=index,
                device=device,
            )
        )
    if not records:
        raise ValueError("no items to evaluate")
    results: dict[str, Any] = dict(metadata or {})
    results.update(
        {
            "task": task,
            "metrics": list(metrics),
            "source_names": source_names,
            "num_items": len(records),
            "settings": {
                "permutation_invariant": pit,
                "chunk_seconds": chunk_seconds,
                "bss_eval": "v4 (museval: whole-signal 512-tap filters, framewise ratios); "
                "sdr_v3/sdri/nsdr: v3 bss_eval_sources (mir_eval), whole signal",
                "silent_frames": "NaN per museval, excluded from medians; NaN items excluded and counted",
            },
            "seconds": round(time.perf_counter() - started, 3),
            "items": records,
            "aggregate": aggregate_items(records, source_names, metrics),
        }
    )
    if output_dir is not None:
        write_results(results, output_dir)
    return results


def evaluate_item(
    separate_fn: SeparateFn,
    item: Mapping[str, Any],
    source_names: Sequence[str],
    metrics: Sequence[str],
    *,
    permutation_invariant: bool = False,
    chunk_seconds: float = 1.0,
    default_id: Any = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Separate one item and compute ``metrics``; returns the per-item record used by `aggregate`."""
    item_id = item.get("id", default_id)
    sampling_rate = int(item["sampling_rate"])
    mixture = _float_array(item["mixture"], f"item {item_id}: mixture")
    references = _float_array(item["sources"], f"item {item_id}: sources")
    if mixture.ndim == 1:
        mixture = mixture[None]
    if references.ndim == 2:
        references = references[:, None]
    if mixture.ndim != 2 or references.ndim != 3:
        raise ValueError(
            f"item {item_id}: expected mixture (channels, time) and sources (sources, channels, time), got "
            f"{mixture.shape} and {references.shape}"
        )
    if references.shape[0] != len(source_names):
        raise ValueError(
            f"item {item_id}: {references.shape[0]} reference sources for {len(source_names)} names"
        )
    if references.shape[1:] != mixture.shape:
        raise ValueError(
            f"item {item_id}: sources {references.shape} do not match the mixture {mixture.shape}"
        )

    estimates = _float_array(
        separate_fn(mixture.astype(np.float32), sampling_rate), f"item {item_id}: estimates"
    )
    if estimates.ndim == 2:
        estimates = estimates[:, None]
    if estimates.ndim != 3 or estimates.shape[:2] != references.shape[:2]:
        raise ValueError(
            f"item {item_id}: separate_fn returned shape {estimates.shape}; expected "
            f"(sources, channels, time) with {references.shape[0]} sources and {references.shape[1]} channels"
        )
    if not np.isfinite(estimates).all():
        raise ValueError(f"item {item_id}: separate_fn returned NaN or infinite samples")
    # museval's padding=True: cut or zero-pad the estimates to the reference length
    estimates = pad_or_truncate(references, estimates, axis=2)

    record: dict[str, Any] = {
        "id": item_id,
        "num_samples": int(references.shape[-1]),
        "sampling_rate": sampling_rate,
    }
    if permutation_invariant:
        # (channels, sources, time) pairwise SI-SNR, averaged over channels
        scores = pairwise(references.transpose(1, 0, 2), estimates.transpose(1, 0, 2), "si_snr").mean(axis=0)
        perm, _ = best_permutation(scores)
        estimates = estimates[perm]
        record["permutation"] = [int(value) for value in perm]

    values: dict[str, np.ndarray] = {}
    frames: dict[str, np.ndarray] = {}
    channel_mean = {
        "si_snr": lambda: si_snr(references, estimates).mean(axis=-1),
        "si_sdr": lambda: si_sdr(references, estimates).mean(axis=-1),
        "si_snri": lambda: si_snr_improvement(references, estimates, mixture).mean(axis=-1),
        "si_sdri": lambda: si_sdr_improvement(references, estimates, mixture).mean(axis=-1),
    }
    for name in metrics:
        if name in channel_mean:
            values[name] = channel_mean[name]()
    chunk = max(1, round(chunk_seconds * sampling_rate))
    wanted_v4 = [name for name in _BSS_V4 if name in metrics]
    if wanted_v4 or "csdr" in metrics:
        scores = bss_eval(
            references.transpose(0, 2, 1),
            estimates.transpose(0, 2, 1),
            window=chunk,
            hop=chunk,
            metrics=wanted_v4 or ("sdr",),
            on_silent="nan",
            device=device,
        )
        for name in wanted_v4:
            values[name] = _nanmedian_rows(scores[name])
        if "csdr" in metrics:
            frames["sdr"] = scores["sdr"]
            values["csdr"] = _nanmedian_rows(scores["sdr"])
    if "usdr" in metrics:
        values["usdr"] = usdr(references, estimates)
    if "sdr_v3" in metrics:
        values["sdr_v3"] = bss_eval(
            references.transpose(0, 2, 1),
            estimates.transpose(0, 2, 1),
            window=math.inf,
            version="v3",
            metrics=("sdr",),
            on_silent="nan",
            device=device,
        )["sdr"][:, 0]
    if "sdri" in metrics:
        values["sdri"] = sdr_improvement(references, estimates, mixture, device=device)
    if "nsdr" in metrics:
        values["nsdr"] = nsdr(references, estimates, mixture, device=device)

    record["metrics"] = {
        source: {name: float(values[name][row]) for name in metrics}
        for row, source in enumerate(source_names)
    }
    if frames:
        record["frames"] = {
            source: {key: value[row].tolist() for key, value in frames.items()}
            for row, source in enumerate(source_names)
        }
    return record


def _float_array(value: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            value = value.detach().float().cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{name}: expected real samples, got dtype {array.dtype}")
    return array.astype(np.float64, copy=False)
