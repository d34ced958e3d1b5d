"""Parity with the ``demucs`` package: reference models with random weights exported in the
release formats, converted, and compared (max abs difference <= 1e-5 x max abs output).

Each model is checked twice: with its initial weights on white noise, and with every parameter
perturbed by 0.02 N(0, 1) (`tests.modeling.parity_utils`: LayerScales no longer 1e-4, norms no longer
identities, as in a trained checkpoint) on real-sounding music (`tests.audio_fixtures.music_like`).
With the perturbed weights the difference must also stay within 1.5x the reference's own float32
error against a float64 run of itself (plus 1e-7 of the output scale: a float32 rounding step)."""

from __future__ import annotations

import copy
import sys
import types
from fractions import Fraction

import pytest
import torch

from demixers.modeling.demucs import (
    DemucsBagForSourceSeparation,
    DemucsForSourceSeparation,
    HDemucsForSourceSeparation,
    HTDemucsForSourceSeparation,
)
from demixers.modeling.demucs.convert_demucs_original_to_hf import convert, load_original
from tests.audio_fixtures import music_like
from tests.modeling.demucs.reference_export import export_hf, export_th, max_diffs, write_bag
from tests.modeling.parity_utils import perturb_parameters, relative_max_difference

pytest.importorskip("demucs")
from demucs.demucs import Demucs
from demucs.hdemucs import HDemucs
from demucs.hf import load_safetensors_model
from demucs.htdemucs import HTDemucs
from demucs.states import load_model

SOURCES = ["drums", "bass", "other", "vocals"]
TOLERANCE = 1e-5
# ours against the reference, relative to the reference's own float32-vs-float64 error
OWN_ERROR_FACTOR = 1.5
ROUNDING_STEP = 1e-7


