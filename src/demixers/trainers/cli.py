"""``demixers train`` and ``train.py``: one command line for both.

::

    demixers train --config configs/mossformer_tiny_cpu.yaml --output-dir runs/tiny [--resume]
        [--push-to-hub org/name] [--section.key=value ...]
    accelerate launch train.py --config ... --output-dir ...      (several processes / GPUs)

Every ``--section.key=value`` (or ``--section.key value``) overrides one key of the recipe; see
`demixers.trainers.config` for the keys, their types and their defaults (``--print-config`` shows the
resolved recipe and exits).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

EPILOG = (
    "Config overrides: --section.key=value for any key of the recipe (sections model, data, training, hub), "
    "e.g. --training.max_steps=20 --training.learning_rate=3e-4 --model.config.num_hidden_layers=2. "
    "Values are coerced to the key's type; unknown keys are an error."
)


def _is_override(word: str) -> bool:
    return word.startswith("--") and "." in word[2:].split("=", 1)[0]


def _split_overrides(words: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--a.b=c`` / ``--a.b c`` words from the regular arguments."""
    regular, overrides = [], []
    index = 0
    words = list(words)
    while index < len(words):
        word = words[index]
        if _is_override(word):
            overrides.append(word)
            if "=" not in word and index + 1 < len(words) and not words[index + 1].startswith("--"):
                overrides.append(words[index + 1])
                index += 1
        else:
            regular.append(word)
        index += 1
    return regular, overrides


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="YAML recipe (see configs/)")
    parser.add_argument("--output-dir", required=True, help="where checkpoints, best/, last/ and logs go")
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue from the newest complete checkpoint of --output-dir (or from CHECKPOINT)",
    )
    parser.add_argument(
        "--push-to-hub",
        metavar="ORG/NAME",
        default=None,
        help="push the best model with a generated model card to this Hub repo at the end (hub.repo_id)",
    )
    parser.add_argument(
        "--no-code",
        action="store_true",
        help="with --push-to-hub: push no model/pipeline code (hub.code=false)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.epilog = EPILOG
    parser.set_defaults(overrides=[])

    # `--section.key=value` words are not declared options: take them out before argparse sees them.
    original = parser.parse_known_args

    def parse_known_args(args: Sequence[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        words = sys.argv[1:] if args is None else list(args)
        regular, overrides = _split_overrides(words)
        namespace, extras = original(regular, namespace)
        namespace.overrides = [*getattr(namespace, "overrides", []), *overrides]
        return namespace, extras

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


class TrainCommandError(ValueError):
    """An expected failure of ``demixers train`` / ``train.py``, already phrased as one line."""


# Failures a user can cause and fix (a bad recipe, a missing or corrupt file, a full disk, a batch
# that does not fit): reported as one line with exit code 2, never as a traceback.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, MemoryError)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def run(args: argparse.Namespace) -> int:
    from .config import dump_config, load_config
    from .trainer import NonFiniteLossError, Trainer

    try:
        config = load_config(args.config, list(args.overrides))
        if args.push_to_hub:
            config["hub"]["repo_id"] = args.push_to_hub
        if getattr(args, "no_code", False):
            config["hub"]["code"] = False
        if args.print_config:
            print(dump_config(config), end="")
            return 0
        summary = Trainer(config, args.output_dir, resume=args.resume, push_to_hub=args.push_to_hub).train()
    except NonFiniteLossError as error:
        print(f"training stopped: {_one_line(error)}", file=sys.stderr)
        return 1
    except MemoryError:
        raise TrainCommandError("out of memory; lower training.batch_size or the model size") from None
    except EXPECTED_ERRORS as error:
        raise TrainCommandError(_one_line(error)) from None
    from accelerate import PartialState

    if PartialState().is_main_process:
        best = summary.get("best_metric")
        best_text = "n/a" if best is None else f"{best:.3f} at step {summary.get('best_step')}"
        print(
            f"done: {summary['global_step']} steps, best {summary['metric']} {best_text}, "
            f"output in {summary['output_dir']}"
            + (f", pushed to {summary['hub_url']}" if summary.get("hub_url") else "")
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``train.py``'s entry: the same parser and code as ``demixers train``."""
    parser = argparse.ArgumentParser(
        prog="train.py", description="Train or fine-tune a demixers model from a YAML recipe."
    )
    configure_parser(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except TrainCommandError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 2


__all__ = ["EXPECTED_ERRORS", "TrainCommandError", "configure_parser", "main", "run"]
