from __future__ import annotations

import shutil
import warnings
from importlib import resources
from pathlib import Path

import pytest
import yaml
from coco_layout import write_coco_layout
from typer.testing import CliRunner

from rrm.cli.profile import app
from rrm.data.voc_prepare import SplitCountWarning, prepare_voc
from rrm.experiments.profiles import apply_profile, available_profiles, expand, load_profile, yaml_float
from rrm.settings import load_params, parse

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "params.yaml"

# The documented values of each profile (issue 5, README "Real PASCAL VOC").
COMMON = {
    "device": "cuda", "alpha_ratio": 0.4,
    "data.root": "data/VOCdevkit/VOC2012", "data.train_split": "train_aug", "data.val_split": "val",
    "prepare_data.generate": False, "model.width": 1.0,
    "model.init": "weights/res38_cls.pth",
    "train_cls.steps": 0, "train_cls.batch_size": 16, "train_cls.crop_size": 448, "train_cls.lr": 0.1,
    "train_cls.weight_decay": 5e-4, "train_cls.freeze_bn": True,
    "train_onestep.freeze_bn": True, "train_onestep.optimizer": "sgd", "train_onestep.steps": 20000,
    "train_onestep.batch_size": 4, "train_onestep.crop_size": 321, "train_onestep.scale_range": [0.7, 1.3],
    "train_onestep.momentum": 0.0, "train_onestep.poly_power": 0.9, "train_onestep.loss": "joint",
    "train_onestep.energy.weight": 1e-7, "train_onestep.energy.sigma_rgb": 15.0,
    "train_onestep.energy.sigma_xy": 100.0, "train_onestep.energy.scale": 0.5,
    "mining.cam_scales": [0.5, 1.0, 1.5, 2.0], "mining.crf.bi_sxy": 80.0, "mining.crf.bi_srgb": 13.0,
    "mining.crf.bi_compat": 10.0, "evaluate.scales": [1.0], "evaluate.crf.bi_sxy": 83.0,
    "deeplab.arch": "resnet101_v2", "deeplab.width": 1.0,
    "deeplab.init.resnet101_v2": "weights/resnet101-63fe2227.pth",
    "deeplab.init.vgg16_largefov": "weights/vgg16-397923af.pth",
    "train_deeplab.batch_size": 10, "train_deeplab.crop_size": 321, "train_deeplab.lr": 2.5e-4,
    "train_deeplab.optimizer": "sgd", "train_deeplab.momentum": 0.9, "train_deeplab.weight_decay": 5e-4,
    "train_deeplab.steps": 20000, "train_deeplab.dropout": True,
    "evaluate_deeplab.crf.resnet101_v2.bi_sxy": 67.0, "evaluate_deeplab.crf.vgg16_largefov.bi_sxy": 121.0,
}
FIDELITY = {
    "voc-code": {"train_onestep.lr": 7e-4, "train_onestep.weight_decay": 1e-5, "mining.rule": "code",
                 "mining.gamma_low": 4.0, "mining.gamma_high": 32.0, "mining.cam_min": 0.1,
                 "train_full.lr": 7e-4, "train_full.weight_decay": 1e-5},
    "voc-paper": {"train_onestep.lr": 1e-3, "train_onestep.weight_decay": 5e-4, "mining.rule": "paper",
                  "mining.gamma": 4.0, "train_full.lr": 1e-3, "train_full.weight_decay": 5e-4},
}

