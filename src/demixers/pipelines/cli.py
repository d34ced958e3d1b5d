"""``demixers separate``: separate audio files into one file per source.

For every ``INPUT`` the stems are written to ``OUTDIR/<input stem>/<label>.<ext>`` with the
labels of the model's ``config.source_names``, at the input's sampling rate and length.

* Formats: ``wav`` (``--bit-depth`` 16 or 24: integer PCM; 32: 32-bit float), ``flac`` (16 or
  24) and ``mp3`` (320 kbps through ``lameenc``, the ``demixers[mp3]`` extra).
* Clipping: integer formats (16/24-bit wav and flac, mp3) cannot hold samples beyond [-1, 1].
  When any stem of a file exceeds that range, **all stems of that file are rescaled together by
  the same factor** (the largest peak maps to full scale) and a warning is printed, so the stems
  keep their balance and still add up to a (scaled) mixture. 32-bit float wav keeps such values
  unchanged.
* Memory: files are streamed (`AudioSourceSeparationPipeline.stream_file`): the input is read
  block by block (twice: once to check it and measure it, once to separate it) and every stem is
  written as it is produced, so peak memory does not grow with the file's length.
* Safety: each stem is written to a temporary name in its output folder and renamed into place
  once every stem of that input is complete, so an interrupted run never leaves a truncated stem;
  temporary files are removed on any failure. For integer formats the stems first go to float32
  temporaries while their common peak is tracked, then are transcoded block by block with the
  rescaling factor. Existing outputs are never replaced without ``--overwrite``; this is checked
  before separating.
* All or nothing: with ``--overwrite`` the stems of one input are replaced as a set. The old
  stems are first hard-linked to backups, then the new ones are renamed into place; when any
  rename fails the old stems are put back (and stems that did not exist before are removed), so a
  failure never leaves stem 1 new and stem 2 old.
* Temporary files are named ``.<label>.<ext>.demixers-tmp-<pid>-<hex>.<tmp|f32.tmp|old>``. On
  SIGINT and SIGTERM they are removed (exit status 130 and 143). A run killed outright (SIGKILL,
  power loss) leaves them behind; the next run into the same output folder removes those whose
  process is gone (never another live run's, never a file that does not match the pattern), and
  puts a stale ``.old`` backup back in place of its stem: a replacement that was cut short is
  rolled back to the old stems.
* Paths: stems are written only inside ``OUTDIR``. A label of the model's ``source_names`` (a
  downloaded model is untrusted input) that is not a plain file name (empty, ``.``, ``..``, path
  separators, control characters, duplicates) is refused before anything is separated, and every
  output path is resolved and checked to lie inside ``OUTDIR``. An input whose stem is not a
  usable folder name gets a safe one: separators and control characters become ``_``, and a stem
  of only dots (``...wav`` has the stem ``..``) or an empty one becomes as many underscores
  (``__``, at least one); two inputs that end up with the same folder are an error for the second.
* Errors: a full disk is reported as such with the path being written (libsndfile only says
  "System error."), a model folder that cannot be loaded (corrupt ``model.safetensors``,
  ``config.json`` that is not JSON) is one line and exit status 2, and a ``--batch-size`` (or
  ``--segment``) whose single forward pass would not fit in this machine's memory is refused with
  its value before anything is allocated.
* Several inputs: each failing input is reported on one line and nothing is written for it; the
  others are still separated. The exit code is 0 when all inputs succeeded, 1 when any failed and
  2 for a usage error (bad option, no model).
* A tqdm progress bar over chunks is shown on stderr for inputs longer than one chunk, when
  stderr is a terminal and ``--quiet`` is not given.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import re
import shutil
import signal
import sys
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT_DIR = Path("separated")
DEFAULT_MODEL_NOTICE = (
    "demixers separate: using the bundled default model (a small model trained on synthetic voices, for "
    "demos and tests); pass -m MODEL for real recordings"
)

FORMATS = ("wav", "flac", "mp3")
BIT_DEPTHS = (16, 24, 32)
DEFAULT_BIT_DEPTH = 16
# soundfile subtype per (format, bit depth)
SUBTYPES = {
    ("wav", 16): "PCM_16",
    ("wav", 24): "PCM_24",
    ("wav", 32): "FLOAT",
    ("flac", 16): "PCM_16",
    ("flac", 24): "PCM_24",
}
MP3_BIT_RATE = 320
MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
DEVICES = ("cpu", "cuda", "mps")

# Per-input failures that are reported on one line while the other inputs go on.
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, RuntimeError, MemoryError)

# Temporary files: `.<target name>.demixers-tmp-<pid>-<token><suffix>`, recognisable by a later run.
TEMPORARY_MARKER = "demixers-tmp"
PART_SUFFIX, FLOAT_PART_SUFFIX, BACKUP_SUFFIX = ".tmp", ".f32.tmp", ".old"
_TEMPORARY_NAME = re.compile(
    rf"^\.(?P<target>.+)\.{TEMPORARY_MARKER}-(?P<pid>[0-9]+)-(?P<token>[0-9a-f]{{8}})"
    r"(?P<suffix>\.f32\.tmp|\.tmp|\.old)$"
)
# Free space below which a failed write is reported as a full disk.
DISK_FULL_BYTES = 1 << 20
EXIT_SIGTERM = 128 + signal.SIGTERM


class SeparationTerminatedError(BaseException):
    """SIGTERM, turned into an exception so that every temporary file is removed on the way out."""


class DiskFullError(OSError):
    """No space left on the device while writing a stem; the message names the path."""

    def __str__(self) -> str:
        return str(self.strerror)


_EPILOG = """\
output: OUTDIR/<input stem>/<label>.<ext>, one file per source of the model.

