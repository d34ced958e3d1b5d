"""Keep the code that self-contained family folders must copy in sync with its original.

Family folders (``src/demixers/modeling/<family>/``) import only from themselves, so a Hub repo can
carry their code as remote code; a helper that several families need is therefore copied. Each copy
is marked on the line right above it (above its decorators, if any)::

    # Copied from demixers.modeling.mossformer.modeling_mossformer.pairwise_si_snr
    def pairwise_si_snr(...):

    # Copied from demixers.modeling.conv_tasnet.modeling_conv_tasnet.Encoder with ConvTasNet->DPRNNTasNet
    class Encoder(nn.Module):

The target is a module path and a top-level name, or ``Class.method``. ``with A->B, C->D``
replaces text in the original before comparing (in that order); ``all-casing`` after the
replacements also applies them in lower and upper case. The copy must equal the original after the
replacements, up to formatting (both sides go through ``ruff format`` when ruff is installed) and
indentation. A marker inside a copied block (a copy of a copy) is compared as part of that block.
A marker longer than the line limit may end in ``# noqa: E501``.

Usage::

    python utils/check_copies.py          # exit 1 and list every copy that drifted
    python utils/check_copies.py --fix    # rewrite drifted copies from their originals
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "demixers"

_MARKER = re.compile(
    r"^(?P<indent>[ \t]*)# Copied from (?P<target>" + PACKAGE + r"(?:\.\w+)+)"
    r"(?:\s+with\s+(?P<replacements>.+?))?(?:\s+# noqa: E501)?\s*$"
)
_REPLACEMENT = re.compile(r"^\s*(?P<old>\S+)\s*->\s*(?P<new>\S+)\s*$")
_ALL_CASING = "all-casing"


@dataclass(frozen=True)
class Copy:
    """One marked copy: the file, the marker's line number (0-based) and the copied block's lines."""

    path: Path
    marker_line: int
    block_start: int
    block_end: int  # exclusive
    indent: str
    target: str
    replacements: tuple[tuple[str, str], ...]
    all_casing: bool


@dataclass(frozen=True)
class Drift:
    copy: Copy
    expected: list[str]

    def describe(self, root: Path) -> str:
        where = f"{self.copy.path.relative_to(root)}:{self.copy.marker_line + 1}"
        return f"{where}: the copy of {self.copy.target} differs from its original"


class CopyError(ValueError):
    """A marker that cannot be checked (unknown target, nothing below it, bad replacement)."""


def parse_replacements(text: str | None, where: str) -> tuple[tuple[tuple[str, str], ...], bool]:
    if not text:
        return (), False
    pairs: list[tuple[str, str]] = []
    all_casing = False
    for part in text.split(","):
        if part.strip() == _ALL_CASING:
            all_casing = True
            continue
        match = _REPLACEMENT.match(part)
        if match is None:
            raise CopyError(f"{where}: replacement {part.strip()!r} is not of the form A->B")
        pairs.append((match["old"], match["new"]))
    return tuple(pairs), all_casing


def _block_end(lines: list[str], start: int, indent: str) -> int:
    """End (exclusive) of the def/class starting at ``start``, trailing blank lines excluded."""
    end = start + 1
    last_code = start
    while end < len(lines):
        line = lines[end]
        if line.strip():
            current = len(line) - len(line.lstrip())
            stripped = line.strip()
            closes_header = stripped.startswith((")", "]", "}"))
            if current <= len(indent) and not closes_header:
                break
            last_code = end
        end += 1
    return last_code + 1


def find_copies(path: Path) -> list[Copy]:
    lines = path.read_text().splitlines()
    copies: list[Copy] = []
    for number, line in enumerate(lines):
        match = _MARKER.match(line)
        if match is None:
            continue
        where = f"{path}:{number + 1}"
        start = number + 1
        if start >= len(lines) or not lines[start].lstrip().startswith(("def ", "class ", "@", "async def ")):
            raise CopyError(f"{where}: a '# Copied from' marker must stand right above a def or class")
        header = start
        while lines[header].lstrip().startswith("@"):
            header += 1
        replacements, all_casing = parse_replacements(match["replacements"], where)
        copies.append(
            Copy(
                path=path,
                marker_line=number,
                block_start=start,
                block_end=_block_end(lines, header, match["indent"]),
                indent=match["indent"],
                target=match["target"],
                replacements=replacements,
                all_casing=all_casing,
            )
        )
    return copies


def _module_file(root: Path, module: str) -> Path | None:
    relative = Path(*module.split("."))
    for candidate in (root / "src" / relative.with_suffix(".py"), root / "src" / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def original_source(root: Path, target: str) -> list[str]:
    """The original's lines (decorators included), dedented."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_file = _module_file(root, ".".join(parts[:split]))
        if module_file is not None:
            names = parts[split:]
            break
    else:
        raise CopyError(f"no module under {root / 'src'} holds {target}")
    source = module_file.read_text()
    body: list[ast.stmt] = ast.parse(source).body
    definitions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | None = None
    for name in names:
        node = next((item for item in body if isinstance(item, definitions) and item.name == name), None)
        if node is None:
            raise CopyError(f"{module_file}: no def or class {name!r} (from {target})")
        body = node.body if isinstance(node, ast.ClassDef) else []
    if node is None:
        raise CopyError(f"{target} names a module, not a def or class")
    first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
    lines = source.splitlines()[first - 1 : node.end_lineno]
    return textwrap.dedent("\n".join(lines)).splitlines()


