"""The model families: one self-contained folder each (configuration_, modeling_ and converters).

`MODEL_FAMILIES` lists every family's (config class, model class); ``demixers`` registers them with
the transformers Auto classes on first use (`demixers.registration`). It is built on first access,
so importing one family (or ``demixers.modeling.convert_cli``) does not import the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

    MODEL_FAMILIES: tuple[tuple[type[PretrainedConfig], type[PreTrainedModel]], ...]

# (family package, config class, model class) of every family, in registration order; a family's
# config.model_type is its registry key.
_FAMILY_CLASSES: tuple[tuple[str, str, str], ...] = (
    ("mossformer", "MossFormerConfig", "MossFormerForSourceSeparation"),
    ("mossformer2", "MossFormer2Config", "MossFormer2ForSourceSeparation"),
    ("demucs", "DemucsConfig", "DemucsForSourceSeparation"),
    ("demucs", "HDemucsConfig", "HDemucsForSourceSeparation"),
    ("demucs", "HTDemucsConfig", "HTDemucsForSourceSeparation"),
    ("demucs", "DemucsBagConfig", "DemucsBagForSourceSeparation"),
    ("conv_tasnet", "ConvTasNetConfig", "ConvTasNetForSourceSeparation"),
    ("dprnn_tasnet", "DPRNNTasNetConfig", "DPRNNTasNetForSourceSeparation"),
    ("dttnet", "DTTNetConfig", "DTTNetForSourceSeparation"),
    ("stacked_hourglass", "StackedHourglassConfig", "StackedHourglassForSourceSeparation"),
    ("bs_roformer", "BSRoformerConfig", "BSRoformerForSourceSeparation"),
    ("mel_band_roformer", "MelBandRoformerConfig", "MelBandRoformerForSourceSeparation"),
)


def __getattr__(name: str) -> Any:
    if name != "MODEL_FAMILIES":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    families = []
    for package, config_name, model_name in _FAMILY_CLASSES:
        module = importlib.import_module(f".{package}", __name__)
        families.append((getattr(module, config_name), getattr(module, model_name)))
    globals()["MODEL_FAMILIES"] = value = tuple(families)
    return value


__all__ = ["MODEL_FAMILIES"]
