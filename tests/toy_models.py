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

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, strict: bool = True, **kwargs):
        """Strict like every demixers family: a missing/unexpected/mismatched tensor is a ValueError."""
        if not strict:
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        wants_info = bool(kwargs.pop("output_loading_info", False))
        check_shapes = not kwargs.pop("ignore_mismatched_sizes", False)
        model, info = super().from_pretrained(
            pretrained_model_name_or_path,
            *model_args,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **kwargs,
        )
        fields = ["missing_keys", "unexpected_keys"] + (["mismatched_keys"] if check_shapes else [])
        problems = []
        for field in fields:
            keys = sorted(str(key if isinstance(key, str) else key[0]) for key in info.get(field) or ())
            if keys:
                problems.append(f"{field.split('_')[0]}: {', '.join(keys)}")
        if problems:
            raise ValueError(f"{pretrained_model_name_or_path}: weights do not match ({'; '.join(problems)})")
        return (model, info) if wants_info else model

    def forward(
        self,
        input_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> ToySplitterOutput | tuple[torch.Tensor, ...]:
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        if not isinstance(input_values, torch.Tensor):
            raise TypeError(f"input_values must be a torch.Tensor, got {type(input_values).__name__}")
        if input_values.dim() != 3 or input_values.shape[1] != self.config.audio_channels:
            raise ValueError(
                f"input_values must be (batch, {self.config.audio_channels}, time), "
                f"got {tuple(input_values.shape)}"
            )
        if input_values.shape[-1] == 0 or input_values.shape[0] == 0:
            raise ValueError("input_values has zero samples")
        if not input_values.is_floating_point():
            raise TypeError(f"input_values must be a floating-point tensor, got {input_values.dtype}")
        if not torch.isfinite(input_values).all():
            raise ValueError("input_values contains NaN or Inf")
        keep = None
        if padding_mask is not None:
            if not isinstance(padding_mask, torch.Tensor):
                raise TypeError(f"padding_mask must be a torch.Tensor, got {type(padding_mask).__name__}")
            expected = (input_values.shape[0], input_values.shape[-1])
            if tuple(padding_mask.shape) != expected:
                raise ValueError(
                    f"padding_mask must be (batch, time) = {expected}, got {tuple(padding_mask.shape)}"
                )
            keep = padding_mask.to(torch.bool)[:, None, None, :]
        gains = torch.softmax(self.gain_logits, dim=0)  # (sources, channels), sums to 1 over sources
        audio_values = gains[None, :, :, None] * input_values[:, None]
        if keep is not None:  # padding is zero in the output and never counts in the loss
            audio_values = audio_values * keep
        loss = None
        if labels is not None:
            if tuple(labels.shape) != tuple(audio_values.shape):
                raise ValueError(f"labels must be {tuple(audio_values.shape)}, got {tuple(labels.shape)}")
            if keep is None:
                loss = torch.nn.functional.l1_loss(audio_values, labels)
            else:
                weights = keep.expand_as(audio_values)
                loss = (audio_values - labels).abs()[weights].mean()
        if not return_dict:
            return (loss, audio_values) if loss is not None else (audio_values,)
        return ToySplitterOutput(loss=loss, audio_values=audio_values)
