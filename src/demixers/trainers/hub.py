"""Pushing a trained model folder to the Hub with a generated model card.

The card comes from `demixers.model_cards.write_model_card`: the folder's ``config.json``, the
validation ``results.json`` that ``best/`` keeps (same format as ``demixers evaluate``), the recipe
(``train_config.yaml``) and a short training summary. The folder is staged in a temporary copy so
the run's own ``best/`` is never modified by the push.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# Files of a model folder that do not go to the Hub.
IGNORE_PATTERNS = ("eval_results.json", "trainer_state.json", ".tmp-*", ".old-*")


def training_summary(state: Mapping[str, Any], metric: str) -> dict[str, Any]:
    """The training facts listed in the card."""
    best = state.get("best_metric")
    return {
        "steps trained": state.get("global_step"),
        "epochs": round((state.get("global_step", 0) or 0) / max(state.get("steps_per_epoch") or 1, 1), 2),
        "processes": state.get("world_size"),
        f"best validation {metric}": None if best is None else round(float(best), 3),
        "best step": state.get("best_step"),
        "skipped non-finite steps": state.get("skipped_steps") or None,
    }


def push_model_folder(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str = "Upload model trained with demixers",
    config: Mapping[str, Any] | None = None,
    state: Mapping[str, Any] | None = None,
    metric: str = "loss",
    code: bool = True,
    card: bool | Mapping[str, Any] = True,
    ignore_patterns: Sequence[str] = IGNORE_PATTERNS,
) -> str:
    """Upload a ``save_pretrained`` model folder to ``repo_id``; return the commit URL.

    The one upload path of ``demixers push``, ``train --push-to-hub`` and ``convert --push-to-hub``.
    The folder is staged in a temporary copy (the original is never modified) that gets

    * the model card (``README.md``) unless ``card`` is False: ``card`` may be a mapping of
      `demixers.model_cards.write_model_card` options; the folder's ``results.json`` and, when
      ``config``/``state`` are given, the training recipe and summary are described;
    * with ``code`` (the default), the remote code that lets plain transformers load the repo
      (`demixers.pipelines.remote_code.add_remote_code`: family code, feature extractor, pipeline,
      ``auto_map``, ``custom_pipelines``, ``preprocessor_config.json``).

    The repository is created when missing (``private`` applies only then), the branch
    ``revision`` from ``main`` when missing.

    Raises:
        FileNotFoundError: ``folder`` has no ``config.json`` (or, with ``code``, no safetensors weights).
        ValueError: ``code`` for a model whose family is not registered or whose code is not
            self-contained.
    """
    from huggingface_hub import HfApi

    from ..model_cards import write_model_card
    from ..pipelines.remote_code import add_remote_code

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json)")
    with tempfile.TemporaryDirectory(prefix="demixers-push-") as tmp:
        staging = Path(tmp) / folder.name
        shutil.copytree(folder, staging, ignore=shutil.ignore_patterns(*ignore_patterns))
        if code:
            add_remote_code(staging)  # before any network call: a folder that cannot carry code fails first
        api = HfApi()
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        if card is not False:
            options = dict(card) if isinstance(card, Mapping) else {}
            results = staging / "results.json"
            options.setdefault("results", results if results.is_file() else None)
            if config is not None:
                options.setdefault("training_config", dict(config))
            if state is not None or config is not None:
                options.setdefault("training_summary", training_summary(state or {}, metric))
            options.setdefault("repo_id", repo_id)
            write_model_card(staging, **options)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=staging, revision=revision, commit_message=commit_message
        )
    return str(commit.commit_url)


__all__ = ["IGNORE_PATTERNS", "push_model_folder", "training_summary"]
