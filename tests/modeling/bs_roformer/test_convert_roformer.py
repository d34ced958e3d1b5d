"""``demixers convert msst-roformer`` / ``lucidrains-roformer``: yaml safety, flags, checkpoint layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from demixers.cli import main
from demixers.modeling.bs_roformer import BSRoformerConfig, BSRoformerForSourceSeparation
from demixers.modeling.bs_roformer.convert_roformer_to_hf import (
    PRESETS,
    TupleSafeLoader,
    config_from_yaml_data,
    convert_checkpoint,
    load_yaml_config,
    preset_config,
)
from demixers.modeling.mel_band_roformer import MelBandRoformerConfig, MelBandRoformerForSourceSeparation
from tests.modeling.parity_utils import music_batch, perturb_parameters, relative_max_difference
from tests.modeling.roformer_references import (
    SMALL_BS_KWARGS,
    SMALL_MEL_KWARGS,
    lucidrains_module,
    msst_module,
    reference_output,
)

VIPERX_YAML = """\
audio:
  chunk_size: 352800
  dim_f: 1024
  dim_t: 801
  hop_length: 441
  n_fft: 2048
  num_channels: 2
  sample_rate: 44100
  min_mean_abs: 0.000
model:
  dim: 512
  depth: 12
  stereo: true
  num_stems: 1
  time_transformer_depth: 1
  freq_transformer_depth: 1
  linear_transformer_depth: 0
  freqs_per_bands: !!python/tuple
{bands}
  dim_head: 64
  heads: 8
  attn_dropout: 0.1
  ff_dropout: 0.1
  flash_attn: true
  dim_freqs_in: 1025
  stft_n_fft: 2048
  stft_hop_length: 441
  stft_win_length: 2048
  stft_normalized: false
  mask_estimator_depth: 2
  multi_stft_resolution_loss_weight: 1.0
  multi_stft_resolutions_window_sizes: !!python/tuple
  - 4096
  - 2048
  - 1024
  - 512
  - 256
  multi_stft_hop_size: 147
  multi_stft_normalized: False
training:
  instruments:
  - vocals
  - other
  target_instrument: vocals
  use_amp: true
inference:
  batch_size: 4
  dim_t: 801
  num_overlap: 2
