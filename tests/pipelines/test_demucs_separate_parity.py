"""The pipeline and ``demixers separate`` (streaming) against demucs' own ``separate`` path.

demucs' ``Separator.separate_tensor`` (what ``demucs.separate`` and ``demucs.api`` run): normalise
the track by its mono mix's mean/std, ``apply_model(split=True, overlap, shifts)``, denormalise.
``demucs.api`` needs ``sphn`` to import, so `_demucs_separate` repeats its four lines verbatim
around the real ``demucs.apply.apply_model``.
Tiny HTDemucs models (perturbed weights, so every parameter matters) at 8 kHz with a 3.9 s segment
keep 60 s inputs cheap while the geometry is the release's: a 3 s input is shorter than one
segment (apply_model centres it in a segment-long window), 10 s and 60 s cut the last chunks at
the end. Shift offsets: the pipeline draws them (`shift_offsets`) and demucs is handed the same.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from transformers import pipeline

from demixers.cli import main
from demixers.modeling.demucs import (
    DemucsBagConfig,
    DemucsBagForSourceSeparation,
    HTDemucsConfig,
    HTDemucsForSourceSeparation,
)
from demixers.modeling.demucs.modeling_demucs import DemucsSourceSeparationOutput
from demixers.pipelines.chunking import resolve_chunk_settings, shift_offsets
from tests.audio_fixtures import music_like

pytest.importorskip("demucs")
import demucs.apply
from demucs.apply import BagOfModels
from demucs.htdemucs import HTDemucs

SOURCES = ["drums", "bass", "other", "vocals"]
RATE = 8000
SEGMENT = Fraction(39, 10)
OVERLAP = 0.25
TOLERANCE = 1e-5
SEED = 7
TINY = dict(channels=8, depth=3, nfft=512, t_layers=2, t_heads=2, dconv_mode=3, bottom_channels=0)


def _tiny_pair(seed: int) -> tuple[HTDemucs, HTDemucsConfig]:
    torch.manual_seed(seed)
    reference = HTDemucs(SOURCES, samplerate=RATE, segment=SEGMENT, **TINY).eval()
    with torch.no_grad():  # as a trained checkpoint: every parameter (LayerScales too) matters
        for parameter in reference.parameters():
            parameter.add_(0.02 * torch.randn_like(parameter))
    return reference, HTDemucsConfig(sampling_rate=RATE, segment=float(SEGMENT), **TINY)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[torch.nn.Module, Path]]:
    """``kind -> (reference model, folder of the converted model)`` for a single HTDemucs and a bag."""
    folders = tmp_path_factory.mktemp("demucs_parity")
    first, first_config = _tiny_pair(0)
    second, second_config = _tiny_pair(1)
    single = HTDemucsForSourceSeparation(first_config).eval()
    single.load_state_dict(first.state_dict())
    weights = [[1.0, 0.5, 1.0, 1.0], [0.5, 1.0, 1.0, 2.0]]
    bag_reference = BagOfModels([first, second], weights=weights)
    bag = DemucsBagForSourceSeparation(
        DemucsBagConfig(
            models=[first_config.architecture_dict(), second_config.architecture_dict()], weights=weights
        )
    ).eval()
    bag.load_state_dict(bag_reference.state_dict())
    result = {}
    for kind, reference, ours in (("htdemucs", first, single), ("bag", bag_reference, bag)):
        ours.save_pretrained(folders / kind)
        result[kind] = (reference, folders / kind)
    return result


class _ServedRandom:
    """Stands for the ``random`` module inside ``demucs.apply``: serves the given shift offsets."""

    def __init__(self, offsets: list[int]) -> None:
        self._offsets = list(offsets)

    def randint(self, low: int, high: int) -> int:
        value = self._offsets.pop(0)
        assert low <= value <= high
        return value


def _demucs_separate(
    reference: torch.nn.Module, mix: np.ndarray, shifts: int, offsets: list[int], monkeypatch
) -> np.ndarray:
    served = _ServedRandom(offsets)
    monkeypatch.setattr(demucs.apply, "random", served)
    wav = torch.from_numpy(mix)
    # demucs.api.Separator.separate_tensor (segment=None: the model's own)
    ref = wav.mean(0)
    mean = ref.mean()
    std = ref.std() + 1e-8
    out = demucs.apply.apply_model(
        reference,
        ((wav - mean) / std)[None],
        segment=None,
        shifts=shifts,
        split=True,
        overlap=OVERLAP,
        device="cpu",
        num_workers=0,
        progress=False,
    )
    out = out * std + mean
    assert not served._offsets, "demucs drew fewer shift offsets than the pipeline"
    return out[0].numpy()


def _relative(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def _expected(kind: str, models, seconds: int, shifts: int, monkeypatch) -> tuple[np.ndarray, np.ndarray]:
    """The mixture and demucs' separation of it, with the shift offsets the pipeline will draw."""
    reference, folder = models[kind]
    mix = music_like(seconds, sampling_rate=RATE, seed=seconds)
    config = type(reference) is BagOfModels and DemucsBagConfig.from_pretrained(folder)
    config = config or HTDemucsConfig.from_pretrained(folder)
    members = len(getattr(config, "weights", [0]))
    offsets = shift_offsets(RATE, resolve_chunk_settings(config, shifts=shifts, seed=SEED), members)
    flat = [offset for member in offsets for offset in member]
    return mix, _demucs_separate(reference, mix, shifts, flat, monkeypatch)


