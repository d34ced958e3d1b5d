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
* Layout and inputs: folders are walked (``--recursive``, ``--extensions``), ``--input-list`` read;
  ``--filename`` templates (``{track}``, ``{trackext}``, ``{stem}``, ``{ext}``) are checked for every
  input before any work; ``--two-stems SOURCE`` writes SOURCE and the sum of the other sources.
* Jobs (`demixers.pipelines.separate_job`): with ``--num-processes N`` the command re-runs itself
  under Accelerate's launcher; under a launcher every rank plans the same duration-balanced shards,
  loads the model once and separates its share, journaling each item; the journals are merged into
  ``OUTDIR/demixers_manifest.jsonl``, by which a rerun skips finished items (same content, model and
  settings). ``--dataset`` does the same over a dataset's rows (`demixers.pipelines.separate_dataset`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import re
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..utils.files import write_text_atomic
from .backends import add_performance_arguments, apply_performance_options, check_performance_arguments
from .separate_job import (
    AUDIO_EXTENSIONS,
    DEFAULT_TEMPLATE,
    DONE,
    FAILED,
    SKIPPED,
    STARTED,
    JobManifest,
    OutputLayout,
    audio_seconds,
    balanced_shards,
    check_template,
    decide,
    discover_inputs,
    file_fingerprint,
    job_key,
    parse_extensions,
    safe_folder_name,  # noqa: F401 (re-exported: it was defined here)
    summarize,
)
from .separate_job import process_alive as _process_alive

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
output: OUTDIR/<input stem>/<label>.<ext>, one file per source of the model (--filename changes it).

clipping: 16/24-bit wav, flac and mp3 cannot hold samples beyond [-1, 1]; when a file's stems
exceed it, all stems of that file are rescaled together by the same factor (with a warning).
32-bit wav is float and keeps such values.

jobs: --manifest, --input-list, --dataset and --num-processes (or `accelerate launch -m demixers
separate ...`) make a resumable job: OUTDIR/demixers_manifest.jsonl records every item; the same
command again skips finished items (same input content, model and settings) and retries failures.

