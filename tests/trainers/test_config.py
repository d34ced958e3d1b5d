"""Recipes: loading, dotted overrides with type coercion, clear errors, the command-line parser."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from demixers.trainers.cli import configure_parser
from demixers.trainers.config import ConfigError, dump_config, load_config

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


BASE = """
model:
  type: mossformer
  config: {hidden_size: 64}
data:
  dataset: some/folder
training:
  max_steps: 10
  learning_rate: 1e-3
"""


def test_defaults_yaml_and_overrides_are_coerced(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, BASE),
        [
            "--training.max_steps=20",
            "--training.learning_rate",
            "3e-4",
            "--training.max_grad_norm=5",
            "--training.progress_bar=false",
            "--data.gain_db_range=[-3, 3]",
            "--model.config.num_hidden_layers=2",
            "--model.config.norm_type=gln",
            "--hub.repo_id=org/name",
        ],
    )
    training = config["training"]
    assert training["max_steps"] == 20 and isinstance(training["max_steps"], int)
    assert training["learning_rate"] == 3e-4 and isinstance(training["learning_rate"], float)
    assert training["max_grad_norm"] == 5.0 and isinstance(training["max_grad_norm"], float)
    assert training["progress_bar"] is False
    assert config["data"]["gain_db_range"] == [-3, 3]
    assert config["model"]["config"] == {"hidden_size": 64, "num_hidden_layers": 2, "norm_type": "gln"}
    assert config["hub"]["repo_id"] == "org/name"
    # YAML 1.1 reads `1e-3` as a string: the default's type (float) wins
    assert load_config(write(tmp_path, BASE))["training"]["learning_rate"] == 1e-3
    # untouched keys keep their defaults
    assert training["total_limit"] == 2 and training["seed"] == 42
    # null resets a nullable key
    assert (
        load_config(write(tmp_path, BASE), ["--training.max_steps=null", "--training.epochs=3"])["training"][
            "max_steps"
        ]
        is None
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("--training.max_step=3", r"unknown config key 'training.max_step'.*did you mean training.max_steps"),
        ("--trainng.seed=3", r"unknown config key 'trainng.seed'"),
        ("--training.lr=3e-4", r"did you mean training.learning_rate\?"),
        ("--training.max_steps=abc", r"training.max_steps: expected int, got 'abc'"),
        ("--training.max_steps=2.5", r"training.max_steps: expected int"),
        ("--training.progress_bar=maybe", r"training.progress_bar: expected bool"),
        ("--training.optimizer=sgd", r"training.optimizer must be one of adam, adamw"),
        ("--training.learning_rate=-1", r"learning_rate must be positive"),
        ("--training.mixed_precision=fp8", r"mixed_precision must be one of"),
        ("--data.gain_db_range=[1]", r"gain_db_range must be \[low, high\]"),
    ],
)
def test_bad_overrides_are_clear_errors(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, BASE), [override])


def test_bad_recipes(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown section 'optimizer'"):
        load_config(write(tmp_path, BASE + "optimizer:\n  lr: 1\n"))
    with pytest.raises(ConfigError, match=r"recipe.yaml: unknown config key 'training.lr'"):
        load_config(write(tmp_path, BASE.replace("learning_rate", "lr")))
    with pytest.raises(ConfigError, match=r"set model\.pretrained"):
        load_config(write(tmp_path, "data:\n  dataset: x\n"))
    with pytest.raises(ConfigError, match=r"data\.dataset is required"):
        load_config(write(tmp_path, "model:\n  type: mossformer\n"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="has no value"):
        load_config(write(tmp_path, BASE), ["--training.seed"])


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, BASE), ["--training.seed=7"])
    dumped = dump_config(config)
    assert list(yaml.safe_load(dumped)) == ["model", "data", "training", "hub"]
    path = tmp_path / "resolved.yaml"
    path.write_text(dumped)
    assert load_config(path) == config


@pytest.mark.parametrize(
    "name", ["mossformer_libri2mix_8k", "htdemucs_musdb18hq", "mossformer_tiny_cpu", "default_speech_8k"]
)
def test_shipped_recipes_load(name: str) -> None:
    from transformers import AutoConfig

    import demixers  # noqa: F401  (registers the families)

    config = load_config(REPO / "configs" / f"{name}.yaml")
    model_config = AutoConfig.for_model(config["model"]["type"], **config["model"]["config"])
    assert model_config.sampling_rate == {"mossformer": 8000, "htdemucs": 44100}[config["model"]["type"]]
    if config["data"]["segment_seconds"] and config["model"]["type"] == "htdemucs":
        assert model_config.segment == config["data"]["segment_seconds"]  # trained on its own segment


def test_paper_recipes_say_what_the_issue_asks() -> None:
    moss = load_config(REPO / "configs" / "mossformer_libri2mix_8k.yaml")
    assert moss["training"]["optimizer"] == "adam" and moss["training"]["learning_rate"] == 1.5e-4
    assert moss["training"]["scheduler"] == "plateau" and moss["training"]["plateau_factor"] == 0.5
    assert moss["training"]["max_grad_norm"] == 5.0 and moss["data"]["segment_seconds"] == 4.0
    assert moss["data"]["dynamic_mixing"] is True and moss["training"]["loss"] == "pit_si_snr"
    demucs = load_config(REPO / "configs" / "htdemucs_musdb18hq.yaml")
    assert demucs["training"]["optimizer"] == "adam" and demucs["training"]["learning_rate"] == 3e-4
    assert demucs["training"]["loss"] == "l1" and demucs["data"]["segment_seconds"] == 7.8
    assert demucs["data"]["remix"] is True and demucs["training"]["ema_decay"] is not None


def test_cli_parser_collects_dotted_overrides() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    configure_parser(sub.add_parser("train"))
    args = parser.parse_args(
        [
            "train",
            "--config",
            "c.yaml",
            "--training.max_steps=20",
            "--output-dir",
            "out",
            "--resume",
            "--data.segment_seconds",
            "2.5",
            "--push-to-hub",
            "org/name",
        ]
    )
    assert args.config == "c.yaml" and args.output_dir == "out" and args.resume is True
    assert args.push_to_hub == "org/name"
    assert args.overrides == ["--training.max_steps=20", "--data.segment_seconds", "2.5"]
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--config", "c.yaml", "--output-dir", "o", "--bogus"])
