"""``demixers push MODEL_DIR REPO_ID``: write the model card, then upload the folder to the Hub.

The card (``MODEL_DIR/README.md``) is rendered from ``config.json``, the evaluation results
(``--results``, default ``MODEL_DIR/results.json`` when present), the training recipe
(``MODEL_DIR/train_config.yaml`` when present) and an optional figure, validated with
huggingface_hub's ``ModelCard``, and written atomically before anything is uploaded. The repository
is created when missing (``--private`` applies only then), ``--revision`` names a branch that is
created from ``main`` when missing, and hidden files and temporary files are not uploaded. By
default the repo also gets the code that lets plain transformers load it with
``trust_remote_code=True`` (`demixers.pipelines.remote_code`); ``--no-code`` opts out.
Authentication is huggingface_hub's usual one (``HF_TOKEN`` or ``hf auth login``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

# Names (shell patterns) of the folder's files that are not uploaded.
IGNORE_PATTERNS = (".*", "*.tmp", "__pycache__")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="a save_pretrained model folder")
    parser.add_argument("repo_id", metavar="REPO_ID", help="Hub repository, e.g. org/name")
    parser.add_argument("--private", action="store_true", help="create the repository private")
    parser.add_argument(
        "--revision", default=None, metavar="BRANCH", help="branch to push to (created when missing)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="results.json from demixers evaluate (default: MODEL_DIR/results.json when present)",
    )
    parser.add_argument(
        "--training-config", type=Path, default=None, help="training recipe (YAML/JSON) to describe"
    )
    parser.add_argument("--commit-message", default=None, help="commit message (default: a generated one)")
    parser.add_argument(
        "--license", default="apache-2.0", help="license id for the card (default: apache-2.0)"
    )
    parser.add_argument(
        "--base-model", action="append", default=None, help="model this one was fine-tuned from"
    )
    parser.add_argument("--dataset", action="append", default=None, help="Hub dataset id (repeatable)")
    parser.add_argument("--figure", type=Path, default=None, help="PNG to show in the card")
    parser.add_argument(
        "--example-audio",
        type=Path,
        default=None,
        help="separate this audio file with the model and show its spectrograms in the card",
    )
    parser.add_argument(
        "--no-card", action="store_true", help="upload the folder as it is, without (re)writing README.md"
    )
    parser.add_argument(
        "--no-code",
        action="store_true",
        help="upload no model, feature extractor or pipeline code (only demixers users can then load it)",
    )


def run(args: argparse.Namespace) -> int:
    model_dir: Path = args.model_dir
    if not model_dir.is_dir():
        raise NotADirectoryError(f"{model_dir} is not a folder")
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no config.json: is it a save_pretrained folder?")
    if args.results is not None and not args.results.is_file():
        raise FileNotFoundError(f"results file {args.results} does not exist")
    if args.repo_id.count("/") > 1 or not args.repo_id.strip("/"):
        raise ValueError(f"REPO_ID must look like 'name' or 'org/name', got {args.repo_id!r}")

    if not args.no_card:
        from .render import FIGURE_NAME, write_model_card

        figure = args.figure
        if args.example_audio is not None:
            figure = _example_figure(model_dir, args.example_audio, model_dir / FIGURE_NAME)
        card = write_model_card(
            model_dir,
            results=args.results,
            training_config=args.training_config,
            datasets=args.dataset,
            license=args.license,
            base_model=args.base_model,
            repo_id=args.repo_id,
            figure=figure,
            remote_code=not args.no_code,
        )
        print(f"wrote {card}")

    from ..trainers.hub import push_model_folder

    commit_url = push_model_folder(
        model_dir,
        args.repo_id,
        private=args.private,
        revision=args.revision,
        commit_message=args.commit_message or f"Upload {model_dir.name} with demixers",
        code=not args.no_code,
        card=False,  # written above, into MODEL_DIR itself
        ignore_patterns=IGNORE_PATTERNS,
    )
    print(f"pushed {model_dir} to {args.repo_id}" + (f" (branch {args.revision})" if args.revision else ""))
    print(commit_url)
    return 0


def _example_figure(model_dir: Path, audio_path: Path, output: Path) -> Path:
    """Separate ``audio_path`` with the model in ``model_dir`` and plot the result."""
    import numpy as np
    from transformers import pipeline

    from ..audio import read_audio
    from .figures import plot_separation

    separator = pipeline("audio-source-separation", model=str(model_dir))
    waveform, rate = read_audio(audio_path)
    stems = separator({"array": waveform, "sampling_rate": rate})
    return plot_separation(
        waveform, [(stem["label"], np.asarray(stem["audio"])) for stem in stems], rate, output
    )
