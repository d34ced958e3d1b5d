"""``demixers download NAME...``: fetch, verify, convert and cache catalogue aliases ahead of use.

Afterwards ``-m NAME`` loads them without any request, also with ``HF_HUB_OFFLINE=1``. Each failing
alias is reported on one line (the others are still fetched) and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="+", metavar="NAME", help="catalogue aliases (see `demixers models`)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars, no summary lines")


def check_args(args: argparse.Namespace) -> None:
    from .resolve import get_catalogue

    catalogue = get_catalogue()
    for name in args.names:
        try:
            catalogue[name]
        except KeyError as error:  # a usage error (exit 2), before anything is downloaded
            raise ValueError(error.args[0]) from None


def run(args: argparse.Namespace) -> int:
    from .resolve import get_catalogue, prepare

    catalogue = get_catalogue()
    failures = 0
    for name in args.names:
        try:
            entry = catalogue[name]
            folder = prepare(entry, quiet=args.quiet)
        except (KeyError, ValueError, OSError) as error:
            failures += 1
            message = error.args[0] if isinstance(error, KeyError) and error.args else error
            print(f"demixers download: error: {message}", file=sys.stderr)
            continue
        if not args.quiet:
            print(f"{name}: {folder}")
    return 1 if failures else 0
