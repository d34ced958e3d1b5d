"""``--push-to-hub``: the best model with a generated model card, plus periodic pushes to a branch."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import torch
from safetensors.torch import load_file

from demixers.trainers.trainer import Trainer
from tests.trainers.conftest import recipe

# unordered speakers, as the toy was judged by its names before every config declared it
TOY = {
    "type": "demixers_toy_splitter",
    "config": {"sampling_rate": 8000, "source_names": ["s1", "s2"], "permutation_invariant": True},
}


def test_push_best_model_with_card_and_periodic_branch_pushes(
    speech_corpus: Path, tmp_path: Path, hub_server
) -> None:
    from huggingface_hub import HfApi
    from transformers import AutoModel

    repo_id = f"{hub_server.username}/toy-trained-{uuid.uuid4().hex[:8]}"
    config = recipe(
        speech_corpus,
        tmp_path,
        model=TOY,
        data={"samples_per_epoch": 8, "max_eval_samples": 2},
        training={"loss": "l1", "learning_rate": 0.05, "max_steps": None, "epochs": 3},
        hub={"push_every_epochs": 1, "revision": "checkpoints", "private": True},
    )
    out = tmp_path / "run"
    summary = Trainer(config, out, push_to_hub=repo_id).train()
    assert summary["global_step"] == 6 and summary["hub_url"]

    api = HfApi()
    files = set(api.list_repo_files(repo_id))
    assert {
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "results.json",
    } <= files
    assert "trainer_state.json" not in files and "eval_results.json" not in files
    card = Path(api.hf_hub_download(repo_id, "README.md")).read_text()
    assert "library_name: demixers" in card and "SI-SNRi" in card
    best_step = json.loads((out / "best" / "eval_results.json").read_text())["step"]
    assert f"| best step | {best_step} |" in card
    # the pushed weights are best/'s and load back through the Auto classes
    pushed = load_file(api.hf_hub_download(repo_id, "model.safetensors"))
    local = load_file(out / "best" / "model.safetensors")
    assert all(torch.equal(pushed[k], local[k]) for k in local)
    model = AutoModel.from_pretrained(repo_id)
    assert torch.equal(model.gain_logits.detach(), local["gain_logits"])
    # one push per finished epoch but the last went to the branch, as separate commits
    branch_commits = [c.title for c in api.list_repo_commits(repo_id, revision="checkpoints")]
    assert sum("(epoch 1, step 2)" in t for t in branch_commits) == 1
    assert sum("(epoch 2, step 4)" in t for t in branch_commits) == 1
    main_titles = [c.title for c in api.list_repo_commits(repo_id)]
    assert not any("(epoch" in t for t in main_titles)
