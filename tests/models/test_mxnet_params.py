"""The MXNet NDArray-list reader against a file real MXNet 1.9.1 wrote, the older layouts MXNet's loader still
reads, every dtype flag, sparse storage, and broken files (each error names the file and the byte offset).

Files in other layouts are written by tests/mxnet_files.py's writer, transcribed from MXNet's NDArray::Save
(src/ndarray/ndarray.cc) and its legacy predecessors; the first test checks it reproduces the real MXNet
file byte for byte.
"""

from __future__ import annotations

import re
import struct

import numpy as np
import pytest
from mxnet_files import TYPE_FLAGS, V2, V3, ndarray_file, psa_name, record

from rrm.models.mxnet_params import MXNetParamsError, is_ndarray_file, load_named_arrays, read_ndarray_list


def test_reads_the_file_real_mxnet_wrote_exactly(mxnet_resnet38):
    path, expected = mxnet_resnet38
    names, arrays = read_ndarray_list(path)
    assert len(names) == len(arrays) == len(expected) + 2  # + the ImageNet classifier's weight and bias
    compared = 0
    for name, array in zip(names, arrays, strict=True):
        target = psa_name(name)
        if target is None:
            assert name in ("arg:linear1000_weight", "arg:linear1000_bias")
            assert array.dtype == np.float32 and array.shape[0] == 1000
            continue
        want = expected[target]
        assert array.dtype == want.dtype and array.shape == want.shape, name
        assert array.tobytes() == want.tobytes(), name  # bit-exact, NaN-safe
        compared += 1
    assert compared == len(expected)
    # the test's writer is MXNet's: rewriting what was read reproduces the file byte for byte
    assert ndarray_file([record(a, "v2") for a in arrays], names) == path.read_bytes()


@pytest.mark.parametrize("layout", ["v3", "v1", "legacy"])
def test_reads_the_older_and_numpy_layouts(mxnet_resnet38, tmp_path, layout):
    path, expected = mxnet_resnet38
    names, arrays = read_ndarray_list(path)
    rewritten = tmp_path / f"resnet38_{layout}.params"
    rewritten.write_bytes(ndarray_file([record(a, layout, context=(2, 1)) for a in arrays], names))  # gpu(1)
    again = load_named_arrays(rewritten)
    assert list(again) == names
    for name, array in again.items():
        if psa_name(name) is not None:
            want = expected[psa_name(name)]
            assert array.dtype == want.dtype and array.tobytes() == want.tobytes() and array.shape == want.shape


@pytest.mark.parametrize("dtype", list(TYPE_FLAGS))
def test_every_dtype_flag(tmp_path, dtype):
    values = np.array([[0, 1, 2], [3, 100, 7]]).astype(dtype)
    path = tmp_path / "a.params"
    path.write_bytes(ndarray_file([record(values, "v2")], ["x"]))
    got = load_named_arrays(path)["x"]
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative and np.array_equal(got, values)
    assert got.flags.writeable  # torch.from_numpy needs it


def test_bfloat16_is_widened_exactly(tmp_path):
    values = np.array([1.0, -2.5, 3.140625, 1e-3, np.inf], dtype=np.float32)
    upper = (values.view(np.uint32) >> 16).astype(np.uint16)  # bfloat16: the top 16 bits of a float32
    path = tmp_path / "bf16.params"
    path.write_bytes(ndarray_file([record(upper, "v2", flag=12)], ["x"]))
    got = load_named_arrays(path)["x"]
    assert got.dtype == np.float32
    assert np.array_equal(got, (upper.astype(np.uint32) << 16).view(np.float32))
    assert got[0] == 1.0 and got[1] == -2.5 and got[2] == 3.140625


def _sparse(stype: int, shape: tuple, storage: tuple, data: np.ndarray, aux: list[np.ndarray]) -> bytes:
    """A V2 sparse NDArray: storage type, storage shape, shape, context, dtype, aux (dtype, shape) pairs,
    data, aux data (NDArray::Save)."""
    def tshape(s):
        return struct.pack(f"<i{len(s)}q", len(s), *s)
    out = struct.pack("<Ii", V2, stype) + tshape(storage) + tshape(shape) + struct.pack("<iii", 1, 0, 0)
    out += b"".join(struct.pack("<i", TYPE_FLAGS[a.dtype.name]) + tshape(a.shape) for a in aux)
    return out + data.astype("<f4").tobytes() + b"".join(a.astype(a.dtype.newbyteorder("<")).tobytes() for a in aux)


def test_sparse_storage_comes_back_dense(tmp_path):
    dense = np.array([[0, 0, 0], [1.5, 0, 2], [0, 0, 0], [0, -3, 0]], dtype=np.float32)
    row_sparse = _sparse(1, (4, 3), (2, 3), dense[[1, 3]], [np.array([1, 3], dtype=np.int64)])
    csr = _sparse(2, (4, 3), (3,), np.array([1.5, 2, -3], dtype=np.float32),
                  [np.array([0, 0, 2, 2, 3], dtype=np.int64), np.array([0, 2, 1], dtype=np.int64)])
    path = tmp_path / "sparse.params"
    path.write_bytes(ndarray_file([row_sparse, csr, record(dense, "v2")], ["rsp", "csr", "dense"]))
    got = load_named_arrays(path)
    for name in ("rsp", "csr", "dense"):
        assert got[name].dtype == np.float32 and np.array_equal(got[name], dense), name
    bad = _sparse(2, (4, 3), (3,), np.ones(3, np.float32),
                  [np.array([0, 0, 2, 2, 3], dtype=np.int64), np.array([0, 5, 1], dtype=np.int64)])
    path.write_bytes(ndarray_file([bad], ["csr"]))
    with pytest.raises(MXNetParamsError, match=rf"{re.escape(str(path))}: array 0: csr .* at byte offset 24$"):
        read_ndarray_list(path)


