"""rrm.experiments.tables (plan, runner, report): the experiment table's `-S` expansion and dedupe, results from `dvc exp show --json`,
staleness from dvc.lock, the report (ours vs paper, "not run"), figures, and one real queue run of a
trivial pipeline in a scratch git + DVC repository."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from PIL import Image

from rrm.data.classes import CLASSES
from rrm.experiments import tables
from rrm.experiments.tables import runner
from rrm.settings import read_yaml

TABLE = tables.default_table()  # the packaged rrm/experiments/configs/tables.yaml
PARAMS = {"data": {"root": "data/embedded", "val_split": "val", "test_split": "test"},
          "prepare_data": {"generate": True}}
BASE = ["data.val_split=val", "deeplab.arch=vgg16_largefov", "train_onestep.pseudo=rrm"]


@pytest.fixture(scope="module")
def table() -> dict:
    return tables.load_table(TABLE)


def _exp(name: str, rev: str, *, state: str | None = "success", params: dict | None = None,
         metrics: dict | None = None, error: bool = False, timestamp: str = "2026-11-25T17:22:10") -> dict:
    """One experiment entry shaped like `dvc exp show --json` (dvc 3.67) output."""
    data = {"rev": rev, "timestamp": timestamp,
            "params": {"params.yaml": {"data": params or {"data": {"root": "data/embedded"}}}},
            "metrics": {f: {"data": m} for f, m in (metrics or {}).items()},
            "deps": {"data/embedded": {"hash": "778f2f187624a12af45cf111edf31c8d.dir", "size": 1,
                                       "nfiles": 3}},
            "outs": {}, "meta": {}}
    executor = None if state is None else {"state": state, "name": "dvc-task",
                                           "local": {"root": None, "log": None, "pid": None, "returncode": 0}}
    rev_entry = {"rev": rev, "name": name, "data": data, "experiments": None,
                 "error": {"msg": "Experiment run failed", "type": ""} if error else None}
    return {"revs": [rev_entry], "executor": executor, "name": name}


def _show(*experiments: dict, baseline: str = "b" * 40) -> list[dict]:
    return [{"rev": "workspace", "name": None, "data": {}, "error": None, "experiments": None},
            {"rev": baseline, "name": "main", "data": {}, "error": None, "experiments": list(experiments)}]


def _onestep(miou_crf: float, per_class: dict | None = None) -> dict:
    return {"reports/onestep/metrics.json": {"miou": miou_crf - 0.05, "miou_crf": miou_crf, "pixel_acc": 0.9,
                                             "per_class_iou_crf": per_class or {}}}


# ----------------------------------------------------------------------------------------- expansion


def test_expand_gives_exact_overrides_and_dedupes_shared_cells(table):
    the_plan = tables.plan(table, PARAMS)
    overrides = the_plan.overrides
    assert overrides["t1-ce-r0.1"] == ["alpha_ratio=0.1", "data.val_split=val", "deeplab.arch=vgg16_largefov",
                                       "train_onestep.loss=ce", "train_onestep.pseudo=rrm"]
    assert overrides["t2-cam-joint"] == ["alpha_ratio=0.4", *BASE[:2], "train_onestep.loss=joint",
                                         "train_onestep.pseudo=cam"]
    assert overrides["t5-resnet-test"] == ["alpha_ratio=0.4", "data.val_split=test",
                                           "deeplab.arch=resnet101_v2", "train_onestep.loss=joint",
                                           "train_onestep.pseudo=rrm"]
    # 14 (Table 1) + 2 CAM cells + the test twin + two ResNet two-step cells; 26 cells in all.
    assert len(the_plan.cells) == 14 + 4 + 1 + 1 + 6
    assert len(overrides) == 19
    shared = {"t2-rrm-joint", "t3-onestep", "t5-onestep-val", "t5-vgg-val"}
    sharing = {c for c, e in the_plan.experiment_of.items() if e == "t1-joint-r0.4"}
    assert sharing == shared | {"t1-joint-r0.4"}
    assert the_plan.experiment_of["t2-rrm-ce"] == "t1-ce-r0.4"
    assert {c for c, e in the_plan.experiment_of.items() if e == "t4-onestep"} == {
        "t4-onestep", "t5-onestep-test", "t5-vgg-test"}
    # an experiment reproduces only the stages its cells read
    assert the_plan.targets["t1-ce-r0.1"] == ["evaluate_onestep"]
    assert the_plan.targets["t1-joint-r0.4"] == ["evaluate_deeplab", "evaluate_onestep"]
    assert the_plan.targets["t5-resnet-val"] == ["evaluate_deeplab"]
    assert the_plan.experiments_for(["t3"]) == ["t1-joint-r0.4"]
    assert tables.expand(table, PARAMS) == overrides
    cell = next(c for c in the_plan.cells if c.name == "t1-joint-r0.2")
    assert cell.paper == (0.623,) and cell.label == "0.2"
    t4 = next(c for c in the_plan.cells if c.name == "t4-onestep")
    assert len(t4.paper) == 22 and t4.paper[0] == 87.8 and t4.paper[-1] == 62.9


def test_every_cell_runs_at_the_same_seeds(table):
    the_plan = tables.plan(table, PARAMS)
    seeded = tables.with_seeds(the_plan, 3)
    assert table["seeds"] >= 3  # the packaged default
    assert seeded.seeds["t1-ce-r0.1"] == ["t1-ce-r0.1", "t1-ce-r0.1-s1", "t1-ce-r0.1-s2"]
    for exp, runs in seeded.seeds.items():  # paired: the same seeds, otherwise the experiment's overrides
        assert [o for o in seeded.overrides[runs[0]] if o.startswith("seed=")] == ["seed=0"]
        for i, run in enumerate(runs):
            assert sorted(set(seeded.overrides[run]) - {f"seed={i}"}) == the_plan.overrides[exp]
            assert f"seed={i}" in seeded.overrides[run]
            assert seeded.targets[run] == the_plan.targets[exp]
            assert seeded.metrics_files[run] == the_plan.metrics_files[exp]
    assert set(seeded.seeds) == set(the_plan.overrides) and len(seeded.overrides) == 3 * len(the_plan.overrides)
    assert seeded.experiment_of == the_plan.experiment_of  # cells name the seed-0 run
    with pytest.raises(ValueError, match="seeds: expected a whole number >= 1, got 0"):
        tables.with_seeds(the_plan, 0)
    with pytest.raises(ValueError, match="seeds: expected a whole number"):
        tables.validate_table({**table, "seeds": "three"})


def test_test_split_comes_from_params(table):
    params = copy.deepcopy(PARAMS)
    params["data"]["test_split"] = "heldout"
    assert "data.val_split=heldout" in tables.expand(table, params)["t4-onestep"]
    with pytest.raises(ValueError, match="needs params.yaml"):
        tables.expand(table)


@pytest.mark.parametrize(("value", "text"), [
    (0.1, "k=0.1"), (1.0, "k=1.0"), (True, "k=true"), (None, "k=null"),
    ("vgg16_largefov", "k=vgg16_largefov"), ([0.5, 1], "k=[0.5,1]"), ("a b", "k='a b'")])
def test_format_override(value, text):
    assert tables.format_override("k", value) == text


def test_bad_table_errors_name_the_key(tmp_path, table):
    broken = copy.deepcopy(table)
    broken["tables"]["t1"]["paper"]["ce"] = [0.5, 0.5]
    broken["tables"]["t5"]["rows"][0]["report"] = "nowhere"
    path = tmp_path / "tables.yaml"
    path.write_text(yaml.safe_dump(broken))
    with pytest.raises(ValueError, match=r"tables\.yaml: .*t1\.paper\.ce: expected 7 numbers.*'nowhere'"):
        tables.load_table(path)
    broken = copy.deepcopy(table)
    broken["claims"][0]["pairs"].append(["t1-joint-r0.5", "t1-ce-r0.5"])
    with pytest.raises(ValueError, match="unknown cells"):
        tables.plan(broken, PARAMS)


# ------------------------------------------------------------------------------------------- results


def test_parse_exp_show_prefers_success_and_ignores_failed_metrics():
    rows = _show(
        _exp("t1-ce-r0.1", "1" * 40, metrics=_onestep(0.41)),
        # a failed run carries the baseline's metrics files: never a result
        _exp("t1-ce-r0.2", "2" * 40, state="failed", error=True, metrics=_onestep(0.99)),
        _exp("t1-ce-r0.3", "3" * 40, state="queued"),
        _exp("t1-ce-r0.1", "4" * 40, state="failed", error=True, timestamp="2026-11-26T00:00:00"),
        _exp("t1-ce-r0.4", "5" * 40, state=None, metrics=_onestep(0.5)),  # plain `dvc exp run`: no executor
        _exp("t1-ce-r0.1", "6" * 40, state="queued"),  # a forced re-run waiting in the queue
    )
    found = tables.parse_exp_show(rows)
    assert found["t1-ce-r0.1"]["state"] == "success" and found["t1-ce-r0.1"]["rev"] == "1" * 40
    assert sorted(s for s, _ in found["t1-ce-r0.1"]["entries"]) == ["failed", "queued", "success"]
    assert found["t1-ce-r0.1"]["baseline"] == "b" * 40
    assert found["t1-ce-r0.1"]["metrics"]["reports/onestep/metrics.json"]["miou_crf"] == 0.41
    assert found["t1-ce-r0.2"]["state"] == "failed"
    assert found["t1-ce-r0.3"]["state"] == "queued"
    assert found["t1-ce-r0.4"]["state"] == "success"
    names = ["t1-ce-r0.1", "t1-ce-r0.2", "t1-ce-r0.3", "t1-ce-r0.4", "t1-ce-r0.6"]
    assert tables.missing(names, found) == ["t1-ce-r0.2", "t1-ce-r0.3", "t1-ce-r0.6"]
    # finished, but a metrics file a cell needs is absent (stale): still missing
    need = {"t1-ce-r0.1": ["reports/onestep/metrics.json", "reports/twostep/metrics.json"]}
    assert tables.missing(["t1-ce-r0.1", "t1-ce-r0.4"], found, need) == ["t1-ce-r0.1"]


def _stage(params=None, deps=(), outs=()):
    return {"cmd": "x", "params": {"params.yaml": params or {}},
            "deps": [{"path": p, "md5": m} for p, m in deps],
            "outs": [{"path": p, "md5": m} for p, m in outs]}


def test_stale_outputs_follow_params_and_upstream_hashes():
    lock = {"stages": {
        "train": _stage({"alpha_ratio": 0.1, "data": {"val_split": "val"}}, [("code.py", "c")],
                        [("m.pt", "new")]),
        "evaluate": _stage({}, [("m.pt", "new")], [("reports/onestep/metrics.json", "e")]),
        # skipped by a targeted experiment: its lock entry still reads the baseline's model
        "export": _stage({}, [("m.pt", "old")], [("pseudo", "p")]),
        "deeplab": _stage({"deeplab": {"arch": "vgg"}}, [("pseudo", "p")],
                          [("reports/twostep/metrics.json", "d")]),
        # skipped too: recorded the baseline's alpha_ratio, inputs unchanged
        "cam": _stage({"alpha_ratio": 0.4}, [("m0.pt", "z")], [("reports/cam/metrics.json", "c")]),
    }}
    params = {"params.yaml": {"alpha_ratio": 0.1, "data": {"val_split": "val"}, "deeplab": {"arch": "vgg"}}}
    assert tables.stale_outputs(lock, params) == {"pseudo", "reports/twostep/metrics.json",
                                                  "reports/cam/metrics.json"}
    params["params.yaml"]["alpha_ratio"] = 0.4  # now train's own record disagrees: all of its chain is stale
    assert "reports/onestep/metrics.json" in tables.stale_outputs(lock, params)


def test_lock_floats_read_as_dvc_writes_them():
    # DVC writes 1e-5 as `1e-05`, which plain PyYAML reads as a string: every stage looked stale and
    # `rrm tables run` re-trained finished cells
    lock = read_yaml("stages:\n  train:\n    cmd: x\n    params:\n      params.yaml:\n"
                            "        train: {weight_decay: 1e-05, lr: 2.0e-3}\n"
                            "    outs: [{path: reports/onestep/metrics.json, md5: e}]\n")
    params = {"params.yaml": {"train": {"weight_decay": 1e-5, "lr": 0.002}}}
    assert tables.stale_outputs(lock, params) == set()
    params["params.yaml"]["train"]["weight_decay"] = 1e-4
    assert tables.stale_outputs(lock, params) == {"reports/onestep/metrics.json"}


def test_parallel_workers_split_the_cores(monkeypatch):
    """Two workers with OpenMP's default threads each would spin-wait on each other's cores."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runner.os, "cpu_count", lambda: 8)
    assert "OMP_NUM_THREADS" not in runner._env(1)
    assert runner._env(2)["OMP_NUM_THREADS"] == "4"
    assert runner._env(16)["OMP_NUM_THREADS"] == "1"
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting wins
    assert runner._env(2)["OMP_NUM_THREADS"] == "3"


