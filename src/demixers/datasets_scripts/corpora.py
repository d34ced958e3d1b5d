"""The corpora ``demixers prepare`` knows: where their files are and what they promise.

Each corpus is a `Corpus` subclass registered in `CORPORA` under its command-line name. A corpus
turns a root folder (and its options) into a `Layout`: the audio columns, the sample rate, extra
per-row fields and, per split, the `Item`s (one per mixture) with the files each row is built from.
The generic machinery in `prepare.py` does the rest (validation, lossless encoding, shards, resume),
so adding a corpus (e.g. a synthetic one) is one subclass and one `register_corpus` call.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .audio import PCM, pcm_from_int_sum, read_pcm

# The official MUSDB18 validation split: `musdb`'s configs/mus.yaml, key `validation_tracks`.
MUSDB_VALIDATION_TRACKS: tuple[str, ...] = (
    "Actions - One Minute Smile",
    "Clara Berry And Wooldog - Waltz For My Victims",
    "Johnny Lokke - Promises & Lies",
    "Patrick Talbot - A Reason To Leave",
    "Triviul - Angelsaint",
    "Alexander Ross - Goodbye Bolero",
    "Fergessen - Nos Palpitants",
    "Leaf - Summerghost",
    "Skelpolu - Human Mistakes",
    "Young Griffo - Pennies",
    "ANiMAL - Rockshow",
    "James May - On The Line",
    "Meaxic - Take A Step",
    "Traffic Experiment - Sirens",
)

# MUSDB18 stem order inside a .stem.mp4 (musdb's `stem_ids`) and the column order we store.
MUSDB_STEM_IDS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
MUSDB_SOURCES = ("drums", "bass", "other", "vocals")

# MIR-1K training singers in the stacked-hourglass split (Park et al., 2018), the rest is test.
MIR1K_TRAIN_PREFIXES = ("abjones", "amy")

FFMPEG_INSTALL_HINT = (
    "install ffmpeg so that `ffmpeg` is on PATH (e.g. `apt-get install ffmpeg`, `conda install ffmpeg` "
    "or `brew install ffmpeg`), or prepare the MUSDB18-HQ wav release with `demixers prepare musdb18hq`"
)


class FFmpegNotFoundError(FileNotFoundError):
    """The ffmpeg executable needed to decode ``.stem.mp4`` files is not installed."""


@dataclass
class Item:
    """One mixture: its id, the files it is read from and its extra fields."""

    id: str
    files: dict[str, Path]
    fields: dict[str, Any] = field(default_factory=dict)
    expected_length: int | None = None  # samples, when the corpus metadata states it
    origin: str = ""  # where the item was listed (metadata file), for error messages


@dataclass
class Layout:
    """What a corpus folder holds, as a dataset: columns, rate and items per split."""

    sampling_rate: int
    audio_columns: list[str]  # "mixture" first, then the sources in their canonical order
    splits: dict[str, list[Item]]
    extra_features: dict[str, str] = field(
        default_factory=dict
    )  # name -> "string" | "int64" | "list<string>"
    sum_of: tuple[str, ...] | None = None  # audio columns whose sum is the mixture, if promised
    num_channels: int | None = None  # expected channels of every column, when the corpus fixes it
    description: str = ""


# ---------------------------------------------------------------------------------------------------
# registry


CORPORA: dict[str, Corpus] = {}


def register_corpus(corpus: Corpus) -> Corpus:
    """Add a corpus to `CORPORA` (the ``demixers prepare`` sub-commands and raw-folder loading)."""
    CORPORA[corpus.name] = corpus
    return corpus


def get_corpus(name: str) -> Corpus:
    try:
        return CORPORA[name]
    except KeyError:
        raise ValueError(f"unknown corpus {name!r}; known corpora: {', '.join(sorted(CORPORA))}") from None


def detect_corpus(root: str | os.PathLike[str]) -> Corpus | None:
    """The registered corpus whose layout ``root`` holds, or ``None``."""
    root = Path(root)
    for corpus in CORPORA.values():
        try:
            if corpus.detect(root):
                return corpus
        except OSError:
            continue
    return None


class Corpus:
    """Base class of a corpus: override `discover` (and `read_item` for non-file sources)."""

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    default_shard_size: ClassVar[int] = 500
    # corpus option name -> default, used for fingerprints and load_separation_dataset(**options)
    option_defaults: ClassVar[dict[str, Any]] = {}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Corpus-specific command-line options (destinations named like `option_defaults`)."""

    def options_from_args(self, args: argparse.Namespace) -> dict[str, Any]:
        return {key: getattr(args, key, default) for key, default in self.option_defaults.items()}

    def resolve_options(self, options: dict[str, Any]) -> dict[str, Any]:
        unknown = set(options) - set(self.option_defaults)
        if unknown:
            raise TypeError(
                f"unknown option(s) for corpus {self.name!r}: {sorted(unknown)} "
                f"(known: {sorted(self.option_defaults)})"
            )
        return {**self.option_defaults, **{k: v for k, v in options.items() if v is not None}}

    def check_requirements(self) -> None:
        """Raise when a tool the corpus needs is missing."""

    def detect(self, root: Path) -> bool:
        """Whether ``root`` looks like this corpus (used to load raw folders)."""
        return False

    def discover(self, root: Path, **options: Any) -> Layout:
        raise NotImplementedError

    def read_item(self, item: Item, layout: Layout) -> dict[str, PCM]:
        """Read every audio column of ``item`` losslessly (default: one file per column)."""
        return {column: read_pcm(item.files[column]) for column in layout.audio_columns}

    def header_problems(self, item: Item, layout: Layout) -> list[str]:
        """Problems visible without decoding: missing files, unreadable headers, rates, lengths."""
        return check_file_headers(item, layout, item.files)


