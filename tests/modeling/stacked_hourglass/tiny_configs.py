"""Tiny stacked hourglass configurations for the tests."""

from __future__ import annotations

from typing import Any

from demixers import register_model_family
from demixers.modeling.stacked_hourglass import StackedHourglassConfig, StackedHourglassForSourceSeparation

# Idempotent; makes the Auto classes know the family even before it is listed in MODEL_FAMILIES.
register_model_family(StackedHourglassConfig, StackedHourglassForSourceSeparation)

# 32 bins x (1 + time // 16) frames, 2 stacks of depth-2 hourglasses with 8 (+4 per level) channels.
TINY_KWARGS: dict[str, Any] = {
    "n_fft": 64,
    "hop_length": 16,
    "num_bins": 32,
    "num_stacks": 2,
    "hourglass_depth": 2,
    "num_features": 8,
    "feature_growth": 4,
    "stem_channels": [4, 8],
}


def tiny_stacked_hourglass_config(**overrides: Any) -> StackedHourglassConfig:
    return StackedHourglassConfig(**{**TINY_KWARGS, **overrides})
