"""`demixers prepare` treats a corpus as untrusted input and never loses the user's files (issue #14).

Each test reproduces one attack or accident that succeeded before the fix:

* metadata listing files outside the corpus root (absolute paths, ``../``, symlinks) was read and
  stored in the dataset (and pushed to the Hub);
* ``--overwrite`` deleted the whole output folder before building, unrelated files included, and a
  failed rebuild left a half-replaced dataset; other settings replaced a dataset without ``--overwrite``;
* a broken CSV or a full disk ended in a traceback instead of one line and an exit code;
* a header claiming millions of frames made the reader allocate them up front.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from datasets import Dataset, DatasetDict, load_from_disk

from demixers.datasets_scripts import prepare as prepare_module
from demixers.datasets_scripts.audio import decode_bytes, read_pcm
from demixers.datasets_scripts.prepare import prepare_corpus
from tests.datasets_scripts import corpus_factory as factory

MODE_DIR = Path("Libri2Mix") / "wav8k" / "min"


def _librimix(tmp_path: Path) -> tuple[Path, Path]:
    root = factory.make_librimix(tmp_path / "corpus", splits=("dev",), items_per_split=3)
    return root, root / MODE_DIR / "metadata" / "mixture_dev_mix_clean.csv"


def _rewrite_csv(csv_path: Path, line: int, column: str, value: str) -> str:
    """Set ``column`` of data row ``line`` (0-based) to ``value``; return that row's mixture id."""
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows[line][column] = value
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows[line]["mixture_ID"]


def _secret_copy(tmp_path: Path, of: Path) -> Path:
    """A file outside the corpus that would pass every check (a copy of a real corpus file)."""
    secret = tmp_path / "elsewhere" / "secret.wav"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(of.read_bytes())
    return secret


def _digest(dataset: DatasetDict) -> dict[str, str]:
    """Per split: a hash of the ids, columns and audio bytes (to show a dataset did not change)."""
    digests = {}
    for split, part in dataset.items():
        digest = hashlib.sha256(repr(part.column_names).encode())
        for row in part:
            digest.update(row["id"].encode())
            for column in part.column_names:
                if isinstance(row[column], dict) and "bytes" in row[column]:
                    digest.update(row[column]["bytes"])
        digests[split] = digest.hexdigest()
    return digests


# ------------------------------------------------------------------------------ files outside the root


def test_absolute_path_outside_the_root_is_refused_and_named(tmp_path: Path) -> None:
    root, csv_path = _librimix(tmp_path)
    listed = root / MODE_DIR / "dev" / "mix_clean"
    first = sorted(listed.iterdir())[0]
    secret = _secret_copy(tmp_path, first)
    item = _rewrite_csv(csv_path, 0, "mixture_path", str(secret))
    with pytest.raises(ValueError, match="outside its root") as error:
        prepare_corpus("librimix", root, tmp_path / "out", progress=False)
    message = str(error.value)
    assert f"validation/{item} mixture={secret}" in message and "--allow-outside-root" in message
    assert "\n" not in message
    assert not (tmp_path / "out").exists()  # refused before anything is written

    dataset = prepare_corpus("librimix", root, tmp_path / "out", allow_outside_root=True, progress=False)
    assert item in dataset["validation"]["id"]


def test_dotdot_path_outside_the_root_is_refused(tmp_path: Path) -> None:
    root, csv_path = _librimix(tmp_path)
    secret = _secret_copy(tmp_path, sorted((root / MODE_DIR / "dev" / "s1").iterdir())[1])
    relative = os.path.relpath(secret, root / MODE_DIR)
    assert relative.startswith("..")
    item = _rewrite_csv(csv_path, 1, "source_1_path", relative)
    with pytest.raises(ValueError, match=rf"1 file\(s\).*validation/{item} s1=.*secret\.wav"):
        prepare_corpus("librimix", root, tmp_path / "out", progress=False)


def test_symlink_out_of_the_root_is_refused_but_one_inside_is_allowed(tmp_path: Path) -> None:
    root, _ = _librimix(tmp_path)
    s2_files = sorted((root / MODE_DIR / "dev" / "s2").iterdir())
    # inside: s2 of item 0 is a link to a copy kept elsewhere in the corpus
    kept = root / "kept" / s2_files[0].name
    kept.parent.mkdir()
    kept.write_bytes(s2_files[0].read_bytes())
    s2_files[0].unlink()
    s2_files[0].symlink_to(kept)
    dataset = prepare_corpus("librimix", root, tmp_path / "inside", progress=False)
    assert len(dataset["validation"]) == 3

    # outside: s2 of item 2 links to a file out of the corpus
    secret = _secret_copy(tmp_path, s2_files[2])
    s2_files[2].unlink()
    s2_files[2].symlink_to(secret)
    with pytest.raises(ValueError, match=rf"validation/{s2_files[2].stem} s2="):
        prepare_corpus("librimix", root, tmp_path / "outside", progress=False)