def check_file_headers(item: Item, layout: Layout, files: dict[str, Path]) -> list[str]:
    import soundfile

    problems: list[str] = []
    frames: dict[str, int] = {}
    for column, path in files.items():
        if not path.is_file():
            problems.append(f"{column}: missing file {path}")
            continue
        try:
            info = soundfile.info(str(path))
        except (soundfile.LibsndfileError, RuntimeError) as error:
            problems.append(f"{column}: unreadable file {path} ({error})")
            continue
        if info.samplerate != layout.sampling_rate:
            problems.append(
                f"{column}: sampling rate {info.samplerate} Hz, expected {layout.sampling_rate} Hz ({path})"
            )
        if layout.num_channels is not None and info.channels != layout.num_channels:
            problems.append(f"{column}: {info.channels} channel(s), expected {layout.num_channels} ({path})")
        if info.frames == 0:
            problems.append(f"{column}: no samples ({path})")
        frames[column] = int(info.frames)
    problems.extend(length_problems(item, frames, {c: str(p) for c, p in files.items()}))
    return problems


def length_problems(item: Item, frames: dict[str, int], where: dict[str, str]) -> list[str]:
    """Name every column whose length disagrees with the metadata (or with the other columns)."""
    if not frames:
        return []
    if item.expected_length is not None:
        reference, source = item.expected_length, f"the metadata ({item.origin or 'length'})"
    else:
        values, counts = np.unique(list(frames.values()), return_counts=True)
        if len(values) == 1:
            return []
        majority = values[counts == counts.max()]
        reference = int(frames["mixture"]) if "mixture" in frames and frames["mixture"] in majority else None
        if reference is None:
            reference = int(majority.max())
        source = "the other files of this item"
    return [
        f"{column}: {n} samples but {source} say{'s' if source.startswith('the metadata') else ''} "
        f"{reference} ({where.get(column, column)})"
        for column, n in frames.items()
        if n != reference
    ]


# ---------------------------------------------------------------------------------------------------
# helpers shared by the speech corpora

RATE_FOLDERS = {8000: "wav8k", 16000: "wav16k"}


def _rate_mode_dirs(root: Path, depth: int = 2) -> list[Path]:
    """Every ``.../wav{8k,16k}/{min,max}`` folder at most ``depth`` levels under ``root``."""
    found: list[Path] = []
    frontier = [root]
    for _ in range(depth + 1):
        next_frontier: list[Path] = []
        for folder in frontier:
            for rate_folder in RATE_FOLDERS.values():
                for mode in ("min", "max"):
                    candidate = folder / rate_folder / mode
                    if candidate.is_dir():
                        found.append(candidate)
            with contextlib.suppress(OSError):
                next_frontier.extend(sorted(p for p in folder.iterdir() if p.is_dir()))
        frontier = next_frontier
    return found


