"""Numbers for the overlap-add engine itself (no model loading)."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from transformers import PretrainedConfig, PreTrainedModel, pipeline
from transformers.utils import ModelOutput

import demixers
from demixers.pipelines.chunking import (
    ChunkMember,
    ChunkSettings,
    align_sources,
    chunk_layout,
    count_chunks,
    from_start_layout,
    is_permutation_invariant,
    resolve_chunk_settings,
    separate_chunked,
)


def settings(**overrides) -> ChunkSettings:
    values = dict(
        segment=1.0, overlap=0.25, batch_size=1, shifts=0, seed=0, max_shift=0.5, permutation_invariant=False
    )
    values.update(overrides)
    return ChunkSettings(**values)


def identity_forward(sources: int):
    def forward(batch: torch.Tensor) -> torch.Tensor:
        return batch[:, None].repeat(1, sources, 1, 1) / sources

    return forward


@pytest.mark.parametrize(
    ("total", "chunk", "overlap"),
    [(1000, 100, 0.25), (1001, 100, 0.5), (999, 128, 0.75), (50, 100, 0.25), (100, 100, 0.0)],
)
def test_layout_covers_input_with_full_chunks(total: int, chunk: int, overlap: float) -> None:
    length, offsets = chunk_layout(total, chunk, overlap)
    assert length == min(chunk, total)
    assert offsets[0] == 0 and offsets[-1] + length == total
    assert all(b > a for a, b in itertools.pairwise(offsets))
    covered = np.zeros(total, dtype=bool)
    for offset in offsets:
        covered[offset : offset + length] = True
    assert covered.all()


@pytest.mark.parametrize("overlap", [0.0, 0.1, 0.25, 0.5, 0.8])
def test_constant_and_random_signals_pass_unchanged_through_the_cross_fade(overlap: float) -> None:
    rng = np.random.default_rng(0)
    for waveform in (
        np.full((2, 10_007), 0.5, dtype=np.float32),
        rng.standard_normal((2, 10_007)).astype(np.float32),
    ):
        out = separate_chunked(identity_forward(2), waveform, 2, 1000, settings(segment=1.3, overlap=overlap))
        assert out.shape == (2, 2, 10_007) and out.dtype == np.float32
        np.testing.assert_allclose(out.sum(axis=0), waveform, atol=2e-6)
        np.testing.assert_allclose(out[0], out[1], atol=0)


def test_batch_size_does_not_change_the_result() -> None:
    rng = np.random.default_rng(1)
    waveform = rng.standard_normal((1, 7_777)).astype(np.float32)

    def nonlinear(batch: torch.Tensor) -> torch.Tensor:
        return torch.stack([torch.tanh(3 * batch), batch - torch.tanh(3 * batch)], dim=1)

    single = separate_chunked(nonlinear, waveform, 2, 1000, settings(segment=0.9, batch_size=1))
    for batch_size in (2, 3, 64):
        batched = separate_chunked(nonlinear, waveform, 2, 1000, settings(segment=0.9, batch_size=batch_size))
        np.testing.assert_allclose(batched, single, atol=1e-6)


def test_shifts_are_seeded_and_leave_the_global_rngs_alone() -> None:
    waveform = np.random.default_rng(2).standard_normal((1, 5_000)).astype(np.float32)

    def positional(batch: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(0.5, 1.5, batch.shape[-1])
        return torch.stack([batch * ramp, batch * (2 - ramp)], dim=1)

    torch_state, py_state, np_state = torch.random.get_rng_state(), random.getstate(), np.random.get_state()
    first = separate_chunked(positional, waveform, 2, 1000, settings(shifts=3, seed=7))
    second = separate_chunked(positional, waveform, 2, 1000, settings(shifts=3, seed=7))
    other = separate_chunked(positional, waveform, 2, 1000, settings(shifts=3, seed=8))
    assert torch.equal(torch.random.get_rng_state(), torch_state)
    assert random.getstate() == py_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_state, strict=True))
    np.testing.assert_array_equal(first, second)
    assert np.abs(first - other).max() > 1e-3
    # a time-invariant model is unaffected by the shifts: the delays are undone exactly
    plain = separate_chunked(identity_forward(2), waveform, 2, 1000, settings())
    shifted = separate_chunked(identity_forward(2), waveform, 2, 1000, settings(shifts=4, seed=3))
    np.testing.assert_allclose(shifted, plain, atol=2e-6)
    # delays longer than a chunk (whole chunks of zero prefix) are handled too
    tiny_chunks = settings(segment=0.1, shifts=3, seed=3, max_shift=0.5)
    np.testing.assert_allclose(
        separate_chunked(identity_forward(2), waveform, 2, 1000, tiny_chunks), plain, atol=2e-6
    )
    assert count_chunks(5_000, 1000, settings(shifts=3, seed=7)) >= 3 * len(
        chunk_layout(5_000, 1000, 0.25)[1]
    )


def test_align_sources_recovers_known_orders() -> None:
    rng = np.random.default_rng(3)
    for sources in (2, 3, 4, 9):
        reference = rng.standard_normal((sources, 1, 400))
        for _ in range(5):
            perm = rng.permutation(sources)
            estimate = reference[perm] + 0.01 * rng.standard_normal(reference.shape)
            found = align_sources(reference, estimate)
            np.testing.assert_array_equal(estimate[list(found)], estimate[np.argsort(perm)])
    # proportional sources (the additive toy's outputs) keep their order; silence keeps identity
    x = rng.standard_normal((1, 100))
    assert align_sources(np.stack([0.2 * x, 0.8 * x]), np.stack([0.2 * x, 0.8 * x])) == (0, 1)
    assert align_sources(np.zeros((3, 1, 10)), np.zeros((3, 1, 10))) == (0, 1, 2)


def test_silent_chunks_skip_the_model_and_stay_silent() -> None:
    calls = []

    def nan_on_silence(batch: torch.Tensor) -> torch.Tensor:
        calls.append(batch.shape[0])
        scale = batch.abs().amax(dim=-1, keepdim=True)
        return torch.stack([batch / scale, batch / scale], dim=1)  # NaN for an all-zero chunk

    out = separate_chunked(nan_on_silence, np.zeros((1, 4_000), dtype=np.float32), 2, 1000, settings())
    assert calls == [] and not np.any(out)
    with pytest.raises(RuntimeError, match="NaN/Inf"):
        waveform = np.zeros((1, 4_000), dtype=np.float32)
        waveform[0, 10] = 1.0
        waveform[0, 1000:1010] = 0.0

        def broken(batch: torch.Tensor) -> torch.Tensor:
            return torch.full((batch.shape[0], 2, *batch.shape[1:]), float("nan"))

        separate_chunked(broken, waveform, 2, 1000, settings())


def test_settings_defaults_and_validation() -> None:
    # every config declares permutation_invariant (the contract); source names decide nothing
    speech = SimpleNamespace(source_names=["speaker_1", "speaker_2"], permutation_invariant=True)
    music = SimpleNamespace(source_names=["drums", "bass"], segment=7.8, permutation_invariant=False)
    assert is_permutation_invariant(speech) and not is_permutation_invariant(music)
    assert not is_permutation_invariant(
        SimpleNamespace(source_names=["speaker_1", "speaker_2"], permutation_invariant=False)
    )
    assert is_permutation_invariant(SimpleNamespace(source_names=["a", "b"], permutation_invariant=True))
    with pytest.raises(TypeError, match="permutation_invariant"):
        is_permutation_invariant(SimpleNamespace(source_names=["speaker_1", "speaker_2"]))
    resolved = resolve_chunk_settings(speech)
    assert (resolved.segment, resolved.overlap, resolved.batch_size, resolved.shifts) == (8.0, 0.5, 1, 0)
    resolved = resolve_chunk_settings(music, batch_size=4, shifts=2, seed=5)
    assert (resolved.segment, resolved.overlap, resolved.batch_size, resolved.shifts, resolved.seed) == (
        7.8,
        0.25,
        4,
        2,
        5,
    )
    for kwargs, error in (
        ({"segment": 0}, ValueError),
        ({"segment": -1.0}, ValueError),
        ({"segment": "10"}, TypeError),
        ({"overlap": 1.0}, ValueError),
        ({"overlap": -0.1}, ValueError),
        ({"batch_size": 0}, ValueError),
        ({"batch_size": 1.5}, TypeError),
        ({"shifts": -1}, ValueError),
    ):
        with pytest.raises(error):
            resolve_chunk_settings(music, **kwargs)
    with pytest.raises(ValueError, match="permutation-invariant"):
        resolve_chunk_settings(speech, shifts=1)


# -- chunking policies (apply_model's: from_start layout, triangle window, context padding) ------


def apply_model_policy(**overrides) -> ChunkSettings:
    values = dict(window="triangle", layout="from_start", context="segment")
    values.update(overrides)
    return settings(**values)


@pytest.mark.parametrize(
    ("total", "chunk", "overlap"), [(1000, 100, 0.25), (1001, 100, 0.5), (70, 100, 0.25)]
)
def test_from_start_layout_is_apply_models(total: int, chunk: int, overlap: float) -> None:
    offsets, lengths = from_start_layout(total, chunk, overlap)
    stride = int((1 - overlap) * chunk)
    assert offsets == list(range(0, total, stride))
    assert lengths == [min(chunk, total - offset) for offset in offsets]


@pytest.mark.parametrize("context", ["none", "segment"])
@pytest.mark.parametrize("shifts", [0, 2])
def test_triangle_policy_passes_signals_unchanged(context: str, shifts: int) -> None:
    waveform = np.random.default_rng(1).standard_normal((2, 3_333)).astype(np.float32)
    policy = apply_model_policy(context=context, shifts=shifts, seed=4, transition_power=2.0)
    out = separate_chunked(identity_forward(2), waveform, 2, 1000, policy)
    np.testing.assert_allclose(out.sum(axis=0), waveform, atol=2e-6)


def test_short_chunks_are_centred_in_their_context() -> None:
    """apply_model pads a chunk shorter than the segment to the segment, centred, with the input
    around it (zeros beyond the input), and keeps the middle of the output."""
    seen: list[np.ndarray] = []

    def recording(batch: torch.Tensor) -> torch.Tensor:
        seen.extend(batch.numpy().copy())
        return batch[:, None].repeat(1, 2, 1, 1)

    waveform = np.arange(1, 1501, dtype=np.float32)[None]  # segment 1000, stride 750: chunks at 0, 750
    separate_chunked(recording, waveform, 2, 1000, apply_model_policy())
    assert [piece.shape[-1] for piece in seen] == [1000, 1000]
    np.testing.assert_array_equal(seen[0][0], waveform[0, :1000])
    # the second chunk is [750, 1500): 750 samples centred in 1000 -> 125 samples of context each side
    np.testing.assert_array_equal(seen[1][0, :875], waveform[0, 625:1500])
    np.testing.assert_array_equal(seen[1][0, 875:], np.zeros(125))


def test_bag_members_are_averaged_with_per_source_weights() -> None:
    waveform = np.random.default_rng(2).standard_normal((1, 2_500)).astype(np.float32)

    calls = [0]

    def gains(values: list[float]):
        def forward(batch: torch.Tensor) -> torch.Tensor:
            calls[0] += batch.shape[0]
            return batch[:, None] * torch.tensor(values)[None, :, None, None]

        return forward

    weights, totals = [[1.0, 0.5], [3.0, 1.5]], [4.0, 2.0]
    normalised = [tuple(w / t for w, t in zip(row, totals, strict=True)) for row in weights]
    members = [  # each member with its own policy and segment, both with one shift pass
        ChunkMember(gains([1.0, 2.0]), apply_model_policy(shifts=1), normalised[0]),
        ChunkMember(gains([5.0, -1.0]), settings(segment=0.7, shifts=1), normalised[1]),
    ]
    out = separate_chunked(members, waveform, 2, 1000, settings(shifts=1))
    expected_gains = [(1.0 * 1.0 + 3.0 * 5.0) / 4.0, (0.5 * 2.0 + 1.5 * -1.0) / 2.0]
    np.testing.assert_allclose(out[:, 0], np.outer(expected_gains, waveform[0]), atol=1e-5)
    assert calls[0] == count_chunks(2_500, 1000, settings(shifts=1), members) > 6


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("chunk_window", "hann"),
        ("chunk_layout", "centre"),
        ("chunk_context", "reflect"),
        ("chunk_transition_power", 0.5),
    ],
)
def test_bad_policy_fields_are_refused(field: str, value) -> None:
    config = SimpleNamespace(permutation_invariant=False, **{field: value})
    with pytest.raises(ValueError, match=field):
        resolve_chunk_settings(config)


# -- MSST's demix as a policy (padded_from_start layout, linear_fade window, reflect_pad context) --


def msst_policy_config(chunk_size: int, num_overlap: int, **extra) -> SimpleNamespace:
    return SimpleNamespace(
        sampling_rate=1000,
        permutation_invariant=False,
        chunk_size=chunk_size,
        num_overlap=num_overlap,
        chunk_layout="padded_from_start",
        chunk_window="linear_fade",
        chunk_context="reflect_pad",
        **extra,
    )


def chunk_aware_model(batch: torch.Tensor) -> torch.Tensor:
    """Two sources that depend on everything the model sees: the chunk's mean (so reflected or
    zero padding changes every output sample) and the position in the chunk."""
    ramp = torch.linspace(0.5, 1.5, batch.shape[-1], dtype=batch.dtype)
    mean = batch.mean(dim=-1, keepdim=True)
    return torch.stack([0.7 * batch * ramp + 0.3 * mean, torch.tanh(2 * batch) - 0.5 * mean], dim=1)


def msst_demix_reference(model, mix: np.ndarray, chunk_size: int, num_overlap: int) -> np.ndarray:
    """MSST's ``utils.model_utils.demix`` (generic mode, batch_size 1), written from its algorithm."""
    audio = torch.from_numpy(mix)
    fade_size = chunk_size // 10
    step = chunk_size // num_overlap
    border = chunk_size - step
    length = audio.shape[-1]
    padded = length > 2 * border and border > 0
    if padded:  # reflect the track by `border` at both ends
        audio = torch.nn.functional.pad(audio[None], (border, border), mode="reflect")[0]
    window_template = torch.ones(chunk_size)
    if fade_size > 0:
        window_template[:fade_size] = torch.linspace(0, 1, fade_size)
        window_template[-fade_size:] = torch.linspace(1, 0, fade_size)
    starts = list(range(0, audio.shape[-1], step))
    result, counter = None, torch.zeros(audio.shape)
    for position, start in enumerate(starts):
        part = audio[:, start : start + chunk_size]
        chunk_length = part.shape[-1]
        mode = "reflect" if chunk_length > chunk_size // 2 else "constant"
        part = torch.nn.functional.pad(part[None], (0, chunk_size - chunk_length), mode=mode)
        output = model(part)[0]
        if result is None:
            result = torch.zeros((output.shape[0], *audio.shape))
        window = window_template.clone()
        if position == 0:  # the first chunk has no fade-in
            window[:fade_size] = 1
        elif position == len(starts) - 1:  # the last one no fade-out
            window[-fade_size:] = 1
        result[..., start : start + chunk_length] += output[..., :chunk_length] * window[:chunk_length]
        counter[..., start : start + chunk_length] += window[:chunk_length]
    estimate = np.nan_to_num((result / counter).numpy(), nan=0.0)
    return estimate[..., border:-border] if padded else estimate


