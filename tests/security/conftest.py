"""The pipeline tests' toy models (importing the module registers their families)."""

from tests.pipelines.conftest import (  # noqa: F401  (fixtures)
    models_dir,
    mossformer_dir,
    music_toy,
    music_toy_dir,
    speech_toy,
    speech_toy_dir,
)
