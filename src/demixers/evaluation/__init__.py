"""Evaluation of source separation: the field's metrics, exact and batched, and a dataset loop.

* `bss_eval`: BSS Eval v4 (museval) and v3 ``bss_eval_sources`` (mir_eval), framewise, in torch;
* `si_snr`, `si_sdr`, `snr` and their improvements, permutation-invariant variants, `usdr`,
  `csdr`, `nsdr`, `sdr_improvement` (see `demixers.evaluation.metrics` for the shape conventions);
* `evaluate_separation`: separate a dataset with any function, score, aggregate, write
  ``results.json`` and ``results.md``.

Nothing here imports transformers; torch and numpy are enough.
"""

from typing import TYPE_CHECKING

from ..utils.lazy import make_lazy

if TYPE_CHECKING:
    from .aggregate import METRICS, aggregate_items, results_to_markdown, write_results
    from .bss_eval import bss_eval, frame_bounds, pad_or_truncate
    from .metrics import (
        best_permutation,
        chunk_sdr,
        csdr,
        nsdr,
        pairwise,
        permutation_invariant,
        pit_si_sdr,
        pit_si_snr,
        sdr_improvement,
        si_sdr,
        si_sdr_improvement,
        si_snr,
        si_snr_improvement,
        snr,
        usdr,
    )
    from .run import DEFAULT_METRICS, evaluate_item, evaluate_separation

# Public names load on first access: `demixers --help` imports this package's cli module.
make_lazy(
    __name__,
    {
        "METRICS": ".aggregate",
        "aggregate_items": ".aggregate",
        "results_to_markdown": ".aggregate",
        "write_results": ".aggregate",
        "bss_eval": ".bss_eval",
        "frame_bounds": ".bss_eval",
        "pad_or_truncate": ".bss_eval",
        "best_permutation": ".metrics",
        "chunk_sdr": ".metrics",
        "csdr": ".metrics",
        "nsdr": ".metrics",
        "pairwise": ".metrics",
        "permutation_invariant": ".metrics",
        "pit_si_sdr": ".metrics",
        "pit_si_snr": ".metrics",
        "sdr_improvement": ".metrics",
        "si_sdr": ".metrics",
        "si_sdr_improvement": ".metrics",
        "si_snr": ".metrics",
        "si_snr_improvement": ".metrics",
        "snr": ".metrics",
        "usdr": ".metrics",
        "DEFAULT_METRICS": ".run",
        "evaluate_item": ".run",
        "evaluate_separation": ".run",
    },
)

__all__ = [
    "DEFAULT_METRICS",
    "METRICS",
    "aggregate_items",
    "best_permutation",
    "bss_eval",
    "chunk_sdr",
    "csdr",
    "evaluate_item",
    "evaluate_separation",
    "frame_bounds",
    "nsdr",
    "pad_or_truncate",
    "pairwise",
    "permutation_invariant",
    "pit_si_sdr",
    "pit_si_snr",
    "results_to_markdown",
    "sdr_improvement",
    "si_sdr",
    "si_sdr_improvement",
    "si_snr",
    "si_snr_improvement",
    "snr",
    "usdr",
    "write_results",
]
