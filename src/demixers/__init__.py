"""demixers: audio source separation for the Hugging Face ecosystem.

Importing the package registers every model family with the transformers Auto classes
(`AutoConfig`, `AutoModel`, `AutoFeatureExtractor`) and the ``audio-source-separation`` task
with the pipeline registry, so ``pipeline("audio-source-separation", model=...)`` works; without
``model=`` the pipeline uses the small default speech model bundled with the package
(`demixers.bundled`: trained on synthetic voices, for demos and tests).
"""

from __future__ import annotations

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.pipelines import PIPELINE_REGISTRY

from .bundled import DEFAULT_MODEL_DIR
from .feature_extraction_separation import SourceSeparationFeatureExtractor
from .modeling import MODEL_FAMILIES
from .modeling.conv_tasnet import (
    ConvTasNetConfig,
    ConvTasNetForSourceSeparation,
    ConvTasNetSourceSeparationOutput,
)
from .modeling.demucs import (
    DemucsBagConfig,
    DemucsBagForSourceSeparation,
    DemucsConfig,
    DemucsForSourceSeparation,
    DemucsSourceSeparationOutput,
    HDemucsConfig,
    HDemucsForSourceSeparation,
    HTDemucsConfig,
    HTDemucsForSourceSeparation,
)
from .modeling.dprnn_tasnet import (
    DPRNNTasNetConfig,
    DPRNNTasNetForSourceSeparation,
    DPRNNTasNetSourceSeparationOutput,
)
from .modeling.dttnet import DTTNetConfig, DTTNetForSourceSeparation, DTTNetSourceSeparationOutput
from .modeling.mossformer import (
    MossFormerConfig,
    MossFormerForSourceSeparation,
    MossFormerSourceSeparationOutput,
)
from .modeling.stacked_hourglass import (
    StackedHourglassConfig,
    StackedHourglassForSourceSeparation,
    StackedHourglassSourceSeparationOutput,
)
from .pipelines import AudioSourceSeparationPipeline

__version__ = "0.1.0.dev0"

PIPELINE_TASK = "audio-source-separation"


def register_model_family(config_class: type[PretrainedConfig], model_class: type[PreTrainedModel]) -> None:
    """Make a family loadable through the Auto classes and the pipeline (idempotent)."""
    AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    AutoFeatureExtractor.register(config_class, SourceSeparationFeatureExtractor, exist_ok=True)


def _register_all() -> None:
    for config_class, model_class in MODEL_FAMILIES:
        register_model_family(config_class, model_class)
    # The bundled default model is a local folder: transformers loads it as-is, without the Hub.
    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK,
        pipeline_class=AudioSourceSeparationPipeline,
        pt_model=AutoModel,
        default={"model": (str(DEFAULT_MODEL_DIR), None)},
        type="audio",
    )


_register_all()

__all__ = [
    "MODEL_FAMILIES",
    "PIPELINE_TASK",
    "AudioSourceSeparationPipeline",
    "ConvTasNetConfig",
    "ConvTasNetForSourceSeparation",
    "ConvTasNetSourceSeparationOutput",
    "DPRNNTasNetConfig",
    "DPRNNTasNetForSourceSeparation",
    "DPRNNTasNetSourceSeparationOutput",
    "DTTNetConfig",
    "DTTNetForSourceSeparation",
    "DTTNetSourceSeparationOutput",
    "DemucsBagConfig",
    "DemucsBagForSourceSeparation",
    "DemucsConfig",
    "DemucsForSourceSeparation",
    "DemucsSourceSeparationOutput",
    "HDemucsConfig",
    "HDemucsForSourceSeparation",
    "HTDemucsConfig",
    "HTDemucsForSourceSeparation",
    "MossFormerConfig",
    "MossFormerForSourceSeparation",
    "MossFormerSourceSeparationOutput",
    "SourceSeparationFeatureExtractor",
    "StackedHourglassConfig",
    "StackedHourglassForSourceSeparation",
    "StackedHourglassSourceSeparationOutput",
    "register_model_family",
]
