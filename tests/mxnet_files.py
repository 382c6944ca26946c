"""MXNet NDArray files written from the spec, and PSA's renaming transcribed, for the reader's tests.

The writer follows MXNet's NDArray::Save (src/ndarray/ndarray.cc, V2/V3) and the layouts before it (V1, and
legacy files without a per-array magic); tests/models/test_mxnet_params.py checks it against a file real
MXNet 1.9.1 wrote.
"""

from __future__ import annotations

import struct

import numpy as np

# mshadow/base.h TypeFlag, written down from the enum (bfloat16, 12, has no numpy type).
TYPE_FLAGS = {"float32": 0, "float64": 1, "float16": 2, "uint8": 3, "int32": 4, "int8": 5, "int64": 6, "bool": 7,
              "int16": 8, "uint16": 9, "uint32": 10, "uint64": 11}
V1, V2, V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA


def psa_name(key: str) -> str | None:
    """PSA's network/resnet38d.py `convert_mxnet_to_torch` for one key, transcribed (None: the key it skips)."""
    bn_param_mx_pt = {"beta": "bias", "gamma": "weight", "mean": "running_mean", "var": "running_var"}
    toks = key.split("_")
    if "conv1a" in toks[0]:
        return "conv1a.weight"
    if "linear1000" in toks[0]:
        return None
    if "branch" in toks[1]:
        pt_name = ["b" + toks[0][-3] + "_" + toks[0][-1]] if toks[0][-1] != "a" else ["b" + toks[0][-2]]
        if "res" in toks[0]:
            layer_type, last_name = "conv", "weight"
        else:
            layer_type, last_name = "bn", bn_param_mx_pt[toks[-1]]
        return ".".join([*pt_name, layer_type + "_" + toks[1], last_name])
    return "bn7." + bn_param_mx_pt[toks[-1]]


def record(array: np.ndarray | None, layout: str, *, flag: int | None = None, context: tuple[int, int] = (1, 0)
           ) -> bytes:
    """One dense NDArray as MXNet writes it: "v3"/"v2" (magic, storage type 0, int32 ndim + int64 dims),
    "v1" (magic, int32 ndim + int64 dims) or "legacy" (uint32 ndim + uint32 dims, no magic). None: empty."""
    shape = () if array is None else array.shape
    dims = struct.pack(f"<i{len(shape)}q", len(shape), *shape)
    head = {"v3": struct.pack("<Ii", V3, 0) + dims, "v2": struct.pack("<Ii", V2, 0) + dims,
            "v1": struct.pack("<I", V1) + dims, "legacy": struct.pack(f"<I{len(shape)}I", len(shape), *shape)}[layout]
    if array is None:
        return head
    flag = TYPE_FLAGS[array.dtype.name] if flag is None else flag
    return head + struct.pack("<iii", *context, flag) + array.astype(array.dtype.newbyteorder("<")).tobytes()


def ndarray_file(records: list[bytes], names: list[str]) -> bytes:
    """NDArray::Save of a list: magic 0x112, reserved 0, the arrays, the names (uint64 length + bytes)."""
    encoded = [name.encode() for name in names]
    return (struct.pack("<QQQ", 0x112, 0, len(records)) + b"".join(records) + struct.pack("<Q", len(encoded))
            + b"".join(struct.pack("<Q", len(name)) + name for name in encoded))