@pytest.mark.parametrize(
    ("length", "num_overlap"),
    [
        (300, 2),  # shorter than half a chunk: one chunk completed with zeros
        (700, 4),  # shorter than a chunk, more than half: completed by reflection
        (1000, 2),  # exactly a chunk (num_overlap 2: not long enough for the track padding)
        (1000, 4),
        (4321, 2),  # several chunks + a remainder, track reflect-padded by chunk - step
        (4321, 4),
        (2999, 3),  # a chunk size num_overlap does not divide (step 333)
        (2500, 1),  # no overlap: MSST's zero-weight first samples give 0 (its nan_to_num)
    ],
)
def test_msst_policy_equals_msst_demix(length: int, num_overlap: int) -> None:
    waveform = np.random.default_rng(length).standard_normal((2, length)).astype(np.float32)
    expected = msst_demix_reference(chunk_aware_model, waveform, 1000, num_overlap)
    single = None
    for batch_size in (1, 3):
        policy = resolve_chunk_settings(msst_policy_config(1000, num_overlap), batch_size=batch_size)
        assert policy.chunk_samples == 1000 and policy.num_overlap == num_overlap
        out = separate_chunked(chunk_aware_model, waveform, 2, 1000, policy)
        assert out.shape == expected.shape == (2, 2, length)
        np.testing.assert_allclose(out, expected, rtol=0, atol=2e-6 * np.abs(expected).max())
        if single is None:
            single = out
        np.testing.assert_allclose(out, single, rtol=0, atol=1e-6)
    step = 1000 // num_overlap
    border = 1000 - step
    padded_length = length + 2 * border if length > 2 * border else length
    assert count_chunks(length, 1000, policy) == len(range(0, padded_length, step))


