"""Text-to-speech engines (espeak-ng, flite, festival) and the speaker catalogue built from them."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import read_blocks
from .constants import (
    APT_INSTALL,
    MIN_SPEAKERS_PER_SPLIT,
    SPLIT_CODES,
    SPLIT_FOLDERS,
    SPLIT_FRACTIONS,
)
from .grammar import _check_text


class MissingTTSError(FileNotFoundError):
    """No (or not enough) text-to-speech voices are installed to build the corpus."""


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
    with sf.SoundFile(str(path)) as handle:
        data, rate = read_blocks(handle, "float64"), handle.samplerate
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


def _package_default_engines() -> list[Engine]:
    # looked up on the package at call time, so that replacing ``synthetic_speech.default_engines``
    # (as tests with fake engines do) still reaches every caller, as it did before the module split
    from .. import synthetic_speech

    return synthetic_speech.default_engines()


# ---------------------------------------------------------------------------------------------------
# catalogue


def _missing_message(problem: str, engines: Sequence[Engine]) -> str:
    missing = [e.executable for e in engines if not e.available()]
    where = f" (not found: {', '.join(missing)})" if missing else ""
    return f"{problem}{where}; install the voices with `{APT_INSTALL}`"


def build_catalogue(seed: int, engines: Sequence[Engine] | None = None) -> list[Speaker]:
    """The speakers of every split, from the voices installed; raises MissingTTSError if too few."""
    engines = list(_package_default_engines() if engines is None else engines)
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
