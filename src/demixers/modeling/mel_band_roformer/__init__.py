"""Mel-Band RoFormer: mel-band rotary transformer music source separation (Wang et al., 2023)."""

from .configuration_mel_band_roformer import MelBandRoformerConfig
from .modeling_mel_band_roformer import (
    MelBandRoformerForSourceSeparation,
    MelBandRoformerPreTrainedModel,
    MelBandRoformerSourceSeparationOutput,
)

__all__ = [
    "MelBandRoformerConfig",
    "MelBandRoformerForSourceSeparation",
    "MelBandRoformerPreTrainedModel",
    "MelBandRoformerSourceSeparationOutput",
]