def _check(ours, reference, length: int, seed: int = 0) -> tuple[float, float]:
    mix = 0.1 * torch.randn(2, 2, length, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        expected = reference.eval()(mix)
        actual = ours.eval()(input_values=mix).audio_values
    assert actual.shape == expected.shape
    diff, relative = max_diffs(actual, expected)
    print(f"{type(reference).__name__} length {length}: max abs diff {diff:.3e}, relative {relative:.3e}")
    assert relative <= TOLERANCE, (diff, relative)
    return diff, relative


def music_input(length: int, batch: int = 2) -> torch.Tensor:
    """``(batch, 2, length)`` excerpts of different synthetic songs at 44.1 kHz."""
    return torch.stack(
        [torch.from_numpy(music_like(length / 44100 + 0.01, seed=seed)[:, :length]) for seed in range(batch)]
    )


def _check_music(ours, reference, length: int) -> float:
    """Compare on music: within `TOLERANCE` and within 1.5x the reference's own float32 error."""
    mix = music_input(length)
    reference64 = copy.deepcopy(reference).double()
    with torch.no_grad():
        expected = reference.eval()(mix)
        expected64 = reference64.eval()(mix.double())
        actual = ours.eval()(input_values=mix).audio_values
    assert actual.shape == expected.shape
    relative = relative_max_difference(actual, expected)
    own = relative_max_difference(expected, expected64)
    print(
        f"{type(reference).__name__} music {length}: relative {relative:.3e}, reference f32 vs f64 {own:.3e}"
    )
    assert relative <= TOLERANCE, relative
    assert relative <= OWN_ERROR_FACTOR * own + ROUNDING_STEP, (relative, own)
    return relative


def _convert_both_formats(reference, tmp_path, sig: str):
    """Export ``reference`` as .th and as HF safetensors, reload it with the demucs loaders (so the
    fixtures are what they read), and convert both exports through the CLI entry point."""
    th_dir, hf_dir = tmp_path / "th", tmp_path / "hf"
    th_dir.mkdir(exist_ok=True)
    hf_dir.mkdir(exist_ok=True)
    th_path = export_th(reference, th_dir, sig)
    hf_path = export_hf(reference, hf_dir, sig)
    from_th = load_model(th_path).eval()
    from_hf = load_safetensors_model(hf_path).eval()
    converted = []
    for source, name in ((th_path, "out_th"), (hf_path, "out_hf")):
        model = convert(source, tmp_path / name)
        reloaded = type(model).from_pretrained(tmp_path / name).eval()
        converted.append(reloaded)
    return (from_th, converted[0]), (from_hf, converted[1])


@pytest.mark.parametrize("perturbed", [False, True], ids=["init", "perturbed"])
def test_demucs_v3_waveform_parity(tmp_path, perturbed: bool) -> None:
    torch.manual_seed(0)
    reference = Demucs(SOURCES, channels=8, depth=4, dconv_attn=2, dconv_lstm=2, samplerate=44100, segment=2)
    if perturbed:
        perturb_parameters(reference)
    for ref, ours in _convert_both_formats(reference, tmp_path, "aaaa0001"):
        assert isinstance(ours, DemucsForSourceSeparation)
        _check(ours, ref, 3000)
        if perturbed:
            _check_music(ours, ref, 3000)


@pytest.mark.parametrize("perturbed", [False, True], ids=["init", "perturbed"])
def test_demucs_v2_legacy_package_parity(tmp_path, monkeypatch, perturbed: bool) -> None:
    """A demucs 2.x package: class ``demucs.model.Demucs``, v2 arguments, pre-norm state indices."""
    torch.manual_seed(0)
    v2_args = dict(channels=8, depth=4, lstm_layers=2, context=3, rescale=0.1, resample=True, glu=True)
    reference = Demucs(SOURCES, gelu=False, norm_starts=4, dconv_mode=0, normalize=False, **v2_args).eval()
    if perturbed:
        perturb_parameters(reference)
    fake_module = types.ModuleType("demucs.model")

    class V2Demucs:  # stands for demucs 2.x's class in the pickle; never called
        pass

    V2Demucs.__module__, V2Demucs.__qualname__, V2Demucs.__name__ = "demucs.model", "Demucs", "Demucs"
    fake_module.Demucs = V2Demucs
    monkeypatch.setitem(sys.modules, "demucs.model", fake_module)
    state = {key: value.half() for key, value in reference.state_dict().items()}
    for key in list(state):  # demucs 2.x had no norm slots: rewrite / transposed convs one index earlier
        for part in ("encoder", "decoder"):
            for suffix in ("weight", "bias"):
                for index in range(4):
                    if key == f"{part}.{index}.3.{suffix}":
                        state[f"{part}.{index}.2.{suffix}"] = state.pop(key)
    package = {
        "klass": V2Demucs,
        "args": [SOURCES],
        "kwargs": dict(v2_args, samplerate=44100, segment_length=4 * 10 * 44100),
        "state": state,
    }
    path = tmp_path / "demucs_v2.th"
    torch.save(package, path)
    monkeypatch.delitem(sys.modules, "demucs.model")
    reference.load_state_dict({key: value.half().float() for key, value in reference.state_dict().items()})
    ours = load_original(path)
    assert (
        isinstance(ours, DemucsForSourceSeparation) and not ours.config.gelu and ours.config.segment == 40.0
    )
    _check(ours, reference, 5000)
    if perturbed:
        _check_music(ours, reference, 5000)


@pytest.mark.parametrize("perturbed", [False, True], ids=["init", "perturbed"])
def test_hdemucs_parity(tmp_path, perturbed: bool) -> None:
    torch.manual_seed(0)
    # nfft 256: frequency layers 128 -> 32 -> 8 bins, merge layer, time layer; local attention and
    # BiLSTM branches from layer 2 (framed: 16000 samples give 250 > 200 steps there).
    reference = HDemucs(
        SOURCES, channels=8, depth=4, nfft=256, dconv_attn=2, dconv_lstm=2, norm_starts=2, segment=44
    )
    if perturbed:
        perturb_parameters(reference)
    for ref, ours in _convert_both_formats(reference, tmp_path, "bbbb0002"):
        assert isinstance(ours, HDemucsForSourceSeparation)
        _check(ours, ref, 16000)
        if perturbed:
            _check_music(ours, ref, 16000)


@pytest.mark.parametrize("perturbed", [False, True], ids=["init", "perturbed"])
def test_hdemucs_old_padding_parity(tmp_path, perturbed: bool) -> None:
    torch.manual_seed(1)
    reference = HDemucs(SOURCES, channels=8, depth=4, nfft=256, hybrid_old=True, dconv_mode=3, norm_starts=2)
    if perturbed:
        perturb_parameters(reference)
    (ref, ours), _ = _convert_both_formats(reference, tmp_path, "bbbb0003")
    assert ours.config.hybrid_old
    _check(ours, ref, 5000)
    if perturbed:
        _check_music(ours, ref, 5000)


@pytest.mark.parametrize("perturbed", [False, True], ids=["init", "perturbed"])
def test_htdemucs_parity(tmp_path, perturbed: bool) -> None:
    torch.manual_seed(0)
    reference = HTDemucs(
        SOURCES, channels=8, depth=2, nfft=128, bottom_channels=16, t_layers=3, t_heads=2, dconv_mode=3,
        segment=Fraction(1, 10), t_dropout=0.02,
    )  # fmt: skip
    if perturbed:  # LayerScales of the transformer and the DConv branches no longer 1e-4
        perturb_parameters(reference)
    for ref, ours in _convert_both_formats(reference, tmp_path, "cccc0004"):
        assert isinstance(ours, HTDemucsForSourceSeparation)
        assert ours.config.segment_length == 4410
        _check(ours, ref, 4410)  # exactly the trained segment
        _check(ours, ref, 1234, seed=1)  # shorter: padded to the segment and trimmed, like the reference
        if perturbed:
            _check_music(ours, ref, 4410)
            _check_music(ours, ref, 3000)


@pytest.mark.parametrize("perturbed", [False, True], ids=["init", "perturbed"])
def test_htdemucs_merged_branches_and_cape_parity(tmp_path, perturbed: bool) -> None:
    torch.manual_seed(0)
    # depth 2 with nfft 64 merges the branches (32 -> 8 -> 1 bin) below a cape-embedded transformer
    reference = HTDemucs(
        SOURCES, channels=8, depth=2, nfft=64, t_layers=2, t_heads=2, t_emb="cape", t_cross_first=True,
        t_norm_first=False, segment=Fraction(1, 20),
    )  # fmt: skip
    if perturbed:
        perturb_parameters(reference)
    (ref, ours), _ = _convert_both_formats(reference, tmp_path, "cccc0005")
    _check(ours, ref, 2205)
    if perturbed:
        _check_music(ours, ref, 2205)


@pytest.mark.parametrize("perturbed", [False, True], ids=["init", "perturbed"])
def test_bag_of_two_models_with_per_source_weights(tmp_path, perturbed: bool) -> None:
    torch.manual_seed(0)
    first = HTDemucs(SOURCES, channels=8, depth=2, nfft=128, t_layers=2, t_heads=2, segment=Fraction(1, 10))
    second = HTDemucs(SOURCES, channels=8, depth=2, nfft=128, t_layers=2, t_heads=2, segment=Fraction(1, 10))
    if perturbed:
        perturb_parameters(first, seed=1)
        perturb_parameters(second, seed=2)
    weights = [[1.0, 0.0, 1.0, 0.5], [0.0, 1.0, 1.0, 0.5]]
    export_hf(first, tmp_path, "dddd0001")
    export_th(second, tmp_path, "dddd0002")  # a bag may mix both formats
    write_bag(tmp_path, "tiny_ft", ["dddd0001", "dddd0002"], weights=weights)
    model = convert(tmp_path, tmp_path / "out")
    assert isinstance(model, DemucsBagForSourceSeparation)
    ours = DemucsBagForSourceSeparation.from_pretrained(tmp_path / "out").eval()
    references = [
        load_safetensors_model(tmp_path / "dddd0001.safetensors").eval(),
        load_model(next(tmp_path.glob("dddd0002-*.th"))).eval(),
    ]
    w = torch.tensor(weights)

    def bag(outs: list[torch.Tensor]) -> torch.Tensor:
        weighted = w[0, None, :, None, None] * outs[0] + w[1, None, :, None, None] * outs[1]
        return weighted / w.sum(0)[None, :, None, None].to(weighted)

    mixes = [0.1 * torch.randn(1, 2, 3000)] + ([music_input(3000)] if perturbed else [])
    for mix in mixes:
        with torch.no_grad():
            expected = bag([reference(mix) for reference in references])
            actual = ours(input_values=mix).audio_values
            expected64 = bag([copy.deepcopy(reference).double()(mix.double()) for reference in references])
        diff, relative = max_diffs(actual, expected)
        own = relative_max_difference(expected, expected64)
        print(f"bag of two: max abs diff {diff:.3e}, relative {relative:.3e}, reference f32 vs f64 {own:.3e}")
        assert relative <= TOLERANCE
        if perturbed:
            assert relative <= OWN_ERROR_FACTOR * own + ROUNDING_STEP, (relative, own)


def test_single_model_bag_applies_its_segment(tmp_path) -> None:
    torch.manual_seed(0)
    reference = HDemucs(SOURCES, channels=8, depth=4, nfft=256, segment=40)
    export_hf(reference, tmp_path, "eeee0001")
    write_bag(tmp_path, "hdemucs_tiny", ["eeee0001"], segment=44)
    model = load_original(tmp_path / "hdemucs_tiny.yaml")
    assert isinstance(model, HDemucsForSourceSeparation) and model.config.segment == 44.0