def test_running_tasks_parses_queue_status():
    status = ("Task     Name           Created       Status\n"
              "ba15b0a  t1-joint-r0.2  12:47 AM      Running\n"
              "498b3ad  t1-joint-r0.3  12:47 AM      Queued\n"
              "a7fc95f  t1-ce-r0.2     Nov 25, 2026  Failed\n"
              "\nWorker status: 0 active, 0 idle\n")
    assert tables.running_tasks(status) == ["t1-joint-r0.2"]


# -------------------------------------------------------------------------------------------- report


def _fake_results(table) -> dict:
    per_class = {c: 0.5 for c in CLASSES}
    del per_class["cow"]  # absent from the split: DVC drops the NaN
    rows = _show(
        _exp("t1-ce-r0.1", "a" * 40, metrics=_onestep(0.412)),
        _exp("t1-joint-r0.1", "c" * 40, metrics=_onestep(0.45)),
        _exp("t1-joint-r0.2", "d" * 40, metrics=_onestep(0.60)),
        _exp("t1-joint-r0.4", "e" * 40, metrics=_onestep(0.55, per_class)),
        _exp("t1-joint-r1.0", "f" * 40, metrics=_onestep(0.50)),
        _exp("t2-cam-joint", "1" * 40, state="failed", error=True, metrics=_onestep(0.777)),
    )
    return tables.parse_exp_show(json.loads(json.dumps(rows)))


