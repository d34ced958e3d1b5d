"""The ``audio-source-separation`` pipeline, its chunking engine and ``demixers separate``.

`AudioSourceSeparationPipeline` is imported on first access, so that ``demixers separate --help``
(`demixers.pipelines.cli`) does not import transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .audio_source_separation import AudioSourceSeparationPipeline


def __getattr__(name: str) -> Any:
    if name != "AudioSourceSeparationPipeline":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .audio_source_separation import AudioSourceSeparationPipeline

    return AudioSourceSeparationPipeline


__all__ = ["AudioSourceSeparationPipeline"]
