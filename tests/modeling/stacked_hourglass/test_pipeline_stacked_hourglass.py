"""The stacked hourglass network through `pipeline("audio-source-separation")`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import pipeline

from demixers.modeling.stacked_hourglass import StackedHourglassForSourceSeparation
from tests.modeling.stacked_hourglass.tiny_configs import tiny_stacked_hourglass_config


def test_pipeline_serves_a_saved_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = StackedHourglassForSourceSeparation(tiny_stacked_hourglass_config()).eval()
    model.save_pretrained(tmp_path)
    separator = pipeline("audio-source-separation", model=str(tmp_path))
    rng = np.random.default_rng(0)
    mixture = (0.1 * rng.standard_normal(4000)).astype(np.float32)
    with torch.no_grad():
        direct = model(input_values=torch.from_numpy(mixture)[None, None]).audio_values[0].numpy()
    stems = separator(mixture, sampling_rate=8000, segment=1.0)  # one chunk covers the input
    assert [stem["label"] for stem in stems] == ["accompaniment", "vocals"]
    for stem, expected in zip(stems, direct, strict=True):
        assert stem["audio"].shape == (1, 4000) and stem["sampling_rate"] == 8000
        np.testing.assert_allclose(stem["audio"], expected, atol=1e-5)
    # stereo input at 16 kHz (MIR-1K's rate): down-mixed to mono, resampled to 8 kHz and back
    stereo = (0.1 * rng.standard_normal((2, 3200))).astype(np.float32)
    stems = separator(stereo, sampling_rate=16000, segment=0.25, overlap=0.25)
    assert all(stem["audio"].shape == (1, 3200) and stem["sampling_rate"] == 16000 for stem in stems)
    assert all(np.isfinite(stem["audio"]).all() for stem in stems)
