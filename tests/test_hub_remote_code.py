"""Pushed repos carry everything: plain transformers (no demixers) runs the pipeline on every family.

One tiny model per family is pushed to the loopback Hub with `push_model_folder` (the upload path of
``demixers push``, ``train --push-to-hub`` and ``convert --push-to-hub``). Here, with demixers
imported, ``pipeline("audio-source-separation", model=repo)`` needs no ``trust_remote_code`` and runs
the installed code; then ONE subprocess in which importing demixers is impossible loads every repo
with ``trust_remote_code=True`` and must reproduce the installed pipeline's outputs (a file, an array
with ``sampling_rate`` and a datasets-style dict) to 1e-6, and refuse without the flag.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from transformers import PretrainedConfig, pipeline

from demixers.modeling.conv_tasnet import ConvTasNetForSourceSeparation
from demixers.modeling.demucs import (
    DemucsBagForSourceSeparation,
    DemucsForSourceSeparation,
    HDemucsForSourceSeparation,
    HTDemucsForSourceSeparation,
)
from demixers.modeling.dprnn_tasnet import DPRNNTasNetForSourceSeparation
from demixers.modeling.dttnet import DTTNetForSourceSeparation
from demixers.modeling.mossformer import MossFormerForSourceSeparation
from demixers.modeling.stacked_hourglass import StackedHourglassForSourceSeparation
from demixers.pipelines.remote_code import PIPELINE_CODE_FILES, add_remote_code
from demixers.trainers.hub import push_model_folder
from tests.modeling.common import _BLOCK_DEMIXERS
from tests.modeling.conv_tasnet.test_modeling_conv_tasnet import tiny_config as tiny_conv_tasnet_config
from tests.modeling.demucs.test_modeling_demucs_bag import tiny_bag_config
from tests.modeling.demucs.tiny_configs import tiny_demucs_config, tiny_hdemucs_config, tiny_htdemucs_config
from tests.modeling.dprnn_tasnet.test_modeling_dprnn_tasnet import tiny_config as tiny_dprnn_config
from tests.modeling.dttnet.tiny_configs import tiny_dttnet_config
from tests.modeling.mossformer.test_modeling_mossformer import tiny_config as tiny_mossformer_config
from tests.modeling.stacked_hourglass.tiny_configs import tiny_stacked_hourglass_config

TASK = "audio-source-separation"
TOLERANCE = 1e-6

FAMILIES: dict[str, tuple[Callable[[], PretrainedConfig], type]] = {
    "mossformer": (tiny_mossformer_config, MossFormerForSourceSeparation),
    "conv_tasnet": (tiny_conv_tasnet_config, ConvTasNetForSourceSeparation),
    "dprnn_tasnet": (tiny_dprnn_config, DPRNNTasNetForSourceSeparation),
    "dttnet": (tiny_dttnet_config, DTTNetForSourceSeparation),
    "stacked_hourglass": (tiny_stacked_hourglass_config, StackedHourglassForSourceSeparation),
    "demucs": (tiny_demucs_config, DemucsForSourceSeparation),
    "hdemucs": (tiny_hdemucs_config, HDemucsForSourceSeparation),
    "htdemucs": (tiny_htdemucs_config, HTDemucsForSourceSeparation),
    "demucs_bag": (tiny_bag_config, DemucsBagForSourceSeparation),
}


def _save_tiny_model(family: str, folder: Path) -> PretrainedConfig:
    make_config, model_class = FAMILIES[family]
    config = make_config()
    torch.manual_seed(0)
    model_class(config).eval().save_pretrained(folder)
    return config


def _inputs(config: PretrainedConfig, folder: Path) -> dict[str, object]:
    """A file, an array and a datasets-style dict, each at a rate other than the model's."""
    generator = np.random.default_rng(0)
    channels = config.audio_channels
    file_rate = 11025 if config.sampling_rate != 11025 else 8000
    file_audio = (0.3 * generator.standard_normal((int(0.25 * file_rate), channels))).astype(np.float32)
    path = folder / "mixture.wav"
    soundfile.write(path, file_audio, file_rate, subtype="FLOAT")
    array_rate = 16000 if config.sampling_rate != 16000 else 22050
    array = (0.3 * generator.standard_normal((channels, int(0.2 * array_rate)))).astype(np.float32)
    dict_rate = config.sampling_rate
    dict_array = (0.3 * generator.standard_normal(int(0.15 * dict_rate))).astype(np.float32)
    np.save(folder / "array.npy", array)
    np.save(folder / "dict_array.npy", dict_array)
    return {
        "file": str(path),
        "array": {"array": array, "rate": array_rate},
        "dict": {"array": dict_array, "rate": dict_rate},
    }


