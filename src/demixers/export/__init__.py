"""Exported and accelerated forms of demixers models: ONNX export and the onnxruntime runner.

Heavy optional packages (``onnx``, ``onnxruntime``, ``onnxscript``: ``pip install 'demixers[onnx]'``)
are imported only when a function needs them.
"""

from __future__ import annotations

from .onnx_export import (
    EXPORTABLE_MODEL_TYPES,
    QUANTIZATION_MODES,
    OnnxSeparator,
    export_onnx,
    graph_kind,
    quantize_onnx_int8,
    read_metadata,
)

__all__ = [
    "EXPORTABLE_MODEL_TYPES",
    "QUANTIZATION_MODES",
    "OnnxSeparator",
    "export_onnx",
    "graph_kind",
    "quantize_onnx_int8",
    "read_metadata",
]