def test_msst_policy_reads_what_msst_feeds_the_model() -> None:
    """The model sees 1000-sample chunks of the reflect-padded track, the last one completed by its
    own reflection (more than half a chunk) and the track's edges reflected, not zeros."""
    seen: list[np.ndarray] = []

    def recording(batch: torch.Tensor) -> torch.Tensor:
        seen.extend(batch.numpy().copy())
        return batch[:, None].repeat(1, 2, 1, 1)

    waveform = np.arange(1, 2201, dtype=np.float32)[None]  # step 500, border 500: padded 3200
    separate_chunked(recording, waveform, 2, 1000, resolve_chunk_settings(msst_policy_config(1000, 2)))
    padded = np.pad(waveform[0], 500, mode="reflect")
    assert [piece.shape[-1] for piece in seen] == [1000] * 7
    for index, piece in enumerate(seen[:5]):
        np.testing.assert_array_equal(piece[0], padded[500 * index : 500 * index + 1000])
    tail = padded[2500:]  # 700 samples: completed by reflection
    np.testing.assert_array_equal(seen[5][0], np.pad(tail, (0, 300), mode="reflect"))
    np.testing.assert_array_equal(seen[6][0], np.pad(padded[3000:], (0, 800)))  # 200: zeros


def test_msst_policy_overrides_and_validation() -> None:
    config = msst_policy_config(1000, 4)
    # --segment / --overlap override the config's exact chunk_size / num_overlap
    overridden = resolve_chunk_settings(config, segment=0.5, overlap=0.5)
    assert (overridden.chunk_samples, overridden.num_overlap, overridden.segment, overridden.overlap) == (
        None,
        None,
        0.5,
        0.5,
    )
    assert resolve_chunk_settings(config).overlap == 0.75
    for field, value in (("chunk_size", 0), ("chunk_size", 2.5), ("num_overlap", 0), ("num_overlap", True)):
        with pytest.raises(ValueError, match=field):
            resolve_chunk_settings(msst_policy_config(**{"chunk_size": 1000, "num_overlap": 2, field: value}))
    with pytest.raises(ValueError, match="sampling_rate"):
        resolve_chunk_settings(SimpleNamespace(permutation_invariant=False, chunk_size=1000))
    waveform = np.ones((1, 50), dtype=np.float32)
    with pytest.raises(ValueError, match="num_overlap=20"):
        policy = resolve_chunk_settings(msst_policy_config(10, 20))
        separate_chunked(identity_forward(1), waveform, 1, 1000, policy)


