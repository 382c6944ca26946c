"""Results that travel: the tiny pipeline's models and metrics, and one experiment, reach a second clone
through a DVC remote (a local directory) and a git remote, with nothing re-trained (docs/sharing.md)."""

from __future__ import annotations

import json

import pytest
import yaml

from rrm.experiments import tables


def _stage_names(repo) -> list[str]:
    return list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])


def _metrics_files(repo) -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted((repo / "reports").rglob("metrics.json"))}


def _experiment_metrics(shown: list[dict], name: str) -> dict:
    """{metrics file: data} of the experiment called `name` in `dvc exp show --json` output."""
    found = [exp["revs"][0] for row in shown for exp in row.get("experiments") or []
             if exp.get("name") == name]
    assert len(found) == 1, f"experiment {name} not listed once by dvc exp show: {len(found)}"
    return {file: value["data"] for file, value in found[0]["data"]["metrics"].items()}


@pytest.mark.slow
def test_push_then_clone_pull_gives_the_results_without_training(tiny_pipeline, tmp_path, monkeypatch):
    a, run = tiny_pipeline.repo, tiny_pipeline.run
    run(["dvc", "push"])
    origin, b = tmp_path / "origin.git", tmp_path / "clone"
    run(["git", "clone", "-q", "--bare", str(a), str(origin)], cwd=tmp_path)  # the team's git server
    run(["git", "clone", "-q", str(origin), str(b)], cwd=tmp_path)
    for args in (["git", "config", "user.name", "ci2"], ["git", "config", "user.email", "ci2@example.com"],
                 ["dvc", "pull"]):
        run(args, cwd=b)

    assert json.loads(run(["dvc", "status", "--json"], cwd=b)) == {}
    repro = run(["dvc", "repro"], cwd=b)
    assert "Running stage" not in repro
    assert [s for s in _stage_names(b) if f"Stage '{s}' didn't change, skipping" not in repro] == []
    assert _metrics_files(b) == _metrics_files(a) and _metrics_files(b)
    assert (b / "models").is_dir() and sorted(p.name for p in (b / "models").iterdir()) == sorted(
        p.name for p in (a / "models").iterdir())

    # HEAD's experiments as docs/sharing.md splits the tables: commits to the git remote, outputs to the
    # DVC remote; then into the clone
    name = tiny_pipeline.experiment
    assert f"Pushed experiment {name}" in run(["dvc", "exp", "push", str(origin)])
    run(["dvc", "exp", "pull", "origin"], cwd=b)
    ours = _experiment_metrics(json.loads(run(["dvc", "exp", "show", "--json"])), name)
    theirs = _experiment_metrics(json.loads(run(["dvc", "exp", "show", "--json"], cwd=b)), name)
    assert theirs == ours and "reports/onestep/metrics.json" in theirs
    # `rrm tables run` counts it as finished and `rrm tables report` reads it, no stale metrics file
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", tiny_pipeline.env["DVC_SITE_CACHE_DIR"])
    for results in (tables.collect_results(b), tables.collect_results(b, all_commits=True)):
        assert results[name]["state"] == "success" and results[name]["stale"] == []
        assert results[name]["metrics"] == ours
    # its models came with it: applied in the clone, the workspace is consistent without re-running
    run(["dvc", "exp", "apply", name], cwd=b)
    assert json.loads(run(["dvc", "status", "--json"], cwd=b)) == {}
    key, value = tiny_pipeline.override.split("=")
    assert yaml.safe_load((b / "params.yaml").read_text())[key] == yaml.safe_load(value)
    assert (b / "models/onestep.pt").read_bytes() != (a / "models/onestep.pt").read_bytes()  # not the baseline's