# Every resolved value of voc-paper, written out: the overlay on voc-code must resolve to exactly these
# (values, kinds and order).
VOC_PAPER = {
    "device": "cuda", "alpha_ratio": 0.4, "data.dataset": "voc", "data.root": "data/VOCdevkit/VOC2012",
    "data.train_split": "train_aug", "data.val_split": "val", "data.test_split": "test",
    "data.mask_dir": None, "data.num_workers": 4, "prepare_data.generate": False, "model.width": 1.0,
    "model.init": "weights/res38_cls.pth", "model.head_bias": "pytorch", "train_cls.freeze_bn": True,
    "train_cls.dropout": True, "train_cls.optimizer": "sgd", "train_cls.steps": 0,
    "train_cls.batch_size": 16, "train_cls.crop_size": 448, "train_cls.scale_range": [0.5, 1.0],
    "train_cls.resize_long": [256, 512], "train_cls.color_jitter": [0.3, 0.3, 0.3, 0.1],
    "train_cls.frozen": ["conv1a", "b2", "b2_1", "b2_2"],
    "train_cls.lr": 0.1, "train_cls.weight_decay": 0.0005, "train_cls.momentum": 0.0,
    "train_cls.checkpoint_every": 1000, "mining.rule": "paper", "mining.gamma": 4.0, "mining.gamma_low": 4.0,
    "mining.gamma_high": 32.0, "mining.cam_min": 0.1, "mining.bg_confident": 0.8, "mining.crf_confident": 0.8,
    "mining.cam_scales": [0.5, 1.0, 1.5, 2.0], "mining.pool_processes": 4, "mining.crf.iterations": 10,
    "mining.crf.gauss_sxy": 3.0, "mining.crf.gauss_compat": 3.0, "mining.crf.bi_sxy": 80.0,
    "mining.crf.bi_srgb": 13.0, "mining.crf.bi_compat": 10.0, "train_onestep.freeze_bn": True,
    "train_onestep.optimizer": "sgd", "train_onestep.steps": 20000, "train_onestep.batch_size": 4,
    "train_onestep.crop_size": 321, "train_onestep.scale_range": [0.7, 1.3], "train_onestep.lr": 0.001,
    "train_onestep.weight_decay": 0.0005, "train_onestep.momentum": 0.0, "train_onestep.poly_power": 0.9,
    "train_onestep.loss": "joint", "train_onestep.pseudo": "rrm", "train_onestep.schedule": "poly",
    "train_onestep.energy.sigma_rgb": 15.0, "train_onestep.energy.sigma_xy": 100.0,
    "train_onestep.energy.scale": 0.5, "train_onestep.energy.weight": 1e-07,
    "train_onestep.checkpoint_every": 1000,
    "train_full.freeze_bn": True, "train_full.dropout": True, "train_full.optimizer": "sgd",
    "train_full.steps": 20000, "train_full.batch_size": 4, "train_full.crop_size": 321,
    "train_full.scale_range": [0.7, 1.3], "train_full.lr": 0.001, "train_full.weight_decay": 0.0005,
    "train_full.momentum": 0.0, "train_full.poly_power": 0.9, "train_full.checkpoint_every": 1000,
    "evaluate.scales": [1.0], "evaluate.flip": False, "evaluate.crf.iterations": 10,
    "evaluate.crf.gauss_sxy": 3.0, "evaluate.crf.gauss_compat": 3.0, "evaluate.crf.bi_sxy": 83.0,
    "evaluate.crf.bi_srgb": 5.0, "evaluate.crf.bi_compat": 4.0, "evaluate_cam.split": "train",
    "export_pseudo.split": "train_aug",
    "export_pseudo.scales": [1.0], "export_pseudo.flip": False, "export_pseudo.crf.iterations": 10, "export_pseudo.crf.gauss_sxy": 3.0,
    "export_pseudo.crf.gauss_compat": 3.0, "export_pseudo.crf.bi_sxy": 83.0, "export_pseudo.crf.bi_srgb": 5.0,
    "export_pseudo.crf.bi_compat": 4.0,
    "deeplab.arch": "resnet101_v2", "deeplab.width": 1.0, "deeplab.batch_norm": False,
    "deeplab.init.vgg16_largefov": "weights/vgg16-397923af.pth",
    "deeplab.init.resnet101_v2": "weights/resnet101-63fe2227.pth", "train_deeplab.freeze_bn": True,
    "train_deeplab.dropout": True, "train_deeplab.optimizer": "sgd", "train_deeplab.steps": 20000,
    "train_deeplab.batch_size": 10, "train_deeplab.crop_size": 321, "train_deeplab.scale_range": [0.5, 1.5],
    "train_deeplab.lr": 0.00025, "train_deeplab.weight_decay": 0.0005, "train_deeplab.momentum": 0.9,
    "train_deeplab.poly_power": 0.9, "train_deeplab.checkpoint_every": 1000,
    "evaluate_deeplab.scales": [0.75, 1.0, 1.25], "evaluate_deeplab.flip": True,
    **{f"evaluate_deeplab.crf.vgg16_largefov.{k}": v for k, v in (
        ("iterations", 10), ("gauss_sxy", 3.0), ("gauss_compat", 3.0), ("bi_sxy", 121.0), ("bi_srgb", 5.0),
        ("bi_compat", 4.0))},
    **{f"evaluate_deeplab.crf.resnet101_v2.{k}": v for k, v in (
        ("iterations", 10), ("gauss_sxy", 1.0), ("gauss_compat", 3.0), ("bi_sxy", 67.0), ("bi_srgb", 3.0),
        ("bi_compat", 4.0))},
}