def _separate_all(separator: object, inputs: dict[str, object]) -> dict[str, np.ndarray]:
    array, dict_input = inputs["array"], inputs["dict"]
    outputs = {
        "path": separator(inputs["file"]),
        "array": separator(array["array"], sampling_rate=array["rate"]),
        "dict": separator({"array": dict_input["array"], "sampling_rate": dict_input["rate"]}),
    }
    return {name: np.stack([np.asarray(stem["audio"]) for stem in stems]) for name, stems in outputs.items()}


def test_every_family_runs_from_the_hub_without_demixers(tmp_path: Path, hub_server) -> None:
    from huggingface_hub import HfApi

    api = HfApi()
    cases = []
    for family in FAMILIES:
        folder = tmp_path / family / "model"
        config = _save_tiny_model(family, folder)
        repo_id = f"{hub_server.username}/remote-{family.replace('_', '-')}-{uuid.uuid4().hex[:6]}"
        push_model_folder(folder, repo_id, commit_message=f"tiny {family}")
        assert not (folder / "audio_source_separation.py").exists()  # the folder itself is untouched

        files = set(api.list_repo_files(repo_id))
        assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= files
        assert set(PIPELINE_CODE_FILES) <= files
        pushed_config = json.loads(Path(api.hf_hub_download(repo_id, "config.json")).read_text())
        assert set(pushed_config["auto_map"]) == {"AutoConfig", "AutoModel", "AutoFeatureExtractor"}
        for reference in pushed_config["auto_map"].values():
            assert f"{reference.split('.')[0]}.py" in files, reference
        assert pushed_config["custom_pipelines"][TASK]["impl"] == (
            "audio_source_separation.AudioSourceSeparationPipeline"
        )
        card = Path(api.hf_hub_download(repo_id, "README.md")).read_text()
        assert "library_name: demixers" in card and f'model="{repo_id}", trust_remote_code=True' in card

        # demixers imported: no trust_remote_code needed, the installed pipeline and model run
        separator = pipeline(TASK, model=repo_id)
        assert type(separator).__module__ == "demixers.pipelines.audio_source_separation"
        assert type(separator.model).__module__.startswith("demixers.modeling.")
        assert not getattr(separator.model.config, "custom_pipelines", None)
        inputs = _inputs(config, tmp_path / family)
        expected = _separate_all(separator, inputs)
        # a comparison of silent stems would prove nothing
        assert all(float(np.abs(stems).max()) > 1e-4 for stems in expected.values()), family
        np.savez(tmp_path / family / "expected.npz", **expected)
        cases.append(
            {
                "family": family,
                "repo_id": repo_id,
                "file": inputs["file"],
                "array_rate": inputs["array"]["rate"],
                "dict_rate": inputs["dict"]["rate"],
                "folder": str(tmp_path / family),
                "num_sources": len(config.source_names),
            }
        )
    (tmp_path / "cases.json").write_text(json.dumps(cases))

    script = _BLOCK_DEMIXERS + textwrap.dedent(
        f"""
        import json
        import numpy as np
        from transformers import AutoFeatureExtractor, AutoModel, pipeline

        TASK = {TASK!r}
        report = {{}}
        for case in json.load(open({str(tmp_path / "cases.json")!r})):
            repo_id, folder = case["repo_id"], case["folder"]
            try:
                pipeline(TASK, model=repo_id)
            except ValueError as error:
                assert "trust_remote_code" in str(error), str(error)
            else:
                raise AssertionError(f"{{repo_id}}: remote code ran without trust_remote_code")
            separator = pipeline(TASK, model=repo_id, trust_remote_code=True)
            for component in (separator, separator.model, separator.feature_extractor):
                assert not type(component).__module__.startswith("demixers"), type(component).__module__
            array = np.load(folder + "/array.npy")
            dict_array = np.load(folder + "/dict_array.npy")
            outputs = {{
                "path": separator(case["file"]),
                "array": separator(array, sampling_rate=case["array_rate"]),
                "dict": separator({{"array": dict_array, "sampling_rate": case["dict_rate"]}}),
            }}
            expected = np.load(folder + "/expected.npz")
            differences = {{}}
            for name, stems in outputs.items():
                actual = np.stack([np.asarray(stem["audio"]) for stem in stems])
                assert actual.shape == expected[name].shape, (name, actual.shape, expected[name].shape)
                assert len(stems) == case["num_sources"]
                differences[name] = float(np.abs(actual - expected[name]).max())
            model = AutoModel.from_pretrained(repo_id, trust_remote_code=True)
            extractor = AutoFeatureExtractor.from_pretrained(repo_id, trust_remote_code=True)
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            assert type(extractor).__name__ == "SourceSeparationFeatureExtractor", type(extractor)
            assert type(extractor).__module__.startswith("transformers_modules"), type(extractor).__module__
            assert extractor.sampling_rate == model.config.sampling_rate
            report[case["family"]] = differences
        print("REPORT" + json.dumps(report))
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.split("REPORT")[-1])
    print("max abs difference, plain transformers vs demixers:", report)
    assert set(report) == set(FAMILIES)
    for family, differences in report.items():
        assert set(differences) == {"path", "array", "dict"}
        assert max(differences.values()) <= TOLERANCE, (family, differences)


def test_add_remote_code_refuses_a_folder_it_cannot_serve(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        add_remote_code(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mossformer"}))
    with pytest.raises(FileNotFoundError, match="safetensors"):
        add_remote_code(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-a-family"}))
    with pytest.raises(ValueError, match="not-a-family"):
        add_remote_code(tmp_path)


def test_local_config_keeps_custom_pipelines_of_unregistered_tasks(tmp_path: Path) -> None:
    """Only the locally registered task is dropped; another repo-declared task stays visible."""
    config = _save_tiny_model("mossformer", tmp_path)
    (tmp_path / "audio_source_separation.py").unlink(missing_ok=True)
    add_remote_code(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    data["custom_pipelines"]["some-other-task"] = {"impl": "other.Pipeline", "pt": ["AutoModel"]}
    (tmp_path / "config.json").write_text(json.dumps(data))
    loaded = type(config).from_pretrained(tmp_path)
    assert set(loaded.custom_pipelines) == {"some-other-task"}
    separator = pipeline(TASK, model=str(tmp_path))
    assert type(separator).__module__ == "demixers.pipelines.audio_source_separation"


def test_convert_push_to_hub_with_and_without_code(tmp_path: Path, hub_server, capsys) -> None:
    from huggingface_hub import HfApi

    from demixers.cli import main
    from tests.modeling.mossformer.reference_modelscope import build_reference_model, save_official_layout
    from tests.modeling.mossformer.test_convert_mossformer import SMALL

    official = save_official_layout(build_reference_model(**SMALL), tmp_path / "release", SMALL)
    api = HfApi()
    with_code = f"{hub_server.username}/converted-{uuid.uuid4().hex[:6]}"
    argv = [
        "convert",
        "modelscope-mossformer",
        str(official),
        str(tmp_path / "out"),
        "--push-to-hub",
        with_code,
    ]
    assert main(argv) == 0
    assert with_code in capsys.readouterr().out
    files = set(api.list_repo_files(with_code))
    assert {"configuration_mossformer.py", "modeling_mossformer.py", "README.md"} <= files
    assert set(PIPELINE_CODE_FILES) <= files
    assert "auto_map" in json.loads(Path(api.hf_hub_download(with_code, "config.json")).read_text())
    assert "auto_map" not in json.loads(
        (tmp_path / "out" / "config.json").read_text()
    )  # local folder as written

    without_code = f"{hub_server.username}/converted-{uuid.uuid4().hex[:6]}"
    argv = ["convert", "modelscope-mossformer", str(official), str(tmp_path / "plain")]
    assert main([*argv, "--push-to-hub", without_code, "--no-code"]) == 0
    files = set(api.list_repo_files(without_code))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "README.md"} <= files
    assert not any(name.endswith(".py") for name in files)
    pushed = json.loads(Path(api.hf_hub_download(without_code, "config.json")).read_text())
    assert "auto_map" not in pushed and "custom_pipelines" not in pushed

    capsys.readouterr()
    assert main([*argv, "--push-to-hub", "a/b/c", "--overwrite"]) != 0  # refused before converting
    assert "push-to-hub" in capsys.readouterr().err
