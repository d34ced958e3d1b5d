"""Model cards: rendering, Hub metadata round-trip, the figure, and ``demixers push``."""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from safetensors.torch import save_file

from demixers.evaluation import evaluate_separation
from demixers.model_cards import ARCHITECTURES, plot_separation, render_model_card, write_model_card

RATE = 8000
SOURCES = ["speaker_1", "speaker_2"]


def _model_dir(root: Path, model_type: str = "conv_tasnet", sources=SOURCES, channels: int = 1) -> Path:
    folder = root / "model"
    folder.mkdir()
    config = {
        "model_type": model_type,
        "source_names": sources,
        "sampling_rate": RATE,
        "audio_channels": channels,
    }
    (folder / "config.json").write_text(json.dumps(config))
    save_file(
        {"encoder.weight": torch.zeros(512, 1, 16), "decoder.bias": torch.zeros(7)},
        str(folder / "model.safetensors"),
    )
    return folder


def _results() -> dict:
    rng = np.random.default_rng(0)
    items = []
    for index in range(2):
        sources = rng.standard_normal((2, 1, RATE)).astype(np.float32)
        items.append({"id": index, "mixture": sources.sum(0), "sources": sources, "sampling_rate": RATE})
    lookup = {index: item["sources"] for index, item in enumerate(items)}
    calls = iter(range(len(items)))

    def separate(mixture, sampling_rate):
        return lookup[next(calls)] + 0.1 * rng.standard_normal((2, 1, RATE))

    return evaluate_separation(
        separate,
        items,
        SOURCES,
        metrics=["si_snri", "sdri"],
        metadata={"dataset": "demixers/libri2mix-test", "split": "test"},
    )


def test_rendered_card_round_trips_through_model_card_load(tmp_path):
    folder = _model_dir(tmp_path)
    results = _results()
    (folder / "results.json").write_text(json.dumps(results))
    training = {
        "model": {"pretrained": "org/base-model", "type": None},
        "data": {"dataset": "demixers/libri2mix", "segment_seconds": 4.0, "sign_flip_prob": 0.0},
        "training": {"batch_size": 4, "learning_rate": 1e-3, "optimizer": "adamw", "loss": "pit_si_snr"},
    }
    path = write_model_card(
        folder, repo_id="org/conv-tasnet-test", training_config=training, tags=["librimix"]
    )
    assert path == folder / "README.md"

    card = ModelCard.load(path)
    data = card.data
    assert data.library_name == "demixers" and data.pipeline_tag == "audio-to-audio"
    assert {"audio-source-separation", "speech-separation", "conv_tasnet", "librimix"} <= set(data.tags)
    assert data.license == "apache-2.0" and data.base_model == "org/base-model"
    assert data.datasets == ["demixers/libri2mix-test", "demixers/libri2mix"]
    assert data.metrics == ["si_snri", "sdri"]

    # model-index: parsed back to the same numbers
    name, eval_results = model_index_to_eval_results(data.to_dict()["model-index"])
    assert name == "conv-tasnet-test"
    parsed = {(r.metric_type, r.metric_config): r.metric_value for r in eval_results}
    aggregate = results["aggregate"]
    for metric in ("si_snri", "sdri"):
        assert parsed[(metric, "average")] == round(aggregate["average"][metric]["headline"], 3)
        for source in SOURCES:
            assert parsed[(metric, source)] == round(aggregate[source][metric]["headline"], 3)
    assert {r.dataset_type for r in eval_results} == {"demixers/libri2mix-test"}
    assert {r.dataset_split for r in eval_results} == {"test"} and eval_results[
        0
    ].task_type == "audio-to-audio"

    text = card.content
    assert "# conv-tasnet-test" in text
    assert "Conv-TasNet" in text and "@article{luo2019convtasnet" in text
    assert 'pipeline("audio-source-separation", model="org/conv-tasnet-test")' in text
    assert "demixers separate mixture.wav -m org/conv-tasnet-test" in text
    assert "| training.learning_rate | 0.001 |" in text and "sign_flip_prob" not in text.split("<details>")[0]
    assert "| speaker_1 |" in text and "SI-SNRi" in text
    assert "| parameters | 8,199 |" in text
    assert "## Limitations" in text and "permutation-invariant" in text


def test_figure_is_written_and_referenced(tmp_path):
    folder = _model_dir(tmp_path)
    rng = np.random.default_rng(1)
    mixture = rng.standard_normal((1, 3 * RATE))
    figure = plot_separation(
        mixture, {"speaker_1": mixture * 0.5, "speaker_2": mixture * 0.01}, RATE, tmp_path / "fig.png"
    )
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = render_model_card(folder, figure=figure)
    assert "](fig.png)" in text and (folder / "fig.png").is_file()  # copied into the model folder
    plot_separation(mixture[0], [("a", mixture)], RATE, folder / "spectrograms.png", max_seconds=1.0)
    assert "](spectrograms.png)" in render_model_card(folder)  # found in the folder by default
    with pytest.raises(ValueError, match="no stems"):
        plot_separation(mixture, {}, RATE, tmp_path / "x.png")


