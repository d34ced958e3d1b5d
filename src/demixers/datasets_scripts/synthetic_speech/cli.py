"""``demixers prepare synthetic-speech``: arguments and entry point."""

from __future__ import annotations

import csv
from typing import Any

from .constants import SPLIT_FOLDERS
from .corpus import generate_corpus


def add_arguments(parser: Any) -> None:
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the corpus")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--num-train", type=int, default=3000, metavar="N", help="training mixtures (%(default)s)"
    )
    parser.add_argument(
        "--num-validation", type=int, default=200, metavar="N", help="validation mixtures (%(default)s)"
    )
    parser.add_argument("--num-test", type=int, default=200, metavar="N", help="test mixtures (%(default)s)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="shortest mixture (%(default)s s)")
    parser.add_argument("--max-seconds", type=float, default=6.0, help="longest mixture (%(default)s s)")
    parser.add_argument(
        "--noise", action="store_true", help="also write noise/ and mix_both/ (LibriMix style)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a corpus already in --output")
    parser.add_argument("--num-workers", type=int, default=1, metavar="N", help="processes (%(default)s)")


def run(args: Any) -> int:
    import sys

    root = generate_corpus(
        args.output,
        seed=args.seed,
        sizes={"train": args.num_train, "validation": args.num_validation, "test": args.num_test},
        seconds=(args.min_seconds, args.max_seconds),
        noise=args.noise,
        overwrite=args.overwrite,
        num_workers=args.num_workers,
        progress=True,
    )
    speakers = list(csv.DictReader((root / "speakers.csv").open(encoding="utf-8")))
    counts = ", ".join(f"{split}: {sum(s['split'] == split for s in speakers)}" for split in SPLIT_FOLDERS)
    print(f"wrote a synthetic Libri2Mix corpus in {root} (speakers {counts})", file=sys.stdout)
    return 0
