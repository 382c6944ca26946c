"""Results that travel: the tiny pipeline's models and metrics reach a second clone through a DVC remote (a
local directory) and a git remote with nothing re-trained, and experiments run on two machines meet in a
third clone, as docs/sharing.md splits Tables 1–5 (the session's `tiny_pipeline`, tests/conftest.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from rrm.experiments import tables

# machine B's experiment: a scoring setting, so that only the stages after training run
SECOND_EXPERIMENT = ("tiny-flip", "evaluate_deeplab.flip=true", "evaluate_deeplab")  # name, -S, target


def _stage_names(repo: Path) -> list[str]:
    return list(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"])


def _files(repo: Path, folder: str, pattern: str = "*") -> dict[str, bytes]:
    return {str(p.relative_to(repo)): p.read_bytes() for p in sorted((repo / folder).rglob(pattern))
            if p.is_file()}


def _experiment_metrics(shown: list[dict], name: str) -> dict:
    """{metrics file: data} of the experiment called `name` in `dvc exp show --json` output."""
    found = [exp["revs"][0] for row in shown for exp in row.get("experiments") or []
             if exp.get("name") == name]
    assert len(found) == 1, f"experiment {name} not listed once by dvc exp show: {len(found)}"
    return {file: value["data"] for file, value in found[0]["data"]["metrics"].items()}


@dataclass(frozen=True)
class Team:
    origin: Path  # the team's git server (bare)
    clone: Path   # machine B: cloned from it, then `dvc pull`


@pytest.fixture(scope="module")
def team(tiny_pipeline, tmp_path_factory) -> Team:
    run, root = tiny_pipeline.run, tmp_path_factory.mktemp("team")
    origin, clone = root / "origin.git", root / "clone"
    run(["dvc", "push"])
    run(["git", "clone", "-q", "--bare", str(tiny_pipeline.repo), str(origin)], cwd=root)
    run(["git", "clone", "-q", str(origin), str(clone)], cwd=root)
    for args in (["git", "config", "user.name", "ci2"], ["git", "config", "user.email", "ci2@example.com"],
                 ["dvc", "pull"]):
        run(args, cwd=clone)
    return Team(origin, clone)


@pytest.mark.slow
def test_clone_and_pull_gives_the_results_without_training(tiny_pipeline, team):
    a, b, run = tiny_pipeline.repo, team.clone, tiny_pipeline.run
    assert json.loads(run(["dvc", "status", "--json"], cwd=b)) == {}
    repro = run(["dvc", "repro"], cwd=b)
    assert "Running stage" not in repro
    assert [s for s in _stage_names(b) if f"Stage '{s}' didn't change, skipping" not in repro] == []
    assert _files(b, "reports", "metrics.json") == _files(a, "reports", "metrics.json")
    assert _files(b, "reports", "metrics.json")
    assert _files(b, "models") == _files(a, "models") and _files(b, "models")  # the same bytes, not retrained


@pytest.mark.slow
def test_experiments_from_two_machines_meet_in_a_third_clone(tiny_pipeline, team, tmp_path, monkeypatch):
    a, b, run = tiny_pipeline.repo, team.clone, tiny_pipeline.run
    first = tiny_pipeline.experiment
    second, override, target = SECOND_EXPERIMENT
    key, value = override.split("=")
    section, field = key.split(".")
    assert field in yaml.safe_load((b / "params.yaml").read_text())[section], f"{key} not in params.yaml"

    # machine B, with the pulled results, runs only its target (as `rrm tables run` targets a cell's stage)
    on_b = replace(tiny_pipeline, env={**tiny_pipeline.env, "PYTHONPATH": str(b)}).run
    ran = on_b(["dvc", "exp", "run", "--temp", "-n", second, "-S", override, target], cwd=b)
    assert [s for s in _stage_names(b) if f"Running stage '{s}'" in ran] == [target]

    # each machine pushes HEAD's experiments without naming them (commits to git, outputs to the DVC remote)
    assert f"Pushed experiment {first}" in run(["dvc", "exp", "push", str(team.origin)])
    assert f"Pushed experiment {second}" in run(["dvc", "exp", "push", "origin"], cwd=b)

    # a third clone pulls both and reads them as `rrm tables run` and `rrm tables report` do
    c = tmp_path / "third"
    run(["git", "clone", "-q", str(team.origin), str(c)], cwd=tmp_path)
    for args in (["git", "config", "user.name", "ci3"], ["git", "config", "user.email", "ci3@example.com"],
                 ["dvc", "exp", "pull", "origin"]):
        run(args, cwd=c)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], cwd=c))
    expected = {first: _experiment_metrics(json.loads(run(["dvc", "exp", "show", "--json"])), first),
                second: _experiment_metrics(json.loads(run(["dvc", "exp", "show", "--json"], cwd=b)), second)}
    assert {name: _experiment_metrics(shown, name) for name in expected} == expected
    assert expected[first] != expected[second]
    monkeypatch.setenv("DVC_SITE_CACHE_DIR", tiny_pipeline.env["DVC_SITE_CACHE_DIR"])
    needed = {first: ["reports/cam/metrics.json", "reports/onestep/metrics.json"],
              second: ["reports/twostep/metrics.json"]}
    for results in (tables.collect_results(c), tables.collect_results(c, all_commits=True)):
        assert tables.missing(expected, results, needed) == []  # `run` counts both as finished
        for name, metrics in expected.items():
            assert results[name]["state"] == "success" and results[name]["stale"] == []
            assert results[name]["metrics"] == metrics

    # their models came with them: applied in the third clone, the workspace is consistent without running
    run(["dvc", "exp", "apply", first], cwd=c)
    assert json.loads(run(["dvc", "status", "--json"], cwd=c)) == {}
    key, value = tiny_pipeline.override.split("=")
    assert yaml.safe_load((c / "params.yaml").read_text())[key] == yaml.safe_load(value)
    assert (c / "models/onestep.pt").read_bytes() != (a / "models/onestep.pt").read_bytes()  # not the baseline's
