"""A small synthetic speech-separation corpus in the LibriMix layout (no download needed).

Each "speaker" has a pitch range and a set of formant-like spectral envelopes ("vowels");
an utterance is a sequence of voiced syllables: a harmonic series on a gliding, vibrato-modulated
fundamental, shaped by the syllable's formants (Gaussian resonances on a spectral tilt), with
raised-cosine syllable envelopes, a little aspiration noise and short pauses. Two (or three)
utterances of different speakers are summed into a mixture, exactly as LibriMix does, and written as
16-bit WAV files::

    ROOT/Libri2Mix/wav8k/min/{train-100,dev,test}/{mix_clean,s1,s2}/<spk-chap-utt_spk-chap-utt>.wav
    ROOT/Libri2Mix/wav8k/min/metadata/mixture_<split>_mix_clean.csv

so ``load_separation_dataset(ROOT)`` (or ``demixers prepare librimix ROOT``) reads it like the real
corpus, speaker ids included (dynamic mixing uses them). ``configs/mossformer_tiny_cpu.yaml`` trains on
it; create it with::

    python -m demixers.datasets_scripts.synthetic_librimix data/synthetic_libri2mix
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

SPLIT_FOLDERS = {"train": "train-100", "validation": "dev", "test": "test"}


# (f0 range in Hz, formant scale) of the voice registers: low (adult male-like), mid (female-like),
# high (child-like). A mixture takes one speaker of each register it needs, like the mixed-gender
# mixtures of real corpora, which are the easier ones.
REGISTERS = (((85.0, 125.0), 0.85), ((165.0, 230.0), 1.1), ((260.0, 330.0), 1.3))


def _speaker(rng: np.random.Generator, register: int | None = None) -> dict[str, np.ndarray | float]:
    if register is None:
        base = float(rng.uniform(85.0, 330.0))
        scale = float(rng.uniform(0.85, 1.3))
    else:
        (low, high), scale = REGISTERS[register]
        base = float(rng.uniform(low, high))
    vowels = np.sort(
        np.stack(
            [
                rng.uniform(250.0, 900.0, size=6),
                rng.uniform(850.0, 2300.0, size=6),
                rng.uniform(2200.0, 3500.0, size=6),
            ],
            axis=1,
        ),
        axis=1,
    )
    return {
        "f0": base,
        "vowels": vowels * scale * float(rng.uniform(0.95, 1.05)),
        "tilt": float(rng.uniform(0.6, 1.4)),
        "rate": float(rng.uniform(3.0, 6.0)),
    }


def speech_like(
    rng: np.random.Generator,
    speaker: dict[str, np.ndarray | float],
    seconds: float,
    sampling_rate: int = 8000,
) -> np.ndarray:
    """float64 ``(time,)`` speech-like signal of one speaker, peak around 1."""
    length = round(seconds * sampling_rate)
    out = np.zeros(length)
    position = int(rng.integers(0, sampling_rate // 10))
    nyquist = sampling_rate / 2.0
    while position < length:
        duration = int(sampling_rate * rng.uniform(0.6, 1.6) / float(speaker["rate"]))
        duration = min(duration, length - position)
        if duration < sampling_rate // 50:
            break
        t = np.arange(duration) / sampling_rate
        glide = rng.uniform(-0.15, 0.15)
        f0 = (
            float(speaker["f0"])
            * (1.0 + glide * t / max(t[-1], 1e-3))
            * (1.0 + 0.02 * np.sin(2 * np.pi * 5.5 * t))
        )
        phase = 2 * np.pi * np.cumsum(f0) / sampling_rate + rng.uniform(0, 2 * np.pi)
        vowels = np.asarray(speaker["vowels"])
        start_formants = vowels[rng.integers(len(vowels))]
        end_formants = vowels[rng.integers(len(vowels))]
        ramp = np.clip(t / max(t[-1], 1e-3), 0, 1)[None, :]
        formants = start_formants[:, None] * (1 - ramp) + end_formants[:, None] * ramp  # (3, T)
        harmonics = np.arange(1, int(nyquist / float(speaker["f0"]) * 0.95))
        frequencies = harmonics[:, None] * f0[None, :]  # (H, T)
        envelope = np.zeros_like(frequencies)
        for k, bandwidth in enumerate((90.0, 120.0, 180.0)):
            envelope += (1.0 / (k + 1)) * np.exp(
                -0.5 * ((frequencies - formants[k][None, :]) / bandwidth) ** 2
            )
        envelope *= (harmonics[:, None] ** -float(speaker["tilt"])) * 0.3 + 0.7 * envelope.max()
        envelope *= frequencies < nyquist * 0.95
        voiced = (envelope * np.sin(harmonics[:, None] * phase[None, :])).sum(axis=0)
        attack = np.minimum(1.0, np.arange(duration) / (0.25 * duration + 1))
        decay = np.minimum(1.0, (duration - np.arange(duration)) / (0.35 * duration + 1))
        syllable = voiced * np.sin(0.5 * np.pi * attack) ** 2 * np.sin(0.5 * np.pi * decay) ** 2
        noise = rng.standard_normal(duration) * 0.05 * np.abs(syllable).max(initial=0.0)
        syllable = syllable * rng.uniform(0.5, 1.0) + noise * decay
        out[position : position + duration] += syllable
        position += duration
        if rng.random() < 0.3:
            position += int(sampling_rate * rng.uniform(0.05, 0.25))
    peak = np.abs(out).max(initial=0.0)
    return out / peak if peak > 0 else out


def make_synthetic_librimix(
    root: str | Path,
    *,
    num_speakers: int = 2,
    sampling_rate: int = 8000,
    items: dict[str, int] | None = None,
    seconds: tuple[float, float] = (1.0, 2.0),
    speakers_per_split: dict[str, int] | None = None,
    mixed_registers: bool = True,
    seed: int = 0,
) -> Path:
    """Write the corpus under ``root`` and return ``root``; see the module doc.

    ``items`` maps split (``train``/``validation``/``test``) to the number of mixtures
    (default 48/12/12); validation and test speakers are disjoint from the training ones. With
    ``mixed_registers`` (default) speaker ``k`` of a mixture is drawn from register ``k`` (low, mid,
    high voices: an easier task, learnt in minutes by a tiny model); otherwise pitches are uniform
    over 85-330 Hz and any two speakers may be mixed.
    """
    if mixed_registers and num_speakers > len(REGISTERS):
        raise ValueError(f"mixed_registers supports up to {len(REGISTERS)} speakers")
    root = Path(root)
    items = items or {"train": 48, "validation": 12, "test": 12}
    speakers_per_split = speakers_per_split or {"train": 10, "validation": 4, "test": 4}
    rng = np.random.default_rng(seed)
    mode_dir = root / f"Libri{num_speakers}Mix" / f"wav{sampling_rate // 1000}k" / "min"
    import soundfile as sf

    speaker_number = 100
    for split, count in items.items():
        folder = SPLIT_FOLDERS[split]
        speakers = []
        for position in range(max(speakers_per_split.get(split, num_speakers), 2 * num_speakers)):
            speaker_number += 1
            register = position % num_speakers if mixed_registers else None
            speakers.append((str(speaker_number * 7), _speaker(rng, register)))
        rows = []
        for index in range(count):
            if mixed_registers:
                chosen = [
                    rng.choice([i for i in range(len(speakers)) if i % num_speakers == slot])
                    for slot in range(num_speakers)
                ]
            else:
                chosen = rng.choice(len(speakers), size=num_speakers, replace=False)
            seconds_k = float(rng.uniform(*seconds))
            utterance_ids, signals = [], []
            for slot, speaker_index in enumerate(chosen):
                speaker_id, speaker = speakers[int(speaker_index)]
                utterance_ids.append(f"{speaker_id}-{index + 1}-{slot:04d}")
                gain = 10 ** (rng.uniform(-2.5, 2.5) / 20)
                signals.append(speech_like(rng, speaker, seconds_k, sampling_rate) * gain)
            scale = 0.9 / max(np.abs(np.sum(signals, axis=0)).max(), 1e-9)
            pcm = [np.round(s * scale * 32767 * 0.98).astype(np.int16) for s in signals]
            mixture = np.sum([p.astype(np.int32) for p in pcm], axis=0).astype(np.int16)
            mixture_id = "_".join(utterance_ids)
            paths = {}
            for column, samples in [("mix_clean", mixture)] + [(f"s{i + 1}", p) for i, p in enumerate(pcm)]:
                path = mode_dir / folder / column / f"{mixture_id}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(path), samples, sampling_rate, subtype="PCM_16")
                paths[column] = path
            rows.append(
                [
                    mixture_id,
                    str(paths["mix_clean"]),
                    *(str(paths[f"s{i + 1}"]) for i in range(num_speakers)),
                    len(mixture),
                ]
            )
        metadata = mode_dir / "metadata" / f"mixture_{folder}_mix_clean.csv"
        metadata.parent.mkdir(parents=True, exist_ok=True)
        with metadata.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "mixture_ID",
                    "mixture_path",
                    *(f"source_{i + 1}_path" for i in range(num_speakers)),
                    "length",
                ]
            )
            writer.writerows(rows)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demixers.datasets_scripts.synthetic_librimix",
        description="Write a small synthetic speech-separation corpus in the LibriMix layout.",
    )
    parser.add_argument("root", help="output folder")
    parser.add_argument("--num-speakers", type=int, default=2, choices=(2, 3))
    parser.add_argument("--sampling-rate", type=int, default=8000, choices=(8000, 16000))
    parser.add_argument("--train", type=int, default=48, help="training mixtures")
    parser.add_argument("--validation", type=int, default=12, help="validation mixtures")
    parser.add_argument("--test", type=int, default=12, help="test mixtures")
    parser.add_argument(
        "--any-pitch", action="store_true", help="mix any two speakers (default: one voice register each)"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = make_synthetic_librimix(
        args.root,
        num_speakers=args.num_speakers,
        sampling_rate=args.sampling_rate,
        items={"train": args.train, "validation": args.validation, "test": args.test},
        mixed_registers=not args.any_pitch,
        seed=args.seed,
    )
    print(f"wrote a synthetic Libri{args.num_speakers}Mix corpus under {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
