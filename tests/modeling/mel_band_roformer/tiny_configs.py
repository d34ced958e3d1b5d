"""Tiny Mel-Band RoFormer configurations for the tests (a forward pass takes milliseconds)."""

from __future__ import annotations

from typing import Any

from demixers import register_model_family
from demixers.modeling.mel_band_roformer import MelBandRoformerConfig, MelBandRoformerForSourceSeparation

# Idempotent; makes the Auto classes know the family even before it is listed in MODEL_FAMILIES.
register_model_family(MelBandRoformerConfig, MelBandRoformerForSourceSeparation)

# 65 bins in 8 overlapping mel bands; linear transformer and dense skips on.
TINY_KWARGS: dict[str, Any] = {
    "source_names": ["vocals", "drums", "other"],
    "num_stems": 2,
    "dim": 16,
    "depth": 2,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "linear_transformer_depth": 1,
    "num_bands": 8,
    "dim_head": 8,
    "heads": 2,
    "stft_n_fft": 128,
    "stft_hop_length": 32,
    "stft_win_length": 128,
    "dim_freqs_in": 65,
    "mlp_expansion_factor": 2,
    "mask_estimator_depth": 1,
    "skip_connection": True,
    "multi_stft_resolutions_window_sizes": [256, 128],
    "multi_stft_hop_size": 32,
    "chunk_size": 4410,
}


def tiny_mel_band_roformer_config(**overrides: Any) -> MelBandRoformerConfig:
    return MelBandRoformerConfig(**{**TINY_KWARGS, **overrides})
