"""Convert the released TensorFlow checkpoints of the stacked hourglass separator into a
`save_pretrained` folder.

The release (sungheonpark/music_source_sepearation_SH_net) links two TensorFlow 1 checkpoints,
``mir_1k_checkpoints.zip`` (``checkpoint-15000``) and ``dsd_100_checkpoints.zip``
(``checkpoint-150000``), written by ``tf.train.Saver`` in the V2 "tensor bundle" format:
``<prefix>.index`` (an SSTable mapping variable names to dtype, shape and byte range, blocks
optionally Snappy-compressed) and ``<prefix>.data-00000-of-00001`` (the raw little-endian bytes).
This module reads that format directly, without TensorFlow: nothing in the files is executed.

SRC is the checkpoint prefix (``.../checkpoint-15000``), its ``.index`` file, or a folder holding a
TensorFlow ``checkpoint`` state file (its ``model_checkpoint_path`` is used) or exactly one
``*.index`` file. Variable names are those of the release's ``model.infer`` (``cnv1/weights``,
``0_4_up1/biases``, ``cnv5_0``, ``out_3``, ``tmp_out_2`` ...); optimizer slots (``.../Adam``,
``beta1_power``, ``global_step``) are ignored. Convolution kernels are stored HWIO (height =
frequency bins, width = frames, as the release feeds ``(batch, 512, 64, 1)`` images) and become
PyTorch's OIHW.

The architecture (stacks, hourglass depth, channels, stem widths, number of masks) comes from the
variable shapes. Both releases work at 8 kHz, mono, with a 1024-point STFT, hop 256 and 512 bins
(the defaults). Source names: two masks are ``["accompaniment", "vocals"]`` (MIR-1K, left/right
channel order), four are ``["bass", "drums", "other", "vocals"]`` (the DSD100 training order); pass
``source_names`` otherwise.

Command line: ``demixers convert stacked-hourglass SRC OUT [--source-names a,b] [--overwrite]``.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from demixers.conversion import check_output_dir, check_state_dict, save_model_folder, source_files

from .configuration_stacked_hourglass import StackedHourglassConfig
from .modeling_stacked_hourglass import StackedHourglassForSourceSeparation

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5
# tensorflow DataType enum -> numpy dtype (little endian)
TF_DTYPES = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<i4"),
    4: np.dtype("u1"),
    5: np.dtype("<i2"),
    6: np.dtype("i1"),
    9: np.dtype("<i8"),
    10: np.dtype("?"),
    19: np.dtype("<f2"),
}
DEFAULT_SOURCE_NAMES = {2: ["accompaniment", "vocals"], 4: ["bass", "drums", "other", "vocals"]}
ANCHOR = "cnv1/weights"

# ---------------------------------------------------------------------------------------------
# Snappy, protobuf and SSTable decoding (just what the tensor bundle index needs)
# ---------------------------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def snappy_decompress(data: bytes) -> bytes:
    """Decode a raw Snappy block (the format TensorFlow's table blocks use when compressed)."""
    length, pos = _varint(data, 0)
    out = bytearray()
    while pos < len(data):
        tag = data[pos]
        pos += 1
        kind = tag & 3
        if kind == 0:  # literal
            size = tag >> 2
            if size >= 60:
                extra = size - 59
                size = int.from_bytes(data[pos : pos + extra], "little")
                pos += extra
            size += 1
            out += data[pos : pos + size]
            pos += size
            continue
        if kind == 1:
            size = 4 + ((tag >> 2) & 7)
            offset = ((tag >> 5) << 8) | data[pos]
            pos += 1
        elif kind == 2:
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 2], "little")
            pos += 2
        else:
            size = (tag >> 2) + 1
            offset = int.from_bytes(data[pos : pos + 4], "little")
            pos += 4
        if offset == 0 or offset > len(out):
            raise ValueError("corrupt snappy data (bad copy offset)")
        start = len(out) - offset
        for index in range(size):  # copies may overlap their own output
            out.append(out[start + index])
    if len(out) != length:
        raise ValueError(f"corrupt snappy data: {len(out)} bytes decoded, {length} announced")
    return bytes(out)


