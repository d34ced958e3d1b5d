"""ONNX export (`demixers export onnx`, `demixers.export`) and the pipeline's onnxruntime backend.

Fast: one tiny Conv-TasNet exported once through the CLI, then checked against torch at several
lengths (the time axis is dynamic), through the pipeline's chunk engine, and for the refusals.
Slow: MossFormer (dynamic length, int8) and HTDemucs (STFT outside the graph, through the chunk
engine), whose exports take tens of seconds.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from transformers import pipeline

import demixers
from demixers.cli import main
from demixers.export import OnnxSeparator, export_onnx, read_metadata
from demixers.modeling.mossformer.modeling_mossformer import build_mask_net_norm, exportable_mask_net_norm
from tests.audio_fixtures import music_like
from tests.modeling.conv_tasnet.test_modeling_conv_tasnet import tiny_config as conv_tasnet_config
from tests.modeling.demucs.tiny_configs import tiny_htdemucs_config
from tests.pipelines.conftest import save_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

PARITY = 1e-4  # relative to the output's scale (issue #22)


def relative_difference(actual: torch.Tensor | np.ndarray, expected: torch.Tensor | np.ndarray) -> float:
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.fixture(scope="module")
def conv_tasnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = demixers.ConvTasNetForSourceSeparation(conv_tasnet_config()).eval()
    return Path(save_model(model, tmp_path_factory.mktemp("models") / "conv_tasnet"))


@pytest.fixture(scope="module")
def conv_tasnet_onnx(conv_tasnet_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("onnx") / "conv_tasnet.onnx"
    assert main(["export", "onnx", str(conv_tasnet_dir), str(output), "--quiet"]) == 0
    return output


def test_cli_export_writes_one_checked_file_with_metadata(conv_tasnet_onnx: Path) -> None:
    assert [path.name for path in conv_tasnet_onnx.parent.iterdir()] == ["conv_tasnet.onnx"]  # no temporaries
    metadata = read_metadata(conv_tasnet_onnx)
    assert metadata["demixers.model_type"] == "conv_tasnet"
    assert metadata["demixers.graph"] == "waveform"


@pytest.mark.parametrize("length", [5, 1001, 1600, 4003])
def test_onnx_matches_torch_at_every_length(
    conv_tasnet_dir: Path, conv_tasnet_onnx: Path, length: int
) -> None:
    model = demixers.ConvTasNetForSourceSeparation.from_pretrained(conv_tasnet_dir).eval()
    runner = OnnxSeparator(model, conv_tasnet_onnx)
    mixture = torch.randn(3, 1, length, generator=torch.Generator().manual_seed(length))
    with torch.inference_mode():
        expected = model(input_values=mixture).audio_values
    actual = runner(mixture)
    assert actual.shape == expected.shape == (3, 2, 1, length)
    assert relative_difference(actual, expected) <= PARITY


def test_pipeline_onnx_backend_goes_through_the_chunk_engine(
    conv_tasnet_dir: Path, conv_tasnet_onnx: Path
) -> None:
    signal = 0.3 * np.random.default_rng(0).standard_normal(8000 * 3).astype(np.float32)
    options = {"segment": 1.0, "overlap": 0.25, "sampling_rate": 8000}
    eager = pipeline("audio-source-separation", model=str(conv_tasnet_dir))
    onnx = pipeline(
        "audio-source-separation", model=str(conv_tasnet_dir), backend="onnx", onnx_model=conv_tasnet_onnx
    )
    assert (eager.backend, onnx.backend) == ("torch", "onnx")
    calls = []
    runner = onnx._runners.runner(onnx.model)
    onnx._runners._runners[id(onnx.model)] = (onnx.model, lambda x: calls.append(x.shape) or runner(x))
    expected, actual = eager(signal, **options), onnx(signal, **options)
    assert len(calls) >= 3  # the chunks went through onnxruntime
    for want, got in zip(expected, actual, strict=True):
        assert got["label"] == want["label"]
        assert relative_difference(got["audio"], want["audio"]) <= PARITY


def test_onnx_file_of_another_configuration_is_refused(conv_tasnet_onnx: Path) -> None:
    other = demixers.ConvTasNetForSourceSeparation(conv_tasnet_config(hidden_channels=16)).eval()
    with pytest.raises(ValueError, match="different conv_tasnet configuration"):
        OnnxSeparator(other, conv_tasnet_onnx)
    mossformer = demixers.MossFormerForSourceSeparation(demixers.MossFormerConfig(num_hidden_layers=1))
    with pytest.raises(ValueError, match="exported from a 'conv_tasnet' model"):
        OnnxSeparator(mossformer, conv_tasnet_onnx)


def test_cli_keeps_an_existing_file_and_refuses_bad_options(
    conv_tasnet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "model.onnx"
    existing.write_bytes(b"keep me")
    assert main(["export", "onnx", str(conv_tasnet_dir), str(existing)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert existing.read_bytes() == b"keep me"
    assert main(["export", "onnx", str(conv_tasnet_dir), str(tmp_path / "model.bin")]) == 2
    assert main(["export", "onnx", str(conv_tasnet_dir), str(tmp_path / "m.onnx"), "--opset", "12"]) == 2
    assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "model.bin").exists()


def test_backend_options_are_checked_before_any_work(conv_tasnet_dir: Path) -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        pipeline("audio-source-separation", model=str(conv_tasnet_dir), backend="tensorrt")
    with pytest.raises(ValueError, match="runs through onnxruntime"):
        pipeline("audio-source-separation", model=str(conv_tasnet_dir), backend="torch", quantize="int8")
    with pytest.raises(ValueError, match="quantize must be one of"):
        pipeline("audio-source-separation", model=str(conv_tasnet_dir), quantize="int4")
    with pytest.raises(TypeError):
        pipeline("audio-source-separation", model=str(conv_tasnet_dir), compile=True)  # not offered


def test_unsupported_models_are_refused_with_the_supported_list(tmp_path: Path) -> None:
    from demixers.modeling.demucs import DemucsConfig, DemucsForSourceSeparation

    model = DemucsForSourceSeparation(
        DemucsConfig(channels=4, depth=2, lstm_layers=1, context=1, segment=0.05)
    )
    with pytest.raises(ValueError, match="ONNX export supports"):
        export_onnx(model, tmp_path / "demucs.onnx")
    with pytest.raises(ValueError, match="use_train_segment=True"):
        export_onnx(
            demixers.HTDemucsForSourceSeparation(tiny_htdemucs_config(use_train_segment=False)),
            tmp_path / "htdemucs.onnx",
        )
    assert not list(tmp_path.iterdir())


class _MaskNetNorms(torch.nn.Module):
    """MossFormer's two whole-sequence mask-net norms ("ln" and "gln") as one graph."""

    def __init__(self) -> None:
        super().__init__()
        self.norms = torch.nn.ModuleList(build_mask_net_norm(norm_type, 16) for norm_type in ("ln", "gln"))

    def forward(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        group_norm, global_norm = (exportable_mask_net_norm(norm, hidden_states) for norm in self.norms)
        return group_norm, global_norm


def test_mossformer_whole_sequence_norms_stay_exact_over_long_inputs() -> None:
    # MossFormer's mask net normalises over channels and all frames: onnxruntime's ReduceMean over
    # that long axis accumulated sequentially and drifted with the length (1.3e-4 of the output at
    # 40000 frames of non-negative encoder features, growing with the length; 8e-8 in torch)
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    graph = _MaskNetNorms().eval()
    with torch.no_grad():
        for norm in graph.norms:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    exact = copy.deepcopy(graph).double()
    example = torch.relu(torch.randn(2, 16, 1000))
    time = torch.export.Dim("time", min=2, max=2**24)
    with torch.no_grad():
        program = torch.onnx.export(
            graph, (example,), dynamo=True, dynamic_shapes=({2: time},), external_data=False, verbose=False
        )
    model_bytes = program.model_proto.SerializeToString()
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    for frames in (3, 1000, 40000):
        generator = torch.Generator().manual_seed(frames)
        # non-negative, offset features, as the ReLU encoder gives the first norm
        features = torch.relu(torch.randn(2, 16, frames, generator=generator) + 0.5) * 3
        actual = session.run(None, {session.get_inputs()[0].name: features.numpy()})
        with torch.no_grad():
            expected = exact(features.double())
            eager = graph(features)  # eager calls the norms themselves
            assert torch.equal(eager[0], graph.norms[0](features))
            assert torch.equal(eager[1], graph.norms[1](features))
        for got, want in zip(actual, expected, strict=True):
            assert relative_difference(got, want.float()) <= 2e-6, frames


# -- slow: MossFormer and HTDemucs ------------------------------------------------------------------


def tiny_mossformer() -> demixers.MossFormerForSourceSeparation:
    config = demixers.MossFormerConfig(
        encoder_kernel_size=8,
        encoder_stride=4,
        encoder_channels=16,
        hidden_size=16,
        num_hidden_layers=1,
        group_size=16,
        query_key_dim=8,
        conv_kernel_size=3,
        max_rotary_dim=4,
    )
    torch.manual_seed(0)
    return demixers.MossFormerForSourceSeparation(config).eval()


@pytest.mark.slow
def test_mossformer_onnx_dynamic_length_and_int8(tmp_path: Path) -> None:
    model = tiny_mossformer()
    path = export_onnx(model, tmp_path / "mossformer.onnx")
    runner = OnnxSeparator(model, path)
    int8 = OnnxSeparator(model, path, quantize="int8")
    # lengths that are and are not multiples of the group and of the encoder's stride
    # 40000 samples = 10000 frames: the difference grew with the length (2.8e-5 here when the mask
    # net's whole-sequence norm was one long ReduceMean in the graph; 2.3e-7 since it is blockwise)
    for length in (5, 257, 1600, 2021, 40000):
        mixture = torch.randn(2, 1, length, generator=torch.Generator().manual_seed(length))
        with torch.inference_mode():
            expected = model(input_values=mixture).audio_values
        assert relative_difference(runner(mixture), expected) <= PARITY
        assert relative_difference(runner(mixture), expected) <= 2e-6  # float32 rounding, no drift
        quantized = int8(mixture)
        assert quantized.shape == expected.shape
        # int8 weights: near float32 (signal-to-error ratio), but not equal (it did quantize); the
        # trained bundled model keeps its SI-SNRi (benchmarks/RESULTS.md)
        error = float(((quantized - expected) ** 2).sum())
        signal_to_error_db = 10 * np.log10(float((expected**2).sum()) / error) if error else np.inf
        assert 5 < signal_to_error_db < 80, signal_to_error_db  # tiny random model: 7.8-16.9 dB
    int8.close()
    assert not int8.path.exists()  # its temporary folder is removed


@pytest.mark.slow
def test_htdemucs_onnx_through_the_pipeline(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = demixers.HTDemucsForSourceSeparation(tiny_htdemucs_config()).eval()
    folder = save_model(model, tmp_path / "htdemucs")
    path = export_onnx(model, tmp_path / "htdemucs.onnx")
    # shorter than the segment (padded to it, as the model does), in a batch of 3
    mixture = torch.as_tensor(music_like(0.03, seed=1)).repeat(3, 1, 1)
    with torch.inference_mode():
        expected = model(input_values=mixture).audio_values
    assert relative_difference(OnnxSeparator(model, path)(mixture), expected) <= PARITY
    signal = music_like(0.2, seed=2)
    options = {"sampling_rate": 44100, "shifts": 0}
    eager = pipeline("audio-source-separation", model=folder)(signal, **options)
    onnx = pipeline("audio-source-separation", model=folder, backend="onnx", onnx_model=path)(
        signal, **options
    )
    for want, got in zip(eager, onnx, strict=True):
        assert relative_difference(got["audio"], want["audio"]) <= PARITY


def test_separate_command_runs_the_onnx_backend(
    conv_tasnet_dir: Path, conv_tasnet_onnx: Path, tmp_path: Path
) -> None:
    """``demixers separate --backend onnx --onnx-model F`` writes what the onnx-backed pipeline returns."""
    config = demixers.ConvTasNetConfig.from_pretrained(conv_tasnet_dir)
    rate = config.sampling_rate
    mixture = music_like(0.5, sampling_rate=rate, channels=config.audio_channels)
    source = tmp_path / "mix.wav"
    sf.write(source, np.asarray(mixture).T, rate, subtype="FLOAT")
    out = tmp_path / "out"
    argv = ["separate", str(source), "-m", str(conv_tasnet_dir), "--backend", "onnx"]
    argv += ["--onnx-model", str(conv_tasnet_onnx), "--bit-depth", "32", "-o", str(out), "-q"]
    assert main(argv) == 0
    separator = pipeline(
        "audio-source-separation",
        model=str(conv_tasnet_dir),
        backend="onnx",
        onnx_model=str(conv_tasnet_onnx),
    )
    assert separator.backend == "onnx"
    for stem in separator(str(source)):
        written, written_rate = sf.read(out / "mix" / f"{stem['label']}.wav", dtype="float32", always_2d=True)
        assert written_rate == stem["sampling_rate"]
        np.testing.assert_allclose(written.T, stem["audio"], atol=1e-6)
