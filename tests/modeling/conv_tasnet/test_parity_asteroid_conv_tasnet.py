"""Parity with asteroid's ConvTasNet (PyPI ``asteroid`` 0.7.0, ``asteroid-filterbanks`` 0.4.0).

asteroid models are built with random weights (every parameter perturbed, batch-norm statistics
randomised), written as the package asteroid's ``serialize()`` produces (``model_name``,
``model_args``, ``state_dict``, ``infos``; ``serialize`` itself only adds the pytorch-lightning
version, which is not installed), converted with ``demixers``' converter, reloaded with
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
from demixers.modeling.conv_tasnet import ConvTasNetConfig, ConvTasNetForSourceSeparation  # noqa: E402
from demixers.modeling.conv_tasnet import convert_conv_tasnet_asteroid_to_hf as converter  # noqa: E402
from tests.modeling.parity_utils import perturb_parameters, relative_max_difference, speech_batch  # noqa: E402

demixers.register_model_family(ConvTasNetConfig, ConvTasNetForSourceSeparation)

SMALL = dict(
    n_src=2, n_blocks=3, n_repeats=2, bn_chan=16, hid_chan=24, skip_chan=12, n_filters=20, kernel_size=8
)
VARIANTS = {
    "paper_layout": {},
    "no_skip_v1": dict(skip_chan=0),
    "causal_cln": dict(causal=True, norm_type="cLN"),
    "causal_cgln_even_kernel": dict(causal=True, norm_type="cgLN", conv_kernel_size=2),
    "batch_norm_softmax_relu_encoder": dict(
        norm_type="bN", mask_act="softmax", encoder_activation="relu", stride=3, kernel_size=7, n_src=3
    ),
    "relu_masks_16k": dict(mask_act="relu", sample_rate=16000, conv_kernel_size=5),
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
            },
            "final_metrics": {"si_sdr": 14.5, "si_sdr_imp": 14.2},
        },
    }


def build_asteroid(cls: type, **kwargs: Any) -> torch.nn.Module:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # asteroid warns about causal norms
        return randomized(cls(**kwargs))


def convert(model: torch.nn.Module, tmp_path: Path) -> ConvTasNetForSourceSeparation:
    torch.save(asteroid_package(model), tmp_path / "pytorch_model.bin")
    folder = converter.convert_checkpoint(tmp_path, tmp_path / "converted")
    return ConvTasNetForSourceSeparation.from_pretrained(folder).eval()


def max_relative_difference(
    reference: torch.nn.Module, model: ConvTasNetForSourceSeparation, lengths
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
        reference = perturb_parameters(ConvTasNet(**kwargs)).eval()
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
    reference = build_asteroid(ConvTasNet, **{**SMALL, **VARIANTS[variant]})
    model = convert(reference, tmp_path)
    args = reference.get_model_args()
    assert model.config.num_sources == args["n_src"]
    assert model.config.causal == args["causal"]
    assert max_relative_difference(reference, model, (16, 1001, 1600, 4003)) <= 1e-5


def test_converted_config_and_preprocessor(tmp_path: Path) -> None:
    reference = build_asteroid(ConvTasNet, **SMALL)
    model = convert(reference, tmp_path)
    config = model.config
    assert config.source_names == ["speaker_1", "speaker_2"] and config.permutation_invariant
    assert (config.sampling_rate, config.encoder_stride, config.skip_channels) == (
        8000,
        8,
        12,
    )  # asteroid: stride 8
    assert (config.mask_activation, config.encoder_activation, config.norm_type) == (
        "sigmoid",
        "linear",
        "gln",
    )
    assert (tmp_path / "converted" / "preprocessor_config.json").is_file()
    # the last block's residual convolution is dead in asteroid (skip path) and is dropped
    asteroid_count = sum(p.numel() for p in reference.parameters())
    dead = 24 * 16 + 16  # hid_chan -> bn_chan 1x1 conv with bias
    assert sum(p.numel() for p in model.parameters()) == asteroid_count - dead


def test_cli_run_converts(tmp_path: Path, capsys) -> None:
    reference = build_asteroid(ConvTasNet, **SMALL)
    torch.save(asteroid_package(reference), tmp_path / "model.pth")
    parser = argparse.ArgumentParser()
    converter.configure_parser(parser)
    assert converter.run(parser.parse_args([str(tmp_path / "model.pth"), str(tmp_path / "out")])) == 0
    assert "Conv-TasNet" in capsys.readouterr().out
    model = ConvTasNetForSourceSeparation.from_pretrained(tmp_path / "out").eval()
    assert max_relative_difference(reference, model, (1001,)) <= 1e-5


def test_lightning_prefixed_state_dict_converts(tmp_path: Path) -> None:
    reference = build_asteroid(ConvTasNet, **SMALL)
    package = asteroid_package(reference)
    package["state_dict"] = {f"model.{key}": value for key, value in package["state_dict"].items()}
    torch.save(package, tmp_path / "pytorch_model.bin")
    model = ConvTasNetForSourceSeparation.from_pretrained(
        converter.convert_checkpoint(tmp_path, tmp_path / "out")
    )
    assert max_relative_difference(reference, model.eval(), (800,)) <= 1e-5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.update(model_name="DPRNNTasNet"), "not one of"),
        (lambda p: p["model_args"].update(fb_name="AnalyticFreeFB"), "free filterbank"),
        (lambda p: p["model_args"].update(out_chan=10), "out_chan"),
        (lambda p: p["model_args"].update(mask_act="gelu"), "mask_act"),
        (lambda p: p["model_args"].update(norm_type="fgLN"), "norm_type"),
        (lambda p: p["model_args"].update(who_knows=1), "who_knows"),
        (
            lambda p: p["state_dict"].pop("masker.TCN.0.res_conv.bias"),
            r"missing keys .*blocks\.0\.residual_conv\.bias",
        ),
        (lambda p: p["state_dict"].update({"masker.extra.weight": torch.zeros(1)}), r"masker\.extra\.weight"),
        (lambda p: p.pop("model_args"), "not an asteroid model package"),
    ],
)
def test_unsupported_packages_are_refused(change, message: str, tmp_path: Path) -> None:
    package = asteroid_package(build_asteroid(ConvTasNet, **SMALL))
    change(package)
    torch.save(package, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=message):
        converter.convert_checkpoint(tmp_path / "pytorch_model.bin", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_folder_must_hold_one_checkpoint(tmp_path: Path) -> None:
    package = asteroid_package(build_asteroid(ConvTasNet, **SMALL))
    torch.save(package, tmp_path / "a.pth")
    torch.save(package, tmp_path / "b.bin")
    with pytest.raises(ValueError, match="exactly one"):
        converter.convert_checkpoint(tmp_path, tmp_path / "out")


def test_dprnn_package_is_refused_with_its_name(tmp_path: Path) -> None:
    package = asteroid_package(
        build_asteroid(DPRNNTasNet, n_src=2, n_repeats=1, bn_chan=8, hid_size=4, n_filters=8)
    )
    torch.save(package, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="'DPRNNTasNet'"):
        converter.convert_checkpoint(tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_full_size_default_parity(tmp_path: Path) -> None:
    """asteroid's default ConvTasNet is the paper's best model, which is our default config."""
    reference = build_asteroid(ConvTasNet, n_src=2)
    assert (
        converter.config_from_model_args(reference.get_model_args()).to_dict() == ConvTasNetConfig().to_dict()
    )
    model = convert(reference, tmp_path)
    assert max_relative_difference(reference, model, (4000, 8003)) <= 1e-5