class MsstPolicySplitterConfig(PretrainedConfig):
    """A music toy whose config declares MSST's demix policy (as the RoFormer families do)."""

    model_type = "demixers_test_msst_policy_splitter"

    def __init__(self, sampling_rate: int = 8000, chunk_size: int = 8000, num_overlap: int = 2, **kwargs):
        self.sampling_rate = sampling_rate
        self.audio_channels = 2
        self.source_names = ["vocals", "instrumental"]
        self.permutation_invariant = False
        self.chunk_size = chunk_size
        self.num_overlap = num_overlap
        self.chunk_layout = "padded_from_start"
        self.chunk_window = "linear_fade"
        self.chunk_context = "reflect_pad"
        super().__init__(**kwargs)


@dataclass
class _ToyOutput(ModelOutput):
    audio_values: torch.FloatTensor | None = None


class MsstPolicySplitter(PreTrainedModel):
    config_class = MsstPolicySplitterConfig
    main_input_name = "input_values"

    def __init__(self, config: MsstPolicySplitterConfig) -> None:
        super().__init__(config)
        self.gain = torch.nn.Parameter(torch.ones(1))
        self.post_init()

    def _init_weights(self, module: torch.nn.Module) -> None:
        pass

    def forward(self, input_values: torch.Tensor, **_: object) -> _ToyOutput:
        return _ToyOutput(audio_values=self.gain * chunk_aware_model(input_values))


