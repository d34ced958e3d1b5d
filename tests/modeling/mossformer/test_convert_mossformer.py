"""Converting ModelScope's MossFormer release reproduces the reference model's output.

The reference is ModelScope's own source (the ``modelscope`` PyPI package), built with random
weights and saved in the release's layout: ``configuration.json`` + ``encoder.bin``,
``decoder.bin``, ``masknet.bin`` (the state dicts ``MossFormer.load_check_point`` reads).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel

from demixers import MossFormerConfig, MossFormerForSourceSeparation, SourceSeparationFeatureExtractor
from demixers.modeling.mossformer.convert_mossformer_original_to_hf import (
    configure_parser,
    convert_checkpoint,
    run,
)
from tests.modeling.mossformer.reference_modelscope import (
    RELEASE_MODEL_KWARGS,
    build_reference_model,
    check_reference_load_round_trip,
    reference_separate,
    save_official_layout,
)
from tests.modeling.parity_utils import perturb_parameters, speech_batch

SMALL = {
    **RELEASE_MODEL_KWARGS,
    "num_blocks": 2,
    "d_model": 32,
    "in_channels": 32,
    "out_channels": 32,
    "group_size": 16,
    "query_key_dim": 16,
}
LENGTHS = (1001, 1600, 17, 333, 4099)
RELATIVE_TOLERANCE = 1e-5


def relative_difference(
    model: MossFormerForSourceSeparation, reference: torch.nn.Module, mixture: torch.Tensor
) -> float:
    expected = reference_separate(reference, mixture)
    with torch.no_grad():
        actual = model(input_values=mixture).audio_values
    assert actual.shape == expected.shape == (mixture.shape[0], reference.num_spks, 1, mixture.shape[-1])
    return float((actual - expected).abs().max() / expected.abs().max())


def assert_parity(model: MossFormerForSourceSeparation, reference: torch.nn.Module, lengths=LENGTHS) -> None:
    generator = torch.Generator().manual_seed(1234)
    for length in lengths:
        mixture = 0.1 * torch.randn(2, length, generator=generator)
        difference = relative_difference(model, reference, mixture)
        assert difference <= RELATIVE_TOLERANCE, f"length {length}: relative difference {difference:.3g}"


def convert_and_load(source: Path, output: Path, **kwargs: Any) -> MossFormerForSourceSeparation:
    folder = convert_checkpoint(source, output, **kwargs)
    model, info = MossFormerForSourceSeparation.from_pretrained(folder, output_loading_info=True)
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(key), f"{key}: {info.get(key)}"
    return model.eval()


@pytest.fixture(scope="module")
def small_reference() -> torch.nn.Module:
    return build_reference_model(**SMALL)


@pytest.fixture(scope="module")
def official_folder(small_reference: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = save_official_layout(small_reference, tmp_path_factory.mktemp("modelscope") / "release", SMALL)
    check_reference_load_round_trip(build_reference_model(randomize=False, seed=7, **SMALL), folder)
    return folder


# -- the official layout ---------------------------------------------------------------------------


def test_official_folder_converts_with_parity(official_folder: Path, small_reference, tmp_path: Path) -> None:
    model = convert_and_load(official_folder, tmp_path / "converted")
    assert_parity(model, small_reference)
    config = model.config
    assert (config.hidden_size, config.num_hidden_layers, config.group_size, config.query_key_dim) == (
        32,
        2,
        16,
        16,
    )
    assert config.source_names == ["speaker_1", "speaker_2"] and config.sampling_rate == 8000


def test_converted_folder_is_complete(official_folder: Path, tmp_path: Path) -> None:
    folder = convert_checkpoint(official_folder, tmp_path / "converted")
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    assert json.loads((folder / "config.json").read_text())["model_type"] == "mossformer"
    assert type(AutoConfig.from_pretrained(folder)) is MossFormerConfig
    assert type(AutoModel.from_pretrained(folder)) is MossFormerForSourceSeparation
    extractor = AutoFeatureExtractor.from_pretrained(folder)
    assert isinstance(extractor, SourceSeparationFeatureExtractor)
    assert (extractor.sampling_rate, extractor.feature_size) == (8000, 1)
    assert not list(tmp_path.glob(".converted*")), "staging folders must not be left behind"


def test_cli_run_function(official_folder: Path, small_reference, tmp_path: Path, capsys) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args([str(official_folder), str(tmp_path / "out")])
    assert run(args) == 0
    assert str(tmp_path / "out") in capsys.readouterr().out
    model = MossFormerForSourceSeparation.from_pretrained(tmp_path / "out").eval()
    assert_parity(model, small_reference, lengths=(1001,))

    with pytest.raises(FileExistsError):
        run(parser.parse_args([str(official_folder), str(tmp_path / "out")]))
    assert run(parser.parse_args([str(official_folder), str(tmp_path / "out"), "--overwrite"])) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_demixers_convert_command(official_folder: Path, small_reference, tmp_path: Path, capsys) -> None:
    from demixers.cli import main

    output = tmp_path / "cli"
    argv = ["convert", "modelscope-mossformer", str(official_folder), str(output)]
    assert main(argv) == 0
    model = MossFormerForSourceSeparation.from_pretrained(output).eval()
    assert_parity(model, small_reference, lengths=(1001,))
    capsys.readouterr()
    assert main(argv) != 0  # exists already: one line on stderr, no traceback
    error = capsys.readouterr().err
    assert "exists" in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    assert main(["convert", "modelscope-mossformer", str(broken), str(tmp_path / "never")]) != 0
    error = capsys.readouterr().err
    assert "masknet.bin" in error and len(error.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "variant",
    [
        {"norm": "gln"},
        {"norm": "cln"},
        {"norm": "bn"},
        {"num_spks": 3, "bias": True},
        {"causal": True},
        {"kernel_size": 8, "stride": 4, "expansion_factor": 2.0 * 2},
    ],
    ids=["gln", "cln", "bn", "3spk-bias", "causal", "kernel8"],
)
def test_architecture_variants(variant: dict[str, Any], tmp_path: Path) -> None:
    kwargs = {**SMALL, **variant}
    reference = build_reference_model(seed=3, **kwargs)
    if kwargs["norm"] == "bn":  # give the running statistics non-trivial values
        with torch.no_grad():
            for module in reference.modules():
                if isinstance(module, torch.nn.BatchNorm1d):
                    module.running_mean.uniform_(-0.1, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
    source = save_official_layout(reference, tmp_path / "release", kwargs)
    model = convert_and_load(source, tmp_path / "converted")
    assert_parity(model, reference, lengths=(1001, 333))


@pytest.mark.parametrize(
    "variant", [{"norm": "gln"}, {"norm": "bn"}, {"causal": True}], ids=["gln", "bn", "causal"]
)
def test_parity_on_speech_with_perturbed_weights(variant: dict[str, Any], tmp_path: Path) -> None:
    """Every parameter and batch-norm statistic perturbed by the shared 0.02 N(0, 1) (scales, norm
    gains, PReLU slopes and offsets away from their constants), voice-like mixtures: <= 1e-5."""
    kwargs = {**SMALL, **variant}
    reference = perturb_parameters(build_reference_model(randomize=False, seed=5, **kwargs), seed=5)
    source = save_official_layout(reference, tmp_path / "release", kwargs)
    model = convert_and_load(source, tmp_path / "converted")
    worst = 0.0
    for length in (4001, 16000):
        mixture = speech_batch(length)[:, 0]  # (batch, time), as the reference takes it
        assert float(mixture.abs().max()) > 0.1
        worst = max(worst, relative_difference(model, reference, mixture))
    print(f"MossFormer {variant}: perturbed weights, speech: relative {worst:.3e}")
    assert worst <= RELATIVE_TOLERANCE


# -- one combined state dict -----------------------------------------------------------------------


def test_combined_state_dict_nested_and_prefixed(small_reference, tmp_path: Path) -> None:
    state = {f"module.{key}": value for key, value in small_reference.state_dict().items()}
    path = tmp_path / "checkpoint" / "model.ckpt"
    path.parent.mkdir()
    torch.save({"epoch": 3, "state_dict": state}, path)
    # no configuration.json: the architecture is read from the shapes; group_size cannot be
    model = convert_and_load(path, tmp_path / "converted", config_overrides={"group_size": 16})
    assert_parity(model, small_reference, lengths=(1001, 333))
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.query_key_dim) == (
        32,
        2,
        16,
    )


def test_combined_state_dict_next_to_configuration_json(small_reference, tmp_path: Path) -> None:
    folder = save_official_layout(small_reference, tmp_path / "release", SMALL)
    for part in ("encoder", "decoder", "masknet"):
        (folder / f"{part}.bin").unlink()
    state = {
        key.replace("mask_net.", "masknet."): value for key, value in small_reference.state_dict().items()
    }
    torch.save({"model": state}, folder / "mossformer.pth")
    model = convert_and_load(folder, tmp_path / "converted")  # a folder holding one combined file
    assert model.config.group_size == 16
    assert_parity(model, small_reference, lengths=(1001,))


# -- refusals --------------------------------------------------------------------------------------


class _Executed:
    """Unpickling this would create ``marker``: the converter must never do it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickled_objects_are_refused_not_executed(official_folder: Path, tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    source = tmp_path / "release"
    source.mkdir()
    for name in ("configuration.json", "encoder.bin", "decoder.bin"):
        (source / name).write_bytes((official_folder / name).read_bytes())
    masknet = torch.load(official_folder / "masknet.bin", weights_only=True)
    torch.save({**masknet, "hook": _Executed(marker)}, source / "masknet.bin")
    with pytest.raises(ValueError, match="weights_only"):
        convert_checkpoint(source, tmp_path / "converted")
    assert not marker.exists()
    assert not (tmp_path / "converted").exists()


def test_missing_and_unexpected_keys_are_listed(official_folder: Path, tmp_path: Path) -> None:
    source = tmp_path / "release"
    source.mkdir()
    for name in ("configuration.json", "encoder.bin", "decoder.bin"):
        (source / name).write_bytes((official_folder / name).read_bytes())
    masknet = torch.load(official_folder / "masknet.bin", weights_only=True)
    masknet.pop("conv1d_out.bias")
    masknet["extra.weight"] = torch.zeros(3)
    torch.save(masknet, source / "masknet.bin")
    with pytest.raises(ValueError, match=r"missing keys \(1\): mask_net\.sources_proj\.bias") as error:
        convert_checkpoint(source, tmp_path / "converted")
    assert "masknet.bin:extra.weight" in str(error.value)


def test_configuration_json_disagreeing_with_tensors_is_refused(
    official_folder: Path, tmp_path: Path
) -> None:
    source = tmp_path / "release"
    source.mkdir()
    for name in ("encoder.bin", "decoder.bin", "masknet.bin"):
        (source / name).write_bytes((official_folder / name).read_bytes())
    configuration = json.loads((official_folder / "configuration.json").read_text())
    configuration["model"]["num_blocks"] = 5
    (source / "configuration.json").write_text(json.dumps(configuration))
    with pytest.raises(ValueError, match="num_hidden_layers"):
        convert_checkpoint(source, tmp_path / "converted")


def test_not_a_release_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        convert_checkpoint(tmp_path / "nowhere", tmp_path / "converted")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"masknet\.bin"):
        convert_checkpoint(tmp_path / "empty", tmp_path / "converted")
    (tmp_path / "garbage.bin").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        convert_checkpoint(tmp_path / "garbage.bin", tmp_path / "converted")


# -- the full release architecture -----------------------------------------------------------------


@pytest.mark.slow
def test_full_size_parity(tmp_path: Path, capsys) -> None:
    reference = build_reference_model(seed=5)
    source = save_official_layout(reference, tmp_path / "release", RELEASE_MODEL_KWARGS)
    del reference
    reference = build_reference_model(randomize=False, seed=11)
    reference.load_check_point(str(source))  # ModelScope's own loader
    model = convert_and_load(source, tmp_path / "converted")
    assert sum(p.numel() for p in model.parameters()) == 42_101_834
    generator = torch.Generator().manual_seed(0)
    mixture = 0.1 * torch.randn(1, 3 * 8000 + 1, generator=generator)  # 3 s at 8 kHz, odd length
    difference = relative_difference(model, reference, mixture)
    with capsys.disabled():
        print(f"\nMossFormer full-size parity: max |ours - reference| / max |reference| = {difference:.3g}")
    assert difference <= RELATIVE_TOLERANCE
