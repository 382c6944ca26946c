"""`rrm tables`: run the paper's Tables 1-5 as DVC experiments, then report ours beside the paper's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from rrm.experiments.tables import (
    FIGURES,
    REPORT,
    load_table,
    plan,
    queue_and_run,
    runnable,
    with_seeds,
    write_report,
)
from rrm.settings import read_yaml

app = typer.Typer(help="The paper's Tables 1-5 as DVC experiments: run the missing cells, then report "
                       "ours beside the paper's.", no_args_is_help=True, pretty_exceptions_show_locals=False)

TableOpt = Annotated[Path | None, typer.Option(
    "--table", help="experiment table (default: the packaged rrm/experiments/configs/tables.yaml)",
    show_default=False)]
ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml the overrides apply to")]


@contextmanager
def _clean_errors() -> Iterator[None]:
    """Bad table/params files and failing git/dvc calls end the command with their message, not a trace."""
    try:
        yield
    except (RuntimeError, FileNotFoundError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from error


def _load_params(path: Path) -> dict:
    if not path.is_file():
        raise typer.BadParameter(f"{path}: params file not found", param_hint="--params")
    return read_yaml(path.read_text()) or {}


@app.command()
def run(jobs: Annotated[int, typer.Option(min=1, help="parallel queue workers")] = 1,
        seeds: Annotated[int | None, typer.Option(min=1, help="seeds 0..N-1 per cell (default: the table's "
                                                   "`seeds`)", show_default=False)] = None,
        only: Annotated[str | None, typer.Option(help="comma-separated tables, e.g. t1,t2")] = None,
        dry_run: Annotated[bool, typer.Option(help="list the experiments and their overrides only")] = False,
        table: TableOpt = None, params: ParamsOpt = Path("params.yaml")) -> None:
    """Queue the experiments that have no result yet, each cell at the same seeds, and run them (`dvc exp run
    --queue`, `--run-all`)."""
    with _clean_errors():
        spec, cfg = load_table(table), _load_params(params)
        the_plan = with_seeds(plan(spec, cfg), spec.get("seeds", 1) if seeds is None else seeds)
    tables = None if only is None else [t.strip() for t in only.split(",") if t.strip()]
    unknown = sorted(set(tables or []) - set(spec["tables"]))
    if unknown:
        raise typer.BadParameter(f"unknown table(s) {', '.join(unknown)}; "
                                 f"{table or 'tables.yaml'} has {', '.join(spec['tables'])}", param_hint="--only")
    names, skipped = runnable(the_plan, cfg, tables)
    if skipped:
        data = cfg.get("data") or {}
        typer.echo(f"{data.get('test_split') or 'test'} split of {data.get('root')} has no masks: skipping "
                   f"{', '.join(skipped)} (score it on the evaluation server: rrm export-server)")
    names = [run for name in names for run in the_plan.seeds[name]]
    if dry_run:
        for name in names:
            overrides = " ".join(f"-S {o}" for o in the_plan.overrides[name])
            typer.echo(f"{name}: {overrides}  [{' '.join(the_plan.targets[name])}]")
        return
    start = time.monotonic()
    with _clean_errors():
        failed = queue_and_run(names, jobs, the_plan, log=typer.echo)
    minutes = (time.monotonic() - start) / 60
    if failed:
        typer.echo(f"{len(failed)} experiment(s) failed after {minutes:.1f} min: {', '.join(failed)}",
                   err=True)
        raise typer.Exit(code=1)
    typer.echo(f"all {len(names)} experiments finished ({minutes:.1f} min). Next: rrm tables report")


@app.command()
def report(table: TableOpt = None, params: ParamsOpt = Path("params.yaml"),
           out: Annotated[Path, typer.Option(help="markdown report")] = REPORT,
           figures: Annotated[Path, typer.Option(help="figure folder")] = FIGURES) -> None:
    """Write reports/tables.md (ours vs the paper's, with provenance) and the figures."""
    with _clean_errors():
        spec, cfg = load_table(table), _load_params(params)
        written = write_report(spec, cfg, out, figures)
    typer.echo("wrote " + ", ".join(written))
