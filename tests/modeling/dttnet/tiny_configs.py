"""Tiny DTTNet configurations for the tests (a forward pass takes milliseconds)."""

from __future__ import annotations

from typing import Any

from demixers import register_model_family
from demixers.modeling.dttnet import DTTNetConfig, DTTNetForSourceSeparation

# Idempotent; makes the Auto classes know the family even before it is listed in MODEL_FAMILIES.
register_model_family(DTTNetConfig, DTTNetForSourceSeparation)

# chunk = 32 * 15 = 480 samples, 352 kept per chunk; one level: 32 -> 16 bins, 8 -> 16 channels.
TINY_KWARGS: dict[str, Any] = {
    "n_fft": 128,
    "hop_length": 32,
    "dim_f": 32,
    "dim_t": 16,
    "overlap_samples": 64,
    "num_blocks": 3,
    "num_tfc_layers": 2,
    "growth": 8,
    "kernel_size": 3,
    "tdf_bottleneck_factor": 4,
    "num_dual_path_layers": 2,
    "num_heads": 2,
    "norm_group_size": 8,
}

# Like TINY_KWARGS but twice as wide in time/frequency/channels (16 channels per dual-path head, the
# release's GroupNorm grouping): chunk = 64 * 15 = 960 samples, 704 kept per chunk.
SMALL_KWARGS: dict[str, Any] = {
    **TINY_KWARGS,
    "n_fft": 256,
    "hop_length": 64,
    "dim_f": 64,
    "overlap_samples": 128,
    "growth": 16,
    "norm_group_size": 16,
}

# The same in the official hyper-parameter names (ReferenceDPTDFNet keyword arguments).
TINY_REFERENCE_KWARGS: dict[str, Any] = {
    "n_fft": 256,
    "hop_length": 64,
    "dim_f": 64,
    "dim_t": 16,
    "overlap": 128,
    "num_blocks": 3,
    "l": 2,
    "g": 16,
    "k": 3,
    "bn": 4,
    "num_layers": 2,
    "n_heads": 2,
}


def tiny_dttnet_config(**overrides: Any) -> DTTNetConfig:
    return DTTNetConfig(**{**TINY_KWARGS, **overrides})


def small_dttnet_config(**overrides: Any) -> DTTNetConfig:
    return DTTNetConfig(**{**SMALL_KWARGS, **overrides})
