"""Conversion of official DTTNet checkpoints (state dicts with the official key layout, made by
`ReferenceDPTDFNet`), saved as Lightning-style ``.ckpt`` files."""

from __future__ import annotations

import argparse
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

from demixers.modeling.dttnet import DTTNetConfig, DTTNetForSourceSeparation
from demixers.modeling.dttnet.convert_dttnet_original_to_hf import (
    RecordedObject,
    configure_parser,
    convert_checkpoint,
    convert_state_dict,
    load_checkpoint,
    load_original_model,
    restricted_load,
    run,
)
from tests.modeling.dttnet.reference_dttnet import ReferenceDPTDFNet
from tests.modeling.dttnet.tiny_configs import TINY_REFERENCE_KWARGS
from tests.modeling.parity_utils import music_batch, perturb_parameters, relative_max_difference

FAKE_MODULE = "omegaconf_stand_in_for_tests.dictconfig"

PARITY_CASES = {
    # the release's shape of things, scaled down: 1 level, 2 heads of 16 channels, BiLSTM, bn 4
    "lstm": dict(TINY_REFERENCE_KWARGS),
    # 2 levels, 1 head of 48 channels (3 GroupNorm groups), unidirectional GRU, single TDF layer, bias
    "gru": {
        **TINY_REFERENCE_KWARGS,
        "num_blocks": 5,
        "g": 16,
        "bn": 0,
        "bias": True,
        "rnn_type": "GRU",
        "bidirectional": False,
        "num_layers": 1,
        "n_heads": 1,
        "overlap": 96,
        "audio_ch": 1,
    },
}


