"""The ``demixers`` command line.

Each subcommand lives in its own module, which exposes ``configure_parser(parser)`` and
``run(args) -> int``. Modules keep heavy imports (torch, transformers, datasets) inside
``run`` so that ``demixers --help`` stays fast.

Errors: `main` is the last resort for every subcommand. *Expected* failures become one line on
stderr, never a traceback: a user or model error (bad option, missing file, a model file that is
corrupt: ``SafetensorError``, JSON/YAML that does not parse) exits with 2; a failure of the work
itself (out of memory, a disk error) with 1; Ctrl-C with 130 and SIGTERM with 143 where the
subcommand handles it. Anything else is a bug and keeps its traceback. ``DEMIXERS_DEBUG=1`` shows
the traceback of every error, expected or not.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
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


def model_file_errors() -> tuple[type[BaseException], ...]:
    """Errors of files that do not parse (user errors like a ValueError), where installed."""
    errors: list[type[BaseException]] = []
    with contextlib.suppress(ImportError):
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    with contextlib.suppress(ImportError):
        import yaml

        errors.append(yaml.YAMLError)
    return tuple(errors)


def resource_errors() -> tuple[type[BaseException], ...]:
    """Failures of the work itself: memory and (non user) OS errors such as a full disk."""
    errors: list[type[BaseException]] = [MemoryError, OSError]
    torch = sys.modules.get("torch")  # only loaded subcommands can raise its errors
    if torch is not None and hasattr(torch, "OutOfMemoryError"):
        errors.append(torch.OutOfMemoryError)
    return tuple(errors)


def one_line(error: BaseException) -> str:
    """The error's first non-empty line, whitespace collapsed (transformers' run over several)."""
    for line in str(error).splitlines():
        if line.strip():
            return " ".join(line.split())
    return type(error).__name__


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
    debug = os.environ.get("DEMIXERS_DEBUG", "") not in ("", "0")
    try:
        return int(args.handler(args) or 0)
    except (*USER_ERRORS, CommandUnavailableError, *model_file_errors()) as error:
        if debug:
            raise
        print(f"demixers {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except resource_errors() as error:
        if debug:
            raise
        what = "out of memory: " if isinstance(error, MemoryError) else ""
        print(f"demixers {args.command}: error: {what}{one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"demixers {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
