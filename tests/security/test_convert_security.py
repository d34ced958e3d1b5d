"""`demixers convert` as an attacker and a careless user would use it (issue #14).

* ``--overwrite`` replaces only the files the converter writes: the checkpoint being converted and
  unrelated files in OUT survive, ``OUT=.`` works, a failing conversion leaves OUT as it was, and a
  written name that would replace a source file is refused;
* sizes claimed by a ``torch.save`` file are checked against the bytes present before allocating;
* yaml goes through ``yaml.safe_load``, errors are one line naming the file;
* truncated / missing inputs are one-line errors with exit code 2, never a traceback.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from demixers.cli import main
from demixers.conversion import output as conversion_output
from demixers.conversion import restricted_load
from tests.modeling.conv_tasnet.test_convert_conv_tasnet_demucs import SMALL, demucs_state_dict


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["convert", *argv])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, error: str, *fragments: str) -> None:
    assert code == 2, error
    # transformers' progress bars (\r-updated) share stderr with the error line
    lines = [line for line in error.strip().splitlines() if line.strip() and "it/s]" not in line]
    assert "Traceback" not in error and len(lines) == 1, error
    for fragment in fragments:
        assert fragment in error, error


@pytest.fixture
def tasnet_checkpoint(tmp_path: Path) -> Path:
    folder = tmp_path / "cv"
    folder.mkdir()
    path = folder / "tasnet.th"
    torch.save(demucs_state_dict(**SMALL), path)
    return path


# -- --overwrite never deletes the user's files ------------------------------------------------------


def test_overwrite_into_the_checkpoint_folder_keeps_the_checkpoint(tasnet_checkpoint: Path, capsys) -> None:
    folder = tasnet_checkpoint.parent
    original = tasnet_checkpoint.read_bytes()
    code, error = run_cli(capsys, "demucs-tasnet", str(tasnet_checkpoint), str(folder), "--overwrite")
    assert code == 0, error
    assert tasnet_checkpoint.read_bytes() == original
    assert {"tasnet.th", "config.json", "model.safetensors", "preprocessor_config.json"} <= set(
        snapshot(folder)
    )
    # converting again replaces our files and still keeps the checkpoint
    code, error = run_cli(capsys, "demucs-tasnet", str(tasnet_checkpoint), str(folder), "--overwrite")
    assert code == 0, error
    assert tasnet_checkpoint.read_bytes() == original
    assert not [path.name for path in folder.parent.iterdir() if path.name.startswith(".")]


def test_overwrite_keeps_unrelated_files_and_replaces_ours(
    tasnet_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    (out / "notes").mkdir(parents=True)
    (out / "README.md").write_text("my notes")
    (out / "notes" / "todo.txt").write_text("keep me")
    (out / "config.json").write_text("{}")  # a stale file of ours: replaced
    code, error = run_cli(capsys, "demucs-tasnet", str(tasnet_checkpoint), str(out))
    assert_one_line_error(code, error, "--overwrite")
    code, error = run_cli(capsys, "demucs-tasnet", str(tasnet_checkpoint), str(out), "--overwrite")
    assert code == 0, error
    files = snapshot(out)
    assert files["README.md"] == b"my notes" and files["notes/todo.txt"] == b"keep me"
    assert json.loads(files["config.json"])["model_type"] == "conv_tasnet"
    assert set(files) == {
        "README.md", "notes/todo.txt", "config.json", "model.safetensors", "preprocessor_config.json"
    }  # fmt: skip


def test_output_dot_in_the_checkpoint_folder(tasnet_checkpoint: Path, monkeypatch, capsys) -> None:
    folder = tasnet_checkpoint.parent
    monkeypatch.chdir(folder)
    (folder / "keep.txt").write_text("mine")
    code, error = run_cli(capsys, "demucs-tasnet", "tasnet.th", ".", "--overwrite")
    assert code == 0, error
    from transformers import AutoModel

    import demixers  # noqa: F401  (registers the families with the Auto classes)

    model = AutoModel.from_pretrained(str(folder))
    assert model.config.source_names == ["drums", "bass", "other", "vocals"]
    assert (folder / "keep.txt").read_text() == "mine" and (folder / "tasnet.th").is_file()
    leftovers = [path.name for path in [*folder.iterdir(), *folder.parent.iterdir()] if ".old." in path.name]
    assert leftovers == [] and not [p for p in folder.parent.iterdir() if p.name.startswith(".demixers")]


def test_a_written_name_that_would_replace_a_source_file_is_refused(tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    from demixers.modeling.demucs import HTDemucsForSourceSeparation
    from tests.modeling.demucs.tiny_configs import tiny_htdemucs_config

    folder = tmp_path / "release"
    folder.mkdir()
    model = HTDemucsForSourceSeparation(tiny_htdemucs_config(bottom_channels=0))
    # a member whose signature is "model": the release file is called model.safetensors
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    kwargs = {
        "channels": 8,
        "depth": 2,
        "nfft": 128,
        "t_layers": 2,
        "t_heads": 2,
        "dconv_mode": 3,
        "segment": 0.04,
    }
    sidecar = {
        "klass": "demucs.htdemucs.HTDemucs",
        "args": [["drums", "bass", "other", "vocals"]],
        "kwargs": kwargs,
    }
    (folder / "model.json").write_text(json.dumps(sidecar))
    before = snapshot(folder)
    code, error = run_cli(capsys, "demucs", str(folder / "model.safetensors"), str(folder), "--overwrite")
    assert_one_line_error(code, error, "model.safetensors", "source")
    assert snapshot(folder) == before
    # into another folder it converts
    code, error = run_cli(capsys, "demucs", str(folder / "model.safetensors"), str(tmp_path / "out"))
    assert code == 0, error


def test_a_failing_conversion_leaves_out_exactly_as_it_was(
    tasnet_checkpoint: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    out = tmp_path / "out"
    code, error = run_cli(capsys, "demucs-tasnet", str(tasnet_checkpoint), str(out))
    assert code == 0, error
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)

    # 1. the source cannot be read
    broken = tmp_path / "broken.th"
    broken.write_bytes(tasnet_checkpoint.read_bytes()[:-100])
    parent_before = sorted(path.name for path in tmp_path.iterdir())
    code, error = run_cli(capsys, "demucs-tasnet", str(broken), str(out), "--overwrite")
    assert_one_line_error(code, error, "broken.th")
    assert snapshot(out) == before

    # 2. moving the new files in fails after the first one: the replaced file is put back
    real_move = conversion_output._move
    calls: list[Path] = []

    def failing_move(source: Path, target: Path) -> None:
        calls.append(target)
        if len(calls) == 2:
            raise PermissionError(f"cannot write {target}")
        real_move(source, target)

    monkeypatch.setattr(conversion_output, "_move", failing_move)
    code, error = run_cli(capsys, "demucs-tasnet", str(tasnet_checkpoint), str(out), "--overwrite")
    assert_one_line_error(code, error, "cannot write")
    assert len(calls) == 2
    assert snapshot(out) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == parent_before  # no staging left behind


# -- sizes claimed by a file are checked before allocating ---------------------------------------------


class _Storage:
    """Pickled through persistent_id as a storage claiming ``numel`` float elements."""

    def __init__(self, numel: int) -> None:
        self.numel = numel


class _Tensor:
    def __init__(
        self, storage: _Storage, size: tuple[int, ...], stride: tuple[int, ...], offset: int = 0
    ) -> None:
        self.args = (storage, offset, size, stride, False, OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _CraftingPickler(pickle.Pickler):
    def __init__(self, file, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            if self.legacy:
                return ("storage", torch.FloatStorage, "0", "cpu", obj.numel, None)
            return ("storage", torch.FloatStorage, "0", "cpu", obj.numel)
        return None


def _pickle(obj, legacy: bool = False) -> bytes:
    buffer = io.BytesIO()
    _CraftingPickler(buffer, legacy).dump(obj)
    return buffer.getvalue()


def write_legacy(path: Path, claimed: int, present: int, padding: int = 1 << 20) -> None:
    """A legacy-format torch.save file whose one storage claims ``claimed`` floats and holds ``present``."""
    storage = _Storage(claimed)
    with open(path, "wb") as file:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, file, protocol=2)
        file.write(_pickle({"w": _Tensor(storage, (claimed,), (1,)), "pad": b"\x00" * padding}, legacy=True))
        pickle.dump(["0"], file, protocol=2)
        file.write(claimed.to_bytes(8, "little") + b"\x00" * (4 * present))


def write_zip(path: Path, claimed: int, present: int, size: tuple[int, ...], stride: tuple[int, ...]) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", _pickle({"w": _Tensor(_Storage(claimed), size, stride)}))
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", b"\x00" * (4 * present))


def test_a_legacy_file_claiming_a_huge_storage_is_refused_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "bomb.th"
    write_legacy(path, claimed=2**40, present=4)
    assert path.stat().st_size < 2 * 2**20
    started = time.perf_counter()
    with pytest.raises(ValueError, match=r"bomb\.th.*claims") as error:
        restricted_load(path)
    assert time.perf_counter() - started < 5
    assert len(str(error.value).splitlines()) == 1
    # the same reader accepts an honest file of this layout
    honest = tmp_path / "honest.th"
    write_legacy(honest, claimed=4, present=4, padding=16)
    assert torch.equal(restricted_load(honest)[0]["w"], torch.zeros(4))


def test_claimed_sizes_do_not_allocate_memory(tmp_path: Path) -> None:
    # VmHWM of a fresh process: ru_maxrss would report the parent's peak
    path = tmp_path / "bomb.th"
    write_legacy(path, claimed=2**31, present=4)  # 8 GiB claimed: small enough to be allocated lazily
    script = (
        "import sys\n"
        "from demixers.conversion import restricted_load\n"
        "try:\n"
        f"    restricted_load({str(path)!r})\n"
        "except ValueError as error:\n"
        "    print('refused:', error)\n"
        "peak = [line for line in open('/proc/self/status') if line.startswith('VmHWM')][0]\n"
        "print(int(peak.split()[1]) // 1024)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    refused, peak_mib = result.stdout.strip().splitlines()
    assert refused.startswith("refused:") and "claims" in refused
    assert int(peak_mib) < 1500, result.stdout


@pytest.mark.parametrize(
    ("claimed", "present", "size", "stride", "message"),
    [
        (2**40, 4, (2**40,), (1,), "claims"),  # storage larger than its record
        (4, 4, (2**40,), (1,), "reaches element"),  # view past the end of its storage
        (4, 4, (2**20, 2**20), (0, 0), "repeats a storage"),  # overlapping view of 2**40 elements
        (4, 4, (2,), (1,), None),  # honest
    ],
)
def test_zip_archives_check_storages_and_views(
    tmp_path: Path, claimed: int, present: int, size: tuple, stride: tuple, message: str | None
) -> None:
    path = tmp_path / "crafted.pt"
    write_zip(path, claimed, present, size, stride)
    if message is None:
        assert torch.equal(restricted_load(path)[0]["w"], torch.zeros(2))
        return
    with pytest.raises(ValueError, match=message) as error:
        restricted_load(path)
    assert len(str(error.value).splitlines()) == 1 and "crafted.pt" in str(error.value)


def test_a_zip_record_that_expands_like_a_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.pt"
    numel = 4 << 20  # 16 MiB of zeros deflate to ~16 KiB
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", _pickle({"w": _Tensor(_Storage(numel), (numel,), (1,))}))
        archive.writestr("archive/data/0", b"\x00" * (4 * numel), compress_type=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ValueError, match="zip bomb"):
        restricted_load(path)


def test_the_converters_share_the_checked_reader(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bomb.th"
    write_legacy(path, claimed=2**40, present=4)
    for converter in ("demucs-tasnet", "demucs", "asteroid-conv-tasnet", "asteroid-dprnn-tasnet", "dttnet"):
        code, error = run_cli(capsys, converter, str(path), str(tmp_path / "out"))
        assert_one_line_error(code, error, "bomb.th")
        assert not (tmp_path / "out").exists()


# -- yaml ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "models: !!python/object/apply:os.system ['touch {marker}']\n",
        "models: [a, b\nweights: [[1, 1]]\n",
    ],
)
def test_bag_yaml_errors_are_one_line_and_nothing_runs(tmp_path: Path, capsys, text: str) -> None:
    marker = tmp_path / "executed"
    bag = tmp_path / "bag.yaml"
    bag.write_text(text.format(marker=marker))
    code, error = run_cli(capsys, "demucs", str(bag), str(tmp_path / "out"))
    assert_one_line_error(code, error, "bag.yaml", "yaml")
    assert not marker.exists() and not (tmp_path / "out").exists()


# -- truncated and missing inputs ----------------------------------------------------------------------


def test_truncated_and_missing_inputs_are_one_line_errors(
    tasnet_checkpoint: Path, tmp_path: Path, capsys
) -> None:
    from safetensors.torch import save_file

    tensors = {"first_conv.0.weight": torch.zeros(8, 4, 1, 1), "w": torch.ones(1000)}
    whole = tmp_path / "whole.safetensors"
    save_file(tensors, str(whole))
    truncated = tmp_path / "release" / "abcd.safetensors"
    truncated.parent.mkdir()
    truncated.write_bytes(whole.read_bytes()[:-1000])
    for converter in ("demucs", "dttnet"):
        code, error = run_cli(capsys, converter, str(truncated), str(tmp_path / "out"))
        assert_one_line_error(code, error, "abcd.safetensors")
    mossformer_part = tmp_path / "moss" / "masknet.safetensors"
    mossformer_part.parent.mkdir()
    mossformer_part.write_bytes(whole.read_bytes()[:20])
    code, error = run_cli(capsys, "modelscope-mossformer", str(mossformer_part), str(tmp_path / "out"))
    assert_one_line_error(code, error, "masknet.safetensors")

    zipped = tmp_path / "last.ckpt"
    torch.save({"state_dict": demucs_state_dict(**SMALL)}, zipped)
    data = zipped.read_bytes()
    for cut in (len(data) // 2, len(data) - 30):
        zipped.write_bytes(data[:cut])
        for converter in ("dttnet", "demucs-tasnet", "asteroid-conv-tasnet"):
            code, error = run_cli(capsys, converter, str(zipped), str(tmp_path / "out"))
            assert_one_line_error(code, error, "last.ckpt")

    for converter in ("demucs", "dttnet", "demucs-tasnet", "modelscope-mossformer", "stacked-hourglass"):
        code, error = run_cli(capsys, converter, str(tmp_path / "missing.th"), str(tmp_path / "out"))
        assert_one_line_error(code, error, "missing")
    assert not (tmp_path / "out").exists()
    assert os.listdir(tmp_path / "release") == ["abcd.safetensors"]


# -- no global named by a file is imported or called ---------------------------------------------------


class _Call:
    """Pickles as ``function(*args)``."""

    def __init__(self, function, *args) -> None:
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


def test_named_globals_are_inert_stand_ins_and_allocations_are_not_delegated(tmp_path: Path) -> None:
    import fractions

    from demixers.conversion import ClassReference, OpaqueObject, is_opaque, require_plain

    marker = tmp_path / "executed"
    payload = {
        "system": _Call(os.system, f"touch {marker}"),
        "eval": _Call(eval, f"open({str(marker)!r}, 'w')"),
        "bytes": _Call(bytearray, 2**40),  # would allocate 1 TiB if bytearray were called
        "power": _Call(fractions.Fraction, "1e999999999"),  # would compute 10**999999999
        "fraction": fractions.Fraction(3, 7),
        "klass": OrderedDict,
        "w": torch.ones(2),
    }
    path = tmp_path / "evil.pt"
    torch.save(payload, path)
    started = time.perf_counter()
    with pytest.raises(ValueError, match="Fraction") as error:  # refused, not computed
        restricted_load(path)
    assert time.perf_counter() - started < 5 and len(str(error.value).splitlines()) == 1
    del payload["power"]
    torch.save(payload, path)
    loaded, recorded = restricted_load(path)
    assert not marker.exists()
    for function in ("eval", "bytearray", "system"):  # protocol 2 spells builtins "__builtin__"
        assert any(name.endswith(f".{function}") for name in recorded), recorded
    for key in ("system", "eval", "bytes"):
        assert isinstance(loaded[key], OpaqueObject) and isinstance(loaded[key].reference, ClassReference)
        assert is_opaque(loaded[key])
    assert loaded["bytes"].args == (2**40,)
    assert loaded["fraction"] == fractions.Fraction(3, 7) and torch.equal(loaded["w"], torch.ones(2))
    with pytest.raises(ValueError, match=r"\['system'\] holds a pickled .*system"):
        require_plain({"system": loaded["system"]}, "payload")