def _randomise_norm_statistics(module: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for child in module.modules():
            if isinstance(child, torch.nn.BatchNorm2d):
                child.running_mean.copy_(0.1 * torch.randn(child.running_mean.shape, generator=generator))
                child.running_var.copy_(0.5 + torch.rand(child.running_var.shape, generator=generator))
                child.weight.copy_(1 + 0.2 * torch.randn(child.weight.shape, generator=generator))
                child.bias.copy_(0.1 * torch.randn(child.bias.shape, generator=generator))
                child.num_batches_tracked.fill_(7)
            elif isinstance(child, torch.nn.GroupNorm):
                child.weight.copy_(1 + 0.2 * torch.randn(child.weight.shape, generator=generator))
                child.bias.copy_(0.1 * torch.randn(child.bias.shape, generator=generator))


def make_reference(kwargs: dict[str, Any], seed: int = 0) -> ReferenceDPTDFNet:
    torch.manual_seed(seed)
    reference = ReferenceDPTDFNet(**kwargs)
    _randomise_norm_statistics(reference, seed + 1)
    with torch.no_grad():  # outputs of order 0.1, so that the tolerances below mean something
        reference.final_conv[0].weight.mul_(50.0)
    return reference.eval()


class _StandInDictConfig:
    """Pickled under a module name that does not exist when the checkpoint is read back."""

    def __init__(self, content: dict[str, Any]) -> None:
        self.content = content

    def __getstate__(self) -> dict[str, Any]:
        return {"_metadata": None, "_parent": None, "_content": self.content}


def save_lightning_checkpoint(
    path: Path, state_dict: dict[str, torch.Tensor], hyper_parameters: dict[str, Any] | None, prefix: str = ""
) -> None:
    """A ``.ckpt`` as PyTorch Lightning writes it, with an OmegaConf-like object as hyper-parameters."""
    package_name = FAKE_MODULE.split(".")[0]
    package, module = types.ModuleType(package_name), types.ModuleType(FAKE_MODULE)
    package.dictconfig = module
    _StandInDictConfig.__module__ = FAKE_MODULE
    _StandInDictConfig.__qualname__ = "DictConfig"
    module.DictConfig = _StandInDictConfig
    sys.modules[package_name], sys.modules[FAKE_MODULE] = package, module
    try:
        checkpoint: dict[str, Any] = {
            "epoch": 12,
            "global_step": 3456,
            "pytorch-lightning_version": "1.9.5",
            "state_dict": {prefix + key: value for key, value in state_dict.items()},
            "loops": {"fit_loop": {"state_dict": {}}},
            "callbacks": {"ModelCheckpoint": {"best_model_score": torch.tensor(9.5)}},
            "optimizer_states": [],
            "lr_schedulers": [],
        }
        if hyper_parameters is not None:
            checkpoint["hyper_parameters"] = _StandInDictConfig(hyper_parameters)
        torch.save(checkpoint, path)
    finally:
        del sys.modules[FAKE_MODULE], sys.modules[package_name]
        _StandInDictConfig.__module__ = __name__
        _StandInDictConfig.__qualname__ = "_StandInDictConfig"


def _hyper_parameters(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {
        "target_name": "vocals",
        "lr": 0.0001,
        "optimizer": "adamW",
        "dim_f": kwargs["dim_f"],
        "dim_t": kwargs["dim_t"],
        "n_fft": kwargs["n_fft"],
        "hop_length": kwargs["hop_length"],
        "overlap": kwargs["overlap"],
        "audio_ch": kwargs.get("audio_ch", 2),
        "block_type": "TFC_TDF_Res2",
        "bandsequence": {"rnn_type": kwargs.get("rnn_type", "LSTM"), "num_layers": kwargs["num_layers"]},
    }


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_converted_model_matches_the_release_inference(tmp_path: Path, case: str) -> None:
    kwargs = PARITY_CASES[case]
    reference = make_reference(kwargs)
    path = tmp_path / "vocals.ckpt"
    save_lightning_checkpoint(path, reference.state_dict(), _hyper_parameters(kwargs))
    assert FAKE_MODULE.split(".")[0] not in sys.modules

    model = load_original_model(path)
    assert FAKE_MODULE.split(".")[0] not in sys.modules, (
        "the loader imported a module named by the checkpoint"
    )
    config = model.config
    assert config.source_names == ["vocals", "accompaniment"]
    assert (config.n_fft, config.hop_length, config.dim_f, config.dim_t) == (
        kwargs["n_fft"],
        kwargs["hop_length"],
        kwargs["dim_f"],
        kwargs["dim_t"],
    )
    assert config.overlap_samples == kwargs["overlap"]
    assert config.num_blocks == kwargs["num_blocks"] and config.growth == kwargs["g"]
    assert config.num_heads == kwargs["n_heads"] and config.rnn_type == kwargs.get("rnn_type", "LSTM").lower()
    assert config.bidirectional == kwargs.get("bidirectional", True)
    assert config.tdf_bottleneck_factor == kwargs["bn"] and config.tdf_bias == kwargs.get("bias", False)

    channels = kwargs.get("audio_ch", 2)
    generator = torch.Generator().manual_seed(3)
    mixture = 0.3 * torch.randn(channels, 2345, generator=generator)  # 4 chunks, not a multiple of the stride
    expected = reference.no_overlap_inference(mixture)
    with torch.no_grad():
        audio = model(input_values=mixture[None]).audio_values[0]
    torch.testing.assert_close(audio[0], expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(audio[1], mixture - expected, atol=2e-5, rtol=1e-4)
    assert expected.abs().max() > 5e-2  # not a trivially silent comparison


# max |ours - reference| / max |reference| on music with perturbed weights
MUSIC_TOLERANCE = 1e-5


@pytest.mark.parametrize("case", sorted(PARITY_CASES))
def test_converted_model_matches_on_music_with_perturbed_weights(tmp_path: Path, case: str) -> None:
    """Every parameter and batch-norm statistic perturbed by the shared 0.02 N(0, 1), music input."""
    kwargs = PARITY_CASES[case]
    torch.manual_seed(0)
    reference = perturb_parameters(ReferenceDPTDFNet(**kwargs), seed=11).eval()
    with torch.no_grad():  # outputs of order 0.1 on music, so the relative figure means something
        reference.final_conv[0].weight.mul_(50.0)
    path = tmp_path / "vocals.ckpt"
    save_lightning_checkpoint(path, reference.state_dict(), _hyper_parameters(kwargs))
    model = load_original_model(path)
    channels = kwargs.get("audio_ch", 2)
    mixture = music_batch(2345, channels=channels, batch=1)[0]  # 4 chunks, not a multiple of the stride
    expected = reference.no_overlap_inference(mixture)
    with torch.no_grad():
        audio = model(input_values=mixture[None]).audio_values[0]
    relative = relative_max_difference(audio[0], expected)
    print(f"DTTNet {case}: perturbed weights, music: relative {relative:.3e}")
    assert expected.abs().max() > 1e-2  # not a trivially silent comparison
    assert relative <= MUSIC_TOLERANCE
    assert relative_max_difference(audio[1], mixture - expected) <= MUSIC_TOLERANCE


def test_default_config_has_the_official_key_layout() -> None:
    """Every parameter/buffer of the released architecture maps one-to-one onto ours (no forward)."""
    reference = ReferenceDPTDFNet()  # the released vocals hyper-parameters
    converted, unknown = convert_state_dict(reference.state_dict())
    assert not unknown
    ours = DTTNetForSourceSeparation(DTTNetConfig()).state_dict()
    assert set(converted) == set(ours)
    assert all(converted[key].shape == ours[key].shape for key in ours)
    trainable = sum(p.numel() for p in reference.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in DTTNetForSourceSeparation(DTTNetConfig()).parameters())
    assert "window" in reference.state_dict() and "freq_pad" in reference.state_dict()


def test_restricted_loader_records_foreign_classes_without_importing_them(tmp_path: Path) -> None:
    reference = make_reference(PARITY_CASES["lstm"])
    path = tmp_path / "last.ckpt"
    save_lightning_checkpoint(path, reference.state_dict(), _hyper_parameters(PARITY_CASES["lstm"]))
    with pytest.raises(Exception, match=r"(?i)weights.only|unpickl|global"):
        torch.load(path, weights_only=True)
    loaded, recorded = restricted_load(path)
    assert recorded == {f"{FAKE_MODULE}.DictConfig"}
    assert FAKE_MODULE.split(".")[0] not in sys.modules
    hyper = loaded["hyper_parameters"]
    assert isinstance(hyper, RecordedObject) and hyper.qualified_name == f"{FAKE_MODULE}.DictConfig"
    assert hyper.state["_content"]["dim_t"] == 16
    assert loaded["epoch"] == 12 and loaded["global_step"] == 3456
    for key, value in reference.state_dict().items():
        assert torch.equal(loaded["state_dict"][key], value), key
    assert torch.equal(loaded["callbacks"]["ModelCheckpoint"]["best_model_score"], torch.tensor(9.5))


def test_plain_state_dict_with_prefix_and_overrides(tmp_path: Path) -> None:
    # no hyper-parameters: what the weights cannot tell comes from the release or from overrides
    reference = make_reference(PARITY_CASES["lstm"], seed=5)
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in reference.state_dict().items()}}, path)
    assert isinstance(load_checkpoint(path), dict)  # plain tensors: the weights-only loader reads it
    with pytest.raises(ValueError, match="hop_length"):
        load_original_model(path)  # the release's 1024-sample hop does not fit this 256-point STFT
    model = load_original_model(
        path,
        target="drums",
        residual_name=None,
        overrides={"dim_t": 16, "overlap_samples": 128, "hop_length": 64},
    )
    assert model.config.source_names == ["drums"]
    mixture = 0.3 * torch.randn(2, 2000)
    with torch.no_grad():
        audio = model(input_values=mixture[None]).audio_values[0]
    torch.testing.assert_close(audio[0], reference.no_overlap_inference(mixture), atol=2e-5, rtol=1e-4)


