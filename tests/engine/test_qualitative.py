from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from authors_settings import CRF, MINING
from PIL import Image

from rrm.data.classes import PALETTE
from rrm.data.normalize import normalize
from rrm.data.voc import VOCSegmentation
from rrm.engine.inference import predict_probs
from rrm.engine.qualitative import first_ids, qualitative_grid
from rrm.figures import GRID_HEADER, cam_heatmap, colorize
from rrm.method.cam import multiscale_cam
from rrm.method.crf_pool import CRFPool
from rrm.models.deeplab import build_deeplab
from rrm.models.rrm_net import build_rrm
from rrm.settings import Prediction

CELL = 48  # the tiny dataset's image size: tiles are pasted unresized, so pixels compare exactly


@pytest.fixture(scope="module")
def setup(tiny_dataset):
    torch.manual_seed(0)
    models = {"classifier": build_rrm(width=0.0625).eval(), "onestep": build_rrm(width=0.0625).eval(),
              "deeplab": build_deeplab(arch="vgg16_largefov", width=0.0625).eval()}
    val = VOCSegmentation(tiny_dataset, "val")
    return val, models


def _grid(tmp_path, val, models, ids, *, deeplab=True, cell=CELL, **kwargs):
    path = tmp_path / "qualitative.png"
    with CRFPool(0) as pool:
        titles = qualitative_grid(path, val, ids, classifier=models["classifier"], onestep=models["onestep"],
                                  deeplab=models["deeplab"] if deeplab else None, cam_scales=[0.5, 1.0],
                                  mining=MINING, pool=pool, cell=cell, **kwargs)
    with Image.open(path) as png:
        return titles, np.asarray(png.convert("RGB"))


def _tile(grid: np.ndarray, row: int, col: int, cell: int = CELL) -> np.ndarray:
    return grid[GRID_HEADER + row * cell:GRID_HEADER + (row + 1) * cell, col * cell:(col + 1) * cell]


def test_grid_layout_and_columns(setup, tmp_path):
    val, models = setup
    ids = first_ids(val, 3)
    assert ids == val.names[:3]
    titles, grid = _grid(tmp_path, val, models, ids)
    assert titles == ["image", "CAM", "reliable regions", "one-step", "two-step", "ground truth"]
    assert grid.shape == (GRID_HEADER + 3 * CELL, 6 * CELL, 3)
    for row, name in enumerate(ids):
        sample = val[val.names.index(name)]
        assert np.array_equal(_tile(grid, row, 0), sample["image"])
        assert np.array_equal(_tile(grid, row, 5), colorize(sample["mask"], PALETTE))
        onestep = predict_probs(models["onestep"], sample["image"]).argmax(0).numpy()
        assert np.array_equal(_tile(grid, row, 3), colorize(onestep, PALETTE))
        deeplab = predict_probs(models["deeplab"], sample["image"]).argmax(0).numpy()
        assert np.array_equal(_tile(grid, row, 4), colorize(deeplab, PALETTE))
        cam = multiscale_cam(models["classifier"], normalize(sample["image"])[None],
                             torch.from_numpy(sample["labels"])[None], scales=[0.5, 1.0])
        # the grid's CAMs come from one batched forward: float rounding may move a colour by a level
        heat = _tile(grid, row, 1).astype(int) - cam_heatmap(cam[0].numpy()).astype(int)
        assert np.abs(heat).max() <= 2, np.abs(heat).max()
        # reliable regions only label background and the image's own classes; the rest is void
        allowed = PALETTE[[0, *(np.flatnonzero(sample["labels"]) + 1), 255]]
        colours = np.unique(_tile(grid, row, 2).reshape(-1, 3), axis=0)
        assert all((allowed == colour).all(1).any() for colour in colours)
        void = (_tile(grid, row, 2) == PALETTE[255]).all(-1)
        assert void.any() and not void.all()  # (seeded) the random classifier's regions are partial


def test_omitting_deeplab_drops_its_column(setup, tmp_path):
    val, models = setup
    ids = first_ids(val, 2)
    _, full = _grid(tmp_path, val, models, ids)
    titles, grid = _grid(tmp_path, val, models, ids, deeplab=False)
    assert titles == ["image", "CAM", "reliable regions", "one-step", "ground truth"]
    assert grid.shape == (GRID_HEADER + 2 * CELL, 5 * CELL, 3)
    body = slice(GRID_HEADER, None)
    assert np.array_equal(grid[body, :4 * CELL], full[body, :4 * CELL])
    assert np.array_equal(grid[body, 4 * CELL:], full[body, 5 * CELL:])


def test_cells_resized_and_crf_named(setup, tmp_path):
    val, models = setup
    ids = [val.names[-1], val.names[0]]  # explicit ids keep their order
    titles, grid = _grid(tmp_path, val, models, ids, cell=64,
                         onestep_inference=Prediction(scales=(1.0,), flip=False, crf=replace(CRF, iterations=2)))
    assert titles[3] == "one-step +CRF" and titles[4] == "two-step"
    assert grid.shape == (GRID_HEADER + 2 * 64, 6 * 64, 3)
    first = np.asarray(Image.fromarray(val[len(val) - 1]["image"]).resize((64, 64), Image.NEAREST))
    assert np.array_equal(_tile(grid, 0, 0, 64), first)


def test_unknown_id_is_a_clear_error(setup, tmp_path):
    val, models = setup
    with pytest.raises(ValueError, match="not-an-id"):
        _grid(tmp_path, val, models, [val.names[0], "not-an-id"])
    assert not (tmp_path / "qualitative.png").exists()
