"""Parity with asteroid's DPRNNTasNet (PyPI ``asteroid`` 0.7.0, ``asteroid-filterbanks`` 0.4.0).

asteroid models are built with random weights (every parameter perturbed, batch-norm statistics
randomised), written as the package asteroid's ``serialize()`` produces, converted, reloaded with
``from_pretrained`` and compared on several input lengths: ``max|ours - asteroid| <= 1e-5 *
max|asteroid|``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

asteroid = pytest.importorskip("asteroid")
from asteroid.models import ConvTasNet, DPRNNTasNet  # noqa: E402

import demixers  # noqa: E402
from demixers.modeling.dprnn_tasnet import DPRNNTasNetConfig, DPRNNTasNetForSourceSeparation  # noqa: E402
from demixers.modeling.dprnn_tasnet import convert_dprnn_tasnet_asteroid_to_hf as converter  # noqa: E402
from tests.modeling.parity_utils import perturb_parameters, relative_max_difference, speech_batch  # noqa: E402

demixers.register_model_family(DPRNNTasNetConfig, DPRNNTasNetForSourceSeparation)

SMALL = dict(n_src=2, bn_chan=12, hid_size=10, chunk_size=10, n_repeats=2, n_filters=16, kernel_size=8)
VARIANTS = {
    "asteroid_layout": {},
    "cln_gru_unidirectional": dict(norm_type="cLN", bidirectional=False, rnn_type="GRU"),
    "mulcat_two_layers_odd_hop": dict(use_mulcat=True, num_layers=2, hop_size=3, chunk_size=7),
    "batch_norm_relu_rnn_three_speakers": dict(
        norm_type="bN", mask_act="relu", encoder_activation="relu", n_src=3, rnn_type="RNN"
    ),
    "paper_window_2_hop_1": dict(kernel_size=2, stride=1, chunk_size=20),
}


def randomized(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    return model.eval()


def asteroid_package(model: torch.nn.Module) -> dict[str, Any]:
    """What asteroid's ``BaseModel.serialize()`` returns (minus the lightning version)."""
    return {
        "model_name": type(model).__name__,
        "state_dict": model.get_state_dict(),
        "model_args": model.get_model_args(),
        "infos": {
            "software_versions": {
                "torch_version": torch.__version__,
                "asteroid_version": asteroid.__version__,
            }
        },
    }


