"""Fixtures for the pipeline and CLI tests: tiny models saved to folders, test signals.

Besides the additive toy model of ``tests/toy_models.py`` this registers two test-only families:

* ``BandSwapper`` (speech-like, permutation-invariant): splits the mixture into a low and a high
  frequency band with an FFT mask and deliberately swaps the two outputs on every other chunk it
  sees, so speaker alignment across chunks is needed to recover the bands;
* ``PositionalSplitter`` (music-like): the toy's gains times a gentle ramp over the chunk, so its
  output depends on where chunk boundaries fall (what ``shifts`` changes);
* ``SaturatingSplitter`` (music-like, nonlinear): ``[x / (1 + |x|), x - x / (1 + |x|)]``, so scaling the input
  changes its output (what ``normalize_input`` changes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PretrainedConfig, PreTrainedModel, pipeline
from transformers.utils import ModelOutput

import demixers
from tests.toy_models import ToySplitterConfig, ToySplitterForSourceSeparation


class BandSwapperConfig(PretrainedConfig):
    model_type = "demixers_test_band_swapper"

    def __init__(
        self, sampling_rate: int = 8000, cutoff_hz: float = 1000.0, swap_every_other: bool = True, **kwargs
    ):
        self.sampling_rate = sampling_rate
        self.audio_channels = 1
        self.source_names = ["speaker_1", "speaker_2"]
        self.permutation_invariant = True
        self.cutoff_hz = cutoff_hz
        self.swap_every_other = swap_every_other
        super().__init__(**kwargs)


@dataclass
class _Output(ModelOutput):
    audio_values: torch.FloatTensor | None = None


class BandSwapperForSourceSeparation(PreTrainedModel):
    config_class = BandSwapperConfig
    main_input_name = "input_values"

    def __init__(self, config: BandSwapperConfig) -> None:
        super().__init__(config)
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.items_seen = 0
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        pass

    def forward(self, input_values: torch.Tensor) -> _Output:
        length = input_values.shape[-1]
        spectrum = torch.fft.rfft(input_values.double(), dim=-1)
        frequencies = torch.fft.rfftfreq(length, d=1.0 / self.config.sampling_rate)
        low_mask = (frequencies < self.config.cutoff_hz).to(spectrum.dtype)
        low = torch.fft.irfft(spectrum * low_mask, n=length, dim=-1)
        high = input_values.double() - low
        outputs = []
        for index in range(input_values.shape[0]):
            pair = [low[index], high[index]]
            if self.config.swap_every_other and (self.items_seen + index) % 2 == 1:
                pair = pair[::-1]
            outputs.append(torch.stack(pair))
        self.items_seen += input_values.shape[0]
        return _Output(audio_values=torch.stack(outputs).float() + 0 * self.dummy)


class PositionalSplitterConfig(ToySplitterConfig):
    model_type = "demixers_test_positional_splitter"

    # transformers 5 generates an __init__ for a config subclass that defines none, which would skip
    # the toy config's (source names, permutation_invariant)
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)


class PositionalSplitterForSourceSeparation(ToySplitterForSourceSeparation):
    config_class = PositionalSplitterConfig

    def forward(self, input_values: torch.Tensor, labels: torch.Tensor | None = None):
        output = super().forward(input_values, labels)
        ramp = torch.linspace(0.8, 1.2, input_values.shape[-1])
        output.audio_values = output.audio_values * ramp
        return output


class SaturatingSplitterConfig(PretrainedConfig):
    model_type = "demixers_test_saturating_splitter"

    def __init__(self, sampling_rate: int = 8000, audio_channels: int = 2, **kwargs):
        self.sampling_rate = sampling_rate
        self.audio_channels = audio_channels
        self.source_names = ["drums", "bass"]
        self.permutation_invariant = False
        super().__init__(**kwargs)


class SaturatingSplitterForSourceSeparation(PreTrainedModel):
    config_class = SaturatingSplitterConfig
    main_input_name = "input_values"

    def __init__(self, config: SaturatingSplitterConfig) -> None:
        super().__init__(config)
        self.gain = torch.nn.Parameter(torch.ones(1))
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        pass

    def forward(self, input_values: torch.Tensor) -> _Output:
        scaled = self.gain * input_values
        saturated = scaled / (1 + scaled.abs())
        return _Output(audio_values=torch.stack([saturated, input_values - saturated], dim=1))


demixers.register_model_family(BandSwapperConfig, BandSwapperForSourceSeparation)
demixers.register_model_family(PositionalSplitterConfig, PositionalSplitterForSourceSeparation)
demixers.register_model_family(SaturatingSplitterConfig, SaturatingSplitterForSourceSeparation)


def save_model(model: PreTrainedModel, folder: Path) -> str:
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def speech_toy_dir(models_dir: Path) -> str:
    """Exactly additive, 8 kHz mono, speaker_1/speaker_2 (permutation-invariant by name)."""
    return save_model(ToySplitterForSourceSeparation(ToySplitterConfig()).eval(), models_dir / "speech_toy")


@pytest.fixture(scope="session")
def music_toy_dir(models_dir: Path) -> str:
    """Exactly additive, 44.1 kHz stereo, four fixed-order stems."""
    config = ToySplitterConfig(
        sampling_rate=44100, audio_channels=2, source_names=["drums", "bass", "other", "vocals"]
    )
    return save_model(ToySplitterForSourceSeparation(config).eval(), models_dir / "music_toy")


@pytest.fixture(scope="session")
def speech_toy(speech_toy_dir: str):
    return pipeline("audio-source-separation", model=speech_toy_dir)


@pytest.fixture(scope="session")
def music_toy(music_toy_dir: str):
    return pipeline("audio-source-separation", model=music_toy_dir)


@pytest.fixture(scope="session")
def mossformer_dir(models_dir: Path) -> str:
    """A tiny random MossFormer (8 kHz mono, 2 speakers)."""
    config = demixers.MossFormerConfig(
        encoder_kernel_size=8,
        encoder_stride=4,
        encoder_channels=16,
        hidden_size=16,
        num_hidden_layers=1,
        group_size=16,
        query_key_dim=8,
        expansion_factor=2.0,
        conv_kernel_size=3,
        max_rotary_dim=4,
    )
    torch.manual_seed(0)
    return save_model(demixers.MossFormerForSourceSeparation(config).eval(), models_dir / "mossformer")


def sines(frequencies: list[float], sampling_rate: int, seconds: float, amplitude: float = 0.3) -> np.ndarray:
    """float32 ``(len(frequencies), time)``: one sine per row."""
    t = np.arange(round(seconds * sampling_rate)) / sampling_rate
    return np.stack([amplitude * np.sin(2 * np.pi * f * t + k) for k, f in enumerate(frequencies)]).astype(
        np.float32
    )
