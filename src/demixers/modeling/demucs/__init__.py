"""The Demucs family: waveform Demucs (v2/v3), Hybrid Demucs (v3), Hybrid Transformer Demucs (v4)
and bags of them, with chunked inference mirroring the original ``apply_model``."""

from .apply_demucs import separate_with_chunks
from .configuration_demucs import DemucsBagConfig, DemucsConfig, HDemucsConfig, HTDemucsConfig
from .modeling_demucs import (
    DemucsBagForSourceSeparation,
    DemucsForSourceSeparation,
    DemucsPreTrainedModel,
    DemucsSourceSeparationOutput,
    HDemucsForSourceSeparation,
    HTDemucsForSourceSeparation,
)

__all__ = [
    "DemucsBagConfig",
    "DemucsBagForSourceSeparation",
    "DemucsConfig",
    "DemucsForSourceSeparation",
    "DemucsPreTrainedModel",
    "DemucsSourceSeparationOutput",
    "HDemucsConfig",
    "HDemucsForSourceSeparation",
    "HTDemucsConfig",
    "HTDemucsForSourceSeparation",
    "separate_with_chunks",
]
