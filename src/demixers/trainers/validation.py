"""Validation scoring of the trainer, done by `demixers.evaluation` (the code ``demixers evaluate`` runs).

The trainer has the estimates already (one forward pass per batch); `evaluate_item` gets them back
through a ``separate_fn`` that returns them, and `aggregate_items` reduces the per-item records the
way the literature does, so a validation number is the number ``demixers evaluate`` would report
for the same weights and items:

* speech: ``si_snri`` and ``si_snr`` (dB) after permutation-invariant matching, mean over items;
* music: ``sdr``, museval-style BSS Eval v4 SDR (median over 1 s frames, then median over items),
  and ``usdr`` (utterance SDR, mean over items);

averaged over sources (the ``average`` row). `validation_results` also returns the records in the
``results.json`` format of `evaluate_separation`, which ``best/`` keeps for its model card.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

SPEECH_METRICS = ("si_snri", "si_snr")
MUSIC_METRICS = ("sdr", "usdr")
EXTRA_METRICS = ("csdr", "si_sdr", "si_sdri")


def metric_names(speech: bool, metric: str) -> list[str]:
    names = list(SPEECH_METRICS if speech else MUSIC_METRICS)
    if metric not in names and metric != "loss":
        names.append(metric)
    return names


def score_item(
    estimates: torch.Tensor,
    references: torch.Tensor,
    mixture: torch.Tensor,
    *,
    item_id: Any,
    source_names: Sequence[str],
    metrics: Sequence[str],
    speech: bool,
    sampling_rate: int,
) -> dict[str, Any]:
    """One `evaluate_item` record for precomputed ``estimates``/``references`` ``(S, C, T)`` and
    ``mixture`` ``(C, T)``. Non-finite estimates score NaN (left out of the aggregates, counted)."""
    from ..evaluation import evaluate_item

    estimates_np = estimates.detach().float().cpu().numpy()
    references_np = references.detach().float().cpu().numpy()
    if not np.isfinite(estimates_np).all():
        return {
            "id": item_id,
            "num_samples": int(references_np.shape[-1]),
            "sampling_rate": int(sampling_rate),
            "metrics": {source: dict.fromkeys(metrics, float("nan")) for source in source_names},
        }
    item = {
        "id": item_id,
        "mixture": mixture.detach().float().cpu().numpy(),
        "sources": references_np,
        "sampling_rate": int(sampling_rate),
    }
    return evaluate_item(
        lambda _mixture, _rate: estimates_np,
        item,
        list(source_names),
        list(metrics),
        permutation_invariant=speech,
    )


def validation_results(
    records: Sequence[dict[str, Any]],
    source_names: Sequence[str],
    metrics: Sequence[str],
    *,
    speech: bool,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``results.json``-style dict (as `evaluate_separation` returns) from per-item records."""
    from ..evaluation import aggregate_items

    return {
        **(metadata or {}),
        "task": "speech" if speech else "music",
        "metrics": list(metrics),
        "source_names": list(source_names),
        "num_items": len(records),
        "settings": {"permutation_invariant": speech, "chunk_seconds": 1.0},
        "items": list(records),
        "aggregate": aggregate_items(records, list(source_names), list(metrics)),
    }


def headline(results: dict[str, Any], metric: str) -> float:
    """The average-over-sources headline of ``metric`` (NaN when no item was valid)."""
    value = results["aggregate"]["average"].get(metric, {}).get("headline")
    return float("nan") if value is None else float(value)


__all__ = [
    "EXTRA_METRICS",
    "MUSIC_METRICS",
    "SPEECH_METRICS",
    "headline",
    "metric_names",
    "score_item",
    "validation_results",
]
