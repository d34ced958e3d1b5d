"""The embedded sentence grammar (a few hundred words) and the check on text sent to an engine."""

from __future__ import annotations

import re

import numpy as np


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