clipping: 16/24-bit wav, flac and mp3 cannot hold samples beyond [-1, 1]; when a file's stems
exceed it, all stems of that file are rescaled together by the same factor (with a warning).
32-bit wav is float and keeps such values.

exit status: 0 all inputs separated, 1 some input failed (each reported on one line, nothing
written for it), 2 usage error."""


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="audio file(s) in any format soundfile reads"
    )
    parser.add_argument(
        "-m",
        "--model",
        default=None,
        help="model folder or Hub model id (default: the small bundled speech model, synthetic voices only)",
    )
    parser.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        metavar="OUTDIR",
        help=f"where stems are written (default: {DEFAULT_OUTPUT_DIR})",
    )
    parser.add_argument("--format", choices=FORMATS, default="wav", help="output format (default: wav)")
    parser.add_argument(
        "--bit-depth",
        type=int,
        choices=BIT_DEPTHS,
        default=None,
        help=f"wav: 16/24-bit integer or 32-bit float; flac: 16/24 (default: {DEFAULT_BIT_DEPTH}); "
        "not for mp3",
    )
    parser.add_argument(
        "--device", choices=DEVICES, default="cpu", help="where the model runs (default: cpu)"
    )
    parser.add_argument(
        "--segment", type=float, default=None, help="chunk length in seconds (default: from the model)"
    )
    parser.add_argument(
        "--overlap",
        type=float,
        default=None,
        help="overlap between chunks, fraction in [0, 1) (default: from the model)",
    )
    parser.add_argument(
        "--shifts",
        type=int,
        default=0,
        help="random time-shift augmentation passes, music models (default: 0)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="chunks per forward pass (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --shifts offsets (default: 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-file messages")


def check_args(args: argparse.Namespace) -> None:
    """Option errors of ``demixers separate``, raised (ValueError: one line, exit 2) right after
    parsing: before the model is loaded and without importing torch or transformers."""
    _check_format(args.format, args.bit_depth)
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise NotADirectoryError(f"{args.output_dir}: the output path exists and is not a directory")
    check_chunk_options(args.segment, args.overlap, args.batch_size, args.shifts)


def check_chunk_options(
    segment: float | None, overlap: float | None, batch_size: int | None, shifts: int | None
) -> None:
    """The chunking options' ranges that need no model (the same rules and words as
    `resolve_chunk_settings`, which checks them again with the model's defaults)."""
    if segment is not None and not (math.isfinite(segment) and segment > 0):
        raise ValueError(f"segment must be > 0 seconds, got {segment!r}")
    if overlap is not None and not (math.isfinite(overlap) and 0.0 <= overlap < 1.0):
        raise ValueError(f"overlap must be a fraction in [0, 1), got {overlap!r}")
    for name, value, minimum in (("batch_size", batch_size, 1), ("shifts", shifts, 0)):
        if value is not None and value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def run(args: argparse.Namespace) -> int:
    # SIGTERM is handled like SIGINT for the whole command (loading included): the writers' cleanup
    # runs, then exit status 143
    with _sigterm_raises():
        try:
            return _run(args)
        except SeparationTerminatedError:
            print("demixers separate: terminated (temporary files removed)", file=sys.stderr)
            return EXIT_SIGTERM


