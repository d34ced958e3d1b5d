"""The Demucs family: waveform Demucs (v2/v3), Hybrid Demucs (v3), Hybrid Transformer Demucs (v4)
and bags of them. Chunked inference (the original ``apply_model``'s) is the pipeline's chunk engine,
`demixers.pipelines.chunking`, driven by the configs' chunking policy."""

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
]
