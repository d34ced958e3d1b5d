"""DTTNet through `pipeline("audio-source-separation")`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import pipeline

from demixers.modeling.dttnet import DTTNetForSourceSeparation
from tests.modeling.dttnet.tiny_configs import tiny_dttnet_config


def test_pipeline_serves_a_saved_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DTTNetForSourceSeparation(tiny_dttnet_config()).eval()
    model.save_pretrained(tmp_path)
    separator = pipeline("audio-source-separation", model=str(tmp_path))
    rng = np.random.default_rng(0)
    mixture = (0.1 * rng.standard_normal((2, 3000))).astype(np.float32)
    with torch.no_grad():
        direct = model(input_values=torch.from_numpy(mixture)[None]).audio_values[0].numpy()
    stems = separator(mixture, sampling_rate=44100, segment=1.0)  # one chunk covers the input
    assert [stem["label"] for stem in stems] == ["vocals", "accompaniment"]
    for stem, expected in zip(stems, direct, strict=True):
        assert stem["audio"].shape == (2, 3000) and stem["sampling_rate"] == 44100
        np.testing.assert_allclose(stem["audio"], expected, atol=1e-5)
    # the residual output makes the stems sum to the mixture, chunked or not
    chunked = separator(mixture, sampling_rate=44100, segment=0.02, overlap=0.25)
    np.testing.assert_allclose(chunked[0]["audio"] + chunked[1]["audio"], mixture, atol=1e-5)
    # mono input at another rate: duplicated to stereo, resampled there and back
    mono = separator(mixture[0, :2000], sampling_rate=22050)
    assert all(stem["audio"].shape == (2, 2000) and stem["sampling_rate"] == 22050 for stem in mono)
