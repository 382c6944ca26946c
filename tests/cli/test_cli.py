"""The `rrm` command line wires params.yaml and checkpoints to the library (typer's CliRunner)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from typer.testing import CliRunner

from rrm.cli import app
from rrm.io import save_torch
from rrm.models.rrm_net import build_rrm

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"
runner = CliRunner()


def test_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("check-data", "predict", "evaluate", "export-server", "generate-data", "profile", "tables"):
        assert command in result.output


def test_check_data_passes_the_sample_and_fails_a_broken_copy(voc_sample, tmp_path):
    ok = runner.invoke(app, ["check-data", str(voc_sample)])
    assert ok.exit_code == 0, ok.output
    assert "person" in ok.output
    broken = tmp_path / "voc"
    shutil.copytree(voc_sample, broken)
    name = (broken / "ImageSets/Segmentation/train.txt").read_text().split()[0]
    mask = np.array(Image.open(broken / "SegmentationClass" / f"{name}.png"))
    mask[0, 0] = 42
    out = Image.fromarray(mask, mode="P")
    out.putpalette(Image.open(voc_sample / "SegmentationClass" / f"{name}.png").getpalette())
    out.save(broken / "SegmentationClass" / f"{name}.png")
    bad = runner.invoke(app, ["check-data", str(broken)])
    assert bad.exit_code == 1
    assert name in bad.output and "42" in bad.output


def test_predict_command_writes_masks_and_counts_skips(voc_sample, tmp_path):
    torch.manual_seed(0)
    checkpoint = tmp_path / "onestep.pt"
    save_torch(checkpoint, {"model": build_rrm(width=0.0625).state_dict(), "meta": {"arch": "resnet38", "width": 0.0625}})
    images = tmp_path / "in"
    images.mkdir()
    first = sorted((voc_sample / "JPEGImages").glob("*.jpg"))[0]
    shutil.copy(first, images / first.name)
    (images / "bad.jpg").write_bytes(b"nope")
    result = runner.invoke(app, ["predict", str(checkpoint), str(images), "--out", str(tmp_path / "out"),
                                 "--params", str(PARAMS)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out/masks" / f"{first.stem}.png").is_file()
    bad = images / "bad.jpg"
    assert result.stdout.splitlines() == [
        f"skipped {bad}: unreadable or truncated image (cannot identify image file)",
        f"wrote 1 masks and overlays to {tmp_path / 'out'}; skipped 1"]
    assert result.output.count(str(bad)) == 1 and "Warning" not in result.output  # no Python warning



def test_a_coco_checkpoint_predicts_its_classes_and_is_not_scored_as_voc(voc_sample, tmp_path):
    from rrm.data.datasets import COCO

    torch.manual_seed(0)
    checkpoint = tmp_path / "coco.pt"
    model = build_rrm(width=0.0625, num_classes=COCO.num_classes)
    with torch.no_grad():
        model.fc8_seg_conv2.bias[:] = -10.0
        model.fc8_seg_conv2.bias[COCO.classes.index("toothbrush")] = 10.0  # a class VOC does not have
    save_torch(checkpoint, {"model": model.state_dict(), "meta": {"arch": "resnet38", "width": 0.0625, "dataset": "coco"}})
    images = tmp_path / "in"
    images.mkdir()
    first = sorted((voc_sample / "JPEGImages").glob("*.jpg"))[0]
    shutil.copy(first, images / first.name)
    result = runner.invoke(app, ["predict", str(checkpoint), str(images), "--out", str(tmp_path / "out"),
                                 "--params", str(PARAMS)])
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "out/masks" / f"{first.stem}.png") as mask:
        assert mask.mode == "P" and set(np.unique(np.array(mask)).tolist()) == {80}  # COCO's index of toothbrush
    scored = runner.invoke(app, ["evaluate", str(checkpoint), "--params", str(PARAMS), "--out", str(tmp_path / "eval")])
    assert scored.exit_code == 1 and "a network trained on 'coco'; data.dataset is 'voc'" in scored.output
    server = runner.invoke(app, ["export-server", str(checkpoint), "--root", str(voc_sample), "--params", str(PARAMS)])
    assert server.exit_code == 1 and "the VOC evaluation server scores VOC networks only" in server.output


def test_tables_run_lists_every_cell_at_the_same_seeds():
    result = runner.invoke(app, ["tables", "run", "--dry-run", "--only", "t3", "--seeds", "2", "--params", str(PARAMS)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split(":")[0] for line in lines] == ["t1-joint-r0.4", "t1-joint-r0.4-s1"]
    assert [line.replace("-S seed=1", "-S seed=0").split(":", 1)[1] for line in lines[1:]] == [
        lines[0].split(":", 1)[1]]  # the seed is the only difference
    assert "-S seed=0" in lines[0]
    bad = runner.invoke(app, ["tables", "run", "--dry-run", "--seeds", "0", "--params", str(PARAMS)])
    assert bad.exit_code != 0
