"""The `evaluate` metric modules load from their local folders and agree with the metric functions."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from demixers.evaluation import bss_eval, csdr, si_snr, si_snr_improvement, usdr
from demixers.evaluation.metric_modules import MODULE_NAMES, metric_module_path

evaluate = pytest.importorskip("evaluate")

RATE = 8000


@pytest.fixture(scope="module")
def signals():
    rng = np.random.default_rng(0)
    references = rng.standard_normal((2, 2, 2 * RATE)).astype(np.float32)
    estimates = (references + 0.2 * rng.standard_normal(references.shape)).astype(np.float32)
    return references, estimates


def test_module_paths():
    for name in MODULE_NAMES:
        path = metric_module_path(name)
        assert Path(path).name == name and (Path(path) / f"{name}.py").is_file()
    with pytest.raises(ValueError, match="available"):
        metric_module_path("bleu")


def test_si_snr_module(signals):
    references, estimates = signals
    metric = evaluate.load(metric_module_path("si_snr"))
    mono_ref, mono_est = references[0, 0], estimates[0, 0]
    result = metric.compute(predictions=[mono_est], references=[mono_ref])
    assert result["si_snr"] == pytest.approx(float(si_snr(mono_ref, mono_est)), abs=1e-4)
    mixture = references[:, 0].sum(axis=0)
    result = metric.compute(
        predictions=[estimates[::-1, 0]],
        references=[references[:, 0]],
        mixtures=[mixture],
        permutation_invariant=True,
    )
    expected = si_snr(references[:, 0], estimates[:, 0]).mean()
    assert result["si_snr"] == pytest.approx(float(expected), abs=1e-4)
    expected_i = si_snr_improvement(references[:, 0], estimates[:, 0], mixture).mean()
    assert result["si_snri"] == pytest.approx(float(expected_i), abs=1e-4)


def test_bss_modules(signals):
    references, estimates = signals
    sdr = evaluate.load(metric_module_path("sdr")).compute(
        predictions=[estimates], references=[references], sampling_rate=RATE
    )
    frames = bss_eval(references.transpose(0, 2, 1), estimates.transpose(0, 2, 1), RATE)
    for name in ("sdr", "isr", "sir", "sar"):
        per_source = np.median(frames[name], axis=1)
        np.testing.assert_allclose(sdr[f"{name}_per_source"], per_source, atol=1e-4)
        assert sdr[name] == pytest.approx(float(per_source.mean()), abs=1e-4)
    result = evaluate.load(metric_module_path("csdr")).compute(
        predictions=[estimates, estimates], references=[references, references], sampling_rate=RATE
    )
    np.testing.assert_allclose(result["csdr_per_source"], csdr(references, estimates, RATE), atol=1e-4)
    result = evaluate.load(metric_module_path("usdr")).compute(
        predictions=[estimates], references=[references]
    )
    np.testing.assert_allclose(result["usdr_per_source"], usdr(references, estimates), atol=1e-4)
    assert math.isfinite(result["usdr"])
