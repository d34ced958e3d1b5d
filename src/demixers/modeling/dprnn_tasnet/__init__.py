"""DPRNN-TasNet: learned filterbank + dual-path RNN masking (Luo, Chen & Yoshioka, 2020)."""

from .configuration_dprnn_tasnet import DPRNNTasNetConfig
from .modeling_dprnn_tasnet import (
    DPRNNTasNetForSourceSeparation,
    DPRNNTasNetPreTrainedModel,
    DPRNNTasNetSourceSeparationOutput,
)

__all__ = [
    "DPRNNTasNetConfig",
    "DPRNNTasNetForSourceSeparation",
    "DPRNNTasNetPreTrainedModel",
    "DPRNNTasNetSourceSeparationOutput",
]
