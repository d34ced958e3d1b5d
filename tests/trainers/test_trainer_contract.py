"""The trainer relies on the model contract only: permutation invariance from the config, one call
signature for every family, and no global torch state left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from demixers.modeling.mossformer.modeling_mossformer import MossFormerForSourceSeparation
from demixers.trainers.losses import SeparationLoss
from demixers.trainers.trainer import Trainer
from tests.trainers.conftest import recipe


@pytest.mark.parametrize("previous", [(False, False), (False, True), (True, False)])
def test_train_restores_the_deterministic_algorithms_setting(
    speech_corpus: Path, tmp_path: Path, previous: tuple[bool, bool]
) -> None:
    config = recipe(
        speech_corpus,
        tmp_path,
        data={"samples_per_epoch": 8, "max_eval_samples": 1},
        training={"max_steps": 1, "deterministic": True},
    )
    torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
    try:
        seen: list[bool] = []

        def spying_loss(estimates: torch.Tensor, references: torch.Tensor, mask: Any) -> SeparationLoss:
            seen.append(
                torch.are_deterministic_algorithms_enabled()
                and torch.is_deterministic_algorithms_warn_only_enabled()
            )
            return SeparationLoss(loss=(estimates - references).abs().mean(), per_source=None)

        Trainer(config, tmp_path / "ok", loss_fn=spying_loss).train()
        assert seen and all(seen)  # the run itself used the recipe's setting
        assert torch.are_deterministic_algorithms_enabled() == previous[0]
        assert torch.is_deterministic_algorithms_warn_only_enabled() == previous[1]

        def failing_loss(estimates: torch.Tensor, references: torch.Tensor, mask: Any) -> SeparationLoss:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            Trainer(config, tmp_path / "fails", loss_fn=failing_loss).train()
        assert torch.are_deterministic_algorithms_enabled() == previous[0]
        assert torch.is_deterministic_algorithms_warn_only_enabled() == previous[1]
    finally:
        torch.use_deterministic_algorithms(False)


def test_every_forward_call_passes_padding_mask_and_return_dict(
    speech_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    original = MossFormerForSourceSeparation.forward

    def recording_forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        calls.append({"args": len(args), **{k: v for k, v in kwargs.items() if k != "input_values"}})
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MossFormerForSourceSeparation, "forward", recording_forward)
    config = recipe(
        speech_corpus,
        tmp_path,
        data={"samples_per_epoch": 8, "max_eval_samples": 2, "eval_max_seconds": 2.0},
        training={"max_steps": 2, "eval_steps": 2, "eval_batch_size": 2},
    )
    Trainer(config, tmp_path / "run").train()
    assert len(calls) >= 3  # training steps and validation batches
    for call in calls:
        assert call["args"] == 0 and call["return_dict"] is True, call
        assert "padding_mask" in call, call
    # validation pads utterances of different lengths: the mask reaches the model there
    assert any(isinstance(call["padding_mask"], torch.Tensor) for call in calls)


@pytest.mark.parametrize(
    ("declared", "loss", "metric"), [(None, "pit_si_snr", "si_snri"), (False, "l1", "sdr")]
)
def test_loss_and_metric_follow_config_permutation_invariant(
    speech_corpus: Path, tmp_path: Path, declared: bool | None, loss: str, metric: str
) -> None:
    model_config = {} if declared is None else {"permutation_invariant": declared}
    config = recipe(
        speech_corpus,
        tmp_path,
        model={"config": model_config},
        training={"loss": "auto", "metric": "auto"},
    )
    trainer = Trainer(config, tmp_path / "run")
    trainer.setup()
    assert trainer.speech is (declared is None)
    assert (trainer.loss_name, trainer.metric_name) == (loss, metric)
