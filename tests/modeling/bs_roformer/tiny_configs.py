"""Tiny BS-RoFormer configurations for the tests (a forward pass takes milliseconds)."""

from __future__ import annotations

from typing import Any

from demixers import register_model_family
from demixers.modeling.bs_roformer import BSRoformerConfig, BSRoformerForSourceSeparation

# Idempotent; makes the Auto classes know the family even before it is listed in MODEL_FAMILIES.
register_model_family(BSRoformerConfig, BSRoformerForSourceSeparation)

# 65 bins in 4 bands; every optional path on (linear transformer, dense skips, value residual).
TINY_KWARGS: dict[str, Any] = {
    "source_names": ["vocals", "drums", "other"],
    "num_stems": 2,
    "dim": 16,
    "depth": 2,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "linear_transformer_depth": 1,
    "freqs_per_bands": [8, 8, 16, 33],
    "dim_head": 8,
    "heads": 2,
    "stft_n_fft": 128,
    "stft_hop_length": 32,
    "stft_win_length": 128,
    "dim_freqs_in": 65,
    "mlp_expansion_factor": 2,
    "skip_connection": True,
    "add_value_residual": True,
    "multi_stft_resolutions_window_sizes": [256, 128],
    "multi_stft_hop_size": 32,
    "chunk_size": 4410,
}


def tiny_bs_roformer_config(**overrides: Any) -> BSRoformerConfig:
    return BSRoformerConfig(**{**TINY_KWARGS, **overrides})