def _pick_rate_mode_dir(
    root: Path,
    sampling_rate: int | None,
    mode: str,
    corpus: str,
    accept: Callable[[Path], bool] = lambda p: True,
) -> tuple[Path, int]:
    if not root.is_dir():
        raise FileNotFoundError(f"{corpus}: corpus root {root} is not a folder")
    # a root that already is `.../wav8k/min`
    candidates = [root] if root.parent.name in RATE_FOLDERS.values() and root.name in ("min", "max") else []
    candidates += _rate_mode_dirs(root)
    candidates = [c for c in candidates if accept(c)]
    wanted = []
    for candidate in candidates:
        rate = {v: k for k, v in RATE_FOLDERS.items()}[candidate.parent.name]
        if candidate.name == mode and (sampling_rate is None or rate == sampling_rate):
            wanted.append((candidate, rate))
    rates = sorted({rate for _, rate in wanted})
    if not wanted:
        expected = f"{RATE_FOLDERS.get(sampling_rate, 'wav8k|wav16k')}/{mode}"
        raise FileNotFoundError(
            f"{corpus}: no `{expected}` folder under {root}; point ROOT at the generator's output "
            "folder (or pass --sample-rate/--mode to match what was generated)"
        )
    if len(rates) > 1:
        raise ValueError(
            f"{corpus}: {root} holds several sample rates ({', '.join(map(str, rates))} Hz); "
            "pick one with --sample-rate"
        )
    if len({c for c, _ in wanted}) > 1:
        raise ValueError(
            f"{corpus}: {root} holds several candidate folders ({', '.join(str(c) for c, _ in wanted)}); "
            "point ROOT at the one to prepare"
        )
    return wanted[0]


def wsj0_ids(stem: str, num_speakers: int) -> tuple[list[str], list[str]]:
    """Utterance and speaker ids from a wsj0-mix file name (``011a010b_0.61622_20do010c_-0.61622``)."""
    tokens = stem.split("_")
    if len(tokens) != 2 * num_speakers:
        return [], []
    utterances = tokens[0::2]
    if not all(re.fullmatch(r"[0-9a-z]{8}", u) for u in utterances):
        return [], []
    return utterances, [u[:3] for u in utterances]


def librispeech_ids(mixture_id: str, num_speakers: int) -> tuple[list[str], list[str]]:
    """Utterance and speaker ids from a LibriMix mixture id (``4077-13754-0001_5142-33396-0055``)."""
    utterances = mixture_id.split("_")
    if len(utterances) != num_speakers or not all(re.fullmatch(r"\d+-\d+-\d+", u) for u in utterances):
        return [], []
    return utterances, [u.split("-")[0] for u in utterances]


def _wav_stems(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.iterdir() if p.suffix.lower() in (".wav", ".flac") and p.is_file())


def _audio_file(folder: Path, stem: str) -> Path:
    wav = folder / f"{stem}.wav"
    if not wav.exists() and (folder / f"{stem}.flac").exists():
        return folder / f"{stem}.flac"
    return wav


MIX_TYPE_HELP = "which mixtures to store; their sources (and noise) become columns (default: %(default)s)"

SPEECH_FEATURES = {"speaker_ids": "list<string>", "utterance_ids": "list<string>"}


# ---------------------------------------------------------------------------------------------------
# LibriMix


