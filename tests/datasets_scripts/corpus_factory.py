"""Tiny corpora in each official layout, with generated audio (< 1 s per file)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

MUSDB_STEMS = ("drums", "bass", "other", "vocals")


def write(path: Path, samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, subtype=subtype)
    return path


def speech(rng: np.random.Generator, length: int, channels: int = 1, amplitude: int = 3000) -> np.ndarray:
    """int16 noise-like 'speech' that never clips when a few of them are summed."""
    shape = (length,) if channels == 1 else (length, channels)
    return rng.integers(-amplitude, amplitude, size=shape).astype(np.int16)


def _sum(*parts: np.ndarray) -> np.ndarray:
    return np.sum([p.astype(np.int32) for p in parts], axis=0).astype(np.int16)


LIBRI_SPLITS = ("train-100", "dev", "test")


def librimix_ids(n_src: int, count: int, split_index: int) -> list[str]:
    ids = []
    for k in range(count):
        utterances = [f"{100 * (split_index + 1) + 10 * k + s}-{200 + k}-{s:04d}" for s in range(n_src)]
        ids.append("_".join(utterances))
    return ids


def make_librimix(
    root: Path,
    *,
    n_src: int = 2,
    rate: int = 8000,
    mode: str = "min",
    splits: tuple[str, ...] = LIBRI_SPLITS,
    items_per_split: int = 3,
    seed: int = 0,
) -> Path:
    """``root/Libri{n}Mix/wav{8k}/{mode}/{split}/{mix_clean,mix_both,mix_single,s1..sn,noise}`` + metadata."""
    rng = np.random.default_rng(seed)
    mode_dir = root / f"Libri{n_src}Mix" / f"wav{rate // 1000}k" / mode
    speakers = [f"s{i + 1}" for i in range(n_src)]
    for split_index, split in enumerate(splits):
        rows: dict[str, list[list[str]]] = {"mix_clean": [], "mix_both": [], "mix_single": []}
        for k, mixture_id in enumerate(librimix_ids(n_src, items_per_split, split_index)):
            length = int(rate * (0.2 + 0.1 * k))
            sources = {s: speech(rng, length) for s in speakers}
            sources["noise"] = speech(rng, length, amplitude=1000)
            paths = {
                c: write(mode_dir / split / c / f"{mixture_id}.wav", a, rate) for c, a in sources.items()
            }
            mixes = {
                "mix_clean": _sum(*(sources[s] for s in speakers)),
                "mix_both": _sum(*(sources[s] for s in speakers), sources["noise"]),
                "mix_single": _sum(sources["s1"], sources["noise"]),
            }
            for mix_type, mixture in mixes.items():
                mix_path = write(mode_dir / split / mix_type / f"{mixture_id}.wav", mixture, rate)
                columns = ["s1"] if mix_type == "mix_single" else speakers
                noise = [str(paths["noise"])] if mix_type != "mix_clean" else []
                rows[mix_type].append(
                    [mixture_id, str(mix_path), *(str(paths[c]) for c in columns), *noise, str(length)]
                )
        for mix_type, entries in rows.items():
            count = 1 if mix_type == "mix_single" else n_src
            header = ["mixture_ID", "mixture_path", *(f"source_{i + 1}_path" for i in range(count))]
            header += ["noise_path"] if mix_type != "mix_clean" else []
            header += ["length"]
            csv_path = mode_dir / "metadata" / f"mixture_{split}_{mix_type}.csv"
            csv_path.parent.mkdir(parents=True, exist_ok=True)
            with open(csv_path, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(header)
                writer.writerows(entries)
    return root


WSJ_SPLITS = ("tr", "cv", "tt")


def wsj0_name(rng: np.random.Generator, speakers: list[str]) -> str:
    parts = []
    for i, speaker in enumerate(speakers):
        utterance = f"{speaker}{rng.integers(0, 99999):05d}"[:8]
        gain = rng.uniform(0, 2.5) * (1 if i % 2 == 0 else -1)
        parts += [utterance, f"{gain:.5f}"]
    return "_".join(parts)


SPEAKER_POOL = ("011", "01a", "20d", "40n", "22g", "050")


def make_wsj0mix(
    root: Path, *, n_src: int = 2, rate: int = 8000, items_per_split: int = 3, seed: int = 0
) -> Path:
    """``root/{n}speakers/wav8k/min/{tr,cv,tt}/{mix,s1,...}``."""
    rng = np.random.default_rng(seed)
    mode_dir = root / f"{n_src}speakers" / f"wav{rate // 1000}k" / "min"
    for split in WSJ_SPLITS:
        for k in range(items_per_split):
            speakers = list(rng.choice(SPEAKER_POOL, size=n_src, replace=False))
            name = wsj0_name(rng, speakers)
            length = int(rate * (0.15 + 0.1 * k))
            sources = [speech(rng, length) for _ in range(n_src)]
            for i, source in enumerate(sources):
                write(mode_dir / split / f"s{i + 1}" / f"{name}.wav", source, rate)
            write(mode_dir / split / "mix" / f"{name}.wav", _sum(*sources), rate)
    return root


def make_wham(
    root: Path, *, rate: int = 8000, items_per_split: int = 2, seed: int = 0, reverb: bool = False
) -> Path:
    """WHAM! (``reverb=False``) or WHAMR! layouts under ``root/wav8k/min``."""
    rng = np.random.default_rng(seed)
    mode_dir = root / f"wav{rate // 1000}k" / "min"
    for split in WSJ_SPLITS:
        for k in range(items_per_split):
            name = wsj0_name(rng, list(rng.choice(SPEAKER_POOL, size=2, replace=False)))
            length = int(rate * (0.15 + 0.1 * k))
            s1, s2, noise = speech(rng, length), speech(rng, length), speech(rng, length, amplitude=800)
            if not reverb:
                files = {"s1": s1, "s2": s2, "noise": noise}
                files.update(mix_clean=_sum(s1, s2), mix_both=_sum(s1, s2, noise), mix_single=_sum(s1, noise))
            else:
                r1, r2 = speech(rng, length), speech(rng, length)
                files = {
                    "s1_anechoic": s1,
                    "s2_anechoic": s2,
                    "s1_reverb": r1,
                    "s2_reverb": r2,
                    "noise": noise,
                }
                for room, (a, b) in {"anechoic": (s1, s2), "reverb": (r1, r2)}.items():
                    files[f"mix_clean_{room}"] = _sum(a, b)
                    files[f"mix_both_{room}"] = _sum(a, b, noise)
                    files[f"mix_single_{room}"] = _sum(a, noise)
            for folder, samples in files.items():
                write(mode_dir / split / folder / f"{name}.wav", samples, rate)
    return root


def make_musdb18hq(
    root: Path, tracks: dict[str, list[str]], *, rate: int = 44100, seconds: float = 0.25, seed: int = 0
) -> Path:
    """``root/{train,test}/<track>/{mixture,drums,bass,other,vocals}.wav`` (stereo)."""
    rng = np.random.default_rng(seed)
    for split, names in tracks.items():
        for k, track in enumerate(names):
            length = int(rate * seconds) + 100 * k
            stems = {s: speech(rng, length, channels=2, amplitude=2000) for s in MUSDB_STEMS}
            for stem, samples in stems.items():
                write(root / split / track / f"{stem}.wav", samples, rate)
            write(root / split / track / "mixture.wav", _sum(*stems.values()), rate)
    return root


MIR1K_FILES = ("abjones_1_01", "abjones_2_03", "amy_1_02", "bobon_3_01", "yifen_2_05", "Ani_1_01")


def make_mir1k(
    root: Path, names: tuple[str, ...] = MIR1K_FILES, *, seed: int = 0, loud: str | None = None
) -> Path:
    """``root/MIR-1K/Wavfile/<name>.wav``: 16 kHz stereo, left accompaniment, right voice.

    ``loud`` names a file whose two channels are near full scale, so their sum does not fit 16 bits.
    """
    rng = np.random.default_rng(seed)
    for k, name in enumerate(names):
        length = 1600 + 400 * k
        amplitude = 30000 if name == loud else 4000
        stereo = speech(rng, length, channels=2, amplitude=amplitude)
        if name == loud:
            stereo[:10] = 30000  # both channels high: the sum exceeds int16
        write(root / "MIR-1K" / "Wavfile" / f"{name}.wav", stereo, 16000)
    return root