def _replace(text: str, replacements: tuple[tuple[str, str], ...], all_casing: bool) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
        if all_casing:
            text = text.replace(old.lower(), new.lower()).replace(old.upper(), new.upper())
    return text


def _formatter() -> list[str] | None:
    ruff = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
    return [ruff, "format", "--quiet", "--line-length", "110", "-"] if ruff else None


def _normalise(lines: list[str]) -> str:
    """Dedented, ruff-formatted text (formatting and indentation do not count as drift)."""
    text = textwrap.dedent("\n".join(lines)).strip("\n") + "\n"
    command = _formatter()
    if command is None:
        return "\n".join(line.rstrip() for line in text.splitlines())
    result = subprocess.run(command, input=text, capture_output=True, text=True, check=False)
    return result.stdout if result.returncode == 0 else text


def check_file(root: Path, path: Path) -> list[Drift]:
    lines = path.read_text().splitlines()
    drifts: list[Drift] = []
    for copy in find_copies(path):
        original = original_source(root, copy.target)
        expected_text = _replace("\n".join(original), copy.replacements, copy.all_casing)
        expected = [copy.indent + line if line.strip() else "" for line in expected_text.splitlines()]
        actual = lines[copy.block_start : copy.block_end]
        if _normalise(actual) != _normalise(expected):
            drifts.append(Drift(copy, expected))
    return drifts


def fix_file(path: Path, drifts: list[Drift]) -> None:
    lines = path.read_text().splitlines()
    # from the bottom up, so earlier line numbers stay valid
    for drift in sorted(drifts, key=lambda item: item.copy.block_start, reverse=True):
        lines[drift.copy.block_start : drift.copy.block_end] = drift.expected
    temporary = path.with_name(f".{path.name}.check_copies.tmp")
    temporary.write_text("\n".join(lines) + "\n")
    temporary.replace(path)


def source_files(root: Path) -> list[Path]:
    return sorted(path for path in (root / "src" / PACKAGE).rglob("*.py") if "__pycache__" not in path.parts)


def run(root: Path, fix: bool) -> list[str]:
    """Check (and with ``fix`` rewrite) every copy under ``root``; returns one line per drift left."""
    problems: list[str] = []
    for path in source_files(root):
        drifts = check_file(root, path)
        if drifts and fix:
            fix_file(path, drifts)
            drifts = check_file(root, path)
        problems.extend(drift.describe(root) for drift in drifts)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fix", action="store_true", help="rewrite copies that drifted from their originals")
    parser.add_argument("--root", type=Path, default=REPO, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    try:
        problems = run(args.root.resolve(), args.fix)
    except CopyError as error:
        print(f"check_copies: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    if problems:
        noun = "copy" if len(problems) == 1 else "copies"
        print(f"{len(problems)} {noun} drifted; run `python utils/check_copies.py --fix`")
        return 1
    count = sum(len(find_copies(path)) for path in source_files(args.root.resolve()))
    print(f"check_copies: {count} marked copies match their originals")
    return 0


if __name__ == "__main__":
    sys.exit(main())
