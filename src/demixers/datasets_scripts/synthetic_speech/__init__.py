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

The code is split by concern: `grammar` (sentences), `engines` (TTS engines and the speaker
catalogue), `dsp` (resampling, trimming, noise, loudness), `files` (atomic writes), `corpus` (mixtures,
the corpus folder, the bundled example) and `cli` (``demixers prepare synthetic-speech``). This package
re-exports their names, so ``demixers.datasets_scripts.synthetic_speech.<name>`` keeps working.
"""

from __future__ import annotations

# ruff: noqa: F401  (names re-exported from the package for the old single-module import path)
import shutil  # kept importable: tests patch ``synthetic_speech.shutil.which``

from .cli import add_arguments, run
from .constants import (
    APT_INSTALL,
    ENGINE_SHARES,
    GENERATOR_VERSION,
    MANIFEST,
    MIN_SPEAKERS_PER_SPLIT,
    NOISE_BELOW_SPEECH_DB,
    NUM_SPEAKERS,
    PEAK,
    RELATIVE_GAIN_DB,
    SAMPLING_RATE,
    SOURCE_LOUDNESS_RANGE,
    SPLIT_CODES,
    SPLIT_FOLDERS,
    SPLIT_FRACTIONS,
)
from .corpus import (
    Mixture,
    generate_corpus,
    make_example_mixture,
    mode_dir,
    render_mixture,
    write_speakers_csv,
)
from .dsp import resample, shaped_noise, trim_silence
from .engines import (
    ESPEAK_EXCLUDED_VARIANTS,
    FESTIVAL_IDENTITIES,
    FESTIVAL_VOICE_DIRS,
    FLITE_IDENTITIES,
    Engine,
    EspeakEngine,
    FestivalEngine,
    FliteEngine,
    MissingTTSError,
    Speaker,
    VoiceSpec,
    build_catalogue,
    default_engines,
)
from .grammar import _SAFE_TEXT, _check_text, make_sentence

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
