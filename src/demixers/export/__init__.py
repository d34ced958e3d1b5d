"""Exported forms of demixers models: ONNX export and its onnxruntime runner (`onnx_export`).

Light to import: torch and the optional packages (``onnx``, ``onnxruntime``, ``onnxscript``:
``pip install 'demixers[onnx]'``) load on first use of a name, so ``demixers export --help``
stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "EXPORTABLE_MODEL_TYPES",
    "QUANTIZATION_MODES",
    "OnnxSeparator",
    "export_onnx",
    "graph_kind",
    "quantize_onnx_int8",
    "read_metadata",
]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".onnx_export", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
