"""The pipeline's chunk engine with shifts (apply_model handed the same offsets) and bags."""

from __future__ import annotations

import pytest
import torch

from demixers.modeling.demucs import DemucsBagConfig, DemucsBagForSourceSeparation
from tests.modeling.demucs.test_apply_demucs import (
    RATE,
    ServedRandom,
    _compare,
    _tiny_htdemucs,
    engine_offsets,
    engine_separate,
)

pytest.importorskip("demucs")
import demucs.apply
from demucs.apply import BagOfModels, apply_model


@pytest.fixture(scope="module")
def mix() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return 0.1 * torch.randn(1, 2, 30 * RATE, generator=generator)


def test_htdemucs_chunks_with_a_shift_and_transition_power(mix, monkeypatch) -> None:
    reference, ours = _tiny_htdemucs(1)
    ours.config.chunk_transition_power = 2.0  # a config may sharpen its cross-fade
    served = ServedRandom(engine_offsets(ours, 1, 1234))
    monkeypatch.setattr(demucs.apply, "random", served)
    with torch.no_grad():
        expected = apply_model(reference, mix, shifts=1, overlap=0.25, transition_power=2.0, segment=0.4)
    actual = engine_separate(ours, mix, segment=0.4, overlap=0.25, shifts=1, seed=1234, batch_size=8)
    _compare(
        actual, expected, f"htdemucs 30 s, shifts=1 offsets={served.offsets}, segment 0.4, transition_power 2"
    )


def test_bag_chunks_with_shifts_and_normalisation(mix, monkeypatch) -> None:
    (ref_a, ours_a), (ref_b, ours_b) = _tiny_htdemucs(3), _tiny_htdemucs(4)
    weights = [[1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 1.0, 0.5]]
    bag_ref = BagOfModels([ref_a, ref_b], weights=weights)
    config = DemucsBagConfig(
        models=[ours_a.config.architecture_dict(), ours_b.config.architecture_dict()], weights=weights
    )
    bag = DemucsBagForSourceSeparation(config).eval()
    bag.models[0].load_state_dict(ours_a.state_dict())
    bag.models[1].load_state_dict(ours_b.state_dict())
    track = mix[..., : 6 * RATE] + 0.05
    served = ServedRandom(engine_offsets(bag, 2, 99))
    assert len(served.offsets) == 4  # two shifts per member, member by member
    monkeypatch.setattr(demucs.apply, "random", served)
    # the original separation entry point: standardise by the mono mix, apply, scale back
    reference_mono = track[0].mean(0)
    mean, std = reference_mono.mean(), reference_mono.std() + 1e-8
    with torch.no_grad():
        expected = apply_model(bag_ref, (track - mean) / std, shifts=2) * std + mean
    actual = engine_separate(bag, track, normalize=True, shifts=2, seed=99, batch_size=4)
    _compare(actual, expected, f"bag of two, 6 s, shifts=2 offsets={served.offsets}, normalised")
