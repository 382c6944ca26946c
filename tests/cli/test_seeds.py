"""`rrm seeds check` and `rrm seeds summary` on files and experiment records written here."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

import rrm.cli.seeds as seeds_cli
from rrm.cli import app
from rrm.experiments.spread import spread_table

runner = CliRunner()


def _metrics(crf: float) -> dict:
    return {"reports/onestep/metrics.json": {"miou": crf - 0.07, "miou_crf": crf}}


def _write_run(repo, metrics: dict) -> None:
    for file, data in metrics.items():
        (repo / file).parent.mkdir(parents=True, exist_ok=True)
        (repo / file).write_text(json.dumps(data))


def test_check_says_per_figure_and_fails_outside(tmp_path):
    table = spread_table({0: _metrics(0.63), 1: _metrics(0.65), 2: _metrics(0.64)})
    (tmp_path / "reports/spread").mkdir(parents=True)
    (tmp_path / "reports/spread/spread.json").write_text(json.dumps({"figures": table}))
    _write_run(tmp_path, _metrics(0.645))
    ok = runner.invoke(app, ["seeds", "check", "--repo", str(tmp_path)])
    assert ok.exit_code == 0, ok.output
    assert "one-step + CRF" in ok.output and "within spread" in ok.output and "OUTSIDE" not in ok.output
    _write_run(tmp_path, _metrics(0.75))  # 11 points above a mean of 64 with sd 1: outside
    bad = runner.invoke(app, ["seeds", "check", "--repo", str(tmp_path)])
    assert bad.exit_code == 1 and "OUTSIDE spread" in bad.output


def test_check_names_a_missing_spread_file(tmp_path):
    result = runner.invoke(app, ["seeds", "check", "--repo", str(tmp_path)])
    assert result.exit_code == 1 and "spread.json: no spread file" in result.output


def test_summary_groups_experiments_against_the_workspace(tmp_path, monkeypatch):
    params = {"seed": 0, "alpha_ratio": 0.4}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    def result(seed, alpha, crf):
        return {"state": "success", "params": {"params.yaml": {**params, "seed": seed, "alpha_ratio": alpha}},
                "metrics": _metrics(crf)}
    records = {f"e{i}": r for i, r in enumerate(
        [result(0, 0.4, 0.63), result(1, 0.4, 0.65), result(0, 0.2, 0.70), result(1, 0.2, 0.72)])}
    monkeypatch.setattr(seeds_cli, "_results", lambda repo, all_commits: records)
    out = runner.invoke(app, ["seeds", "summary", "--repo", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "## alpha_ratio=0.2 (seeds [0, 1])" in out.output
    # d = +7, +7 points: se 0, so the difference is beyond noise
    assert "| one-step + CRF | 71.0 ± 1.4 (2) | +7.0 ± 0.0 (2) | above baseline |" in out.output


def test_run_queues_the_missing_seeds_and_writes_the_spread(tmp_path, monkeypatch):
    params = {"seed": 0, "alpha_ratio": 0.4}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    calls = []
    finished = {"seed-0": {"state": "success", "params": {"params.yaml": params}, "metrics": _metrics(0.63)}}

    def fake_dvc(args, repo):
        calls.append(args)
        if args[:2] == ["exp", "run"] and "--run-all" in args:  # the queue runs: seeds 1 and 2 finish
            for seed, crf in ((1, 0.65), (2, 0.64)):
                finished.setdefault(f"seed-{seed}", {"state": "success", "params": {"params.yaml": {**params, "seed": seed}},
                                                               "metrics": _metrics(crf)})

    monkeypatch.setattr(seeds_cli, "_dvc", fake_dvc)
    monkeypatch.setattr(seeds_cli, "_results", lambda repo, all_commits: dict(finished))
    monkeypatch.setattr("rrm.experiments.tables.runner.check_git_identity", lambda repo: None)
    out = runner.invoke(app, ["seeds", "run", "--seeds", "3", "--repo", str(tmp_path),
                              "--out", str(tmp_path / "spread.json")])
    assert out.exit_code == 0, out.output
    assert calls == [["exp", "run", "--queue", "-n", "seed-1", "-S", "seed=1"],
                     ["exp", "run", "--queue", "-n", "seed-2", "-S", "seed=2"],
                     ["exp", "run", "--run-all", "-j", "1"]]  # seed-0 had finished: reused
    written = json.loads((tmp_path / "spread.json").read_text())["figures"]["one-step + CRF"]
    assert written["n"] == 3 and abs(written["mean"] - 0.64) < 1e-12 and abs(written["sd"] - 0.01) < 1e-12
    assert (tmp_path / "spread.md").read_text().startswith("# Spread over seeds 0..2")
    finished["seed-2"]["params"]["params.yaml"]["alpha_ratio"] = 0.2  # a seed run of another setting
    other = runner.invoke(app, ["seeds", "run", "--seeds", "3", "--repo", str(tmp_path),
                                "--out", str(tmp_path / "spread.json")])
    assert other.exit_code == 1 and "seed-2 ran other params" in other.output