def test_report_renders_ours_paper_difference_and_not_run(table, tmp_path):
    meta = {"date": "2026-11-25 17:30 UTC", "commit": "0123456789abcdef", "params": PARAMS}
    out = tmp_path / "reports" / "tables.md"
    text = tables.render_report(table, _fake_results(table), meta, out)
    assert out.read_text() == text
    lines = text.splitlines()

    def row(prefix):
        return [c.strip() for c in next(ln for ln in lines if ln.startswith(prefix)).strip("|").split("|")]

    ce = row("| CE loss (ours)")
    assert ce[1] == "0.412" and ce[2:] == ["not run"] * 6
    assert row("| CE loss (paper)")[1:] == ["0.486", "0.487", "0.484", "0.485", "0.483", "0.495", "0.557"]
    assert row("| CE loss (Δ)")[1:3] == ["-0.074", "—"]
    assert row("| Joint loss (ours)")[1:5] == ["0.450", "0.600", "not run", "0.550"]
    # Table 2: the failed experiment's (baseline) metrics never show; the shared RRM+joint cell does
    assert row("| CAM (ours)")[1:] == ["not run", "not run"]
    assert row("| Ours-RRM (ours)")[1:] == ["not run", "0.550"]
    assert row("| Ours-RRM (Δ)")[2] == "-0.076"
    # Table 3 in percent, per class; an absent class is n/a; Table 4 (test) not run
    t3 = text.split("### Table 3")[1].split("###")[0].splitlines()
    ours = [c.strip() for c in next(ln for ln in t3 if "(ours)" in ln).strip("|").split("|")]
    assert ours[1] == "50.0" and ours[11] == "n/a" and ours[-1] == "55.0"
    paper = [c.strip() for c in next(ln for ln in t3 if "(paper)" in ln).strip("|").split("|")]
    assert paper[1] == "87.9" and paper[-1] == "62.6"
    delta = [c.strip() for c in next(ln for ln in t3 if "(Δ)" in ln).strip("|").split("|")]
    assert delta[1] == "-37.9" and delta[11] == "—" and delta[-1] == "-7.6"
    t4 = text.split("### Table 4")[1].split("###")[0]
    assert t4.count("not run") == 22
    t5 = "###" + text.split("### Table 5")[1].split("##")[0]
    assert row_cells(t5, "| Ours-RRM (one-step) (ours)") == ["55.0", "not run"]
    assert row_cells(t5, "| Ours-RRM-VGG (two-step) (ours)") == ["not run", "not run"]  # twostep not measured
    assert row_cells(t5, "| Ours-RRM-ResNet (two-step) (paper)") == ["66.3", "66.5"]
    # provenance: commit, experiment commit, date and dataset for each number
    assert "from commit 0123456 " in text
    prov = row("| t1-ce-r0.1 |")
    assert prov[3] == "success" and prov[4] == "a" * 7 and prov[5] == "b" * 7
    assert prov[6] == "2026-11-25T17:22:10" and prov[7] == "`data/embedded` (md5 778f2f18)"
    assert row("| t5-resnet-val |")[3] == "not run"
    assert "0.777" not in text and "0.727" not in text  # the failed run's metrics, with or without CRF