exit status: 0 all inputs separated, 1 some input failed (each reported on one line, nothing
written for it), 2 usage error."""

DTYPES = ("float32", "bfloat16", "float16")
# set by `--num-processes`' launcher: where rank 0 writes the job's exit status (the workers exit 0,
# so that the launcher's own failure report is kept for crashes)
STATUS_FILE_ENV = "DEMIXERS_SEPARATE_STATUS_FILE"
# `--batch-size` when the device's memory picks it: at most this many chunks per forward pass, using
# at most this share of the free device memory
AUTO_BATCH_MAX = 16
AUTO_BATCH_MEMORY_SHARE = 0.5
JOB_SCHEME = 1  # bumped when the meaning of the job key's settings changes


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The ``separate`` options, in argument groups (inputs, model, output, chunking, job, dataset) so
    that other option families (performance flags) can add their own group."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _EPILOG
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="audio file(s) in any format soundfile reads, or folders of them",
    )
    inputs.add_argument(
        "--input-list",
        metavar="FILE",
        default=None,
        help="a text file of input paths, one per line (relative to the file's folder; # comments)",
    )
    inputs.add_argument("--recursive", action="store_true", help="walk the sub-folders of folder inputs")
    inputs.add_argument(
        "--extensions",
        default=",".join(AUDIO_EXTENSIONS),
        metavar="EXT,...",
        help="file extensions taken from folder inputs (default: %(default)s)",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "-m",
        "--model",
        default=None,
        help=(
            "model folder, Hub model id or official release name (`demixers models`; default: the small"
            " bundled speech model, synthetic voices only)"
        ),
    )
    model.add_argument("--device", choices=DEVICES, default="cpu", help="where the model runs (default: cpu)")
    model.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="the model's weights and compute type on the device (default: float32); bfloat16/float16 "
        "where the family supports it",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        default=DEFAULT_OUTPUT_DIR,
        metavar="OUTDIR",
        help=f"where stems are written (default: {DEFAULT_OUTPUT_DIR})",
    )
    output.add_argument(
        "--filename",
        default=None,
        metavar="TEMPLATE",
        help="stem path inside OUTDIR, with {track} {trackext} {stem} {ext} "
        f"(default: {DEFAULT_TEMPLATE})".replace("%", "%%"),
    )
    output.add_argument(
        "--two-stems",
        default=None,
        metavar="SOURCE",
        help="write SOURCE and no_SOURCE (the sum of the other sources) only, e.g. --two-stems vocals",
    )
    output.add_argument("--format", choices=FORMATS, default="wav", help="output format (default: wav)")
    output.add_argument(
        "--bit-depth",
        type=int,
        choices=BIT_DEPTHS,
        default=None,
        help=f"wav: 16/24-bit integer or 32-bit float; flac: 16/24 (default: {DEFAULT_BIT_DEPTH}); "
        "not for mp3",
    )
    output.add_argument("--overwrite", action="store_true", help="replace existing output files")
    output.add_argument("-q", "--quiet", action="store_true", help="no progress bar and no per-file messages")
    chunking = parser.add_argument_group("chunking")
    chunking.add_argument(
        "--segment", type=float, default=None, help="chunk length in seconds (default: from the model)"
    )
    chunking.add_argument(
        "--overlap",
        type=float,
        default=None,
        help="overlap between chunks, fraction in [0, 1) (default: from the model)",
    )
    chunking.add_argument(
        "--shifts",
        type=int,
        default=0,
        help="random time-shift augmentation passes, music models (default: 0)",
    )
    chunking.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="chunks per forward pass (default: 1 on CPU; on a GPU sized to its free memory, at most "
        f"{AUTO_BATCH_MAX})",
    )
    chunking.add_argument("--seed", type=int, default=0, help="seed of the --shifts offsets (default: 0)")
    job = parser.add_argument_group("job (several processes, resumable)")
    job.add_argument(
        "--num-processes",
        type=int,
        default=None,
        metavar="N",
        help="run N processes through Accelerate's launcher (one model each; with --device cuda, one "
        "GPU each), inputs balanced by duration",
    )
    job.add_argument(
        "--manifest",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the resumable job manifest in OUTDIR (default: on with --input-list, --dataset and "
        "several processes; off otherwise)",
    )
    dataset = parser.add_argument_group("dataset mode")
    dataset.add_argument(
        "--dataset",
        default=None,
        metavar="ID_OR_PATH",
        help="separate every row of a dataset (prepared by demixers, or any dataset with an Audio column)",
    )
    dataset.add_argument("--split", default=None, help="the dataset split (needed when it has several)")
    dataset.add_argument(
        "--audio-column",
        default=None,
        metavar="NAME",
        help="the column to separate (default: 'mixture', else the dataset's only Audio column)",
    )
    dataset.add_argument(
        "--stem-column-prefix",
        default="",
        metavar="PREFIX",
        help="prefix of the new stem columns (default: none: one column named after each stem)",
    )
    dataset.add_argument(
        "--output-dataset", type=Path, default=None, metavar="DIR", help="where the new dataset is saved"
    )
    dataset.add_argument(
        "--push-to-hub", default=None, metavar="REPO_ID", help="also push it to this Hub repo"
    )

    add_performance_arguments(parser)

    # `--num-processes` re-runs this command under Accelerate's launcher: keep the words as given
    original = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        words = sys.argv[1:] if args is None else list(args)
        namespace, extras = original(words, namespace)
        namespace.argv = words
        return namespace, extras

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def check_args(args: argparse.Namespace) -> None:
    """Option errors of ``demixers separate``, raised (ValueError: one line, exit 2) right after
    parsing: before the model is loaded and without importing torch or transformers."""
    _check_format(args.format, args.bit_depth)
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise NotADirectoryError(f"{args.output_dir}: the output path exists and is not a directory")
    check_chunk_options(args.segment, args.overlap, args.batch_size, args.shifts)
    check_job_options(args)
    check_performance_arguments(args)
    if (args.backend == "onnx" or args.quantize or args.onnx_model) and args.dtype != "float32":
        raise ValueError(f"--dtype {args.dtype} runs the torch model: onnxruntime runs in float32 (drop one)")


def check_job_options(args: argparse.Namespace) -> None:
    """The job, layout and dataset options' own rules (see `check_args`)."""
    dataset = getattr(args, "dataset", None)
    if dataset is not None:
        if args.inputs or args.input_list:
            raise ValueError("--dataset separates a dataset's rows: give no INPUT nor --input-list with it")
        if args.output_dataset is None:
            raise ValueError("--dataset needs --output-dataset DIR (where the new dataset is saved)")
        if args.format == "mp3":
            raise ValueError("--dataset stores lossless stems: use --format wav or flac, not mp3")
        if args.filename is not None:
            raise ValueError("--filename names stem files; with --dataset the stems are dataset columns")
        if args.manifest is False:
            raise ValueError("--dataset always keeps its manifest (it is how the new dataset is assembled)")
        if args.output_dataset.exists() and not args.output_dataset.is_dir():
            raise NotADirectoryError(f"{args.output_dataset}: the output path exists and is not a directory")
    else:
        if not args.inputs and not args.input_list:
            raise ValueError("nothing to separate: give INPUT files or folders, --input-list or --dataset")
        for name in ("output_dataset", "push_to_hub", "split", "audio_column"):
            if getattr(args, name) is not None:
                raise ValueError(f"--{name.replace('_', '-')} only applies with --dataset")
    if args.num_processes is not None and args.num_processes < 1:
        raise ValueError(f"--num-processes must be >= 1, got {args.num_processes}")
    if args.manifest is False and (args.num_processes or 1) > 1:
        raise ValueError("--no-manifest: several processes need the manifest to share out the job")
    if args.filename is not None:
        check_template(args.filename)
    parse_extensions(args.extensions)
    if args.two_stems is not None and not args.two_stems:
        raise ValueError("--two-stems needs a source name, e.g. --two-stems vocals")


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
    if (args.num_processes or 1) > 1 and world_size() == 1:
        return launch(args)
    # SIGTERM is handled like SIGINT for the whole command (loading included): the writers' cleanup
    # runs, then exit status 143
    with _sigterm_raises():
        try:
            return _run(args)
        except SeparationTerminatedError:
            print("demixers separate: terminated (temporary files removed)", file=sys.stderr)
            return EXIT_SIGTERM


