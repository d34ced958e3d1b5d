"""Per-item results → per-source aggregates, and their JSON / markdown forms.

Each metric has a *headline* reduction over items, the one the literature reports:

* speech metrics (SI-SNR(i), SI-SDR(i), SDR, SDRi): the mean over items;
* BSS Eval v4 ``sdr``/``isr``/``sir``/``sar`` (museval, SiSEC/MUSDB18): per item the median over
  1 s frames, then the median over items ("median of medians");
* ``csdr``: the median over all non-silent chunks of all items pooled (DTTNet / MDX-Net); the
  median over items of the per-item medians is the museval number and is reported as ``median``;
* ``usdr``: the mean over items (Music/Sound Demixing Challenges);
* ``nsdr``: GNSDR, the mean weighted by item length (MIR-1K).

The mean and the median over items are reported for every metric as well.

NaN never leaks silently: an item whose value is NaN (every frame silent, which is museval's NaN)
is left out of that source's aggregate and counted in ``excluded``; an aggregate with no valid item
is ``None`` (``null`` in JSON, ``n/a`` in markdown). In JSON, infinities (a perfect SIR) are written
as the strings ``"inf"``/``"-inf"`` so the file stays strict JSON.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.files import write_text_atomic

__all__ = [
    "HEADLINE_LABELS",
    "METRICS",
    "MetricSpec",
    "aggregate_items",
    "format_db",
    "results_to_markdown",
    "to_jsonable",
    "write_json_atomic",
    "write_results",
    "write_text_atomic",
]


@dataclass(frozen=True)
class MetricSpec:
    """How a metric is named, reduced over items and described."""

    display: str
    headline: str  # "mean" | "median" | "pooled_median" | "weighted_mean"
    task: str  # "speech" | "music"
    description: str


METRICS: dict[str, MetricSpec] = {
    "si_snr": MetricSpec("SI-SNR", "mean", "speech", "scale-invariant SNR (zero-mean SI-SDR), after PIT"),
    "si_snri": MetricSpec("SI-SNRi", "mean", "speech", "SI-SNR improvement over the mixture, after PIT"),
    "si_sdr": MetricSpec("SI-SDR", "mean", "speech", "scale-invariant SDR (Le Roux et al. 2019), after PIT"),
    "si_sdri": MetricSpec("SI-SDRi", "mean", "speech", "SI-SDR improvement over the mixture, after PIT"),
    "sdr_v3": MetricSpec(
        "SDR", "mean", "speech", "BSS Eval v3 bss_eval_sources SDR (mir_eval), whole signal"
    ),
    "sdri": MetricSpec("SDRi", "mean", "speech", "BSS Eval v3 SDR improvement over the mixture (mir_eval)"),
    "sdr": MetricSpec(
        "SDR", "median", "music", "BSS Eval v4 SDR (museval), median over 1 s frames then items"
    ),
    "isr": MetricSpec("ISR", "median", "music", "BSS Eval v4 image-to-spatial distortion ratio (museval)"),
    "sir": MetricSpec("SIR", "median", "music", "BSS Eval v4 source-to-interference ratio (museval)"),
    "sar": MetricSpec("SAR", "median", "music", "BSS Eval v4 sources-to-artifacts ratio (museval)"),
    "csdr": MetricSpec(
        "cSDR", "pooled_median", "music", "chunk-level SDR: median over all 1 s chunks pooled"
    ),
    "usdr": MetricSpec("uSDR", "mean", "music", "utterance-level SDR (MDX/SDX global SDR), mean over items"),
    "nsdr": MetricSpec("GNSDR", "weighted_mean", "music", "NSDR (MIR-1K), mean weighted by item length"),
}

HEADLINE_LABELS = {
    "mean": "mean over items",
    "median": "median over items",
    "pooled_median": "median of all chunks pooled",
    "weighted_mean": "length-weighted mean over items",
}


def _summary(
    values: np.ndarray, weights: np.ndarray | None = None, pooled: np.ndarray | None = None
) -> dict[str, Any]:
    valid = ~np.isnan(values)
    kept = values[valid]
    summary: dict[str, Any] = {
        "mean": float(np.mean(kept)) if kept.size else None,
        "median": float(np.median(kept)) if kept.size else None,
        "count": int(kept.size),
        "excluded": int((~valid).sum()),
    }
    if weights is not None:
        kept_weights = weights[valid]
        summary["weighted_mean"] = (
            float(np.sum(kept * kept_weights) / np.sum(kept_weights))
            if kept.size and kept_weights.sum() > 0
            else None
        )
    if pooled is not None:
        pooled = pooled[~np.isnan(pooled)]
        summary["pooled_median"] = float(np.median(pooled)) if pooled.size else None
        summary["pooled_chunks"] = int(pooled.size)
    return summary


def aggregate_items(
    items: Sequence[Mapping[str, Any]], source_names: Sequence[str], metrics: Sequence[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """``aggregate[source][metric]`` summaries plus ``aggregate["average"][metric]``.

    ``items`` are the per-item records of `demixers.evaluation.run.evaluate_separation`:
    ``{"metrics": {source: {metric: float}}, "frames": {source: {"sdr": [...]}}, "num_samples": int}``.
    ``headline`` is the metric's literature reduction (see `METRICS`). The ``average`` row is the
    mean over sources of the per-source headlines (how music papers report "All"/"Avg."), ``None``
    when a source has no valid value.
    """
    for name in metrics:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}; known: {sorted(METRICS)}")
    result: dict[str, dict[str, dict[str, Any]]] = {}
    lengths = np.array([float(item.get("num_samples", 0)) for item in items])
    for source in source_names:
        per_metric: dict[str, dict[str, Any]] = {}
        for name in metrics:
            values = np.array(
                [_as_float(item["metrics"].get(source, {}).get(name, math.nan)) for item in items],
                dtype=np.float64,
            )
            spec = METRICS[name]
            pooled = None
            if spec.headline == "pooled_median":
                chunks = [item.get("frames", {}).get(source, {}).get("sdr") or [] for item in items]
                pooled = np.array([_as_float(v) for chunk in chunks for v in chunk], dtype=np.float64)
            weights = lengths if spec.headline == "weighted_mean" else None
            summary = _summary(values, weights=weights, pooled=pooled)
            summary["headline"] = summary.get(spec.headline)
            per_metric[name] = summary
        result[source] = per_metric
    average: dict[str, dict[str, Any]] = {}
    for name in metrics:
        headlines = [result[source][name]["headline"] for source in source_names]
        complete = all(value is not None for value in headlines) and headlines
        average[name] = {
            "headline": float(np.mean(headlines)) if complete else None,
            "sources": len(source_names),
        }
    result["average"] = average
    return result


def _as_float(value: Any) -> float:
    """Inverse of `to_jsonable` for numbers: ``None`` → NaN, ``"inf"`` → inf."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        return float(value)
    return float(value)