def test_report_claims_paragraph_says_what_was_measured(table):
    meta = {"date": "d", "commit": "c", "params": PARAMS}
    text = tables.render_report(table, _fake_results(table), meta)
    claims = text.split("## Where our ordering agrees with the paper")[1].split("## Where each")[0]
    joint = next(ln for ln in claims.splitlines() if "joint loss beats" in ln)
    # paper: joint > CE except at ratio 0.1 (0.428 < 0.486); Table 2's RRM pair is Table 1's r0.4 pair,
    # counted once. Ours measured only at 0.1, where joint wins.
    assert "Paper: holds in 7 of 8" in joint and "Ours: holds in 1 of 1 measured (7 not run)" in joint
    assert "same ordering as the paper in 0 of 1" in joint and "t1-joint-r0.1 vs t1-ce-r0.1" in joint
    curve = next(ln for ln in claims.splitlines() if "inverted U (joint" in ln)
    assert "Paper: peak at 0.3" in curve and "inverted U: yes" in curve
    assert "Ours: peak at 0.2 (0.600; ends 0.450 / 0.500), inverted U: yes — agrees" in curve
    ce_curve = next(ln for ln in claims.splitlines() if "inverted U (CE" in ln)
    assert "Paper: peak at 1.0" in ce_curve and "cannot be judged yet" in ce_curve
    assert "RRM's reliable regions" in claims and "0 of 0 measured (2 not run)" in claims


