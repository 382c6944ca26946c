from __future__ import annotations

import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from rrm.data.classes import PALETTE
from rrm.data.datasets import VOC
from rrm.engine.inference import predict_probs
from rrm.engine.predict import export_voc_server, list_images, predict_images
from rrm.io import save_torch
from rrm.models import rrm_net
from rrm.models.registry import load_model as load_checkpoint
from rrm.models.rrm_net import build_rrm


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_rrm(width=0.0625)
    path = tmp_path_factory.mktemp("ckpt") / "onestep.pt"
    save_torch(path, {"model": model.state_dict(), "meta": {"arch": "resnet38", "width": 0.0625}})
    return path


def test_multiscale_flip_equals_single_scale_when_off(checkpoint):
    model = load_model(checkpoint)
    image = np.random.default_rng(0).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    single = predict_probs(model, image)
    again = predict_probs(model, image, scales=[1.0], flip=False)
    assert single.shape == (21, 37, 53)
    assert torch.allclose(single.sum(0), torch.ones(37, 53), atol=1e-5)
    assert torch.equal(single, again)
    both = predict_probs(model, image, scales=[0.5, 1.0], flip=True)
    assert both.shape == single.shape and not torch.allclose(both, single)


def test_tiny_image_is_a_clear_error(checkpoint):
    with pytest.raises(ValueError, match=r"tiny.png: image is 1x1"):
        predict_probs(load_model(checkpoint), np.zeros((1, 1, 3), np.uint8), name="tiny.png")


def test_predict_writes_mask_and_overlay_per_image_at_original_size(checkpoint, voc_sample, tmp_path):
    images = sorted((voc_sample / "JPEGImages").glob("*.jpg"))[:6]
    folder = tmp_path / "in"
    folder.mkdir()
    for path in images:
        (folder / path.name).symlink_to(path)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    with pytest.warns(UserWarning, match="broken.jpg"):
        summary = predict_images(load_model(checkpoint), list_images([folder]), tmp_path / "out", spec=VOC)
    assert len(summary.written) == len(images)
    assert sorted(p.name for p, _ in summary.skipped) == ["broken.jpg", "dot.png"]
    for path in images:
        with Image.open(path) as original, Image.open(tmp_path / "out/masks" / f"{path.stem}.png") as mask, \
                Image.open(tmp_path / "out/overlays" / f"{path.stem}.jpg") as over:
            assert mask.mode == "P" and mask.size == original.size == over.size


def test_server_export_layout_palette_and_archive(checkpoint, tiny_dataset, tmp_path):
    archive = export_voc_server(load_model(checkpoint), tiny_dataset, "test", tmp_path)
    ids = (tiny_dataset / "ImageSets/Segmentation/test.txt").read_text().split()
    folder = tmp_path / "results/VOC2012/Segmentation/comp6_test_cls"
    assert sorted(p.stem for p in folder.glob("*.png")) == sorted(ids)
    with Image.open(folder / f"{ids[0]}.png") as mask:
        assert mask.mode == "P"
        assert np.array_equal(np.array(mask.getpalette()[:63]).reshape(21, 3), PALETTE[:21])
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert f"results/VOC2012/Segmentation/comp6_test_cls/{ids[0]}.png" in names


def test_server_export_keeps_odd_image_sizes(checkpoint, voc_sample, tmp_path):
    """VOC's landscape and portrait sizes (500x375, 375x500) come back at exactly the original size."""
    wanted = {(500, 375), (375, 500)}
    picked = {}
    for path in sorted((voc_sample / "JPEGImages").glob("*.jpg")):
        with Image.open(path) as image:
            picked.setdefault(image.size, path)
    picked = {size: path for size, path in picked.items() if size in wanted}
    assert set(picked) == wanted, "the VOC sample should hold images of these sizes"
    root = tmp_path / "voc"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets/Segmentation").mkdir(parents=True)
    for path in picked.values():
        (root / "JPEGImages" / path.name).symlink_to(path)
    (root / "ImageSets/Segmentation/test.txt").write_text("".join(f"{p.stem}\n" for p in picked.values()))
    export_voc_server(load_model(checkpoint), root, "test", tmp_path / "out")
    for size, path in picked.items():
        with Image.open(tmp_path / "out/results/VOC2012/Segmentation/comp6_test_cls" / f"{path.stem}.png") as mask:
            assert mask.size == size and mask.mode == "P"


def load_model(path):
    return load_checkpoint(path, rrm_net.ARCHS)[0]
