"""`rrm seeds`: the pipeline over several seeds as DVC experiments, their spread, paired comparisons of the
settings a user ran, and whether a run reproduces the committed spread (rules: rrm.experiments.spread)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from rrm.experiments import spread as sp
from rrm.io import write_json, write_text

app = typer.Typer(help="Seeds as an axis: spread over seeds, paired comparisons, reproduction check.",
                  no_args_is_help=True, pretty_exceptions_show_locals=False)
SPREAD = Path("reports/spread/spread.json")


def _dvc(args: list[str], repo: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if done.returncode != 0:
        typer.echo(f"error: dvc {' '.join(args)} failed:\n{done.stderr.strip()[-2000:]}", err=True)
        raise typer.Exit(code=1)
    return done


def _results(repo: Path, all_commits: bool) -> dict[str, dict]:
    from rrm.experiments.tables.runner import collect_results

    try:
        return collect_results(repo, all_commits=all_commits)
    except RuntimeError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from error


def _workspace_key(repo: Path) -> tuple:
    import yaml

    params = yaml.safe_load((repo / "params.yaml").read_text()) or {}
    return sp.without_seed({"params.yaml": params})


@app.command()
def run(seeds: Annotated[int, typer.Option(min=2, help="seeds 0..N-1")] = 5,
        jobs: Annotated[int, typer.Option(min=1, help="parallel queue workers")] = 1,
        out: Annotated[Path, typer.Option(help="spread file (JSON; a .md table beside it)")] = SPREAD,
        repo: Annotated[Path, typer.Option(help="the DVC repository")] = Path(".")) -> None:
    """Run the pipeline at seeds 0..N-1 (`dvc exp run --queue -S seed=i`, then `--run-all`) and write the
    spread of the headline figures. Experiments already finished for this commit are reused."""
    from rrm.experiments.tables.runner import check_git_identity

    check_git_identity(repo)
    done = {n for n, r in _results(repo, False).items() if r["state"] in ("success", "queued", "running")}
    for seed in range(seeds):
        if f"seed-{seed}" not in done:
            _dvc(["exp", "run", "--queue", "-n", f"seed-{seed}", "-S", f"seed={seed}"], repo)
    _dvc(["exp", "run", "--run-all", "-j", str(jobs)], repo)
    results = _results(repo, False)
    mine = _workspace_key(repo)
    runs = {}
    for seed in range(seeds):
        result = results.get(f"seed-{seed}")
        if not result or result["state"] != "success":
            typer.echo(f"error: experiment seed-{seed} did not finish (dvc queue logs seed-{seed})", err=True)
            raise typer.Exit(code=1)
        if sp.without_seed(result["params"]) != mine:
            typer.echo(f"error: experiment seed-{seed} ran other params than the workspace's", err=True)
            raise typer.Exit(code=1)
        runs[seed] = result["metrics"]
    table = sp.spread_table(runs)
    write_json(out, {"figures": table, "measured_with": f"rrm seeds run --seeds {seeds}"})
    write_text(out.with_suffix(".md"), sp.format_spread_md(table, f"Spread over seeds 0..{seeds - 1}"))
    typer.echo(sp.format_spread_md(table, f"Spread over seeds 0..{seeds - 1}"))


@app.command()
def summary(all_commits: Annotated[bool, typer.Option(help="experiments of every commit, not HEAD's only")]
            = False, repo: Annotated[Path, typer.Option(help="the DVC repository")] = Path(".")) -> None:
    """Group finished experiments by their params apart from the seed: mean ± sd (n) per setting, and the
    paired difference against the workspace's setting on the seeds both ran (|Δ| > 2 se: a verdict)."""
    groups = sp.group_by_setting(_results(repo, all_commits).values())
    if not groups:
        typer.echo("no finished experiments with a seed; run e.g. "
                   "dvc exp run --queue -S 'seed=0,1,2' -S alpha_ratio=0.2 && dvc exp run --run-all")
        raise typer.Exit(code=1)
    baseline = _workspace_key(repo)
    typer.echo(sp.format_groups(groups, baseline if baseline in groups else None))


@app.command()
def check(spread_file: Annotated[Path, typer.Option("--spread", help="committed spread file")] = SPREAD,
          repo: Annotated[Path, typer.Option(help="where reports/ lies")] = Path(".")) -> None:
    """Does this machine's run (reports/*/metrics.json, after `make repro`) fall inside the committed spread?
    Per figure: within the 95 % prediction interval mean ± t·sd·sqrt(1 + 1/n), or not (exit 1)."""
    path = repo / spread_file
    if not path.is_file():
        typer.echo(f"error: {path}: no spread file (make one with `rrm seeds run`)", err=True)
        raise typer.Exit(code=1)
    try:
        published = json.loads(path.read_text())["figures"]
    except (json.JSONDecodeError, KeyError) as error:
        typer.echo(f"error: {path}: not a spread file ({error})", err=True)
        raise typer.Exit(code=1) from error
    metrics = {}
    for _, file, _ in sp.HEADLINE:
        if (repo / file).is_file():
            metrics[file] = json.loads((repo / file).read_text())
    rows = sp.check_run(metrics, published)
    for r in rows:
        value = "missing" if r["value"] is None else f"{100 * r['value']:.1f}"
        verdict = "within spread" if r["within"] else "OUTSIDE spread"
        typer.echo(f"{r['label']:<26} {value:>7}  published {100 * r['mean']:.1f} ± {100 * r['halfwidth']:.1f}"
                   f"  {verdict}")
    if not all(r["within"] for r in rows):
        raise typer.Exit(code=1)