class LibriMix(Corpus):
    name = "librimix"
    help = "LibriMix generator output (Libri2Mix/Libri3Mix, wav8k|wav16k, min|max)"
    option_defaults: ClassVar[dict[str, Any]] = {
        "n_src": None,
        "sample_rate": None,
        "mode": "min",
        "mix_type": "mix_clean",
    }
    SPLITS: ClassVar[dict[str, str]] = {
        "train-100": "train_100",
        "train-360": "train_360",
        "dev": "validation",
        "test": "test",
    }
    MIX_TYPES = ("mix_clean", "mix_both", "mix_single")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--n-src", dest="n_src", type=int, choices=(2, 3), help="speakers (default: found)"
        )
        parser.add_argument("--sample-rate", dest="sample_rate", type=int, choices=(8000, 16000))
        parser.add_argument("--mode", choices=("min", "max"), default="min")
        parser.add_argument(
            "--mix-type",
            dest="mix_type",
            choices=self.MIX_TYPES,
            default="mix_clean",
            help=MIX_TYPE_HELP,
        )

    def detect(self, root: Path) -> bool:
        return any(
            (d / "metadata").is_dir() or any((d / s).is_dir() for s in self.SPLITS)
            for d in _rate_mode_dirs(root)
            if any(part.startswith("Libri") and part.endswith("Mix") for part in d.parts)
        ) or bool(re.fullmatch(r"Libri\dMix", root.name) and _rate_mode_dirs(root))

    def discover(self, root: Path, **options: Any) -> Layout:
        n_src, mix_type = options["n_src"], options["mix_type"]
        if mix_type not in self.MIX_TYPES:
            raise ValueError(f"librimix: mix_type must be one of {self.MIX_TYPES}, got {mix_type!r}")

        def accept(candidate: Path) -> bool:
            names = [p for p in candidate.parts if re.fullmatch(r"Libri\dMix", p)]
            return n_src is None or not names or names[-1] == f"Libri{n_src}Mix"

        mode_dir, rate = _pick_rate_mode_dir(root, options["sample_rate"], options["mode"], self.name, accept)
        if n_src is None:
            names = [p for p in mode_dir.parts if re.fullmatch(r"Libri\dMix", p)]
            if names:
                n_src = int(names[-1][5])
            else:
                n_src = 3 if any((mode_dir / s / "s3").is_dir() for s in self.SPLITS) else 2
        speakers = [f"s{i + 1}" for i in range(n_src)]
        sources = (
            ["s1", "noise"]
            if mix_type == "mix_single"
            else speakers + (["noise"] if mix_type == "mix_both" else [])
        )
        splits: dict[str, list[Item]] = {}
        for folder, split in self.SPLITS.items():
            csv_path = mode_dir / "metadata" / f"mixture_{folder}_{mix_type}.csv"
            if csv_path.is_file():
                splits[split] = self._items_from_csv(csv_path, mode_dir, folder, mix_type, sources, n_src)
            elif (mode_dir / folder / mix_type).is_dir():
                splits[split] = self._items_from_folders(mode_dir / folder, mix_type, sources, n_src)
        if not splits:
            raise FileNotFoundError(
                f"librimix: no split of {mix_type} under {mode_dir} (expected metadata/mixture_<split>_"
                f"{mix_type}.csv or <split>/{mix_type}/ for a split among {', '.join(self.SPLITS)})"
            )
        return Layout(
            sampling_rate=rate,
            audio_columns=["mixture", *sources],
            splits=splits,
            extra_features=dict(SPEECH_FEATURES),
            sum_of=tuple(sources),
            num_channels=1,
            description=f"Libri{n_src}Mix {rate // 1000}k {options['mode']} {mix_type}",
        )

    def _items_from_csv(
        self, csv_path: Path, mode_dir: Path, folder: str, mix_type: str, sources: list[str], n_src: int
    ) -> list[Item]:
        try:
            return self._read_csv(csv_path, mode_dir, folder, mix_type, sources, n_src)
        except (csv.Error, UnicodeDecodeError) as error:
            raise ValueError(f"librimix: {csv_path} is not a readable CSV file ({error})") from None

    def _read_csv(
        self, csv_path: Path, mode_dir: Path, folder: str, mix_type: str, sources: list[str], n_src: int
    ) -> list[Item]:
        column_of = {"mixture": "mixture_path", "noise": "noise_path"}
        column_of.update({f"s{i}": f"source_{i}_path" for i in range(1, 4)})
        items = []
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [
                column_of[c] for c in ["mixture", *sources] if column_of[c] not in (reader.fieldnames or [])
            ]
            if "mixture_ID" not in (reader.fieldnames or []) or missing:
                raise ValueError(
                    f"librimix: {csv_path} lacks column(s) {', '.join(['mixture_ID', *missing])} "
                    f"(has {', '.join(reader.fieldnames or [])})"
                )
            for line, row in enumerate(reader, start=2):
                mixture_id = row["mixture_ID"]
                files = {}
                for column in ["mixture", *sources]:
                    subdir = mix_type if column == "mixture" else column
                    files[column] = self._resolve(
                        row[column_of[column]], mode_dir, folder, subdir, mixture_id
                    )
                if mixture_id is None or any(row[column_of[c]] is None for c in ["mixture", *sources]):
                    raise ValueError(f"librimix: {csv_path} line {line} has too few fields")
                length = row.get("length")
                try:
                    expected_length = int(float(length)) if length not in (None, "") else None
                except ValueError:
                    raise ValueError(
                        f"librimix: {csv_path} line {line}: length {length!r} is not a number"
                    ) from None
                utterances, speakers = librispeech_ids(mixture_id, n_src)
                if mix_type == "mix_single":
                    utterances, speakers = utterances[:1], speakers[:1]
                items.append(
                    Item(
                        id=mixture_id,
                        files=files,
                        fields={"speaker_ids": speakers, "utterance_ids": utterances},
                        expected_length=expected_length,
                        origin=f"{csv_path.name} line {line}",
                    )
                )
        return items

    @staticmethod
    def _resolve(listed: str, mode_dir: Path, folder: str, subdir: str, mixture_id: str) -> Path:
        """The CSV's path if it exists (absolute, or relative to the corpus), else the conventional one."""
        listed = (listed or "").strip()
        if listed:
            path = Path(listed)
            for candidate in (
                [path] if path.is_absolute() else [mode_dir / path, mode_dir.parent.parent.parent / path]
            ):
                if candidate.is_file():
                    return candidate
        name = Path(listed.replace("\\", "/")).name if listed else f"{mixture_id}.wav"
        return mode_dir / folder / subdir / name

    def _items_from_folders(
        self, split_dir: Path, mix_type: str, sources: list[str], n_src: int
    ) -> list[Item]:
        items = []
        stems = set(_wav_stems(split_dir / mix_type))
        for column in sources:
            if (split_dir / column).is_dir():
                stems.update(_wav_stems(split_dir / column))
        for stem in sorted(stems):
            files = {"mixture": _audio_file(split_dir / mix_type, stem)}
            files.update({c: _audio_file(split_dir / c, stem) for c in sources})
            utterances, speakers = librispeech_ids(stem, n_src)
            if mix_type == "mix_single":
                utterances, speakers = utterances[:1], speakers[:1]
            items.append(Item(stem, files, {"speaker_ids": speakers, "utterance_ids": utterances}))
        return items


