"""Learning-rate schedules, EMA, and trainer behaviours that need no real model (toy model runs)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from demixers.trainers.losses import SeparationLoss, compute_loss
from demixers.trainers.optim import EMA, LRSchedule
from demixers.trainers.trainer import Trainer
from tests.trainers.conftest import read_jsonl, recipe

# unordered speakers, as the toy was judged by its names before every config declared it
TOY = {
    "type": "demixers_toy_splitter",
    "config": {"sampling_rate": 8000, "source_names": ["s1", "s2"], "permutation_invariant": True},
}


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_warmup_then_cosine_to_the_floor() -> None:
    schedule = LRSchedule(_optimizer(), "cosine", 1e-3, total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert schedule.lr_at(0) == pytest.approx(1e-4)
    assert schedule.lr_at(9) == pytest.approx(1e-3)
    assert schedule.lr_at(10) == pytest.approx(1e-3)
    assert schedule.lr_at(60) == pytest.approx(1e-4 + 0.9e-3 * 0.5)
    assert schedule.lr_at(110) == pytest.approx(1e-4)
    linear = LRSchedule(_optimizer(), "linear", 1.0, total_steps=10)
    assert [round(linear.lr_at(s), 6) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]


def test_plateau_halves_after_patience_without_improvement() -> None:
    optimizer = _optimizer()
    schedule = LRSchedule(optimizer, "plateau", 1e-3, total_steps=100, plateau_factor=0.5, plateau_patience=2)
    reduced = [schedule.observe(value) for value in (1.0, 2.0, 2.0, 1.5, 1.9, 3.0, 2.0, 2.0, 2.0)]
    assert reduced == [False, False, False, False, True, False, False, False, True]
    assert schedule.apply(50) == pytest.approx(2.5e-4) and optimizer.param_groups[0]["lr"] == pytest.approx(
        2.5e-4
    )
    # the state (checkpointed) restores the same schedule
    other = LRSchedule(_optimizer(), "plateau", 1e-3, total_steps=100, plateau_patience=2)
    other.load_state_dict(schedule.state_dict())
    assert other.lr_at(50) == schedule.lr_at(50) and other.plateau_best == 3.0
    minimise = LRSchedule(_optimizer(), "plateau", 1.0, total_steps=1, plateau_patience=0, plateau_mode="min")
    assert [minimise.observe(v) for v in (5.0, 4.0, 4.5)] == [False, False, True]
    assert not minimise.observe(math.nan)


def test_ema_average_and_swap() -> None:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5, warmup=False)
    with torch.no_grad():
        model.weight.fill_(4.0)
    ema.update(model)  # 0.5 * 0 + 0.5 * 4
    ema.update(model)  # 0.5 * 2 + 0.5 * 4
    assert torch.equal(ema.shadow["weight"], torch.full((1, 2), 3.0))
    with ema.applied(model):
        assert torch.equal(model.weight, torch.full((1, 2), 3.0))
    assert torch.equal(model.weight, torch.full((1, 2), 4.0))
    restored = EMA(model, decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert torch.equal(restored.shadow["weight"], ema.shadow["weight"]) and restored.num_updates == 2


def toy(corpus: Path, tmp_path: Path, **training) -> dict:
    return recipe(
        corpus,
        tmp_path,
        model=TOY,
        training={"loss": "l1", "learning_rate": 0.05, **training},
        data={"max_eval_samples": 2},
    )


def test_gradient_accumulation_equals_the_bigger_batch(speech_corpus: Path, tmp_path: Path) -> None:
    Trainer(toy(speech_corpus, tmp_path, batch_size=4, max_steps=4, eval_steps=100), tmp_path / "big").train()
    Trainer(
        toy(
            speech_corpus, tmp_path, batch_size=2, gradient_accumulation_steps=2, max_steps=4, eval_steps=100
        ),
        tmp_path / "accumulated",
    ).train()
    big = load_file(tmp_path / "big" / "last" / "model.safetensors")["gain_logits"]
    accumulated = load_file(tmp_path / "accumulated" / "last" / "model.safetensors")["gain_logits"]
    torch.testing.assert_close(accumulated, big, rtol=1e-5, atol=1e-7)
    assert not torch.equal(big, torch.linspace(-0.5, 0.5, 2).view(2, 1))  # it did train
    losses = [r["loss"] for r in read_jsonl(tmp_path / "big" / "train_log.jsonl")]
    accumulated_losses = [r["loss"] for r in read_jsonl(tmp_path / "accumulated" / "train_log.jsonl")]
    assert accumulated_losses == pytest.approx(losses, rel=1e-5)


def test_bf16_ema_and_cosine_run(speech_corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = toy(
        speech_corpus,
        tmp_path,
        max_steps=4,
        eval_steps=4,
        mixed_precision="bf16",
        ema_decay=0.5,
        scheduler="cosine",
        warmup_steps=2,
    )
    Trainer(config, out).train()
    lrs = [r["lr"] for r in read_jsonl(out / "train_log.jsonl")]
    assert lrs == pytest.approx([0.025, 0.05, 0.05, 0.025])
    raw = load_file(out / "checkpoint-00000004" / "model.safetensors")["gain_logits"]
    averaged = load_file(out / "checkpoint-00000004" / "model" / "model.safetensors")["gain_logits"]
    assert not torch.equal(raw, averaged)  # the exported model holds the EMA weights
    assert torch.isfinite(averaged).all()


class Frozen:
    """Zero loss gradient: the weights never change, so validation never improves."""

    def __call__(self, estimates, references, mask) -> SeparationLoss:
        result = compute_loss("l1", estimates, references, mask)
        return SeparationLoss(result.loss * 0.0, result.per_source, result.permutation)


def test_early_stopping_after_patience_validations(speech_corpus: Path, tmp_path: Path) -> None:
    config = toy(
        speech_corpus, tmp_path, max_steps=20, eval_steps=1, early_stopping_patience=2, metric="loss"
    )
    summary = Trainer(config, tmp_path / "run", loss_fn=Frozen()).train()
    assert summary["stopped_early"] and summary["global_step"] == 3 and summary["best_step"] == 1
    assert [e["improved"] for e in read_jsonl(tmp_path / "run" / "eval_log.jsonl")] == [True, False, False]
