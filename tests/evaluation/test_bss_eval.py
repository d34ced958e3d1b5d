"""BSS Eval parity: `demixers.evaluation.bss_eval` against museval (v4) and mir_eval (v3) to 0.01 dB."""

from __future__ import annotations

import importlib.util
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from demixers.evaluation import bss_eval, frame_bounds, pad_or_truncate

TOLERANCE_DB = 0.01
RATE = 8000


def _museval_metrics():
    """museval.metrics without museval/__init__ (which imports musdb -> stempeg -> needs ffmpeg)."""
    spec = importlib.util.find_spec("museval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("museval is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "metrics.py"
    module_spec = importlib.util.spec_from_file_location("_museval_metrics_for_tests", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def museval_metrics():
    return _museval_metrics()


@pytest.fixture(scope="module")
def mir_eval_separation():
    separation = pytest.importorskip("mir_eval.separation")
    return separation


def _mir_eval(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bss_eval_sources* are deprecated in mir_eval 0.8
        return function(*args, **kwargs)


def _assert_close(ours: np.ndarray, reference: np.ndarray) -> None:
    reference = np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(reference))
    np.testing.assert_allclose(ours, reference, rtol=0, atol=TOLERANCE_DB, equal_nan=True)


def _mixing(
    rng: np.random.Generator, refs: np.ndarray, leak: float = 0.15, noise: float = 0.05
) -> np.ndarray:
    """Estimates = references plus interference from the others, a filtered copy and noise."""
    sources = refs.shape[0]
    matrix = np.eye(sources) * (1 - leak) + leak / sources
    ests = np.einsum("ij,jnc->inc", matrix, refs)
    ests[:, 3:] += 0.1 * refs[:, :-3]  # a short echo: spatial/filtering distortion
    return ests + noise * rng.standard_normal(refs.shape)


def _museval_v4(module, refs, ests, window, hop, compute_permutation=False):
    sdr, isr, sir, sar, perm = module.bss_eval(
        refs, ests, window=window, hop=hop, compute_permutation=compute_permutation, framewise_filters=False
    )
    return {"sdr": sdr, "isr": isr, "sir": sir, "sar": sar, "perm": perm}


def test_v4_random_stereo_matches_museval(museval_metrics):
    rng = np.random.default_rng(0)
    refs = rng.standard_normal((3, int(3.4 * RATE), 2))
    ests = _mixing(rng, refs)
    ours = bss_eval(refs, ests, window=RATE, hop=RATE)
    expected = _museval_v4(museval_metrics, refs, ests, RATE, RATE)
    for name in ("sdr", "isr", "sir", "sar"):
        _assert_close(ours[name], expected[name])
    assert ours["sdr"].shape == (3, 3)


def test_v4_structured_signals_and_silent_frames_match_museval(museval_metrics):
    rng = np.random.default_rng(1)
    samples = 4 * RATE
    t = np.arange(samples) / RATE
    refs = np.empty((2, samples, 2))
    # a harmonic tone (ill-conditioned Gram matrix) with a little noise, identical in both channels
    tone = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((220.0, 440.0, 660.0), start=1))
    refs[0, :, 0] = refs[0, :, 1] = tone + 1e-3 * rng.standard_normal(samples)
    # brown noise (low-pass), different per channel
    refs[1] = np.cumsum(rng.standard_normal((samples, 2)), axis=0) * 0.01
    refs[0, RATE : 2 * RATE] = 0.0  # a silent second: museval gives NaN for every source there
    ests = _mixing(rng, refs, leak=0.3, noise=0.01)
    ours = bss_eval(refs, ests, window=RATE, hop=RATE)
    expected = _museval_v4(museval_metrics, refs, ests, RATE, RATE)
    for name in ("sdr", "isr", "sir", "sar"):
        _assert_close(ours[name], expected[name])
    assert np.isnan(ours["sdr"][:, 1]).all() and not np.isnan(ours["sdr"][:, 0]).any()


def test_v4_overlapping_frames_and_whole_signal_match_museval(museval_metrics):
    rng = np.random.default_rng(2)
    refs = rng.standard_normal((2, int(2.6 * RATE), 1))
    ests = _mixing(rng, refs)
    for window, hop in ((RATE, RATE // 2), (math.inf, math.inf), (10 * RATE, 10 * RATE)):
        ours = bss_eval(refs, ests, window=window, hop=hop)
        expected = _museval_v4(museval_metrics, refs, ests, window, hop)
        for name in ("sdr", "isr", "sir", "sar"):
            _assert_close(ours[name], expected[name])


def test_v4_permutation_matches_museval(museval_metrics):
    rng = np.random.default_rng(3)
    refs = rng.standard_normal((3, 2 * RATE, 1))
    ests = _mixing(rng, refs)[[2, 0, 1]]
    ours = bss_eval(refs, ests, window=RATE, hop=RATE, compute_permutation=True)
    expected = _museval_v4(museval_metrics, refs, ests, RATE, RATE, compute_permutation=True)
    np.testing.assert_array_equal(ours["perm"][:, 0], expected["perm"][:, 0])
    np.testing.assert_array_equal(ours["perm"][:, 0], [1, 2, 0])
    for name in ("sdr", "isr", "sir", "sar"):
        _assert_close(ours[name], expected[name])


def test_v3_whole_signal_with_permutation_matches_mir_eval(mir_eval_separation):
    rng = np.random.default_rng(4)
    refs = rng.standard_normal((3, 2 * RATE))
    ests = _mixing(rng, refs[..., None])[..., 0][[1, 2, 0]]
    sdr, sir, sar, perm = _mir_eval(mir_eval_separation.bss_eval_sources, refs, ests)
    ours = bss_eval(refs, ests, window=math.inf, version="v3", compute_permutation=True)
    assert set(ours) == {"sdr", "sir", "sar", "perm"}
    np.testing.assert_array_equal(ours["perm"][:, 0], perm)
    for name, value in (("sdr", sdr), ("sir", sir), ("sar", sar)):
        _assert_close(ours[name][:, 0], value)


def test_v3_framewise_matches_mir_eval_with_silent_frame(mir_eval_separation):
    rng = np.random.default_rng(5)
    refs = rng.standard_normal((2, 3 * RATE))
    refs[1, RATE : 2 * RATE] = 0.0
    ests = _mixing(rng, refs[..., None])[..., 0]
    window, hop = RATE, RATE // 2
    sdr, sir, sar, _ = _mir_eval(
        mir_eval_separation.bss_eval_sources_framewise, refs, ests, window=window, hop=hop
    )
    ours = bss_eval(refs, ests, window=window, hop=hop, version="v3")
    for name, value in (("sdr", sdr), ("sir", sir), ("sar", sar)):
        _assert_close(ours[name], value)
    assert np.isnan(ours["sdr"]).any()


def test_v3_single_window_falls_back_to_whole_signal(mir_eval_separation):
    rng = np.random.default_rng(6)
    refs = rng.standard_normal((2, int(1.5 * RATE)))
    ests = _mixing(rng, refs[..., None])[..., 0]
    sdr, _, _, _ = _mir_eval(
        mir_eval_separation.bss_eval_sources_framewise, refs, ests, window=RATE, hop=RATE
    )  # fewer than two windows: mir_eval evaluates the whole signal
    ours = bss_eval(refs, ests, window=RATE, hop=RATE, version="v3", metrics=("sdr",))
    _assert_close(ours["sdr"], sdr)
    assert frame_bounds(int(1.5 * RATE), RATE, RATE, rule="mir_eval") == [(0, int(1.5 * RATE))]
    assert frame_bounds(int(1.5 * RATE), RATE, RATE, rule="museval") == [(0, RATE)]


def test_metric_subsets_agree_with_the_full_computation():
    rng = np.random.default_rng(7)
    refs = rng.standard_normal((2, 2 * RATE, 1))
    ests = _mixing(rng, refs)
    full = bss_eval(refs, ests, window=RATE)
    for subset in (("sdr",), ("isr",), ("sir", "sar")):
        part = bss_eval(refs, ests, window=RATE, metrics=subset)
        assert set(part) == set(subset)
        for name in subset:
            np.testing.assert_allclose(part[name], full[name], atol=1e-9)
    v3_full = bss_eval(refs, ests, window=RATE, version="v3")
    v3_sdr = bss_eval(refs, ests, window=RATE, version="v3", metrics=("sdr",))
    np.testing.assert_allclose(v3_sdr["sdr"], v3_full["sdr"], atol=1e-9)


def test_v4_sdr_is_the_plain_framewise_energy_ratio():
    rng = np.random.default_rng(8)
    refs = rng.standard_normal((2, 3 * RATE, 2))
    ests = refs + 0.1 * rng.standard_normal(refs.shape)
    sdr = bss_eval(refs, ests, window=RATE, metrics=("sdr",))["sdr"]
    frames = refs.reshape(2, 3, RATE, 2)
    errors = (ests - refs).reshape(2, 3, RATE, 2)
    expected = 10 * np.log10((frames**2).sum(axis=(2, 3)) / (errors**2).sum(axis=(2, 3)))
    np.testing.assert_allclose(sdr, expected, atol=1e-10)


def test_perfect_estimate_gives_infinite_sdr_and_float32_tensor_input():
    rng = np.random.default_rng(9)
    refs = torch.from_numpy(rng.standard_normal((2, 2 * RATE, 1)).astype(np.float32))
    result = bss_eval(refs, refs.clone(), window=RATE, metrics=("sdr",), device="cpu")
    assert result["sdr"].dtype == np.float64 and np.isposinf(result["sdr"]).all()


def test_window_defaults_to_one_second_at_the_sampling_rate():
    rng = np.random.default_rng(10)
    refs = rng.standard_normal((2, 5 * RATE))
    ests = refs + 0.1 * rng.standard_normal(refs.shape)
    assert bss_eval(refs, ests, RATE, metrics=("sdr",))["sdr"].shape == (2, 5)
    assert bss_eval(refs, ests, metrics=("sdr",))["sdr"].shape == (2, 1)  # 44100 > 5 s at 8 kHz


def test_silent_source_raises_like_museval_or_gives_nan():
    rng = np.random.default_rng(11)
    refs = rng.standard_normal((2, 2 * RATE, 1))
    refs[1] = 0.0
    ests = rng.standard_normal(refs.shape)
    with pytest.raises(ValueError, match="all zeros"):
        bss_eval(refs, ests, window=RATE)
    result = bss_eval(refs, ests, window=RATE, on_silent="nan", compute_permutation=True)
    assert all(np.isnan(value).all() and value.shape == (2, 2) for value in result.values())
    with pytest.raises(ValueError, match="estimated"):
        bss_eval(ests, refs, window=RATE)


def test_bad_inputs_are_rejected():
    refs = np.ones((2, 100, 1))
    with pytest.raises(ValueError, match="same"):
        bss_eval(refs, np.ones((2, 90, 1)))
    with pytest.raises(ValueError, match="version"):
        bss_eval(refs, refs, version="v5")
    with pytest.raises(ValueError, match="subset"):
        bss_eval(refs, refs, version="v3", metrics=("isr",))
    with pytest.raises(ValueError, match=r"\(sources, samples, channels\)"):
        bss_eval(np.ones((1, 2, 3, 4)), np.ones((1, 2, 3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        bss_eval(refs, np.full((2, 100, 1), np.nan))
    with pytest.raises(TypeError):
        bss_eval(refs.astype(complex), refs)
    with pytest.raises(ValueError, match="window"):
        bss_eval(refs, refs, window=0)


def test_pad_or_truncate_follows_museval_padding():
    refs = np.zeros((2, 10, 1))
    np.testing.assert_array_equal(pad_or_truncate(refs, np.ones((2, 12, 1))), np.ones((2, 10, 1)))
    padded = pad_or_truncate(refs, np.ones((2, 7, 1)))
    assert padded.shape == (2, 10, 1) and padded[:, 7:].sum() == 0


def test_v3_multichannel_matches_museval_sources_version(museval_metrics):
    """Multichannel v3 is museval's bss_eval_sources variant (framewise filters, sources criteria)."""
    rng = np.random.default_rng(12)
    refs = rng.standard_normal((2, 2 * RATE, 2))
    ests = _mixing(rng, refs)
    for window in (math.inf, RATE):
        sdr, _, sir, sar, _ = museval_metrics.bss_eval(
            refs, ests, window=window, hop=window, framewise_filters=True, bsseval_sources_version=True
        )
        ours = bss_eval(refs, ests, window=window, hop=window, version="v3")
        for name, value in (("sdr", sdr), ("sir", sir), ("sar", sar)):
            _assert_close(ours[name], value)
