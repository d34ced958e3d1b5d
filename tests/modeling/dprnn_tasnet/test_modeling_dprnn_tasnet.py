"""DPRNN-TasNet model tests: the common contract, segmentation known answers and a short training run."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import pytest
import torch
import torch.nn.functional as F

import demixers
from demixers.modeling.dprnn_tasnet import DPRNNTasNetConfig, DPRNNTasNetForSourceSeparation
from demixers.modeling.dprnn_tasnet.modeling_dprnn_tasnet import (
    overlap_add,
    permutation_invariant_si_snr_loss,
    split_into_chunks,
)
from demixers.pipelines.chunking import is_permutation_invariant
from tests.modeling.common import SourceSeparationModelTesterMixin

demixers.register_model_family(DPRNNTasNetConfig, DPRNNTasNetForSourceSeparation)

# N=64, L=2 (hop 1), 64 features, BiLSTM 128 per direction, K=250, 6 blocks, 2 speakers (paper: 2.6M)
PAPER_PARAMETERS = 2_608_065


def tiny_config(**overrides) -> DPRNNTasNetConfig:
    # chunk ~ sqrt(2 * frames) as in the paper keeps both RNN passes short (1600 samples -> 199 frames)
    kwargs = dict(
        encoder_channels=8,
        encoder_kernel_size=16,
        bottleneck_channels=8,
        hidden_size=6,
        chunk_size=20,
        num_blocks=2,
    )
    kwargs.update(overrides)
    return DPRNNTasNetConfig(**kwargs)


class TestDPRNNTasNetModel(SourceSeparationModelTesterMixin):
    model_class = DPRNNTasNetForSourceSeparation
    input_lengths = (1001, 1600)
    invalid_config_kwargs: ClassVar[list[tuple[dict[str, Any], str]]] = [
        ({"sampling_rate": 0}, "sampling_rate"),
        ({"audio_channels": 0}, "audio_channels"),
        ({"source_names": []}, "source_names"),
        ({"source_names": ["a", "a"]}, "source_names"),
        ({"source_names": ["a", "b"], "num_speakers": 3}, "num_speakers"),
        ({"encoder_channels": 0}, "encoder_channels"),
        ({"encoder_kernel_size": 0}, "encoder_kernel_size"),
        ({"encoder_stride": 3}, "encoder_stride"),
        ({"encoder_activation": "gelu"}, "encoder_activation"),
        ({"bottleneck_channels": 0}, "bottleneck_channels"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 10, "hop_size": 11}, "hop_size"),
        ({"num_blocks": 0}, "num_blocks"),
        ({"norm_type": "cgln"}, "norm_type"),
        ({"mask_activation": "softmax"}, "mask_activation"),
        ({"bidirectional": "no"}, "bidirectional"),
        ({"rnn_type": "transformer"}, "rnn_type"),
        ({"num_rnn_layers": 0}, "num_rnn_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"use_mulcat": 0}, "use_mulcat"),
        ({"segment": -1.0}, "segment"),
    ]

    def get_config(self) -> DPRNNTasNetConfig:
        return tiny_config()


class TestDPRNNTasNetVariantModel(SourceSeparationModelTesterMixin):
    """GRU + MulCat + unidirectional inter-chunk RNN + batch norm, stereo fixed stems (L1 loss)."""

    model_class = DPRNNTasNetForSourceSeparation
    input_lengths = (999, 1600)
    # the same modeling file as the other variant: one remote-code round trip (a subprocess) is enough
    test_remote_code_loads_without_demixers = None

    def get_config(self) -> DPRNNTasNetConfig:
        return tiny_config(
            audio_channels=2,
            source_names=["vocals", "accompaniment"],
            rnn_type="gru",
            use_mulcat=True,
            bidirectional=False,
            num_rnn_layers=2,
            norm_type="bn",
            chunk_size=14,
            hop_size=6,
        )


# -- configuration --------------------------------------------------------------------------------


def test_default_config_is_the_papers_best_model() -> None:
    config = DPRNNTasNetConfig()
    assert config.model_type == "dprnn_tasnet"
    assert (config.sampling_rate, config.audio_channels, config.source_names) == (
        8000,
        1,
        ["speaker_1", "speaker_2"],
    )
    assert (config.encoder_channels, config.encoder_kernel_size, config.encoder_stride) == (64, 2, 1)
    assert (config.bottleneck_channels, config.hidden_size) == (64, 128)
    assert (config.chunk_size, config.hop_size, config.num_blocks) == (250, 125, 6)
    assert (config.rnn_type, config.bidirectional, config.num_rnn_layers) == ("lstm", True, 1)
    assert (config.norm_type, config.mask_activation, config.use_mulcat) == ("gln", "sigmoid", False)
    model = DPRNNTasNetForSourceSeparation(config)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMETERS


def test_cheaper_window_configuration() -> None:
    config = DPRNNTasNetConfig(encoder_kernel_size=16, encoder_stride=8, chunk_size=100)
    assert (config.encoder_stride, config.hop_size) == (8, 50)
    assert DPRNNTasNetConfig(encoder_kernel_size=16).encoder_stride == 8


def test_pipeline_sees_speakers_as_permutable() -> None:
    assert DPRNNTasNetConfig().permutation_invariant and is_permutation_invariant(DPRNNTasNetConfig())
    music = DPRNNTasNetConfig(source_names=["vocals", "accompaniment"])
    assert not music.permutation_invariant and not is_permutation_invariant(music)


# -- segmentation and overlap-add --------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 5, 10, 37, 100])
def test_chunks_hold_the_padded_sequence(frames: int) -> None:
    chunk, hop = 10, 5
    sequence = torch.arange(1, frames + 1, dtype=torch.float64).expand(2, 3, frames)
    chunks = split_into_chunks(sequence, chunk, hop)
    count = (frames + chunk) // hop + 1
    assert chunks.shape == (2, 3, chunk, count)
    padded = F.pad(sequence, (chunk, chunk))
    for index in range(count):
        assert torch.equal(chunks[..., index], padded[..., index * hop : index * hop + chunk])
    # every real frame lies in some chunk, and the last chunk starts within the right padding
    assert (count - 1) * hop <= frames + chunk < count * hop + chunk


@pytest.mark.parametrize(("chunk", "hop"), [(10, 5), (250, 125), (8, 2), (6, 6)])
@pytest.mark.parametrize("frames", [1, 9, 123, 1000])
def test_overlap_add_of_chunks_is_an_exact_inverse_up_to_the_overlap_count(
    chunk: int, hop: int, frames: int
) -> None:
    sequence = torch.randn(2, 4, frames)
    restored = overlap_add(split_into_chunks(sequence, chunk, hop), frames, hop)
    copies = chunk // hop  # every frame is in exactly chunk / hop chunks
    if copies in (1, 2):
        assert torch.equal(restored, copies * sequence)  # x + x is exact in floating point
    else:
        torch.testing.assert_close(restored / copies, sequence, rtol=1e-6, atol=0)


@pytest.mark.parametrize(("chunk", "hop", "frames"), [(7, 3, 50), (10, 4, 33)])
def test_overlap_add_matches_an_explicit_loop(chunk: int, hop: int, frames: int) -> None:
    chunks = torch.randn(1, 3, chunk, (frames + chunk) // hop + 1, dtype=torch.float64)
    expected = torch.zeros(1, 3, frames + 2 * chunk, dtype=torch.float64)
    for index in range(chunks.shape[-1]):
        expected[..., index * hop : index * hop + chunk] += chunks[..., index]
    torch.testing.assert_close(overlap_add(chunks, frames, hop), expected[..., chunk : chunk + frames])


def test_intra_and_inter_paths_run_along_the_right_axes() -> None:
    """Changing one frame of one chunk changes, after the intra RNN, only that chunk."""
    config = tiny_config(norm_type="cln")
    torch.manual_seed(0)
    block = DPRNNTasNetForSourceSeparation(config).separator.blocks[0].eval()
    hidden = torch.randn(1, 8, 10, 6)
    changed = hidden.clone()
    changed[0, :, 3, 2] += 1.0
    with torch.no_grad():
        sequences = hidden.permute(0, 3, 2, 1).reshape(6, 10, 8)
        sequences_changed = changed.permute(0, 3, 2, 1).reshape(6, 10, 8)
        intra = block.intra(sequences) - block.intra(sequences_changed)
        assert intra.abs().sum(dim=(1, 2)).nonzero().flatten().tolist() == [2]  # only chunk 2 moves
        # the full block mixes chunks through the inter-chunk RNN
        difference = (block(changed) - block(hidden)).abs().sum(dim=(0, 1, 2))
    assert (difference > 0).all()


# -- shapes, inputs, losses -------------------------------------------------------------------------


@pytest.mark.parametrize("length", [1, 9, 15, 16, 17, 50, 1003])
def test_any_length_gives_the_same_length(length: int) -> None:
    model = DPRNNTasNetForSourceSeparation(tiny_config()).eval()
    with torch.no_grad():
        output = model(input_values=torch.randn(2, 1, length)).audio_values
    assert output.shape == (2, 2, 1, length)
    assert torch.isfinite(output).all()


def test_default_window_covers_every_sample() -> None:
    config = DPRNNTasNetConfig(num_blocks=1, hidden_size=8, chunk_size=20)  # kernel 2, hop 1
    model = DPRNNTasNetForSourceSeparation(config).eval()
    with torch.no_grad():
        output = model(input_values=torch.randn(1, 1, 301)).audio_values
    assert output.shape == (1, 2, 1, 301)
    assert (output[..., -1].abs() > 0).all()  # no zero tail with a hop of one sample


def test_padding_mask_separates_each_item_at_its_own_length() -> None:
    model = DPRNNTasNetForSourceSeparation(tiny_config()).eval()
    torch.manual_seed(1)
    first, second = torch.randn(1, 1, 800), torch.randn(1, 1, 500)
    batch = torch.zeros(2, 1, 800)
    batch[0], batch[1, :, :500] = first[0], second[0]
    mask = torch.zeros(2, 800, dtype=torch.long)
    mask[0], mask[1, :500] = 1, 1
    with torch.no_grad():
        output = model(batch, padding_mask=mask).audio_values
        torch.testing.assert_close(output[0:1], model(first).audio_values)
        torch.testing.assert_close(output[1:2, ..., :500], model(second).audio_values)
    assert torch.equal(output[1, ..., 500:], torch.zeros_like(output[1, ..., 500:]))


def test_model_loss_is_pit_for_speakers_and_l1_for_stems() -> None:
    torch.manual_seed(0)
    speech = DPRNNTasNetForSourceSeparation(tiny_config()).eval()
    mixture, labels = torch.randn(2, 1, 700), torch.randn(2, 2, 1, 700)
    output = speech(mixture, labels=labels)
    assert output.loss.item() == pytest.approx(
        speech(mixture, labels=labels[:, [1, 0]]).loss.item(), rel=1e-6
    )
    assert output.loss.item() == pytest.approx(
        permutation_invariant_si_snr_loss(output.audio_values, labels).item()
    )
    music = DPRNNTasNetForSourceSeparation(tiny_config(source_names=["vocals", "accompaniment"])).eval()
    output = music(mixture, labels=labels)
    assert output.loss.item() == pytest.approx(F.l1_loss(output.audio_values, labels).item(), rel=1e-6)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    mixture, labels = torch.randn(2, 1, 600), torch.randn(2, 2, 1, 600)
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = DPRNNTasNetForSourceSeparation(tiny_config()).train()
        if checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            assert all(block.gradient_checkpointing for block in model.separator.blocks)
        model(mixture, labels=labels).loss.backward()
        gradients.append({name: p.grad.clone() for name, p in model.named_parameters()})
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, atol=1e-6, rtol=1e-5, msg=name)


# -- training ---------------------------------------------------------------------------------------


def synthetic_two_source_batch(
    generator: torch.Generator, batch: int, length: int, sampling_rate: int = 8000
):
    """Mixtures of a low harmonic tone and a gated high-pass noise, with random gains and pitches."""
    t = torch.arange(length) / sampling_rate
    f0 = 150 + 150 * torch.rand(batch, 1, generator=generator)
    tone = sum(
        torch.sin(2 * math.pi * k * f0 * t + 6.28 * torch.rand(batch, 1, generator=generator)) / k
        for k in (1, 2, 3)
    )
    noise = torch.randn(batch, length, generator=generator)
    noise = noise - F.avg_pool1d(noise[:, None], 5, stride=1, padding=2, count_include_pad=False)[:, 0]
    envelope = (torch.sin(2 * math.pi * (3 + 3 * torch.rand(batch, 1, generator=generator)) * t) > 0).float()
    sources = torch.stack((tone, noise * envelope), dim=1)
    sources = (
        sources / sources.std(dim=-1, keepdim=True) * (0.5 + torch.rand(batch, 2, 1, generator=generator))
    )
    return sources.sum(dim=1, keepdim=True), sources[:, :, None]


def test_short_training_run_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = DPRNNTasNetForSourceSeparation(tiny_config()).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(15):
        mixture, sources = synthetic_two_source_batch(generator, batch=4, length=600)
        loss = model(mixture, labels=sources).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 6.0, (first, last)  # at least 6 dB of SI-SNR gained (about 11 dB here)