def test_every_architecture_renders_and_unknown_types_still_validate(tmp_path):
    for index, model_type in enumerate([*ARCHITECTURES, "something_new"]):
        root = tmp_path / str(index)
        root.mkdir()
        folder = _model_dir(root, model_type=model_type, sources=["vocals", "accompaniment"], channels=2)
        text = render_model_card(folder)
        card = ModelCard(text)
        assert card.data.library_name == "demixers" and "model-index" not in card.data.to_dict()
        assert "No evaluation results" in text and "No training configuration" in text
        if model_type in ARCHITECTURES:
            assert ARCHITECTURES[model_type].bibtex.splitlines()[0] in text
            assert ARCHITECTURES[model_type].bibtex.count("{") == ARCHITECTURES[model_type].bibtex.count("}")


def test_render_errors(tmp_path):
    with pytest.raises(NotADirectoryError):
        render_model_card(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        render_model_card(tmp_path)
    folder = _model_dir(tmp_path)
    with pytest.raises(ValueError, match="aggregate"):
        render_model_card(folder, results={"metrics": ["sdr"], "source_names": []})
    with pytest.raises(FileNotFoundError):
        render_model_card(folder, figure=tmp_path / "nope.png")


def _push_args(**overrides) -> argparse.Namespace:
    from demixers.model_cards import cli

    parser = argparse.ArgumentParser()
    cli.configure_parser(parser)
    argv = [str(overrides.pop("model_dir")), overrides.pop("repo_id")]
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return parser.parse_args(argv)


def test_push_uploads_the_folder_with_its_card(tmp_path, hub_server):
    from huggingface_hub import HfApi, hf_hub_download

    from demixers.model_cards import cli

    folder = _model_dir(tmp_path)
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(_results()))
    (folder / ".hidden").write_text("not uploaded")
    repo_id = f"{hub_server.username}/push-{uuid.uuid4().hex[:8]}"

    assert cli.run(_push_args(model_dir=folder, repo_id=repo_id, results=results_path, private=True)) == 0
    api = HfApi()
    files = set(api.list_repo_files(repo_id))
    assert {"README.md", "config.json", "model.safetensors"} <= files and ".hidden" not in files
    card = ModelCard.load(hf_hub_download(repo_id, "README.md"))
    assert card.data.eval_results and card.data.library_name == "demixers"
    assert api.model_info(repo_id).private

    # a branch, created on the fly, with its own commit message
    args = _push_args(model_dir=folder, repo_id=repo_id, revision="v2", commit_message="second upload")
    assert cli.run(args) == 0
    commits = api.list_repo_commits(repo_id, revision="v2")
    assert commits[0].title == "second upload"
    assert "README.md" in api.list_repo_files(repo_id, revision="v2")


def test_push_uploads_the_code_by_default_and_not_with_no_code(tmp_path, hub_server):
    from huggingface_hub import HfApi, hf_hub_download

    from demixers.model_cards import cli

    folder = _model_dir(tmp_path)
    with_code = f"{hub_server.username}/code-{uuid.uuid4().hex[:8]}"
    assert cli.run(_push_args(model_dir=folder, repo_id=with_code)) == 0
    files = set(HfApi().list_repo_files(with_code))
    assert {"configuration_conv_tasnet.py", "modeling_conv_tasnet.py", "audio_source_separation.py"} <= files
    assert {"preprocessor_config.json", "README.md"} <= files
    pushed = json.loads(Path(hf_hub_download(with_code, "config.json")).read_text())
    assert pushed["auto_map"]["AutoModel"] == "modeling_conv_tasnet.ConvTasNetForSourceSeparation"
    assert "audio-source-separation" in pushed["custom_pipelines"]
    assert "auto_map" not in json.loads((folder / "config.json").read_text())  # MODEL_DIR keeps its config
    assert not (folder / "modeling_conv_tasnet.py").exists()
    card = Path(hf_hub_download(with_code, "README.md")).read_text()
    assert f'pipeline("audio-source-separation", model="{with_code}", trust_remote_code=True)' in card

    without_code = f"{hub_server.username}/nocode-{uuid.uuid4().hex[:8]}"
    assert cli.run(_push_args(model_dir=folder, repo_id=without_code, no_code=True)) == 0
    files = set(HfApi().list_repo_files(without_code))
    assert not any(name.endswith(".py") for name in files) and "README.md" in files
    assert "auto_map" not in json.loads(Path(hf_hub_download(without_code, "config.json")).read_text())
    assert "trust_remote_code" not in Path(hf_hub_download(without_code, "README.md")).read_text()


def test_push_rejects_a_folder_without_config(tmp_path):
    from demixers.model_cards import cli

    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        cli.run(_push_args(model_dir=tmp_path, repo_id="org/x"))


def test_remote_code_requirements_match_the_imports_of_the_uploaded_files(tmp_path):
    import sys

    from transformers.dynamic_module_utils import get_imports

    from demixers.model_cards.render import _BASE_PACKAGES, PIPELINE_REQUIREMENTS, remote_code_requirements
    from demixers.pipelines import remote_code

    folder = Path(remote_code.__file__).parent
    imported = set().union(*(get_imports(folder / name) for name in remote_code.PIPELINE_CODE_FILES))
    assert set(PIPELINE_REQUIREMENTS) == imported - set(sys.stdlib_module_names) - _BASE_PACKAGES
    assert remote_code_requirements("htdemucs") == ["julius", "soundfile", "soxr"]  # demucs: julius
    assert remote_code_requirements("mossformer") == ["soundfile", "soxr"]

    model_dir = _model_dir(tmp_path, model_type="htdemucs")
    card = render_model_card(model_dir, remote_code=True)
    assert "pip install transformers torch julius soundfile soxr" in card
    assert "trust_remote_code" not in render_model_card(model_dir)  # config.json declares no pipeline
