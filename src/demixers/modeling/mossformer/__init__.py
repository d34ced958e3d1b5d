"""MossFormer: gated single-head transformer speech separation (ModelScope's 8 kHz release)."""

from .configuration_mossformer import MossFormerConfig
from .modeling_mossformer import (
    MossFormerForSourceSeparation,
    MossFormerPreTrainedModel,
    MossFormerSourceSeparationOutput,
)

__all__ = [
    "MossFormerConfig",
    "MossFormerForSourceSeparation",
    "MossFormerPreTrainedModel",
    "MossFormerSourceSeparationOutput",
]
