"""``demixers models``: the catalogue of official releases loadable by name.

One row per alias: task, sources, download size, published score and whether it is in the cache
(``converted``: loads without any request; ``downloaded``: files cached, not converted yet). Nothing
is requested from the network and neither torch nor transformers is imported.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--details",
        action="store_true",
        help="also list each alias's source files, their checksum status and the values not verified offline",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # unreachable


def known_size(entry: Any) -> int | None:
    """The catalogue's download size, else the size of the cached downloads (when all are cached)."""
    if entry.download_size is not None:
        return entry.download_size
    from .download import cached_file

    total = 0
    for release_file in entry.files:
        path = cached_file(release_file)
        if path is None:
            return None
        total += path.stat().st_size
    return total or None


def cache_status(entry: Any) -> str:
    from .download import is_downloaded
    from .resolve import is_converted

    if entry.refused:
        return "refused"
    if is_converted(entry):
        return "converted"
    return "downloaded" if is_downloaded(entry) else "-"


def rows() -> list[dict[str, Any]]:
    from .resolve import get_catalogue

    return [
        {
            "alias": entry.alias,
            "task": entry.task,
            "family": entry.family,
            "sources": list(entry.sources),
            "sampling_rate": entry.sampling_rate,
            "size": known_size(entry),
            "score": entry.score_text(),
            "cached": cache_status(entry),
            "license": entry.license,
            "checksum": entry.checksum_status,
            "files": [{"source": item.source, "checksum": item.checksum_status} for item in entry.files],
            "refused": entry.refused,
            "unverified": list(entry.unverified),
        }
        for entry in get_catalogue()
    ]


def format_table(table: list[list[str]]) -> str:
    widths = [max(len(row[column]) for row in table) for column in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    )


def run(args: argparse.Namespace) -> int:
    listing = rows()
    if args.json:
        print(json.dumps(listing, indent=2))
        return 0
    table = [["alias", "task", "sources", "size", "score", "cached"]]
    for row in listing:
        table.append(
            [
                row["alias"],
                row["task"],
                ",".join(row["sources"]),
                human_size(row["size"]),
                row["score"],
                row["cached"],
            ]
        )
    print(format_table(table))
    if args.details:
        for row in listing:
            print(f"\n{row['alias']} ({row['family']}, {row['license']}):")
            for item in row["files"]:
                print(f"  {item['source']}  [{item['checksum']}]")
            if row["refused"]:
                print(f"  refused: {row['refused']}")
            if row["unverified"]:
                print(f"  not verified offline: {', '.join(row['unverified'])}")
    refused = [row["alias"] for row in listing if row["refused"]]
    if refused:
        print(f"\nrefused (listed, not loadable; `demixers models --details` says why): {', '.join(refused)}")
    return 0
