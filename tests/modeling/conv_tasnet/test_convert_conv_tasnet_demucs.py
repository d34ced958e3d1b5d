"""The demucs v2 ``tasnet`` converter, checked against an independent functional reference.

The reference below recomputes demucs 2.x's ``ConvTasNet`` forward (Kaituo Xu's layout, stereo
extension) straight from its state dict: ReLU encoder, cLN + bottleneck, R x X blocks of
``1x1 conv -> PReLU -> norm -> dilated depthwise conv [-> chomp] -> PReLU -> norm -> 1x1 conv`` with
residual connections, ReLU masks, and a ``Linear(N -> channels * L)`` decoder followed by an
explicit overlap-add with hop L/2, zero-padded to the input length. It shares no code with the
converted model, so a wrong key mapping, decoder reshape or layout detection shows up as a mismatch.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import types
from argparse import Namespace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

import demixers
from demixers.modeling.conv_tasnet import ConvTasNetConfig, ConvTasNetForSourceSeparation
from demixers.modeling.conv_tasnet import convert_conv_tasnet_demucs_to_hf as converter

demixers.register_model_family(ConvTasNetConfig, ConvTasNetForSourceSeparation)

SOURCES = ["drums", "bass", "other", "vocals"]
SMALL = dict(N=12, L=8, B=10, H=14, P=3, X=3, R=2, audio_channels=2, sources=4)
RELEASE = dict(N=256, L=20, B=256, H=512, P=3, X=10, R=4, audio_channels=2, sources=4)
RELEASE_PARAMETERS = 10_977_872


def demucs_state_dict(
    *, causal: bool = False, norm: str = "gLN", seed: int = 0, **shape: int
) -> dict[str, torch.Tensor]:
    """Random weights laid out as demucs' ``ConvTasNet.state_dict()``; ``shape`` as `SMALL`/`RELEASE`."""
    N, L, B, H, P, X, R = (shape[key] for key in "NLBHPXR")
    audio_channels, sources = shape["audio_channels"], shape["sources"]
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return scale * torch.randn(*shape, generator=generator)

    def norm_params(prefix: str, channels: int) -> dict[str, torch.Tensor]:
        if norm == "BN":
            return {
                f"{prefix}.weight": 1 + randn(channels, scale=0.1),
                f"{prefix}.bias": randn(channels, scale=0.1),
                f"{prefix}.running_mean": randn(channels, scale=0.1),
                f"{prefix}.running_var": 0.5 + torch.rand(channels, generator=generator),
                f"{prefix}.num_batches_tracked": torch.tensor(100),
            }
        if norm == "id":
            return {}
        return {
            f"{prefix}.gamma": 1 + randn(1, channels, 1, scale=0.1),
            f"{prefix}.beta": randn(1, channels, 1, scale=0.1),
        }

    state = {
        "encoder.conv1d_U.weight": randn(N, audio_channels, L, scale=0.3),
        "separator.network.0.gamma": 1 + randn(1, N, 1, scale=0.1),
        "separator.network.0.beta": randn(1, N, 1, scale=0.1),
        "separator.network.1.weight": randn(B, N, 1, scale=N**-0.5),
    }
    k = 1 if causal else 0
    for r in range(R):
        for x in range(X):
            p = f"separator.network.2.{r}.{x}.net"
            state[f"{p}.0.weight"] = randn(H, B, 1, scale=B**-0.5)
            state[f"{p}.1.weight"] = 0.25 + randn(1, scale=0.05)
            state.update(norm_params(f"{p}.2", H))
            state[f"{p}.3.net.0.weight"] = randn(H, 1, P, scale=P**-0.5)
            state[f"{p}.3.net.{1 + k}.weight"] = 0.25 + randn(1, scale=0.05)
            state.update(norm_params(f"{p}.3.net.{2 + k}", H))
            state[f"{p}.3.net.{3 + k}.weight"] = randn(B, H, 1, scale=0.5 * H**-0.5)
    state["separator.network.3.weight"] = randn(sources * N, B, 1, scale=B**-0.5)
    state["decoder.basis_signals.weight"] = randn(audio_channels * L, N, scale=N**-0.5)
    return state