def world_size() -> int:
    """How many processes a launcher (``accelerate launch``, torchrun) started for this job."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def launch(args: argparse.Namespace) -> int:
    """``--num-processes N``: run this same command on N processes through Accelerate's launcher
    (``accelerate launch --multi_gpu``; on CPU with ``ACCELERATE_USE_CPU``, gloo), and return the job's
    exit status (written by rank 0), or the launcher's when a process crashed."""
    import subprocess
    import tempfile

    words = list(getattr(args, "argv", None) or [])
    if not words:
        raise ValueError("--num-processes: the command's arguments are not known (use accelerate launch)")
    words = _without_option(words, "--num-processes")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(args.num_processes)]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["--main_process_port", "0", "--multi_gpu", "-m", "demixers", "separate", *words]
    environment = dict(os.environ)
    if not args.device.startswith("cuda"):
        environment["ACCELERATE_USE_CPU"] = "true"
    with tempfile.TemporaryDirectory(prefix="demixers-separate-") as folder:
        status_file = Path(folder) / "status"
        environment[STATUS_FILE_ENV] = str(status_file)
        code = subprocess.call(command, env=environment)
        if code == 0 and status_file.is_file():
            return int(status_file.read_text().strip() or 0)
        if code != 0:
            print(f"demixers separate: the launcher exited with status {code}", file=sys.stderr)
        return code


def _without_option(words: list[str], option: str) -> list[str]:
    """``words`` without ``option VALUE`` / ``option=VALUE`` (argparse's unique prefixes included)."""
    kept: list[str] = []
    skip = False
    for index, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word == "--":
            kept.extend(words[index:])
            break
        name, equals, _ = word.partition("=")
        if len(name) > 2 and name.startswith("--") and option.startswith(name) and name != "--":
            skip = not equals
            continue
        kept.append(word)
    return kept


