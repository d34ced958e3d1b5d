"""The model-agnostic evaluation loop and the aggregation/serialisation of its results."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from demixers.evaluation import METRICS, aggregate_items, evaluate_separation, results_to_markdown
from demixers.evaluation.aggregate import to_jsonable

RATE = 8000


def _speech_items(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    for index in range(count):
        sources = rng.standard_normal((2, 1, 2 * RATE)).astype(np.float32)
        yield {"id": f"utt{index}", "mixture": sources.sum(axis=0), "sources": sources, "sampling_rate": RATE}


def _noisy_swapped_separator(seed: int = 1):
    """Perfect separation plus 10 dB-ish noise, with the outputs in the wrong order."""
    rng = np.random.default_rng(seed)
    items = {}

    def separate(mixture: np.ndarray, sampling_rate: int) -> np.ndarray:
        sources = items["current"]
        noisy = sources + 0.3 * rng.standard_normal(sources.shape)
        return noisy[::-1]

    return separate, items


def test_speech_evaluation_uses_pit_and_writes_results(tmp_path):
    separate, state = _noisy_swapped_separator()
    items = list(_speech_items(3))

    def tracked():
        for item in items:
            state["current"] = item["sources"]
            yield item

    results = evaluate_separation(
        separate,
        tracked(),
        ["speaker_1", "speaker_2"],
        task="speech",
        output_dir=tmp_path,
        metadata={"model": "x"},
    )
    assert results["metrics"] == ["si_snri", "sdri"] and results["model"] == "x"
    assert results["num_items"] == 3 and all(item["permutation"] == [1, 0] for item in results["items"])
    si_snri = results["aggregate"]["speaker_1"]["si_snri"]
    assert si_snri["count"] == 3 and si_snri["excluded"] == 0
    assert si_snri["headline"] == pytest.approx(si_snri["mean"])
    assert 10 < si_snri["mean"] < 20  # ~10.5 dB SI-SNR over a ~0 dB mixture
    assert results["aggregate"]["average"]["si_snri"]["headline"] is not None
    data = json.loads((tmp_path / "results.json").read_text(), parse_constant=_reject_constant)
    assert data["aggregate"]["speaker_2"]["sdri"]["count"] == 3
    markdown = (tmp_path / "results.md").read_text()
    assert "SI-SNRi (mean over items)" in markdown and "speaker_1" in markdown and "utt2" in markdown


def test_without_pit_swapped_outputs_score_badly():
    separate, state = _noisy_swapped_separator()
    items = list(_speech_items(1))
    state["current"] = items[0]["sources"]
    results = evaluate_separation(
        separate, items, ["a", "b"], metrics=["si_snr"], task="speech", permutation_invariant=False
    )
    assert results["aggregate"]["a"]["si_snr"]["mean"] < 0


def test_music_metrics_silent_source_and_max_items(tmp_path):
    rng = np.random.default_rng(2)
    items = []
    for index in range(3):
        sources = rng.standard_normal((2, 2, 3 * RATE)).astype(np.float32)
        if index == 1:
            sources[1] = 0.0  # a stem that is silent for the whole item
        items.append({"id": index, "mixture": sources.sum(0), "sources": sources, "sampling_rate": RATE})

    def separate(mixture, sampling_rate):
        item = next(value for value in items if np.array_equal(value["mixture"], mixture))
        estimate = item["sources"] + 0.1 * rng.standard_normal(item["sources"].shape)
        return estimate[..., : mixture.shape[-1] - 5]  # a little short: padded like museval

    results = evaluate_separation(
        separate,
        items,
        ["bass", "vocals"],
        metrics=["sdr", "sir", "csdr", "usdr", "nsdr"],
        task="music",
        max_items=3,
        output_dir=tmp_path,
    )
    vocals = results["aggregate"]["vocals"]
    # museval: a silent source makes every frame of that item NaN, for every source
    assert vocals["sdr"]["count"] == 2 and vocals["sdr"]["excluded"] == 1
    assert results["aggregate"]["bass"]["sdr"]["excluded"] == 1
    assert vocals["csdr"]["pooled_chunks"] == 6
    assert 15 < vocals["sdr"]["headline"] < 25
    assert vocals["nsdr"]["weighted_mean"] == vocals["nsdr"]["headline"]
    assert not any(isinstance(v, float) and math.isnan(v) for v in _walk(results["aggregate"]))
    assert results["items"][1]["metrics"]["vocals"]["sdr"] != results["items"][1]["metrics"]["vocals"]["sdr"]
    json.loads((tmp_path / "results.json").read_text(), parse_constant=_reject_constant)  # no NaN/Infinity
    assert "left out" in (tmp_path / "results.md").read_text()
    short = evaluate_separation(
        separate, items, ["bass", "vocals"], metrics=["usdr"], task="music", max_items=1
    )
    assert short["num_items"] == 1


def _reject_constant(name):
    raise AssertionError(f"results.json holds the non-JSON constant {name}")


def _walk(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
    else:
        yield value


def test_loop_validates_inputs():
    items = list(_speech_items(1))
    with pytest.raises(ValueError, match="unknown metric"):
        evaluate_separation(lambda m, r: None, items, ["a", "b"], metrics=["bogus"])
    with pytest.raises(ValueError, match="task"):
        evaluate_separation(lambda m, r: None, items, ["a", "b"], task="video")
    with pytest.raises(ValueError, match="returned shape"):
        evaluate_separation(lambda m, r: np.zeros((3, 1, 10)), items, ["a", "b"], metrics=["si_snr"])
    with pytest.raises(ValueError, match="names"):
        evaluate_separation(lambda m, r: np.zeros((2, 1, 10)), items, ["a", "b", "c"], metrics=["si_snr"])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_separation(
            lambda m, r: np.full((2, 1, 2 * RATE), np.nan), items, ["a", "b"], metrics=["si_snr"]
        )
    with pytest.raises(ValueError, match="no items"):
        evaluate_separation(lambda m, r: None, [], ["a", "b"])


def test_aggregate_handles_all_nan_and_infinity():
    items = [
        {"metrics": {"a": {"sdr": math.nan, "sir": math.inf}}, "num_samples": 10},
        {"metrics": {"a": {"sdr": math.nan, "sir": 5.0}}, "num_samples": 10},
    ]
    aggregate = aggregate_items(items, ["a"], ["sdr", "sir"])
    assert aggregate["a"]["sdr"] == {
        "mean": None,
        "median": None,
        "count": 0,
        "excluded": 2,
        "headline": None,
    }
    assert aggregate["a"]["sir"]["median"] == math.inf and aggregate["average"]["sdr"]["headline"] is None
    assert to_jsonable({"x": [math.inf, -math.inf, math.nan, np.float32(1.5)]}) == {
        "x": ["inf", "-inf", None, 1.5]
    }
    results = {"metrics": ["sdr", "sir"], "source_names": ["a"], "aggregate": aggregate, "num_items": 2}
    table = results_to_markdown(results)
    assert "n/a" in table and "∞" in table
    assert set(METRICS) >= {"si_snri", "sdri", "sdr", "csdr", "usdr", "nsdr"}


def test_max_items_does_not_read_past_the_limit():
    items = list(_speech_items(2))

    def stream():
        yield items[0]
        raise AssertionError("an item past max_items was read")

    results = evaluate_separation(
        lambda mixture, rate: items[0]["sources"], stream(), ["a", "b"], metrics=["si_snr"], max_items=1
    )
    assert results["num_items"] == 1 and results["aggregate"]["a"]["si_snr"]["mean"] > 100