def reference_forward(
    state: dict[str, torch.Tensor], mixture: torch.Tensor, causal: bool = False, norm: str = "gLN"
) -> torch.Tensor:
    """demucs 2.x ConvTasNet forward from its state dict: ``(M, channels, T)`` -> ``(M, C, channels, T)``."""
    eps = 1e-8

    def layer_norm(y: torch.Tensor, prefix: str, dims: tuple[int, ...]) -> torch.Tensor:
        if norm == "id" and prefix != "separator.network.0":
            return y
        if norm == "BN" and prefix != "separator.network.0":
            return F.batch_norm(
                y, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                state[f"{prefix}.weight"], state[f"{prefix}.bias"], training=False, eps=1e-5,
            )  # fmt: skip
        mean = y.mean(dim=dims, keepdim=True)
        var = ((y - mean) ** 2).mean(dim=dims, keepdim=True)
        return state[f"{prefix}.gamma"] * (y - mean) / torch.sqrt(var + eps) + state[f"{prefix}.beta"]

    block_dims = (1,) if norm == "cLN" else (1, 2)
    N, channels, L = state["encoder.conv1d_U.weight"].shape
    hop = L // 2
    mixture_w = F.relu(F.conv1d(mixture, state["encoder.conv1d_U.weight"], stride=hop))
    y = F.conv1d(layer_norm(mixture_w, "separator.network.0", (1,)), state["separator.network.1.weight"])
    blocks = sorted(
        {tuple(map(int, key.split(".")[3:5])) for key in state if key.startswith("separator.network.2.")}
    )
    k = 1 if causal else 0
    for r, x in blocks:
        p = f"separator.network.2.{r}.{x}.net"
        h = F.conv1d(y, state[f"{p}.0.weight"])
        h = layer_norm(F.prelu(h, state[f"{p}.1.weight"]), f"{p}.2", block_dims)
        depthwise = state[f"{p}.3.net.0.weight"]
        dilation, size = 2**x, depthwise.shape[-1]
        padding = (size - 1) * dilation if causal else (size - 1) * dilation // 2
        h = F.conv1d(h, depthwise, padding=padding, dilation=dilation, groups=h.shape[1])
        if causal and padding:
            h = h[..., :-padding]
        h = layer_norm(F.prelu(h, state[f"{p}.3.net.{1 + k}.weight"]), f"{p}.3.net.{2 + k}", block_dims)
        y = y + F.conv1d(h, state[f"{p}.3.net.{3 + k}.weight"])
    M, _, frames = mixture_w.shape
    score = F.conv1d(y, state["separator.network.3.weight"]).view(M, -1, N, frames)
    source_w = mixture_w[:, None] * F.relu(score)  # (M, C, N, K)
    basis = source_w.transpose(2, 3) @ state["decoder.basis_signals.weight"].T  # (M, C, K, channels * L)
    basis = basis.view(M, basis.shape[1], frames, channels, L).transpose(2, 3)  # (M, C, channels, K, L)
    output = torch.zeros(M, basis.shape[1], channels, (frames - 1) * hop + L)
    for frame in range(frames):
        output[..., frame * hop : frame * hop + L] += basis[..., frame, :]
    return F.pad(output, (0, mixture.shape[-1] - output.shape[-1]))


def assert_parity(
    model: ConvTasNetForSourceSeparation,
    state: dict[str, torch.Tensor],
    lengths: tuple[int, ...],
    **reference_kwargs: Any,
) -> None:
    generator = torch.Generator().manual_seed(1)
    for length in lengths:
        mixture = torch.randn(2, model.config.audio_channels, length, generator=generator)
        with torch.no_grad():
            expected = reference_forward(state, mixture, **reference_kwargs)
            actual = model(mixture).audio_values
        assert actual.shape == expected.shape
        scale = expected.abs().max()
        assert scale > 0
        assert (actual - expected).abs().max() <= 1e-5 * scale, f"length {length}"


@pytest.fixture
def fake_demucs_modules(monkeypatch):
    """Importable ``demucs.tasnet.ConvTasNet`` / ``demucs.model.Demucs`` stand-ins to *write* packages."""
    classes = {}
    for module_name, class_name in (("demucs.tasnet", "ConvTasNet"), ("demucs.model", "Demucs")):
        module = types.ModuleType(module_name)
        cls = type(class_name, (), {"__module__": module_name})
        setattr(module, class_name, cls)
        monkeypatch.setitem(sys.modules, module_name, module)
        classes[class_name] = cls
    return classes


def write_package(path: Path, klass: type, state: dict[str, torch.Tensor], **kwargs: Any) -> Path:
    package = {
        "klass": klass,
        "args": (),
        "kwargs": kwargs,
        "state": state,
        "training_args": Namespace(tasnet=True, musdb=Path("/data/musdb"), lr=3e-4, X=kwargs.get("X", 8)),
    }
    torch.save(package, path)
    return path


