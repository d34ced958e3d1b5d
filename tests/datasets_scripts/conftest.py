from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def decode_int16(cell: dict) -> np.ndarray:
    """Stored bytes -> int16 ``(time, channels)`` (bit-exact comparisons)."""
    data, _ = sf.read(io.BytesIO(cell["bytes"]), dtype="int16", always_2d=True)
    return data


def read_int16(path: Path) -> np.ndarray:
    data, _ = sf.read(str(path), dtype="int16", always_2d=True)
    return data


@pytest.fixture
def odd_dir(tmp_path: Path) -> Path:
    """A folder whose name has spaces and non-ASCII characters."""
    folder = tmp_path / "my corpora — été ñ 日本"
    folder.mkdir()
    return folder