@dataclass
class ProcessContext:
    """This process' place in the job: rank, process count and the barrier between them."""

    rank: int = 0
    num_processes: int = 1
    local_rank: int = 0
    state: Any = None

    @classmethod
    def detect(cls, device: str) -> ProcessContext:
        if world_size() == 1:
            return cls()
        import datetime

        from accelerate import PartialState

        # processes on CPU talk over gloo (Accelerate's MULTI_CPU, which needs cpu=True); a generous
        # barrier timeout: the ranks wait at the end for the slowest one (its last long file)
        on_cpu = not device.startswith("cuda") or os.environ.get("ACCELERATE_USE_CPU", "").lower() in (
            "1",
            "true",
        )
        state = PartialState(cpu=on_cpu, timeout=datetime.timedelta(days=7))
        return cls(state.process_index, state.num_processes, state.local_process_index, state)

    def wait_for_everyone(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def shared_run_id(self) -> str:
        """One id for this run, the same on every rank (rank 0's)."""
        run_id = uuid.uuid4()
        if self.state is not None:
            import torch
            import torch.distributed

            # 16 raw bytes in a tensor (nothing pickled between processes)
            data = torch.tensor(list(run_id.bytes), dtype=torch.uint8, device=self.state.device)
            torch.distributed.broadcast(data, src=0)
            run_id = uuid.UUID(bytes=bytes(data.cpu().tolist()))
        return run_id.hex


def uses_manifest(args: argparse.Namespace) -> bool:
    """Whether this run is a resumable job (see `--manifest`)."""
    if args.manifest is not None:
        if args.manifest is False and world_size() > 1:
            raise ValueError("--no-manifest: several processes need the manifest to share out the job")
        return bool(args.manifest)
    return (
        args.dataset is not None
        or args.input_list is not None
        or args.num_processes is not None
        or world_size() > 1
    )


def _run(args: argparse.Namespace) -> int:
    context = ProcessContext.detect(args.device)
    if args.model is None:
        from ..bundled import default_model_dir

        model_id = str(default_model_dir())
        if not args.quiet and context.rank == 0:
            print(DEFAULT_MODEL_NOTICE, file=sys.stderr)
    else:
        model_id = args.model
    bit_depth = _check_format(args.format, args.bit_depth)
    check_job_options(args)
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise NotADirectoryError(f"{args.output_dir}: the output path exists and is not a directory")
    device = _check_device(args.device)
    if context.num_processes > 1 and device == "cuda":
        device = f"cuda:{context.local_rank}"  # one model per device
    job = uses_manifest(args)

    from .chunking import resolve_chunk_settings

    separator = _load_pipeline(str(model_id), device)
    apply_performance_options(separator, args)
    model_identity = f"{model_id}@{parameters_digest(separator.model)}" if job else model_id
    set_dtype(separator, args.dtype, device)
    config = separator.model.config
    labels = check_labels(config.source_names, model_id)
    stems = two_stems_labels(labels, args.two_stems, model_id)
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
    if args.batch_size is None and device.startswith("cuda"):
        call_kwargs["batch_size"] = auto_batch_size(separator, settings, device)
        settings = resolve_chunk_settings(config, **call_kwargs)
    call_kwargs["progress"] = not args.quiet and sys.stderr.isatty()
    run_settings = RunSettings(
        labels=labels,
        stems=stems,
        two_stems=args.two_stems,
        bit_depth=bit_depth,
        call_kwargs=call_kwargs,
        device=device,
        batch_size=settings.batch_size,
        segment=settings.segment,
    )
    if not job:
        return _separate_all(separator, labels, args, bit_depth, call_kwargs, run_settings)
    job_settings = {
        "scheme": JOB_SCHEME,
        "format": args.format,
        "bit_depth": bit_depth,
        "segment": settings.segment,
        "overlap": settings.overlap,
        "shifts": settings.shifts,
        "seed": settings.seed,
        "two_stems": args.two_stems,
        "dtype": args.dtype,
        "backend": separator.backend,
        "quantize": args.quantize,
    }
    if args.dataset is not None:
        return _run_dataset_job(separator, args, run_settings, context, model_identity, job_settings)
    job_settings["filename"] = args.filename or DEFAULT_TEMPLATE
    return _run_file_job(separator, args, run_settings, context, job_key(model_identity, job_settings))


@dataclass
class RunSettings:
    """What every item of a run is separated and written with."""

    labels: list[str]  # the model's sources
    stems: list[str]  # what is written: the sources, or SOURCE and no_SOURCE with --two-stems
    two_stems: str | None
    bit_depth: int | None
    call_kwargs: dict[str, Any]
    device: str
    batch_size: int
    segment: float


def two_stems_labels(labels: list[str], two_stems: str | None, model_id: str) -> list[str]:
    """The written stems: the model's sources, or ``[SOURCE, no_SOURCE]`` for ``--two-stems SOURCE``."""
    if two_stems is None:
        return list(labels)
    if two_stems not in labels:
        raise ValueError(
            f"--two-stems {two_stems}: model {model_id!r} has no source {two_stems!r} "
            f"(its sources: {', '.join(labels)})"
        )
    if len(labels) < 2:
        raise ValueError(f"--two-stems {two_stems}: model {model_id!r} has only one source")
    rest = f"no_{two_stems}"
    if rest in labels:
        raise ValueError(f"--two-stems {two_stems}: the model already has a source named {rest!r}")
    return [two_stems, rest]


def two_stems_blocks(blocks: Any, index: int) -> Any:
    """``(sources, channels, n)`` -> ``(2, channels, n)``: source ``index`` and the sum of the others
    (demucs' ``--two-stems``: the rest is summed from the model's other estimates, not mixture
    minus the source)."""
    import numpy as np

    others = [position for position in range(blocks.shape[0]) if position != index]
    rest = blocks[others].sum(axis=0, dtype=np.float32)
    return np.stack([blocks[index], rest]).astype(np.float32, copy=False)


@dataclass
class _TwoStemStream:
    stream: Any
    index: int

    @property
    def sampling_rate(self) -> int:
        return int(self.stream.sampling_rate)

    @property
    def channels(self) -> int:
        return int(self.stream.channels)

    @property
    def length(self) -> int:
        return int(self.stream.length)

    def __iter__(self) -> Iterator[Any]:
        for block in self.stream:
            yield two_stems_blocks(block, self.index)


def stems_stream(separator: Any, source: str, run_settings: RunSettings) -> Any:
    """The stream of what is written for ``source``: the model's stems, or the two of --two-stems."""
    stream = separator.stream_file(source, **run_settings.call_kwargs)  # reads and checks the whole file
    if run_settings.two_stems is not None:
        return _TwoStemStream(stream, run_settings.labels.index(run_settings.two_stems))
    return stream


def parameters_digest(model: Any) -> str:
    """A digest of the model's weights and sources (part of the job key: a changed checkpoint under
    the same name redoes the job)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    digest.update(repr(list(model.config.source_names)).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        data = tensor.detach().to("cpu").contiguous()
        digest.update(str(data.dtype).encode() + repr(tuple(data.shape)).encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def set_dtype(separator: Any, dtype_name: str, device: str) -> None:
    """Cast the model to ``--dtype`` and check with one short forward pass that its family runs in
    it on this device (a ValueError naming the family and the device otherwise)."""
    if dtype_name == "float32":
        return
    import numpy as np
    import torch

    dtype = getattr(torch, dtype_name)
    model = separator.model
    model.to(dtype=dtype)
    config = model.config
    probe = np.zeros((int(config.audio_channels), int(config.sampling_rate) // 4), dtype=np.float32)
    probe[:, ::7] = 0.1
    family = getattr(config, "model_type", type(model).__name__)
    try:
        stems = separator(probe, sampling_rate=int(config.sampling_rate), segment=0.25, overlap=0.0)
    except (RuntimeError, TypeError, NotImplementedError) as error:
        model.to(dtype=torch.float32)
        raise ValueError(
            f"--dtype {dtype_name}: the {family} family cannot run in {dtype_name} on {device} "
            f"({first_line(error)}); use --dtype float32"
        ) from None
    if not all(np.isfinite(stem["audio"]).all() for stem in stems):
        model.to(dtype=torch.float32)
        raise ValueError(
            f"--dtype {dtype_name}: the {family} family gives non-finite output in {dtype_name}; "
            "use --dtype float32"
        )


def auto_batch_size(separator: Any, settings: Any, device: str) -> int:
    """Chunks per forward pass on a CUDA device: one chunk's measured peak memory into at most
    `AUTO_BATCH_MEMORY_SHARE` of the free memory, between 1 and `AUTO_BATCH_MAX`."""
    import numpy as np
    import torch

    config = separator.model.config
    samples = max(1, round(settings.segment * int(config.sampling_rate)))
    chunk = torch.zeros((1, int(config.audio_channels), samples), dtype=torch.float32)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    try:
        separator._separate_chunks(chunk)
    except torch.OutOfMemoryError:
        raise MemoryError(
            f"out of memory on {device} for one chunk of {settings.segment} s; lower --segment"
        ) from None
    torch.cuda.synchronize(device)
    per_chunk = max(1, torch.cuda.max_memory_allocated(device) - before)
    free, _ = torch.cuda.mem_get_info(device)
    fitting = int(AUTO_BATCH_MEMORY_SHARE * free // per_chunk)
    return int(np.clip(fitting, 1, AUTO_BATCH_MAX))


def _separate_all(
    separator: Any,
    labels: list[str],
    args: argparse.Namespace,
    bit_depth: int | None,
    call_kwargs: dict[str, Any],
    run_settings: RunSettings | None = None,
) -> int:
    if run_settings is None:
        run_settings = RunSettings(labels, list(labels), None, bit_depth, call_kwargs, "cpu", 1, 0.0)
    layout = OutputLayout(
        args.output_dir, args.filename or DEFAULT_TEMPLATE, tuple(run_settings.stems), args.format
    )
    extensions = parse_extensions(args.extensions)
    sources = discover_inputs(
        args.inputs,
        recursive=args.recursive,
        extensions=extensions,
        exclude=args.output_dir,
        keep_empty_folders=True,
        deduplicate=False,
    )
    if args.filename is not None:
        layout.plan([source for source in sources if not os.path.isdir(source)])  # before any work
    failures = 0
    claimed: dict[Path, str] = {}
    for source in sources:
        try:
            if os.path.isdir(source):
                raise IsADirectoryError(
                    f"{source}: a folder without audio files ({', '.join(extensions)})"
                    + ("" if args.recursive else "; pass --recursive to walk its sub-folders")
                )
            targets = layout.render(source)
            for target in targets:
                if target in claimed:
                    raise ValueError(f"{source}: its output {target} is already used by {claimed[target]}")
            claimed.update((target, source) for target in targets)
            check_inside(args.output_dir, targets, run_settings.stems)
            for folder in dict.fromkeys(target.parent for target in targets):
                remove_stale_temporaries(folder)
            _check_input_and_targets(source, targets, args.overwrite)
            stream = stems_stream(separator, source, run_settings)
            write_stream(stream, targets, args.format, bit_depth, name=source, root=args.output_dir)
        except INPUT_ERRORS as error:
            failures += 1
            print(f"demixers separate: error: {_item_error(error, source, run_settings)}", file=sys.stderr)
            continue
        if not args.quiet:
            print(f"{source} -> {_describe_targets(targets)} ({len(targets)} stems)")
    return 1 if failures else 0


def _describe_targets(targets: Sequence[Path]) -> str:
    folders = list(dict.fromkeys(target.parent for target in targets))
    return f"{folders[0]}{os.sep}" if len(folders) == 1 else ", ".join(map(str, targets))


def _item_error(error: BaseException, source: str, run_settings: RunSettings) -> str:
    """One line for a failed item; out-of-memory names the flags to lower."""
    import torch

    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        return (
            f"{source}: out of memory on {run_settings.device} with --batch-size {run_settings.batch_size} "
            f"and --segment {run_settings.segment:g}: lower --batch-size (or --segment)"
        )
    return _one_line(error, source)


def _run_file_job(
    separator: Any, args: argparse.Namespace, run_settings: RunSettings, context: ProcessContext, job: str
) -> int:
    """Files and folders as a resumable job (see `demixers.pipelines.separate_job`): every rank plans
    the same balanced shards, separates its own and journals each item; the journals are merged and
    rank 0 prints the summary."""
    root = args.output_dir
    sources = discover_inputs(
        args.inputs, args.input_list, args.recursive, parse_extensions(args.extensions), exclude=root
    )
    layout = OutputLayout(root, args.filename or DEFAULT_TEMPLATE, tuple(run_settings.stems), args.format)
    plans = layout.plan(sources)  # collisions between inputs: refused before any work, on every rank
    keys = [os.path.realpath(source) for source in sources]
    durations = [audio_seconds(source) or 0.0 for source in sources]
    shards = balanced_shards(durations, keys, context.num_processes)
    run_id = context.shared_run_id()
    manifest = JobManifest(root)
    state = manifest.state()
    started_at = time.monotonic()
    prefix = f"[rank {context.rank}] " if context.num_processes > 1 else ""
    base = {"run": run_id, "job": job, "rank": context.rank, "num_processes": context.num_processes}
    try:
        for index in shards[context.rank]:
            source, key, targets = sources[index], keys[index], plans[index]
            record: dict[str, Any] = {**base, "key": key, "input": source}
            clock = time.monotonic()
            decision = None
            try:
                if not os.path.isfile(source):
                    raise FileNotFoundError(f"{source}: no such file")
                record.update(file_fingerprint(source, state.get(key)))
                decision = decide(
                    state.get(key),
                    record["fingerprint"],
                    job,
                    all(target.exists() for target in targets),
                    args.overwrite,
                )
                outputs = [str(target.relative_to(root)) for target in targets]
                if decision.skip:
                    previous = decision.previous or {}
                    seconds = previous.get("seconds")
                    manifest.append({**record, "status": SKIPPED, "seconds": seconds, "outputs": outputs})
                    continue
                check_inside(root, targets, run_settings.stems)
                for folder in dict.fromkeys(target.parent for target in targets):
                    remove_stale_temporaries(folder)
                _check_input_and_targets(source, targets, decision.overwrite)
                manifest.append({**record, "status": STARTED, "owns_outputs": True})
                stream = stems_stream(separator, source, run_settings)
                write_stream(stream, targets, args.format, run_settings.bit_depth, name=source, root=root)
                seconds = stream.length / stream.sampling_rate
                manifest.append(
                    {
                        **record,
                        "status": DONE,
                        "seconds": seconds,
                        "elapsed": time.monotonic() - clock,
                        "outputs": outputs,
                    }
                )
            except INPUT_ERRORS as error:
                message = _item_error(error, source, run_settings)
                manifest.append(
                    {
                        **record,
                        "status": FAILED,
                        "error": message,
                        "elapsed": time.monotonic() - clock,
                        "owns_outputs": bool(decision is not None and decision.overwrite),
                    }
                )
                print(f"demixers separate: error: {prefix}{message}", file=sys.stderr)
                continue
            if not args.quiet:
                print(f"{prefix}{source} -> {_describe_targets(targets)} ({len(targets)} stems)", flush=True)
    finally:
        manifest.merge()
    return finish_job(manifest, keys, run_id, started_at, context, args.quiet)


def _run_dataset_job(
    separator: Any,
    args: argparse.Namespace,
    run_settings: RunSettings,
    context: ProcessContext,
    model_identity: str,
    job_settings: dict[str, Any],
) -> int:
    """``--dataset``: every row separated (sharded by rank, journaled like files, resumable), then the
    new dataset assembled by rank 0 and optionally pushed (see `demixers.pipelines.separate_dataset`)."""
    import numpy as np

    from ..datasets_scripts.audio import decode_bytes
    from . import separate_dataset as rows_io
    from .separate_job import bytes_fingerprint

    dataset, split = rows_io.open_split(args.dataset, args.split)
    column = rows_io.audio_column(dataset, args.audio_column)
    columns = rows_io.stem_columns(dataset, run_settings.stems, args.stem_column_prefix)
    root = args.output_dataset
    subtype = SUBTYPES[(args.format, run_settings.bit_depth)]
    job_settings = {
        **job_settings,
        "dataset": str(args.dataset),
        "split": split,
        "column": column,
        "stem_columns": columns,
    }
    job = job_key(model_identity, job_settings)
    store = rows_io.RowStore(root, split, run_settings.stems, args.format)
    keys = [f"{split}/{index}" for index in range(len(dataset))]
    shards = balanced_shards(rows_io.row_weights(dataset, column), keys, context.num_processes)
    run_id = context.shared_run_id()
    manifest = JobManifest(root)
    state = manifest.state()
    store.remove_stale()
    started_at = time.monotonic()
    prefix = f"[rank {context.rank}] " if context.num_processes > 1 else ""
    base = {"run": run_id, "job": job, "rank": context.rank, "num_processes": context.num_processes}
    call_kwargs = {key: value for key, value in run_settings.call_kwargs.items() if key != "progress"}
    cells = dataset.select_columns([column])
    try:
        for index in shards[context.rank]:
            key = keys[index]
            name = f"{args.dataset}[{split}][{index}]"
            record: dict[str, Any] = {**base, "key": key, "input": name, "row": index}
            clock = time.monotonic()
            try:
                data = rows_io.cell_bytes(cells[index][column], name)
                record["fingerprint"] = bytes_fingerprint(data)
                decision = decide(state.get(key), record["fingerprint"], job, store.complete(index), True)
                if decision.skip:
                    seconds = (decision.previous or {}).get("seconds")
                    manifest.append({**record, "status": SKIPPED, "seconds": seconds})
                    continue
                manifest.append({**record, "status": STARTED})
                waveform, rate = decode_bytes(data, name=name)
                separated = separator(waveform, sampling_rate=rate, **call_kwargs)
                stems = np.stack([stem["audio"] for stem in separated]).astype(np.float32, copy=False)
                if run_settings.two_stems is not None:
                    stems = two_stems_blocks(stems, run_settings.labels.index(run_settings.two_stems))
                store.write(index, rows_io.encode_stems(stems, rate, args.format, subtype, name))
                seconds = waveform.shape[-1] / rate
                manifest.append(
                    {**record, "status": DONE, "seconds": seconds, "elapsed": time.monotonic() - clock}
                )
            except INPUT_ERRORS as error:
                # libsndfile names an in-memory file by its repr: say what it is instead
                message = _item_error(error, name, run_settings)
                message = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the stored bytes", message)
                manifest.append(
                    {**record, "status": FAILED, "error": message, "elapsed": time.monotonic() - clock}
                )
                print(f"demixers separate: error: {prefix}{message}", file=sys.stderr)
                continue
            if not args.quiet:
                print(f"{prefix}{name} -> {len(run_settings.stems)} stems", flush=True)
    finally:
        manifest.merge()

    def assemble(records: dict[str, dict[str, Any]], summary: Any) -> None:
        finished = [
            index
            for index, key in enumerate(keys)
            if records.get(key, {}).get("run") == run_id and records[key].get("status") in (DONE, SKIPPED)
        ]
        rows_io.assemble(dataset, split, finished, store, columns, root)
        left_out = f" ({summary.failed} failed row(s) left out)" if summary.failed else ""
        if not args.quiet:
            print(f"dataset: {len(finished)} row(s) of split {split!r} saved to {root}{left_out}")
        if args.push_to_hub:
            from datasets import load_from_disk

            load_from_disk(str(root)).push_to_hub(args.push_to_hub)
            if not args.quiet:
                print(f"pushed to {args.push_to_hub}")

    return finish_job(manifest, keys, run_id, started_at, context, args.quiet, on_rank_zero=assemble)


def finish_job(
    manifest: JobManifest,
    keys: Sequence[str],
    run_id: str,
    started_at: float,
    context: ProcessContext,
    quiet: bool,
    on_rank_zero: Any = None,
) -> int:
    """Wait for every rank, then on rank 0: the summary (printed, and saved as ``summary.json`` in the
    work folder), ``on_rank_zero(records, summary)`` (the dataset's assembly) and the exit status."""
    context.wait_for_everyone()
    code = 0
    if context.rank == 0:
        records = manifest.merge()  # journals of processes that died are folded in too
        summary = summarize(records, keys, run_id, time.monotonic() - started_at, context.num_processes)
        if on_rank_zero is not None:
            on_rank_zero(records, summary)
        write_text_atomic(manifest.work_dir / "summary.json", json.dumps(summary.as_dict(), indent=2) + "\n")
        if not quiet or summary.failed:
            print(summary.line(), file=sys.stderr)
        code = 1 if summary.failed else 0
        status_file = os.environ.get(STATUS_FILE_ENV)
        if status_file:
            Path(status_file).write_text(str(code))
    context.wait_for_everyone()
    if os.environ.get(STATUS_FILE_ENV):
        return 0  # the `--num-processes` launcher returns rank 0's status
    return code


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
    if len({os.path.normcase(os.path.abspath(target)) for target in targets}) != len(targets):
        raise ValueError(f"{name}: two stems would be written to the same file: {[str(t) for t in targets]}")
    folder = targets[0].parent
    # a --filename template may spread the stems of one input over several folders
    folders = list(dict.fromkeys(target.parent for target in targets))
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

    created = _make_folders(folders)
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
        for made in reversed(created):  # deepest first; a folder that is not empty stays
            with contextlib.suppress(OSError):
                made.rmdir()
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


def _make_folders(folders: Sequence[Path]) -> list[Path]:
    """Create the stems' ``folders`` (with missing parents); return those of them that did not exist
    (removed again on failure, as the single stem folder always was)."""
    created = [folder for folder in folders if not folder.exists()]
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
    return created


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
