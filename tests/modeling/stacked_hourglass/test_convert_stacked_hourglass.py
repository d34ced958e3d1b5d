"""Conversion of the released TensorFlow checkpoints.

``fixtures/tf_release_tiny`` is a real TensorFlow V2 checkpoint (tensorflow-cpu 2.17.0,
``tf.train.Saver``) of the release's ``infer`` graph at a tiny size (2 stacks, depth 2, 8 channels,
stem 4/8, 2 masks; random weights and biases after one Adam step, so the file also holds the Adam
slots), with a random input and TensorFlow's predictions of every stack; see ``make_tf_fixture.py``.
"""

from __future__ import annotations

import argparse
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from demixers.modeling.stacked_hourglass import StackedHourglassConfig, StackedHourglassForSourceSeparation
from demixers.modeling.stacked_hourglass.convert_stacked_hourglass_original_to_hf import (
    TABLE_MAGIC,
    _block_entries,
    _read_block,
    _varint,
    configure_parser,
    convert_checkpoint,
    load_original_model,
    map_variable,
    read_tensor_bundle,
    run,
    snappy_decompress,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tf_release_tiny"


def _tf_masks() -> tuple[torch.Tensor, torch.Tensor]:
    inputs = torch.from_numpy(np.load(FIXTURE / "inputs.npy")).permute(0, 3, 1, 2)  # NHWC -> N1HW
    expected = torch.from_numpy(np.load(FIXTURE / "expected_masks.npy")).permute(0, 1, 4, 2, 3)
    return inputs, expected  # expected: (stacks, batch, sources, bins, frames)


def test_converted_network_reproduces_tensorflow(tmp_path: Path) -> None:
    model = load_original_model(FIXTURE)
    config = model.config
    assert (config.num_stacks, config.hourglass_depth, config.num_features, config.feature_growth) == (
        2,
        2,
        8,
        0,
    )
    assert config.stem_channels == [4, 8] and config.source_names == ["accompaniment", "vocals"]
    assert (config.sampling_rate, config.n_fft, config.hop_length, config.num_bins) == (8000, 1024, 256, 512)
    inputs, expected = _tf_masks()
    with torch.no_grad():
        masks = model.network(inputs)
    assert len(masks) == 2
    for mask, reference in zip(masks, expected, strict=True):
        scale = float(reference.abs().max())
        assert scale > 1.0
        torch.testing.assert_close(mask, reference, atol=2e-6 * scale, rtol=1e-5)


def test_reader_returns_every_variable_with_its_tensorflow_layout() -> None:
    tensors = read_tensor_bundle(FIXTURE / "checkpoint-1.index")
    assert tensors["cnv1/weights"].shape == (7, 7, 1, 4) and tensors["cnv1/weights"].dtype == np.float32
    assert tensors["tmp_out_0/weights"].shape == (1, 1, 2, 8)
    assert "0_1_low2/biases" in tensors and "1_2_low2/biases" not in tensors  # bottom conv only at level 1
    assert int(tensors["global_step"]) == 1 and "cnv1/weights/Adam_1" in tensors
    weights = [name for name in tensors if name.endswith("/weights")]
    # stem 5 + per stack (2 levels x 3 + 1 bottom + 3 head) + 2 merges
    assert len(weights) == 5 + 2 * 10 + 2 and len(tensors) == 3 * 2 * len(weights) + 3


def test_cli_writes_a_loadable_folder(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    out = tmp_path / "sh"
    assert run(parser.parse_args([str(FIXTURE), str(out), "--source-names", "music,voice"])) == 0
    model = StackedHourglassForSourceSeparation.from_pretrained(out).eval()
    assert model.config.source_names == ["music", "voice"]
    reference = load_original_model(FIXTURE)
    for key, value in reference.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    with pytest.raises(FileExistsError):
        convert_checkpoint(FIXTURE, out)
    with pytest.raises(ValueError, match="source_names"):
        convert_checkpoint(FIXTURE, tmp_path / "other", source_names=["bass", "drums", "other"])
    with pytest.raises(FileNotFoundError):
        convert_checkpoint(tmp_path / "nothing-here", tmp_path / "other")


def test_release_variable_names_cover_the_default_architecture() -> None:
    """The release's variables (as `model.infer` names them, 4 stacks, depth 4, 256 channels) map
    one-to-one onto the default model, with the transposed shapes."""
    release: dict[str, tuple[int, ...]] = {}

    def add(scope: str, kh: int, ci: int, co: int) -> None:
        release[f"{scope}/weights"] = (kh, kh, ci, co)
        release[f"{scope}/biases"] = (co,)

    for scope, kh, ci, co in (
        ("cnv1", 7, 1, 64),
        ("cnv2", 3, 64, 128),
        ("cnv2b", 3, 128, 128),
        ("cnv3", 3, 128, 128),
        ("cnv4", 3, 128, 256),
    ):
        add(scope, kh, ci, co)
    for stack in range(4):
        for level in range(4, 0, -1):
            for part in ("up1", "low1", "low3") + (("low2",) if level == 1 else ()):
                add(f"{stack}_{level}_{part}", 3, 256, 256)
        add(f"cnv5_{stack}", 3, 256, 256)
        add(f"cnv6_{stack}", 1, 256, 256)
        add(f"out_{stack}", 1, 256, 2)
        if stack < 3:
            add(f"tmp_{stack}", 1, 256, 256)
            add(f"tmp_out_{stack}", 1, 2, 256)
    ours = StackedHourglassForSourceSeparation(StackedHourglassConfig()).state_dict()
    mapped = {map_variable(name, 4): shape for name, shape in release.items()}
    assert None not in mapped and len(mapped) == len(release) == len(ours)
    for key, shape in mapped.items():
        expected = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape
        assert tuple(ours[key].shape) == expected, key
    assert map_variable("2_1_low2/biases", 4) == "network.hourglasses.2.inner.inner.inner.inner.conv.bias"
    assert map_variable("2_3_low1/weights", 4) == "network.hourglasses.2.inner.lower_in.conv.weight"
    assert map_variable("2_3_low2/weights", 4) is None and map_variable("cnv1/weights/Adam", 4) is None


# -- format details ------------------------------------------------------------------------------


def test_snappy_known_answer() -> None:
    # "abcd" literal, copy(offset 4, len 8) with a 1-byte offset, "xyz" literal, copy(offset 3, len 5)
    # with a 2-byte offset (overlapping its own output), a 61-byte literal, copy(offset 70, len 4) 4-byte
    long_literal = bytes(range(61))
    stream = (
        bytes([4 + 8 + 3 + 5 + 61 + 4])  # uncompressed length (85, one varint byte)
        + bytes([(4 - 1) << 2])
        + b"abcd"
        + bytes([1 | ((8 - 4) << 2) | (0 << 5), 4])
        + bytes([(3 - 1) << 2])
        + b"xyz"
        + bytes([2 | ((5 - 1) << 2)])
        + struct.pack("<H", 3)
        + bytes([60 << 2, 61 - 1])
        + long_literal
        + bytes([3 | ((4 - 1) << 2)])
        + struct.pack("<I", 70)
    )
    expected = b"abcd" + b"abcdabcd" + b"xyz" + b"xyzxy" + long_literal
    expected += expected[len(expected) - 70 : len(expected) - 66]
    assert snappy_decompress(stream) == expected
    with pytest.raises(ValueError, match="snappy"):
        snappy_decompress(bytes([10, 1 | (4 << 2), 9]))  # copy before any output


def _snappy_literal(data: bytes) -> bytes:
    """A valid Snappy stream made of literals only (what a compressor may emit for random data)."""
    out, value = bytearray(), len(data)
    while True:  # varint length preamble
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            break
    for start in range(0, len(data), 65536):
        chunk = data[start : start + 65536]
        out += bytes([61 << 2]) + struct.pack("<H", len(chunk) - 1) + chunk
    return bytes(out)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        out.append((value & 0x7F) | (0x80 if value > 0x7F else 0))
        value >>= 7
        if not value:
            return bytes(out)


def test_snappy_compressed_table_blocks_are_read(tmp_path: Path) -> None:
    """Rewrite the fixture's index with Snappy-compressed data blocks (TensorFlow's table writer
    compresses a block when that saves space) and read the same tensors back."""
    index = (FIXTURE / "checkpoint-1.index").read_bytes()
    footer = index[-48:]
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    rewritten, index_entries = bytearray(), []
    for key, handle in _block_entries(_read_block(index, index_offset, index_size)):
        offset, cursor = _varint(handle, 0)
        size, _ = _varint(handle, cursor)
        assert index[offset + size] == 0  # TensorFlow 2.17 wrote it uncompressed
        compressed = _snappy_literal(index[offset : offset + size])
        index_entries.append((key, _encode_varint(len(rewritten)) + _encode_varint(len(compressed))))
        rewritten += compressed + b"\x01\x00\x00\x00\x00"  # compression type 1 (snappy), crc unchecked
    block = bytearray()
    for key, value in index_entries:
        block += _encode_varint(0) + _encode_varint(len(key)) + _encode_varint(len(value)) + key + value
    block += struct.pack("<II", 0, 1)  # one restart point at 0
    new_index_offset = len(rewritten)
    rewritten += block + b"\x00\x00\x00\x00\x00"
    handles = (_encode_varint(new_index_offset) + _encode_varint(len(block))) * 2
    rewritten += handles.ljust(40, b"\x00") + struct.pack("<Q", TABLE_MAGIC)
    target = tmp_path / "compressed"
    target.mkdir()
    (target / "model.ckpt-1.index").write_bytes(bytes(rewritten))
    shutil.copy(FIXTURE / "checkpoint-1.data-00000-of-00001", target / "model.ckpt-1.data-00000-of-00001")
    original, compressed = read_tensor_bundle(FIXTURE), read_tensor_bundle(target)
    assert sorted(original) == sorted(compressed)
    for name, value in original.items():
        assert np.array_equal(value, compressed[name]), name
    (target / "model.ckpt-1.index").write_bytes(bytes(rewritten[:-8]) + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic"):
        read_tensor_bundle(target)