# ---------------------------------------------------------------------------------------------------
# wsj0-mix family: wsj0-2mix, wsj0-3mix, WHAM!, WHAMR!


class Wsj0MixFamily(Corpus):
    """``wav8k/min/{tr,cv,tt}/<folder per mixture type and source>`` layouts."""

    SPLITS: ClassVar[dict[str, str]] = {"tr": "train", "cv": "validation", "tt": "test"}
    num_speakers: ClassVar[int] = 2
    # mixture type -> (mixture folder, sources that sum to it: column -> folder)
    MIX_TYPES: ClassVar[dict[str, tuple[str, dict[str, str]]]] = {}
    default_mix_type: ClassVar[str] = ""
    option_defaults: ClassVar[dict[str, Any]] = {"sample_rate": None, "mode": "min", "mix_type": None}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--sample-rate", dest="sample_rate", type=int, choices=(8000, 16000))
        parser.add_argument("--mode", choices=("min", "max"), default="min")
        if len(self.MIX_TYPES) > 1:
            parser.add_argument(
                "--mix-type",
                dest="mix_type",
                choices=tuple(self.MIX_TYPES),
                default=self.default_mix_type,
                help=MIX_TYPE_HELP,
            )

    def _accept(self, candidate: Path) -> bool:
        return any(
            (candidate / split / folder).is_dir()
            for split in self.SPLITS
            for folder, _ in self.MIX_TYPES.values()
        ) and self._looks_like_me(candidate)

    def _looks_like_me(self, candidate: Path) -> bool:
        return True

    def detect(self, root: Path) -> bool:
        return any(self._accept(c) for c in _rate_mode_dirs(root))

    def target_columns(self, mix_type: str, options: dict[str, Any]) -> tuple[dict[str, str], bool]:
        """The stored sources (column -> folder) and whether they sum to the mixture."""
        return self.MIX_TYPES[mix_type][1], True

    def discover(self, root: Path, **options: Any) -> Layout:
        mix_type = options.get("mix_type") or self.default_mix_type
        if mix_type not in self.MIX_TYPES:
            raise ValueError(
                f"{self.name}: mix_type must be one of {tuple(self.MIX_TYPES)}, got {mix_type!r}"
            )
        mode_dir, rate = _pick_rate_mode_dir(
            root, options["sample_rate"], options["mode"], self.name, self._accept
        )
        mixture_folder, _ = self.MIX_TYPES[mix_type]
        sources, sums = self.target_columns(mix_type, options)
        splits: dict[str, list[Item]] = {}
        for folder, split in self.SPLITS.items():
            split_dir = mode_dir / folder
            if not (split_dir / mixture_folder).is_dir():
                continue
            items = []
            # an item is any name found in the mixture folder or in a source folder, so that a
            # missing mixture is reported rather than silently absent
            stems = set(_wav_stems(split_dir / mixture_folder))
            for sub in sources.values():
                if (split_dir / sub).is_dir():
                    stems.update(_wav_stems(split_dir / sub))
            for stem in sorted(stems):
                files = {"mixture": _audio_file(split_dir / mixture_folder, stem)}
                files.update({column: _audio_file(split_dir / sub, stem) for column, sub in sources.items()})
                utterances, speakers = wsj0_ids(stem, self.num_speakers)
                num_speech = sum(1 for c in sources if c != "noise")
                items.append(
                    Item(
                        stem,
                        files,
                        {"speaker_ids": speakers[:num_speech], "utterance_ids": utterances[:num_speech]},
                    )
                )
            splits[split] = items
        if not splits:
            raise FileNotFoundError(
                f"{self.name}: no {'/'.join(self.SPLITS)} folder with `{mixture_folder}/` under {mode_dir}"
            )
        return Layout(
            sampling_rate=rate,
            audio_columns=["mixture", *sources],
            splits=splits,
            extra_features=dict(SPEECH_FEATURES),
            sum_of=tuple(sources) if sums else None,
            num_channels=1,
            description=f"{self.name} {rate // 1000}k {options['mode']} {mix_type}",
        )