""".replace(
    "{bands}",
    "\n".join(
        f"    - {bins}" for bins in (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
    ),
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _small_yaml(tmp_path: Path, model: dict[str, Any], name: str = "config.yaml") -> Path:
    data = {
        "model": model,
        "audio": {"chunk_size": 4410, "sample_rate": 44100},
        "inference": {"num_overlap": 4},
    }
    data["training"] = {"instruments": ["vocals", "drums"][: model["num_stems"]] or ["vocals"]}
    return _write(tmp_path / name, yaml.safe_dump(data))


# -- yaml -------------------------------------------------------------------------------------


def test_viperx_yaml_converts_to_the_preset(tmp_path: Path) -> None:
    config = config_from_yaml_data(load_yaml_config(_write(tmp_path / "viperx.yaml", VIPERX_YAML)))
    assert isinstance(config, BSRoformerConfig)
    assert config.to_dict() == preset_config("viperx-bs-roformer-ep317").to_dict()
    assert config.to_dict() == BSRoformerConfig().to_dict()  # the family's defaults are this release
    assert (config.chunk_size, config.num_overlap, config.zero_dc, config.stft_hop_length) == (
        352800,
        2,
        True,
        441,
    )
    assert config.source_names == ["vocals", "other"]


def test_kimberleyjensen_preset_is_the_mel_default() -> None:
    config = preset_config("kimberleyjensen-vocals-mel-band-roformer")
    assert isinstance(config, MelBandRoformerConfig)
    assert config.to_dict() == MelBandRoformerConfig().to_dict()
    assert sorted(PRESETS) == ["kimberleyjensen-vocals-mel-band-roformer", "viperx-bs-roformer-ep317"]


def test_yaml_loader_accepts_only_the_tuple_tag(tmp_path: Path) -> None:
    assert yaml.load("a: !!python/tuple [1, 2]", Loader=TupleSafeLoader) == {"a": [1, 2]}
    for tag in ("!!python/object:os.system", "!!python/object/apply:os.system", "!!python/name:os.system"):
        path = _write(tmp_path / "evil.yaml", f"model: {tag} ['echo hacked']\n")
        with pytest.raises(ValueError, match="unsafe yaml"):
            load_yaml_config(path)
    evil = _write(
        tmp_path / "evil_object.yaml",
        VIPERX_YAML.replace("  dim: 512", "  dim: !!python/object/new:int [512]"),
    )
    with pytest.raises(ValueError, match=r"evil_object\.yaml"):
        convert_checkpoint(evil, tmp_path / "missing.ckpt", tmp_path / "out")


def test_unknown_flags_are_refused_by_name(tmp_path: Path) -> None:
    text = VIPERX_YAML.replace(
        "  mask_estimator_depth: 2\n", "  mask_estimator_depth: 2\n  use_moe: true\n  warp: 3\n"
    )
    with pytest.raises(ValueError, match=r"\['use_moe', 'warp'\]"):
        config_from_yaml_data(load_yaml_config(_write(tmp_path / "x.yaml", text)))


def test_family_and_flag_validation() -> None:
    with pytest.raises(ValueError, match="neither freqs_per_bands"):
        config_from_yaml_data({"model": {"dim": 8, "depth": 1}})
    with pytest.raises(ValueError, match="both freqs_per_bands"):
        config_from_yaml_data({"model": {"dim": 8, "depth": 1, "num_bands": 4, "freqs_per_bands": [1, 1024]}})
    with pytest.raises(ValueError, match="zero_dc"):
        config_from_yaml_data({"model": {"dim": 8, "depth": 1, "num_bands": 4, "zero_dc": "yes"}})
    with pytest.raises(ValueError, match="num_residual_streams"):  # lucidrains' default: 4 streams
        config_from_yaml_data({"model": {"dim": 8, "depth": 1, "num_bands": 4}}, "lucidrains")
    with pytest.raises(ValueError, match="add_value_residual"):  # lucidrains' Mel default: True
        config_from_yaml_data({"dim": 8, "depth": 1, "num_bands": 4, "num_residual_streams": 1}, "lucidrains")
    accepted = config_from_yaml_data(
        {"dim": 8, "depth": 1, "num_bands": 4, "num_residual_streams": 1, "add_value_residual": False},
        "lucidrains",
    )
    assert accepted.linear_transformer_depth == 1 and accepted.zero_dc is False  # lucidrains' defaults
    msst = config_from_yaml_data({"model": {"dim": 8, "depth": 1, "num_bands": 4}})
    assert msst.linear_transformer_depth == 0 and msst.zero_dc is True and msst.mask_estimator_depth == 1


# -- checkpoints ------------------------------------------------------------------------------


def _msst_reference(family: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    module = msst_module(family)
    reference_class = module.BSRoformer if family == "bs_roformer" else module.MelBandRoformer
    torch.manual_seed(0)
    return perturb_parameters(reference_class(**kwargs).eval())


@pytest.mark.parametrize("family", ["bs_roformer", "mel_band_roformer"])
def test_fp16_checkpoint_through_the_cli_keeps_the_stored_rotary_frequencies(
    tmp_path: Path, family: str
) -> None:
    kwargs = SMALL_BS_KWARGS if family == "bs_roformer" else SMALL_MEL_KWARGS
    reference = _msst_reference(family, kwargs)
    half = {key: value.half() for key, value in reference.state_dict().items()}
    torch.save({"state_dict": half, "epoch": 3}, tmp_path / "model.ckpt")
    # what MSST does with an fp16 file: load it into the float32 model (fp16-rounded values, rotary too)
    reference.load_state_dict({key: value.float() for key, value in half.items()})
    config = _small_yaml(tmp_path, dict(kwargs))
    out = tmp_path / "converted"
    assert main(["convert", "msst-roformer", str(config), str(tmp_path / "model.ckpt"), str(out)]) == 0
    model_class = (
        BSRoformerForSourceSeparation if family == "bs_roformer" else MelBandRoformerForSourceSeparation
    )
    model = model_class.from_pretrained(out).eval()
    assert model.config.chunk_size == 4410 and model.config.num_overlap == 4
    assert model.config.source_names == ["vocals", "drums"]
    stored = next(value for key, value in half.items() if key.endswith("rotary_embed.freqs")).float()
    recomputed = model.time_rotary.default_inverse_frequencies(kwargs["dim_head"])
    assert not torch.equal(stored, recomputed)  # the fp16 rounding is visible ...
    assert torch.equal(model.time_rotary.inverse_frequencies, stored)  # ... and kept
    assert model.time_rotary.inverse_frequencies.dtype == torch.float32
    mixture = music_batch(32 * 60)
    expected = reference_output(reference, mixture)
    with torch.no_grad():
        actual = model(input_values=mixture).audio_values
    assert relative_max_difference(actual, expected) <= 1e-5


def test_bare_model_state_dict_and_safetensors_layouts(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    reference = _msst_reference("bs_roformer", SMALL_BS_KWARGS)
    state = reference.state_dict()
    config = _small_yaml(tmp_path, dict(SMALL_BS_KWARGS))
    torch.save(state, tmp_path / "bare.pth")
    torch.save({"model_state_dict": state, "optimizer": {}}, tmp_path / "wrapped.ckpt")
    # safetensors refuses shared tensors: the rotary frequencies are one tensor in every layer
    save_file(
        {key: value.clone().contiguous() for key, value in state.items()}, tmp_path / "model.safetensors"
    )
    outputs = []
    for name in ("bare.pth", "wrapped.ckpt", "model.safetensors"):
        folder = convert_checkpoint(config, tmp_path / name, tmp_path / name.replace(".", "_"))
        outputs.append(BSRoformerForSourceSeparation.from_pretrained(folder).state_dict())
    for other in outputs[1:]:
        assert all(torch.equal(other[key], outputs[0][key]) for key in outputs[0])


def test_key_mapping_is_strict(tmp_path: Path) -> None:
    state = _msst_reference("bs_roformer", SMALL_BS_KWARGS).state_dict()
    config = _small_yaml(tmp_path, dict(SMALL_BS_KWARGS))
    torch.save({**state, "layers.0.0.layers.0.0.surprise": torch.zeros(2)}, tmp_path / "extra.ckpt")
    with pytest.raises(ValueError, match="surprise"):
        convert_checkpoint(config, tmp_path / "extra.ckpt", tmp_path / "a")
    missing = {key: value for key, value in state.items() if key != "final_norm.gamma"}
    torch.save(missing, tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match=r"final_norm\.weight"):
        convert_checkpoint(config, tmp_path / "missing.ckpt", tmp_path / "b")
    # the yaml says 3 layers, the weights have 2
    deeper = _small_yaml(tmp_path, {**SMALL_BS_KWARGS, "depth": 3}, "deeper.yaml")
    torch.save(state, tmp_path / "model.ckpt")
    with pytest.raises(ValueError, match="missing keys"):
        convert_checkpoint(deeper, tmp_path / "model.ckpt", tmp_path / "c")


def test_rotary_copies_must_agree(tmp_path: Path) -> None:
    state = _msst_reference("bs_roformer", SMALL_BS_KWARGS).state_dict()
    key = next(key for key in state if key.endswith("rotary_embed.freqs") and key.startswith("layers.1."))
    state = {**state, key: state[key] * 2}
    torch.save(state, tmp_path / "model.ckpt")
    with pytest.raises(ValueError, match="rotary frequencies differ"):
        convert_checkpoint(
            _small_yaml(tmp_path, dict(SMALL_BS_KWARGS)), tmp_path / "model.ckpt", tmp_path / "o"
        )


def test_lucidrains_cli_converts_a_mel_state_dict(tmp_path: Path) -> None:
    kwargs = {**SMALL_MEL_KWARGS, "num_stems": 1, "num_residual_streams": 1, "add_value_residual": False}
    module = lucidrains_module("mel_band_roformer")
    torch.manual_seed(0)
    reference = perturb_parameters(module.MelBandRoformer(**kwargs).eval())
    assert any(".branch." in key for key in reference.state_dict())
    torch.save(reference.state_dict(), tmp_path / "lucidrains.pt")
    config = _write(tmp_path / "kwargs.yaml", yaml.safe_dump(kwargs))
    out = tmp_path / "converted"
    args = [
        "convert",
        "lucidrains-roformer",
        str(config),
        str(tmp_path / "lucidrains.pt"),
        str(out),
        "--no-residual",
    ]
    assert main(args) == 0
    model = MelBandRoformerForSourceSeparation.from_pretrained(out).eval()
    assert model.config.source_names == ["vocals"] and model.config.linear_transformer_depth == 1
    mixture = music_batch(32 * 60)
    with torch.no_grad():
        actual = model(input_values=mixture).audio_values
    assert relative_max_difference(actual, reference_output(reference, mixture)) <= 1e-5
