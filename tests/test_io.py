from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from rrm.data.classes import PALETTE
from rrm.io import atomic_write, load_image, load_mask, load_torch, save_mask, save_torch, write_json


def test_palette_png_round_trip_keeps_255_and_palette(tmp_path):
    mask = np.array([[0, 1, 20], [255, 15, 0]], dtype=np.uint8)
    save_mask(tmp_path / "m.png", mask, PALETTE)
    with Image.open(tmp_path / "m.png") as image:
        assert image.mode == "P"
        assert np.array_equal(np.array(image.getpalette()[:6]).reshape(2, 3), PALETTE[:2])
    assert np.array_equal(load_mask(tmp_path / "m.png"), mask)


def test_voc_palette_matches_devkit_colours():
    assert PALETTE[1].tolist() == [128, 0, 0]      # aeroplane
    assert PALETTE[15].tolist() == [192, 128, 128]  # person
    assert PALETTE[255].tolist() == [224, 224, 192]  # void


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"a": 1})

    def boom(handle):
        handle.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, boom)
    assert target.read_text().strip().startswith("{")
    assert os.listdir(tmp_path) == ["out.json"]


def test_unwritable_output_directory_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as a user that ignores permissions")
        with pytest.raises(PermissionError, match="locked"):
            write_json(locked / "x.json", {})
    finally:
        locked.chmod(0o700)


def test_torch_files_load_weights_only(tmp_path):
    save_torch(tmp_path / "w.pt", {"model": {"w": torch.ones(2)}, "meta": {"arch": "resnet38"}})
    assert torch.equal(load_torch(tmp_path / "w.pt")["model"]["w"], torch.ones(2))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_torch(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_torch(tmp_path / "bad.pt")


def test_load_image_converts_modes_and_names_truncated_file(tmp_path):
    Image.new("L", (5, 4), 7).save(tmp_path / "grey.png")
    Image.new("CMYK", (5, 4)).save(tmp_path / "cmyk.jpg")
    assert load_image(tmp_path / "grey.png").shape == (4, 5, 3)
    assert load_image(tmp_path / "cmyk.jpg").shape == (4, 5, 3)
    Image.new("RGB", (64, 64), "red").save(tmp_path / "full.jpg")
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")


def test_no_unsafe_torch_load_in_code_base():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for path in [*root.glob("rrm/**/*.py"), *root.glob("stages/*.py"), *root.glob("benchmarks/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "torch.load(" in line and "weights_only=True" not in line:
                offenders.append(f"{path}:{number}")
    assert offenders == []
