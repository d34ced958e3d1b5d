"""Mel-Band RoFormer against both references: lucidrains' ``bs-roformer`` and MSST's variant (as shipped
in audio-separator), with perturbed weights and real-sounding stereo input.

Target: max |ours - reference| <= 1e-5 of the reference's output scale.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.modeling.parity_utils import music_batch, relative_max_difference
from tests.modeling.roformer_references import SMALL_MEL_KWARGS, converted_pair, reference_output

TOLERANCE = 1e-5


def _parity(
    layout: str, model_kwargs: dict[str, Any], length: int, batch: int = 2, released: bool = False
) -> float:
    reference, model = converted_pair(layout, "mel_band_roformer", model_kwargs, skip_default_init=released)
    mixture = music_batch(length, 44100, batch=batch)
    expected = reference_output(reference, mixture)
    with torch.no_grad():
        actual = model(input_values=mixture).audio_values
    assert actual.shape[-1] == length
    return relative_max_difference(actual[..., : expected.shape[-1]], expected)


def test_parity_with_msst_small() -> None:
    assert _parity("msst", SMALL_MEL_KWARGS, 32 * 60) <= TOLERANCE


@pytest.mark.parametrize("linear_depth", [1, 0], ids=["linear-transformer", "empty-linear-slot"])
def test_parity_with_lucidrains_small(linear_depth: int) -> None:
    kwargs = {
        **SMALL_MEL_KWARGS,
        "linear_transformer_depth": linear_depth,
        "num_residual_streams": 1,
        "add_value_residual": False,
    }
    assert _parity("lucidrains", kwargs, 32 * 60) <= TOLERANCE


KIMBERLEYJENSEN_VOCALS = {
    "dim": 384,
    "depth": 6,
    "stereo": True,
    "num_stems": 1,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "num_bands": 60,
    "dim_head": 64,
    "heads": 8,
    "sample_rate": 44100,
    "stft_hop_length": 441,
    "mask_estimator_depth": 2,
    "zero_dc": False,  # audio-separator ignores the flag (never zeroes DC)
}


@pytest.mark.slow
def test_parity_with_msst_at_released_size() -> None:
    """KimberleyJensen's vocals architecture (60 mel bands, ~228M parameters) on 10 frames."""
    assert _parity("msst", KIMBERLEYJENSEN_VOCALS, 441 * 9, batch=1, released=True) <= TOLERANCE
