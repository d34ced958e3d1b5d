"""Stacked hourglass network for music source separation (Park et al., ISMIR 2018)."""

from .configuration_stacked_hourglass import StackedHourglassConfig
from .modeling_stacked_hourglass import (
    StackedHourglassForSourceSeparation,
    StackedHourglassPreTrainedModel,
    StackedHourglassSourceSeparationOutput,
)

__all__ = [
    "StackedHourglassConfig",
    "StackedHourglassForSourceSeparation",
    "StackedHourglassPreTrainedModel",
    "StackedHourglassSourceSeparationOutput",
]
