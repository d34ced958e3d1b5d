"""The RoFormer inference fast path (eval, no autograd) against the plain blocks (the training path)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from demixers.modeling.bs_roformer import modeling_bs_roformer
from demixers.modeling.bs_roformer.modeling_bs_roformer import BSRoformerForSourceSeparation
from demixers.modeling.mel_band_roformer import modeling_mel_band_roformer
from demixers.modeling.mel_band_roformer.modeling_mel_band_roformer import MelBandRoformerForSourceSeparation
from tests.modeling.bs_roformer.tiny_configs import tiny_bs_roformer_config
from tests.modeling.mel_band_roformer.tiny_configs import tiny_mel_band_roformer_config
from tests.modeling.parity_utils import perturb_parameters

FAMILIES = {
    # every optional path on: linear transformer, dense skips, value residual (BS), 2 blocks deep
    "bs_roformer": (modeling_bs_roformer, BSRoformerForSourceSeparation, tiny_bs_roformer_config),
    "mel_band_roformer": (
        modeling_mel_band_roformer,
        MelBandRoformerForSourceSeparation,
        tiny_mel_band_roformer_config,
    ),
}
CONFIG_VARIANTS: dict[str, dict[str, Any]] = {
    "all_paths": {"time_transformer_depth": 2, "freq_transformer_depth": 2},
    "released_like": {"linear_transformer_depth": 0, "skip_connection": False, "heads": 3},
}


def perturbed_model(family: str, **overrides: Any) -> tuple[Any, torch.nn.Module]:
    module, model_class, make_config = FAMILIES[family]
    torch.manual_seed(0)
    model = model_class(make_config(**overrides)).eval()
    # large perturbations: every weight (gains, gates, biases, rotary-free paths) changes the output
    return module, perturb_parameters(model, std=0.2, seed=1)


def stereo_mixture(batch: int, length: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    time = torch.arange(length) / 44100
    tones = torch.sin(2 * torch.pi * torch.tensor([[220.0], [330.0]]) * time)
    return 0.3 * tones + 0.1 * torch.randn(batch, 2, length, generator=generator)


@pytest.mark.parametrize("variant", sorted(CONFIG_VARIANTS))
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("block_rows", [256, 10])  # one row block per 64 frames; a partial last block
def test_fast_path_equals_plain_blocks(
    family: str, variant: str, block_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, model = perturbed_model(family, **CONFIG_VARIANTS[variant])
    monkeypatch.setattr(module, "FAST_PATH_BLOCK_ROWS", block_rows)
    mixture = stereo_mixture(batch=2, length=4410 + 37)  # 140 frames, odd
    with torch.enable_grad():  # eval with autograd: the plain blocks
        plain = model(input_values=mixture).audio_values.detach()
    with torch.no_grad():
        fast = model(input_values=mixture).audio_values
    with torch.inference_mode():
        fast_inference = model(input_values=mixture).audio_values
    scale = plain.abs().max()
    assert scale > 1e-3
    assert float((fast - plain).abs().max() / scale) <= 1e-6
    assert float((fast_inference - plain).abs().max() / scale) <= 1e-6


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_fast_path_is_taken_in_eval_without_grad_only(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    module, model = perturbed_model(family)
    calls: list[bool] = []
    original = module.fast_axial_layers

    def spy(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls.append(True)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "fast_axial_layers", spy)
    estimator_class = type(model.mask_estimators[0])
    estimator_calls: list[bool] = []
    original_estimator = estimator_class.inference_forward

    def estimator_spy(self: torch.nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        estimator_calls.append(True)
        return original_estimator(self, hidden_states)

    monkeypatch.setattr(estimator_class, "inference_forward", estimator_spy)
    stems = model.config.num_stems
    mixture = stereo_mixture(batch=1, length=2000)
    with torch.no_grad():
        model(input_values=mixture)
    assert (len(calls), len(estimator_calls)) == (1, stems)
    with torch.inference_mode():
        model(input_values=mixture)
    assert (len(calls), len(estimator_calls)) == (2, 2 * stems)
    model(input_values=mixture)  # autograd on: the plain blocks (gradients unchanged)
    model.train()
    with torch.no_grad():  # training mode: dropout, the plain blocks
        model(input_values=mixture)
    assert (len(calls), len(estimator_calls)) == (2, 2 * stems)
    model.eval().double()
    with torch.no_grad():  # float64: the plain blocks (the fast path rotates as complex64)
        model(input_values=mixture.double())
    assert len(calls) == 2
