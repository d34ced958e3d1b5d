"""The one reader of ``torch.save`` files for the converters: tensors and plain containers, nothing else.

Official checkpoints are pickles, and a pickle is a program: ``torch.load(weights_only=False)``
runs whatever it names. This module never imports a module or calls a callable named by a file.
`RestrictedUnpickler` resolves a short whitelist of globals (tensor and parameter rebuilding,
storage types, dtypes, ``torch.Size``, ``OrderedDict``, a checked ``Fraction``, a few inert
builtins) to local implementations; every other global becomes an inert stand-in class (an
instance of `ClassReference`, a subclass of `OpaqueObject`) that only records its qualified name,
and "calling" or rebuilding it only records the arguments and state the pickle hands it. Callers
then refuse any stand-in that ends up where they need data (see `require_plain`).

Sizes claimed by the file are not trusted. Before anything is allocated, each storage's claimed
byte count (elements x element size) is checked against the bytes actually present (the zip
record, or what is left of a legacy file), each tensor view's offset/shape/stride against its
storage, and every zip record's claimed size against its compressed size, so that a small crafted
file cannot make the reader allocate gigabytes. Every failure is a one-line `ValueError` naming the
file.

Both formats of ``torch.save`` are read: the zip archive (PyTorch >= 1.6) and the legacy
sequential pickle format (``_use_new_zipfile_serialization=False``, the demucs v2 ``.th`` files).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import torch

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
# torch.save writes its records uncompressed; deflated weights shrink little, so a record claiming
# to expand more than this is a zip bomb rather than a checkpoint
MAX_ZIP_EXPANSION = 16
# a view may overlap itself (an expanded buffer): allowed up to its storage's size or this many elements
MAX_OVERLAPPING_VIEW_ELEMENTS = 1 << 20
MAX_FRACTION_DIGITS = 64

_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}


class CheckpointFormatError(pickle.UnpicklingError):
    """The file is not a readable ``torch.save`` file, or claims more data than it holds."""


# -- inert stand-ins ----------------------------------------------------------------------------


class ClassReference(type):
    """Metaclass of the stand-ins: a global named by a pickle that was deliberately not imported.

    Each stand-in is a fresh class (a type, so the pickle's NEWOBJ can build it) that knows only
    its `module`, `name` and `qualified_name`.
    """

    module: str
    name: str

    @property
    def qualified_name(cls) -> str:
        return f"{cls.module}.{cls.name}" if cls.module else cls.name

    def __repr__(cls) -> str:
        return f"ClassReference({cls.qualified_name!r})"


class OpaqueObject(metaclass=ClassReference):
    """What a pickle built from a stand-in: the recorded `args`, `kwargs`, `state` and `items`.

    Nothing is executed: construction (REDUCE, NEWOBJ) records its arguments, BUILD records the
    state, APPEND(S)/SETITEM(S) record the items (pairs for SETITEM).
    """

    module = ""
    name = "OpaqueObject"

    def __new__(cls, *args: Any, **kwargs: Any) -> OpaqueObject:
        instance = object.__new__(cls)
        instance.args = args
        instance.kwargs = kwargs
        instance.state = None
        instance.items = []
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # the arguments were recorded by __new__
        pass

    @property
    def reference(self) -> ClassReference:
        """The stand-in class this object was built from (which global the pickle called)."""
        return type(self)

    @property
    def qualified_name(self) -> str:
        return type(self).qualified_name

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def append(self, item: Any) -> None:
        self.items.append(item)

    def extend(self, items: Any) -> None:
        self.items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def __repr__(self) -> str:
        return f"<opaque {self.qualified_name}>"


def opaque_class(qualified_name: str) -> ClassReference:
    """A fresh stand-in class for the global ``qualified_name`` (``module.name``)."""
    module, _, name = qualified_name.rpartition(".")
    return ClassReference(name or "Opaque", (OpaqueObject,), {"module": module, "name": name})


def is_opaque(value: Any, qualified_name: str | None = None) -> bool:
    """Whether ``value`` is a stand-in (the class or an object built from it), optionally for one name."""
    cls = value if isinstance(value, type) else type(value)
    if not isinstance(cls, ClassReference):
        return False
    return qualified_name is None or cls.qualified_name == qualified_name


# -- whitelisted globals ------------------------------------------------------------------------


class _StorageType:
    """Stands for ``torch.FloatStorage`` & co. in persistent ids: only the dtype is used."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _check_view(storage: torch.Tensor, offset: Any, size: Any, stride: Any) -> None:
    if not isinstance(offset, int) or offset < 0:
        raise CheckpointFormatError(f"tensor storage offset {offset!r} is not a non-negative integer")
    if not all(isinstance(dim, int) and dim >= 0 for dim in size):
        raise CheckpointFormatError(f"tensor shape {tuple(size)!r} is not non-negative integers")
    if len(stride) != len(size) or not all(isinstance(step, int) and step >= 0 for step in stride):
        raise CheckpointFormatError(f"tensor stride {tuple(stride)!r} does not fit the shape {tuple(size)!r}")
    numel = 1
    for dim in size:
        numel *= dim
    if numel == 0:
        return
    last = offset + sum((dim - 1) * step for dim, step in zip(size, stride, strict=True))
    if last >= storage.numel():
        raise CheckpointFormatError(
            f"a tensor of shape {tuple(size)} (offset {offset}, stride {tuple(stride)}) reaches element "
            f"{last} of a storage holding {storage.numel()}"
        )
    if numel > max(storage.numel(), MAX_OVERLAPPING_VIEW_ELEMENTS):
        raise CheckpointFormatError(
            f"a tensor of shape {tuple(size)} repeats a storage of {storage.numel()} elements "
            f"{numel // max(storage.numel(), 1)} times"
        )


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *unused: Any) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor):
        raise CheckpointFormatError("tensor data is not a storage")
    size, stride = tuple(size), tuple(stride)
    _check_view(storage, storage_offset, size, stride)
    return storage.as_strided(size, stride, storage_offset)


