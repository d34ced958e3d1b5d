"""Test-session set-up.

The loopback Hub server must be running, and HF_ENDPOINT / HF_TOKEN / HF_HOME set, before
anything imports huggingface_hub (it reads them at import), so it starts here at import time.
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")


def pytest_configure(config) -> None:
    import demixers
    from tests.toy_models import ToySplitterConfig, ToySplitterForSourceSeparation

    demixers.register_model_family(ToySplitterConfig, ToySplitterForSourceSeparation)
