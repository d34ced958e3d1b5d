"""The default model and the example mixture that ship inside the package.

Nothing can be downloaded on a fresh offline machine, so demixers carries one small speech
separation model (``bundled/default_speech_8k``: a save_pretrained folder with its model card) and
one example mixture with its reference speakers (``bundled/example``). ``pipeline(
"audio-source-separation")`` and ``demixers separate`` without a model use the former; ``make demo``
separates the latter.

The default model was trained with ``demixers train --config configs/default_speech_8k.yaml`` on
the synthetic text-to-speech corpus of ``demixers prepare synthetic-speech``: it is meant for
demos and tests, not for real recordings (its model card says what it can and cannot do). For real
audio, convert an official checkpoint (``demixers convert ...``) or pass a Hub id.

Layout::

    bundled/default_speech_8k/  config.json, model.safetensors, preprocessor_config.json,
                                README.md (model card), results.json, bundle.json (how it was built)
    bundled/example/            mixture.wav, speaker_1.wav, speaker_2.wav, example.json
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUNDLE_DIR = Path(__file__).resolve().parent / "bundled"
DEFAULT_MODEL_NAME = "default_speech_8k"
DEFAULT_MODEL_DIR = BUNDLE_DIR / DEFAULT_MODEL_NAME
EXAMPLE_DIR = BUNDLE_DIR / "example"
MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")
EXAMPLE_REFERENCES = ("speaker_1.wav", "speaker_2.wav")


@dataclass(frozen=True)
class ExampleMixture:
    """The bundled example: a two-speaker 8 kHz mixture and the speakers it was made of."""

    mixture: Path
    references: tuple[Path, ...]
    info: dict[str, Any]


def default_model_dir() -> Path:
    """Folder of the bundled default model; `FileNotFoundError` when this installation lacks it."""
    missing = [name for name in MODEL_FILES if not (DEFAULT_MODEL_DIR / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"the bundled default model is incomplete in this installation ({DEFAULT_MODEL_DIR}: missing "
            f"{', '.join(missing)}); reinstall demixers or pass a model explicitly (-m MODEL / model=...)"
        )
    return DEFAULT_MODEL_DIR


def example_mixture() -> ExampleMixture:
    """The bundled example mixture and its reference speakers."""
    mixture = EXAMPLE_DIR / "mixture.wav"
    references = tuple(EXAMPLE_DIR / name for name in EXAMPLE_REFERENCES)
    missing = [str(path) for path in (mixture, *references) if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"the bundled example is incomplete in this installation: missing {missing}")
    info_path = EXAMPLE_DIR / "example.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return ExampleMixture(mixture=mixture, references=references, info=info)