def _rebuild_parameter(data: Any, *unused: Any) -> Any:
    return data


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # protocol-2 pickles store bytes as _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8", "ascii"):
        raise CheckpointFormatError("_codecs.encode is only accepted for a string and a text encoding")
    return text.encode(encoding)


_FRACTION = re.compile(rf"-?\d{{1,{MAX_FRACTION_DIGITS}}}(/\d{{1,{MAX_FRACTION_DIGITS}}})?")


def _fraction(numerator: Any = 0, denominator: Any = None) -> Fraction:
    """``Fraction`` limited to what pickles store (``"n/d"`` strings, small ints): ``Fraction("1e999999999")``
    would compute a gigantic power of ten."""
    if isinstance(numerator, str) and denominator is None and _FRACTION.fullmatch(numerator.strip()):
        return Fraction(numerator.strip())
    values = (numerator,) if denominator is None else (numerator, denominator)
    if all(isinstance(value, int) and abs(value).bit_length() <= 4 * MAX_FRACTION_DIGITS for value in values):
        return Fraction(*values)
    raise CheckpointFormatError(f"refused fractions.Fraction arguments {values!r:.80}")


_PLAIN_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("fractions", "Fraction"): _fraction,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
}

StorageLoader = Callable[[torch.dtype, str, int, Any], torch.Tensor]


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for ``torch.save`` data that rebuilds tensors and containers and nothing else.

    ``load_storage(dtype, key, numel, view)`` supplies the storages the pickle refers to (None: the
    pickle may not refer to any). `references` lists the stand-ins made for unknown globals, in
    the order they were met; `recorded` holds their qualified names.
    """

    def __init__(self, file: BinaryIO, load_storage: StorageLoader | None = None) -> None:
        super().__init__(file)
        self._load_storage = load_storage
        self.references: list[ClassReference] = []
        self._stand_ins: dict[tuple[str, str], ClassReference] = {}

    @property
    def recorded(self) -> set[str]:
        return {reference.qualified_name for reference in self.references}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN_GLOBALS:
            return _PLAIN_GLOBALS[module, name]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) not in self._stand_ins:
            stand_in = opaque_class(f"{module}.{name}" if module else name)
            self._stand_ins[module, name] = stand_in
            self.references.append(stand_in)
        return self._stand_ins[module, name]

    def persistent_load(self, saved_id: Any) -> Any:
        if not isinstance(saved_id, tuple) or len(saved_id) < 5 or saved_id[0] != "storage":
            raise CheckpointFormatError(f"unsupported persistent id {saved_id!r:.80}")
        if self._load_storage is None:
            raise CheckpointFormatError("a tensor storage where none is expected")
        storage_type, key, _location, numel = saved_id[1:5]
        view = saved_id[5] if len(saved_id) > 5 else None
        if not isinstance(storage_type, _StorageType):
            raise CheckpointFormatError(f"unsupported storage type {storage_type!r:.80}")
        if not isinstance(numel, int) or numel < 0:
            raise CheckpointFormatError(f"storage {key!r:.40} claims {numel!r:.40} elements")
        return self._load_storage(storage_type.dtype, str(key), numel, view)


# -- files ------------------------------------------------------------------------------------


class _BoundedReader(io.RawIOBase):
    """A file view that never hands out more than is left: CPython's buffered ``read(n)``
    allocates ``n`` bytes up front, and ``n`` comes from the pickle."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        super().__init__()
        self._file = file
        self._size = size

    def remaining(self) -> int:
        return self._size - self._file.tell()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        left = max(self.remaining(), 0)
        return self._file.read(left if size is None or size < 0 else min(size, left))

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
        left = max(self.remaining(), 0)
        return self._file.readline(left if size is None or size < 0 else min(size, left))


