"""PSA's image-level label file, `voc12/cls_labels.npy`, read without unpickling arbitrary objects.

PSA (and RRM, which loads it with `np.load(...).item()`) saved a dict {image id: (20,) float32 multi-hot}
with `np.save`, i.e. a `.npy` header followed by a pickle. `np.load(allow_pickle=True)` would run any code
such a pickle names; here the pickle may only rebuild numpy arrays, dtypes and the dict itself.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

# The only globals a pickled dict of numpy arrays refers to (numpy 1.x wrote numpy.core, 2.x numpy._core).
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}


# This numpy's own functions for those names (their module moved between numpy versions).
_RESOLVED = {"_reconstruct": np.zeros(1).__reduce__()[0], "scalar": np.float32(0).__reduce__()[0],
             "ndarray": np.ndarray, "dtype": np.dtype}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refers to {module}.{name}, which a label dict never holds")
        return _RESOLVED[name]


def read_cls_labels_npy(path: str | Path, num_fg: int) -> dict[str, np.ndarray]:
    """{image id: (num_fg,) float32 multi-hot} from PSA's cls_labels.npy (VOC: 20 classes); errors name the
    file and the problem."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(f)
            if dtype.kind != "O":
                raise ValueError(f"holds a {dtype} array of shape {shape}, not a pickled {{id: labels}} dict")
            data = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError) as error:
        raise ValueError(f"{path}: not a label dict saved by np.save ({error})") from error
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    if isinstance(data, np.ndarray) and data.dtype == object and data.shape == ():
        data = data.item()
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict {{image id: (20,) labels}}, got {type(data).__name__}")
    labels: dict[str, np.ndarray] = {}
    for name, value in data.items():
        vector = np.asarray(value)
        if vector.shape != (num_fg,) or not np.isin(vector, (0, 1)).all():
            raise ValueError(f"{path}: entry {name!r} must be {num_fg} values of 0 or 1, got {vector!r}")
        labels[name.decode() if isinstance(name, bytes) else str(name)] = vector.astype(np.float32)
    if not labels:
        raise ValueError(f"{path}: labels file lists no images")
    return labels