def test_report_gives_mean_sd_and_paired_verdicts_over_seeds(table):
    # per seed 0, 1, 2 (mIoU with CRF); the paired differences joint - CE, by hand:
    # r0.1: +0.05 +0.06 +0.04, mean 0.05, sd 0.01, se 0.01 / sqrt 3 = 0.0058: 0.05 > 2 se -> holds
    # r0.2: -0.02 +0.05 -0.01, mean 0.0067, sd 0.0379, se 0.0219: 0.0067 < 2 se -> within noise
    # r0.3: -0.10 -0.09 -0.11, mean -0.10, sd 0.01 -> reversed; r0.4 at seed 0 only -> one seed
    runs = {"t1-joint-r0.1": (0.50, 0.56, 0.53), "t1-ce-r0.1": (0.45, 0.50, 0.49),
            "t1-joint-r0.2": (0.50, 0.60, 0.55), "t1-ce-r0.2": (0.52, 0.55, 0.56),
            "t1-joint-r0.3": (0.40, 0.42, 0.44), "t1-ce-r0.3": (0.50, 0.51, 0.55),
            "t1-joint-r0.4": (0.55,), "t1-ce-r0.4": (0.50,)}
    experiments = [_exp(tables.seeded_name(name, i), f"{n:02x}{i}".ljust(40, "0"), metrics=_onestep(v))
                   for n, (name, values) in enumerate(runs.items()) for i, v in enumerate(values)]
    results = tables.parse_exp_show(json.loads(json.dumps(_show(*experiments))))
    text = tables.render_report({**table, "seeds": 3}, results, {"date": "d", "commit": "c", "params": PARAMS})
    assert "at seeds 0..2" in text
    # joint r0.1: mean 0.53, sd sqrt((0.03^2 + 0.03^2) / 2) = 0.030; r0.4: one seed, no sd
    assert row_cells(text, "| Joint loss (ours)")[:4] == ["0.530 ± 0.030 (3)", "0.550 ± 0.050 (3)",
                                                          "0.420 ± 0.020 (3)", "0.550"]
    assert row_cells(text, "| CE loss (Δ)")[0] == f"{(0.45 + 0.50 + 0.49) / 3 - 0.486:+.3f}"
    joint = next(ln for ln in text.splitlines() if "joint loss beats" in ln)
    assert "holds 1, reversed 1, within noise 1, one seed 5" in joint  # 8 distinct pairs (t2-rrm is t1 r0.4)
    assert ("t1-joint-r0.1 vs t1-ce-r0.1: holds; t1-joint-r0.2 vs t1-ce-r0.2: within noise; "
            "t1-joint-r0.3 vs t1-ce-r0.3: reversed; t1-joint-r0.4 vs t1-ce-r0.4: one seed") in joint
    prov = row_cells(text, "| t1-ce-r0.1-s2 |")  # every seed's run has its provenance line
    assert prov[0] == "t1-ce-r0.1" and "-S" not in prov[1] and "seed=2" in prov[1] and prov[2] == "success"
    assert row_cells(text, "| t1-ce-r0.4-s1 |")[2] == "not run"


def test_report_points_test_cells_to_the_server_without_test_masks(table):
    meta = {"date": "d", "commit": "c", "params": PARAMS, "test_labelled": False}
    text = tables.render_report(table, {}, meta)
    assert "rrm export-server" in text
    assert row_cells(text, "| Ours-RRM-VGG (two-step) (ours)") == ["not run", "server"]


def row_cells(text: str, prefix: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(prefix))
    return [c.strip() for c in line.strip("|").split("|")][1:]