def _run(args: argparse.Namespace) -> int:
    if args.model is None:
        from ..bundled import default_model_dir

        model_id = str(default_model_dir())
        if not args.quiet:
            print(DEFAULT_MODEL_NOTICE, file=sys.stderr)
    else:
        model_id = args.model
    bit_depth = _check_format(args.format, args.bit_depth)
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise NotADirectoryError(f"{args.output_dir}: the output path exists and is not a directory")
    device = _check_device(args.device)

    from .chunking import resolve_chunk_settings

    separator = _load_pipeline(str(model_id), device)
    config = separator.model.config
    labels = check_labels(config.source_names, model_id)
    call_kwargs: dict[str, Any] = {
        "segment": args.segment,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "shifts": args.shifts,
        "seed": args.seed,
    }
    call_kwargs = {key: value for key, value in call_kwargs.items() if value is not None}
    settings = resolve_chunk_settings(config, **call_kwargs)  # option errors now, once, not per input
    check_forward_memory(config, settings, args.batch_size, args.segment)
    call_kwargs["progress"] = not args.quiet and sys.stderr.isatty()

    return _separate_all(separator, labels, args, bit_depth, call_kwargs)


def _separate_all(
    separator: Any,
    labels: list[str],
    args: argparse.Namespace,
    bit_depth: int | None,
    call_kwargs: dict[str, Any],
) -> int:
    failures = 0
    claimed: dict[Path, str] = {}
    for source in args.inputs:
        try:
            folder = args.output_dir / safe_folder_name(Path(source).stem)
            if folder in claimed:
                raise ValueError(f"{source}: its output folder {folder} is already used by {claimed[folder]}")
            claimed[folder] = source
            targets = [folder / f"{label}.{args.format}" for label in labels]
            check_inside(args.output_dir, targets, labels)
            remove_stale_temporaries(folder)
            _check_input_and_targets(source, targets, args.overwrite)
            stream = separator.stream_file(source, **call_kwargs)  # reads and checks the whole file
            write_stream(stream, targets, args.format, bit_depth, name=source, root=args.output_dir)
        except INPUT_ERRORS as error:
            failures += 1
            print(f"demixers separate: error: {_one_line(error, source)}", file=sys.stderr)
            continue
        if not args.quiet:
            print(f"{source} -> {folder}{os.sep} ({len(targets)} stems)")
    return 1 if failures else 0


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises `SeparationTerminatedError` (like SIGINT raises
    KeyboardInterrupt), so the writers' cleanup runs; the previous handler comes back after."""
    import threading

    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SeparationTerminatedError

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- checks ------------------------------------------------------------------------------------


def _check_format(fmt: str, bit_depth: int | None) -> int | None:
    if fmt == "mp3":
        if bit_depth is not None:
            raise ValueError("--bit-depth does not apply to mp3 (always 16-bit PCM into a 320 kbps encoder)")
        try:
            import lameenc  # noqa: F401
        except ImportError:
            raise ValueError(
                "mp3 output needs the lameenc package: pip install 'demixers[mp3]' (or use --format wav/flac)"
            ) from None
        return None
    bit_depth = DEFAULT_BIT_DEPTH if bit_depth is None else bit_depth
    if (fmt, bit_depth) not in SUBTYPES:
        raise ValueError(
            f"--format {fmt} does not support --bit-depth {bit_depth} (FLAC stores 16 or 24 bits)"
        )
    return bit_depth


