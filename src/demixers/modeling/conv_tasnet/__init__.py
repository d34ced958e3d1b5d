"""Conv-TasNet: learned filterbank + temporal convolutional network masking (Luo & Mesgarani, 2019)."""

from .configuration_conv_tasnet import ConvTasNetConfig
from .modeling_conv_tasnet import (
    ConvTasNetForSourceSeparation,
    ConvTasNetPreTrainedModel,
    ConvTasNetSourceSeparationOutput,
)

__all__ = [
    "ConvTasNetConfig",
    "ConvTasNetForSourceSeparation",
    "ConvTasNetPreTrainedModel",
    "ConvTasNetSourceSeparationOutput",
]
