"""Tiny Demucs-family configs for the common model tests (well under a second per forward)."""

from __future__ import annotations

import demixers
from demixers.modeling.demucs import (
    DemucsBagConfig,
    DemucsBagForSourceSeparation,
    DemucsConfig,
    DemucsForSourceSeparation,
    HDemucsConfig,
    HDemucsForSourceSeparation,
    HTDemucsConfig,
    HTDemucsForSourceSeparation,
)

# Idempotent: makes the Auto classes know the family even before demixers lists it.
for _config_class, _model_class in (
    (DemucsConfig, DemucsForSourceSeparation),
    (HDemucsConfig, HDemucsForSourceSeparation),
    (HTDemucsConfig, HTDemucsForSourceSeparation),
    (DemucsBagConfig, DemucsBagForSourceSeparation),
):
    demixers.register_model_family(_config_class, _model_class)


def tiny_demucs_config(**overrides) -> DemucsConfig:
    values = dict(channels=4, depth=2, lstm_layers=1, context=1, segment=0.05)
    values.update(overrides)
    return DemucsConfig(**values)


def tiny_hdemucs_config(**overrides) -> HDemucsConfig:
    # nfft 64: one frequency layer (32 -> 8 bins), the merge layer (8 -> 1 bin), one time layer;
    # local attention and BiLSTM branches from layer 1, group norms from layer 1.
    values = dict(channels=8, depth=3, nfft=64, dconv_attn=1, dconv_lstm=1, norm_starts=1, segment=0.05)
    values.update(overrides)
    return HDemucsConfig(**values)


def tiny_htdemucs_config(**overrides) -> HTDemucsConfig:
    # 0.04 s = 1764 samples: every test length (<= 1600) is padded to the trained segment.
    values = dict(
        channels=8, depth=2, nfft=128, bottom_channels=16, t_layers=2, t_heads=2, t_dropout=0.0, segment=0.04
    )
    values.update(overrides)
    return HTDemucsConfig(**values)
