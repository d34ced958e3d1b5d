"""Atomic writes of the corpus' text, CSV and WAV files."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...utils.files import atomic_output, write_text_atomic
from .constants import SAMPLING_RATE


def _atomic_write_text(path: Path, text: str) -> None:
    write_text_atomic(path, text, newline="")


def _csv_text(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def _write_wav(path: Path, samples: np.ndarray) -> None:
    import soundfile as sf

    with atomic_output(path, suffix=".wav") as temporary:
        sf.write(str(temporary), samples, SAMPLING_RATE, subtype="PCM_16", format="WAV")
