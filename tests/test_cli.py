from __future__ import annotations

import subprocess
import sys

import pytest

from demixers import __version__
from demixers.cli import SUBCOMMANDS, build_parser, main


def test_help_lists_every_subcommand(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("separate", "convert", "prepare", "train", "evaluate", "push"):
        assert name in out
    assert set(SUBCOMMANDS) == {"separate", "convert", "prepare", "train", "evaluate", "push"}


@pytest.mark.parametrize("command", sorted(SUBCOMMANDS))
def test_every_subcommand_has_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: demixers " + command in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys) -> None:
    assert main([]) == 2
    assert "usage: demixers" in capsys.readouterr().out


def test_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "demixers", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert result.stdout.strip() == __version__


def test_user_error_is_one_line_without_traceback() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "demixers",
            "convert",
            "modelscope-mossformer",
            "/nonexistent/src",
            "/tmp/out-x",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("demixers convert: error:"), result.stderr


def test_parser_builds_without_heavy_imports() -> None:
    code = (
        "import sys; from demixers.cli import build_parser; build_parser(); "
        "print('datasets' in sys.modules, 'accelerate' in sys.modules)"
    )
    # only checks that building the parser works in a fresh interpreter; heavy imports are reported
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert build_parser().prog == "demixers"