def get(params: dict, dotted: str):
    for part in dotted.split("."):
        params = params[part]
    return params


@pytest.mark.parametrize("name", sorted(FIDELITY))
def test_profile_expands_to_documented_values(name):
    merged = expand(yaml.safe_load(PARAMS.read_text()), load_profile(name), source=name)
    for key, value in (COMMON | FIDELITY[name]).items():
        actual = get(merged, key)
        assert actual == value and type(actual) is type(value), f"{name}: {key} = {actual!r}, not {value!r}"


def test_profiles_differ_exactly_where_paper_and_code_do():
    code, paper = load_profile("voc-code"), load_profile("voc-paper")
    assert code.keys() == paper.keys()  # switching profiles never leaves the other's values behind
    differ = {"train_onestep.lr", "train_onestep.weight_decay", "mining.rule", "train_full.lr",
              "train_full.weight_decay"}
    assert {k for k in code if code[k] != paper[k]} == differ



def test_voc_paper_overlay_resolves_to_the_full_profile():
    paper = load_profile("voc-paper")
    assert list(paper) == list(VOC_PAPER)
    for key, value in VOC_PAPER.items():
        assert paper[key] == value and type(paper[key]) is type(value), f"{key} = {paper[key]!r}, not {value!r}"
    overlay = yaml.safe_load(resources.files("rrm.experiments.configs").joinpath(
        "profiles", "voc-paper.yaml").read_text())
    assert overlay.pop("extends") == "voc-code"
    assert sum(len(section) if isinstance(section, dict) else 1 for section in overlay.values()) == 5


def test_cli_show_prints_the_merged_voc_paper():
    shown = CliRunner().invoke(app, ["show", "voc-paper", "--params", str(PARAMS)])
    assert shown.exit_code == 0, shown.output
    printed = {}
    for line in shown.output.splitlines():  # "key  value  (now x)" / "(same)"
        key, value = line.split("  (")[0].split(None, 1)
        printed[key] = yaml.safe_load(value)
    assert printed == VOC_PAPER and list(printed) == list(VOC_PAPER)
    assert [type(v) for v in printed.values()] == [type(v) for v in VOC_PAPER.values()]