def test_many_outside_files_are_counted(tmp_path: Path, monkeypatch) -> None:
    root, csv_path = _librimix(tmp_path)
    monkeypatch.setattr(prepare_module, "MAX_LISTED_INLINE", 2)
    secret = _secret_copy(tmp_path, sorted((root / MODE_DIR / "dev" / "s1").iterdir())[0])
    items = [_rewrite_csv(csv_path, line, "source_1_path", str(secret)) for line in range(3)]
    with pytest.raises(ValueError, match=r"3 file\(s\).* and 1 more;") as error:
        prepare_corpus("librimix", root, tmp_path / "out", progress=False)
    assert all(f"validation/{item}" in str(error.value) for item in items[:2])


def test_cli_refuses_outside_files_in_one_line_and_opts_in(tmp_path: Path, capsys) -> None:
    from demixers.cli import main

    root, csv_path = _librimix(tmp_path)
    secret = _secret_copy(tmp_path, sorted((root / MODE_DIR / "dev" / "mix_clean").iterdir())[0])
    _rewrite_csv(csv_path, 0, "mixture_path", str(secret))
    assert main(["prepare", "librimix", str(root), "-o", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("demixers prepare: error: librimix: 1 file(s)") and "\n" not in error
    argv = ["prepare", "librimix", str(root), "-o", str(tmp_path / "out"), "--allow-outside-root"]
    assert main(argv) == 0


# --------------------------------------------------------------------------- nothing of the user's lost


def test_failed_rebuild_leaves_the_old_dataset_intact(tmp_path: Path, monkeypatch) -> None:
    root = factory.make_wham(tmp_path / "wham", items_per_split=1)
    output = tmp_path / "out"
    before = _digest(prepare_corpus("wham", root, output, progress=False))
    real_save = Dataset.save_to_disk
    saved: list[str] = []

    def disk_full_on_second_split(self, path, *args, **kwargs):
        if saved:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        saved.append(str(path))
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_to_disk", disk_full_on_second_split)
    with pytest.raises(OSError, match="No space left"):
        prepare_corpus("wham", root, output, mix_type="mix_clean", overwrite=True, progress=False)
    assert _digest(load_from_disk(str(output))) == before
    assert [p.name for p in tmp_path.iterdir() if "demixers-" in p.name] == []  # no staging left behind

    # the old dataset is still the prepared one; the new one can be built once there is room
    monkeypatch.setattr(Dataset, "save_to_disk", real_save)
    assert _digest(prepare_corpus("wham", root, output, progress=False)) == before
    rebuilt = prepare_corpus("wham", root, output, mix_type="mix_clean", overwrite=True, progress=False)
    assert "noise" not in rebuilt["train"].column_names


def test_overwrite_keeps_files_that_are_not_the_dataset(tmp_path: Path) -> None:
    root = factory.make_mir1k(tmp_path / "m")
    output = tmp_path / "out"
    # a dataset saved there by someone else, next to the user's own files
    DatasetDict({"old_split": Dataset.from_dict({"x": [1, 2]})}).save_to_disk(str(output))
    (output / "notes.txt").write_text("mine")
    (output / "results").mkdir()
    (output / "results" / "scores.csv").write_text("1,2")
    dataset = prepare_corpus("mir1k", root, output, overwrite=True, progress=False)
    assert "mixture" in dataset["test"].column_names
    assert (output / "notes.txt").read_text() == "mine"
    assert (output / "results" / "scores.csv").read_text() == "1,2"
    assert not (output / "old_split").exists()  # the replaced dataset's split is gone, not kept beside


def test_other_settings_without_overwrite_are_a_one_line_error(tmp_path: Path) -> None:
    root = factory.make_wham(tmp_path / "wham", items_per_split=1)
    output = tmp_path / "out"
    before = _digest(prepare_corpus("wham", root, output, progress=False))
    with pytest.raises(ValueError) as error:
        prepare_corpus("wham", root, output, mix_type="mix_clean", progress=False)
    message = str(error.value)
    assert "mix_type: default then, 'mix_clean' now" in message and "--overwrite" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match="shard_size: 500 then, 7 now"):
        prepare_corpus("wham", root, output, shard_size=7, progress=False)
    assert _digest(load_from_disk(str(output))) == before


# ----------------------------------------------------------------------------- one line, exit 2 or 1


def test_full_disk_is_one_line_and_exit_1(tmp_path: Path, monkeypatch, capsys) -> None:
    from demixers.cli import main

    root = factory.make_wsj0mix(tmp_path / "wsj", items_per_split=1)

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(Dataset, "save_to_disk", full)
    assert main(["prepare", "wsj0-2mix", str(root), "-o", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "the disk is full" in error and str(tmp_path) in error


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("binary", "is not a readable CSV file ('utf-8' codec can't decode"),
        ("huge", "is not a readable CSV file (field larger than field limit"),
        ("length", "line 2: length 'abc' is not a number"),
        ("short", "line 2 has too few fields"),
    ],
)
def test_broken_metadata_csv_is_one_line_naming_the_file(tmp_path: Path, capsys, damage, expected) -> None:
    from demixers.cli import main

    root, csv_path = _librimix(tmp_path)
    text = csv_path.read_text(encoding="utf-8").splitlines()
    if damage == "binary":
        csv_path.write_bytes(b"\xff\xfe\x00" + os.urandom(64))
    elif damage == "huge":
        text[1] = text[1] + "," + "x" * 200_000
    elif damage == "length":
        text[1] = text[1].rsplit(",", 1)[0] + ",abc"
    else:
        text[1] = text[1].split(",")[0]
    if damage != "binary":
        csv_path.write_text("\n".join(text) + "\n", encoding="utf-8")
    assert main(["prepare", "librimix", str(root), "-o", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and str(csv_path) in error and expected in error


# ----------------------------------------------------------------- sizes claimed by a file not trusted


def _flac_claiming(frames_present: int, frames_claimed: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(
        buffer, (np.arange(frames_present) % 100).astype(np.int16), 8000, format="FLAC", subtype="PCM_16"
    )
    data = bytearray(buffer.getvalue())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO first: total samples in bytes 18..25
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | frames_claimed  # the low 36 bits hold the total sample count
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def _peak_bytes(function) -> int:
    tracemalloc.start()
    try:
        # refusing the lying file is fine; allocating what it claims is not
        with contextlib.suppress(ValueError):
            function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_readers_do_not_preallocate_what_a_header_claims(tmp_path: Path) -> None:
    lying = _flac_claiming(1000, 50_000_000)  # 100 MB of int16 claimed, 2 kB present
    assert sf.info(io.BytesIO(lying)).frames == 50_000_000
    path = tmp_path / "lying.flac"
    path.write_bytes(lying)
    assert _peak_bytes(lambda: read_pcm(path)) < 10 * 2**20
    assert _peak_bytes(lambda: decode_bytes(lying)) < 10 * 2**20

    honest = tmp_path / "honest.flac"
    honest.write_bytes(_flac_claiming(200_000, 200_000))  # several blocks
    pcm = read_pcm(honest)
    np.testing.assert_array_equal(pcm.samples[:, 0], (np.arange(200_000) % 100).astype(np.int16))
    samples, rate = decode_bytes(honest.read_bytes(), 70_000, 140_001)
    assert rate == 8000 and samples.shape == (1, 70_001)
    np.testing.assert_array_equal(samples[0] * 2**15, (np.arange(70_000, 140_001) % 100).astype(np.float32))


def test_dataset_of_an_older_version_is_still_recognised_after_a_failed_rebuild(
    tmp_path: Path, monkeypatch
) -> None:
    root = factory.make_wham(tmp_path / "wham", items_per_split=1)
    output = tmp_path / "out"
    before = _digest(prepare_corpus("wham", root, output, progress=False))
    (output / ".demixers_prepare" / "dataset.json").unlink()  # as written before dataset.json existed

    def fail(task):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(prepare_module, "_build_shard", fail)
    with pytest.raises(OSError):
        prepare_corpus("wham", root, output, mix_type="mix_clean", overwrite=True, progress=False)
    # the finished dataset is returned as it is, without building anything
    assert _digest(prepare_corpus("wham", root, output, progress=False)) == before


def test_split_names_in_a_saved_dataset_cannot_reach_outside_the_output(tmp_path: Path) -> None:
    root = factory.make_mir1k(tmp_path / "m")
    output = tmp_path / "out"
    DatasetDict({"train": Dataset.from_dict({"x": [1]})}).save_to_disk(str(output))
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    dataset_dict = output / "dataset_dict.json"
    dataset_dict.write_text('{"splits": ["train", "../victim", "/tmp", ".demixers_prepare"]}')
    assert prepare_module.dataset_entries(output) == ["dataset_dict.json", "train"]
    prepare_corpus("mir1k", root, output, overwrite=True, progress=False)
    assert (victim / "keep.txt").read_text() == "mine"
