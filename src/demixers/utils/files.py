"""Atomic file writes: a reader never sees a half-written file, a failure leaves the old one.

Every file demixers writes for a user (results, model cards, figures, corpus metadata) goes through a
temporary name in the same folder and ``os.replace``, which is atomic on POSIX and Windows.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; it replaces ``path`` when the block succeeds
    and is removed when the block raises (also on KeyboardInterrupt)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_text_atomic(path: str | os.PathLike[str], text: str, *, newline: str | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, flushed to disk before the rename."""
    with atomic_output(path) as temporary, open(temporary, "w", encoding="utf-8", newline=newline) as stream:
        stream.write(text)
        stream.flush()
        os.fsync(stream.fileno())
    return Path(path)