def _read_record(archive: zipfile.ZipFile, name: str, archive_size: int, path: Path) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise CheckpointFormatError(f"the archive has no record {name}") from None
    if info.compress_size > archive_size:
        raise CheckpointFormatError(
            f"record {name} claims {info.compress_size} bytes but the file holds {archive_size} (truncated?)"
        )
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_ZIP_EXPANSION * max(
        info.compress_size, 1
    ):
        raise CheckpointFormatError(
            f"record {name} claims to expand {info.compress_size} bytes to {info.file_size} "
            "(a zip bomb, not a checkpoint)"
        )
    if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
        raise CheckpointFormatError(
            f"record {name} claims {info.file_size} bytes but stores {info.compress_size}"
        )
    return archive.read(info)


def _load_zip(path: Path) -> tuple[Any, RestrictedUnpickler]:
    archive_size = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [
            name
            for name in names
            if name == "data.pkl" or (name.endswith("/data.pkl") and name.count("/") == 1)
        ]
        if len(pickles) != 1:
            raise CheckpointFormatError(
                f"not a torch.save archive (expected one <name>/data.pkl, found {pickles[:5]})"
            )
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in names:
            byteorder = _read_record(archive, f"{prefix}byteorder", archive_size, path).strip()
            if byteorder != b"little":
                raise CheckpointFormatError("big-endian checkpoints are not supported")
        storages: dict[tuple[str, torch.dtype], torch.Tensor] = {}

        def load_storage(dtype: torch.dtype, key: str, numel: int, view: Any) -> torch.Tensor:
            if (key, dtype) in storages:
                return storages[key, dtype]
            record = f"{prefix}data/{key}"
            try:
                info = archive.getinfo(record)
            except KeyError:
                raise CheckpointFormatError(f"storage {key!r:.40} has no record in the archive") from None
            claimed = numel * dtype.itemsize
            if claimed > info.file_size:
                raise CheckpointFormatError(
                    f"storage {key!r:.40} claims {numel} x {dtype} = {claimed} bytes but its record holds "
                    f"{info.file_size}"
                )
            raw = bytearray(_read_record(archive, record, archive_size, path)[:claimed])
            storage = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            storages[key, dtype] = storage
            return storage

        data = _read_record(archive, pickles[0], archive_size, path)
        unpickler = RestrictedUnpickler(io.BytesIO(data), load_storage)
        return unpickler.load(), unpickler