def test_split_labelled(tmp_path):
    root = tmp_path / "voc"
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "SegmentationClass").mkdir()
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("a\nb\n")
    (root / "ImageSets" / "Segmentation" / "test.txt").write_text("c\n")
    for name in ("a", "b"):
        Image.new("P", (4, 4)).save(root / "SegmentationClass" / f"{name}.png")
    params = {"data": {"root": str(root), "mask_dir": None}}
    assert tables.split_labelled(params, "val") and not tables.split_labelled(params, "test")
    missing_root = {"data": {"root": str(tmp_path / "absent")}}
    assert tables.split_labelled({**missing_root, "prepare_data": {"generate": True}}, "test")
    assert not tables.split_labelled(missing_root, "test")


def test_figures(table, tmp_path):
    curve = tmp_path / "figures" / "table1_ratio.png"
    tables.curve_figure(curve, table, _fake_results(table), PARAMS)
    assert Image.open(curve).size[0] > 100
    csv = curve.with_suffix(".csv").read_text().splitlines()
    assert csv[0] == "ratio,ce,sd_ce,n_ce,paper_ce,joint,sd_joint,n_joint,paper_joint"
    assert csv[1] == "0.1,0.412,,1,0.486,0.45,,1,0.428" and csv[3] == "0.3,,,0,0.484,,,0,0.626"
    seeded = {**_fake_results(table), "t1-ce-r0.1-s1": {**_fake_results(table)["t1-ce-r0.1"],
                                                        "metrics": _onestep(0.512)}}
    tables.curve_figure(curve, {**table, "seeds": 2}, seeded, PARAMS)  # mean 0.462, sd 0.1 / sqrt 2
    row = curve.with_suffix(".csv").read_text().splitlines()[1].split(",")
    # double rounding of a mean and sd of two numbers: a few ulps
    assert [float(v) for v in row[1:4]] == pytest.approx([0.462, 0.1 / 2 ** 0.5, 2], rel=1e-12)
    reports = tmp_path / "reports"
    for name, value in (("onestep", 0.6), ("full", 0.8)):
        (reports / name).mkdir(parents=True)
        metrics = {"per_class_iou_crf": {c: value for c in CLASSES}}
        (reports / name / "metrics.json").write_text(json.dumps(metrics))
    bars = tmp_path / "figures" / "per_class_iou.png"
    assert tables.per_class_figure(bars, table, reports) == ["one-step", "full supervision"]
    assert bars.is_file() and not list(bars.parent.glob(".*.tmp"))


# ------------------------------------------------------------------- a real queue on a trivial pipeline

SCRATCH_TABLE = {
    "metric": "crf",
    "base": {"alpha_ratio": 0.4},
    "splits": {"val": {}},
    "reports": {"onestep": "evaluate_onestep", "twostep": "evaluate_deeplab"},
    "tables": {"t1": {"title": "T1", "scale": 1, "report": "onestep", "split": "val",
                      "rows": [{"key": "ce", "label": "CE"}],
                      "columns": [{"key": f"r{r}", "label": str(r), "set": {"alpha_ratio": r}}
                                  for r in (0.2, 0.9)],
                      "paper": {"ce": [0.5, 0.5]}},
               # same overrides as t1-ce-r0.2: one experiment, which must also reproduce the two-step stage
               "t5": {"title": "T5", "scale": 100, "split": "val", "set": {"alpha_ratio": 0.2},
                      "rows": [{"key": "two", "label": "two-step", "report": "twostep"}],
                      "columns": [{"key": "val", "label": "val"}], "paper": {"two": [60.0]}}},
}
STAGE_A = """import json, os, sys, yaml
p = yaml.safe_load(open("params.yaml"))
if p["alpha_ratio"] == 0.9:
    sys.exit("alpha 0.9 is broken on purpose")
os.makedirs("reports/onestep", exist_ok=True)
json.dump({"miou": 0.1, "miou_crf": p["alpha_ratio"]}, open("reports/onestep/metrics.json", "w"))
open("model.txt", "w").write(str(p["alpha_ratio"]))
"""
STAGE_B = """import json, os
os.makedirs("reports/twostep", exist_ok=True)
alpha = float(open("model.txt").read())
json.dump({"miou": 0.1, "miou_crf": alpha + 0.3}, open("reports/twostep/metrics.json", "w"))
"""
DVC_YAML = {"stages": {
    "evaluate_onestep": {"cmd": "python a.py", "deps": ["a.py"], "params": ["alpha_ratio"],
                         "outs": ["model.txt"],
                         "metrics": [{"reports/onestep/metrics.json": {"cache": False}}]},
    "evaluate_deeplab": {"cmd": "python b.py", "deps": ["b.py", "model.txt"],
                         "metrics": [{"reports/twostep/metrics.json": {"cache": False}}]}}}


