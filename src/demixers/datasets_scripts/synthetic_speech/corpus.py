"""Mixtures rendered from the catalogue, the corpus folder (LibriMix layout) and the bundled example."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .constants import (
    ENGINE_SHARES,
    GENERATOR_VERSION,
    MANIFEST,
    NOISE_BELOW_SPEECH_DB,
    NUM_SPEAKERS,
    PEAK,
    RELATIVE_GAIN_DB,
    SAMPLING_RATE,
    SOURCE_LOUDNESS_RANGE,
    SPLIT_CODES,
    SPLIT_FOLDERS,
)
from .dsp import _gain_to, resample, shaped_noise, trim_silence
from .engines import Engine, Speaker, _package_default_engines, build_catalogue
from .files import _atomic_write_text, _csv_text, _write_wav
from .grammar import make_sentence


def write_speakers_csv(speakers: Sequence[Speaker], path: Path) -> None:
    fields = ["id", "split", "engine", "voice", "variant", "pitch", "rate", "identity"]
    _atomic_write_text(path, _csv_text(fields, [[getattr(s, f) for f in fields] for s in speakers]))


# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# mixtures


def _draw_speakers(rng: np.random.Generator, pool: Sequence[Speaker]) -> list[Speaker]:
    engines = sorted({s.engine for s in pool})
    shares = np.array([ENGINE_SHARES.get(e, 0.2) for e in engines])
    chosen: list[Speaker] = []
    for _ in range(NUM_SPEAKERS):
        candidates = [s for s in pool if s not in chosen and s.identity not in {c.identity for c in chosen}]
        if not candidates:
            candidates = [s for s in pool if s not in chosen]
        present = [e for e in engines if any(s.engine == e for s in candidates)]
        weights = np.array([shares[engines.index(e)] for e in present])
        engine = present[int(rng.choice(len(present), p=weights / weights.sum()))]
        options = [s for s in candidates if s.engine == engine]
        chosen.append(options[int(rng.integers(len(options)))])
    return chosen


def _words_per_second(speaker: Speaker) -> float:
    if speaker.engine == "espeak-ng":
        return speaker.rate / 60.0 * 0.9
    return 2.6 / max(speaker.rate, 0.5)


def _utterance(
    engine: Engine, speaker: Speaker, seconds: float, rng: np.random.Generator, workdir: Path
) -> tuple[np.ndarray, str]:
    """At least ``seconds`` (when possible) of ``speaker`` at 8 kHz, trimmed, and its text."""
    wanted = round(seconds * SAMPLING_RATE)
    texts: list[str] = []
    pieces: list[np.ndarray] = []
    words = 0
    while words < 1.2 * seconds * _words_per_second(speaker):
        texts.append(make_sentence(rng))
        words += len(texts[-1].split())
    audio, rate = engine.synthesize(speaker, " ".join(texts), workdir)
    pieces.append(trim_silence(resample(audio, rate)))
    for _ in range(6):
        if sum(len(p) for p in pieces) >= wanted:
            break
        texts.append(make_sentence(rng))
        audio, rate = engine.synthesize(speaker, texts[-1], workdir)
        pieces.append(np.zeros(round(rng.uniform(0.15, 0.4) * SAMPLING_RATE)))
        pieces.append(trim_silence(resample(audio, rate)))
    return np.concatenate(pieces), " ".join(texts)


@dataclass
class Mixture:
    """One rendered mixture: int16 ``(time,)`` PCM per column and its metadata row."""

    id: str
    audio: dict[str, np.ndarray]
    info: dict[str, Any]


def render_mixture(
    speakers: Sequence[Speaker],
    engines: dict[str, Engine],
    seed_sequence: np.random.SeedSequence,
    *,
    seconds: tuple[float, float],
    noise: bool,
    workdir: Path,
    index: int = 0,
) -> Mixture:
    """Render one mixture of two of ``speakers`` (see the module doc); deterministic in ``seed_sequence``."""
    rng = np.random.default_rng(seed_sequence)
    chosen = _draw_speakers(rng, speakers)
    duration = float(rng.uniform(*seconds))
    utterances = [_utterance(engines[s.engine], s, duration, rng, workdir) for s in chosen]
    length = min(round(duration * SAMPLING_RATE), *(len(u) for u, _ in utterances))
    if length < round(0.5 * SAMPLING_RATE):
        raise RuntimeError(
            f"synthesized utterances too short ({length} samples) for {[s.describe() for s in chosen]}"
        )
    target = float(rng.uniform(*SOURCE_LOUDNESS_RANGE))
    relative = float(rng.uniform(-RELATIVE_GAIN_DB, RELATIVE_GAIN_DB))
    targets = [target, target + relative]
    signals = {
        f"s{k + 1}": u[:length] * _gain_to(u[:length], targets[k]) for k, (u, _) in enumerate(utterances)
    }
    noise_target = None
    if noise:
        noise_target = target - float(rng.uniform(*NOISE_BELOW_SPEECH_DB))
        sample = shaped_noise(rng, length)
        signals["noise"] = sample * _gain_to(sample, noise_target)
    mixtures = [signals["s1"] + signals["s2"]]
    if noise:
        mixtures.append(mixtures[0] + signals["noise"])
    peak = max(float(np.abs(x).max()) for x in [*signals.values(), *mixtures])
    scale = min(1.0, PEAK / peak)
    audio = {name: np.round(x * scale * 32767.0).astype(np.int16) for name, x in signals.items()}
    audio["mix_clean"] = (audio["s1"].astype(np.int32) + audio["s2"]).astype(np.int16)
    if noise:
        audio["mix_both"] = (audio["mix_clean"].astype(np.int32) + audio["noise"]).astype(np.int16)
    utterance_ids = [f"{s.id}-{index // 1000 + 1}-{index % 1000:04d}" for s in chosen]
    scale_db = 20.0 * math.log10(scale)
    info = {
        "mixture_ID": "_".join(utterance_ids),
        "length": length,
        "scale_db": round(scale_db, 6),
        "noise_loudness": "" if noise_target is None else round(noise_target + scale_db, 6),
    }
    for k, (speaker, (_, text)) in enumerate(zip(chosen, utterances, strict=True)):
        info[f"speaker_{k + 1}"] = speaker.id
        info[f"source_{k + 1}_loudness"] = round(targets[k] + scale_db, 6)
        info[f"source_{k + 1}_voice"] = speaker.describe()
        info[f"source_{k + 1}_text"] = text
    return Mixture(info["mixture_ID"], audio, info)


# ---------------------------------------------------------------------------------------------------
# corpus folders


def mode_dir(root: Path) -> Path:
    return Path(root) / f"Libri{NUM_SPEAKERS}Mix" / f"wav{SAMPLING_RATE // 1000}k" / "min"


def _mixture_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(SPLIT_CODES[split], index))


@dataclass
class _Task:
    root: str
    split: str
    indices: list[int]
    speakers: list[Speaker]
    engines: list[Engine]
    seed: int
    seconds: tuple[float, float]
    noise: bool


def _run_task(task: _Task) -> list[dict[str, Any]]:
    base = mode_dir(Path(task.root)) / SPLIT_FOLDERS[task.split]
    engines = {e.name: e for e in task.engines}
    rows = []
    with tempfile.TemporaryDirectory(prefix="demixers-tts-") as folder, contextlib.ExitStack() as stack:
        for engine in engines.values():
            stack.enter_context(engine.session(Path(folder)))
        for index in task.indices:
            mixture = render_mixture(
                task.speakers,
                engines,
                _mixture_seed(task.seed, task.split, index),
                seconds=task.seconds,
                noise=task.noise,
                workdir=Path(folder),
                index=index,
            )
            # mix_clean last: its presence marks a finished mixture
            for column in sorted(mixture.audio, key=lambda c: c == "mix_clean"):
                _write_wav(base / column / f"{mixture.id}.wav", mixture.audio[column])
            rows.append({"index": index, **mixture.info})
    return rows


def _check_output(root: Path, overwrite: bool) -> None:
    owned = [root / MANIFEST, root / "speakers.csv", root / f"Libri{NUM_SPEAKERS}Mix"]
    present = [p for p in owned if p.exists()]
    if present and not overwrite:
        raise FileExistsError(
            f"{root} already holds a corpus ({', '.join(p.name for p in present)}); "
            "pass --overwrite to replace it"
        )
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"--output {root} is not a folder")
    for path in present:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def generate_corpus(
    output: str | os.PathLike[str],
    *,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    seconds: tuple[float, float] = (3.0, 6.0),
    noise: bool = False,
    overwrite: bool = False,
    num_workers: int = 1,
    engines: Sequence[Engine] | None = None,
    chunk_size: int = 25,
    progress: bool = False,
) -> Path:
    """Write the corpus under ``output`` (see the module doc) and return it.

    ``sizes`` maps ``train``/``validation``/``test`` to numbers of mixtures (default 3000/200/200);
    ``engines`` replaces the Debian TTS engines (tests inject a pure-Python one).
    """
    sizes = {"train": 3000, "validation": 200, "test": 200} if sizes is None else dict(sizes)
    for split, count in sizes.items():
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"sizes: unknown split {split!r} (expected {', '.join(SPLIT_FOLDERS)})")
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"sizes[{split!r}] must be a non-negative integer, got {count!r}")
    low, high = seconds
    if not 1.0 <= low <= high:
        raise ValueError(f"seconds must be (low, high) with 1 <= low <= high, got {seconds!r}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    engines = list(_package_default_engines() if engines is None else engines)
    speakers = build_catalogue(seed, engines)
    root = Path(output)
    _check_output(root, overwrite)
    root.mkdir(parents=True, exist_ok=True)
    used = [e for e in engines if any(s.engine == e.name for s in speakers)]
    tasks = []
    for split, count in sizes.items():
        pool = [s for s in speakers if s.split == split]
        for start in range(0, count, chunk_size):
            indices = list(range(start, min(count, start + chunk_size)))
            tasks.append(_Task(str(root), split, indices, pool, used, seed, (float(low), float(high)), noise))
    from tqdm.auto import tqdm

    results: dict[str, list[dict[str, Any]]] = {split: [] for split in sizes}
    bar = tqdm(total=sum(sizes.values()), desc="synthetic-speech", unit="mixture", disable=not progress)
    if num_workers == 1 or len(tasks) <= 1:
        for task in tasks:
            results[task.split].extend(_run_task(task))
            bar.update(len(task.indices))
    else:
        import concurrent.futures
        import multiprocessing
        import sys

        method = "fork" if sys.platform.startswith("linux") else "spawn"
        context = multiprocessing.get_context(method)
        with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=context) as pool:
            futures = {pool.submit(_run_task, task): task for task in tasks}
            for future in concurrent.futures.as_completed(futures):
                results[futures[future].split].extend(future.result())
                bar.update(len(futures[future].indices))
    bar.close()
    _write_metadata(root, results, noise)
    write_speakers_csv(speakers, root / "speakers.csv")
    manifest = {
        "generator": "demixers synthetic-speech",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "sizes": sizes,
        "seconds": [low, high],
        "noise": noise,
        "sampling_rate": SAMPLING_RATE,
        "speakers_sha256": hashlib.sha256((root / "speakers.csv").read_bytes()).hexdigest(),
    }
    _atomic_write_text(root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return root


def _write_metadata(root: Path, results: dict[str, list[dict[str, Any]]], noise: bool) -> None:
    metadata = mode_dir(root) / "metadata"
    prefix = mode_dir(Path(".")).as_posix()
    for split, rows in results.items():
        rows = sorted(rows, key=lambda row: row["index"])
        folder = SPLIT_FOLDERS[split]

        def path(column: str, mixture_id: str, folder: str = folder) -> str:
            return f"{prefix}/{folder}/{column}/{mixture_id}.wav"

        for mix_type in ("mix_clean", "mix_both") if noise else ("mix_clean",):
            header = ["mixture_ID", "mixture_path", "source_1_path", "source_2_path"]
            header += ["noise_path"] if mix_type == "mix_both" else []
            body = []
            for row in rows:
                mixture_id = row["mixture_ID"]
                line = [
                    mixture_id,
                    path(mix_type, mixture_id),
                    path("s1", mixture_id),
                    path("s2", mixture_id),
                ]
                line += [path("noise", mixture_id)] if mix_type == "mix_both" else []
                body.append([*line, row["length"]])
            _atomic_write_text(
                metadata / f"mixture_{folder}_{mix_type}.csv", _csv_text([*header, "length"], body)
            )
        info_header = [key for key in (rows[0] if rows else {}) if key != "index"]
        _atomic_write_text(
            metadata / f"info_{folder}.csv",
            _csv_text(info_header, [[row[k] for k in info_header] for row in rows]),
        )


# ---------------------------------------------------------------------------------------------------
# the bundled example


def make_example_mixture(
    seed: int = 0, seconds: float = 10.0, *, engines: Sequence[Engine] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One mixture of two held-back (test-split) speakers, as the corpus of ``seed`` would make it.

    Returns ``(mixture (time,), sources (2, time), descriptions)``: float32 at 8 kHz, the mixture the
    exact sum of the 16-bit sources (both scaled to full scale 1), and one line per speaker
    (``"espeak-ng en-gb+m3 (pitch 52, rate 160)"``). A 10 s example strings two or three sentences per
    speaker together.
    """
    if seconds < 1.0:
        raise ValueError(f"seconds must be >= 1, got {seconds}")
    engines = list(_package_default_engines() if engines is None else engines)
    speakers = [s for s in build_catalogue(seed, engines) if s.split == "test"]
    with tempfile.TemporaryDirectory(prefix="demixers-tts-") as folder, contextlib.ExitStack() as stack:
        for engine in engines:
            stack.enter_context(engine.session(Path(folder)))
        mixture = render_mixture(
            speakers,
            {e.name: e for e in engines},
            np.random.SeedSequence(seed, spawn_key=(99,)),
            seconds=(seconds, seconds),
            noise=False,
            workdir=Path(folder),
        )
    sources = np.stack([mixture.audio["s1"], mixture.audio["s2"]]).astype(np.float32) / 32768.0
    descriptions = [mixture.info["source_1_voice"], mixture.info["source_2_voice"]]
    return mixture.audio["mix_clean"].astype(np.float32) / 32768.0, sources, descriptions