def _check_device(device: str) -> str:
    return check_device(device)


def check_device(device: str) -> str:
    """``device`` (``cpu``, ``cuda``, ``cuda:1``, ``mps``) if it exists here, else a ValueError with it."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"--device {device!r} is not a device name (cpu, cuda, cuda:1, mps)") from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device is available here")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ValueError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if parsed.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError(f"--device {device}: no MPS device is available here")
    return device


def model_load_errors() -> tuple[type[BaseException], ...]:
    """What loading an untrusted model folder raises for bad files (not for bugs): a truncated or
    corrupt ``model.safetensors`` (SafetensorError), a ``config.json`` that is not JSON, missing
    files, fields of the wrong type, and a config too large for memory."""
    errors: list[type[BaseException]] = [OSError, ValueError, KeyError, TypeError, MemoryError]
    with contextlib.suppress(ImportError):
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    import torch

    errors.append(torch.OutOfMemoryError)
    return tuple(errors)


def _load_pipeline(model_id: str, device: str) -> Any:
    from transformers import pipeline
    from transformers.utils import logging as transformers_logging

    from ..catalogue.resolve import resolve_model_id

    transformers_logging.disable_progress_bar()  # keep stderr for our progress bar and errors
    model_id = resolve_model_id(model_id)  # a catalogue alias -> its verified, converted folder
    try:
        return pipeline("audio-source-separation", model=model_id, device=device)
    except model_load_errors() as error:
        raise ValueError(f"could not load model {model_id!r}: {first_line(error)}") from None


def first_line(error: BaseException) -> str:
    """The first line of an error's message (transformers' run over several lines), else its type."""
    text = str(error).strip()
    if isinstance(error, KeyError) and error.args:
        text = f"missing key {error.args[0]!r}"
    return text.splitlines()[0] if text else type(error).__name__


def check_labels(source_names: Any, model_id: str) -> list[str]:
    """The model's ``source_names`` as file-name labels, or a ValueError naming the bad one.

    A downloaded model is untrusted: its labels become file names, so each must be a non-empty,
    printable name without path separators that is not ``.`` or ``..``, and no two may be equal.
    """
    if isinstance(source_names, str) or not isinstance(source_names, Sequence) or not source_names:
        raise ValueError(
            f"model {model_id!r}: config.source_names must be a non-empty list, got {source_names!r}"
        )
    labels: list[str] = []
    for label in source_names:
        problem = None
        if not isinstance(label, str) or not label:
            problem = "is not a non-empty string"
        elif label in (".", ".."):
            problem = "is a relative folder name"
        elif any(separator in label for separator in ("/", "\\", os.sep, os.altsep or "/")):
            problem = "contains a path separator"
        elif not label.isprintable():
            problem = "contains control characters"
        elif label in labels:
            problem = "appears twice"
        if problem:
            raise ValueError(
                f"model {model_id!r}: source name {label!r} {problem}; it cannot name a stem file inside "
                "the output folder"
            )
        labels.append(label)
    return labels


def safe_folder_name(stem: str) -> str:
    """An input's stem as one folder name inside OUTDIR (see the module notes): separators and
    control characters become ``_``; a stem of dots only, or none, becomes as many ``_``."""
    name = "".join(
        "_" if character in ("/", "\\", os.sep, os.altsep) or not character.isprintable() else character
        for character in stem
    )
    if set(name) <= {"."}:
        name = "_" * max(len(name), 1)
    return name


def check_inside(root: Path, targets: Sequence[Path], labels: Sequence[str] | None = None) -> None:
    """Raise a ValueError unless every target, resolved (its folder's symlinks included, the file
    itself not: it is replaced, never followed), is a file directly inside a folder under ``root``."""
    resolved_root = Path(os.path.realpath(root))
    for index, target in enumerate(targets):
        resolved = Path(os.path.realpath(target.parent)) / target.name
        inside = resolved_root in resolved.parents and target.name not in ("", ".", "..")
        if not inside or Path(target.name).name != target.name:
            what = f"source name {labels[index]!r}" if labels is not None else "output"
            raise ValueError(
                f"{what} would write {resolved}, outside the output folder {resolved_root}; refused"
            )


def check_forward_memory(config: Any, settings: Any, batch_size: int | None, segment: float | None) -> None:
    """Refuse chunk settings whose one forward pass could not fit in this machine's memory.

    The estimate is a lower bound (the float32 input batch and its separated output, nothing of the
    model's activations), so anything it refuses would fail anyway, after allocating gigabytes.
    """
    samples = max(1, round(settings.segment * int(config.sampling_rate)))
    floats = settings.batch_size * samples * int(config.audio_channels) * (1 + len(config.source_names))
    needed = 4 * floats
    available = _physical_memory()
    if available is not None and needed > available:
        options = []
        if batch_size is not None:
            options.append(f"--batch-size {batch_size}")
        if segment is not None:
            options.append(f"--segment {segment}")
        chosen = " with ".join(options) or (
            f"the model's chunk settings (batch size {settings.batch_size}, segment {settings.segment} s)"
        )
        raise ValueError(
            f"{chosen}: one forward pass needs at least {needed / 2**30:.1f} GiB, more than this machine's "
            f"{available / 2**30:.1f} GiB of memory; use a smaller --batch-size or --segment"
        )


def _physical_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # not POSIX: no estimate, no refusal
        return None


def _check_input_and_targets(source: str, targets: list[Path], overwrite: bool) -> None:
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{source}: no such file")
    if overwrite:
        return
    existing = [str(target) for target in targets if target.exists()]
    if existing:
        raise FileExistsError(
            f"{source}: output {', '.join(existing)} already exist{'s' if len(existing) == 1 else ''} "
            "(pass --overwrite to replace)"
        )


def _one_line(error: BaseException, source: str) -> str:
    message = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, MemoryError):
        message = f"out of memory ({message})"
    return message if source in message else f"{source}: {message}"


# -- writing -----------------------------------------------------------------------------------


# float32 temporaries of integer-format stems (RF64: no 4 GiB limit)
FLOAT_TEMPORARY = {"format": "RF64", "subtype": "FLOAT"}
WRITE_BLOCK = 1 << 16


def write_stream(
    stream: Iterable[Any],
    targets: list[Path],
    fmt: str,
    bit_depth: int | None,
    name: str = "audio",
    root: Path | None = None,
) -> None:
    """Write every stem of ``stream`` to its target, all-or-nothing, block by block.

    ``stream`` has ``sampling_rate``, ``channels`` and ``length`` and yields float32
    ``(len(targets), channels, n)`` blocks (a `SeparationStream`). 32-bit float wav is written
    directly to temporary names; the integer formats (16/24-bit wav and flac, mp3) go to float32
    temporaries first while the peak of all stems is tracked, then are transcoded block by block,
    all scaled by one factor when that peak exceeds full scale (with a warning on stderr). The
    temporaries replace the targets as a set (`_commit`) only when every stem is complete and are
    removed on any failure. With ``root`` every target must resolve to a path inside it. A write
    that fails for lack of space raises `DiskFullError` naming the path.
    """
    import numpy as np
    import soundfile

    if root is not None:
        check_inside(root, targets)
    folder = targets[0].parent
    if any(target.parent != folder for target in targets):
        raise ValueError(f"{name}: the stems of one input go to one folder, got {[str(t) for t in targets]}")
    sampling_rate, channels = int(stream.sampling_rate), int(stream.channels)
    if fmt == "mp3":
        if channels > 2:
            raise ValueError(
                f"{name}: mp3 holds 1 or 2 channels, the stems have {channels}; use --format wav or flac"
            )
        if sampling_rate not in MP3_SAMPLE_RATES:
            raise ValueError(
                f"{name}: mp3 does not support {sampling_rate} Hz "
                f"(supported: {', '.join(map(str, MP3_SAMPLE_RATES))})"
            )
    subtype = None if fmt == "mp3" else SUBTYPES[(fmt, bit_depth)]
    direct = subtype == "FLOAT"

    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    finals = [temporary_path(target, token, PART_SUFFIX) for target in targets]
    floats = [temporary_path(target, token, FLOAT_PART_SUFFIX) for target in targets]
    writing = folder
    try:
        first = finals if direct else floats
        options = {"format": fmt.upper(), "subtype": subtype} if direct else FLOAT_TEMPORARY
        peak = 0.0
        written = 0
        with contextlib.ExitStack() as stack:
            handles = []
            for path, target in zip(first, targets, strict=True):
                writing = target  # errors name the stem the user asked for, not its temporary
                handles.append(
                    stack.enter_context(
                        soundfile.SoundFile(
                            str(path), "w", samplerate=sampling_rate, channels=channels, **options
                        )
                    )
                )
            for block in stream:
                if block.shape[0] != len(targets):
                    raise RuntimeError(f"{name}: {block.shape[0]} stems for {len(targets)} targets")
                if block.shape[-1] == 0:
                    continue
                if not direct:  # max and -min instead of abs(): no temporary copy
                    peak = max(peak, float(block.max()), -float(block.min()))
                for target, handle, stem in zip(targets, handles, block, strict=True):
                    writing = target
                    handle.write(stem.T)
                written += block.shape[-1]
            writing = folder  # closing flushes every handle
        if written != stream.length:
            raise RuntimeError(f"{name}: {written} samples written, {stream.length} expected")
        if not direct:
            factor = 1.0
            if peak > 1.0:
                factor = 1.0 / peak
                print(
                    f"demixers separate: warning: {name}: stems peak at {peak:.3f}, beyond [-1, 1]; all "
                    f"stems of this input were scaled together by {factor:.4f} to avoid clipping",
                    file=sys.stderr,
                )
            for source, final, target in zip(floats, finals, targets, strict=True):
                writing = target
                _transcode(source, final, fmt, subtype, sampling_rate, channels, np.float32(factor))
                source.unlink()
        writing = folder
        _commit(list(zip(finals, targets, strict=True)), token)
    except BaseException as error:
        full = isinstance(error, Exception) and _is_disk_full(error, folder)
        for path in (*floats, *finals):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        if full:
            raise DiskFullError(
                errno.ENOSPC,
                f"{writing}: the disk is full (no space left on device) while writing the stems of {name}; "
                "nothing was written for this input",
            ) from error
        if isinstance(error, (soundfile.SoundFileRuntimeError, AssertionError)):
            # libsndfile's own words ("System error.") do not say which file
            raise OSError(f"{writing}: could not write ({error or type(error).__name__})") from error
        raise


def temporary_path(target: Path, token: str, suffix: str) -> Path:
    """``.<target name>.demixers-tmp-<pid>-<token><suffix>`` beside ``target``."""
    return target.with_name(f".{target.name}.{TEMPORARY_MARKER}-{os.getpid()}-{token}{suffix}")


def _commit(pairs: list[tuple[Path, Path]], token: str) -> None:
    """Rename every ``(temporary, target)`` pair into place, all or nothing.

    Existing targets are hard-linked to backups first (a rename where hard links are not
    supported), so that if any rename fails every target gets its old file back and targets that
    did not exist before are removed. The backups are deleted once all renames succeeded.
    """
    backups: list[tuple[Path, Path, bool]] = []  # (backup, target, hard link: target still there)
    placed: list[Path] = []
    try:
        for _, target in pairs:
            if os.path.lexists(target):
                backup = temporary_path(target, token, BACKUP_SUFFIX)
                try:
                    os.link(target, backup, follow_symlinks=False)
                    linked = True
                except OSError:  # no hard links on this file system: move it aside instead
                    os.replace(target, backup)
                    linked = False
                backups.append((backup, target, linked))
        for temporary, target in pairs:
            os.replace(temporary, target)
            placed.append(target)
    except BaseException:
        backed_up = {target for _, target, _ in backups}
        for target in placed:
            if target not in backed_up:
                with contextlib.suppress(OSError):
                    target.unlink()
        for backup, target, linked in backups:
            # a backup that cannot be put back stays (a stale one is restored by the next run)
            with contextlib.suppress(OSError):
                if linked and target not in placed:
                    backup.unlink()  # the target is still the old file (rename onto a hard link is a no-op)
                else:
                    os.replace(backup, target)
        raise
    for backup, _, _ in backups:
        with contextlib.suppress(OSError):
            backup.unlink()


def _is_disk_full(error: Exception, folder: Path) -> bool:
    """Whether a failed write was for lack of space: ENOSPC itself, or (libsndfile hides errno
    behind "System error.") a failed libsndfile write or short write with the device now full."""
    import soundfile

    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(error, (soundfile.SoundFileRuntimeError, AssertionError)):
        return False
    ffi = getattr(soundfile, "_ffi", None)
    if getattr(ffi, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < DISK_FULL_BYTES
    except OSError:
        return False


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Clean up what killed runs left in ``folder``; return the paths removed or restored.

    Only files named like ours (`temporary_path`) whose process id is not alive are touched:
    partial stems are deleted, and a backup is renamed back over its stem (a replacement cut
    short is rolled back to the old stems). Other files, and live runs' temporaries, stay.
    """
    if not folder.is_dir():
        return []
    cleaned: list[Path] = []
    for entry in folder.iterdir():
        match = _TEMPORARY_NAME.match(entry.name)
        if match is None or entry.is_symlink() or not entry.is_file():
            continue
        if _process_alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            target = entry.with_name(match["target"])
            if match["suffix"] == BACKUP_SUFFIX and not (target.exists() and os.path.samefile(entry, target)):
                os.replace(entry, target)
            else:  # a partial stem, or a backup still hard-linked to its unreplaced stem
                entry.unlink()
            cleaned.append(entry)
    return cleaned


def _process_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a pid we wrote: leave the file alone
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, someone else's
        return True
    return True


def _transcode(
    source: Path, target: Path, fmt: str, subtype: str | None, sampling_rate: int, channels: int, factor: Any
) -> None:
    """Float32 temporary -> final format, block by block, times ``factor`` (then clipped to
    [-1, 1], which only removes float rounding when ``factor`` comes from the peak)."""
    import numpy as np
    import soundfile

    with soundfile.SoundFile(str(source)) as reader:
        if fmt == "mp3":
            encoder = _mp3_encoder(sampling_rate, channels)
            with open(target, "wb") as out:
                for block in reader.blocks(blocksize=WRITE_BLOCK, dtype="float32", always_2d=True):
                    pcm = np.round(np.clip(block * factor, -1.0, 1.0) * 32767.0).astype("<i2")
                    out.write(bytes(encoder.encode(np.ascontiguousarray(pcm).tobytes())))
                out.write(bytes(encoder.flush()))
            return
        with soundfile.SoundFile(
            str(target), "w", samplerate=sampling_rate, channels=channels, subtype=subtype, format=fmt.upper()
        ) as writer:
            for block in reader.blocks(blocksize=WRITE_BLOCK, dtype="float32", always_2d=True):
                if factor != 1.0:
                    block *= factor
                    np.clip(block, -1.0, 1.0, out=block)
                writer.write(block)


def _mp3_encoder(sampling_rate: int, channels: int) -> Any:
    import lameenc

    encoder = lameenc.Encoder()
    encoder.set_bit_rate(MP3_BIT_RATE)
    encoder.set_in_sample_rate(sampling_rate)
    encoder.set_channels(channels)
    encoder.set_quality(2)
    return encoder
