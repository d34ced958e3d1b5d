"""Packages whose public names are imported on first access (PEP 562), to keep imports light.

``demixers --help`` imports the command modules (``demixers.trainers.cli``...), which runs their
packages' ``__init__``: those must not import torch, transformers or datasets for names nobody asked
for. `make_lazy` turns a package into one whose public names are loaded from their submodules on
first access.
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType
from typing import Any


class LazyPackage(ModuleType):
    """A package module whose public names resolve on first access, then stay bound."""

    _lazy_names: dict[str, str]

    def __getattr__(self, name: str) -> Any:
        lazy_names = self.__dict__.get("_lazy_names", {})
        module_name = lazy_names.get(name)
        if module_name is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module_name, self.__name__), name)
        self.__dict__[name] = value
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # The import system binds every submodule to its parent's attribute once it has run. A public
        # name that is also a submodule's name (`evaluation.bss_eval`, the function, from
        # `evaluation/bss_eval.py`) must keep meaning the public object, as with eager imports.
        lazy_names = self.__dict__.get("_lazy_names", {})
        if (
            isinstance(value, ModuleType)
            and value.__name__ == f"{self.__name__}.{name}"
            and lazy_names.get(name) == f".{name}"
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(self.__dict__) | set(self.__dict__.get("_lazy_names", {})))


def make_lazy(package_name: str, lazy_names: dict[str, str]) -> None:
    """Make ``package_name`` (being imported) load each of ``lazy_names`` (name -> relative module)
    from its module on first access."""
    module = sys.modules[package_name]
    module.__class__ = LazyPackage
    module.__dict__["_lazy_names"] = dict(lazy_names)