@pytest.mark.slow
def test_queue_and_run_in_a_scratch_repo(tmp_path, monkeypatch):
    env = {"DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "site"),
           "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.com"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text(STAGE_A)
    (repo / "b.py").write_text(STAGE_B)
    (repo / "params.yaml").write_text("alpha_ratio: 0.4\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    dvc = str(Path(sys.executable).parent / "dvc")
    for args in (["git", "init", "-q"], ["git", "config", "user.name", "ci"],
                 ["git", "config", "user.email", "ci@example.com"], [dvc, "init", "-q"], [dvc, "repro", "-q"],
                 ["git", "add", "-A"], ["git", "commit", "-qm", "baseline"],
                 # left by an earlier, narrower run: finished, but only the one-step stage was reproduced
                 [dvc, "exp", "run", "-q", "-n", "t1-ce-r0.2", "-S", "alpha_ratio=0.2", "evaluate_onestep"]):
        subprocess.run(args, cwd=repo, check=True, capture_output=True, env={**os.environ, **runner._env()})
    the_plan = tables.plan(SCRATCH_TABLE)
    names = the_plan.experiments_for()
    assert names == ["t1-ce-r0.2", "t1-ce-r0.9"] and the_plan.experiment_of["t5-two-val"] == "t1-ce-r0.2"
    early = tables.collect_results(repo)["t1-ce-r0.2"]
    # the experiment commit still carries the baseline's two-step metrics (0.4 + 0.3): not its result
    assert early["stale"] == ["reports/twostep/metrics.json"]
    assert list(early["metrics"]) == ["reports/onestep/metrics.json"]

    logs: list[str] = []
    failed = tables.queue_and_run(names, 2, the_plan, repo=repo, log=logs.append)
    assert failed == ["t1-ce-r0.9"]  # --run-all exited 0; the failure is found and reported
    assert any(line.startswith("  t1-ce-r0.9: FAILED (dvc queue logs t1-ce-r0.9; log ") for line in logs)
    assert "  t1-ce-r0.2: queued (alpha_ratio=0.2 -> evaluate_deeplab evaluate_onestep)" in logs  # replaced

    results = tables.collect_results(repo, all_commits=True)
    assert results["t1-ce-r0.2"]["stale"] == [] and results["t1-ce-r0.9"]["state"] == "failed"
    assert results["t1-ce-r0.2"]["metrics"]["reports/twostep/metrics.json"]["miou_crf"] == pytest.approx(0.5)
    meta = {"date": "d", "commit": "c", "params": {"data": {"root": "."}}}
    text = tables.render_report(SCRATCH_TABLE, results, meta)
    assert row_cells(text, "| CE (ours)") == ["0.200", "not run"]
    assert row_cells(text, "| two-step (ours)") == ["50.0"]

    # a re-run right after queues nothing for the finished cell
    logs.clear()
    assert tables.queue_and_run(names[:1], 1, the_plan, repo=repo, log=logs.append) == []
    assert logs == ["1 of 1 experiments already finished"]


KILL_STAGE = """import json, os, sys, time, yaml
alpha = yaml.safe_load(open("params.yaml"))["alpha_ratio"]
with open({runs!r}, "a") as log:
    log.write(f"{{alpha}}\\n")
if alpha == 0.3 and os.path.exists({slow!r}):
    open({started!r}, "w").write(str(os.getpid()))
    time.sleep(600)
os.makedirs("reports/onestep", exist_ok=True)
json.dump({{"miou": 0.1, "miou_crf": alpha}}, open("reports/onestep/metrics.json", "w"))
"""
KILL_TABLE = {
    "metric": "crf", "base": {"alpha_ratio": 0.4}, "splits": {"val": {}},
    "reports": {"onestep": "evaluate_onestep"},
    "tables": {"t1": {"title": "T1", "scale": 1, "report": "onestep", "split": "val",
                      "rows": [{"key": "ce", "label": "CE"}],
                      "columns": [{"key": f"r{r}", "label": str(r), "set": {"alpha_ratio": r}} for r in (0.2, 0.3)],
                      "paper": {"ce": [0.5, 0.5]}}},
}


def _kill_tree(pid: int) -> None:
    if pid <= 0:  # 0 or -1 would signal our own process group
        return
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for child in children:
        _kill_tree(int(child))
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_killed_run_resumes_with_only_the_missing_cells(tmp_path, monkeypatch):
    """SIGKILL `rrm tables run` and its queue worker mid-cell: the re-run reaps the dead task, keeps the
    finished cell and runs only the killed one."""
    env = {"DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(tmp_path / "site"),
           "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.com",
           "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.com"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    repo, runs, slow, started = tmp_path / "repo", tmp_path / "runs.txt", tmp_path / "slow", tmp_path / "started"
    repo.mkdir()
    slow.touch()
    (repo / "a.py").write_text(KILL_STAGE.format(runs=str(runs), slow=str(slow), started=str(started)))
    (repo / "params.yaml").write_text("alpha_ratio: 0.4\n")
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"evaluate_onestep": {
        "cmd": "python a.py", "deps": ["a.py"], "params": ["alpha_ratio"],
        "metrics": [{"reports/onestep/metrics.json": {"cache": False}}]}}}))
    (repo / "table.json").write_text(json.dumps(KILL_TABLE))
    dvc = str(Path(sys.executable).parent / "dvc")
    for args in (["git", "init", "-q"], ["git", "config", "user.name", "ci"],
                 ["git", "config", "user.email", "ci@example.com"], [dvc, "init", "-q"], [dvc, "repro", "-q"],
                 ["git", "add", "-A"], ["git", "commit", "-qm", "baseline"]):
        subprocess.run(args, cwd=repo, check=True, capture_output=True, env={**os.environ, **runner._env()})
    script = ("import json; from rrm.experiments import tables; t = json.load(open('table.json')); p = tables.plan(t); "
              "tables.queue_and_run(p.experiments_for(), 1, p, repo='.')")
    first = subprocess.Popen([sys.executable, "-c", script], cwd=repo, env={**os.environ, **runner._env()},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(600):
            if started.exists() or first.poll() is not None:
                break
            time.sleep(0.2)
        assert started.exists(), "the slow cell never started"
    finally:  # everything dies at once, as on a Ctrl-C'd terminal or a lost machine
        workers = [int(p.read_text()) for p in (repo / ".dvc/tmp/exps/celery").glob("*.pid")]
        for pid in [first.pid, *workers]:
            _kill_tree(pid)
        first.wait()
    slow.unlink()

    the_plan = tables.plan(KILL_TABLE)
    logs: list[str] = []
    assert tables.queue_and_run(the_plan.experiments_for(), 1, the_plan, repo=repo, log=logs.append) == []
    assert "  t1-ce-r0.3: its queue worker is gone; marked failed, will be queued again" in logs
    assert runs.read_text().split() == ["0.4", "0.2", "0.3", "0.3"]  # the finished cell did not run again
    results = tables.collect_results(repo)
    assert results["t1-ce-r0.3"]["metrics"]["reports/onestep/metrics.json"]["miou_crf"] == pytest.approx(0.3)


def test_per_class_values_and_figures_follow_the_dataset_of_the_runs(table, tmp_path):
    from rrm.data.datasets import COCO, VOC

    cell = next(c for c in tables.plan(table, PARAMS).cells if c.name == "t3-onestep")
    per_class = {c: 0.5 for c in CLASSES}
    voc_run = tables.parse_exp_show(json.loads(json.dumps(_show(
        _exp("voc-run", "a" * 40, metrics={cell.metrics_file: {"miou_crf": 0.5, "per_class_iou_crf": per_class}})))))
    assert tables.cell_values(cell, voc_run["voc-run"]) == [0.5] * 22
    coco_run = tables.parse_exp_show(json.loads(json.dumps(_show(
        _exp("coco-run", "c" * 40, params={"data": {"dataset": "coco", "root": "data/coco"}},
             metrics={cell.metrics_file: {"miou_crf": 0.5, "per_class_iou_crf": per_class}})))))
    with pytest.raises(ValueError, match="t3-onestep: its run is on coco \\(81 classes\\); the paper's row has 21"):
        tables.cell_values(cell, coco_run["coco-run"])

    assert tables.class_columns(VOC)[:2] == ("bkg", "plane") and tables.class_columns(COCO) == COCO.classes
    reports = tmp_path / "reports"
    (reports / "onestep").mkdir(parents=True)
    (reports / "onestep" / "metrics.json").write_text(json.dumps({"per_class_iou_crf": {c: 0.4 for c in COCO.classes}}))
    bars = tmp_path / "per_class_iou.png"
    coco_params = {**PARAMS, "data": {**PARAMS["data"], "dataset": "coco"}}
    assert tables.per_class_figure(bars, table, reports, params=coco_params) == ["one-step"]
    assert Image.open(bars).size[0] > Image.open(_voc_bars(table, tmp_path)).size[0]  # 81 bar groups, not 21


def _voc_bars(table: dict, tmp_path: Path) -> Path:
    reports = tmp_path / "voc-reports"
    (reports / "onestep").mkdir(parents=True)
    (reports / "onestep" / "metrics.json").write_text(json.dumps({"per_class_iou_crf": {c: 0.4 for c in CLASSES}}))
    bars = tmp_path / "voc_per_class_iou.png"
    tables.per_class_figure(bars, table, reports, params=PARAMS)
    return bars
