"""``demixers publish ORG [NAMES...] [--dry-run DIR]``: official releases -> Hub repos ``ORG/<alias>``.

A maintainer command. Each alias is resolved like ``-m ALIAS`` (downloaded, verified, converted,
cached), then uploaded through the one upload path, `demixers.trainers.hub.push_model_folder`: the
weights, the code plain transformers needs (``trust_remote_code=True``) and a full model card (the
original's license, authors and source, the published score, the conversion's parity figure, the
citation). ``--dry-run DIR`` writes each repository to ``DIR/<alias>/`` instead, exactly as it would
be uploaded. Without NAMES every loadable alias is published (refused ones are skipped and listed).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .download_cli import check_args as check_names

# What the card's metadata and text need from an entry; the push path renders it.
IGNORE_PATTERNS = ("demixers_source.json",)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("org", metavar="ORG", help="Hub organisation (or user) the repos go to")
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="aliases to publish (default: every loadable one)"
    )
    parser.add_argument(
        "--dry-run",
        type=Path,
        default=None,
        metavar="DIR",
        help="write the repositories to DIR/<alias>/ instead of uploading them",
    )
    parser.add_argument("--private", action="store_true", help="create the repos private")
    parser.add_argument(
        "--overwrite", action="store_true", help="with --dry-run: replace existing DIR/<alias>/"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def check_args(args: argparse.Namespace) -> None:
    if "/" in args.org or not args.org.strip():
        raise ValueError(f"ORG must be an organisation or user name without '/', got {args.org!r}")
    if args.names:
        check_names(args)


def card_options(entry: Any, repo_id: str) -> dict[str, Any]:
    """`demixers.model_cards.render_model_card` options for an entry's repository."""
    lines = [
        f"**Converted from the official {entry.alias} release** with demixers (`demixers convert "
        f"{entry.converter}`), weights unchanged. {entry.description}".strip(),
        "",
        f"- **Original authors:** {entry.authors or 'see the original release'}",
        f"- **Original release:** {entry.homepage or '-'}",
        f"- **License:** {entry.license} (the original release's)",
        "- **Source files and checksums (verified before conversion):**",
    ]
    for item in entry.files:
        lines.append(f"  - `{item.source}` ({item.checksum_status})")
    if entry.score:
        reference = entry.score.get("reference")
        caveat = "; not verified offline" if "score" in entry.unverified else ""
        lines.append(
            f"- **Published score (by the original authors, not re-measured here):** {entry.score['metric']} "
            f"{entry.score['value']} dB on {entry.score.get('dataset', '?')}"
            + (f" ({reference}{caveat})" if reference else "")
        )
    lines.append(f"- **Conversion parity:** {entry.parity or 'no parity figure on record'}")
    if entry.citation:
        lines += ["", "Cite the original release:", "", "```bibtex", entry.citation.strip(), "```"]
    return {
        "license": entry.license,
        "repo_id": repo_id,
        "about": "\n".join(lines),
        "tags": [f"demixers-catalogue-{entry.alias}"],
    }


def build_repo_folder(folder: Path, target: Path, options: Mapping[str, Any]) -> None:
    """What `push_model_folder` uploads, written to ``target`` (built beside it, renamed into place)."""
    from ..model_cards import write_model_card
    from ..pipelines.remote_code import add_remote_code
    from ..trainers.hub import IGNORE_PATTERNS as PUSH_IGNORES

    target.parent.mkdir(parents=True, exist_ok=True)
    staging_root = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        staging = staging_root / target.name
        shutil.copytree(folder, staging, ignore=shutil.ignore_patterns(*PUSH_IGNORES, *IGNORE_PATTERNS))
        add_remote_code(staging)
        write_model_card(staging, **options)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    from .resolve import get_catalogue, prepare

    catalogue = get_catalogue()
    entries = (
        [catalogue[name] for name in args.names] if args.names else [e for e in catalogue if not e.refused]
    )
    if not args.names:
        skipped = [entry.alias for entry in catalogue if entry.refused]
        if skipped:
            print(f"skipping refused aliases: {', '.join(skipped)}", file=sys.stderr)
    if args.dry_run is not None and not args.overwrite:
        taken = [entry.alias for entry in entries if (args.dry_run / entry.alias).exists()]
        if taken:
            raise FileExistsError(f"{args.dry_run}: {', '.join(taken)} already exist (pass --overwrite)")
    failures = 0
    for entry in entries:
        repo_id = f"{args.org}/{entry.alias}"
        try:
            folder = prepare(entry, quiet=args.quiet)
            options = card_options(entry, repo_id)
            if args.dry_run is not None:
                target = args.dry_run / entry.alias
                build_repo_folder(folder, target, options)
                print(f"{entry.alias}: wrote {target} (would be {repo_id})")
                continue
            from ..trainers.hub import IGNORE_PATTERNS as PUSH_IGNORES
            from ..trainers.hub import push_model_folder

            url = push_model_folder(
                folder,
                repo_id,
                private=args.private,
                commit_message=f"Upload {entry.alias} (official release converted with demixers)",
                code=True,
                card=options,
                ignore_patterns=(*PUSH_IGNORES, *IGNORE_PATTERNS),
            )
            print(f"{entry.alias}: pushed to {repo_id}: {url}")
        except (ValueError, OSError, KeyError) as error:
            failures += 1
            print(f"demixers publish: error: {entry.alias}: {error}", file=sys.stderr)
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    return 1 if failures else 0