def to_jsonable(value: Any) -> Any:
    """Recursively turn numpy values into JSON types; NaN → ``None``, ±inf → ``"inf"``/``"-inf"``."""
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(item) for item in value.tolist()]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    """Strict JSON (no NaN/Infinity tokens), written atomically."""
    return write_text_atomic(path, json.dumps(to_jsonable(data), indent=2, allow_nan=False) + "\n")


def format_db(value: Any, digits: int = 2) -> str:
    """A dB value for a table: ``n/a`` for ``None``/NaN, ``∞``/``−∞`` for infinities (also as the
    ``"inf"`` strings of strict JSON), else ``digits`` decimals."""
    if value is None:
        return "n/a"
    value = float(value)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}f}"


def results_to_markdown(results: Mapping[str, Any], *, digits: int = 2, per_item: bool = False) -> str:
    """A markdown table: one row per source (and the average), one column per metric's headline."""
    metrics = list(results["metrics"])
    sources = list(results["source_names"])
    aggregate = results["aggregate"]
    header = ["source"] + [
        f"{METRICS[name].display} ({HEADLINE_LABELS[METRICS[name].headline]})" for name in metrics
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([" --- "] + [" ---: "] * len(metrics)) + "|"]
    for source in sources:
        cells = [source] + [format_db(aggregate[source][name]["headline"], digits) for name in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    if len(sources) > 1:
        cells = ["**average**"] + [
            format_db(aggregate["average"][name]["headline"], digits) for name in metrics
        ]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        f"{results.get('num_items', len(results.get('items', [])))} items"
        + (f" of `{results['dataset']}`" if results.get("dataset") else "")
        + (f" ({results['split']})" if results.get("split") else "")
        + ". Values in dB.",
        "",
    ]
    for name in metrics:
        notes.append(f"- {METRICS[name].display}: {METRICS[name].description}.")
    excluded = [
        f"{source}/{name}: {aggregate[source][name]['excluded']}"
        for source in sources
        for name in metrics
        if aggregate[source][name]["excluded"]
    ]
    if excluded:
        notes.append(
            "- Items left out because every frame was silent (museval's NaN): " + ", ".join(excluded) + "."
        )
    text = "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"
    if per_item and results.get("items"):
        item_header = ["item"] + [
            f"{source} {METRICS[name].display}" for source in sources for name in metrics
        ]
        item_lines = [
            "| " + " | ".join(item_header) + " |",
            "|" + "|".join([" --- "] + [" ---: "] * (len(item_header) - 1)) + "|",
        ]
        for item in results["items"]:
            cells = [str(item["id"])] + [
                format_db(item["metrics"][source].get(name), digits) for source in sources for name in metrics
            ]
            item_lines.append("| " + " | ".join(cells) + " |")
        text += "\n" + "\n".join(item_lines) + "\n"
    return text


def write_results(
    results: Mapping[str, Any], output_dir: str | os.PathLike, *, per_item_table: bool = True
) -> dict[str, Path]:
    """Write ``results.json`` and ``results.md`` (both atomically) into ``output_dir``."""
    output_dir = Path(output_dir)
    json_path = write_json_atomic(output_dir / "results.json", results)
    markdown_path = write_text_atomic(
        output_dir / "results.md", results_to_markdown(results, per_item=per_item_table)
    )
    return {"json": json_path, "markdown": markdown_path}
