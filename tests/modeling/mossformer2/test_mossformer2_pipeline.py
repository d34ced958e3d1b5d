"""The pipeline's speech path (chunking, speaker alignment, resampling) with a tiny MossFormer2."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import pipeline

from demixers import MossFormer2Config, MossFormer2ForSourceSeparation
from tests.audio_fixtures import speech_like_mixture


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    config = MossFormer2Config(
        encoder_kernel_size=8, encoder_stride=4, encoder_channels=16, hidden_size=16, num_hidden_layers=1,
        group_size=16, query_key_dim=8, expansion_factor=2.0, conv_kernel_size=3, max_rotary_dim=4,
        fsmn_inner_channels=8, fsmn_memory_order=3,
    )  # fmt: skip
    torch.manual_seed(0)
    model = MossFormer2ForSourceSeparation(config).eval()
    with torch.no_grad():  # different masks for the two speakers
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    folder = tmp_path_factory.mktemp("models") / "mossformer2"
    model.save_pretrained(folder)
    return str(folder)


def test_one_chunk_equals_the_model_and_chunks_batch(model_dir: str) -> None:
    separator = pipeline("audio-source-separation", model=model_dir)
    mixture = speech_like_mixture(1.5, 8000, seed=1)[0]
    with torch.no_grad():
        direct = separator.model(input_values=torch.from_numpy(mixture)[None, None]).audio_values[0].numpy()
    stems = separator(mixture, sampling_rate=8000, segment=1.5)
    assert [stem["label"] for stem in stems] == ["speaker_1", "speaker_2"]
    for index, stem in enumerate(stems):
        assert stem["audio"].shape == (1, mixture.size) and stem["sampling_rate"] == 8000
        np.testing.assert_allclose(stem["audio"], direct[index], atol=1e-6)
    one = separator(mixture, sampling_rate=8000, segment=0.5, overlap=0.5, batch_size=1)
    three = separator(mixture, sampling_rate=8000, segment=0.5, overlap=0.5, batch_size=3)
    for a, b in zip(one, three, strict=True):
        np.testing.assert_allclose(a["audio"], b["audio"], atol=1e-5)


def test_speakers_are_aligned_across_chunks(model_dir: str) -> None:
    """A model that swaps its speakers on every other chunk gives the same stems: the pipeline
    aligns each chunk's speakers with the previous chunk's on their overlap."""
    separator = pipeline("audio-source-separation", model=model_dir)
    mixture = speech_like_mixture(3.0, 8000, seed=2)[0]
    expected = separator(mixture, sampling_rate=8000, segment=0.75, overlap=0.5, batch_size=1)
    model = separator.model
    plain_forward = model.forward
    calls = []

    def swapping_forward(*args, **kwargs):
        output = plain_forward(*args, **kwargs)
        calls.append(1)
        if len(calls) % 2 == 0:
            output["audio_values"] = output["audio_values"].flip(1)
        return output

    model.forward = swapping_forward
    try:
        swapped = separator(mixture, sampling_rate=8000, segment=0.75, overlap=0.5, batch_size=1)
    finally:
        del model.forward
    assert len(calls) >= 4
    for a, b in zip(expected, swapped, strict=True):
        np.testing.assert_allclose(b["audio"], a["audio"], atol=1e-5)


def test_other_sampling_rates_are_resampled(model_dir: str) -> None:
    separator = pipeline("audio-source-separation", model=model_dir)
    mixture = speech_like_mixture(1.0, 16000, seed=3)[0]
    stems = separator(mixture, sampling_rate=16000)
    assert len(stems) == 2
    for stem in stems:
        assert stem["sampling_rate"] == 16000 and stem["audio"].shape == (1, mixture.size)
        assert np.isfinite(stem["audio"]).all() and np.abs(stem["audio"]).max() > 0
