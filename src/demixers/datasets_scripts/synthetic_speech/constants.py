"""The generator's fixed settings (rates, split shares, loudness ranges, file names)."""

from __future__ import annotations

SAMPLING_RATE = 8000
NUM_SPEAKERS = 2
SPLIT_FOLDERS = {"train": "train-100", "validation": "dev", "test": "test"}
SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}
SPLIT_FRACTIONS = {"train": 0.7, "validation": 0.15, "test": 0.15}
ENGINE_SHARES = {"espeak-ng": 0.5, "flite": 0.3, "festival": 0.2}
APT_INSTALL = "apt-get install espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"
MANIFEST = "synthetic_speech.json"
GENERATOR_VERSION = 1
PEAK = 0.9
SOURCE_LOUDNESS_RANGE = (-33.0, -25.0)
RELATIVE_GAIN_DB = 5.0
NOISE_BELOW_SPEECH_DB = (3.0, 9.0)
MIN_SPEAKERS_PER_SPLIT = 2