class Wsj0TwoMix(Wsj0MixFamily):
    name = "wsj0-2mix"
    help = "wsj0-2mix (create_wav_2speakers.m output: 2speakers/wav8k/min/{tr,cv,tt}/{mix,s1,s2})"
    MIX_TYPES: ClassVar[dict[str, tuple[str, dict[str, str]]]] = {"mix": ("mix", {"s1": "s1", "s2": "s2"})}
    default_mix_type = "mix"

    def _looks_like_me(self, candidate: Path) -> bool:
        split = next((candidate / s for s in self.SPLITS if (candidate / s).is_dir()), None)
        return split is not None and not (split / "s3").is_dir() and not (split / "noise").is_dir()


class Wsj0ThreeMix(Wsj0MixFamily):
    name = "wsj0-3mix"
    help = "wsj0-3mix (create_wav_3speakers.m output: 3speakers/wav8k/min/{tr,cv,tt}/{mix,s1,s2,s3})"
    num_speakers = 3
    MIX_TYPES: ClassVar[dict[str, tuple[str, dict[str, str]]]] = {
        "mix": ("mix", {"s1": "s1", "s2": "s2", "s3": "s3"})
    }
    default_mix_type = "mix"

    def _looks_like_me(self, candidate: Path) -> bool:
        return any((candidate / s / "s3").is_dir() for s in self.SPLITS)


class Wham(Wsj0MixFamily):
    name = "wham"
    help = "WHAM! (wham_scripts output: wav8k/min/{tr,cv,tt}/{mix_clean,mix_both,mix_single,s1,s2,noise})"
    MIX_TYPES: ClassVar[dict[str, tuple[str, dict[str, str]]]] = {
        "mix_clean": ("mix_clean", {"s1": "s1", "s2": "s2"}),
        "mix_both": ("mix_both", {"s1": "s1", "s2": "s2", "noise": "noise"}),
        "mix_single": ("mix_single", {"s1": "s1", "noise": "noise"}),
    }
    default_mix_type = "mix_both"

    def _looks_like_me(self, candidate: Path) -> bool:
        return any((candidate / s / "s1").is_dir() for s in self.SPLITS)


class WhamR(Wsj0MixFamily):
    name = "whamr"
    help = (
        "WHAMR! (whamr_scripts output: wav8k/min/{tr,cv,tt}/"
        "{mix_*_anechoic,mix_*_reverb,s*_anechoic,s*_reverb,noise})"
    )
    MIX_TYPES: ClassVar[dict[str, tuple[str, dict[str, str]]]] = {
        f"{kind}_{room}": (
            f"{kind}_{room}",
            {
                **{s: f"{s}_{room}" for s in (("s1",) if kind == "mix_single" else ("s1", "s2"))},
                **({"noise": "noise"} if kind != "mix_clean" else {}),
            },
        )
        for room in ("anechoic", "reverb")
        for kind in ("mix_clean", "mix_both", "mix_single")
    }
    default_mix_type = "mix_both_reverb"
    option_defaults: ClassVar[dict[str, Any]] = {**Wsj0MixFamily.option_defaults, "target": "anechoic"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--target",
            choices=("anechoic", "reverb"),
            default="anechoic",
            help="which speech sources to store as s1/s2 (default: anechoic, i.e. dereverberation targets)",
        )

    def _looks_like_me(self, candidate: Path) -> bool:
        return any((candidate / s / "s1_anechoic").is_dir() for s in self.SPLITS)

    def target_columns(self, mix_type: str, options: dict[str, Any]) -> tuple[dict[str, str], bool]:
        target = options.get("target") or "anechoic"
        if target not in ("anechoic", "reverb"):
            raise ValueError(f"whamr: target must be 'anechoic' or 'reverb', got {target!r}")
        room = mix_type.rsplit("_", 1)[1]
        columns = {c: (f"{c}_{target}" if c != "noise" else "noise") for c in self.MIX_TYPES[mix_type][1]}
        return columns, target == room


# ---------------------------------------------------------------------------------------------------
# music


def _track_fields(track: str) -> dict[str, str]:
    artist, _, title = track.partition(" - ")
    return {"track_name": track, "artist": artist.strip() if title else "", "title": title.strip() or track}


MUSIC_FEATURES = {"track_name": "string", "artist": "string", "title": "string"}


