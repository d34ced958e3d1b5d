"""A 2-speaker 8 kHz speech-separation corpus in the LibriMix layout, spoken by Debian TTS voices.

``demixers prepare synthetic-speech --output DIR [--seed N] ...`` writes, fully offline::

    DIR/speakers.csv                           id, split, engine, voice, variant, pitch, rate, identity
    DIR/synthetic_speech.json                  the generation settings (seed, sizes, catalogue)
    DIR/Libri2Mix/wav8k/min/{train-100,dev,test}/{mix_clean,s1,s2[,noise,mix_both]}/<id>.wav
    DIR/Libri2Mix/wav8k/min/metadata/mixture_<split>_mix_clean.csv   (and _mix_both.csv with --noise)
    DIR/Libri2Mix/wav8k/min/metadata/info_<split>.csv  per mixture: speakers, texts, loudness, gains

so ``load_separation_dataset(DIR)`` and ``demixers prepare librimix DIR`` read it like the real corpus,
speaker ids included (mixture ids are LibriSpeech-like ``spk-chapter-utt_spk-chapter-utt``, numeric).

Voices (install with the line in `APT_INSTALL`; the generator uses whatever part is installed):

- espeak-ng: every English accent of its own (``gmw/``) voices (en-us, en-gb, en-gb-scotland,
  en-gb-x-rp, en-029, ...) combined with the voice variants (``m1``, ``f3``, ``klatt2``, ...; whispered
  and robot-like ones left out), at a pitch (``-p``, 0-99) and a rate (``-s``, words per minute).
- flite: kal, kal16, awb, rms, slt (``awb_time`` only speaks times), at a mean f0 (Hz, 0 = the voice's
  own; rms ignores it) and a duration stretch.
- festival: kal_diphone, ked_diphone, cmu_us_slt_arctic_hts, at a duration stretch (``pitch`` is 0).

A *speaker* is (engine, voice, variant, pitch, rate). Speakers share an *identity* when they are the
same underlying voice: an espeak-ng variant (whatever the accent), or a recorded person (flite kal and
kal16 and festival kal_diphone are one; flite slt and festival cmu_us_slt_arctic_hts are one). Whole
identities are assigned to splits (70/15/15 %, seed-shuffled, separately for espeak-ng variants and for
the recorded voices so that every split gets some of each when there are at least three), so
validation and test speakers are held back in the strong sense: no voice of theirs was heard in training.
Each espeak-ng variant gives 2 speakers (two accents, random pitch 30-70 and rate 140-190 wpm); each
flite voice 3 and each festival voice 2 (the voice's own setting plus random pitch/rate offsets). With
everything installed that is 168 espeak-ng (84 variants, 8 accents), 15 flite and 6 festival speakers.

Each mixture is drawn from its own seed (``SeedSequence(seed, spawn_key=(split, index))``), so files do
not depend on the worker count or on the order of work: speaker 1 and 2 of different identities (where
the split has two), sampled with engine shares 50 % espeak-ng / 30 % flite / 20 % festival (renormalised
over the engines present, uniform within an engine); a duration ``T ~ U(min_seconds, max_seconds)``;
sentences from a small embedded grammar (a few hundred words) until the utterance is about ``1.2 T`` long.
Per utterance: synthesis in a private temporary folder (argv lists, text on stdin or as one argv item),
mono float64, resampled to 8 kHz with soxr (HQ), leading/trailing silence trimmed (frames 40 dB below the
loudest), a sentence appended (after a 0.15-0.4 s pause) while shorter than ``T``. Both utterances are cut
to the shorter one and to ``T`` ("min" mode), then loudness-normalised (ITU-R BS.1770, `loudness`):
source 1 to ``U(-33, -25)`` LUFS, source 2 to that ``+ U(-5, 5)`` dB. With ``noise``, a stationary
noise (Gaussian, random spectral slope 0-2 (white to brown), slow amplitude modulation) is added at the
speech loudness ``- U(3, 9)`` dB. Finally everything is scaled together so that no mixture or source
peak exceeds 0.9, quantised to 16 bits, and the mixtures are the integer sums of the written sources.

Defaults: 3000 training, 200 validation and 200 test mixtures of 3-6 s (about 3.8 h of training
mixtures, more with dynamic mixing): enough for a small model to learn in about an hour on a CPU.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .loudness import integrated_loudness

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


class MissingTTSError(FileNotFoundError):
    """No (or not enough) text-to-speech voices are installed to build the corpus."""


# ---------------------------------------------------------------------------------------------------
# text


def _words(text: str, separator: str | None = None) -> tuple[str, ...]:
    return tuple(text.split(separator))


_NAMES = _words(
    "Anna Peter Maria John Clara Thomas Helen Robert Julia Daniel Laura Simon Emma Oliver Sarah Martin "
    "Alice Henry Grace Victor Nora Felix Ruth Oscar Lucy Arthur Ella Hugo Mabel Walter"
)
_ADJECTIVES = _words(
    "old young small large quiet busy bright dark warm cold green yellow narrow wide careful gentle "
    "heavy light early late happy tired clever patient strange simple famous empty crowded wooden golden "
    "silver rough smooth sudden distant nearby ancient modern little proud honest"
)
_NOUNS = _words(
    "garden river window table letter teacher doctor village city market station bridge morning evening "
    "kitchen forest mountain island harbour library painting picture question answer story journey "
    "captain farmer sister brother neighbour friend stranger student child dog horse bird basket bottle "
    "candle chair door road field lamp boat train ticket coat hat box book paper music song voice "
    "country castle tower meadow valley storm winter summer autumn spring window shop office letter "
    "engine wheel machine clock bell key pocket ring stone shadow cloud"
)
_VERBS = _words(
    "opened closed found carried painted watched followed visited remembered noticed cleaned moved "
    "wrote read built bought sold repaired described answered carried lifted pulled pushed touched "
    "borrowed returned explained forgot imagined covered reached discovered showed helped called"
)
_BASE_VERBS = _words(
    "open close find carry paint watch follow visit remember notice clean move write read build buy sell "
    "repair describe answer lift pull push touch borrow return explain forget imagine cover reach"
)
_INTRANSITIVE = _words(
    "waited smiled arrived laughed listened slept travelled worked walked rested returned whispered "
    "sang danced hurried paused stayed wandered"
)
_ADVERBS = _words(
    "slowly quickly quietly carefully suddenly happily rarely often nearly almost gently loudly "
    "calmly patiently again together"
)
_PREPOSITIONS = _words("near behind beside under above across through along inside outside toward beyond")
_TIMES = _words(
    "in the morning|at noon|in the evening|after dinner|before sunrise|on Monday|on Friday|last winter|"
    "every summer|at midnight|during the storm|after the meeting|yesterday|this afternoon|long ago",
    "|",
)
_NUMBERS = _words("two three four five six seven eight nine ten twelve twenty forty")
_CONNECTIVES = ("and then", "but", "because", "while", "so", "although", "before", "after")


def _noun_phrase(rng: np.random.Generator) -> str:
    roll = rng.random()
    noun = str(rng.choice(_NOUNS))
    if roll < 0.15:
        return str(rng.choice(_NAMES))
    if roll < 0.25:
        return f"{rng.choice(_NUMBERS)} {noun}s"
    determiner = str(rng.choice(("the", "a", "my", "our", "that", "every", "her", "his")))
    if determiner == "a" and noun[0] in "aeiou":
        determiner = "an"
    if rng.random() < 0.5:
        adjective = str(rng.choice(_ADJECTIVES))
        if determiner in ("a", "an"):
            determiner = "an" if adjective[0] in "aeiou" else "a"
        return f"{determiner} {adjective} {noun}"
    return f"{determiner} {noun}"


def _clause(rng: np.random.Generator) -> str:
    subject = _noun_phrase(rng)
    roll = rng.random()
    if roll < 0.45:
        predicate = f"{rng.choice(_VERBS)} {_noun_phrase(rng)}"
    elif roll < 0.75:
        predicate = f"{rng.choice(_INTRANSITIVE)} {rng.choice(_PREPOSITIONS)} {_noun_phrase(rng)}"
    else:
        predicate = f"{rng.choice(_INTRANSITIVE)} {rng.choice(_ADVERBS)}"
    if rng.random() < 0.3:
        predicate += f" {rng.choice(_TIMES)}"
    return f"{subject} {predicate}"


def make_sentence(rng: np.random.Generator) -> str:
    """One sentence of the embedded grammar (letters, spaces, commas, a final ``.`` or ``?``)."""
    roll = rng.random()
    if roll < 0.12:
        text = f"did {_noun_phrase(rng)} {rng.choice(_BASE_VERBS)} {_noun_phrase(rng)}?"
    elif roll < 0.45:
        text = f"{_clause(rng)} {rng.choice(_CONNECTIVES)} {_clause(rng)}."
    elif roll < 0.55:
        text = f"{rng.choice(_TIMES)}, {_clause(rng)}."
    else:
        text = f"{_clause(rng)}."
    return text[0].upper() + text[1:]


_SAFE_TEXT = re.compile(r"[A-Za-z0-9 ,.?'-]+")


def _check_text(text: str) -> str:
    if not _SAFE_TEXT.fullmatch(text):
        raise ValueError(f"text must hold only letters, digits, spaces and , . ? ' -, got {text!r}")
    return text


# ---------------------------------------------------------------------------------------------------
# voices and engines


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker; ``pitch`` and ``rate`` are in the engine's own units (see module doc)."""

    id: str
    split: str
    engine: str
    voice: str
    variant: str
    pitch: float
    rate: float
    identity: str

    def describe(self) -> str:
        variant = f"+{self.variant}" if self.variant else ""
        return f"{self.engine} {self.voice}{variant} (pitch {self.pitch:g}, rate {self.rate:g})"


