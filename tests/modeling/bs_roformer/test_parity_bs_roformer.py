"""BS-RoFormer against both references: lucidrains' ``bs-roformer`` and MSST's variant (as shipped in
audio-separator), with perturbed weights and real-sounding stereo input.

Target: max |ours - reference| <= 1e-5 of the reference's output scale.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tests.modeling.parity_utils import music_batch, relative_max_difference
from tests.modeling.roformer_references import SMALL_BS_KWARGS, converted_pair, reference_output

TOLERANCE = 1e-5


def _parity(
    layout: str, model_kwargs: dict[str, Any], length: int, batch: int = 2, released: bool = False
) -> float:
    reference, model = converted_pair(layout, "bs_roformer", model_kwargs, skip_default_init=released)
    mixture = music_batch(length, 44100, batch=batch)
    expected = reference_output(reference, mixture)
    with torch.no_grad():
        actual = model(input_values=mixture).audio_values
    assert actual.shape[-1] == length
    # the originals' output may be shorter (lucidrains: hop * (frames - 1)); compare what they give
    return relative_max_difference(actual[..., : expected.shape[-1]], expected)


@pytest.mark.parametrize(
    "extra",
    [{}, {"linear_transformer_depth": 1}, {"mlp_expansion_factor": 2, "mask_estimator_depth": 3}],
    ids=["plain", "linear-transformer", "mlp"],
)
def test_parity_with_msst_small(extra: dict[str, Any]) -> None:
    # 60 hops: the length the originals' STFT reproduces exactly
    assert _parity("msst", {**SMALL_BS_KWARGS, **extra}, 32 * 60) <= TOLERANCE


def test_parity_with_lucidrains_small() -> None:
    """bs-roformer >= 1.0: value residuals in every layer after the first; hyper-connections off."""
    kwargs = {**SMALL_BS_KWARGS, "num_residual_streams": 1}
    assert _parity("lucidrains", kwargs, 32 * 60) <= TOLERANCE


def test_parity_with_msst_mono_odd_length() -> None:
    kwargs = {**SMALL_BS_KWARGS, "stereo": False, "num_stems": 1}
    reference, model = converted_pair("msst", "bs_roformer", kwargs)
    mixture = music_batch(2001, 44100, channels=1, batch=1)
    expected = reference_output(reference, mixture)
    with torch.no_grad():
        actual = model(input_values=mixture).audio_values
    # MSST upstream passes length= to the iSTFT; audio-separator 0.47.1 drops the last partial hop
    assert actual.shape == (1, 1, 1, 2001) and expected.shape == (1, 1, 1, 32 * (2001 // 32))
    assert relative_max_difference(actual[..., : expected.shape[-1]], expected) <= TOLERANCE


VIPERX_EP317 = {
    "dim": 512,
    "depth": 12,
    "stereo": True,
    "num_stems": 1,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 1,
    "dim_head": 64,
    "heads": 8,
    "stft_hop_length": 441,
    "mask_estimator_depth": 2,
    "zero_dc": False,  # audio-separator ignores the flag (never zeroes DC)
}


@pytest.mark.slow
def test_parity_with_msst_at_released_size() -> None:
    """viperx ep_317's architecture (62 bands, ~160M parameters) on 10 frames of stereo music.

    (lucidrains' variant at this size: see the report of issue #18; in the suite only at the small
    size, to keep the slow tests within their time budget.)"""
    assert _parity("msst", VIPERX_EP317, 441 * 9, batch=1, released=True) <= TOLERANCE
