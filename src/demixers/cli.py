"""The ``demixers`` command line.

Each subcommand lives in its own module, which exposes ``configure_parser(parser)`` and
``run(args) -> int``. Modules keep heavy imports (torch, transformers, datasets) inside
``run`` so that ``demixers --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module implementing it, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "separate": ("demixers.pipelines.cli", "separate audio files into stems"),
    "convert": ("demixers.modeling.convert_cli", "convert an official checkpoint into a demixers folder"),
    "prepare": ("demixers.datasets_scripts.cli", "prepare a separation corpus as a Hub dataset"),
    "train": ("demixers.trainers.cli", "train or fine-tune a model from a YAML recipe"),
    "evaluate": ("demixers.evaluation.cli", "evaluate a model on a dataset split"),
    "push": ("demixers.model_cards.cli", "push a model folder with a generated model card to the Hub"),
}

# Errors that mean "the user asked for something wrong": reported as one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    TypeError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    IsADirectoryError,
    PermissionError,
)


class CommandUnavailableError(RuntimeError):
    """A subcommand whose implementation is not part of this installation."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demixers",
        description="Audio source separation with Hugging Face models.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        subparser = subparsers.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:
                raise
            subparser.set_defaults(handler=_unavailable(name))
            continue
        module.configure_parser(subparser)
        subparser.set_defaults(handler=module.run)
    return parser


def _unavailable(name: str):
    def handler(args: argparse.Namespace) -> int:
        raise CommandUnavailableError(f"`demixers {name}` is not available in this version of demixers")

    return handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except (*USER_ERRORS, CommandUnavailableError) as error:
        print(f"demixers {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"demixers {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