# -- bare release state dicts -----------------------------------------------------------------------


def test_release_state_dict_converts_with_parity(tmp_path: Path) -> None:
    state = demucs_state_dict(**SMALL)
    torch.save(state, tmp_path / "tasnet-00000000.th")
    folder = converter.convert_checkpoint(tmp_path / "tasnet-00000000.th", tmp_path / "out")
    model = AutoModel.from_pretrained(folder).eval()
    assert type(model) is ConvTasNetForSourceSeparation
    config = model.config
    assert config.source_names == SOURCES and not config.permutation_invariant
    assert (config.sampling_rate, config.audio_channels, config.segment) == (44100, 2, 8.0)
    assert (config.encoder_channels, config.encoder_kernel_size, config.encoder_stride) == (12, 8, 4)
    assert (config.bottleneck_channels, config.hidden_channels, config.skip_channels) == (10, 14, 0)
    assert (config.num_blocks, config.num_repeats, config.conv_kernel_size) == (3, 2, 3)
    assert (config.norm_type, config.input_norm_type, config.causal) == ("gln", "cln", False)
    assert (config.encoder_activation, config.mask_activation) == ("relu", "relu")
    assert (config.mask_prelu, config.separator_bias, config.normalize_input) == (False, False, True)
    assert (folder / "preprocessor_config.json").is_file()
    assert_parity(model, state, (8, 23, 1001, 4410))


@pytest.mark.parametrize(("causal", "norm"), [(True, "cLN"), (False, "BN"), (False, "id"), (True, "id")])
def test_layouts_are_detected_from_the_keys(causal: bool, norm: str) -> None:
    state = demucs_state_dict(**SMALL, causal=causal, norm=norm)
    model = converter.build_model(state)
    assert model.config.causal is causal
    assert model.config.norm_type == {"cLN": "cln", "BN": "bn", "id": "id"}[norm]
    assert_parity(model, state, (500, 1203), causal=causal, norm=norm)


def test_what_a_bare_state_dict_cannot_tell_can_be_overridden() -> None:
    state = demucs_state_dict(**SMALL)
    model = converter.build_model(state, config_overrides={"norm_type": "cln"})
    assert model.config.norm_type == "cln"
    assert_parity(model, state, (700,), norm="cLN")
    model = converter.build_model(state, config_overrides={"mask_activation": "softmax"})
    masks = model.separator(torch.randn(1, 12, 30))
    torch.testing.assert_close(masks.sum(dim=1), torch.ones(1, 12, 30))


def test_causal_package_with_global_layer_norm_is_refused(tmp_path: Path, fake_demucs_modules) -> None:
    state = demucs_state_dict(**SMALL, causal=True)
    kwargs = dict(sources=SOURCES, N=12, L=8, B=10, H=14, X=3, R=2, causal=True, norm_type="gLN")
    path = write_package(tmp_path / "tasnet.th", fake_demucs_modules["ConvTasNet"], state, **kwargs)
    with pytest.raises(ValueError, match="norm_type 'gln'"):
        converter.build_model(*converter.load_demucs_tasnet(path))


def test_non_release_source_count_gets_generic_names() -> None:
    state = demucs_state_dict(**{**SMALL, "sources": 2})
    assert converter.build_model(state).config.source_names == ["source_1", "source_2"]


