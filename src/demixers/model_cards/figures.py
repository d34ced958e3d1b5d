"""Spectrogram figures for model cards: an example mixture and the stems separated from it.

Drawn with matplotlib's object-oriented API on an Agg canvas (no pyplot, no display, no global
backend change) and written atomically as PNG.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..utils.files import atomic_output

__all__ = ["plot_separation", "render_separation_figure"]


def _mono(audio: Any, name: str) -> np.ndarray:
    array = np.asarray(audio, dtype=np.float64)
    if array.ndim == 2:
        array = array.mean(axis=0)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name}: expected (time,) or (channels, time) audio, got shape {np.shape(audio)}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite samples")
    return array


def _spectrogram_db(signal: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Magnitude STFT in dB (Hann window), ``(frequencies, frames)``."""
    if signal.size < n_fft:
        signal = np.pad(signal, (0, n_fft - signal.size))
    frames = 1 + (signal.size - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.abs(np.fft.rfft(signal[index] * np.hanning(n_fft), axis=1)).T
    return 20 * np.log10(np.maximum(spectrum, 1e-10))


def plot_separation(
    mixture: Any,
    stems: Mapping[str, Any] | Sequence[tuple[str, Any]],
    sampling_rate: int,
    path: str | os.PathLike,
    *,
    max_seconds: float | None = 10.0,
    title: str | None = None,
    dynamic_range_db: float = 80.0,
) -> Path:
    """Write a PNG with the spectrogram of ``mixture`` above one spectrogram per stem.

    ``mixture`` and each stem are ``(time,)`` or ``(channels, time)`` (channels are averaged);
    ``stems`` maps labels to audio (or is a list of ``(label, audio)``). All panels share one colour
    scale, so a quiet stem looks quiet. Only the first ``max_seconds`` are drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if sampling_rate <= 0:
        raise ValueError(f"sampling_rate must be positive, got {sampling_rate}")
    items = list(stems.items()) if isinstance(stems, Mapping) else list(stems)
    if not items:
        raise ValueError("no stems to plot")
    panels = [("mixture", _mono(mixture, "mixture"))] + [
        (str(label), _mono(audio, str(label))) for label, audio in items
    ]
    limit = None if max_seconds is None else max(1, int(max_seconds * sampling_rate))
    panels = [(label, signal[:limit]) for label, signal in panels]
    n_fft = 512 if sampling_rate <= 16000 else 2048
    hop = n_fft // 4
    spectra = [(label, _spectrogram_db(signal, n_fft, hop)) for label, signal in panels]
    top = max(float(spectrum.max()) for _, spectrum in spectra)

    figure = Figure(figsize=(10, 1.9 * len(spectra) + 0.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(spectra), 1, sharex=True, squeeze=False)[:, 0]
    image = None
    for axis, (label, spectrum) in zip(axes, spectra, strict=True):
        duration = spectrum.shape[1] * hop / sampling_rate
        image = axis.imshow(
            spectrum,
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=top - dynamic_range_db,
            vmax=top,
            extent=(0.0, duration, 0.0, sampling_rate / 2000),
            interpolation="nearest",
        )
        axis.set_ylabel("kHz")
        axis.set_title(label, loc="left", fontsize=10)
    axes[-1].set_xlabel("time (s)")
    if title:
        figure.suptitle(title)
    figure.colorbar(image, ax=list(axes), label="dB", shrink=0.8)

    with atomic_output(path, suffix=".png") as temporary:
        figure.savefig(temporary, format="png")
    return Path(path)


def render_separation_figure(
    separate_fn: Callable[[np.ndarray, int], Any],
    mixture: Any,
    sampling_rate: int,
    source_names: Sequence[str],
    path: str | os.PathLike,
    **kwargs: Any,
) -> Path:
    """Separate ``mixture`` with ``separate_fn(mixture, sampling_rate) -> (sources, channels, time)``
    and plot it with `plot_separation`."""
    stems = np.asarray(separate_fn(np.asarray(mixture, dtype=np.float32), sampling_rate))
    if stems.shape[0] != len(source_names):
        raise ValueError(f"separate_fn returned {stems.shape[0]} stems for {len(source_names)} source names")
    return plot_separation(
        mixture, list(zip(source_names, stems, strict=True)), sampling_rate, path, **kwargs
    )
