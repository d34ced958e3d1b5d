"""The one chunk engine (`demixers.pipelines.chunking`, through the pipeline) with the Demucs
chunking policy against the original ``demucs.apply.apply_model``, on 30 s of audio.

``modeling/demucs/apply_demucs.py`` (a second engine) is gone: these tests now hold the pipeline's
engine to apply_model's weighting, context padding and shift offsets. Shared helpers for
``test_apply_demucs_shifts.py`` live here too.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from transformers import pipeline

from demixers.modeling.demucs import (
    DemucsConfig,
    DemucsForSourceSeparation,
    HTDemucsConfig,
    HTDemucsForSourceSeparation,
)
from demixers.pipelines.chunking import _InputWindow, resolve_chunk_settings, shift_offsets
from tests.modeling.demucs.reference_export import max_diffs

pytest.importorskip("demucs")
from demucs.apply import apply_model
from demucs.demucs import Demucs
from demucs.htdemucs import HTDemucs

SOURCES = ["drums", "bass", "other", "vocals"]
RATE = 44100
TOLERANCE = 1e-5


def _tiny_htdemucs(seed: int):
    torch.manual_seed(seed)
    # depth 3 keeps the transformer short: 2 * length / 4**3 spectral tokens (as htdemucs: depth 4)
    kwargs = dict(channels=8, depth=3, nfft=512, t_layers=2, t_heads=2, dconv_mode=3, bottom_channels=0)
    reference = HTDemucs(SOURCES, segment=Fraction(1, 2), **kwargs).eval()
    ours = HTDemucsForSourceSeparation(HTDemucsConfig(segment=0.5, **kwargs)).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


def _tiny_demucs(seed: int):
    torch.manual_seed(seed)
    kwargs = dict(channels=4, depth=3, lstm_layers=1, context=1)
    reference = Demucs(
        SOURCES, gelu=False, norm_starts=3, dconv_mode=0, normalize=False, segment=1, **kwargs
    ).eval()
    ours = DemucsForSourceSeparation(
        DemucsConfig(gelu=False, norm_starts=3, dconv_mode=0, normalize=False, segment=1.0, **kwargs)
    ).eval()
    ours.load_state_dict(reference.state_dict())
    return reference, ours


@pytest.fixture(scope="module")
def mix() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(1, 2, 30 * RATE, generator=generator)


class ServedRandom:
    """Stands for the ``random`` module inside ``demucs.apply``: serves the shift offsets our engine
    draws (`engine_offsets`), so both sides use the same ones."""

    def __init__(self, offsets: list[int]) -> None:
        self.offsets = list(offsets)
        self._pending = list(offsets)

    def randint(self, low: int, high: int) -> int:
        value = self._pending.pop(0)
        assert low <= value <= high
        return value


def engine_offsets(model, shifts: int, seed: int) -> list[int]:
    """The shift offsets the pipeline draws for ``model``, member by member, shift by shift."""
    config = model.config
    members = len(getattr(config, "weights", [0]))
    drawn = shift_offsets(
        config.sampling_rate, resolve_chunk_settings(config, shifts=shifts, seed=seed), members
    )
    return [offset for member in drawn for offset in member]


def engine_separate(model, mix: torch.Tensor, normalize: bool = False, **options) -> torch.Tensor:
    """``mix`` ``(1, channels, time)`` through the pipeline's chunk engine, as
    ``(1, sources, channels, time)``. ``normalize=False`` switches off the track standardisation
    (apply_model alone does none)."""
    model.config.normalize_input = normalize
    separator = pipeline("audio-source-separation", model=model)
    stems = separator(mix[0].numpy(), sampling_rate=model.config.sampling_rate, **options)
    return torch.from_numpy(np.stack([stem["audio"] for stem in stems]))[None]


def _compare(actual: torch.Tensor, expected: torch.Tensor, label: str) -> None:
    diff, relative = max_diffs(actual, expected)
    print(f"{label}: max abs diff {diff:.3e}, relative {relative:.3e}")
    assert actual.shape == expected.shape
    assert relative <= TOLERANCE, (diff, relative)


def test_htdemucs_chunks_without_shifts(mix) -> None:
    reference, ours = _tiny_htdemucs(0)
    with torch.no_grad():
        expected = apply_model(reference, mix, shifts=0, overlap=0.25, transition_power=1.0)
    actual = engine_separate(ours, mix, overlap=0.25, shifts=0, batch_size=8)
    _compare(actual, expected, "htdemucs 30 s, shifts=0")


def test_demucs_chunks_use_the_neighbouring_audio_as_context(mix) -> None:
    reference, ours = _tiny_demucs(2)
    short = mix[..., : 4 * RATE]
    with torch.no_grad():
        expected = apply_model(reference, short, shifts=0, overlap=0.25)
    actual = engine_separate(ours, short, shifts=0, overlap=0.25)
    _compare(actual, expected, "demucs 4 s, shifts=0")


def test_seed_makes_shifts_reproducible(mix) -> None:
    _, ours = _tiny_htdemucs(5)
    track = mix[..., : 3 * RATE]
    first = engine_separate(ours, track, shifts=1, seed=7)
    second = engine_separate(ours, track, shifts=1, seed=7)
    other = engine_separate(ours, track, shifts=1, seed=8)
    assert torch.equal(first, second)
    assert engine_offsets(ours, 1, 7) != engine_offsets(ours, 1, 8)
    assert float((first - other).abs().max()) > 1e-6


def test_silence_gives_finite_sources() -> None:
    _, ours = _tiny_htdemucs(7)
    out = engine_separate(ours, torch.zeros(1, 2, RATE), normalize=True, shifts=1)
    assert out.shape == (1, 4, 2, RATE) and torch.isfinite(out).all()


def test_bad_policy_and_segment_raise(mix) -> None:
    _, ours = _tiny_htdemucs(6)
    track = mix[..., :RATE]
    ours.config.chunk_transition_power = 0.5
    with pytest.raises(ValueError, match="chunk_transition_power"):
        engine_separate(ours, track)
    ours.config.chunk_transition_power = 1.0
    ours.config.chunk_window = "hann"
    with pytest.raises(ValueError, match="chunk_window"):
        engine_separate(ours, track)
    ours.config.chunk_window = "triangle"
    with pytest.raises(ValueError, match="longer than"):
        engine_separate(ours, track, segment=0.6)  # HTDemucs cannot exceed its trained segment


def test_input_window_reads_zeros_outside_the_input() -> None:
    """The engine delays the track for a shift, and pads a chunk with its context, by reading
    outside the input instead of copying it with zeros around."""
    base = np.arange(1.0, 11.0, dtype=np.float32)[None]
    window = _InputWindow([base[:, :4], base[:, 4:]], 1, 10)
    assert np.array_equal(window.read(-3, 5), [[0.0, 0.0, 0.0, 1.0, 2.0]])
    assert np.array_equal(window.read(-9, 3), np.zeros((1, 3)))  # entirely before the input
    assert np.array_equal(window.read(7, 5), [[8.0, 9.0, 10.0, 0.0, 0.0]])
    assert np.array_equal(window.read(12, 2), np.zeros((1, 2)))  # entirely after it


def test_shift_longer_than_the_segment_matches_apply_model(monkeypatch) -> None:
    import demucs.apply

    reference, ours = _tiny_demucs(2)
    mix = 0.1 * torch.randn(1, 2, RATE, generator=torch.Generator().manual_seed(5))
    served = ServedRandom(engine_offsets(ours, 2, 21))
    monkeypatch.setattr(demucs.apply, "random", served)
    with torch.no_grad():  # 0.1 s segments, shifts of up to 0.5 s: whole windows lie in the delay
        expected = apply_model(reference, mix, shifts=2, overlap=0.25, segment=0.1)
    assert max(0.5 * RATE - offset for offset in served.offsets) > 0.1 * RATE
    actual = engine_separate(ours, mix, segment=0.1, overlap=0.25, shifts=2, seed=21)
    _compare(actual, expected, f"demucs 1 s, 0.1 s segments, shifts=2 offsets={served.offsets}")
