"""The pipeline files a Hub repo carries import nothing from demixers and equal the installed code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import demixers.audio.io as audio_io
import demixers.audio.validation as audio_validation
import demixers.utils.permutations as permutations
from demixers.pipelines import audio_utils
from demixers.pipelines.remote_code import PIPELINE_CODE_FILES

PIPELINES = Path(audio_utils.__file__).parent
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", PIPELINE_CODE_FILES)
def test_uploaded_pipeline_files_import_only_their_siblings(name: str) -> None:
    tree = ast.parse((PIPELINES / name).read_text())
    siblings = {Path(file).stem for file in PIPELINE_CODE_FILES}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                assert node.level == 1 and node.module in siblings, (name, node.lineno, node.module)
            else:
                assert not (node.module or "").startswith("demixers"), (name, node.lineno)
        elif isinstance(node, ast.Import):
            assert not any(alias.name.startswith("demixers") for alias in node.names), (name, node.lineno)


@pytest.mark.parametrize(
    ("original", "names"),
    [
        (audio_validation, ("CHANNEL_POLICIES", "MIN_SAMPLING_RATE")),
        (audio_io, ("DEFAULT_BLOCK",)),
        (
            permutations,
            ("MAX_EXHAUSTIVE_SOURCES", "_NAN_POLICIES", "_METHODS", "_CANDIDATE_BLOCK", "_STEP_ELEMENTS"),
        ),
    ],
)
def test_copied_constants_equal_their_originals(original: object, names: tuple[str, ...]) -> None:
    # check_copies compares defs and classes; the module-level constants are compared here
    for name in names:
        assert getattr(audio_utils, name) == getattr(original, name), name


def test_every_copied_definition_is_marked_and_in_sync() -> None:
    tree = ast.parse((PIPELINES / "audio_utils.py").read_text())
    lines = (PIPELINES / "audio_utils.py").read_text().splitlines()
    definitions = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
    assert len(definitions) >= 20
    for node in definitions:
        first = min([node.lineno, *(decorator.lineno for decorator in node.decorator_list)])
        assert lines[first - 2].startswith("# Copied from demixers."), node.name
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "utils" / "check_copies.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
