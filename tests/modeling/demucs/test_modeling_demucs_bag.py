from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch

from demixers.modeling.demucs import (
    DemucsBagConfig,
    DemucsBagForSourceSeparation,
    DemucsForSourceSeparation,
    HTDemucsForSourceSeparation,
)
from tests.modeling.common import SourceSeparationModelTesterMixin
from tests.modeling.demucs.tiny_configs import tiny_demucs_config, tiny_htdemucs_config

WEIGHTS = [[1.0, 0.0, 1.0, 2.0], [0.5, 1.0, 0.0, 1.0]]


def tiny_bag_config(**overrides) -> DemucsBagConfig:
    members = [tiny_demucs_config().architecture_dict(), tiny_htdemucs_config().architecture_dict()]
    values = dict(models=members, weights=WEIGHTS)
    values.update(overrides)
    return DemucsBagConfig(**values)


class TestDemucsBag(SourceSeparationModelTesterMixin):
    model_class = DemucsBagForSourceSeparation
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"models": []}, "models"),
        ({"models": [{"model_type": "os.system"}]}, "models"),
        ({"weights": [[1.0, 1.0]]}, "weights"),
    ]

    def get_config(self) -> DemucsBagConfig:
        return tiny_bag_config()

    def test_members_are_built_from_the_whitelist(self) -> None:
        model = self.make_model()
        assert [type(member) for member in model.models] == [
            DemucsForSourceSeparation,
            HTDemucsForSourceSeparation,
        ]

    def test_forward_is_the_per_source_weighted_average(self) -> None:
        model = self.make_model()
        mix = 0.1 * torch.randn(2, 2, 1500)
        with torch.no_grad():
            bag = model(input_values=mix).audio_values
            outs = [member(input_values=mix).audio_values for member in model.models]
        weights = torch.tensor(WEIGHTS)
        expected = (
            weights[0, None, :, None, None] * outs[0] + weights[1, None, :, None, None] * outs[1]
        ) / weights.sum(0)[None, :, None, None]
        torch.testing.assert_close(bag, expected, atol=1e-6, rtol=1e-5)

    def test_members_must_agree_on_the_audio_format(self) -> None:
        with pytest.raises(ValueError, match="sampling_rate"):
            DemucsBagConfig(
                models=[
                    tiny_demucs_config().architecture_dict(),
                    tiny_demucs_config(sampling_rate=48000).architecture_dict(),
                ]
            )

    def test_a_source_without_weight_is_refused(self) -> None:
        with pytest.raises(ValueError, match="weights"):
            tiny_bag_config(weights=[[1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 1.0]])
