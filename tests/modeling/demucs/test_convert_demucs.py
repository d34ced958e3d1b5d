"""The converter's safety and error paths: restricted unpickling, refused formats, CLI."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile

import pytest
import torch

from demixers.modeling.demucs import HTDemucsForSourceSeparation
from demixers.modeling.demucs.convert_demucs_original_to_hf import (
    ClassReference,
    RecordedCall,
    configure_parser,
    load_original,
    load_torch_file,
    run,
)
from tests.modeling.demucs.tiny_configs import tiny_htdemucs_config


class _RunsAShellCommand:
    """Pickles as a call to ``os.system`` (what a malicious checkpoint would hold)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_calling_os_system_executes_nothing_and_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.th"
    torch.save({"klass": _RunsAShellCommand(str(marker)), "state": {"w": torch.zeros(2)}}, path)
    package = load_torch_file(path)
    assert not marker.exists()
    assert isinstance(package["klass"], RecordedCall)
    assert package["klass"].reference.name == "system"
    with pytest.raises(ValueError, match="klass"):
        load_original(path)
    assert not marker.exists()


def test_a_package_naming_an_unknown_class_is_refused(tmp_path) -> None:
    path = tmp_path / "other.th"
    torch.save({"klass": os.system, "args": [], "kwargs": {}, "state": {}}, path)
    package = load_torch_file(path)
    assert isinstance(package["klass"], ClassReference)
    assert package["klass"].qualified_name in ("posix.system", "os.system", "nt.system")
    with pytest.raises(ValueError, match="unsupported model class"):
        load_original(path)


def test_legacy_non_zip_torch_files_are_read(tmp_path) -> None:
    path = tmp_path / "legacy.th"
    tensors = {
        "a": torch.arange(6, dtype=torch.float16).view(2, 3),
        "b": torch.tensor([1, 2], dtype=torch.int64),
    }
    tensors["view"] = tensors["a"][1]
    torch.save(tensors, path, _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    loaded = load_torch_file(path)
    for key, value in tensors.items():
        assert torch.equal(loaded[key], value), key


def test_quantized_checkpoints_are_refused(tmp_path) -> None:
    path = tmp_path / "q.th"
    config_kwargs = {"channels": 8, "depth": 2, "nfft": 128, "t_layers": 0}
    package = {
        "klass": HTDemucsForSourceSeparation,  # only its name is read: ...HTDemucsForSourceSeparation
        "args": [["drums", "bass", "other", "vocals"]],
        "kwargs": config_kwargs,
        "state": {"__quantized": True, "packed": torch.zeros(3, dtype=torch.uint8)},
    }
    torch.save(package, path)
    with pytest.raises(ValueError, match="unsupported model class"):
        load_original(path)
    package["klass"] = "demucs.htdemucs.HTDemucs"
    torch.save(package, path)
    with pytest.raises(ValueError, match="DiffQ"):
        load_original(path)


def test_hf_format_without_metadata_reads_the_json_sidecar(tmp_path) -> None:
    from safetensors.torch import save_file

    config = tiny_htdemucs_config(bottom_channels=0)
    model = HTDemucsForSourceSeparation(config).eval()
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "abcd1234.safetensors")
    )
    kwargs = {
        "channels": 8, "depth": 2, "nfft": 128, "t_layers": 2, "t_heads": 2, "dconv_mode": 3,
        "segment": {"_type": "fraction", "numerator": 1, "denominator": 25}, "samplerate": 44100,
    }  # fmt: skip
    (tmp_path / "abcd1234.json").write_text(
        json.dumps(
            {
                "klass": "demucs.htdemucs.HTDemucs",
                "args": [["drums", "bass", "other", "vocals"]],
                "kwargs": kwargs,
            }
        )
    )
    converted = load_original(tmp_path / "abcd1234.safetensors")
    assert converted.config.segment == 0.04 and converted.config.dconv_mode == 3
    mix = 0.1 * torch.randn(1, 2, 1000)
    with torch.no_grad():
        assert torch.equal(converted(input_values=mix).audio_values, model(input_values=mix).audio_values)


def test_cli_converts_and_reports(tmp_path, capsys) -> None:
    import argparse

    from tests.modeling.demucs.reference_export import export_th

    demucs_htdemucs = pytest.importorskip("demucs.htdemucs")
    torch.manual_seed(0)
    reference = demucs_htdemucs.HTDemucs(
        ["a", "b"], channels=8, depth=2, nfft=128, t_layers=2, t_heads=2, segment=1
    )
    export_th(reference, tmp_path, "ffff0001")
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args([str(tmp_path), str(tmp_path / "out")])
    assert run(args) == 0
    assert "HTDemucsForSourceSeparation" in capsys.readouterr().out
    assert (tmp_path / "out" / "model.safetensors").is_file()
    with pytest.raises(FileExistsError):
        run(args)


def test_checksum_in_the_file_name_is_verified(tmp_path) -> None:
    path = tmp_path / "ffff0002-deadbeef.th"
    buffer = io.BytesIO()
    torch.save({"klass": "demucs.htdemucs.HTDemucs", "state": {}}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(ValueError, match="checksum"):
        load_original(path)


def test_plain_pickles_that_are_not_torch_files_are_refused(tmp_path) -> None:
    path = tmp_path / "x.th"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match=r"torch\.save"):
        load_original(path)
