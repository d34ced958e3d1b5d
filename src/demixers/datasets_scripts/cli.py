"""``demixers prepare <corpus> ROOT --output DIR [--push-to-hub org/name] [--private] ...``.

``demixers prepare synthetic-speech --output DIR [--seed N] ...`` instead generates a corpus (see
`demixers.datasets_scripts.synthetic_speech`).
"""

from __future__ import annotations

import argparse
import errno
import sys

from .corpora import CORPORA

SYNTHETIC_SPEECH = "synthetic-speech"
SYNTHETIC_SPEECH_HELP = (
    "generate a LibriMix-format 2-speaker 8 kHz corpus spoken by Debian text-to-speech voices "
    "(espeak-ng, flite, festival), offline and deterministic given --seed"
)


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", metavar="ROOT", help="the corpus folder, as its official scripts wrote it")
    parser.add_argument(
        "--output", "-o", required=True, metavar="DIR", help="folder for the prepared dataset (save_to_disk)"
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="also push the dataset to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo as private")
    parser.add_argument("--token", help="Hub token (default: the logged-in one / HF_TOKEN)")
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="leave invalid items out (listed in a warning) instead of stopping with the list",
    )
    parser.add_argument("--shard-size", type=int, metavar="N", help="rows per resumable shard")
    parser.add_argument("--num-workers", type=int, default=1, metavar="N", help="processes building shards")
    parser.add_argument(
        "--no-sum-check",
        dest="sum_check",
        action="store_false",
        help="do not check that the sources sum to the mixture",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a dataset previously saved in --output"
    )
    parser.add_argument("--keep-shards", action="store_true", help="keep the intermediate shard files")
    parser.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="read files that the corpus metadata lists outside ROOT (absolute or ../ paths, symlinks); "
        "refused by default, since they would end up in the dataset and on the Hub",
    )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add one sub-command per registered corpus to ``demixers prepare``."""
    subparsers = parser.add_subparsers(dest="corpus", metavar="CORPUS", required=True)
    for name, corpus in CORPORA.items():
        sub = subparsers.add_parser(name, help=corpus.help, description=corpus.help)
        _add_common_arguments(sub)
        corpus.add_arguments(sub)
    from . import synthetic_speech

    sub = subparsers.add_parser(
        SYNTHETIC_SPEECH, help=SYNTHETIC_SPEECH_HELP, description=SYNTHETIC_SPEECH_HELP
    )
    synthetic_speech.add_arguments(sub)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except OSError as error:
        # missing files and the like are user errors that `demixers` reports itself (exit 2); what is
        # left (full disk, permissions, I/O errors) failed the run: one line naming the place, exit 1
        if isinstance(error, USER_OS_ERRORS):
            raise
        print(f"demixers prepare: error: {describe_os_error(error, args.output)}", file=sys.stderr)
        return 1


USER_OS_ERRORS = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError)


def describe_os_error(error: OSError, output: str) -> str:
    """One line for an `OSError`: the disk is full (where), or what failed on which file."""
    where = error.filename or output
    if error.errno == errno.ENOSPC:
        return f"the disk is full (no space left writing {where})"
    if error.errno == errno.EDQUOT:
        return f"disk quota exceeded (writing {where})"
    reason = error.strerror or str(error) or type(error).__name__
    return f"{reason}: {where}"


def _run(args: argparse.Namespace) -> int:
    if args.corpus == SYNTHETIC_SPEECH:
        from . import synthetic_speech

        return synthetic_speech.run(args)
    from .corpora import get_corpus
    from .prepare import prepare_corpus

    corpus = get_corpus(args.corpus)
    dataset = prepare_corpus(
        corpus,
        args.root,
        args.output,
        skip_invalid=args.skip_invalid,
        shard_size=args.shard_size,
        num_workers=args.num_workers,
        sum_check=args.sum_check,
        overwrite=args.overwrite,
        keep_shards=args.keep_shards,
        allow_outside_root=args.allow_outside_root,
        push_to_hub=args.push_to_hub,
        private=args.private or None,
        token=args.token,
        **corpus.options_from_args(args),
    )
    rows = ", ".join(f"{split}: {len(part)}" for split, part in dataset.items())
    print(f"prepared {args.corpus} in {args.output} ({rows})", file=sys.stdout)
    if args.push_to_hub:
        print(f"pushed to {args.push_to_hub}", file=sys.stdout)
    return 0
