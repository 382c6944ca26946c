"""`rrm crf` on VOC sample photos with saved score maps: outputs, bad files, resuming, both backends."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

import rrm.cli.crf as crf_command
from rrm.cli import app
from rrm.io import load_mask, save_torch
from rrm.ops.crf_classes import kept_classes, load_compact

NAMES = ["2007_000063", "2007_000068", "2007_000392"]  # 500x375, 500x375 and 500x333 photos


def _noisy_probs(mask: np.ndarray, seed: int) -> np.ndarray:
    """(21, H, W) softmax of a noisy, smoothed one-hot of the ground truth: something for the CRF to fix."""
    labels = torch.from_numpy(mask.astype(np.int64))
    onehot = F.one_hot(labels.where(labels != 255, 0), 21).permute(2, 0, 1).float()[None]
    smooth = F.avg_pool2d(onehot, 15, stride=1, padding=7, count_include_pad=False)
    noise = torch.randn(smooth.shape, generator=torch.Generator().manual_seed(seed))
    return (torch.log(0.6 * smooth + 0.4 / 21) + 1.5 * noise).softmax(1)[0].numpy()


@pytest.fixture(scope="module")
def folders(voc_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """images/ with the photos, scores/ with their maps plus a corrupt, a mis-sized and an orphan map."""
    root = tmp_path_factory.mktemp("crf_cli")
    images, scores = root / "images", root / "scores"
    images.mkdir()
    scores.mkdir()
    for seed, name in enumerate(NAMES):
        shutil.copy(voc_sample / "JPEGImages" / f"{name}.jpg", images)
        probs = _noisy_probs(load_mask(voc_sample / "SegmentationClass" / f"{name}.png"), seed)
        if seed == 0:
            np.savez(scores / f"{name}.npz", scores=probs)
        else:
            np.save(scores / f"{name}.npy", probs)
    shutil.copy(voc_sample / "JPEGImages" / "2007_000364.jpg", images)
    (scores / "2007_000364.npy").write_bytes(b"\x93NUMPY this is not an array")  # corrupt
    shutil.copy(voc_sample / "JPEGImages" / "2007_000768.jpg", images)
    np.save(scores / "2007_000768.npy", np.full((21, 50, 60), 1 / 21, np.float32))  # shape mismatch
    np.save(scores / "2099_000001.npy", np.full((21, 50, 60), 1 / 21, np.float32))  # no image
    return images, scores


def _run(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["crf", *map(str, args)])
    return result.exit_code, result.output


def test_pool_writes_pngs_reports_bad_files_and_resumes(folders: tuple[Path, Path], voc_sample: Path,
                                                       tmp_path: Path) -> None:
    pytest.importorskip("pydensecrf")
    images, scores = folders
    code, output = _run("--images", images, "--scores", scores, "--out", tmp_path, "--processes", "2", "--save-probs")
    assert code == 1, output
    failed = [line for line in output.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 3, output
    assert any("2007_000364.npy: unreadable score map" in line for line in failed)
    assert any("2007_000768.npy: score map is 50x60 (HxW), image 2007_000768.jpg is 375x500" in line for line in failed)
    assert any(f"2099_000001: no image 2099_000001.jpg/.jpeg/.png in {images}" in line for line in failed)
    assert "crf: 3 written, 0 already done, 3 failed, of 6" in output
    assert sorted(p.name for p in tmp_path.glob("*.png")) == [f"{n}.png" for n in NAMES]
    for name in NAMES:
        with Image.open(tmp_path / f"{name}.png") as png, Image.open(images / f"{name}.jpg") as photo:
            assert png.mode == "P" and png.size == photo.size
        mask = load_mask(tmp_path / f"{name}.png")
        truth = load_mask(voc_sample / "SegmentationClass" / f"{name}.png")
        posterior = load_compact(tmp_path / "probs" / f"{name}.npz", 21)
        assert posterior.shape == (21, *mask.shape)
        assert (posterior.argmax(0) == mask).mean() > 0.999  # ties of the uint8 quantisation aside
        valid = truth != 255
        assert (mask == truth)[valid].mean() > 0.9  # the CRF repaired the noisy maps

    code, output = _run("--images", images, "--scores", scores, "--out", tmp_path, "--processes", "2", "--save-probs")
    assert "crf: 0 written, 3 already done, 3 failed, of 6" in output, output


def test_torch_backend_agrees_with_pool(folders: tuple[Path, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("pydensecrf")
    images, scores = folders
    _run("--images", images, "--scores", scores, "--out", tmp_path / "pool", "--processes", "2")
    monkeypatch.setattr(crf_command, "_pydensecrf_installed", lambda: False)  # as where pydensecrf is absent
    code, output = _run("--images", images, "--scores", scores, "--out", tmp_path / "torch")
    assert "crf: 3 written" in output, output
    for name in NAMES:
        pool, lattice = load_mask(tmp_path / "pool" / f"{name}.png"), load_mask(tmp_path / "torch" / f"{name}.png")
        assert (pool == lattice).mean() >= 0.99, name


def test_logits_flag_and_probability_check(folders: tuple[Path, Path], tmp_path: Path) -> None:
    images, scores = folders
    logit_dir = tmp_path / "logits"
    logit_dir.mkdir()
    probs = np.load(scores / f"{NAMES[1]}.npy")
    np.save(logit_dir / f"{NAMES[1]}.npy", np.log(probs) + 7.0)  # logits: softmax gives probs back
    code, output = _run("--images", images, "--scores", logit_dir, "--out", tmp_path / "a", "--processes", "0")
    assert code == 1 and "not probabilities (pass --logits" in output, output
    code, output = _run("--images", images, "--scores", logit_dir, "--out", tmp_path / "a", "--logits",
                        "--processes", "0")  # 0: inline, no worker processes
    assert code == 0 and "crf: 1 written" in output, output
    code, output = _run("--images", images, "--scores", logit_dir, "--out", tmp_path / "b", "--num-classes", "81",
                        "--processes", "0")
    assert code == 1 and "expected (81, H, W)" in output, output
    code, output = _run("--images", images, "--scores", logit_dir, "--out", tmp_path / "c", "--dataset", "coco",
                        "--logits", "--processes", "0")  # K from the dataset: COCO's 81
    assert code == 1 and "expected (81, H, W) (--num-classes 81)" in output, output
    code, output = _run("--images", images, "--scores", logit_dir, "--out", tmp_path / "c", "--dataset", "ade")
    assert code != 0 and "--dataset 'ade': expected one of voc, coco" in output, output


def test_checkpoint_instead_of_scores(voc_sample: Path, tmp_path: Path) -> None:
    from rrm.models.rrm_net import build_rrm

    torch.manual_seed(0)
    checkpoint = tmp_path / "onestep.pt"
    save_torch(checkpoint, {"model": build_rrm(width=0.0625).state_dict(), "meta": {"arch": "resnet38", "width": 0.0625}})
    images = tmp_path / "images"
    images.mkdir()
    photo = Image.open(voc_sample / "JPEGImages" / f"{NAMES[2]}.jpg").resize((125, 83))
    photo.save(images / "small.png")
    code, output = _run("--images", images, "--checkpoint", checkpoint, "--out", tmp_path / "out")
    assert code == 0 and "crf: 1 written" in output, output
    with Image.open(tmp_path / "out" / "small.png") as png:
        assert png.size == (125, 83)
    coco = tmp_path / "coco.pt"  # a COCO network: its 81 classes, whatever --dataset says
    save_torch(coco, {"model": build_rrm(width=0.0625, num_classes=81).state_dict(),
                      "meta": {"arch": "resnet38", "width": 0.0625, "dataset": "coco"}})
    code, output = _run("--images", images, "--checkpoint", coco, "--out", tmp_path / "coco-out")
    assert code == 0 and "crf: 1 written" in output, output
    code, output = _run("--images", images, "--out", tmp_path / "out")
    assert code != 0 and "exactly one of --scores and --checkpoint" in output


def test_pruned_by_default_full_k_on_request(folders: tuple[Path, Path], tmp_path: Path) -> None:
    """The default CRF keeps each image's contenders (the npz lists them); --full-k keeps all 21."""
    pytest.importorskip("pydensecrf")
    images, scores = folders
    for flags, out in (([], tmp_path / "pruned"), (["--full-k"], tmp_path / "full")):
        _run("--images", images, "--scores", scores, "--out", out, "--processes", "0", "--save-probs", *flags)
    for name in NAMES:
        probs = np.load(next(scores.glob(f"{name}.np*")))
        probs = probs["scores"] if isinstance(probs, np.lib.npyio.NpzFile) else probs
        with np.load(tmp_path / "pruned" / "probs" / f"{name}.npz") as pruned, \
                np.load(tmp_path / "full" / "probs" / f"{name}.npz") as full:
            assert pruned["classes"].tolist() == kept_classes(probs).tolist()
            assert full["classes"].tolist() == list(range(21))
        assert set(np.unique(load_mask(tmp_path / "pruned" / f"{name}.png"))) <= set(kept_classes(probs).tolist())
