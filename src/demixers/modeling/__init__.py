"""The model families: one self-contained folder each (configuration_, modeling_ and converters).

`MODEL_FAMILIES` lists every family's (config class, model class); ``demixers`` registers them with
the transformers Auto classes when it is imported.
"""

from __future__ import annotations

from transformers import PretrainedConfig, PreTrainedModel

from .conv_tasnet import ConvTasNetConfig, ConvTasNetForSourceSeparation
from .demucs import (
    DemucsBagConfig,
    DemucsBagForSourceSeparation,
    DemucsConfig,
    DemucsForSourceSeparation,
    HDemucsConfig,
    HDemucsForSourceSeparation,
    HTDemucsConfig,
    HTDemucsForSourceSeparation,
)
from .dprnn_tasnet import DPRNNTasNetConfig, DPRNNTasNetForSourceSeparation
from .dttnet import DTTNetConfig, DTTNetForSourceSeparation
from .mossformer import MossFormerConfig, MossFormerForSourceSeparation
from .stacked_hourglass import StackedHourglassConfig, StackedHourglassForSourceSeparation

# (config class, model class) of every family; a family's config.model_type is its registry key.
MODEL_FAMILIES: tuple[tuple[type[PretrainedConfig], type[PreTrainedModel]], ...] = (
    (MossFormerConfig, MossFormerForSourceSeparation),
    (DemucsConfig, DemucsForSourceSeparation),
    (HDemucsConfig, HDemucsForSourceSeparation),
    (HTDemucsConfig, HTDemucsForSourceSeparation),
    (DemucsBagConfig, DemucsBagForSourceSeparation),
    (ConvTasNetConfig, ConvTasNetForSourceSeparation),
    (DPRNNTasNetConfig, DPRNNTasNetForSourceSeparation),
    (DTTNetConfig, DTTNetForSourceSeparation),
    (StackedHourglassConfig, StackedHourglassForSourceSeparation),
)

__all__ = ["MODEL_FAMILIES"]
