"""What the pipeline, the trainer, evaluation and model cards read from a model's config.

Every model family obeys one contract: ``config.sampling_rate``, ``config.audio_channels``,
``config.source_names`` and ``config.permutation_invariant``. This module is the one place that
reads the decisions derived from it, so the layers above never re-derive them with rules of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def is_permutation_invariant(config: Any) -> bool:
    """Whether the model's sources come out in an arbitrary order (speech separation).

    Reads ``config.permutation_invariant`` (a config object's field, or the key of a config dict such
    as a loaded ``config.json``) and nothing else: every family's config declares it, with the
    family's default (speech families True, music families False) saved in ``config.json``.

    Raises:
        TypeError: the config does not declare ``permutation_invariant`` as a bool.
    """
    if isinstance(config, Mapping):
        flag = config.get("permutation_invariant")
    else:
        flag = getattr(config, "permutation_invariant", None)
    if not isinstance(flag, bool):
        name = config.get("model_type") if isinstance(config, Mapping) else type(config).__name__
        raise TypeError(
            f"{name}: the config must declare permutation_invariant as a bool (True: unordered "
            f"speakers, False: named stems in a fixed order), got {flag!r}; every demixers family "
            "sets it, a custom config needs the field"
        )
    return flag
