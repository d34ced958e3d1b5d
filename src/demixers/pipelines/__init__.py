from .audio_source_separation import AudioSourceSeparationPipeline

__all__ = ["AudioSourceSeparationPipeline"]
