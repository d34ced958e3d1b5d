"""`utils/check_copies.py`: marked copies in family folders stay equal to their originals."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SPEC = importlib.util.spec_from_file_location("check_copies", REPO / "utils" / "check_copies.py")
assert _SPEC is not None and _SPEC.loader is not None
check_copies = importlib.util.module_from_spec(_SPEC)
sys.modules["check_copies"] = check_copies
_SPEC.loader.exec_module(check_copies)

ORIGINAL = '''\
"""Original module."""

import torch


def pairwise_score(estimates: torch.Tensor, references: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scores of every estimate against every reference."""
    # centred, so offsets do not count
    estimates = estimates - estimates.mean(-1, keepdim=True)
    return torch.einsum("bst,brt->bsr", estimates, references) + eps


class AlphaEncoder(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.alpha_conv = torch.nn.Conv1d(1, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha_conv(x)
'''

COPY = '''\
"""A self-contained family file."""

import torch


# Copied from demixers.modeling.alpha.modeling_alpha.pairwise_score
def pairwise_score(estimates: torch.Tensor, references: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scores of every estimate against every reference."""
    # centred, so offsets do not count
    estimates = estimates - estimates.mean(-1, keepdim=True)
    return torch.einsum("bst,brt->bsr", estimates, references) + eps


# Copied from demixers.modeling.alpha.modeling_alpha.AlphaEncoder with Alpha->Beta, all-casing  # noqa: E501
class BetaEncoder(torch.nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.beta_conv = torch.nn.Conv1d(1, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta_conv(x)


class BetaModel(torch.nn.Module):
    # Copied from demixers.modeling.alpha.modeling_alpha.AlphaEncoder.forward with alpha->beta
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.beta_conv(x)

    def other(self) -> int:
        return 1
'''


def _tree(tmp_path: Path, copy: str = COPY) -> Path:
    for family, text in (("alpha", ORIGINAL), ("beta", copy)):
        folder = tmp_path / "src" / "demixers" / "modeling" / family
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        (folder / f"modeling_{family}.py").write_text(text)
    return tmp_path


def test_matching_copies_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path)
    assert check_copies.run(root, fix=False) == []
    assert check_copies.main(["--root", str(root)]) == 0
    assert "3 marked copies match" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("keepdim=True)\n    return", "keepdim=False)\n    return"),  # a changed argument
        ("    # centred, so offsets do not count\n", ""),  # a dropped comment is drift too
        ("return self.beta_conv(x)\n\n\nclass", "return self.beta_conv(x) * 2\n\n\nclass"),  # class body
        (
            "        return self.beta_conv(x)\n\n    def other",
            "        return x\n\n    def other",
        ),  # a method
    ],
)
def test_drifted_copy_fails_and_fix_repairs_it(tmp_path: Path, old: str, new: str) -> None:
    assert old in COPY
    root = _tree(tmp_path, COPY.replace(old, new, 1))
    problems = check_copies.run(root, fix=False)
    assert len(problems) == 1 and "differs from its original" in problems[0]
    assert check_copies.main(["--root", str(root)]) == 1
    assert check_copies.run(root, fix=True) == []
    assert (root / "src/demixers/modeling/beta/modeling_beta.py").read_text() == COPY
    assert check_copies.main(["--root", str(root)]) == 0


def test_formatting_is_not_drift(tmp_path: Path) -> None:
    reflowed = COPY.replace(
        '    return torch.einsum("bst,brt->bsr", estimates, references) + eps',
        '    return torch.einsum(\n        "bst,brt->bsr", estimates, references\n    ) + eps',
    )
    assert reflowed != COPY
    assert check_copies.run(_tree(tmp_path, reflowed), fix=False) == []


def test_bad_markers_are_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, COPY.replace("modeling_alpha.pairwise_score", "modeling_alpha.missing_name"))
    with pytest.raises(check_copies.CopyError, match="missing_name"):
        check_copies.run(root, fix=False)
    assert check_copies.main(["--root", str(root)]) == 2
    marker_without_code = textwrap.dedent(
        """\
        # Copied from demixers.modeling.alpha.modeling_alpha.pairwise_score
        x = 1
        """
    )
    other = tmp_path / "other"
    with pytest.raises(check_copies.CopyError, match="right above a def or class"):
        check_copies.run(_tree(other, marker_without_code), fix=False)


def test_the_repository_copies_match() -> None:
    assert check_copies.run(REPO, fix=False) == []
