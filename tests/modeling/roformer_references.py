"""The two reference implementations of the RoFormer families, for parity tests.

* lucidrains' ``bs-roformer`` package (`lucidrains_module`);
* Music-Source-Separation-Training's variant as shipped in ``audio-separator`` (`msst_module`).
  audio-separator's package ``__init__`` imports its whole separator stack (onnxruntime, ...), so its
  roformer modules are loaded from their files under lightweight parent packages, which never run
  those ``__init__`` files.

audio-separator 0.47.1 differs from MSST upstream in ways that `msst_module` undoes, so that the
tests compare against MSST's behaviour (the one the community checkpoints were trained with):

* its rotary helper calls ``apply_rotary_emb(freqs, t, seq_dim=...)`` of rotary-embedding-torch,
  which (with 0.9) leaves the tensor unrotated: MSST calls ``RotaryEmbedding.rotate_queries_or_keys``;
* it ignores ``zero_dc``, ``skip_connection`` and (Mel) ``mlp_expansion_factor``: the tests keep these
  at the values where both agree (``zero_dc`` False, no skips, expansion 4) and test the flags against
  their definition separately.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest


def _ensure_package(name: str, path: Path) -> None:
    if name in sys.modules:
        return
    package = types.ModuleType(name)
    package.__path__ = [str(path)]  # a package without running its __init__
    sys.modules[name] = package


def msst_module(family: str) -> Any:
    """audio-separator's ``bs_roformer`` or ``mel_band_roformer`` module, with MSST's rotary call."""
    pytest.importorskip("einops")
    pytest.importorskip("beartype")
    pytest.importorskip("rotary_embedding_torch")
    if family == "mel_band_roformer":
        pytest.importorskip("librosa")
    if "audio_separator" not in sys.modules:
        spec = importlib.util.find_spec("audio_separator")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("audio-separator is not installed")
        _ensure_package("audio_separator", Path(next(iter(spec.submodule_search_locations))))
    root = Path(sys.modules["audio_separator"].__path__[0])
    _ensure_package("audio_separator.separator", root / "separator")
    _ensure_package("audio_separator.separator.uvr_lib_v5", root / "separator" / "uvr_lib_v5")
    module = importlib.import_module(f"audio_separator.separator.uvr_lib_v5.roformer.{family}")
    # MSST upstream rotates with the embedding's own method (see the module docstring)
    module._rotate_queries_or_keys = lambda rotary_embed, tensor: rotary_embed.rotate_queries_or_keys(tensor)
    return module


def lucidrains_module(family: str) -> Any:
    """The ``bs-roformer`` package's ``bs_roformer`` or ``mel_band_roformer`` module."""
    pytest.importorskip("bs_roformer")
    if family == "mel_band_roformer":
        pytest.importorskip("librosa")
    return importlib.import_module(f"bs_roformer.{family}")