def _load_legacy(path: Path) -> tuple[Any, RestrictedUnpickler]:
    size = path.stat().st_size
    with open(path, "rb") as raw_file:
        file = _BoundedReader(raw_file, size)
        if RestrictedUnpickler(file).load() != LEGACY_MAGIC_NUMBER:
            raise CheckpointFormatError("not a torch.save file (neither a zip archive nor the legacy format)")
        RestrictedUnpickler(file).load()  # protocol version
        RestrictedUnpickler(file).load()  # system info
        storages: dict[str, torch.Tensor] = {}
        claimed_total = 0

        def load_storage(dtype: torch.dtype, key: str, numel: int, view: Any) -> torch.Tensor:
            nonlocal claimed_total
            if key not in storages:
                claimed = numel * dtype.itemsize
                # the storages' bytes follow the pickle: all of them must fit in what is left of the file
                if claimed_total + claimed > file.remaining():
                    raise CheckpointFormatError(
                        f"storage {key!r:.40} claims {numel} x {dtype} = {claimed} bytes but only "
                        f"{max(file.remaining() - claimed_total, 0)} bytes of the file are left"
                    )
                claimed_total += claimed
                storages[key] = torch.empty(numel, dtype=dtype)
            storage = storages[key]
            if view is None:
                return storage
            if not (isinstance(view, tuple) and len(view) == 3):
                raise CheckpointFormatError(f"invalid storage view {view!r:.80}")
            _, offset, length = view
            if not (
                isinstance(offset, int)
                and isinstance(length, int)
                and 0 <= offset <= offset + length <= storage.numel()
            ):
                raise CheckpointFormatError(
                    f"a view of {length!r:.20} elements at {offset!r:.20} exceeds storage {key!r:.40} "
                    f"of {storage.numel()} elements"
                )
            return storage[offset : offset + length]

        unpickler = RestrictedUnpickler(file, load_storage)
        result = unpickler.load()
        keys = RestrictedUnpickler(file).load()
        if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
            raise CheckpointFormatError("the storage list does not match the storages the pickle uses")
        for key in keys:
            storage = storages[str(key)]
            header = file.read(8)
            if len(header) != 8:
                raise CheckpointFormatError(f"truncated before storage {key!r:.40}")
            (numel,) = struct.unpack("<q", header)
            nbytes = storage.numel() * storage.element_size()
            if numel != storage.numel():
                raise CheckpointFormatError(
                    f"storage {key!r:.40} holds {numel} elements where the pickle claims {storage.numel()}"
                )
            raw = bytearray(file.read(nbytes))
            if len(raw) != nbytes:
                raise CheckpointFormatError(f"truncated storage {key!r:.40} ({len(raw)} of {nbytes} bytes)")
            if nbytes:
                storage.copy_(torch.frombuffer(raw, dtype=storage.dtype))
        return result, unpickler


def restricted_load(path: str | os.PathLike) -> tuple[Any, set[str]]:
    """Read a ``torch.save`` file (zip or legacy format) without executing anything from it.

    Returns ``(object, names of the globals recorded as stand-ins)``. Raises `FileNotFoundError`
    when ``path`` is not a file and a one-line `ValueError` naming the file when it cannot be read
    safely (not a ``torch.save`` file, truncated, or claiming more data than it holds).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        if zipfile.is_zipfile(path):
            loaded, unpickler = _load_zip(path)
        else:
            loaded, unpickler = _load_legacy(path)
    except (pickle.UnpicklingError, zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise ValueError(f"cannot read {path} as a PyTorch checkpoint: {_one_line(error)}") from None
    except (
        EOFError,
        struct.error,
        ValueError,
        TypeError,
        KeyError,
        IndexError,
        AttributeError,
        RuntimeError,
        OverflowError,
    ) as error:
        # malformed opcodes surface as any of these; none comes from code named by the file
        raise ValueError(
            f"cannot read {path} as a PyTorch checkpoint (corrupt or truncated): "
            f"{type(error).__name__}: {_one_line(error)}"
        ) from None
    except (MemoryError, RecursionError) as error:
        raise ValueError(f"cannot read {path} as a PyTorch checkpoint: {type(error).__name__}") from None
    return loaded, unpickler.recorded


def load_torch_file(path: str | os.PathLike) -> Any:
    """`restricted_load` without the list of recorded names."""
    return restricted_load(path)[0]


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


__all__ = [
    "CheckpointFormatError",
    "ClassReference",
    "OpaqueObject",
    "RestrictedUnpickler",
    "is_opaque",
    "load_torch_file",
    "opaque_class",
    "restricted_load",
]