class MusdbBase(Corpus):
    default_shard_size = 4
    option_defaults: ClassVar[dict[str, Any]] = {"validation_split": "official"}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--validation-split",
            dest="validation_split",
            choices=("official", "none"),
            default="official",
            help="move musdb's 14 official validation tracks from train to a `validation` split (default)",
        )

    def _split_of(self, folder: str, track: str, validation_split: str) -> str:
        if folder == "train" and validation_split == "official" and track in MUSDB_VALIDATION_TRACKS:
            return "validation"
        return folder

    def _root(self, root: Path) -> Path:
        if not root.is_dir():
            raise FileNotFoundError(f"{self.name}: corpus root {root} is not a folder")
        return root


class MusdbHQ(MusdbBase):
    name = "musdb18hq"
    help = "MUSDB18-HQ ({train,test}/<track>/{mixture,drums,bass,other,vocals}.wav)"

    def detect(self, root: Path) -> bool:
        return any(
            (root / folder).is_dir() and any((t / "mixture.wav").is_file() for t in (root / folder).iterdir())
            for folder in ("train", "test")
        )

    def discover(self, root: Path, **options: Any) -> Layout:
        root = self._root(root)
        splits: dict[str, list[Item]] = {"train": [], "validation": [], "test": []}
        for folder in ("train", "test"):
            if not (root / folder).is_dir():
                continue
            for track_dir in sorted(p for p in (root / folder).iterdir() if p.is_dir()):
                files = {c: track_dir / f"{c}.wav" for c in ("mixture", *MUSDB_SOURCES)}
                split = self._split_of(folder, track_dir.name, options["validation_split"])
                splits[split].append(Item(track_dir.name, files, _track_fields(track_dir.name)))
        splits = {k: v for k, v in splits.items() if v}
        if not splits:
            raise FileNotFoundError(
                f"musdb18hq: no track folders under {root}/train or {root}/test "
                "(expected <split>/<track>/mixture.wav)"
            )
        return Layout(
            sampling_rate=44100,
            audio_columns=["mixture", *MUSDB_SOURCES],
            splits=splits,
            extra_features=dict(MUSIC_FEATURES),
            num_channels=2,
            description="MUSDB18-HQ",
        )


class Musdb(MusdbBase):
    name = "musdb18"
    help = "MUSDB18 ({train,test}/<track>.stem.mp4, decoded with ffmpeg)"

    def check_requirements(self) -> None:
        if ffmpeg_executable() is None:
            raise FFmpegNotFoundError(
                f"musdb18: decoding .stem.mp4 files needs ffmpeg, which is not on PATH; {FFMPEG_INSTALL_HINT}"
            )

    def detect(self, root: Path) -> bool:
        return any((root / f).is_dir() and any((root / f).glob("*.stem.mp4")) for f in ("train", "test"))

    def discover(self, root: Path, **options: Any) -> Layout:
        root = self._root(root)
        splits: dict[str, list[Item]] = {"train": [], "validation": [], "test": []}
        for folder in ("train", "test"):
            if not (root / folder).is_dir():
                continue
            for path in sorted((root / folder).glob("*.stem.mp4")):
                track = path.name[: -len(".stem.mp4")]
                split = self._split_of(folder, track, options["validation_split"])
                splits[split].append(Item(track, {"stem": path}, _track_fields(track)))
        splits = {k: v for k, v in splits.items() if v}
        if not splits:
            raise FileNotFoundError(f"musdb18: no <track>.stem.mp4 under {root}/train or {root}/test")
        return Layout(
            sampling_rate=44100,
            audio_columns=["mixture", *MUSDB_SOURCES],
            splits=splits,
            extra_features=dict(MUSIC_FEATURES),
            num_channels=2,
            description="MUSDB18",
        )

    def header_problems(self, item: Item, layout: Layout) -> list[str]:
        path = item.files["stem"]
        if not path.is_file():
            return [f"stem: missing file {path}"]
        if path.stat().st_size == 0:
            return [f"stem: empty file {path}"]
        return []

    def read_item(self, item: Item, layout: Layout) -> dict[str, PCM]:
        path = item.files["stem"]
        decoded = {}
        for column in layout.audio_columns:
            decoded[column] = decode_with_ffmpeg(path, MUSDB_STEM_IDS[column], layout.sampling_rate, 2)
        lengths = {c: p.num_frames for c, p in decoded.items()}
        shortest = min(lengths.values())
        # AAC streams may differ by encoder padding (< one 1024-sample frame); more is a broken file
        if max(lengths.values()) - shortest > 2048:
            raise ValueError(f"streams of {path} have different lengths: {lengths}")
        return {c: PCM(p.samples[:shortest], p.sampling_rate, p.subtype) for c, p in decoded.items()}


def ffmpeg_executable() -> str | None:
    return shutil.which("ffmpeg")


