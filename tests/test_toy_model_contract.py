"""The common model tests applied to the test-suite's toy model (keeps the mixin itself honest)."""

from __future__ import annotations

from typing import ClassVar

from tests.modeling.common import SourceSeparationModelTesterMixin
from tests.toy_models import ToySplitterConfig, ToySplitterForSourceSeparation


class TestToySplitterContract(SourceSeparationModelTesterMixin):
    model_class = ToySplitterForSourceSeparation
    invalid_config_kwargs: ClassVar[list[tuple[dict, str]]] = [({"source_names": []}, "source_names")]

    def get_config(self) -> ToySplitterConfig:
        return ToySplitterConfig(audio_channels=2, source_names=["a", "b", "c"])
