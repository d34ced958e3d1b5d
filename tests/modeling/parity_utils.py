"""Weights where every parameter matters, for parity tests against reference implementations.

Freshly initialised models hide numerical problems: LayerScales start at 1e-4 (the transformer
and the DConv branches then contribute almost nothing), norms start as identities, biases at zero.
`perturb_parameters` moves every parameter, and every buffer that is a learnt statistic (batch-norm
running means and variances), by a deterministic amount, as training would. Apply it to the
reference model, then convert or copy its weights, so both sides see identical values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

# Buffers that hold statistics learnt from data (and so differ from their initial value in a
# trained checkpoint). Other buffers (counters, windows, constant tables) are left alone.
LEARNT_STATISTIC_SUFFIXES = ("running_mean", "running_var")
PERTURBATION_STD = 0.02


def perturb_parameters(module: nn.Module, std: float = PERTURBATION_STD, seed: int = 0) -> nn.Module:
    """Add ``std * N(0, 1)`` to every trainable parameter and learnt mean of ``module``, in place.

    Running variances are multiplied by ``exp(std * N(0, 1))`` instead (they must stay positive).
    The draws come from a private generator seeded with ``seed`` and are taken in ``state_dict``
    order, so two models with the same state-dict layout get the same perturbation. Returns
    ``module``.
    """
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    generator = torch.Generator().manual_seed(seed)
    # frozen parameters (``requires_grad=False``, e.g. fixed rotary frequencies) are constants, not weights
    parameters = {id(parameter) for parameter in module.parameters() if parameter.requires_grad}
    seen: set[int] = set()
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            if id(tensor) in seen:  # tied weights get one perturbation
                continue
            is_parameter = id(tensor) in parameters
            if not is_parameter and not name.endswith(LEARNT_STATISTIC_SUFFIXES):
                continue
            if not tensor.is_floating_point():
                continue
            seen.add(id(tensor))
            noise = torch.randn(tensor.shape, generator=generator, dtype=torch.float64)
            if name.endswith("running_var"):
                tensor.mul_(torch.exp(std * noise).to(tensor.dtype))
            else:
                tensor.add_((std * noise).to(tensor.dtype))
    return module


def relative_max_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """``max |actual - expected| / max |expected|`` (computed in float64)."""
    actual, expected = actual.detach().double(), expected.detach().double()
    return float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12))


def speech_batch(length: int, sampling_rate: int = 8000, batch: int = 2) -> torch.Tensor:
    """``(batch, 1, length)`` mixtures of two voice-like speakers, a different conversation per row."""
    from tests.audio_fixtures import speech_like_mixture

    seconds = length / sampling_rate + 0.01
    rows = [speech_like_mixture(seconds, sampling_rate, seed=seed)[:, :length] for seed in range(batch)]
    return torch.from_numpy(np.stack(rows))


def music_batch(length: int, sampling_rate: int = 44100, channels: int = 2, batch: int = 2) -> torch.Tensor:
    """``(batch, channels, length)`` excerpts of different synthetic songs."""
    from tests.audio_fixtures import music_like

    seconds = length / sampling_rate + 0.01
    rows = [music_like(seconds, sampling_rate, channels, seed=seed)[:, :length] for seed in range(batch)]
    return torch.from_numpy(np.stack(rows))