def test_empty_arrays_scalars_and_unnamed_lists(tmp_path):
    scalar = np.array(2.5, dtype=np.float32)
    path = tmp_path / "mixed.params"
    unknown_v3 = struct.pack("<Iii", V3, 0, -1)  # V3: ndim -1 is an unknown (empty) array
    path.write_bytes(ndarray_file([record(None, "v2"), record(scalar, "v3"), unknown_v3, record(None, "legacy"),
                                   record(None, "v1"), record(scalar.reshape(1), "v2")], []))
    names, arrays = read_ndarray_list(path)
    assert names == []
    assert [a is None for a in arrays] == [True, False, True, True, True, False]
    assert arrays[1].shape == () and arrays[1] == 2.5 and arrays[5].shape == (1,)
    with pytest.raises(MXNetParamsError, match="have no names"):
        load_named_arrays(path)
    path.write_bytes(ndarray_file([record(None, "v2"), record(scalar, "v3")], ["a", "b"]))
    with pytest.raises(MXNetParamsError, match=r"empty \(uninitialised\) arrays: a$"):
        load_named_arrays(path)
    path.write_bytes(ndarray_file([record(scalar, "v3")] * 2, ["a", "a"]))
    with pytest.raises(MXNetParamsError, match="duplicate names: a$"):
        load_named_arrays(path)


OFFSET = re.compile(r"at byte offset (\d+)$")


def _error(path) -> tuple[str, int]:
    with pytest.raises(MXNetParamsError) as info:
        read_ndarray_list(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    match = OFFSET.search(message)
    assert match, message
    return message, int(match.group(1))


def test_truncated_files_name_the_file_and_the_offset(mxnet_resnet38, tmp_path):
    full = mxnet_resnet38[0].read_bytes()
    # inside: the list header, the reserved word, the count, array 0's magic, its dims, its context, its data,
    # the middle, the name count, the last name, one byte short
    names_at = full.index(struct.pack("<Q", len("arg:conv1a_weight")) + b"arg:conv1a_weight") - 8
    for cut in (0, 5, 12, 20, 26, 40, 70, 90, len(full) // 2, names_at + 3, len(full) - 7, len(full) - 1):
        path = tmp_path / f"cut{cut}.params"
        path.write_bytes(full[:cut])
        message, offset = _error(path)
        needed = int(re.search(r"needs? (?:at least )?(\d+) (?:more )?bytes", message).group(1))
        assert "truncated" in message and f"the file ends at byte {cut}" in message
        assert offset <= cut < offset + needed, (cut, message)


def _patched(full: bytes, at: int, fmt: str, value: int) -> bytes:
    return full[:at] + struct.pack("<" + fmt, value) + full[at + struct.calcsize(fmt):]


def test_corrupt_headers_name_the_problem_and_the_offset(mxnet_resnet38, tmp_path):
    full = mxnet_resnet38[0].read_bytes()
    names_at = full.index(struct.pack("<Q", len("arg:conv1a_weight")) + b"arg:conv1a_weight") - 8
    # array 0 (conv1a, 4 dims) at 24: magic, storage type 28, ndim 32, dims 36, context 68, dtype flag 76, data 80
    cases = {
        "list magic": (0, "Q", 0x113, r"not an MXNet NDArray file: header 0x113, expected 0x112", 0),
        "array magic": (24, "I", 0xDEADBEEF, r"array 0: unknown header 0xDEADBEEF", 24),
        "storage type": (28, "i", 7, r"array 0: unknown storage type 7", 28),
        "ndim": (32, "i", -5, r"bad array 0 shape: ndim -5", 32),
        "context": (68, "i", 9, r"array 0: bad context \(dev_type 9, dev_id 0\)", 68),
        "dtype flag": (76, "i", 99, r"unknown array 0 dtype flag 99", 76),
        "array count": (16, "Q", 2**62, r"wrong array count: 4611686018427387904 arrays need at least", 16),
        "names count": (names_at, "Q", 5, r"name count 5 is neither 0 nor the array count 193", names_at),
        "huge names count": (names_at, "Q", 2**63, r"name count 9223372036854775808 is neither", names_at),
    }
    assert struct.unpack_from("<i", full, 76)[0] == 0 and struct.unpack_from("<Q", full, names_at)[0] == 193
    for label, (at, fmt, value, problem, offset) in cases.items():
        path = tmp_path / f"{label.replace(' ', '_')}.params"
        path.write_bytes(_patched(full, at, fmt, value))
        message, got = _error(path)
        assert re.search(problem, message) and got == offset, (label, message)
    path = tmp_path / "latin1.params"
    path.write_bytes(full[:names_at + 8 + 8] + b"\xff" + full[names_at + 8 + 9:])
    message, got = _error(path)
    assert "name 0 is not UTF-8" in message and got == names_at + 16


def test_recognises_ndarray_files(mxnet_resnet38, tmp_path):
    copy = tmp_path / "renamed.bin"
    copy.write_bytes(mxnet_resnet38[0].read_bytes())
    other = tmp_path / "other.pth"
    other.write_bytes(b"PK\x03\x04" + bytes(20))
    assert is_ndarray_file(copy) and is_ndarray_file(tmp_path / "missing.params") and not is_ndarray_file(other)
    with pytest.raises(FileNotFoundError, match="missing.params: MXNet parameter file not found"):
        read_ndarray_list(tmp_path / "missing.params")
