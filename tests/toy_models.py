"""A tiny, exactly additive separation model for pipeline and trainer tests.

``ToySplitterForSourceSeparation`` splits a mixture into sources with learnable softmax gains per
(source, channel): the sources always sum exactly to the mixture, the output length always equals
the input length, and training moves the gains towards the reference sources' energy shares.

The module imports nothing from demixers, so it also serves as remote code in the common tests;
tests/conftest.py registers it with the Auto classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig, PreTrainedModel
from transformers.utils import ModelOutput


class ToySplitterConfig(PretrainedConfig):
    model_type = "demixers_toy_splitter"

    def __init__(
        self,
        sampling_rate: int = 8000,
        audio_channels: int = 1,
        source_names: list[str] | tuple[str, ...] = ("speaker_1", "speaker_2"),
        permutation_invariant: bool | None = None,
        **kwargs,
    ) -> None:
        if len(source_names) < 1:
            raise ValueError(f"source_names must name at least one source, got {source_names!r}")
        if permutation_invariant is None:
            # like Conv-TasNet: speakers named by their count are unordered, named stems are not
            speakers = [f"speaker_{index + 1}" for index in range(len(source_names))]
            permutation_invariant = len(source_names) > 1 and list(source_names) == speakers
        if not isinstance(permutation_invariant, bool):
            raise ValueError(f"permutation_invariant must be a bool, got {permutation_invariant!r}")
        self.sampling_rate = sampling_rate
        self.audio_channels = audio_channels
        self.source_names = list(source_names)
        self.permutation_invariant = permutation_invariant
        super().__init__(**kwargs)


@dataclass
class ToySplitterOutput(ModelOutput):
    loss: torch.FloatTensor | None = None
    audio_values: torch.FloatTensor | None = None


class ToySplitterForSourceSeparation(PreTrainedModel):
    config_class = ToySplitterConfig
    main_input_name = "input_values"
    base_model_prefix = "toy"

    def __init__(self, config: ToySplitterConfig) -> None:
        super().__init__(config)
        self.gain_logits = torch.nn.Parameter(torch.zeros(len(config.source_names), config.audio_channels))
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        if module is self:
            with torch.no_grad():
                self.gain_logits.copy_(
                    torch.linspace(-0.5, 0.5, self.gain_logits.numel()).view_as(self.gain_logits)
                )

    def forward(self, input_values: torch.Tensor, labels: torch.Tensor | None = None) -> ToySplitterOutput:
        if input_values.dim() != 3 or input_values.shape[1] != self.config.audio_channels:
            raise ValueError(
                f"input_values must be (batch, {self.config.audio_channels}, time), "
                f"got {tuple(input_values.shape)}"
            )
        if input_values.shape[-1] == 0:
            raise ValueError("input_values has zero samples")
        if not torch.isfinite(input_values).all():
            raise ValueError("input_values contains NaN or Inf")
        gains = torch.softmax(self.gain_logits, dim=0)  # (sources, channels), sums to 1 over sources
        audio_values = gains[None, :, :, None] * input_values[:, None]
        loss = None
        if labels is not None:
            loss = torch.nn.functional.l1_loss(audio_values, labels)
        return ToySplitterOutput(loss=loss, audio_values=audio_values)
