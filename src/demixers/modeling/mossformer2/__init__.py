"""MossFormer2: MossFormer with recurrent gated FSMN blocks (ModelScope 8 kHz, ClearerVoice 16 kHz)."""

from .configuration_mossformer2 import MOSSFORMER2_PRESETS, MossFormer2Config
from .modeling_mossformer2 import (
    MossFormer2ForSourceSeparation,
    MossFormer2PreTrainedModel,
    MossFormer2SourceSeparationOutput,
)

__all__ = [
    "MOSSFORMER2_PRESETS",
    "MossFormer2Config",
    "MossFormer2ForSourceSeparation",
    "MossFormer2PreTrainedModel",
    "MossFormer2SourceSeparationOutput",
]
