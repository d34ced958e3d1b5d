"""Converting both MossFormer2 releases reproduces the reference models' outputs.

The references are ModelScope's ``m2`` source (the ``modelscope`` package) and ClearerVoice-Studio's
``mossformer2_ss`` source (the ``clearvoice`` package), built small, with every weight perturbed,
and saved in their releases' layouts; parity is measured on speech-like mixtures.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from demixers import MossFormer2ForSourceSeparation
from demixers.cli import main as demixers_main
from demixers.modeling.mossformer2.convert_mossformer2_clearvoice_to_hf import convert_clearvoice_checkpoint
from demixers.modeling.mossformer2.convert_mossformer2_original_to_hf import convert_modelscope_checkpoint
from tests.modeling.mossformer2.references import (
    CLEARVOICE_RELEASE_YAML,
    MODELSCOPE_RELEASE_KWARGS,
    build_clearvoice_reference,
    build_modelscope_reference,
    clearvoice_separate,
    modelscope_separate,
    save_clearvoice_layout,
    save_modelscope_layout,
)
from tests.modeling.parity_utils import perturb_parameters, relative_max_difference, speech_batch

SMALL_MODELSCOPE = {**MODELSCOPE_RELEASE_KWARGS, "in_channels": 32, "out_channels": 32, "num_blocks": 2}
SMALL_CLEARVOICE = {"encoder_embedding_dim": 32, "mossformer_sequence_dim": 32, "num_mossformer_layer": 2}
# 24 samples: two frames (the references refuse one: their instance norm needs two); 1009 (125
# frames): one partial attention group and an odd frame count (the FSMN's dilated layer runs on two
# phases of unequal length); 2600 (324 frames): a full and a partial group
LENGTHS = (24, 1009, 2600)
RELATIVE_TOLERANCE = 1e-5


def parity(model: MossFormer2ForSourceSeparation, reference: torch.nn.Module, separate, sampling_rate: int):
    worst = 0.0
    for length in LENGTHS:
        mixture = speech_batch(length, sampling_rate)[:, 0]  # (batch, time), as the references take it
        expected = separate(reference, mixture)
        with torch.no_grad():
            actual = model(input_values=mixture).audio_values
        assert actual.shape == expected.shape == (2, 2, 1, length)
        worst = max(worst, relative_max_difference(actual, expected))
    return worst


def load(folder: Path) -> MossFormer2ForSourceSeparation:
    return MossFormer2ForSourceSeparation.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def modelscope_reference() -> torch.nn.Module:
    return perturb_parameters(build_modelscope_reference(**SMALL_MODELSCOPE), seed=3)


@pytest.fixture(scope="module")
def modelscope_folder(modelscope_reference, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = save_modelscope_layout(
        modelscope_reference, tmp_path_factory.mktemp("modelscope") / "release", SMALL_MODELSCOPE
    )
    # ModelScope's own loader reads the layout back
    check = build_modelscope_reference(**SMALL_MODELSCOPE)
    check.load_check_point(str(folder))
    for key, value in modelscope_reference.state_dict().items():
        assert torch.equal(check.state_dict()[key], value), key
    return folder


@pytest.fixture(scope="module")
def clearvoice_reference() -> torch.nn.Module:
    return perturb_parameters(build_clearvoice_reference(**SMALL_CLEARVOICE), seed=4)


@pytest.fixture(scope="module")
def clearvoice_folder(clearvoice_reference, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_clearvoice_layout(
        clearvoice_reference, tmp_path_factory.mktemp("clearvoice") / "MossFormer2_SS_16K", SMALL_CLEARVOICE
    )


# -- ModelScope -----------------------------------------------------------------------------------


def test_modelscope_release_converts_with_parity(
    modelscope_folder: Path, modelscope_reference, tmp_path: Path
):
    model = load(convert_modelscope_checkpoint(modelscope_folder, tmp_path / "converted"))
    config = model.config
    assert (config.sampling_rate, config.hidden_size, config.encoder_channels, config.num_hidden_layers) == (
        8000,
        32,
        32,
        2,
    )
    assert (config.fsmn_inner_channels, config.fsmn_memory_order, config.query_key_dim) == (256, 20, 128)
    difference = parity(model, modelscope_reference, modelscope_separate, 8000)
    print(f"MossFormer2 vs ModelScope m2, perturbed weights, speech: relative {difference:.3e}")
    assert difference <= RELATIVE_TOLERANCE


def test_modelscope_command_line_on_a_single_file(
    modelscope_folder: Path, modelscope_reference, tmp_path: Path
):
    single = tmp_path / "weights.pt"
    single.write_bytes((modelscope_folder / "pytorch_model.pt").read_bytes())
    code = demixers_main(
        ["convert", "modelscope-mossformer2", str(single), str(tmp_path / "out"), "--sampling-rate", "16000"]
    )
    assert code == 0
    model = load(tmp_path / "out")
    assert model.config.sampling_rate == 16000  # no configuration.json beside it: the option decides
    assert parity(model, modelscope_reference, modelscope_separate, 8000) <= RELATIVE_TOLERANCE
    assert json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())["sampling_rate"] == 16000


def test_modelscope_loads_non_strictly_but_we_refuse(modelscope_folder: Path, tmp_path: Path) -> None:
    state = torch.load(modelscope_folder / "pytorch_model.pt", weights_only=True)
    dropped = "mask_net.mdl.intra_mdl.mossformerM.fsmn.1.gated_fsmn.fsmn.project.weight"
    del state[dropped]
    state["mask_net.extra.weight"] = torch.zeros(3)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "configuration.json").write_text((modelscope_folder / "configuration.json").read_text())
    torch.save(state, broken / "pytorch_model.pt")
    build_modelscope_reference(**SMALL_MODELSCOPE).load_check_point(str(broken))  # strict=False: silent
    with pytest.raises(ValueError) as error:
        convert_modelscope_checkpoint(broken, tmp_path / "out")
    assert "fsmn_layers.1.gated_fsmn.fsmn.project.weight" in str(error.value)
    assert "mask_net.extra.weight" in str(error.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("model_kwargs", "message"),
    [
        ({"num_blocks": 3}, "num_hidden_layers"),
        ({"in_channels": 64}, "in_channels"),
        ({"use_global_pos_enc": False}, "use_global_pos_enc"),
        ({"num_spks": "2"}, "num_spks"),
    ],
)
def test_configuration_json_is_validated(
    modelscope_folder: Path, tmp_path: Path, model_kwargs: dict[str, Any], message: str
) -> None:
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / "pytorch_model.pt").write_bytes((modelscope_folder / "pytorch_model.pt").read_bytes())
    configuration = json.loads((modelscope_folder / "configuration.json").read_text())
    configuration["model"].update(model_kwargs)
    (folder / "configuration.json").write_text(json.dumps(configuration))
    with pytest.raises(ValueError, match=message):
        convert_modelscope_checkpoint(folder, tmp_path / "out")


class _Payload:
    def __reduce__(self):
        return (print, ("executed",))


def test_pickled_objects_are_refused_not_executed(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "release"
    folder.mkdir()
    with open(folder / "pytorch_model.pt", "wb") as handle:
        pickle.dump({"enc.conv1d.weight": _Payload()}, handle)
    with pytest.raises(ValueError):
        convert_modelscope_checkpoint(folder, tmp_path / "out")
    assert "executed" not in capsys.readouterr().out


# -- ClearerVoice ---------------------------------------------------------------------------------


def test_clearvoice_folder_converts_with_parity(
    clearvoice_folder: Path, clearvoice_reference, tmp_path: Path
):
    model = load(convert_clearvoice_checkpoint(clearvoice_folder, tmp_path / "converted"))
    assert (model.config.sampling_rate, model.config.hidden_size, model.config.num_hidden_layers) == (
        16000,
        32,
        2,
    )
    difference = parity(model, clearvoice_reference, clearvoice_separate, 16000)
    print(f"MossFormer2 vs ClearerVoice mossformer2_ss, perturbed weights, speech: relative {difference:.3e}")
    assert difference <= RELATIVE_TOLERANCE


def test_clearvoice_command_line_with_explicit_yaml_and_bare_state_dict(
    clearvoice_folder: Path, clearvoice_reference, tmp_path: Path
) -> None:
    bare = tmp_path / "bare.pt"
    torch.save(clearvoice_reference.state_dict(), bare)  # no "model" key, no "module." prefix
    yaml_path = clearvoice_folder / "config" / "inference" / "MossFormer2_SS_16K.yaml"
    code = demixers_main(
        ["convert", "clearvoice-mossformer2", str(bare), str(tmp_path / "out"), "--config", str(yaml_path)]
    )
    assert code == 0
    model = load(tmp_path / "out")
    assert model.config.sampling_rate == CLEARVOICE_RELEASE_YAML["sampling_rate"]
    assert parity(model, clearvoice_reference, clearvoice_separate, 16000) <= RELATIVE_TOLERANCE


def test_clearvoice_pointer_may_not_leave_the_folder(clearvoice_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (tmp_path / "outside.pt").write_bytes((clearvoice_folder / "last_best_model.pt").read_bytes())
    (folder / "last_best_checkpoint").write_text("../outside.pt\n")
    with pytest.raises(ValueError, match="outside"):
        convert_clearvoice_checkpoint(folder, tmp_path / "out")
    (folder / "last_best_checkpoint").write_text("missing.pt\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        convert_clearvoice_checkpoint(folder, tmp_path / "out")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("!!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
        ("network: MossFormer2_SE_48K\n", "MossFormer2_SS"),
        ("num_mossformer_layer: 5\n", "num_hidden_layers"),
        ("encoder_embedding_dim: 64\nmossformer_sequence_dim: 32\n", "encoder_embedding_dim"),
        ("- a list\n", "mapping"),
    ],
)
def test_clearvoice_yaml_is_read_safely_and_validated(
    clearvoice_folder: Path, tmp_path: Path, text: str, message: str
) -> None:
    yaml_path = tmp_path / "config.yaml"
    yaml_path.write_text(text)
    with pytest.raises(ValueError, match=message):
        convert_clearvoice_checkpoint(clearvoice_folder, tmp_path / "out", config_path=yaml_path)


# -- the released sizes ---------------------------------------------------------------------------


@pytest.mark.slow
def test_released_sizes_parity_against_both_references(tmp_path: Path, capsys) -> None:
    """55.7M parameters, every weight perturbed, 0.2 s of speech: ModelScope 8 kHz, ClearerVoice 16 kHz.

    Both references get the same perturbed weights (their state dicts have one layout), each saved
    in its release's files and converted by its own converter.
    """
    modelscope = perturb_parameters(build_modelscope_reference(), seed=8)
    source = save_modelscope_layout(modelscope, tmp_path / "modelscope", MODELSCOPE_RELEASE_KWARGS)
    cases = [
        (
            "ModelScope 8 kHz",
            modelscope,
            modelscope_separate,
            convert_modelscope_checkpoint(source, tmp_path / "ours8k"),
            8000,
        )
    ]
    clearvoice = build_clearvoice_reference()
    clearvoice.load_state_dict(modelscope.state_dict(), strict=True)
    source = save_clearvoice_layout(clearvoice, tmp_path / "clearvoice", {})
    cases.append(
        (
            "ClearerVoice 16 kHz",
            clearvoice,
            clearvoice_separate,
            convert_clearvoice_checkpoint(source, tmp_path / "ours16k"),
            16000,
        )
    )
    for name, reference, separate, folder, sampling_rate in cases:
        model = load(folder)
        assert model.config.sampling_rate == sampling_rate
        assert sum(p.numel() for p in model.parameters()) == 55_735_394
        mixture = speech_batch(int(0.2 * sampling_rate) + 1, sampling_rate, batch=1)[:, 0]
        expected = separate(reference, mixture)
        with torch.no_grad():
            actual = model(input_values=mixture).audio_values
        difference = relative_max_difference(actual, expected)
        with capsys.disabled():
            print(f"\nMossFormer2 released size vs {name}: max |ours - ref| / max |ref| = {difference:.3g}")
        assert difference <= RELATIVE_TOLERANCE
