"""Test-session set-up.

The loopback Hub server must be running, and HF_ENDPOINT / HF_TOKEN / HF_HOME set, before
anything imports huggingface_hub (it reads them at import), so it starts here at import time,
before any test module (or demixers) is imported.
"""

from __future__ import annotations

import os

import pytest

from tests.hub_server import LoopbackHubServer, start_session_hub_server

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

HUB_SERVER = start_session_hub_server()


@pytest.fixture(scope="session")
def hub_server() -> LoopbackHubServer:
    return HUB_SERVER


def pytest_configure(config: pytest.Config) -> None:
    import demixers
    from tests.toy_models import ToySplitterConfig, ToySplitterForSourceSeparation

    demixers.register_model_family(ToySplitterConfig, ToySplitterForSourceSeparation)
