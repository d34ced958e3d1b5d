"""What the pipeline, the trainer, evaluation and model cards read from a model's config.

Every model family obeys one contract: ``config.sampling_rate``, ``config.audio_channels``,
``config.source_names`` and ``config.permutation_invariant``. This module is the one place that
reads the decisions derived from it, so the layers above never re-derive them with rules of their own.
"""

from __future__ import annotations

import re
from typing import Any

# Transitional: configs saved before every family declared ``permutation_invariant`` are judged by
# their source names (speaker indices are permutable).
_SPEAKER_NAME = re.compile(r"^(speaker|spk|talker|voice|s)[_\-]?\d+$", re.IGNORECASE)


def is_permutation_invariant(config: Any) -> bool:
    """Whether the model's sources come out in an arbitrary order (speech separation).

    ``config.permutation_invariant`` (a config field or a class attribute of the config) decides
    when it is a bool. Otherwise the sources are taken as permutable when every name in
    ``config.source_names`` looks like a speaker index (``speaker_1``, ``spk2``, ``s1`` ...).
    """
    flag = getattr(config, "permutation_invariant", None)
    if isinstance(flag, bool):
        return flag
    names = list(getattr(config, "source_names", []) or [])
    return len(names) > 1 and all(isinstance(name, str) and _SPEAKER_NAME.match(name) for name in names)
