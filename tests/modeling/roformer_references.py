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


# Small shared architecture of the fast parity tests: 65 STFT bins, 2 stems, every code path that the
# released models use (two layers, deeper frequency transformer, 2-layer mask MLPs).
SMALL_REFERENCE_KWARGS: dict[str, Any] = {
    "dim": 32,
    "depth": 2,
    "stereo": True,
    "num_stems": 2,
    "time_transformer_depth": 1,
    "freq_transformer_depth": 2,
    "dim_head": 16,
    "heads": 2,
    "stft_n_fft": 128,
    "stft_hop_length": 32,
    "stft_win_length": 128,
    "dim_freqs_in": 65,
    "mask_estimator_depth": 2,
    "zero_dc": False,
}
SMALL_BS_KWARGS: dict[str, Any] = {**SMALL_REFERENCE_KWARGS, "freqs_per_bands": (8, 8, 16, 33)}
SMALL_MEL_KWARGS: dict[str, Any] = {**SMALL_REFERENCE_KWARGS, "num_bands": 8, "sample_rate": 44100}


def converted_pair(
    layout: str, family: str, model_kwargs: dict[str, Any], seed: int = 0, skip_default_init: bool = False
) -> tuple[Any, Any]:
    """(reference model with perturbed weights, our model converted from its state dict), both in eval.

    ``skip_default_init`` (for the released sizes, where PyTorch's default initialisation of a few
    hundred million weights costs seconds) builds the reference's Linear layers with zeros, so that
    the perturbation alone sets them: N(0, 0.02^2), the scale of the default initialisation (about
    0.025 for these widths).
    """
    import torch

    from demixers.modeling.bs_roformer.convert_roformer_to_hf import (
        config_from_yaml_data,
        convert_state_dict,
        slot_kinds,
    )
    from demixers.modeling.bs_roformer.modeling_bs_roformer import BSRoformerForSourceSeparation
    from demixers.modeling.mel_band_roformer.modeling_mel_band_roformer import (
        MelBandRoformerForSourceSeparation,
    )
    from tests.modeling.parity_utils import perturb_parameters

    module = (msst_module if layout == "msst" else lucidrains_module)(family)
    reference_class = module.BSRoformer if family == "bs_roformer" else module.MelBandRoformer
    torch.manual_seed(seed)
    if skip_default_init:
        original_reset = torch.nn.Linear.reset_parameters
        torch.nn.Linear.reset_parameters = _zero_linear  # type: ignore[method-assign]
        try:
            reference = reference_class(**model_kwargs)
        finally:
            torch.nn.Linear.reset_parameters = original_reset  # type: ignore[method-assign]
    else:
        reference = reference_class(**model_kwargs)
    reference = perturb_parameters(reference.eval(), seed=seed)
    data = {
        "model": model_kwargs,
        "training": {"instruments": [f"stem{i}" for i in range(model_kwargs["num_stems"])]},
    }
    config = config_from_yaml_data(data, layout, family, residual=False)
    model_class = (
        BSRoformerForSourceSeparation if family == "bs_roformer" else MelBandRoformerForSourceSeparation
    )
    with torch.device("meta"):  # every tensor comes from the reference: skip the initialisation
        model = model_class(config)
    converted, unknown = convert_state_dict(reference.state_dict(), slot_kinds(layout, family, config))
    assert not unknown, unknown
    model.load_state_dict(converted, strict=True, assign=True)
    return reference, model.eval()


def _zero_linear(layer: Any) -> None:
    import torch

    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()


def reference_output(reference: Any, mixture: Any) -> Any:
    """The reference's stems as `(batch, stems, channels, time)` (the originals squeeze one stem)."""
    import torch

    with torch.no_grad():
        output = reference(mixture)
    return output[:, None] if output.dim() == 3 else output
