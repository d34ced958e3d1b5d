"""Training: YAML recipes, losses, the Accelerate loop and crash-safe checkpoints.

``train.py`` / ``demixers train`` run `Trainer`; the pieces are importable on their own:

* `demixers.trainers.config`: recipes (`load_config`, dotted overrides);
* `demixers.trainers.losses`: PIT SI-SNR, L1, MSE;
* `demixers.trainers.trainer`: `Trainer`, `train`;
* `demixers.trainers.checkpointing`: checkpoint layout, atomic writes, pruning, resume checks.

Heavy imports (accelerate, datasets) happen inside the functions that need them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils.lazy import make_lazy

if TYPE_CHECKING:
    from .config import ConfigError, load_config
    from .losses import SeparationLoss, compute_loss, pairwise_si_snr, si_snr_loss, waveform_loss

# Public names load on first access: `demixers --help` imports this package's cli module.
make_lazy(
    __name__,
    {
        "ConfigError": ".config",
        "load_config": ".config",
        "SeparationLoss": ".losses",
        "compute_loss": ".losses",
        "pairwise_si_snr": ".losses",
        "si_snr_loss": ".losses",
        "waveform_loss": ".losses",
    },
)

__all__ = [
    "ConfigError",
    "SeparationLoss",
    "compute_loss",
    "load_config",
    "pairwise_si_snr",
    "si_snr_loss",
    "waveform_loss",
]
