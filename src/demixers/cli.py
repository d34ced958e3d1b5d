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
from collections.abc import Callable, Sequence
from typing import Any

# name -> (module implementing it, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "separate": ("demixers.pipelines.cli", "separate audio files into stems"),
    "convert": ("demixers.modeling.convert_cli", "convert an official checkpoint into a demixers folder"),
    "prepare": ("demixers.datasets_scripts.cli", "prepare a separation corpus as a Hub dataset"),
    "train": ("demixers.trainers.cli", "train or fine-tune a model from a YAML recipe"),
    "evaluate": ("demixers.evaluation.cli", "evaluate a model on a dataset split"),
    "push": ("demixers.model_cards.cli", "push a model folder with a generated model card to the Hub"),
    "models": ("demixers.catalogue.models_cli", "list the official checkpoints loadable by name (-m NAME)"),
    "download": (
        "demixers.catalogue.download_cli",
        "download, verify, convert and cache official checkpoints",
    ),
    "publish": (
        "demixers.catalogue.publish_cli",
        "convert official checkpoints and push them to a Hub organisation",
    ),
    "web": ("demixers.web.cli", "serve a web page to separate audio in the browser (demixers[web])"),
    "export": ("demixers.export.cli", "export a model to ONNX (for onnxruntime)"),
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


class LazySubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser that imports its module and calls ``configure_parser`` only when the
    subcommand is chosen, so ``demixers --help`` and ``demixers separate ...`` never import the
    other subcommands (nor what their modules import)."""

    def __init__(
        self, *args: Any, configure: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._configure = configure

    def configure_now(self) -> None:
        """Add the subcommand's arguments (once)."""
        configure, self._configure = self._configure, None
        if configure is not None:
            configure(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[Any, list[str]]:
        if self._configure is not None:
            self.configure_now()
            # `configure_parser` may install its own parse_known_args on the instance (`train`)
            return self.parse_known_args(args, namespace)
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self.configure_now()
        return super().format_help()

    def format_usage(self) -> str:
        self.configure_now()
        return super().format_usage()


def add_lazy_subcommands(
    subparsers: Any, commands: dict[str, tuple[str, str]], handler_key: str, check_key: str | None = None
) -> dict[str, LazySubcommandParser]:
    """One `LazySubcommandParser` per ``name -> (module, help)`` (``subparsers`` made with
    ``parser_class=LazySubcommandParser``); the module's ``configure_parser``
    and ``run`` (as ``handler_key`` in the namespace) are attached when the name is parsed. A module
    missing from this installation gives a handler that raises `CommandUnavailableError`. With
    ``check_key``, a module's ``check_args(args)`` (option combinations, before any model is loaded)
    is attached under that name."""
    parsers: dict[str, LazySubcommandParser] = {}
    for name, (module_name, help_text) in commands.items():

        def configure(parser: argparse.ArgumentParser, module_name: str = module_name) -> None:
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as error:
                if error.name != module_name:
                    raise
                parser.set_defaults(**{handler_key: _unavailable(parser.prog)})
                return
            module.configure_parser(parser)
            parser.set_defaults(**{handler_key: module.run})
            if check_key is not None and hasattr(module, "check_args"):
                parser.set_defaults(**{check_key: module.check_args})

        parsers[name] = subparsers.add_parser(
            name,
            help=help_text,
            description=help_text,
            configure=configure,
        )
    return parsers


def build_parser() -> argparse.ArgumentParser:
    """The ``demixers`` parser. Subcommands are configured when chosen (see `LazySubcommandParser`):
    parsing imports only the chosen subcommand's module, and no module imports torch or transformers
    before ``run``, so help and option errors come back at once."""
    parser = argparse.ArgumentParser(
        prog="demixers",
        description="Audio source separation with Hugging Face models.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=LazySubcommandParser)
    add_lazy_subcommands(subparsers, SUBCOMMANDS, "handler", check_key="check_args")
    return parser


def _unavailable(command: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        raise CommandUnavailableError(f"`{command}` is not available in this version of demixers")

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
        check_args = getattr(args, "check_args", None)
        if check_args is not None:
            check_args(args)  # option combinations: reported before any model is loaded
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
