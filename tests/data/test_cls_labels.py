"""PSA's cls_labels.npy as the authors load it (np.load(...).item()), read without arbitrary unpickling."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from rrm.data.voc import read_label_file


def _psa_file(path: Path, labels: dict[str, np.ndarray]) -> Path:
    np.save(path, labels)  # PSA's make_cls_labels.py: np.save('voc12/cls_labels.npy', label_dict)
    return path


def test_reads_the_dict_the_authors_load(tmp_path: Path) -> None:
    labels = {"2007_000032": np.eye(20, dtype=np.float32)[0], "2007_000039": np.eye(20, dtype=np.float32)[19] +
              np.eye(20, dtype=np.float32)[14], "2008_000002": np.zeros(20, np.float32)}
    path = _psa_file(tmp_path / "cls_labels.npy", labels)
    read = read_label_file(path)
    authors = np.load(path, allow_pickle=True).item()  # what RRM's load_image_label_list_from_npy does
    assert read.keys() == authors.keys()
    for name, vector in authors.items():
        assert read[name].dtype == np.float32 and np.array_equal(read[name], vector)


def test_refuses_other_pickles_and_bad_entries(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo unsafe",))

    evil = tmp_path / "evil.npy"
    np.save(evil, np.array({"x": Payload()}, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"evil\.npy: not a label dict .*refers to \w+\.system"):
        read_label_file(evil)
    numbers = tmp_path / "numbers.npy"
    np.save(numbers, np.zeros((3, 20)))
    with pytest.raises(ValueError, match=r"numbers\.npy: holds a float64 array"):
        read_label_file(numbers)
    bad = _psa_file(tmp_path / "bad.npy", {"a": np.zeros(21, np.float32)})
    with pytest.raises(ValueError, match=r"bad\.npy: entry 'a' must be 20 values of 0 or 1"):
        read_label_file(bad)
    truncated = tmp_path / "truncated.npy"
    truncated.write_bytes(_psa_file(tmp_path / "good.npy", {"a": np.zeros(20, np.float32)}).read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"truncated\.npy: not a label dict"):
        read_label_file(truncated)
    with pytest.raises(FileNotFoundError, match="absent.npy"):
        read_label_file(tmp_path / "absent.npy")