def test_overlay_files_extend_by_name_or_path_and_cycles_fail(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("extends: voc-paper\ntrain_onestep.lr: 2.0e-3\n")
    assert load_profile(mine) == VOC_PAPER | {"train_onestep.lr": 2e-3}
    (tmp_path / "child.yaml").write_text("extends: mine.yaml\nalpha_ratio: 0.2\n")  # beside the overlay
    assert load_profile(tmp_path / "child.yaml") == VOC_PAPER | {"train_onestep.lr": 2e-3, "alpha_ratio": 0.2}
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nalpha_ratio: 0.2\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nalpha_ratio: 0.3\n")
    with pytest.raises(ValueError, match=r"a\.yaml: extends forms a cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_profile(tmp_path / "a.yaml")
    (tmp_path / "bad.yaml").write_text("extends: [voc-code]\n")
    with pytest.raises(ValueError, match="bad.yaml: extends: expected a profile name"):
        load_profile(tmp_path / "bad.yaml")
    (tmp_path / "lost.yaml").write_text("extends: voc-nothing\n")
    with pytest.raises(FileNotFoundError, match="'voc-nothing' not found; available: coco, voc-code, voc-code-imagenet, voc-paper"):
        load_profile(tmp_path / "lost.yaml")
    assert available_profiles() == ["coco", "voc-code", "voc-code-imagenet", "voc-paper"]


def test_voc_code_starts_from_psas_classifier_and_imagenet_is_one_profile_away():
    """The authors' one-step script loads PSA's res38_cls.pth (train_cls does not run); the ImageNet route
    trains the classifier with PSA's recipe (train_cls.py): batch 16, crop 448, lr 0.1, wd 5e-4, 15 epochs
    of train_aug, per-image long side 256-512, ColorJitter(0.3, 0.3, 0.3, 0.1), stem not trained."""
    code, imagenet = load_profile("voc-code"), load_profile("voc-code-imagenet")
    assert code["model.init"] == "weights/res38_cls.pth" and code["train_cls.steps"] == 0
    assert imagenet["model.init"] == "weights/ilsvrc-cls_rna-a1_cls1000_ep-0001.params"
    psa = {"train_cls.steps": 9915, "train_cls.batch_size": 16, "train_cls.crop_size": 448, "train_cls.lr": 0.1,
           "train_cls.weight_decay": 5e-4, "train_cls.resize_long": [256, 512],
           "train_cls.color_jitter": [0.3, 0.3, 0.3, 0.1], "train_cls.frozen": ["conv1a", "b2", "b2_1", "b2_2"]}
    assert {key: imagenet[key] for key in psa} == psa
    assert 9915 == 10_582 // 16 * 15  # PSA: max_step = len(train_aug) // batch_size * epochs
    assert {k: v for k, v in imagenet.items() if code.get(k) != v} == {
        "model.init": "weights/ilsvrc-cls_rna-a1_cls1000_ep-0001.params", "train_cls.steps": 9915}

@pytest.mark.parametrize("value", [1e-7, 7e-4, 2.5e-4, 1e20, 0.1, 20000.0, -3e-9])
def test_yaml_float_reads_back_with_pyyaml(value):
    assert yaml.safe_load(yaml_float(value)) == value  # '1e-07' would read back as a string


# ------------------------------------------------------------------- a miniature VOCdevkit + SBD tree


def _write_list(path: Path, ids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


@pytest.fixture
def voc_tree(voc_sample, tmp_path) -> dict:
    """VOCdevkit/VOC2012 (JPEGImages, SegmentationClass for VOC ids, train/val lists) and SBD
    (benchmark_RELEASE/dataset/{train,val}.txt + SegmentationClassAug PNGs for train_aug and val), from the
    real sample's files. SBD overlaps VOC train (ids 8-11) and VOC val (12-13) and adds ids 18-23."""
    ids = sorted((voc_sample / "ImageSets/Segmentation/train.txt").read_text().split())[:24]
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    sbd = tmp_path / "SBD" / "benchmark_RELEASE"
    voc_train, voc_val, sbd_train, sbd_val = ids[:12], ids[12:18], ids[8:14] + ids[18:22], ids[22:24]
    for folder in (voc / "JPEGImages", voc / "SegmentationClass", sbd / "SegmentationClassAug"):
        folder.mkdir(parents=True)
    for i in ids:
        shutil.copy(voc_sample / "JPEGImages" / f"{i}.jpg", voc / "JPEGImages")
        shutil.copy(voc_sample / "SegmentationClass" / f"{i}.png", sbd / "SegmentationClassAug")
        if i in voc_train + voc_val:
            shutil.copy(voc_sample / "SegmentationClass" / f"{i}.png", voc / "SegmentationClass")
    _write_list(voc / "ImageSets/Segmentation/train.txt", voc_train)
    _write_list(voc / "ImageSets/Segmentation/val.txt", voc_val)
    _write_list(sbd / "dataset/train.txt", sbd_train)
    _write_list(sbd / "dataset/val.txt", sbd_val)
    return {"voc": voc, "sbd": sbd, "train_aug": sorted(set(ids[:12]) | set(ids[18:24])), "val": voc_val}


def test_prepare_voc_builds_train_aug_and_warns_on_counts(voc_tree):
    with pytest.warns(SplitCountWarning) as caught:
        prepared = prepare_voc(voc_tree["voc"], voc_tree["sbd"])
    listed = (voc_tree["voc"] / "ImageSets/Segmentation/train_aug.txt").read_text().split()
    assert listed == voc_tree["train_aug"]  # VOC train ∪ SBD train+val − VOC val, sorted
    assert not set(listed) & set(voc_tree["val"])
    assert prepared.created_train_aug and prepared.counts == {"train_aug": 18, "val": 6}
    assert prepared.mask_dir == (voc_tree["sbd"] / "SegmentationClassAug").absolute()  # SBD's PNGs preferred
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert any("18 ids" in m and "10,582" in m and "train_aug.txt" in m for m in messages)
    assert any("6 ids" in m and "1,449" in m and "val.txt" in m for m in messages)


def test_prepare_voc_keeps_an_existing_list_and_checks_it(voc_tree):
    mine = voc_tree["train_aug"][:5]
    _write_list(voc_tree["voc"] / "ImageSets/Segmentation/train_aug.txt", mine)
    with pytest.warns(SplitCountWarning) as caught:
        prepared = prepare_voc(voc_tree["voc"], voc_tree["sbd"])
    assert any("5 ids, but PASCAL VOC 2012's train_aug has 10,582" in str(w.message) for w in caught)
    assert not prepared.created_train_aug
    assert (voc_tree["voc"] / "ImageSets/Segmentation/train_aug.txt").read_text().split() == mine


def test_prepare_voc_names_ids_without_masks(voc_tree):
    missing = voc_tree["train_aug"][-1]  # an SBD-only id
    (voc_tree["sbd"] / "SegmentationClassAug" / f"{missing}.png").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SplitCountWarning)
        with pytest.raises(FileNotFoundError, match=rf"train_aug: 1 of 18 ids have no masks .*{missing}"):
            prepare_voc(voc_tree["voc"], voc_tree["sbd"])


# ------------------------------------------------------------------------------------------------- apply


@pytest.fixture
def workdir(voc_tree, tmp_path, monkeypatch) -> Path:
    """tmp_path as a project: the repo's params.yaml and weight files under weights/ (apply reads none)."""
    shutil.copy(PARAMS, tmp_path / "params.yaml")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "res38.pth").write_bytes(b"x")
    (tmp_path / "weights" / "resnet101.pth").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    return tmp_path


quiet_counts = pytest.mark.filterwarnings("ignore::rrm.data.voc_prepare.SplitCountWarning")


def _onestep_lr_line(text: str) -> str:
    lines = text.splitlines()
    start = lines.index("train_onestep:")
    return next(line for line in lines[start:] if line.startswith("  lr:"))


def _apply(name: str, tree: dict, **extra) -> dict:
    return apply_profile(name, "params.yaml", voc_root="VOCdevkit/VOC2012", sbd_root=tree["sbd"],
                         weights="weights/res38.pth", deeplab_weights="weights/resnet101.pth", **extra)


@quiet_counts
def test_apply_writes_valid_params_keeping_comments_and_top_level_alpha(workdir, voc_tree):
    from dvc.utils.hydra import apply_overrides  # exactly what `dvc exp run -S` does to params.yaml

    original = yaml.safe_load(PARAMS.read_text())
    merged = _apply("voc-code", voc_tree)
    text = (workdir / "params.yaml").read_text()
    written = load_params(workdir / "params.yaml")  # validates
    assert written == merged
    assert written["data"]["root"] == "VOCdevkit/VOC2012" and written["model"]["init"] == "weights/res38.pth"
    assert written["data"]["mask_dir"] == "../../SBD/benchmark_RELEASE/SegmentationClassAug"
    assert written["train_onestep"]["lr"] == 7e-4 and written["train_onestep"]["energy"]["weight"] == 1e-7
    assert written["evaluate_cam"] == original["evaluate_cam"]  # untouched sections stay as they were
    assert text.startswith("# rrm profile voc-code applied")
    for line in PARAMS.read_text().splitlines():  # every comment-only line of the default survives
        if line.lstrip().startswith("#"):
            assert line in text
    assert _onestep_lr_line(text).split("#")[1] == _onestep_lr_line(PARAMS.read_text()).split("#")[1]
    assert _onestep_lr_line(text).startswith("  lr: 0.0007 ")  # a changed value keeps its comment

    apply_overrides(workdir / "params.yaml", ["alpha_ratio=0.2"])
    after = load_params(workdir / "params.yaml")
    assert after["alpha_ratio"] == 0.2 and "alpha_ratio" not in after["mining"]
    assert after | {"alpha_ratio": 0.4} == merged  # nothing else moved
    assert merged["deeplab"]["init"] == {"vgg16_largefov": "weights/vgg16-397923af.pth",  # the profile's
                                         "resnet101_v2": "weights/resnet101.pth"}  # --deeplab-weights

    from rrm.data.voc import voc_split

    train = voc_split(parse(after).data, after["data"]["train_split"], weak=True)  # the written paths reach the data through the pipeline
    assert train.mask_dir.resolve() == (voc_tree["sbd"] / "SegmentationClassAug").resolve()
    assert len(train) + len(train.skipped) == 18

    apply_overrides(workdir / "params.yaml", ["deeplab.arch=vgg16_largefov", "deeplab.init.vgg16_largefov=v.pth"])
    vgg = parse(load_params(workdir / "params.yaml"))  # the table's one override switches weights and CRF
    crf = vgg.evaluate_deeplab.crf
    assert (vgg.deeplab.init, crf.gauss_sxy, crf.bi_sxy, crf.bi_srgb) == ("v.pth", 3.0, 121.0, 5.0)


@quiet_counts
def test_reapplying_switches_profiles_with_one_header(workdir, voc_tree):
    _apply("voc-code", voc_tree)
    _apply("voc-paper", voc_tree)
    text = (workdir / "params.yaml").read_text()
    params = load_params(workdir / "params.yaml")
    assert params["mining"]["rule"] == "paper" and params["train_onestep"]["weight_decay"] == 5e-4
    assert text.count("# rrm profile") == 2 and "voc-code" not in text.split("\n", 2)[0]


@quiet_counts
def test_bad_profile_lists_every_bad_key_and_writes_nothing(workdir, voc_tree):
    bad = workdir / "bad.yaml"
    bad.write_text("train_onestep:\n  lr: -1.0\n  momentum: high\n  nesterov: true\n"
                   "mining.rule: median\nmodel: {width: 1.0}\n")
    before = (workdir / "params.yaml").read_bytes()
    with pytest.raises(ValueError) as error:
        apply_profile(bad, "params.yaml", voc_root=voc_tree["voc"])
    message = str(error.value)
    assert "bad.yaml" in message
    for key in ("train_onestep.lr: -1.0", "train_onestep.momentum: 'high' is a string",
                "train_onestep.nesterov: not a params.yaml setting", "mining.rule: 'median'"):
        assert key in message
    assert "model.width" not in message and message.count("train_onestep.momentum") == 1
    assert (workdir / "params.yaml").read_bytes() == before


@quiet_counts
def test_apply_fails_before_writing_when_weights_are_missing(workdir, voc_tree):
    before = (workdir / "params.yaml").read_bytes()
    with pytest.raises(FileNotFoundError, match="weights/nothing.pth: model.init"):
        apply_profile("voc-paper", "params.yaml", voc_root=voc_tree["voc"], weights="weights/nothing.pth")
    assert (workdir / "params.yaml").read_bytes() == before
    assert not (voc_tree["voc"] / "ImageSets/Segmentation/train_aug.txt").exists()


@quiet_counts
def test_cli_show_and_apply(workdir, voc_tree):
    runner = CliRunner()
    shown = runner.invoke(app, ["show", "voc-paper", "--params", "params.yaml"])
    assert shown.exit_code == 0, shown.output
    line = next(row for row in shown.output.splitlines() if row.startswith("train_onestep.weight_decay "))
    assert line.split()[1] == "0.0005"
    applied = runner.invoke(app, ["apply", "voc-code", "--voc-root", str(voc_tree["voc"]), "--sbd-root",
                                  str(voc_tree["sbd"]), "--weights", "weights/res38.pth"])
    assert applied.exit_code == 0, applied.output
    written = load_params(workdir / "params.yaml")
    assert written["deeplab"]["init"] == {"vgg16_largefov": "weights/vgg16-397923af.pth",
                                          "resnet101_v2": "weights/resnet101-63fe2227.pth"}
    assert written["data"]["root"] == str(voc_tree["voc"])  # absolute paths stay absolute (dvc exp --queue)
    assert written["data"]["mask_dir"] == "../../SBD/benchmark_RELEASE/SegmentationClassAug"
    assert "deeplab.init.resnet101_v2 not found" in applied.output  # two-step only: a warning, not an error
    assert "deeplab.init.vgg16_largefov not found" in applied.output
    failed = runner.invoke(app, ["apply", "voc-code", "--weights", "weights/missing.pth"])
    assert failed.exit_code == 1 and "weights/missing.pth" in failed.output


def test_voc_code_resolves_to_the_authors_script_values() -> None:
    """voc-code against the authors' scripts' values, written down in tests/authors_settings.py from
    train_from_cls_weight.py, SegNet.forward and tool/imutils.py (not restated from the YAML)."""
    from authors_settings import CAM_SCALES, CRF, ENERGY, INFERENCE_CRF, MINING, ONESTEP

    p = parse(expand(load_params(PARAMS), load_profile("voc-code"), source="test"))
    assert p.evaluate.crf == INFERENCE_CRF
    assert p.mining.params.crf == CRF
    assert p.mining.params == MINING
    assert p.mining.cam_scales == CAM_SCALES
    assert {k: getattr(p.train_onestep, k) for k in ONESTEP} == ONESTEP
    assert {k: getattr(p.train_onestep.energy, k) for k in ENERGY} == ENERGY
    assert (p.train_onestep.optimizer, p.train_onestep.loss, p.train_onestep.pseudo) == ("sgd", "joint", "rrm")


def test_coco_is_rrm_from_imagenet_with_the_coco_recipe_of_wsss_code():
    """coco: voc-code-imagenet's method (PSA's classifier recipe, RRM's mining, losses and learning rates) on
    data.dataset coco, with ToCo's / DuPL's COCO schedule, crop and test protocol (the profile's comments)."""
    imagenet, coco = load_profile("voc-code-imagenet"), load_profile("coco")
    # switching to or from it never leaves another profile's values behind (data.labels_file: COCO's own)
    assert coco.keys() - imagenet.keys() == {"data.labels_file"} and imagenet.keys() <= coco.keys()
    assert {k: v for k, v in coco.items() if imagenet.get(k) != v} == {
        "data.dataset": "coco", "data.root": "data/coco", "data.train_split": "train2014",
        "data.val_split": "val2014", "data.test_split": "val2014", "train_cls.steps": 76950,
        "train_onestep.steps": 80000, "train_onestep.crop_size": 448, "train_full.steps": 80000,
        "train_full.crop_size": 448, "evaluate.scales": [1.0, 1.25, 1.5], "evaluate.flip": True,
        "evaluate.crf.gauss_sxy": 1.0, "evaluate.crf.gauss_compat": 1.0, "evaluate.crf.bi_sxy": 121.0,  # ToCo's
        "evaluate_cam.split": "train2014", "export_pseudo.split": "train2014",
        "evaluate_deeplab.scales": [1.0, 1.25, 1.5]}
    assert 76950 == 82_081 // 16 * 15  # PSA's 15 epochs at batch 16, of COCO's annotated train2014
    parse(expand(load_params(PARAMS), coco, source="coco"))  # validates


def test_apply_coco_checks_the_layout_not_voc(workdir, tiny_dataset):
    with pytest.raises(FileNotFoundError, match=r"not a coco root \(`rrm prepare-coco` writes one\); missing: .*"
                                                r"ImageSets/train2014\.txt"):
        apply_profile("coco", "params.yaml", coco_root="data/coco", weights="weights/res38.pth")
    write_coco_layout(tiny_dataset, workdir / "data" / "coco", {"train": "train2014", "val": "val2014"})
    merged = apply_profile("coco", "params.yaml", coco_root="data/coco", weights="weights/res38.pth",
                           deeplab_weights="weights/resnet101.pth")
    written = load_params(workdir / "params.yaml")
    assert written == merged and written["data"]["dataset"] == "coco" and written["data"]["root"] == "data/coco"
    assert written["data"]["mask_dir"] is None  # no SBD folder is looked for
    with pytest.raises(ValueError, match="give one of --voc-root and --coco-root"):
        apply_profile("coco", "params.yaml", coco_root="data/coco", voc_root="data/coco")