def test_unknown_and_missing_keys_are_listed() -> None:
    state = demucs_state_dict(**SMALL)
    state["separator.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"separator\.extra\.weight"):
        converter.build_model(state)
    state = demucs_state_dict(**SMALL)
    del state["separator.network.2.1.2.net.3.net.1.weight"]
    with pytest.raises(
        ValueError, match=r"missing keys .*separator\.blocks\.5\.depthwise_activation\.weight"
    ):
        converter.build_model(state)


# -- demucs packages ----------------------------------------------------------------------------


def test_demucs_package_uses_its_arguments(tmp_path: Path, fake_demucs_modules) -> None:
    state = demucs_state_dict(**SMALL)
    kwargs = dict(
        sources=SOURCES,
        N=12,
        L=8,
        B=10,
        H=14,
        X=3,
        R=2,
        samplerate=22050,
        segment_length=22050 * 6,
        mask_nonlinear="relu",
    )
    path = write_package(tmp_path / "tasnet.th", fake_demucs_modules["ConvTasNet"], state, **kwargs)
    model = converter.build_model(*converter.load_demucs_tasnet(path))
    assert (model.config.sampling_rate, model.config.segment) == (22050, 6.0)
    assert_parity(model, state, (999,))


def test_demucs_package_arguments_must_agree_with_the_tensors(tmp_path: Path, fake_demucs_modules) -> None:
    state = demucs_state_dict(**SMALL)
    path = write_package(
        tmp_path / "tasnet.th",
        fake_demucs_modules["ConvTasNet"],
        state,
        sources=SOURCES,
        N=12,
        L=8,
        B=10,
        H=14,
        X=4,
        R=2,
    )
    with pytest.raises(ValueError, match="X: arguments 4 vs tensors 3"):
        converter.build_model(*converter.load_demucs_tasnet(path))


def test_other_demucs_classes_and_quantized_states_are_refused(tmp_path: Path, fake_demucs_modules) -> None:
    path = write_package(
        tmp_path / "demucs.th", fake_demucs_modules["Demucs"], {"w": torch.zeros(1)}, sources=SOURCES
    )
    with pytest.raises(ValueError, match="demixers convert demucs"):
        converter.load_demucs_tasnet(path)
    path = write_package(
        tmp_path / "quantized.th", fake_demucs_modules["ConvTasNet"], {"compressed": b"\x00"}, sources=SOURCES
    )
    with pytest.raises(ValueError, match="quantized"):
        converter.load_demucs_tasnet(path)


CALLED: list[str] = []


def _record_call(*args: Any) -> str:
    CALLED.append("called")
    return "called"


class _Payload:
    def __reduce__(self):
        return (_record_call, ("payload",))


def test_pickled_callables_are_neither_imported_nor_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.th"
    with open(path, "wb") as file:
        torch.save({"encoder.conv1d_U.weight": torch.zeros(2, 2, 4), "payload": _Payload()}, file)
    CALLED.clear()
    with pytest.raises(ValueError, match="not a state dict"):
        converter.load_demucs_tasnet(path)
    assert CALLED == []
    with pytest.raises(pickle.UnpicklingError):  # sanity: a weights-only load refuses this file
        torch.load(path, weights_only=True)


# -- folders, command line, pipeline ---------------------------------------------------------------


def test_existing_output_needs_overwrite_and_cli_run_works(tmp_path: Path, capsys) -> None:
    torch.save(demucs_state_dict(**SMALL), tmp_path / "tasnet.th")
    out = tmp_path / "out"
    parser = argparse.ArgumentParser()
    converter.configure_parser(parser)
    assert converter.run(parser.parse_args([str(tmp_path / "tasnet.th"), str(out)])) == 0
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(FileExistsError):
        converter.convert_checkpoint(tmp_path / "tasnet.th", out)
    (out / "stale.txt").write_text("old")
    converter.convert_checkpoint(tmp_path / "tasnet.th", out, overwrite=True)
    # issue #14: --overwrite replaces the converter's own files only; files that are not ours stay
    assert (out / "stale.txt").read_text() == "old" and (out / "model.safetensors").is_file()


def test_converted_model_runs_in_the_pipeline(tmp_path: Path) -> None:
    from transformers import pipeline

    torch.save(demucs_state_dict(**SMALL), tmp_path / "tasnet.th")
    folder = converter.convert_checkpoint(tmp_path / "tasnet.th", tmp_path / "out")
    separator = pipeline("audio-source-separation", model=str(folder))
    audio = np.random.default_rng(0).standard_normal((2, 44100 // 4)).astype(np.float32)
    result = separator(audio, sampling_rate=44100)
    assert [item["label"] for item in result] == SOURCES
    assert all(item["audio"].shape == (2, 44100 // 4) for item in result)


@pytest.mark.slow
def test_release_size_conversion(tmp_path: Path) -> None:
    state = demucs_state_dict(**RELEASE)
    torch.save(state, tmp_path / "tasnet.th")
    model = AutoModel.from_pretrained(
        converter.convert_checkpoint(tmp_path / "tasnet.th", tmp_path / "out")
    ).eval()
    config = model.config
    assert (config.encoder_channels, config.encoder_kernel_size, config.bottleneck_channels) == (256, 20, 256)
    assert (config.hidden_channels, config.num_blocks, config.num_repeats) == (512, 10, 4)
    assert sum(p.numel() for p in model.parameters()) == RELEASE_PARAMETERS
    assert_parity(model, state, (11025,))