def build_asteroid(cls: type, **kwargs: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about dropout with one RNN layer
        return randomized(cls(**kwargs))


def convert(model: torch.nn.Module, tmp_path: Path) -> DPRNNTasNetForSourceSeparation:
    torch.save(asteroid_package(model), tmp_path / "pytorch_model.bin")
    folder = converter.convert_checkpoint(tmp_path, tmp_path / "converted")
    return DPRNNTasNetForSourceSeparation.from_pretrained(folder).eval()


def max_relative_difference(
    reference: torch.nn.Module, model: DPRNNTasNetForSourceSeparation, lengths
) -> float:
    generator = torch.Generator().manual_seed(1)
    worst = 0.0
    for length in lengths:
        mixture = torch.randn(2, 1, length, generator=generator)
        with torch.no_grad():
            expected = reference(mixture)
            actual = model(mixture).audio_values[:, :, 0]
        assert actual.shape == expected.shape
        scale = expected.abs().max()
        assert torch.isfinite(expected).all() and scale > 0
        worst = max(worst, float((actual - expected).abs().max() / scale))
    return worst


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parity_with_asteroid_on_speech_with_perturbed_weights(variant: str, tmp_path: Path) -> None:
    """The shared perturbation (every parameter and batch-norm statistic, 0.02 N(0, 1)) applied to
    the freshly built asteroid model before converting, on voice-like mixtures: <= 1e-5."""
    kwargs = {**SMALL, **VARIANTS[variant]}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = perturb_parameters(DPRNNTasNet(**kwargs)).eval()
    model = convert(reference, tmp_path)
    rate = kwargs.get("sample_rate", 8000)
    worst = 0.0
    for length in (rate // 2 + 3, 2 * rate):
        mixture = speech_batch(length, rate)
        with torch.no_grad():
            expected = reference(mixture)
            actual = model(mixture).audio_values[:, :, 0]
        assert actual.shape == expected.shape and torch.isfinite(expected).all() and expected.abs().max() > 0
        worst = max(worst, relative_max_difference(actual, expected))
    print(f"{variant}: perturbed weights, speech: relative {worst:.3e}")
    assert worst <= 1e-5


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parity_with_asteroid(variant: str, tmp_path: Path) -> None:
    reference = build_asteroid(DPRNNTasNet, **{**SMALL, **VARIANTS[variant]})
    model = convert(reference, tmp_path)
    args = reference.get_model_args()
    assert (model.config.chunk_size, model.config.hop_size) == (args["chunk_size"], args["hop_size"])
    assert max_relative_difference(reference, model, (16, 101, 1001, 1603)) <= 1e-5


def test_converted_config(tmp_path: Path) -> None:
    model = convert(build_asteroid(DPRNNTasNet, **SMALL), tmp_path)
    config = model.config
    assert config.source_names == ["speaker_1", "speaker_2"] and config.permutation_invariant
    assert (config.encoder_kernel_size, config.encoder_stride, config.encoder_channels) == (8, 8, 16)
    assert (config.bottleneck_channels, config.hidden_size, config.num_blocks) == (12, 10, 2)
    assert (config.rnn_type, config.bidirectional, config.mask_activation) == ("lstm", True, "sigmoid")
    assert (tmp_path / "converted" / "preprocessor_config.json").is_file()


def test_cli_run_converts(tmp_path: Path, capsys) -> None:
    reference = build_asteroid(DPRNNTasNet, **SMALL)
    torch.save(asteroid_package(reference), tmp_path / "model.pth")
    parser = argparse.ArgumentParser()
    converter.configure_parser(parser)
    assert converter.run(parser.parse_args([str(tmp_path / "model.pth"), str(tmp_path / "out")])) == 0
    assert "DPRNN-TasNet" in capsys.readouterr().out
    model = DPRNNTasNetForSourceSeparation.from_pretrained(tmp_path / "out").eval()
    assert max_relative_difference(reference, model, (1001,)) <= 1e-5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(model_name="ConvTasNet"), "not one of"),
        (lambda p: p["model_args"].update(fb_name="ParamSincFB"), "free filterbank"),
        (lambda p: p["model_args"].update(mask_act="softmax"), "softmax"),
        (lambda p: p["model_args"].update(norm_type="cgLN"), "norm_type"),
        (lambda p: p["model_args"].update(rnn_type="SRU"), "rnn_type"),
        (lambda p: p["model_args"].update(out_chan=4), "out_chan"),
        (lambda p: p["model_args"].update(extra=True), "extra"),
        (
            lambda p: p["state_dict"].pop("masker.net.1.inter_linear.bias"),
            r"blocks\.1\.inter\.projection\.bias",
        ),
        (lambda p: p["state_dict"].update({"masker.unknown": torch.zeros(1)}), r"masker\.unknown"),
    ],
)
def test_unsupported_packages_are_refused(change, message: str, tmp_path: Path) -> None:
    package = asteroid_package(build_asteroid(DPRNNTasNet, **SMALL))
    change(package)
    torch.save(package, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=message):
        converter.convert_checkpoint(tmp_path / "pytorch_model.bin", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_conv_tasnet_package_is_refused_with_its_name(tmp_path: Path) -> None:
    package = asteroid_package(build_asteroid(ConvTasNet, n_src=2, n_blocks=1, n_repeats=1, n_filters=8))
    torch.save(package, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="'ConvTasNet'"):
        converter.convert_checkpoint(tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_full_size_default_parity(tmp_path: Path) -> None:
    """Our default (the paper's best: window 2, K=250, 64 features) built in asteroid, on a short input."""
    reference = build_asteroid(
        DPRNNTasNet, n_src=2, n_filters=64, kernel_size=2, stride=1, bn_chan=64, chunk_size=250
    )
    assert (
        converter.config_from_model_args(reference.get_model_args()).to_dict()
        == DPRNNTasNetConfig().to_dict()
    )
    model = convert(reference, tmp_path)
    assert max_relative_difference(reference, model, (2000,)) <= 1e-5


@pytest.mark.slow
def test_asteroid_default_parity(tmp_path: Path) -> None:
    """asteroid's own default (window 16, hop 8, K=100, 128 features), the cheaper configuration."""
    reference = build_asteroid(DPRNNTasNet, n_src=2)
    model = convert(reference, tmp_path)
    assert (model.config.encoder_kernel_size, model.config.chunk_size, model.config.bottleneck_channels) == (
        16,
        100,
        128,
    )
    assert max_relative_difference(reference, model, (8000,)) <= 1e-5
