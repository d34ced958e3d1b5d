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
  temporaries (``.<label>.<ext>.<hex>.f32.tmp``) while their common peak is tracked, then are
  transcoded block by block with the rescaling factor. Existing outputs are never replaced
  without ``--overwrite``; this is checked before separating.
* Several inputs: each failing input is reported on one line and nothing is written for it; the
  others are still separated. The exit code is 0 when all inputs succeeded, 1 when any failed and
  2 for a usage error (bad option, no model).
* A tqdm progress bar over chunks is shown on stderr for inputs longer than one chunk, when
  stderr is a terminal and ``--quiet`` is not given.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import uuid
from collections.abc import Iterable
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
INPUT_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, RuntimeError)

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


def run(args: argparse.Namespace) -> int:
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

    import demixers  # noqa: F401  (registers the task and the model families)

    from .chunking import resolve_chunk_settings

    separator = _load_pipeline(str(model_id), device)
    config = separator.model.config
    call_kwargs: dict[str, Any] = {
        "segment": args.segment,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "shifts": args.shifts,
        "seed": args.seed,
    }
    call_kwargs = {key: value for key, value in call_kwargs.items() if value is not None}
    resolve_chunk_settings(config, **call_kwargs)  # option errors now, once, not per input
    call_kwargs["progress"] = not args.quiet and sys.stderr.isatty()

    failures = 0
    claimed: dict[Path, str] = {}
    for source in args.inputs:
        try:
            folder = args.output_dir / Path(source).stem
            if folder in claimed:
                raise ValueError(f"{source}: its output folder {folder} is already used by {claimed[folder]}")
            claimed[folder] = source
            targets = [folder / f"{label}.{args.format}" for label in config.source_names]
            _check_input_and_targets(source, targets, args.overwrite)
            stream = separator.stream_file(source, **call_kwargs)  # reads and checks the whole file
            write_stream(stream, targets, args.format, bit_depth, name=source)
        except INPUT_ERRORS as error:
            failures += 1
            print(f"demixers separate: error: {_one_line(error, source)}", file=sys.stderr)
            continue
        if not args.quiet:
            print(f"{source} -> {folder}{os.sep} ({len(targets)} stems)")
    return 1 if failures else 0


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
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available here")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("--device mps: no MPS device is available here")
    return device


def _load_pipeline(model_id: str, device: str) -> Any:
    from transformers import pipeline
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # keep stderr for our progress bar and errors
    try:
        return pipeline("audio-source-separation", model=model_id, device=device)
    except (OSError, ValueError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"could not load model {model_id!r}: {first_line}") from None


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
) -> None:
    """Write every stem of ``stream`` to its target, all-or-nothing, block by block.

    ``stream`` has ``sampling_rate``, ``channels`` and ``length`` and yields float32
    ``(len(targets), channels, n)`` blocks (a `SeparationStream`). 32-bit float wav is written
    directly to temporary names; the integer formats (16/24-bit wav and flac, mp3) go to float32
    temporaries first while the peak of all stems is tracked, then are transcoded block by block,
    all scaled by one factor when that peak exceeds full scale (with a warning on stderr). The
    temporaries are renamed into place only when every stem is complete and removed on any failure.
    """
    import numpy as np
    import soundfile

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

    folder = targets[0].parent
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex[:8]
    finals = [target.with_name(f".{target.name}.{token}.tmp") for target in targets]
    floats = [target.with_name(f".{target.name}.{token}.f32.tmp") for target in targets]
    try:
        first = finals if direct else floats
        options = {"format": fmt.upper(), "subtype": subtype} if direct else FLOAT_TEMPORARY
        peak = 0.0
        written = 0
        with contextlib.ExitStack() as stack:
            handles = [
                stack.enter_context(
                    soundfile.SoundFile(
                        str(path), "w", samplerate=sampling_rate, channels=channels, **options
                    )
                )
                for path in first
            ]
            for block in stream:
                if block.shape[0] != len(targets):
                    raise RuntimeError(f"{name}: {block.shape[0]} stems for {len(targets)} targets")
                if block.shape[-1] == 0:
                    continue
                if not direct:  # max and -min instead of abs(): no temporary copy
                    peak = max(peak, float(block.max()), -float(block.min()))
                for handle, stem in zip(handles, block, strict=True):
                    handle.write(stem.T)
                written += block.shape[-1]
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
            for source, final in zip(floats, finals, strict=True):
                _transcode(source, final, fmt, subtype, sampling_rate, channels, np.float32(factor))
                source.unlink()
        for final, target in zip(finals, targets, strict=True):
            os.replace(final, target)
    except BaseException:
        for path in (*floats, *finals):
            path.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


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
