"""`python -m demixers.build_default_model` end to end, on a tiny run and a corpus of fake voices."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from demixers import ConvTasNetConfig, ConvTasNetForSourceSeparation, SourceSeparationFeatureExtractor
from demixers.build_default_model import ABOUT, main
from demixers.bundled import DEFAULT_MODEL_NAME, EXAMPLE_REFERENCES, MODEL_FILES
from demixers.datasets_scripts import synthetic_speech as ss
from demixers.evaluation import pit_si_snr, si_snr
from tests.datasets_scripts.test_synthetic_speech import FakeEngine


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("build")
    corpus = ss.generate_corpus(
        root / "corpus",
        seed=3,
        sizes={"train": 4, "validation": 2, "test": 3},
        engines=[FakeEngine(num_voices=10)],
        chunk_size=2,
    )
    recipe = {
        "model": {
            "type": "conv_tasnet",
            "config": {"encoder_channels": 16, "num_blocks": 2, "num_repeats": 1},
        },
        "data": {"dataset": str(corpus), "train_split": "train_100", "segment_seconds": 1.0},
        "training": {"batch_size": 2, "max_steps": 10, "metric": "si_snri", "loss": "pit_si_snr"},
    }
    recipe_path = root / "recipe.yaml"
    recipe_path.write_text(yaml.safe_dump(recipe))
    best = root / "run" / "best"
    config = ConvTasNetConfig(
        encoder_channels=16,
        bottleneck_channels=8,
        hidden_channels=16,
        skip_channels=8,
        num_blocks=2,
        num_repeats=1,
    )
    ConvTasNetForSourceSeparation(config).save_pretrained(best)
    SourceSeparationFeatureExtractor(feature_size=1, sampling_rate=8000).save_pretrained(best)
    state = {"global_step": 10, "steps_per_epoch": 2, "world_size": 1, "best_metric": 0.5, "best_step": 10}
    (best / "trainer_state.json").write_text(json.dumps(state))
    return root, corpus, recipe_path


def test_builds_model_card_results_and_example(
    tiny_run: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, corpus, recipe = tiny_run
    monkeypatch.setattr(ss, "default_engines", lambda: [FakeEngine(num_voices=10)])
    output = tmp_path / "bundled"
    argv = [
        "--run-dir", str(root / "run"), "--corpus", str(corpus), "--recipe", str(recipe),
        "--output-dir", str(output), "--training-wall-seconds", "90", "--example-seconds", "4",
    ]  # fmt: skip
    assert main(argv) == 0
    model_dir, example_dir = output / DEFAULT_MODEL_NAME, output / "example"
    for name in (*MODEL_FILES, "README.md", "results.json", "bundle.json", "spectrograms.png"):
        assert (model_dir / name).is_file(), name
    assert sorted(p.name for p in output.iterdir()) == [DEFAULT_MODEL_NAME, "example"]  # no staging left

    results = json.loads((model_dir / "results.json").read_text())
    assert results["split"] == "test" and results["num_items"] == 3
    assert results["dataset"] == "demixers synthetic-speech (seed 3)"
    card = (model_dir / "README.md").read_text()
    assert " ".join(ABOUT.split()[:12]) in " ".join(card.split())
    assert "1.5 min" in card and f"{results['aggregate']['average']['si_snri']['headline']:.2f}" in card

    # the recorded example score is what the bundled files give
    info = json.loads((example_dir / "example.json").read_text())
    assert info["corpus_seed"] == 0 and info["seconds"] == 4.0 and len(info["speakers"]) == 2
    from transformers import pipeline

    separator = pipeline("audio-source-separation", model=str(model_dir))
    mixture = soundfile.read(example_dir / "mixture.wav", dtype="float32")[0]
    references = np.stack(
        [soundfile.read(example_dir / name, dtype="float32")[0] for name in EXAMPLE_REFERENCES]
    )
    np.testing.assert_allclose(references.sum(axis=0), mixture, atol=1.5 / 32768)
    estimates = np.stack([stem["audio"][0] for stem in separator(str(example_dir / "mixture.wav"))])
    scores, _ = pit_si_snr(references, estimates)
    baseline = si_snr(references, np.broadcast_to(mixture, references.shape))
    assert float(np.mean(np.asarray(scores) - np.asarray(baseline))) == pytest.approx(
        info["si_snri_db"], abs=1e-3
    )

    # building again replaces the bundle in place
    assert main(argv) == 0
    assert sorted(p.name for p in output.iterdir()) == [DEFAULT_MODEL_NAME, "example"]


def test_refuses_oversized_weights_and_unfinished_runs(
    tiny_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    root, corpus, recipe = tiny_run
    common = ["--corpus", str(corpus), "--recipe", str(recipe), "--output-dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="more than --max-megabytes"):
        main(["--run-dir", str(root / "run"), *common, "--max-megabytes", "0.001"])
    with pytest.raises(FileNotFoundError, match="finished `demixers train` run"):
        main(["--run-dir", str(tmp_path / "nothing"), *common])
    assert not (tmp_path / "out").exists()
