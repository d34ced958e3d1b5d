"""What the web demo does, without the page: load a model, separate a file to stems on disk, zip
them, draw them, find the model's card. Nothing here imports gradio, so all of it is tested (and
usable) without the ``web`` extra.

The separation is the CLI's own path (`demixers.pipelines.cli`): the same model loader (Hub ids,
local folders, and whatever names that loader resolves), the same option and label checks, and the
bounded-memory `stream_file` + `write_stream` into a folder, so a long upload never sits in memory
whole. Errors come back as the CLI's one-line messages (`WebError`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BUNDLED_CHOICE = "default_speech_8k (bundled)"
# Stems get 16-bit wav: every browser plays it (float wav is not universal) and the CLI rescales all
# stems together when one would clip.
STEM_FORMAT, STEM_BIT_DEPTH = "wav", 16
# Separation takes this share of the progress bar; writing, zipping and drawing the rest.
SEPARATION_SHARE = 0.85
# Columns of the waveform/spectrogram images: the audio is reduced to this many, whatever its length.
IMAGE_COLUMNS = 800
IMAGE_ROWS = 256
FRAMES_PER_COLUMN = 8
DYNAMIC_RANGE_DB = 80.0
# Result folders of earlier requests older than this are removed when a new request starts.
KEEP_RESULTS_SECONDS = 3600.0

ProgressFn = Callable[[float, str], None]


class WebError(Exception):
    """A failure shown to the user as one line in the page (the CLI's words), never a traceback."""


def expected_errors() -> tuple[type[BaseException], ...]:
    """What a bad input, option or model raises: the CLI's user, model-file and resource errors
    (the CLI reports exactly these on one line; anything else is a bug)."""
    from ..cli import USER_ERRORS, model_file_errors, resource_errors
    from ..pipelines.cli import INPUT_ERRORS, model_load_errors

    return (*USER_ERRORS, *INPUT_ERRORS, *model_file_errors(), *resource_errors(), *model_load_errors())


def error_line(error: BaseException, path: str | os.PathLike[str] | None = None) -> str:
    """The CLI's one-line message for ``error``; a temporary upload path in it becomes its file name
    (the page's user knows ``song.wav``, not ``/tmp/gradio/<hash>/song.wav``)."""
    from ..pipelines.cli import _one_line

    if path is None:
        from ..cli import one_line

        return one_line(error)
    message = _one_line(error, str(path))
    return message.replace(str(path), Path(path).name)


def resolve_model(choice: str | None) -> str:
    """The model id the CLI's loader gets for a picker value: the bundled folder for the bundled
    entry (or nothing chosen), else the text as typed (a folder, a Hub id, a catalogue name)."""
    if choice is None or not str(choice).strip() or str(choice).strip() == BUNDLED_CHOICE:
        from ..bundled import default_model_dir

        return str(default_model_dir())
    return str(choice).strip()


class ModelStore:
    """Loaded pipelines by model id, the ``capacity`` most recently used kept (models are large);
    one lock, so two requests never load the same model twice at once."""

    def __init__(self, device: str = "cpu", capacity: int = 2) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity!r}")
        self.device = device
        self.capacity = capacity
        self._pipelines: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_id: str) -> Any:
        """The pipeline of ``model_id`` (loaded by the CLI's loader: its errors are one line)."""
        from ..pipelines.cli import _load_pipeline

        with self._lock:
            if model_id in self._pipelines:
                self._pipelines.move_to_end(model_id)
                return self._pipelines[model_id]
            separator = _load_pipeline(model_id, self.device)
            self._pipelines[model_id] = separator
            while len(self._pipelines) > self.capacity:
                self._pipelines.popitem(last=False)
            return separator


@dataclass
class Stem:
    label: str
    path: Path
    image: Path | None = None


@dataclass
class SeparationResult:
    """Stems on disk (input's rate and length, 16-bit wav), their zip, and the images."""

    folder: Path
    sampling_rate: int
    length: int
    stems: list[Stem]
    zip_path: Path | None = None
    mixture_image: Path | None = None
    notes: list[str] = field(default_factory=list)