demixers.register_model_family(MsstPolicySplitterConfig, MsstPolicySplitter)


@pytest.mark.parametrize("seconds", [0.7, 3.3])
def test_msst_policy_through_the_pipeline_and_stream_file(tmp_path, seconds: float) -> None:
    """The pipeline follows the config's policy: in memory, streamed from a file and MSST's loop
    agree, whatever the batch size."""
    folder = tmp_path / "msst_toy"
    MsstPolicySplitter(MsstPolicySplitterConfig()).eval().save_pretrained(folder)
    separator = pipeline("audio-source-separation", model=str(folder))
    rng = np.random.default_rng(7)
    waveform = (0.3 * rng.standard_normal((2, round(seconds * 8000)))).astype(np.float32)
    path = tmp_path / "song.wav"
    soundfile.write(path, waveform.T, 8000, subtype="FLOAT")
    expected = msst_demix_reference(chunk_aware_model, waveform, 8000, 2)
    in_memory = np.stack([stem["audio"] for stem in separator(str(path))])
    np.testing.assert_allclose(in_memory, expected, rtol=0, atol=2e-6 * np.abs(expected).max())
    for batch_size in (1, 4):
        streamed = np.concatenate(list(separator.stream_file(path, batch_size=batch_size)), axis=-1)
        assert streamed.shape == in_memory.shape
        np.testing.assert_allclose(streamed, in_memory, rtol=0, atol=1e-6)
