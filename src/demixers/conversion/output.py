"""Writing a converted model folder without losing anything of the user's.

`save_model_folder` builds the ``save_pretrained`` files (plus ``preprocessor_config.json``) in a
staging folder beside the output folder, then moves each file it wrote into place with
``os.replace``. Files already in the output folder that the converter does not write are never
touched, and the folder itself is never removed or renamed, so ``OUT`` may be ``.`` or the folder
that holds the checkpoint being converted. When a written name would replace one of the source
files, the conversion is refused before anything is written. If moving the files in fails half-way,
the files already replaced are put back, so the folder ends as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

STAGING_PREFIX = ".demixers-convert-"


def preprocessor_config(sampling_rate: int, audio_channels: int) -> dict[str, Any]:
    """The feature extractor settings saved next to the model (``preprocessor_config.json``)."""
    return {
        "feature_extractor_type": "SourceSeparationFeatureExtractor",
        "feature_size": audio_channels,
        "sampling_rate": sampling_rate,
        "padding_value": 0.0,
        "padding_side": "right",
        "return_attention_mask": False,
        "channel_policy": "auto",
    }


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse early (before converting) an output that is a file, or holds files without ``overwrite``."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"{output_dir} exists and is not a folder")
    if output_dir.is_dir() and not overwrite and any(output_dir.iterdir()):
        raise FileExistsError(
            f"{output_dir} already exists and is not empty (pass overwrite=True / --overwrite to replace "
            "the converted model's files in it; other files are left alone)"
        )
    return output_dir


def source_files(source: str | os.PathLike) -> list[Path]:
    """The files a conversion of ``source`` may read: the file itself, or every file under the folder."""
    source = Path(source)
    if source.is_dir():
        return [path for path in source.rglob("*") if path.is_file()]
    return [source] if source.exists() else []


def _same_file(first: Path, second: Path) -> bool:
    try:
        return first.exists() and second.exists() and os.path.samefile(first, second)
    except OSError:
        return False


def _check_collisions(output_dir: Path, names: Iterable[str], protected: Iterable[Path]) -> None:
    protected = [Path(path) for path in protected]
    clashes = []
    for name in names:
        target = output_dir / name
        if target.resolve() in {path.resolve() for path in protected} or any(
            _same_file(target, path) for path in protected
        ):
            clashes.append(name)
    if clashes:
        raise ValueError(
            f"converting into {output_dir} would replace the source file(s) {sorted(clashes)}; "
            "choose another output folder"
        )
    for name in names:
        target = output_dir / name
        if target.is_dir() and not target.is_symlink():
            raise IsADirectoryError(f"{target} is a folder; it cannot be replaced by the converted {name}")


def _move(source: Path, target: Path) -> None:
    """``os.replace``, or copy to a temporary name beside ``target`` and rename when across filesystems."""
    try:
        os.replace(source, target)
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(handle)
        try:
            shutil.copyfile(source, temporary)
            os.replace(temporary, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)


def _make_staging(output_dir: Path) -> Path:
    parent = output_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    try:
        return Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{output_dir.name}.", dir=parent))
    except PermissionError:
        if not output_dir.is_dir():
            raise
        # the parent is not writable (OUT=. in a read-only parent): stage inside OUT, removed afterwards
        return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output_dir))


def write_model_folder(
    write: Callable[[Path], None],
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    protected: Iterable[str | os.PathLike] = (),
) -> Path:
    """Run ``write(staging_folder)``, then move each file it wrote into ``output_dir``.

    ``protected`` lists the source files: the conversion is refused (ValueError) when a written
    name would replace one of them. Only files ``write`` produced are replaced in ``output_dir``
    (each with ``os.replace``); nothing else there is deleted. Returns ``output_dir``.
    """
    given = Path(output_dir)
    check_output_dir(given, overwrite)
    # work on the absolute path: `.` has no name and its parent is itself
    output_dir = Path(os.path.abspath(given))
    staging = _make_staging(output_dir)
    backups: Path | None = None  # inside OUT (same filesystem), made when a file is first replaced
    moved: list[tuple[Path, Path | None]] = []  # (target, backup of what it replaced)
    try:
        write(staging)
        written = sorted(path for path in staging.rglob("*") if path.is_file())
        names = [path.relative_to(staging).as_posix() for path in written]
        if not names:
            raise RuntimeError("the converter wrote no files")
        _check_collisions(output_dir, names, [Path(path) for path in protected])
        if output_dir.exists():
            check_output_dir(output_dir, overwrite)  # it may have appeared while converting
        output_dir.mkdir(parents=True, exist_ok=True)
        for path, name in zip(written, names, strict=True):
            target = output_dir / name
            target.parent.mkdir(parents=True, exist_ok=True)
            backup = None
            if target.exists() or target.is_symlink():
                if backups is None:
                    backups = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}previous-", dir=output_dir))
                backup = backups / name
                backup.parent.mkdir(parents=True, exist_ok=True)
                os.replace(target, backup)
            moved.append((target, backup))
            _move(path, target)
    except BaseException:
        # put back what was replaced, remove what was added: the folder ends as it was
        for target, backup in reversed(moved):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, target)
                elif target.exists():
                    target.unlink()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if backups is not None:
            shutil.rmtree(backups, ignore_errors=True)
    return given


def save_model_folder(
    model: Any,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    protected: Iterable[str | os.PathLike] = (),
    preprocessor: bool | Mapping[str, Any] = True,
) -> Path:
    """``model.save_pretrained`` + ``preprocessor_config.json`` into ``output_dir`` via `write_model_folder`.

    ``preprocessor``: True writes the standard feature extractor settings for the model's sampling
    rate and channels, a mapping writes those settings, False writes none.
    """

    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        if preprocessor is False:
            return
        settings = (
            dict(preprocessor)
            if isinstance(preprocessor, Mapping)
            else preprocessor_config(model.config.sampling_rate, model.config.audio_channels)
        )
        (staging / "preprocessor_config.json").write_text(json.dumps(settings, indent=2) + "\n")

    return write_model_folder(write, output_dir, overwrite=overwrite, protected=protected)


__all__ = [
    "check_output_dir",
    "preprocessor_config",
    "save_model_folder",
    "source_files",
    "write_model_folder",
]
