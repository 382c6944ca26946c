"""MXNet's NDArray list files (`mx.nd.save`, `*.params` checkpoints) read with numpy alone.

MXNet is retired and installs only with numpy < 1.24; the weight files it wrote are still what users
download. The layout, as MXNet's `NDArray::Save` / `NDArray::Load` (src/ndarray/ndarray.cc) write and read
it, all little-endian:

    list:   uint64 0x112 (kMXAPINDArrayListMagic), uint64 reserved,
            uint64 n, n arrays, uint64 m (0 or n), m names (uint64 length + UTF-8 bytes)
    array:  uint32 magic, then by magic
      0xF993FACA (V3, numpy shape semantics), 0xF993FAC9 (V2):
            int32 storage type (0 dense, 1 row_sparse, 2 csr); sparse only: storage shape;
            shape; [context, int32 dtype flag; sparse only: per aux array int32 dtype flag + shape;
            data (storage shape's elements); sparse only: aux data]
      0xF993FAC8 (V1):  shape, [context, int32 dtype flag, data]
      anything else (legacy, before V1): the value is ndim, followed by ndim uint32 dims, then
            [context, int32 dtype flag, data]
    shape:  int32 ndim, ndim int64 dims (legacy: uint32 as above)
    context: int32 dev_type (1 cpu, 2 gpu, 3 cpu_pinned, 5 cpu_shared), int32 dev_id

The bracketed part is absent for an empty ("none") array: ndim 0 in V2, V1 and legacy files, ndim -1
(or a dim of -1) in V3, where ndim 0 is a scalar. Sparse arrays come back dense: row_sparse aux is the
row index, csr aux is (indptr, indices). bfloat16 (flag 12) comes back as float32, exactly. Bytes after
the names are ignored, as MXNet ignores them.

Every problem raises `MXNetParamsError` naming the file, the problem and its byte offset.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from pathlib import Path
from typing import BinaryIO

import numpy as np

LIST_MAGIC = 0x112
V1_MAGIC, V2_MAGIC, V3_MAGIC = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
BFLOAT16 = 12
# mshadow's TypeFlag -> little-endian numpy dtype (bfloat16 is widened to float32 after reading).
DTYPES = {0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8", 7: "?", 8: "<i2", 9: "<u2",
          10: "<u4", 11: "<u8", BFLOAT16: "<u2"}
DENSE, ROW_SPARSE, CSR = 0, 1, 2
_AUX_ARRAYS = {DENSE: 0, ROW_SPARSE: 1, CSR: 2}
_DEVICE_TYPES = {1, 2, 3, 5}
# numpy holds at most this many dimensions; a larger legacy "ndim" is a wrong magic, not a shape.
_MAX_NDIM = 64


class MXNetParamsError(ValueError):
    """A file that is not a readable MXNet NDArray list; the message names the file and the byte offset."""


class _Reader:
    """Sequential little-endian reads from an open file that fail with the file name and offset."""

    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self.handle, self.path = handle, path
        self.size = os.fstat(handle.fileno()).st_size
        self.offset = 0

    def fail(self, problem: str, offset: int | None = None) -> MXNetParamsError:
        at = self.offset if offset is None else offset
        return MXNetParamsError(f"{self.path}: {problem} at byte offset {at}")

    def need(self, count: int, what: str) -> None:
        if count > self.size - self.offset:
            raise self.fail(f"truncated: {what} needs {count} bytes but the file ends at byte {self.size}")

    def bytes(self, count: int, what: str) -> bytearray:
        self.need(count, what)
        buffer = bytearray(count)
        if self.handle.readinto(buffer) != count:
            raise self.fail(f"read error in {what}")
        self.offset += count
        return buffer

    def scalar(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.bytes(struct.calcsize(fmt), what))[0]

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        dtype_ = np.dtype(dtype)
        values = np.frombuffer(self.bytes(count * dtype_.itemsize, what), dtype=dtype_)
        return values.astype(dtype_.newbyteorder("="), copy=False)


def _shape(reader: _Reader, what: str, *, unknown_dims: bool = False) -> tuple[int, ...] | None:
    """An int32 ndim + int64 dims shape; None for an unknown one (ndim -1, or with `unknown_dims`, as V3
    allows, a dim of -1)."""
    start = reader.offset
    ndim = reader.scalar("i", f"{what} ndim")
    if ndim == -1:
        return None
    if not 0 <= ndim <= _MAX_NDIM:
        raise reader.fail(f"bad {what}: ndim {ndim}", start)
    dims = tuple(int(d) for d in reader.array("<i8", ndim, f"{what} dims"))
    if unknown_dims and -1 in dims:
        return None
    if any(d < 0 for d in dims):
        raise reader.fail(f"bad {what}: negative dim in {dims}", start)
    return dims


def _dtype(reader: _Reader, what: str) -> tuple[int, str]:
    start = reader.offset
    flag = reader.scalar("i", what)
    if flag not in DTYPES:
        raise reader.fail(f"unknown {what} {flag} (MXNet knows 0-12)", start)
    return flag, DTYPES[flag]


def _values(reader: _Reader, flag: int, dtype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    values = reader.array(dtype, int(np.prod(shape, dtype=np.int64)), what).reshape(shape)
    if flag == BFLOAT16:  # bfloat16 is the upper half of a float32
        values = (values.astype(np.uint32) << 16).view(np.float32)
    return values


def _context(reader: _Reader, index: int) -> None:
    start = reader.offset
    dev_type = reader.scalar("i", f"array {index} context")
    dev_id = reader.scalar("i", f"array {index} context")
    if dev_type not in _DEVICE_TYPES or dev_id < -1:
        raise reader.fail(f"array {index}: bad context (dev_type {dev_type}, dev_id {dev_id})", start)


def _densify(reader: _Reader, index: int, stype: int, shape: tuple[int, ...], data: np.ndarray,
             aux: list[np.ndarray], start: int) -> np.ndarray:
    dense = np.zeros(shape, dtype=data.dtype)
    if stype == ROW_SPARSE:
        rows = aux[0].astype(np.int64)
        if data.shape != (len(rows), *shape[1:]) or (rows.size and not 0 <= rows.min() <= rows.max() < shape[0]):
            raise reader.fail(f"array {index}: row_sparse rows or values do not fit shape {shape}", start)
        dense[rows] = data
        return dense
    indptr, indices = (a.astype(np.int64) for a in aux)
    if (len(shape) != 2 or len(indptr) != shape[0] + 1 or indptr[0] != 0 or indptr[-1] != len(indices)
            or len(indices) != len(data) or np.any(np.diff(indptr) < 0)
            or (indices.size and not 0 <= indices.min() <= indices.max() < shape[1])):
        raise reader.fail(f"array {index}: csr indptr/indices do not fit shape {shape}", start)
    dense[np.repeat(np.arange(shape[0]), np.diff(indptr)), indices] = data
    return dense


def _array(reader: _Reader, index: int) -> np.ndarray | None:
    start = reader.offset
    what = f"array {index}"
    magic = reader.scalar("I", f"{what} header")
    if magic in (V2_MAGIC, V3_MAGIC):
        stype = reader.scalar("i", f"{what} storage type")
        if stype not in _AUX_ARRAYS:
            raise reader.fail(f"{what}: unknown storage type {stype} (0 dense, 1 row_sparse, 2 csr)", start + 4)
        n_aux = _AUX_ARRAYS[stype]
        v3 = magic == V3_MAGIC
        storage = _shape(reader, f"{what} storage shape", unknown_dims=v3) if n_aux else None
        shape = _shape(reader, f"{what} shape", unknown_dims=v3)
        if shape is None or (not v3 and shape == ()):
            return None
    elif magic == V1_MAGIC:
        stype, n_aux, storage = DENSE, 0, None
        shape = _shape(reader, f"{what} shape")
        if not shape:
            return None
    elif magic <= _MAX_NDIM:  # legacy: the first word is ndim, then uint32 dims
        stype, n_aux, storage = DENSE, 0, None
        shape = tuple(int(d) for d in reader.array("<u4", magic, f"{what} shape dims"))
        if not shape:
            return None
    else:
        raise reader.fail(f"{what}: unknown header 0x{magic:08X} (not an NDArray magic nor a legacy ndim)", start)
    _context(reader, index)
    flag, dtype = _dtype(reader, f"{what} dtype flag")
    if not n_aux:
        return _values(reader, flag, dtype, shape, f"{what} data {shape}")
    if storage is None:
        raise reader.fail(f"{what}: sparse array with an unknown storage shape", start)
    aux_types = []
    for i in range(n_aux):
        aux_flag, aux_dtype = _dtype(reader, f"{what} aux {i} dtype flag")
        aux_shape = _shape(reader, f"{what} aux {i} shape")
        if aux_shape is None:
            raise reader.fail(f"{what}: aux {i} has an unknown shape", start)
        aux_types.append((aux_flag, aux_dtype, aux_shape))
    data = _values(reader, flag, dtype, storage, f"{what} data {storage}")
    aux = [_values(reader, f, d, s, f"{what} aux {i} data") for i, (f, d, s) in enumerate(aux_types)]
    return _densify(reader, index, stype, shape, data, aux, start)


def read_ndarray_list(path: str | os.PathLike) -> tuple[list[str], list[np.ndarray | None]]:
    """(names, arrays) of an MXNet NDArray list file, in file order, as `mx.nd.load` returns them.

    `names` is empty for a file saved from a plain list; an empty ("none") array is None.
    Raises MXNetParamsError (file, problem, byte offset) for a file MXNet's loader refuses, and for values no
    MXNet writes (a device type it does not have, sparse indices outside the shape).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: MXNet parameter file not found")
    with open(path, "rb") as handle:
        reader = _Reader(handle, path)
        magic = reader.scalar("Q", "list header")
        if magic != LIST_MAGIC:
            raise reader.fail(f"not an MXNet NDArray file: header 0x{magic:X}, expected 0x{LIST_MAGIC:X}", 0)
        reader.scalar("Q", "reserved word")
        count_at = reader.offset
        count = reader.scalar("Q", "array count")
        if count > (reader.size - reader.offset) // 4:  # every array takes at least its 4-byte header
            raise reader.fail(f"truncated or a wrong array count: {count} arrays need at least {4 * count} more "
                              f"bytes but the file ends at byte {reader.size}", count_at)
        arrays = [_array(reader, index) for index in range(count)]
        names_at = reader.offset
        n_names = reader.scalar("Q", "name count")
        if n_names not in (0, count):
            raise reader.fail(f"name count {n_names} is neither 0 nor the array count {count}", names_at)
        names = []
        for index in range(n_names):
            length = reader.scalar("Q", f"name {index} length")
            start = reader.offset
            raw = reader.bytes(length, f"name {index}")
            try:
                names.append(raw.decode("utf-8"))
            except UnicodeDecodeError as error:
                raise reader.fail(f"name {index} is not UTF-8 ({error.reason})", start) from None
    return names, arrays


def load_named_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a `.params` file by name (e.g. "arg:conv1a_weight"), refusing unnamed, duplicate or
    empty entries, which a weight file never has."""
    names, arrays = read_ndarray_list(path)
    if arrays and not names:
        raise MXNetParamsError(f"{path}: the {len(arrays)} arrays have no names (saved from a list, not a dict)")
    duplicates = sorted(name for name, n in Counter(names).items() if n > 1)
    if duplicates:
        raise MXNetParamsError(f"{path}: duplicate names: {', '.join(duplicates)}")
    empty = [name for name, array in zip(names, arrays, strict=True) if array is None]
    if empty:
        raise MXNetParamsError(f"{path}: empty (uninitialised) arrays: {', '.join(empty)}")
    return dict(zip(names, arrays, strict=True))  # type: ignore[arg-type]


def is_ndarray_file(path: str | os.PathLike) -> bool:
    """Whether `path` ends in `.params` or starts with the NDArray list header."""
    path = Path(path)
    if path.suffix == ".params":
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(8) == struct.pack("<Q", LIST_MAGIC)
    except OSError:
        return False