def test_cli_writes_a_loadable_folder(tmp_path: Path) -> None:
    kwargs = PARITY_CASES["lstm"]
    reference = make_reference(kwargs, seed=2)
    path = tmp_path / "bass.ckpt"
    hyper = {**_hyper_parameters(kwargs), "target_name": "bass"}
    save_lightning_checkpoint(path, reference.state_dict(), hyper, prefix="model.")
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    out = tmp_path / "converted"
    assert run(parser.parse_args([str(path), str(out)])) == 0
    assert (out / "model.safetensors").is_file() and (out / "preprocessor_config.json").is_file()
    model = DTTNetForSourceSeparation.from_pretrained(out).eval()
    assert model.config.source_names == ["bass", "residual"]
    mixture = 0.3 * torch.randn(2, 1500)
    with torch.no_grad():
        audio = model(input_values=mixture[None]).audio_values[0, 0]
    torch.testing.assert_close(audio, reference.no_overlap_inference(mixture), atol=2e-5, rtol=1e-4)
    with pytest.raises(FileExistsError):
        convert_checkpoint(path, out)
    assert convert_checkpoint(path, out, overwrite=True, residual_name="others") == out
    assert DTTNetConfig.from_pretrained(out).source_names == ["bass", "others"]


def test_unsupported_and_broken_checkpoints_raise_value_error(tmp_path: Path) -> None:
    reference = make_reference(PARITY_CASES["lstm"])
    state = reference.state_dict()
    # TFC_TDF_Res1 / TFC_TDF blocks name their convolutions `tfc`, not `tfc1`/`tfc2`
    renamed = {key.replace(".tfc1.", ".tfc."): value for key, value in state.items()}
    path = tmp_path / "res1.ckpt"
    torch.save({"state_dict": renamed}, path)
    with pytest.raises(ValueError, match="TFC_TDF_Res2"):
        load_original_model(path)
    truncated = {key: value for key, value in state.items() if "decoding_blocks" not in key}
    torch.save({"state_dict": truncated}, path)
    with pytest.raises(ValueError, match="decoder levels"):
        load_original_model(path)
    bad_window = dict(state, window=torch.ones_like(state["window"]))
    torch.save({"state_dict": bad_window}, path)
    with pytest.raises(ValueError, match="Hann"):
        load_original_model(path, overrides={"dim_t": 16, "overlap_samples": 128, "hop_length": 64})
    torch.save({"state_dict": {"encoder.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="first_conv"):
        load_original_model(path)
