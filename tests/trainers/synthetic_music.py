"""A small synthetic music corpus in the MUSDB18-HQ layout, with four stems a model can tell apart.

Every track (44.1 kHz stereo int16) holds a ``drums`` stem (decaying low "kick" sweeps and
high-passed noise "hats" on a beat grid), a ``bass`` line (40-110 Hz notes with three harmonics),
``other`` (sustained three-note chords at 200-700 Hz) and ``vocals`` (a 220-520 Hz melody with
vibrato and a dozen harmonics, in syllables). Each stem gets a random pan; the mixture is the sum.
Tempo, notes, levels and pans are drawn per track from ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 44100
STEMS = ("drums", "bass", "other", "vocals")


def _notes(rng: np.random.Generator, length: int, note_seconds: float, low: float, high: float) -> np.ndarray:
    """A per-sample frequency track: a new log-uniform note every ``note_seconds``."""
    note = max(1, round(note_seconds * RATE))
    count = -(-length // note)
    frequencies = np.exp(rng.uniform(np.log(low), np.log(high), count))
    return np.repeat(frequencies, note)[:length]


def _phase(frequency: np.ndarray) -> np.ndarray:
    return 2 * np.pi * np.cumsum(frequency) / RATE


def _envelope(length: int, period: int, decay_seconds: float) -> np.ndarray:
    position = np.arange(length) % period
    return np.exp(-position / (decay_seconds * RATE))


def make_stems(rng: np.random.Generator, length: int) -> dict[str, np.ndarray]:
    """float64 ``(length,)`` mono stems."""
    beat = round(RATE * 60 / rng.uniform(90, 140))
    t = np.arange(length) / RATE
    position = np.arange(length) % beat
    kick = np.sin(2 * np.pi * (45 * position / RATE + 40 * (1 - np.exp(-position / (0.03 * RATE))) * 0.03))
    kick *= np.exp(-position / (0.12 * RATE))
    hats = np.diff(rng.standard_normal(length + 1)) * _envelope(length, beat // 2, 0.02)
    drums = kick + 0.3 * hats
    bass_frequency = _notes(rng, length, beat / RATE, 40, 110)
    bass = sum(np.sin(k * _phase(bass_frequency)) / k for k in (1, 2, 3)) * _envelope(length, beat, 0.4)
    chord_root = _notes(rng, length, 4 * beat / RATE, 200, 350)
    other = sum(np.sin(_phase(chord_root * ratio) + k) for k, ratio in enumerate((1.0, 1.26, 1.5)))
    melody = _notes(rng, length, beat / RATE, 220, 520) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    voice_phase = _phase(melody)
    vocals = sum(np.sin(k * voice_phase) * np.exp(-((k * 400 - 800) ** 2) / 2e6) for k in range(1, 13))
    vocals *= 0.5 + 0.5 * np.sin(np.pi * (np.arange(length) % beat) / beat) ** 2
    stems = {"drums": drums, "bass": bass, "other": other, "vocals": vocals}
    return {name: stem / (np.abs(stem).max() + 1e-9) * rng.uniform(0.5, 1.0) for name, stem in stems.items()}


def make_synthetic_musdb(root: Path, tracks: dict[str, int], *, seconds: float = 3.0, seed: int = 0) -> Path:
    """``root/{split}/<track>/{mixture,drums,bass,other,vocals}.wav`` for ``tracks[split]`` tracks per
    split (``train`` / ``test``), ``seconds`` long; returns ``root``."""
    rng = np.random.default_rng(seed)
    length = round(seconds * RATE)
    for split, count in tracks.items():
        for index in range(count):
            folder = root / split / f"Synthetic {split} - Track {index:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            stereo = {}
            for name, stem in make_stems(rng, length).items():
                pan = rng.uniform(0.2, 0.8)
                stereo[name] = np.round(stem[:, None] * np.array([1 - pan, pan]) * 6000).astype(np.int16)
            for name, samples in stereo.items():
                sf.write(folder / f"{name}.wav", samples, RATE, subtype="PCM_16")
            mixture = np.sum([samples.astype(np.int32) for samples in stereo.values()], axis=0)
            sf.write(folder / "mixture.wav", mixture.astype(np.int16), RATE, subtype="PCM_16")
    return root