def _run_reference_network(separator, reference: torch.nn.Module) -> None:
    """Make the pipeline's model (or each bag member) compute with demucs' network, so that what is
    compared is the chunk engine, normalisation, shifts and bag weighting, not the forward's float
    rounding (issue 16 part 1)."""
    ours = separator.model
    pairs = (
        zip(ours.models, reference.models, strict=True)
        if isinstance(reference, BagOfModels)
        else [(ours, reference)]
    )
    for model, network in pairs:
        model.forward = lambda input_values, network=network, **_: DemucsSourceSeparationOutput(
            audio_values=network(input_values)
        )


@pytest.mark.parametrize("kind", ["htdemucs", "bag"])
@pytest.mark.parametrize("shifts", [0, 2])
@pytest.mark.parametrize("seconds", [3, 10, pytest.param(60, marks=pytest.mark.slow)])
def test_pipeline_and_stream_reproduce_apply_model(
    models, kind: str, shifts: int, seconds: int, tmp_path: Path, monkeypatch
) -> None:
    mix, expected = _expected(kind, models, seconds, shifts, monkeypatch)
    reference, folder = models[kind]
    separator = pipeline("audio-source-separation", model=str(folder))
    _run_reference_network(separator, reference)
    options = {"overlap": OVERLAP, "shifts": shifts, "seed": SEED}

    got = np.stack([stem["audio"] for stem in separator(mix, sampling_rate=RATE, **options)])
    path = tmp_path / "mix.wav"
    soundfile.write(path, mix.T, RATE, subtype="FLOAT")
    streamed = np.concatenate(list(separator.stream_file(path, **options)), axis=-1)
    in_memory, stream = _relative(got, expected), _relative(streamed, expected)
    print(f"engine {kind} {seconds} s shifts={shifts}: pipeline {in_memory:.2e}, stream_file {stream:.2e}")
    assert got.shape == expected.shape == streamed.shape
    assert in_memory < TOLERANCE
    assert stream < TOLERANCE


@pytest.mark.parametrize("kind", ["htdemucs", "bag"])
@pytest.mark.parametrize(
    ("seconds", "shifts"), [(3, 0), (10, 2), pytest.param(60, 2, marks=pytest.mark.slow)]
)
def test_pipeline_and_cli_equal_demucs_separate(
    models, kind: str, shifts: int, seconds: int, tmp_path: Path, monkeypatch
) -> None:
    mix, expected = _expected(kind, models, seconds, shifts, monkeypatch)
    _, folder = models[kind]
    separator = pipeline("audio-source-separation", model=str(folder))
    got = np.stack(
        [
            stem["audio"]
            for stem in separator(mix, sampling_rate=RATE, overlap=OVERLAP, shifts=shifts, seed=SEED)
        ]
    )

    path = tmp_path / "mix.wav"
    soundfile.write(path, mix.T, RATE, subtype="FLOAT")
    argv = ["separate", str(path), "-m", str(folder), "-o", str(tmp_path / "out"), "--bit-depth", "32", "-q"]
    assert main([*argv, "--overlap", str(OVERLAP), "--shifts", str(shifts), "--seed", str(SEED)]) == 0
    written = [
        soundfile.read(tmp_path / "out" / "mix" / f"{name}.wav", dtype="float32")[0].T for name in SOURCES
    ]
    streamed = np.stack(written)
    in_memory, cli = _relative(got, expected), _relative(streamed, expected)
    label = f"end to end {kind} {seconds} s shifts={shifts}"
    print(f"{label}: pipeline {in_memory:.2e}, demixers separate {cli:.2e}")
    assert got.shape == expected.shape == streamed.shape
    np.testing.assert_allclose(streamed, got, atol=1e-6 * np.abs(got).max())  # CLI == pipeline
    assert in_memory < TOLERANCE
    assert cli < TOLERANCE
