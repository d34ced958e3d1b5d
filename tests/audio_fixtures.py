"""Real-sounding test signals: music with harmonic instruments, drums and a voice-like line.

White noise hides numerical problems that real audio shows (offsets, narrow-band energy, transients,
silence), so parity and chunking tests use these signals. Everything is deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

A4 = 440.0


def _note_frequency(midi: float) -> float:
    return A4 * 2.0 ** ((midi - 69.0) / 12.0)


def _envelope(length: int, sampling_rate: int, attack: float, release: float) -> np.ndarray:
    time = np.arange(length) / sampling_rate
    rise = np.clip(time / max(attack, 1e-4), 0.0, 1.0)
    return rise * np.exp(-time / max(release, 1e-4))


def _harmonic(
    frequency: float, length: int, sampling_rate: int, harmonics: int, tilt: float, rng
) -> np.ndarray:
    time = np.arange(length) / sampling_rate
    vibrato = 1.0 + 0.003 * np.sin(2 * np.pi * rng.uniform(4.0, 6.0) * time)
    phase = 2 * np.pi * frequency * np.cumsum(vibrato) / sampling_rate
    tone = np.zeros(length)
    for harmonic in range(1, harmonics + 1):
        if frequency * harmonic >= sampling_rate / 2:
            break
        tone += np.sin(harmonic * phase + rng.uniform(0, 2 * np.pi)) / harmonic**tilt
    return tone


def music_stems(
    seconds: float, sampling_rate: int = 44100, channels: int = 2, seed: int = 0
) -> dict[str, np.ndarray]:
    """Four stems (``drums``, ``bass``, ``other``, ``vocals``), each ``(channels, time)`` float32."""
    rng = np.random.default_rng(seed)
    length = round(seconds * sampling_rate)
    beat = int(sampling_rate * 60.0 / rng.uniform(90.0, 130.0))
    stems = {name: np.zeros((channels, length)) for name in ("drums", "bass", "other", "vocals")}
    pans = {"drums": 0.0, "bass": 0.0, "other": rng.uniform(-0.6, 0.6), "vocals": rng.uniform(-0.2, 0.2)}
    root = 45 + int(rng.integers(0, 7))
    progression = [0, 5, 7, 3]
    for index, start in enumerate(range(0, length, beat)):
        chord = root + progression[(index // 4) % len(progression)]
        span = min(beat, length - start)
        # drums: kick on 1 and 3, snare on 2 and 4, hats on every beat and off-beat
        kick_time = np.arange(span) / sampling_rate
        kick = np.sin(2 * np.pi * (50.0 + 80.0 * np.exp(-kick_time * 30.0)) * kick_time) * np.exp(
            -kick_time * 12.0
        )
        snare = rng.standard_normal(span) * np.exp(-kick_time * 25.0) * 0.5
        drum = kick if index % 2 == 0 else snare
        hat_noise = np.diff(rng.standard_normal(span + 1)) * np.exp(
            -(kick_time % (beat / 2 / sampling_rate)) * 80.0
        )
        stems["drums"][:, start : start + span] += 0.6 * drum + 0.08 * hat_noise
        # bass: the chord root, plucked
        bass = _harmonic(_note_frequency(chord - 12), span, sampling_rate, 12, 1.2, rng)
        stems["bass"][:, start : start + span] += 0.4 * bass * _envelope(span, sampling_rate, 0.005, 0.35)
        # other: a sustained triad with a slow attack
        if index % 4 == 0:
            bar = min(4 * beat, length - start)
            pad = sum(
                _harmonic(_note_frequency(chord + 12 + offset), bar, sampling_rate, 8, 1.6, rng)
                for offset in (0, 4, 7)
            )
            stems["other"][:, start : start + bar] += 0.12 * pad * _envelope(bar, sampling_rate, 0.15, 2.5)
        # vocals: a sung line with formant-like emphasis, silent on some beats (silence matters too)
        if rng.uniform() < 0.75:
            note = chord + 12 + int(rng.choice([0, 2, 4, 7, 9]))
            voice = _harmonic(_note_frequency(note), span, sampling_rate, 30, 0.8, rng)
            formant = np.convolve(voice, np.hanning(9) / np.hanning(9).sum(), mode="same")
            stems["vocals"][:, start : start + span] += (
                0.25 * formant * _envelope(span, sampling_rate, 0.03, 0.6)
            )
    for name, stem in stems.items():
        if channels == 2:
            left, right = np.sqrt(0.5 * (1 - pans[name])), np.sqrt(0.5 * (1 + pans[name]))
            delay = int(rng.integers(0, 20))
            stem[1] = np.roll(stem[1], delay)
            stem[0] *= left * np.sqrt(2)
            stem[1] *= right * np.sqrt(2)
        stems[name] = stem.astype(np.float32)
    return stems


def music_like(seconds: float, sampling_rate: int = 44100, channels: int = 2, seed: int = 0) -> np.ndarray:
    """A music mixture ``(channels, time)`` float32 with a DC-free, realistic level (peak about 0.5)."""
    mixture = sum(music_stems(seconds, sampling_rate, channels, seed).values())
    return (0.5 * mixture / max(float(np.abs(mixture).max()), 1e-9)).astype(np.float32)


def speech_like_mixture(
    seconds: float, sampling_rate: int = 8000, speakers: int = 2, seed: int = 0
) -> np.ndarray:
    """A mixture ``(1, time)`` of voice-like utterances of different speakers (synthetic_librimix)."""
    from demixers.datasets_scripts.synthetic_librimix import _speaker, speech_like

    rng = np.random.default_rng(seed)
    sources = [
        speech_like(rng, _speaker(rng, register=index % 3), seconds, sampling_rate)
        for index in range(speakers)
    ]
    mixture = sum(sources)
    return (0.5 * mixture / max(float(np.abs(mixture).max()), 1e-9)).astype(np.float32)[None]