def parse_protobuf(data: bytes) -> dict[int, list[Any]]:
    """Fields of a serialized protobuf message: number -> values (ints, or bytes for length-delimited)."""
    fields: dict[int, list[Any]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", data, pos)[0], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = struct.unpack_from("<I", data, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _read_block(data: bytes, offset: int, size: int) -> bytes:
    if offset + size + BLOCK_TRAILER_SIZE > len(data):
        raise ValueError("table block out of range")
    block = data[offset : offset + size]
    compression = data[offset + size]
    if compression == 0:
        return block
    if compression == 1:
        return snappy_decompress(block)
    raise ValueError(f"unsupported table block compression {compression}")


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise ValueError("table block too short")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * restarts
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_size, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + value_size]
        pos += value_size


def read_table(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of an SSTable (LevelDB table format, as TensorFlow writes it)."""
    if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise ValueError("not a TensorFlow checkpoint index (bad table magic number)")
    footer = data[-FOOTER_SIZE:]
    _, pos = _varint(footer, 0)  # metaindex offset
    _, pos = _varint(footer, pos)  # metaindex size
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    for _, handle in _block_entries(_read_block(data, index_offset, index_size)):
        offset, cursor = _varint(handle, 0)
        size, _ = _varint(handle, cursor)
        yield from _block_entries(_read_block(data, offset, size))


# ---------------------------------------------------------------------------------------------
# Tensor bundle
# ---------------------------------------------------------------------------------------------


def resolve_checkpoint_prefix(source: str | os.PathLike) -> Path:
    """The ``<prefix>`` of a V2 checkpoint from a prefix, an ``.index`` file or a folder."""
    source = Path(source)
    if source.is_dir():
        state = source / "checkpoint"
        if state.is_file():
            match = re.search(r'^model_checkpoint_path:\s*"(.*)"\s*$', state.read_text(), re.M)
            if match:
                prefix = Path(match.group(1))
                prefix = prefix if prefix.is_absolute() else source / prefix
                if not Path(f"{prefix}.index").is_file():  # paths of the training machine: keep the name
                    prefix = source / prefix.name
                return resolve_checkpoint_prefix(prefix)
        indexes = sorted(source.glob("*.index"))
        if len(indexes) != 1:
            raise ValueError(
                f"{source}: expected a 'checkpoint' state file or exactly one *.index file, found {indexes}"
            )
        source = indexes[0]
    if source.suffix == ".index":
        source = source.with_suffix("")
    if not Path(f"{source}.index").is_file():
        raise FileNotFoundError(f"no TensorFlow checkpoint at {source} ({source}.index is missing)")
    return source


def read_tensor_bundle(source: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a TensorFlow V2 checkpoint, by variable name, as numpy arrays."""
    prefix = resolve_checkpoint_prefix(source)
    index = Path(f"{prefix}.index").read_bytes()
    entries = dict(read_table(index))
    header = parse_protobuf(entries.pop(b"", b""))
    num_shards = header.get(1, [1])[0]
    if header.get(2, [0])[0] != 0:
        raise ValueError(f"{prefix}: big-endian checkpoints are not supported")
    shards: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for raw_name, raw_entry in entries.items():
        name = raw_name.decode("utf-8")
        entry = parse_protobuf(raw_entry)
        if entry.get(7):
            raise ValueError(f"{prefix}: partitioned variable {name!r} is not supported")
        dtype_code = entry.get(1, [0])[0]
        if dtype_code not in TF_DTYPES:
            continue  # strings, resources ...: not weights
        shape_fields = parse_protobuf(entry[2][0]) if entry.get(2) else {}
        shape = tuple(parse_protobuf(dim).get(1, [0])[0] for dim in shape_fields.get(2, []))
        shard, offset, size = entry.get(3, [0])[0], entry.get(4, [0])[0], entry.get(5, [0])[0]
        dtype = TF_DTYPES[dtype_code]
        if size != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise ValueError(f"{prefix}: {name!r} has {size} bytes for shape {shape} of {dtype}")
        if shard not in shards:
            data_path = Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")
            if not data_path.is_file():
                raise FileNotFoundError(f"missing checkpoint shard {data_path}")
            shards[shard] = data_path.read_bytes()
        if offset + size > len(shards[shard]):
            raise ValueError(f"{prefix}: {name!r} lies beyond the end of shard {shard}")
        tensors[name] = np.frombuffer(
            shards[shard], dtype=dtype, count=size // dtype.itemsize, offset=offset
        ).reshape(shape)
    return tensors


# ---------------------------------------------------------------------------------------------
# Architecture and key mapping
# ---------------------------------------------------------------------------------------------

_STEM = {"cnv1": 0, "cnv2": 1, "cnv2b": 2, "cnv3": 3, "cnv4": 4}


def _strip_prefix(tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    anchors = [name for name in tensors if name.endswith(ANCHOR)]
    if not anchors:
        raise ValueError(f"not a stacked hourglass checkpoint: no '{ANCHOR}' variable")
    prefix = min(anchors, key=len)[: -len(ANCHOR)]
    return {
        name[len(prefix) :]: value
        for name, value in tensors.items()
        if name.startswith(prefix) and re.fullmatch(r"[\w]+/(weights|biases)", name[len(prefix) :])
    }


def _shape(variables: Mapping[str, np.ndarray], name: str) -> tuple[int, ...]:
    if name not in variables:
        raise ValueError(f"the checkpoint lacks '{name}', which the released model has")
    return tuple(variables[name].shape)


def config_kwargs_from_variables(variables: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """`StackedHourglassConfig` fields the weights determine."""
    stacks = sorted(
        {int(m.group(1)) for name in variables if (m := re.fullmatch(r"cnv5_(\d+)/weights", name))}
    )
    if stacks != list(range(len(stacks))) or not stacks:
        raise ValueError(f"stack indices of cnv5_* are not 0..n-1: {stacks}")
    levels = sorted(
        {int(m.group(1)) for name in variables if (m := re.fullmatch(r"0_(\d+)_up1/weights", name))}
    )
    if levels != list(range(1, len(levels) + 1)):
        raise ValueError(f"hourglass levels of 0_*_up1 are not 1..n: {levels}")
    depth = len(levels)
    features = _shape(variables, "cnv4/weights")[3]
    top_in, top_out = _shape(variables, f"0_{depth}_low1/weights")[2:]
    return {
        "num_stacks": len(stacks),
        "hourglass_depth": depth,
        "num_features": features,
        "feature_growth": top_out - top_in,
        "stem_channels": [_shape(variables, "cnv1/weights")[3], _shape(variables, "cnv2/weights")[3]],
        "num_sources": _shape(variables, "out_0/weights")[3],
    }


def map_variable(name: str, depth: int) -> str | None:
    """Our parameter name for a release variable (None when unknown)."""
    match = re.fullmatch(r"(\w+)/(weights|biases)", name)
    if not match:
        return None
    scope, kind = match.groups()
    suffix = "weight" if kind == "weights" else "bias"
    if scope in _STEM:
        return f"network.stem.layers.{_STEM[scope]}.conv.{suffix}"
    if found := re.fullmatch(r"(\d+)_(\d+)_(up1|low1|low2|low3)", scope):
        stack, level, part = int(found.group(1)), int(found.group(2)), found.group(3)
        if not 1 <= level <= depth or (part == "low2" and level != 1):
            return None
        module = f"network.hourglasses.{stack}" + ".inner" * (depth - level)
        child = {"up1": "upper", "low1": "lower_in", "low2": "inner", "low3": "lower_out"}[part]
        return f"{module}.{child}.conv.{suffix}"
    for pattern, target in (
        (r"cnv5_(\d+)", "network.heads.{}.conv"),
        (r"cnv6_(\d+)", "network.heads.{}.proj"),
        (r"out_(\d+)", "network.heads.{}.mask"),
        (r"tmp_(\d+)", "network.merges.{}.feature_proj"),
        (r"tmp_out_(\d+)", "network.merges.{}.mask_proj"),
    ):
        if found := re.fullmatch(pattern, scope):
            return f"{target.format(found.group(1))}.conv.{suffix}"
    return None


def convert_variables(
    variables: Mapping[str, np.ndarray], depth: int
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Renamed float32 tensors (kernels HWIO -> OIHW) and the names that were not recognised."""
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for name, value in variables.items():
        ours = map_variable(name, depth)
        if ours is None:
            unknown.append(name)
            continue
        tensor = torch.from_numpy(np.array(value, dtype=np.float32))
        converted[ours] = tensor.permute(3, 2, 0, 1).contiguous() if tensor.dim() == 4 else tensor
    return converted, unknown


def load_original_model(
    source: str | os.PathLike,
    *,
    source_names: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> StackedHourglassForSourceSeparation:
    """A `StackedHourglassForSourceSeparation` holding the weights of a released TF checkpoint."""
    variables = _strip_prefix(read_tensor_bundle(source))
    kwargs = config_kwargs_from_variables(variables)
    num_sources = kwargs.pop("num_sources")
    if source_names is None:
        if num_sources not in DEFAULT_SOURCE_NAMES:
            raise ValueError(f"the checkpoint predicts {num_sources} masks: pass source_names")
        source_names = DEFAULT_SOURCE_NAMES[num_sources]
    source_names = list(source_names)
    if len(source_names) != num_sources:
        raise ValueError(f"source_names {source_names} do not match the checkpoint's {num_sources} masks")
    kwargs.update(overrides or {})
    config = StackedHourglassConfig(source_names=source_names, **kwargs)
    converted, unexpected = convert_variables(variables, config.hourglass_depth)
    model = StackedHourglassForSourceSeparation(config)
    check_state_dict(
        converted,
        model.state_dict(),
        f"the checkpoint at {source} does not match the stacked hourglass architecture: ",
        unconsumed=unexpected,
    )
    model.load_state_dict(converted, strict=True)
    return model.eval()


def convert_checkpoint(
    source: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    source_names: Sequence[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    """Convert a released TF checkpoint into a `save_pretrained` folder; returns the folder.

    Raises `ValueError` when the checkpoint does not match the architecture and `FileExistsError`
    when ``output_dir`` exists without ``overwrite``.
    """
    output_dir = check_output_dir(output_dir, overwrite)
    model = load_original_model(source, source_names=source_names, overrides=overrides)
    prefix = resolve_checkpoint_prefix(source)
    protected = [*prefix.parent.glob(f"{glob.escape(prefix.name)}.*"), prefix.parent / "checkpoint"]
    if Path(source).is_dir():
        protected += source_files(source)
    return save_model_folder(model, output_dir, overwrite=overwrite, protected=protected)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="SRC", help="TF checkpoint prefix, its .index file, or its folder")
    parser.add_argument("output_dir", metavar="OUT", help="folder to write (save_pretrained layout)")
    parser.add_argument(
        "--source-names",
        default=None,
        help="comma-separated mask names (default: accompaniment,vocals for 2 masks; "
        "bass,drums,other,vocals for 4)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the converted model's files in OUT if it exists"
    )


def run(args: argparse.Namespace) -> int:
    names = None if args.source_names is None else [name.strip() for name in args.source_names.split(",")]
    output = convert_checkpoint(args.source, args.output_dir, overwrite=args.overwrite, source_names=names)
    print(f"wrote {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = [
    "config_kwargs_from_variables",
    "configure_parser",
    "convert_checkpoint",
    "convert_variables",
    "load_original_model",
    "map_variable",
    "parse_protobuf",
    "read_table",
    "read_tensor_bundle",
    "run",
    "snappy_decompress",
]
