"""Optimizers, the learning-rate schedule and the exponential moving average of the weights.

`LRSchedule` and `EMA` are checkpointable objects (``state_dict`` / ``load_state_dict`` holding only
numbers and tensors): the trainer registers them with ``accelerator.register_for_checkpointing``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch


def build_optimizer(model: torch.nn.Module, training: dict[str, Any]) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters (``training`` is the recipe's section).

    With AdamW, biases and normalisation weights (1-D parameters) get no weight decay.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    kwargs = {
        "lr": training["learning_rate"],
        "betas": (training["adam_beta1"], training["adam_beta2"]),
        "eps": training["adam_epsilon"],
    }
    if training["optimizer"] == "adam":
        return torch.optim.Adam(params, weight_decay=training["weight_decay"], **kwargs)
    if training["optimizer"] == "adamw":
        decay = [p for p in params if p.dim() > 1]
        no_decay = [p for p in params if p.dim() <= 1]
        groups = [{"params": decay, "weight_decay": training["weight_decay"]}]
        if no_decay:
            groups.append({"params": no_decay, "weight_decay": 0.0})
        return torch.optim.AdamW(groups, **kwargs)
    raise ValueError(f"unknown optimizer {training['optimizer']!r}")


class LRSchedule:
    """Warmup, then constant / cosine / linear decay, or reduce-on-plateau; sets the optimizer's lr.

    * ``warmup_steps``: linear ramp from ``lr / warmup_steps`` to ``lr`` (every kind);
    * ``cosine`` / ``linear``: from ``lr`` at the end of warmup to ``min_lr_ratio * lr`` at
      ``total_steps``;
    * ``plateau``: ``lr`` multiplied by ``plateau_factor`` (0.5: halving) when the validation
      metric has not improved for more than ``plateau_patience`` validations, never below
      ``plateau_min_lr``. This is ``torch.optim.lr_scheduler.ReduceLROnPlateau`` with
      ``threshold=0`` (strict improvement), ``cooldown=0``, written here so that warmup composes
      with it and its state is part of the checkpoint.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        kind: str,
        learning_rate: float,
        total_steps: int,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
        plateau_factor: float = 0.5,
        plateau_patience: int = 2,
        plateau_min_lr: float = 0.0,
        plateau_mode: str = "max",
    ) -> None:
        if kind not in ("constant", "cosine", "linear", "plateau"):
            raise ValueError(f"unknown scheduler {kind!r}")
        self.optimizer = optimizer
        self.kind = kind
        self.learning_rate = float(learning_rate)
        self.total_steps = max(int(total_steps), 1)
        self.warmup_steps = max(int(warmup_steps), 0)
        self.min_lr_ratio = float(min_lr_ratio)
        self.plateau_factor = float(plateau_factor)
        self.plateau_patience = int(plateau_patience)
        self.plateau_min_lr = float(plateau_min_lr)
        self.plateau_mode = plateau_mode
        # state
        self.plateau_scale = 1.0
        self.plateau_best: float | None = None
        self.plateau_bad = 0
        self.reductions = 0

    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based: the first update uses ``lr_at(0)``)."""
        lr = self.learning_rate
        if self.warmup_steps and step < self.warmup_steps:
            return lr * (step + 1) / self.warmup_steps
        if self.kind in ("cosine", "linear"):
            span = max(self.total_steps - self.warmup_steps, 1)
            progress = min(max(step - self.warmup_steps, 0) / span, 1.0)
            factor = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.kind == "cosine" else 1.0 - progress
            return lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * factor)
        if self.kind == "plateau":
            return max(lr * self.plateau_scale, self.plateau_min_lr)
        return lr

    def apply(self, step: int) -> float:
        lr = self.lr_at(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def observe(self, metric: float) -> bool:
        """Feed a validation result (plateau only); return True when the lr was reduced."""
        if self.kind != "plateau" or metric is None or not math.isfinite(metric):
            return False
        better = (
            self.plateau_best is None
            or (self.plateau_mode == "max" and metric > self.plateau_best)
            or (self.plateau_mode == "min" and metric < self.plateau_best)
        )
        if better:
            self.plateau_best = float(metric)
            self.plateau_bad = 0
            return False
        self.plateau_bad += 1
        if self.plateau_bad > self.plateau_patience:
            before = max(self.learning_rate * self.plateau_scale, self.plateau_min_lr)
            self.plateau_scale *= self.plateau_factor
            self.plateau_bad = 0
            if max(self.learning_rate * self.plateau_scale, self.plateau_min_lr) < before:
                self.reductions += 1
                return True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "plateau_scale": self.plateau_scale,
            "plateau_best": self.plateau_best,
            "plateau_bad": self.plateau_bad,
            "reductions": self.reductions,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_scale = float(state["plateau_scale"])
        self.plateau_best = None if state["plateau_best"] is None else float(state["plateau_best"])
        self.plateau_bad = int(state["plateau_bad"])
        self.reductions = int(state.get("reductions", 0))


class EMA:
    """Exponential moving average of a model's floating-point parameters and buffers (kept in fp32).

    ``shadow = decay * shadow + (1 - decay) * weight`` after every optimizer step. With
    ``warmup=True`` the effective decay is ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates,
    so early averages are not dominated by the random initialisation.
    """

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool = True) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = {
            name: tensor.detach().to(torch.float32).clone()
            for name, tensor in model.state_dict().items()
            if tensor.is_floating_point()
        }

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        decay = self.current_decay()
        state = model.state_dict()
        for name, average in self.shadow.items():
            value = state[name].detach().to(device=average.device, dtype=torch.float32)
            average.mul_(decay).add_(value, alpha=1.0 - decay)
        self.num_updates += 1

    def to(self, device: torch.device | str) -> EMA:
        self.shadow = {name: tensor.to(device) for name, tensor in self.shadow.items()}
        return self

    @contextlib.contextmanager
    def applied(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """Temporarily load the averaged weights into ``model`` (restored on exit)."""
        state = model.state_dict()
        backup = {name: state[name].detach().clone() for name in self.shadow}
        with torch.no_grad():
            for name, average in self.shadow.items():
                state[name].copy_(average.to(dtype=state[name].dtype, device=state[name].device))
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, saved in backup.items():
                    state[name].copy_(saved)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state lacks {sorted(missing)[:5]}: it was saved for another model")
        self.num_updates = int(state["num_updates"])
        for name, tensor in state["shadow"].items():
            if name in self.shadow:
                self.shadow[name].copy_(tensor.to(self.shadow[name].device))


__all__ = ["EMA", "LRSchedule", "build_optimizer"]