class _ReportingStream:
    """A `SeparationStream` that reports the share of the output produced so far: the stems come out
    of the chunk engine as its overlap-add frontier moves, so this is the engine's own progress."""

    def __init__(self, stream: Any, report: Callable[[int, int], None]) -> None:
        self._stream = stream
        self._report = report
        self.labels = stream.labels
        self.sampling_rate = stream.sampling_rate
        self.channels = stream.channels
        self.length = stream.length
        self.peak = 0.0  # of all stems, as the CLI's writer measures it before rescaling

    def __iter__(self) -> Iterator[np.ndarray]:
        done = 0
        self._report(done, self.length)
        for block in self._stream:
            if block.size:
                self.peak = max(self.peak, float(block.max()), -float(block.min()))
            yield block
            done += block.shape[-1]
            self._report(done, self.length)


def separate_to_folder(
    separator: Any,
    model_id: str,
    audio_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    segment: float | None = None,
    overlap: float | None = None,
    shifts: int | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> SeparationResult:
    """Separate ``audio_path`` into ``output_dir/<its stem>/<label>.wav`` as ``demixers separate``
    does (same checks, streaming and all-or-nothing writer). Raises what the CLI reports."""
    from ..pipelines.chunking import resolve_chunk_settings
    from ..pipelines.cli import (
        check_chunk_options,
        check_forward_memory,
        check_inside,
        check_labels,
        safe_folder_name,
        write_stream,
    )

    check_chunk_options(segment, overlap, None, shifts)
    config = separator.model.config
    labels = check_labels(config.source_names, model_id)
    options = {"segment": segment, "overlap": overlap, "shifts": shifts, "seed": seed}
    options = {key: value for key, value in options.items() if value is not None}
    settings = resolve_chunk_settings(config, **options)
    check_forward_memory(config, settings, None, segment)

    output_dir = Path(output_dir)
    folder = output_dir / safe_folder_name(Path(audio_path).stem)
    targets = [folder / f"{label}.{STEM_FORMAT}" for label in labels]
    check_inside(output_dir, targets, labels)
    stream = separator.stream_file(os.fspath(audio_path), **options)  # reads and checks the whole file

    def report(done: int, total: int) -> None:
        if progress is not None:
            rate = stream.sampling_rate
            progress(
                SEPARATION_SHARE * done / max(total, 1),
                f"separating: {done / rate:.1f} s of {total / rate:.1f} s",
            )

    reporting = _ReportingStream(stream, report)
    write_stream(reporting, targets, STEM_FORMAT, STEM_BIT_DEPTH, name=Path(audio_path).name, root=output_dir)
    notes = []
    if reporting.peak > 1.0:  # the writer rescaled every stem by one factor (its warning went to stderr)
        notes.append(
            f"the stems peaked at {reporting.peak:.3f}, beyond [-1, 1]; all of them were scaled together by "
            f"{1.0 / reporting.peak:.4f} to avoid clipping in 16-bit wav"
        )
    return SeparationResult(
        folder=folder,
        sampling_rate=int(stream.sampling_rate),
        length=int(stream.length),
        stems=[Stem(label, target) for label, target in zip(labels, targets, strict=True)],
        notes=notes,
    )


def zip_stems(stems: Sequence[Stem], path: str | os.PathLike[str]) -> Path:
    """All stems in one zip (``<label>.wav`` each, stored: wav hardly compresses), written under a
    temporary name and renamed into place."""
    from ..utils.files import atomic_output

    path = Path(path)
    with (
        atomic_output(path, suffix=".zip") as temporary,
        zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive,
    ):
        for stem in stems:
            archive.write(stem.path, arcname=stem.path.name)
    return path


# -- images ------------------------------------------------------------------------------------


@dataclass
class AudioOverview:
    """A file reduced to ``columns``: per column the waveform's min and max (channels averaged) and
    the mean power spectrum (dB) of the STFT frames that start in it."""

    sampling_rate: int
    length: int
    minimum: np.ndarray
    maximum: np.ndarray
    spectrum_db: np.ndarray  # (frequencies, columns)


def overview_of_blocks(
    blocks: Iterable[np.ndarray], length: int, sampling_rate: int, columns: int = IMAGE_COLUMNS
) -> AudioOverview:
    """`AudioOverview` of ``(channels, n)`` float blocks (``length`` samples in all) in one pass,
    holding one column's samples at a time: an hour of audio costs no more memory than a second,
    and no more than ``columns * FRAMES_PER_COLUMN`` FFTs."""
    if length <= 0:
        raise ValueError(f"cannot draw audio of {length} samples")
    if sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be positive, got {sampling_rate}")
    n_fft = 512 if sampling_rate <= 16000 else 2048
    hop = n_fft // 4
    stride = max(hop, math.ceil(length / columns))
    stride = hop * math.ceil(stride / hop)  # whole hops per column: every frame belongs to one column
    count = math.ceil(length / stride)
    window = np.hanning(n_fft)
    minimum, maximum = np.zeros(count), np.zeros(count)
    spectrum = np.full((n_fft // 2 + 1, count), 1e-20)
    pending = np.zeros(0)  # starts at a column's first sample
    column = 0

    def take(span: np.ndarray, column: int) -> None:
        # frames start at 0, hop, ... inside the column and may read into the next one (zero past the end)
        minimum[column], maximum[column] = span[:stride].min(), span[:stride].max()
        # frames every `hop` in a short column; in a long one FRAMES_PER_COLUMN of them spread evenly
        # (the mean power of a few frames draws the same picture at a fraction of the cost)
        available = max(1, min(stride, span.size) // hop)
        starts = (
            hop * np.arange(available)
            if available <= FRAMES_PER_COLUMN
            else (np.arange(FRAMES_PER_COLUMN) * (min(stride, span.size) // FRAMES_PER_COLUMN))
        )
        padded = np.pad(span, (0, max(0, int(starts[-1]) + n_fft - span.size)))
        index = np.arange(n_fft)[None, :] + starts[:, None]
        power = np.abs(np.fft.rfft(padded[index] * window, axis=1)) ** 2
        spectrum[:, column] = power.mean(axis=0)

    for block in blocks:
        mono = np.asarray(block, dtype=np.float64).mean(axis=0)
        pending = np.concatenate([pending, mono])
        while pending.size >= stride + n_fft and column < count:
            take(pending[: stride + n_fft], column)
            pending = pending[stride:]
            column += 1
    while pending.size and column < count:
        take(pending[: stride + n_fft], column)
        pending = pending[stride:]
        column += 1
    spectrum_db = 10 * np.log10(np.maximum(spectrum, 1e-20))
    return AudioOverview(sampling_rate, length, minimum, maximum, spectrum_db)


def overview_of_file(path: str | os.PathLike[str], length: int | None = None) -> AudioOverview:
    """`overview_of_blocks` of an audio file read block by block (any format the CLI reads)."""
    import soundfile

    from ..pipelines.audio_utils import AudioFile

    audio = AudioFile(path)
    if length is None:
        length = soundfile.info(str(path)).frames
    return overview_of_blocks(audio.blocks(), length, audio.sampling_rate)


def plot_overview(
    overview: AudioOverview, title: str, path: str | os.PathLike[str], top_db: float | None = None
) -> Path:
    """PNG: the waveform envelope above the spectrogram. ``top_db``: the colour scale's top, shared
    by the mixture and its stems so that a quiet stem looks quiet."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..utils.files import atomic_output

    top = float(overview.spectrum_db.max()) if top_db is None else float(top_db)
    duration = overview.length / overview.sampling_rate
    times = (np.arange(overview.minimum.size) + 0.5) * duration / max(overview.minimum.size, 1)
    # fixed axes positions: a layout engine costs more than the drawing itself
    figure = Figure(figsize=(8, 3.4), dpi=80)
    FigureCanvasAgg(figure)
    wave_axis = figure.add_axes((0.07, 0.68, 0.8, 0.24))
    spectrum_axis = figure.add_axes((0.07, 0.14, 0.8, 0.52), sharex=wave_axis)
    colorbar_axis = figure.add_axes((0.89, 0.14, 0.02, 0.52))
    wave_axis.tick_params(labelbottom=False)
    wave_axis.fill_between(times, overview.minimum, overview.maximum, color="#3b6ea8", linewidth=0.5)
    peak = max(1e-3, float(np.abs(np.concatenate([overview.minimum, overview.maximum])).max()))
    wave_axis.set_ylim(-peak * 1.05, peak * 1.05)
    wave_axis.set_xlim(0.0, duration)
    wave_axis.set_title(title, loc="left", fontsize=10)
    wave_axis.set_yticks([])
    image = spectrum_axis.imshow(
        _pool_rows(overview.spectrum_db, IMAGE_ROWS),
        origin="lower",
        aspect="auto",
        cmap="magma",
        vmin=top - DYNAMIC_RANGE_DB,
        vmax=top,
        extent=(0.0, duration, 0.0, overview.sampling_rate / 2000),
        interpolation="nearest",
    )
    spectrum_axis.set_ylabel("kHz")
    spectrum_axis.set_xlabel("time (s)")
    figure.colorbar(image, cax=colorbar_axis, label="dB")
    path = Path(path)
    with atomic_output(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png")
    return path


def _pool_rows(spectrum_db: np.ndarray, rows: int) -> np.ndarray:
    """At most ``rows`` frequency rows (each the mean power of a band of bins): the image has fewer
    pixels than a 2048-point FFT has bins, and drawing them all is what makes the figure slow."""
    factor = math.ceil(spectrum_db.shape[0] / rows)
    if factor <= 1:
        return spectrum_db
    usable = spectrum_db.shape[0] // factor * factor
    power = 10 ** (spectrum_db[:usable] / 10)
    pooled = power.reshape(usable // factor, factor, -1).mean(axis=1)
    return 10 * np.log10(np.maximum(pooled, 1e-20))


def draw_result(result: SeparationResult, mixture_path: str | os.PathLike[str]) -> None:
    """Draw the mixture and every stem (one colour scale for all) into the result's folder."""
    mixture = overview_of_file(mixture_path)
    stems = [overview_of_file(stem.path, result.length) for stem in result.stems]
    top = max(float(item.spectrum_db.max()) for item in (mixture, *stems))
    result.mixture_image = plot_overview(mixture, "mixture", result.folder / "mixture.png", top)
    for stem, overview in zip(result.stems, stems, strict=True):
        stem.image = plot_overview(overview, stem.label, result.folder / f"{stem.label}.png", top)


# -- the bundled example -----------------------------------------------------------------------


def bundled_example() -> tuple[Path, dict[str, Any]] | None:
    """The bundled example mixture and its facts (reference SI-SNRi...), or None when not installed."""
    from ..bundled import example_mixture

    try:
        example = example_mixture()
    except FileNotFoundError:
        return None
    return example.mixture, example.info


def example_caption(info: dict[str, Any]) -> str:
    """What the page says under the clickable example."""
    parts = ["The bundled example: a 2-speaker mixture"]
    if info.get("seconds") and info.get("sampling_rate"):
        parts[0] += f" ({info['seconds']:g} s, {int(info['sampling_rate']) // 1000} kHz)"
    if info.get("description"):
        parts.append(str(info["description"]))
    if info.get("si_snri_db") is not None:
        parts.append(
            f"reference SI-SNRi with the bundled model: **{float(info['si_snri_db']):.2f} dB** "
            f"(mixture {float(info.get('si_snr_mixture_db', 0.0)):.2f} dB → stems "
            f"{float(info.get('si_snr_stems_db', 0.0)):.2f} dB)"
        )
    return "; ".join(parts) + "."


def score_if_example(mixture_path: str | os.PathLike[str], result: SeparationResult) -> str | None:
    """When the input is the bundled example mixture (same bytes), its SI-SNRi against the bundled
    reference speakers, next to the reference figure; else None."""
    from ..bundled import example_mixture

    try:
        example = example_mixture()
    except FileNotFoundError:
        return None
    candidate = Path(mixture_path)
    if candidate.stat().st_size != example.mixture.stat().st_size:
        return None
    if candidate.read_bytes() != example.mixture.read_bytes():
        return None
    if len(result.stems) != len(example.references):
        return None
    import soundfile

    from ..demo import score_against_references

    mixture, _ = soundfile.read(example.mixture, dtype="float32", always_2d=True)
    references = np.stack(
        [soundfile.read(p, dtype="float32", always_2d=True)[0].T for p in example.references]
    )
    estimates = np.stack([soundfile.read(s.path, dtype="float32", always_2d=True)[0].T for s in result.stems])
    if estimates.shape != references.shape:
        return None
    _, _, improvement = score_against_references(references, estimates, mixture.T)
    reference = example.info.get("si_snri_db")
    text = f"SI-SNRi of these stems against the example's reference speakers: **{improvement:.2f} dB**"
    if reference is not None:
        text += f" (reference for the bundled model: {float(reference):.2f} dB)"
    return text


# -- model cards -------------------------------------------------------------------------------

_FRONT_MATTER = re.compile(r"\A---\s*\n.*?\n---\s*\n", re.DOTALL)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_RELATIVE_IMAGE = re.compile(r"!\[([^\]]*)\]\((?!https?://)([^)]*)\)")


def card_text(readme: str) -> str:
    """A model card's README.md for the page: without its YAML header, and relative images (files
    of the model folder the page cannot serve) replaced by their caption."""
    text = _FRONT_MATTER.sub("", readme, count=1)
    return _RELATIVE_IMAGE.sub(lambda match: f"*(figure: {match.group(1) or match.group(2)})*", text).strip()


def model_card(model_id: str, config: Any = None) -> str:
    """Markdown for the side panel: the model folder's README.md; for a Hub id (``org/name``) whose
    model loaded (``config`` given), the repo's README.md (downloaded like the weights were, or
    from the cache offline); else a summary of ``config``."""
    folder = Path(model_id)
    readme: Path | None = folder / "README.md" if folder.is_dir() else None
    if readme is None and config is not None:
        name_or_path = str(getattr(config, "_name_or_path", "") or "")
        if name_or_path and Path(name_or_path).is_dir():
            readme = Path(name_or_path) / "README.md"
    if readme is None and config is not None and _HUB_ID.fullmatch(model_id):
        with contextlib.suppress(Exception):  # no card in the repo, hub unreachable: the summary below
            from huggingface_hub import hf_hub_download

            readme = Path(hf_hub_download(model_id, "README.md"))
    if readme is not None and readme.is_file():
        return card_text(readme.read_text(encoding="utf-8", errors="replace"))
    if config is None:
        return f"No model card found for `{model_id}`."
    return config_summary(model_id, config)


def config_summary(model_id: str, config: Any) -> str:
    """The facts a config tells about a model that comes without a card."""
    names = ", ".join(f"`{name}`" for name in getattr(config, "source_names", []) or [])
    lines = [
        f"# {model_id}",
        "",
        "This model has no model card; from its configuration:",
        "",
        f"- architecture: `{getattr(config, 'model_type', 'unknown')}`",
        f"- sampling rate: {getattr(config, 'sampling_rate', '?')} Hz, "
        f"{getattr(config, 'audio_channels', '?')} channel(s)",
        f"- sources: {names or 'unknown'}",
    ]
    return "\n".join(lines)


# -- result folders ----------------------------------------------------------------------------


class ResultFolders:
    """One fresh folder per request under ``root``; those older than ``keep_seconds`` are removed
    when a new one is made (a long-running Space must not fill its disk)."""

    def __init__(
        self, root: str | os.PathLike[str] | None = None, keep_seconds: float = KEEP_RESULTS_SECONDS
    ):
        self.root = Path(root) if root is not None else Path(tempfile.gettempdir()) / "demixers-web"
        self.keep_seconds = keep_seconds

    def new(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        self.prune()
        folder = self.root / f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        return folder

    def prune(self) -> list[Path]:
        removed = []
        deadline = time.time() - self.keep_seconds
        for entry in self.root.iterdir():
            with contextlib.suppress(OSError):
                if entry.is_dir() and not entry.is_symlink() and entry.stat().st_mtime < deadline:
                    shutil.rmtree(entry)
                    removed.append(entry)
        return removed
