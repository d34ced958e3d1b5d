"""Prepared corpora pushed to (and loaded back from) the loopback Hub server (`hub_server` fixture)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import torch

from demixers.datasets_scripts import load_separation_dataset, prepare_corpus
from demixers.datasets_scripts.cli import configure_parser, run
from tests.datasets_scripts import corpus_factory as factory


def test_push_prepared_corpus_and_load_it_back(hub_server, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    repo_id = f"{hub_server.username}/wsj0-2mix-{uuid.uuid4().hex[:8]}"
    root = factory.make_wsj0mix(tmp_path / "wsj", items_per_split=2)
    local = prepare_corpus("wsj0-2mix", root, tmp_path / "prepared", push_to_hub=repo_id, progress=False)
    files = HfApi().list_repo_files(repo_id, repo_type="dataset")
    assert "README.md" in files and any(f.startswith("data/train-") for f in files)

    reference = load_separation_dataset(tmp_path / "prepared", "test")
    remote = load_separation_dataset(repo_id, "test")
    assert len(remote) == len(local["test"]) == 2
    for k in range(len(reference)):
        assert remote[k]["id"] == reference[k]["id"]
        torch.testing.assert_close(remote[k]["mixture"], reference[k]["mixture"], rtol=0, atol=0)
        torch.testing.assert_close(remote[k]["sources"], reference[k]["sources"], rtol=0, atol=0)
    assert remote.speaker_ids(0) == reference.speaker_ids(0)

    streamed = list(load_separation_dataset(repo_id, "validation", streaming=True))
    mapped = load_separation_dataset(tmp_path / "prepared", "validation")
    assert [item["id"] for item in streamed] == [mapped[k]["id"] for k in range(len(mapped))]
    torch.testing.assert_close(streamed[0]["sources"], mapped[0]["sources"], rtol=0, atol=0)


def test_cli_push_private(hub_server, tmp_path: Path) -> None:
    import argparse

    from huggingface_hub import HfApi

    repo_id = f"{hub_server.username}/mir1k-{uuid.uuid4().hex[:8]}"
    root = factory.make_mir1k(tmp_path / "mir", names=("amy_1_01", "bobon_2_02"))
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(
        ["mir1k", str(root), "--output", str(tmp_path / "out"), "--push-to-hub", repo_id, "--private"]
    )
    assert run(args) == 0
    assert HfApi().repo_info(repo_id, repo_type="dataset").private
    train = load_separation_dataset(repo_id, "train")
    assert train[0]["id"] == "amy_1_01" and train.source_names == ["accompaniment", "vocals"]
    with pytest.raises(ValueError, match="no split"):
        load_separation_dataset(str(tmp_path / "out"), "validation")