def decode_with_ffmpeg(path: Path, stream: int, sampling_rate: int, channels: int) -> PCM:
    """Decode audio stream ``stream`` of ``path`` to 16-bit PCM with ffmpeg."""
    executable = ffmpeg_executable()
    if executable is None:
        raise FFmpegNotFoundError(
            f"decoding {path} needs ffmpeg, which is not on PATH; {FFMPEG_INSTALL_HINT}"
        )
    command = [
        executable, "-nostdin", "-v", "error", "-i", str(path), "-map", f"0:a:{stream}",
        "-f", "s16le", "-acodec", "pcm_s16le", "-ac", str(channels), "-ar", str(sampling_rate), "-",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ValueError(f"ffmpeg could not decode stream {stream} of {path}: {' '.join(message[-3:])}")
    samples = np.frombuffer(result.stdout, dtype="<i2")
    if samples.size == 0 or samples.size % channels:
        raise ValueError(f"ffmpeg returned no audio for stream {stream} of {path}")
    return PCM(samples.reshape(-1, channels).astype(np.int16), sampling_rate, "PCM_16")


class Mir1k(Corpus):
    name = "mir1k"
    help = "MIR-1K (Wavfile/*.wav, left channel = accompaniment, right channel = singing voice)"
    default_shard_size = 250
    option_defaults: ClassVar[dict[str, Any]] = {}

    def _wav_dir(self, root: Path) -> Path | None:
        for candidate in (root / "Wavfile", root / "MIR-1K" / "Wavfile", root):
            if candidate.is_dir() and candidate.name == "Wavfile":
                return candidate
        return None

    def detect(self, root: Path) -> bool:
        return self._wav_dir(root) is not None

    def discover(self, root: Path, **options: Any) -> Layout:
        if not root.is_dir():
            raise FileNotFoundError(f"mir1k: corpus root {root} is not a folder")
        wav_dir = self._wav_dir(root)
        if wav_dir is None:
            raise FileNotFoundError(f"mir1k: no Wavfile/ folder in {root} (expected MIR-1K/Wavfile/*.wav)")
        splits: dict[str, list[Item]] = {"train": [], "test": []}
        for path in sorted(wav_dir.glob("*.wav")):
            singer = path.stem.split("_")[0]
            song = "_".join(path.stem.split("_")[:2])
            split = "train" if path.stem.startswith(MIR1K_TRAIN_PREFIXES) else "test"
            splits[split].append(Item(path.stem, {"stereo": path}, {"singer": singer, "song": song}))
        splits = {k: v for k, v in splits.items() if v}
        if not splits:
            raise FileNotFoundError(f"mir1k: no .wav files in {wav_dir}")
        return Layout(
            sampling_rate=16000,
            audio_columns=["mixture", "accompaniment", "vocals"],
            splits=splits,
            extra_features={"singer": "string", "song": "string"},
            sum_of=("accompaniment", "vocals"),
            description="MIR-1K (stacked-hourglass split: abjones and amy for training)",
        )

    def header_problems(self, item: Item, layout: Layout) -> list[str]:
        import soundfile

        path = item.files["stereo"]
        if not path.is_file():
            return [f"stereo: missing file {path}"]
        try:
            info = soundfile.info(str(path))
        except (soundfile.LibsndfileError, RuntimeError) as error:
            return [f"stereo: unreadable file {path} ({error})"]
        problems = []
        if info.samplerate != layout.sampling_rate:
            problems.append(
                f"stereo: sampling rate {info.samplerate} Hz, expected {layout.sampling_rate} Hz ({path})"
            )
        if info.channels != 2:
            problems.append(f"stereo: {info.channels} channel(s), expected 2 (accompaniment, voice) ({path})")
        if info.frames == 0:
            problems.append(f"stereo: no samples ({path})")
        return problems

    def read_item(self, item: Item, layout: Layout) -> dict[str, PCM]:
        stereo = read_pcm(item.files["stereo"])
        accompaniment, vocals = stereo.channel(0), stereo.channel(1)
        if stereo.subtype == "PCM_16":
            mixture = pcm_from_int_sum(
                stereo.samples[:, :1].astype(np.int32) + stereo.samples[:, 1:2].astype(np.int32),
                stereo.sampling_rate,
            )
        else:
            mixture = PCM(
                (stereo.as_float64()[:, :1] + stereo.as_float64()[:, 1:2]).astype(np.float32),
                stereo.sampling_rate,
                "FLOAT",
            )
        return {"mixture": mixture, "accompaniment": accompaniment, "vocals": vocals}


for _corpus in (LibriMix(), Wham(), WhamR(), Wsj0TwoMix(), Wsj0ThreeMix(), MusdbHQ(), Musdb(), Mir1k()):
    register_corpus(_corpus)
