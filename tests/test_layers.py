"""The package's layers: no module imports from a layer above its own, nor sideways between peers.

Layers, bottom to top (a module may import from its own package and from lower layers only):

0. ``utils``, ``audio``, ``conversion``: atomic writes, the model contract, permutations; audio
   reading, resampling and validation; the converters' toolkit (safe unpickler, staged output, key
   mapping).
1. ``modeling`` (self-contained families and their converters), ``feature_extraction_separation``,
   ``bundled``.
2. ``evaluation`` (metrics and their aggregation), ``datasets_scripts`` (corpora), ``export``
   (ONNX export and its onnxruntime runner).
3. ``model_cards`` (render evaluation results), ``pipelines`` (inference).
4. ``trainers``; ``catalogue`` (official checkpoints by name: runs the converters, renders model
   cards; its ``*_cli.py`` modules are commands).
5. Commands: ``cli``, ``demo``, ``build_default_model``, ``__main__``, the package's ``__init__`` and
   ``registration`` (they register the families and the pipeline task), ``web`` (the demo page
   and its command), and every ``cli.py`` (or
   ``<name>_cli.py``, such as ``modeling/convert_cli.py``) module of a package (a command wires the
   layers together).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "src" / "demixers"

LAYERS: dict[str, int] = {
    "utils": 0,
    "audio": 0,
    "conversion": 0,
    "modeling": 1,
    "feature_extraction_separation": 1,
    "bundled": 1,
    "evaluation": 2,
    "export": 2,
    "datasets_scripts": 2,
    "model_cards": 3,
    "pipelines": 3,
    "trainers": 4,
    "catalogue": 4,
    "cli": 5,
    "demo": 5,
    "build_default_model": 5,
    "__main__": 5,
    "__init__": 5,
    "registration": 5,
    "web": 5,
}
COMMAND_LAYER = 5


def _unit(module: str) -> str:
    """The top-level unit (package or module directly under demixers) that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _submodule_or_package(package: str, name: str) -> str:
    """``from package import name``: the submodule ``package.name`` if it is one, else ``package``."""
    folder = PACKAGE_ROOT.parent.joinpath(*package.split("."))
    is_module = (folder / f"{name}.py").is_file() or (folder / name / "__init__.py").is_file()
    return f"{package}.{name}" if is_module else package


def _imports(path: Path) -> list[tuple[int, str]]:
    relative = path.relative_to(PACKAGE_ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    package = parts[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                names = (
                    [target]
                    if node.module
                    else [_submodule_or_package(target, alias.name) for alias in node.names]
                )
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.extend(
            (node.lineno, name) for name in names if name == "demixers" or name.startswith("demixers.")
        )
    return found


def _layer_of(path: Path) -> tuple[str, int]:
    relative = path.relative_to(PACKAGE_ROOT)
    unit = relative.parts[0].removesuffix(".py")
    if path.name == "cli.py" or path.name.endswith("_cli.py") or unit in ("cli", "__main__"):
        return unit, COMMAND_LAYER
    if unit not in LAYERS:
        raise AssertionError(f"{relative} belongs to no layer: add {unit!r} to LAYERS")
    return unit, LAYERS[unit]


MODULES = sorted(path for path in PACKAGE_ROOT.rglob("*.py") if "__pycache__" not in path.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE_ROOT)))
def test_imports_go_down_only(path: Path) -> None:
    unit, layer = _layer_of(path)
    offending = []
    for line, target in _imports(path):
        target_unit = _unit(target)
        if target_unit == unit:
            continue
        target_layer = LAYERS.get(target_unit)
        if target_layer is None:
            offending.append(f"line {line}: {target} (a unit of no layer)")
        elif target_layer >= layer and layer != COMMAND_LAYER:
            offending.append(f"line {line}: {target} (layer {target_layer} from layer {layer})")
    assert not offending, f"{path.relative_to(PACKAGE_ROOT)} imports sideways or up: {offending}"
