"""demixers: audio source separation for the Hugging Face ecosystem.

Importing the package registers every model family with the transformers Auto classes
(`AutoConfig`, `AutoModel`, `AutoFeatureExtractor`) and the ``audio-source-separation`` task
with the pipeline registry, so ``pipeline("audio-source-separation", model=...)`` works; without
``model=`` the pipeline uses the small default speech model bundled with the package
(`demixers.bundled`: trained on synthetic voices, for demos and tests).

The import itself is light (no torch, no transformers): the registration happens the first time
transformers' registries are read (`demixers.registration`), and the public names below are loaded
on first access (PEP 562), so ``demixers --help`` and ``import demixers.evaluation`` do not pay for
the model families.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import registration
from .registration import PIPELINE_TASK

__version__ = "0.1.0.dev0"

# public name -> module that defines it (imported on first access)
_LAZY_NAMES: dict[str, str] = {
    "MODEL_FAMILIES": ".modeling",
    "AudioSourceSeparationPipeline": ".pipelines.audio_source_separation",
    "SourceSeparationFeatureExtractor": ".feature_extraction_separation",
    "register_model_family": ".registration",
    "resolve_model": ".catalogue.resolve",
    **dict.fromkeys(
        ("ConvTasNetConfig", "ConvTasNetForSourceSeparation", "ConvTasNetSourceSeparationOutput"),
        ".modeling.conv_tasnet",
    ),
    **dict.fromkeys(
        (
            "DemucsBagConfig",
            "DemucsBagForSourceSeparation",
            "DemucsConfig",
            "DemucsForSourceSeparation",
            "DemucsSourceSeparationOutput",
            "HDemucsConfig",
            "HDemucsForSourceSeparation",
            "HTDemucsConfig",
            "HTDemucsForSourceSeparation",
        ),
        ".modeling.demucs",
    ),
    **dict.fromkeys(
        ("DPRNNTasNetConfig", "DPRNNTasNetForSourceSeparation", "DPRNNTasNetSourceSeparationOutput"),
        ".modeling.dprnn_tasnet",
    ),
    **dict.fromkeys(
        ("DTTNetConfig", "DTTNetForSourceSeparation", "DTTNetSourceSeparationOutput"), ".modeling.dttnet"
    ),
    **dict.fromkeys(
        ("MossFormerConfig", "MossFormerForSourceSeparation", "MossFormerSourceSeparationOutput"),
        ".modeling.mossformer",
    ),
    **dict.fromkeys(
        ("MossFormer2Config", "MossFormer2ForSourceSeparation", "MossFormer2SourceSeparationOutput"),
        ".modeling.mossformer2",
    ),
    **dict.fromkeys(
        (
            "StackedHourglassConfig",
            "StackedHourglassForSourceSeparation",
            "StackedHourglassSourceSeparationOutput",
        ),
        ".modeling.stacked_hourglass",
    ),
}

if TYPE_CHECKING:
    from .catalogue.resolve import resolve_model
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
    from .modeling.mossformer2 import (
        MossFormer2Config,
        MossFormer2ForSourceSeparation,
        MossFormer2SourceSeparationOutput,
    )
    from .modeling.stacked_hourglass import (
        StackedHourglassConfig,
        StackedHourglassForSourceSeparation,
        StackedHourglassSourceSeparationOutput,
    )
    from .pipelines.audio_source_separation import AudioSourceSeparationPipeline
    from .registration import register_model_family


def __getattr__(name: str) -> Any:
    module_name = _LAZY_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name, __name__), name)
    if module_name not in (".registration", ".catalogue.resolve"):
        # a family class in hand means transformers is loaded: register now, so that e.g.
        # `AutoModel.from_config(demixers.MossFormerConfig())` finds it whatever was read before
        registration.ensure_registered()
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAMES))


# Arms transformers' registries (now if already imported, else when they are); imports nothing heavy.
registration.install()

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
    "MossFormer2Config",
    "MossFormer2ForSourceSeparation",
    "MossFormer2SourceSeparationOutput",
    "MossFormerConfig",
    "MossFormerForSourceSeparation",
    "MossFormerSourceSeparationOutput",
    "SourceSeparationFeatureExtractor",
    "StackedHourglassConfig",
    "StackedHourglassForSourceSeparation",
    "StackedHourglassSourceSeparationOutput",
    "register_model_family",
    "resolve_model",
]
