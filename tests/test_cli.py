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
    commands = (
        "separate",
        "convert",
        "prepare",
        "train",
        "evaluate",
        "push",
        "models",
        "download",
        "publish",
        "web",
        "export",
    )
    for name in commands:
        assert name in out
    assert set(SUBCOMMANDS) == set(commands)


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


def test_missing_subcommand_module_is_one_line_exit_2(monkeypatch, capsys) -> None:
    from demixers import cli as demixers_cli

    monkeypatch.setitem(demixers_cli.SUBCOMMANDS, "ghost", ("demixers_no_such_module_xyz", "not installed"))
    assert main(["ghost"]) == 2
    assert "`demixers ghost` is not available" in capsys.readouterr().err


def test_broken_dependency_of_a_subcommand_is_not_hidden(monkeypatch, tmp_path) -> None:
    # a module that exists but imports something missing is a bug of the installation: traceback
    (tmp_path / "demixers_broken_cmd.py").write_text("import demixers_missing_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from demixers import cli as demixers_cli

    monkeypatch.setitem(demixers_cli.SUBCOMMANDS, "broken", ("demixers_broken_cmd", "broken"))
    with pytest.raises(ModuleNotFoundError, match="demixers_missing_dependency_xyz"):
        main(["broken"])


def test_choosing_a_subcommand_imports_only_its_module() -> None:
    code = (
        "import sys\nfrom demixers.cli import SUBCOMMANDS, main\n"
        "try:\n    main(['push', '--help'])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m, _ in SUBCOMMANDS.values() if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "['demixers.model_cards.cli']"


def test_train_overrides_still_parsed_through_the_lazy_parser() -> None:
    args = build_parser().parse_args(
        ["train", "--config", "c.yaml", "--output-dir", "o", "--training.max_steps=3", "--data.dataset", "d"]
    )
    assert args.command == "train" and args.config == "c.yaml" and args.output_dir == "o"
    assert args.overrides == ["--training.max_steps=3", "--data.dataset", "d"]
