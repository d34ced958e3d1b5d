"""The RoFormers' multi-resolution STFT loss against a direct computation and lucidrains' package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from demixers.trainers.config import ConfigError, load_config
from demixers.trainers.losses import (
    STFT_LOSS_WINDOW_SIZES,
    compute_loss,
    loss_options,
    multi_resolution_stft_loss,
)


def numpy_stft(signal: np.ndarray, window_size: int, n_fft: int, hop: int) -> np.ndarray:
    """Centred STFT written out: reflect-pad by n_fft // 2, frames every ``hop`` samples, a periodic
    Hann window of ``window_size`` samples centred in ``n_fft``, one-sided FFT."""
    padded = np.pad(signal, n_fft // 2, mode="reflect")
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window_size) / window_size)
    window = np.zeros(n_fft)
    left = (n_fft - window_size) // 2
    window[left : left + window_size] = hann
    frames = 1 + (padded.size - n_fft) // hop
    stacked = np.stack([padded[k * hop : k * hop + n_fft] * window for k in range(frames)])
    return np.fft.rfft(stacked, axis=-1)


def direct_loss(
    estimates: np.ndarray, references: np.ndarray, weight: float, sizes, hop: int, n_fft: int
) -> tuple[float, np.ndarray]:
    """(loss, per-source): mean |waveform error| + weight * sum over sizes of mean |STFT error|."""
    num_sources = estimates.shape[1]
    per_source = np.zeros(num_sources)
    for source in range(num_sources):
        est, ref = estimates[:, source], references[:, source]  # (batch, channels, time)
        per_source[source] = np.abs(est - ref).mean()
        for size in sizes:
            errors = [
                np.abs(
                    numpy_stft(est[b, c], size, max(size, n_fft), hop)
                    - numpy_stft(ref[b, c], size, max(size, n_fft), hop)
                ).mean()
                for b in range(est.shape[0])
                for c in range(est.shape[1])
            ]
            per_source[source] += weight * np.mean(errors)
    return float(per_source.mean()), per_source


def test_multi_resolution_stft_loss_equals_a_direct_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    references = torch.randn(1, 3, 2, 4000, generator=generator, dtype=torch.float64)
    estimates = references + 0.3 * torch.randn(references.shape, generator=generator, dtype=torch.float64)
    for weight, sizes, hop, n_fft in ((1.0, STFT_LOSS_WINDOW_SIZES, 147, 2048), (0.5, (512, 64), 100, 256)):
        result = multi_resolution_stft_loss(
            estimates, references, weight=weight, window_sizes=sizes, hop_length=hop, n_fft=n_fft
        )
        expected, per_source = direct_loss(estimates.numpy(), references.numpy(), weight, sizes, hop, n_fft)
        assert float(result.loss) == pytest.approx(expected, rel=1e-9)
        np.testing.assert_allclose(result.per_source.numpy(), per_source, rtol=1e-9)
    dispatched = compute_loss("multi_resolution_stft", estimates, references)
    assert float(dispatched.loss) == pytest.approx(
        float(multi_resolution_stft_loss(estimates, references).loss)
    )


def test_multi_resolution_stft_loss_equals_lucidrains_bs_roformer_loss() -> None:
    bs_roformer = pytest.importorskip("bs_roformer")
    torch.manual_seed(0)
    model = bs_roformer.BSRoformer(
        dim=16,
        depth=1,
        stereo=True,
        num_stems=2,
        time_transformer_depth=1,
        freq_transformer_depth=1,
        dim_head=8,
        heads=2,
        num_residual_streams=1,
        multi_stft_resolution_loss_weight=0.7,
    ).eval()
    audio = 0.1 * torch.randn(2, 2, 512 * 12)  # a multiple of the model's hop: istft keeps the length
    target = 0.1 * torch.randn(2, 2, 2, 512 * 12)
    with torch.no_grad():
        estimate = model(audio)
        total, (waveform_term, stft_term) = model(audio, target=target, return_loss_breakdown=True)
    assert estimate.shape == target.shape
    ours = multi_resolution_stft_loss(estimate, target, weight=0.7)
    assert float(ours.loss) == pytest.approx(float(total), rel=1e-6)
    plain = multi_resolution_stft_loss(estimate, target, weight=0.0)
    assert float(plain.loss) == pytest.approx(float(waveform_term), rel=1e-6)
    assert float(ours.loss - plain.loss) / 0.7 == pytest.approx(float(stft_term), rel=1e-6)


def test_padding_gradient_and_errors() -> None:
    generator = torch.Generator().manual_seed(1)
    references = torch.randn(2, 2, 1, 3000, generator=generator)
    estimates = (references + 0.2 * torch.randn(references.shape, generator=generator)).requires_grad_()
    options = dict(window_sizes=(256, 128), hop_length=64, n_fft=256)
    # padding (mask 0) is ignored: changing the padded samples changes nothing
    mask = torch.ones(2, 3000)
    mask[1, 2000:] = 0
    first = multi_resolution_stft_loss(estimates, references, mask, **options)
    noisy = estimates.detach().clone()
    noisy[1, ..., 2000:] += 5.0
    second = multi_resolution_stft_loss(noisy, references, mask, **options)
    assert float(first.loss.detach()) == pytest.approx(float(second.loss), rel=1e-6)
    # an all-ones mask is the unmasked loss
    assert float(multi_resolution_stft_loss(estimates, references, torch.ones(2, 3000), **options).loss) == (
        pytest.approx(float(multi_resolution_stft_loss(estimates, references, **options).loss), rel=1e-6)
    )
    first.loss.backward()
    assert torch.isfinite(estimates.grad).all() and estimates.grad.abs().sum() > 0
    perfect = multi_resolution_stft_loss(references.clone().requires_grad_(), references, **options)
    assert float(perfect.loss) == 0.0
    with pytest.raises(ValueError, match="more than 2048 samples"):
        multi_resolution_stft_loss(estimates[..., :2048], references[..., :2048])
    for bad, error in (
        ({"weight": -1.0}, ValueError),
        ({"weight": float("nan")}, ValueError),
        ({"window_sizes": ()}, ValueError),
        ({"window_sizes": (256, 0)}, ValueError),
        ({"window_sizes": (256.0,)}, TypeError),
        ({"hop_length": 0}, ValueError),
        ({"n_fft": 1 << 20}, ValueError),
        ({"normalized": "no"}, TypeError),
    ):
        with pytest.raises(error):
            multi_resolution_stft_loss(estimates, references, **{**options, **bad})


def recipe_text(extra: str) -> str:
    head = "model:\n  type: demucs\ndata:\n  dataset: somewhere\n"
    return f"{head}training:\n  loss: multi_resolution_stft\n{extra}"


def test_recipe_fields_are_validated_and_reach_the_loss(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe_text("  stft_loss_weight: 0.5\n  stft_loss_window_sizes: [1024, 256]\n"))
    config = load_config(path, ["--training.stft_loss_hop_length=100"])
    options = loss_options(config["training"])
    assert (options["stft_weight"], options["stft_window_sizes"], options["stft_hop_length"]) == (
        0.5,
        (1024, 256),
        100,
    )
    assert (options["stft_n_fft"], options["stft_normalized"]) == (2048, False)
    defaults = loss_options(load_config(None, [("model.type", "x"), ("data.dataset", "y")])["training"])
    assert (
        defaults["stft_window_sizes"] == (4096, 2048, 1024, 512, 256) and defaults["stft_hop_length"] == 147
    )
    for extra, message in (
        ("  stft_loss_weight: -1\n", "stft_loss_weight"),
        ("  stft_loss_window_sizes: []\n", "stft_loss_window_sizes"),
        ("  stft_loss_window_sizes: [1024, 0]\n", "stft_loss_window_sizes"),
        ("  stft_loss_window_sizes: [1024, x]\n", "stft_loss_window_sizes"),
        ("  stft_loss_hop_length: 0\n", "stft_loss_hop_length"),
        ("  stft_loss_n_fft: 1000000\n", "stft_loss_n_fft"),
        ("  stft_loss_normalized: maybe\n", "stft_loss_normalized"),
        ("  stft_loss_windows: [1024]\n", "stft_loss_window_sizes"),  # a typo names the real key
    ):
        path.write_text(recipe_text(extra))
        with pytest.raises(ConfigError, match=message):
            load_config(path)
