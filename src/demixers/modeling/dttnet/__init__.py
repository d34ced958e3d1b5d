"""DTTNet: dual-path TFC-TDF UNet music source separation (Chen et al., ICASSP 2024)."""

from .configuration_dttnet import DTTNetConfig
from .modeling_dttnet import (
    DTTNetForSourceSeparation,
    DTTNetPreTrainedModel,
    DTTNetSourceSeparationOutput,
)

__all__ = [
    "DTTNetConfig",
    "DTTNetForSourceSeparation",
    "DTTNetPreTrainedModel",
    "DTTNetSourceSeparationOutput",
]
