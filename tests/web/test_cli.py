"""``demixers web`` and app.py: options, the missing-gradio line, what gets launched."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from demixers.bundled import EXAMPLE_DIR
from demixers.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_without_gradio_one_line_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    monkeypatch.setitem(sys.modules, "gradio", None)  # what an installation without the extra sees
    assert main(["web"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "demixers web: error: the web demo needs gradio: pip install 'demixers[web]'\n"
    assert captured.out == ""


@pytest.mark.parametrize(("argv", "message"), [(["--port", "0"], "--port must be in 1..65535, got 0")])
def test_option_errors_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture):
    assert main(["web", *argv]) == 2
    assert capsys.readouterr().err == f"demixers web: error: {message}\n"


def test_help_imports_neither_gradio_nor_torch():
    program = (
        "import contextlib, io, json, sys\n"
        "from demixers.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    try:\n"
        "        main(['web', '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "loaded = [name for name in ('gradio', 'torch') if name in sys.modules]\n"
        "print(json.dumps({'help': out.getvalue(), 'loaded': loaded}))"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["loaded"] == []
    assert "--share" in report["help"] and "--port" in report["help"] and "-m MODEL" in report["help"]


def test_run_launches_the_page_with_the_chosen_models_and_address(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    gradio = pytest.importorskip("gradio")
    launched: dict[str, Any] = {}

    def fake_launch(page: Any, **kwargs: Any) -> None:
        launched.update(kwargs, page=page)

    monkeypatch.setattr(gradio.Blocks, "launch", fake_launch)
    folder = str(tmp_path / "my_model")
    assert main(["web", "-m", folder, "-m", "org/model", "--host", "0.0.0.0", "--port", "8123"]) == 0
    assert (launched["server_name"], launched["server_port"], launched["share"]) == ("0.0.0.0", 8123, False)
    assert str(EXAMPLE_DIR) in launched["allowed_paths"]
    app = launched["page"].separation_app
    assert app.choices == ["default_speech_8k (bundled)", folder, "org/model"]
    assert app.default_choice == folder

    monkeypatch.setattr(gradio.Blocks, "launch", fake_launch)
    assert main(["web", "--share"]) == 0
    assert launched["share"] is True and launched["server_port"] == 7860
    assert launched["page"].separation_app.default_choice == "default_speech_8k (bundled)"


def test_app_py_builds_the_page_for_a_space(monkeypatch: pytest.MonkeyPatch):
    gradio = pytest.importorskip("gradio")
    monkeypatch.setenv("DEMIXERS_WEB_MODELS", " org/a , ./b ,")
    namespace = runpy.run_path(str(REPO_ROOT / "app.py"), run_name="space_check")  # not __main__: no launch
    assert isinstance(namespace["demo"], gradio.Blocks)
    assert namespace["demo"].separation_app.choices == ["default_speech_8k (bundled)", "org/a", "./b"]
