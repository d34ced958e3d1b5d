"""`separate_with_chunks` against the original ``demucs.apply.apply_model`` on 30 s of audio.

Shared helpers for ``test_apply_demucs_shifts.py`` live here too.
"""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
import torch

from demixers.modeling.demucs import (
    DemucsConfig,
    DemucsForSourceSeparation,
    HTDemucsConfig,
    HTDemucsForSourceSeparation,
    separate_with_chunks,
)
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


class RecordingRandom:
    """Stands for the ``random`` module inside ``demucs.apply``: serves its shift offsets from a
    seeded generator and records them, so the same offsets can be handed to our function (the
    reference's forward also draws from the global ``random``, so offsets cannot be precomputed)."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self.offsets: list[int] = []

    def randint(self, low: int, high: int) -> int:
        value = self._random.randint(low, high)
        self.offsets.append(value)
        return value


def _compare(actual: torch.Tensor, expected: torch.Tensor, label: str) -> None:
    diff, relative = max_diffs(actual, expected)
    print(f"{label}: max abs diff {diff:.3e}, relative {relative:.3e}")
    assert actual.shape == expected.shape
    assert relative <= TOLERANCE, (diff, relative)


def test_htdemucs_chunks_without_shifts(mix) -> None:
    reference, ours = _tiny_htdemucs(0)
    with torch.no_grad():
        expected = apply_model(reference, mix, shifts=0, overlap=0.25, transition_power=1.0)
    actual = separate_with_chunks(ours, mix, overlap=0.25, shifts=0, normalize=False, batch_size=8)
    _compare(actual, expected, "htdemucs 30 s, shifts=0")


def test_demucs_chunks_use_the_neighbouring_audio_as_context(mix) -> None:
    reference, ours = _tiny_demucs(2)
    short = mix[..., : 4 * RATE]
    with torch.no_grad():
        expected = apply_model(reference, short, shifts=0, overlap=0.25)
    actual = separate_with_chunks(ours, short, shifts=0, overlap=0.25, normalize=False)
    _compare(actual, expected, "demucs 4 s, shifts=0")


def test_generator_makes_shifts_reproducible(mix) -> None:
    _, ours = _tiny_htdemucs(5)
    track = mix[..., : 3 * RATE]
    first = separate_with_chunks(ours, track, shifts=1, generator=torch.Generator().manual_seed(7))
    second = separate_with_chunks(ours, track, shifts=1, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, second)


def test_silence_gives_finite_sources() -> None:
    _, ours = _tiny_htdemucs(7)
    out = separate_with_chunks(ours, torch.zeros(1, 2, RATE), shifts=1)
    assert out.shape == (1, 4, 2, RATE) and torch.isfinite(out).all()


def test_bad_arguments_raise(mix) -> None:
    _, ours = _tiny_htdemucs(6)
    track = mix[..., :RATE]
    with pytest.raises(ValueError, match="transition_power"):
        separate_with_chunks(ours, track, transition_power=0.5)
    with pytest.raises(ValueError, match="channels"):
        separate_with_chunks(ours, track[:, :1])
    with pytest.raises(ValueError, match="longer than"):
        separate_with_chunks(ours, track, segment=0.6)  # HTDemucs cannot exceed its trained segment
    bad = track.clone()
    bad[0, 0, 10] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        separate_with_chunks(ours, bad)
    with pytest.raises(ValueError, match="shift_offsets"):
        separate_with_chunks(ours, track, shifts=2, shift_offsets=[0])
