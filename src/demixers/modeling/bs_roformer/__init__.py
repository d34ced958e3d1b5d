"""BS-RoFormer: band-split rotary transformer music source separation (Lu et al., 2023)."""

from .configuration_bs_roformer import BSRoformerConfig
from .modeling_bs_roformer import (
    BSRoformerForSourceSeparation,
    BSRoformerPreTrainedModel,
    BSRoformerSourceSeparationOutput,
)

__all__ = [
    "BSRoformerConfig",
    "BSRoformerForSourceSeparation",
    "BSRoformerPreTrainedModel",
    "BSRoformerSourceSeparationOutput",
]