@dataclass(frozen=True)
class VoiceSpec:
    voice: str
    variant: str
    identity: str


def _run(argv: Sequence[str], stdin: str | None = None, timeout: float = 60.0) -> str:
    result = subprocess.run(
        list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()[:500]}")
    return result.stdout


def _read_mono(path: Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    if not path.is_file() or path.stat().st_size <= 44:
        raise RuntimeError(f"the TTS engine wrote no audio to {path.name}")
    data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    return data.mean(axis=1), int(rate)


class Engine:
    """A text-to-speech engine: what it offers and how to make one speaker say one text."""

    name = ""
    executable = ""

    def available(self) -> bool:
        return shutil.which(self.executable) is not None

    def voices(self) -> list[VoiceSpec]:
        raise NotImplementedError

    def speaker_settings(self, rng: np.random.Generator, voice: VoiceSpec) -> list[tuple[float, float]]:
        """``(pitch, rate)`` of the speakers made from ``voice``."""
        raise NotImplementedError

    @contextlib.contextmanager
    def session(self, workdir: Path) -> Iterator[Engine]:
        """A context in which `synthesize` may be called (engines keeping a process open override it)."""
        yield self

    def synthesize(self, speaker: Speaker, text: str, workdir: Path) -> tuple[np.ndarray, int]:
        """``(samples (time,) float64, sampling_rate)`` of ``speaker`` saying ``text``."""
        raise NotImplementedError


ESPEAK_EXCLUDED_VARIANTS = re.compile(r"whisper|robo|demonic|announcer|fast|tweaky|croak", re.IGNORECASE)


class EspeakEngine(Engine):
    name = "espeak-ng"
    executable = "espeak-ng"

    def voices(self) -> list[VoiceSpec]:
        accents = self._accents()
        return [VoiceSpec("|".join(accents), variant, f"espeak-ng:{variant}") for variant in self._variants()]

    def _listing(self, kind: str) -> list[list[str]]:
        lines = _run([self.executable, f"--voices={kind}"]).splitlines()[1:]
        return [line.split() for line in lines if len(line.split()) >= 5]

    def _accents(self) -> list[str]:
        # the engine's own English voices (mbrola ones need extra packages)
        return sorted(
            {row[1] for row in self._listing("en") if row[1].startswith("en") and row[4].startswith("gmw/")}
        )

    def _variants(self) -> list[str]:
        names = set()
        for row in self._listing("variant"):
            path = next((field for field in row if field.startswith("!v/")), None)
            if path:
                name = path[3:]
                if not ESPEAK_EXCLUDED_VARIANTS.search(name):
                    names.add(name)
        return sorted(names)

    def speaker_settings(self, rng: np.random.Generator, voice: VoiceSpec) -> list[tuple[float, float]]:
        return [(float(rng.integers(30, 71)), float(rng.integers(140, 191))) for _ in range(2)]

    def synthesize(self, speaker: Speaker, text: str, workdir: Path) -> tuple[np.ndarray, int]:
        out = workdir / "espeak.wav"
        argv = [self.executable, "-v", f"{speaker.voice}+{speaker.variant}", "-p", str(int(speaker.pitch))]
        argv += ["-s", str(int(speaker.rate)), "-w", str(out), "--stdin"]
        _run(argv, stdin=_check_text(text))
        return _read_mono(out)


FLITE_DEFAULT_F0 = {"kal": 95.0, "kal16": 95.0, "awb": 130.0, "slt": 170.0}
FLITE_IDENTITIES = {"kal": "kal", "kal16": "kal", "awb": "awb", "rms": "rms", "slt": "slt"}


class FliteEngine(Engine):
    name = "flite"
    executable = "flite"

    def voices(self) -> list[VoiceSpec]:
        listed = _run([self.executable, "-lv"]).replace("Voices available:", "").split()
        return [VoiceSpec(v, "", FLITE_IDENTITIES[v]) for v in sorted(set(listed) & set(FLITE_IDENTITIES))]

    def speaker_settings(self, rng: np.random.Generator, voice: VoiceSpec) -> list[tuple[float, float]]:
        f0 = FLITE_DEFAULT_F0.get(voice.voice)
        low = (round(f0 * rng.uniform(0.82, 0.92)) if f0 else 0.0, round(rng.uniform(1.0, 1.15), 2))
        high = (round(f0 * rng.uniform(1.08, 1.2)) if f0 else 0.0, round(rng.uniform(0.87, 1.0), 2))
        return [(0.0, 1.0), (float(low[0]), low[1]), (float(high[0]), high[1])]

    def synthesize(self, speaker: Speaker, text: str, workdir: Path) -> tuple[np.ndarray, int]:
        out = workdir / "flite.wav"
        argv = [self.executable, "-voice", speaker.voice, "--setf", f"duration_stretch={speaker.rate:g}"]
        if speaker.pitch:
            argv += ["--setf", f"int_f0_target_mean={speaker.pitch:g}"]
        _run([*argv, "-t", _check_text(text), "-o", str(out)])
        return _read_mono(out)


FESTIVAL_VOICE_DIRS = (Path("/usr/share/festival/voices"), Path("/usr/local/share/festival/voices"))
FESTIVAL_IDENTITIES = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt"}


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class FestivalEngine(Engine):
    """festival, kept open (``festival --pipe``) for a whole session: a voice loads once, not per call."""

    name = "festival"
    executable = "festival"
    MARKER = "@@demixers-done@@"

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None
        self._count = 0

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()

    def voices(self) -> list[VoiceSpec]:
        found = set()
        for folder in FESTIVAL_VOICE_DIRS:
            if folder.is_dir():
                found.update(p.name for p in folder.glob("*/*") if p.is_dir())
        return [VoiceSpec(v, "", FESTIVAL_IDENTITIES[v]) for v in sorted(found & set(FESTIVAL_IDENTITIES))]

    def speaker_settings(self, rng: np.random.Generator, voice: VoiceSpec) -> list[tuple[float, float]]:
        return [
            (0.0, 1.0),
            (0.0, round(float(rng.choice([rng.uniform(0.88, 0.95), rng.uniform(1.05, 1.15)])), 2)),
        ]

    @contextlib.contextmanager
    def session(self, workdir: Path) -> Iterator[Engine]:
        try:
            yield self
        finally:
            if self._process is not None:
                with contextlib.suppress(OSError):
                    self._process.stdin.close()  # type: ignore[union-attr]
                try:
                    self._process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
                self._process = None

    def synthesize(self, speaker: Speaker, text: str, workdir: Path) -> tuple[np.ndarray, int]:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [self.executable, "--pipe"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
        self._count += 1
        out = workdir / f"festival{self._count}.wav"
        command = (
            f"(voice_{speaker.voice})\n(Parameter.set 'Duration_Stretch {speaker.rate:g})\n"
            f"(utt.save.wave (utt.synth (Utterance Text {_scheme_string(_check_text(text))})) "
            f'{_scheme_string(str(out))} \'riff)\n(format stderr "{self.MARKER}\\n")\n'
        )
        assert self._process.stdin is not None and self._process.stderr is not None
        self._process.stdin.write(command)
        self._process.stdin.flush()
        messages = []
        while True:
            line = self._process.stderr.readline()
            if not line:
                raise RuntimeError(f"festival stopped: {' '.join(messages)[-500:]}")
            if self.MARKER in line:
                break
            messages.append(line.strip())
        try:
            return _read_mono(out)
        except RuntimeError as error:
            raise RuntimeError(f"{error}: {' '.join(messages)[-500:]}") from None
        finally:
            out.unlink(missing_ok=True)


def default_engines() -> list[Engine]:
    return [EspeakEngine(), FliteEngine(), FestivalEngine()]


# ---------------------------------------------------------------------------------------------------
# catalogue


def _missing_message(problem: str, engines: Sequence[Engine]) -> str:
    missing = [e.executable for e in engines if not e.available()]
    where = f" (not found: {', '.join(missing)})" if missing else ""
    return f"{problem}{where}; install the voices with `{APT_INSTALL}`"


def build_catalogue(seed: int, engines: Sequence[Engine] | None = None) -> list[Speaker]:
    """The speakers of every split, from the voices installed; raises MissingTTSError if too few."""
    engines = list(default_engines() if engines is None else engines)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    voices: list[tuple[Engine, VoiceSpec]] = []
    for engine in engines:
        if engine.available():
            voices.extend((engine, voice) for voice in engine.voices())
    if not voices:
        raise MissingTTSError(_missing_message("no text-to-speech voice is installed", engines))
    # whole identities go to one split: espeak-ng variants and recorded voices are assigned separately
    split_of: dict[str, str] = {}
    for pool in (
        sorted({v.identity for e, v in voices if e.name == "espeak-ng"}),
        sorted({v.identity for e, v in voices if e.name != "espeak-ng"}),
    ):
        order = [pool[i] for i in rng.permutation(len(pool))]
        held = 0 if len(order) < 3 else max(1, round(len(order) * SPLIT_FRACTIONS["validation"]))
        split_of.update({identity: "validation" for identity in order[:held]})
        split_of.update({identity: "test" for identity in order[held : 2 * held]})
        split_of.update({identity: "train" for identity in order[2 * held :]})
    rows = []
    for engine, voice in voices:
        if engine.name == "espeak-ng":
            accents = voice.voice.split("|")
            chosen = [accents[i] for i in rng.permutation(len(accents))]
            settings = engine.speaker_settings(rng, voice)
            for k, (pitch, rate) in enumerate(settings):
                rows.append(
                    (
                        split_of[voice.identity],
                        engine.name,
                        chosen[k % len(chosen)],
                        voice.variant,
                        pitch,
                        rate,
                        voice.identity,
                    )
                )
        else:
            for pitch, rate in engine.speaker_settings(rng, voice):
                rows.append(
                    (
                        split_of[voice.identity],
                        engine.name,
                        voice.voice,
                        voice.variant,
                        pitch,
                        rate,
                        voice.identity,
                    )
                )
    rows.sort(key=lambda row: (SPLIT_CODES[row[0]], *row[1:]))
    speakers = [Speaker(str(100 + 7 * k), *row) for k, row in enumerate(rows)]
    for split in SPLIT_FOLDERS:
        count = sum(s.split == split for s in speakers)
        if count < MIN_SPEAKERS_PER_SPLIT:
            raise MissingTTSError(
                _missing_message(
                    f"only {len(speakers)} synthetic speakers ({count} for {split}): too few for "
                    f"speaker-disjoint train/validation/test splits",
                    engines,
                )
            )
    return speakers


def write_speakers_csv(speakers: Sequence[Speaker], path: Path) -> None:
    fields = ["id", "split", "engine", "voice", "variant", "pitch", "rate", "identity"]
    _atomic_write_text(path, _csv_text(fields, [[getattr(s, f) for f in fields] for s in speakers]))


# ---------------------------------------------------------------------------------------------------
# signal processing


def resample(audio: np.ndarray, rate: int, target: int = SAMPLING_RATE) -> np.ndarray:
    if rate == target:
        return np.asarray(audio, dtype=np.float64)
    import soxr

    return np.asarray(
        soxr.resample(np.asarray(audio, dtype=np.float64), rate, target, quality="HQ"), dtype=np.float64
    )


def trim_silence(
    audio: np.ndarray, sampling_rate: int = SAMPLING_RATE, threshold_db: float = -40.0, pad: float = 0.05
) -> np.ndarray:
    """``audio`` without its leading and trailing 10 ms frames ``threshold_db`` below the loudest frame."""
    frame = max(1, sampling_rate // 100)
    count = len(audio) // frame
    if count == 0:
        return audio
    energy = (audio[: count * frame].reshape(count, frame) ** 2).mean(axis=1)
    if energy.max() <= 0:
        return audio[:0]
    active = np.flatnonzero(energy >= energy.max() * 10 ** (threshold_db / 10))
    margin = round(pad * sampling_rate)
    start = max(0, active[0] * frame - margin)
    stop = min(len(audio), (active[-1] + 1) * frame + margin)
    return audio[start:stop]


def shaped_noise(rng: np.random.Generator, length: int, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
    """Stationary Gaussian noise with a random spectral slope (``f^-slope`` power, slope 0-2) and a slow
    amplitude modulation; float64 ``(time,)``, unnormalised."""
    slope = rng.uniform(0.0, 2.0)
    spectrum = np.fft.rfft(rng.standard_normal(length))
    frequencies = np.fft.rfftfreq(length, 1.0 / sampling_rate)
    spectrum *= np.maximum(frequencies, 20.0) ** (-slope / 2.0)
    noise = np.fft.irfft(spectrum, n=length)
    t = np.arange(length) / sampling_rate
    modulation = 1.0 + rng.uniform(0.0, 0.4) * np.sin(
        2 * np.pi * rng.uniform(0.1, 1.0) * t + rng.uniform(0, 2 * np.pi)
    )
    return noise * modulation


def _gain_to(audio: np.ndarray, target_lufs: float) -> float:
    loudness = integrated_loudness(audio, SAMPLING_RATE)
    if not math.isfinite(loudness):
        raise RuntimeError("a synthesized utterance is silent")
    return 10.0 ** ((target_lufs - loudness) / 20.0)


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
# files


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(text, encoding="utf-8", newline="")
    os.replace(temporary, path)


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_wav(path: Path, samples: np.ndarray) -> None:
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}.wav")
    sf.write(str(temporary), samples, SAMPLING_RATE, subtype="PCM_16", format="WAV")
    os.replace(temporary, path)


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
    engines = list(default_engines() if engines is None else engines)
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
    engines = list(default_engines() if engines is None else engines)
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


# ---------------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: Any) -> None:
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the corpus")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--num-train", type=int, default=3000, metavar="N", help="training mixtures (%(default)s)"
    )
    parser.add_argument(
        "--num-validation", type=int, default=200, metavar="N", help="validation mixtures (%(default)s)"
    )
    parser.add_argument("--num-test", type=int, default=200, metavar="N", help="test mixtures (%(default)s)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="shortest mixture (%(default)s s)")
    parser.add_argument("--max-seconds", type=float, default=6.0, help="longest mixture (%(default)s s)")
    parser.add_argument(
        "--noise", action="store_true", help="also write noise/ and mix_both/ (LibriMix style)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a corpus already in --output")
    parser.add_argument("--num-workers", type=int, default=1, metavar="N", help="processes (%(default)s)")


def run(args: Any) -> int:
    import sys

    root = generate_corpus(
        args.output,
        seed=args.seed,
        sizes={"train": args.num_train, "validation": args.num_validation, "test": args.num_test},
        seconds=(args.min_seconds, args.max_seconds),
        noise=args.noise,
        overwrite=args.overwrite,
        num_workers=args.num_workers,
        progress=True,
    )
    speakers = list(csv.DictReader((root / "speakers.csv").open(encoding="utf-8")))
    counts = ", ".join(f"{split}: {sum(s['split'] == split for s in speakers)}" for split in SPLIT_FOLDERS)
    print(f"wrote a synthetic Libri2Mix corpus in {root} (speakers {counts})", file=sys.stdout)
    return 0


__all__ = [
    "APT_INSTALL",
    "Engine",
    "MissingTTSError",
    "Speaker",
    "build_catalogue",
    "generate_corpus",
    "make_example_mixture",
    "make_sentence",
    "render_mixture",
]
