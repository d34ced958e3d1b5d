"""`demixers evaluate` end to end: a raw LibriMix corpus, the pipeline, the metrics, results files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from demixers.cli import main
from tests.datasets_scripts.corpus_factory import make_librimix
from tests.toy_models import ToySplitterConfig, ToySplitterForSourceSeparation


@pytest.fixture(scope="module")
def toy_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("toy-model")
    ToySplitterForSourceSeparation(ToySplitterConfig()).save_pretrained(folder)
    return folder


def test_evaluate_librimix_with_a_gain_only_model_gives_zero_si_snri(
    tmp_path: Path, toy_model_dir: Path
) -> None:
    # The toy model outputs gain * mixture for every source; SI-SNR is scale invariant, so its
    # SI-SNR equals the mixture's and the SI-SNR improvement is exactly 0 dB for every item.
    corpus = make_librimix(tmp_path / "corpus", splits=("test",), items_per_split=3)
    output_dir = tmp_path / "eval"
    code = main(
        [
            "evaluate", "--model", str(toy_model_dir), "--dataset", str(corpus), "--split", "test",
            "--output-dir", str(output_dir), "--task", "speech", "--quiet", "--update-card",
        ]
    )  # fmt: skip
    assert code == 0
    results = json.loads((output_dir / "results.json").read_text())
    assert results["num_items"] == 3
    assert results["task"] == "speech"
    assert results["source_names"] == ["speaker_1", "speaker_2"]
    for item in results["items"]:
        values = np.asarray(
            [item["metrics"][name]["si_snri"] for name in results["source_names"]], dtype=float
        )
        np.testing.assert_allclose(values, 0.0, atol=1e-3)
    for name in results["source_names"]:
        assert results["aggregate"][name]["si_snri"]["count"] == 3
        assert abs(results["aggregate"][name]["si_snri"]["mean"]) < 1e-3
    assert (output_dir / "results.md").read_text().count("|") > 4
    card = (toy_model_dir / "README.md").read_text()
    assert "model-index" in card and "si_snri" in card.lower().replace("-", "_")


def test_evaluate_refuses_a_wrong_number_of_source_columns(
    tmp_path: Path, toy_model_dir: Path, capsys
) -> None:
    corpus = make_librimix(tmp_path / "corpus", splits=("test",), items_per_split=1)
    code = main(["evaluate", "-m", str(toy_model_dir), "-d", str(corpus), "--sources", "s1", "-q"])
    assert code == 2
    assert "--sources names 1 columns" in capsys.readouterr().err


def test_evaluate_max_items_must_be_positive(tmp_path: Path, toy_model_dir: Path, capsys) -> None:
    code = main(["evaluate", "-m", str(toy_model_dir), "-d", str(tmp_path), "--max-items", "0"])
    assert code == 2
    assert "--max-items must be positive" in capsys.readouterr().err
