"""The paper's Tables 1-5 as DVC experiments: expand the table file, queue and run what is missing, and
write reports/tables.md with our numbers beside the paper's.

experiments/tables.yaml defines every cell by `-S` overrides of params.yaml. Cells whose overrides are
equal share one experiment, named after the first such cell; each experiment runs only the stages its
cells read (`dvc exp run NAME... evaluate_onestep`). Because an experiment commit still carries the
baseline's other metrics files, a metrics file counts as an experiment's result only when its stage and
every stage upstream of it are consistent in the experiment's own dvc.lock (params as set, inputs equal
to the upstream outputs) — anything else is reported as "not run", never as a number.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from rrm.data.classes import CLASSES, PAPER_COLUMNS
from rrm.experiments.settings import read_yaml

DEFAULT_TABLE = Path("experiments/tables.yaml")
REPORT = Path("reports/tables.md")
FIGURES = Path("reports/figures")
NOT_RUN = "not run"
METRIC_KEYS = {"crf": ("miou_crf", "per_class_iou_crf"), "raw": ("miou", "per_class_iou")}
_TEMPLATE = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")
_EXP_REF = re.compile(r"^refs/exps/([0-9a-f]{2})/([0-9a-f]{38})/(.+)$")


# ---------------------------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Cell:
    """One number (grid tables) or one row of 21 class IoUs + mIoU (per-class tables) of a paper table."""

    table: str
    name: str                         # e.g. "t1-ce-r0.1" (grid) or "t3-onestep" (per-class)
    row: str
    column: str | None                # None for a per-class row
    label: str                        # the column's label in the paper (e.g. "0.1")
    overrides: tuple[str, ...]        # sorted "key=value" (`-S` arguments)
    report: str                       # reports/<report>/metrics.json holds its numbers
    split: str
    paper: tuple[float, ...]          # 1 value (grid) or 22 (per-class), in the table's units

    @property
    def metrics_file(self) -> str:
        return f"reports/{self.report}/metrics.json"


@dataclass
class Plan:
    """Cells -> deduplicated experiments: their `-S` overrides, target stages and metrics files."""

    cells: list[Cell]
    experiment_of: dict[str, str] = field(default_factory=dict)      # cell name -> experiment name
    overrides: dict[str, list[str]] = field(default_factory=dict)    # experiment -> ["key=value", ...]
    targets: dict[str, list[str]] = field(default_factory=dict)      # experiment -> stages to reproduce
    metrics_files: dict[str, list[str]] = field(default_factory=dict)  # experiment -> files its cells read
    splits: dict[str, set[str]] = field(default_factory=dict)        # experiment -> splits it scores

    def experiments_for(self, tables: Iterable[str] | None = None) -> list[str]:
        """Experiment names (file order) needed by the given tables (all tables when None)."""
        wanted = None if tables is None else set(tables)
        names = [self.experiment_of[c.name] for c in self.cells if wanted is None or c.table in wanted]
        return list(dict.fromkeys(names))


def load_table(path: str | os.PathLike = DEFAULT_TABLE) -> dict:
    """Read and check the table file; errors name the file and the offending key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table file not found")
    try:
        table = read_yaml(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"{path}: not valid YAML ({error})") from error
    try:
        validate_table(table)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    return table


def validate_table(table: Any) -> None:
    """Raise ValueError listing every structural problem (paper lengths, unknown reports/splits...)."""
    if not isinstance(table, dict) or not isinstance(table.get("tables"), dict):
        raise ValueError("expected a mapping with a 'tables' mapping")
    problems = []
    if table.get("metric", "crf") not in METRIC_KEYS:
        problems.append(f"metric: {table.get('metric')!r} is not one of {', '.join(METRIC_KEYS)}")
    reports, splits = table.get("reports") or {}, table.get("splits") or {}
    for key, spec in table["tables"].items():
        where = f"tables.{key}"
        rows, columns, paper = spec.get("rows") or [], spec.get("columns"), spec.get("paper") or {}
        if not rows:
            problems.append(f"{where}.rows: missing or empty")
        width = len(CLASSES) + 1 if columns == "classes" else len(columns or [])
        if columns != "classes" and not columns:
            problems.append(f"{where}.columns: a list of columns or 'classes'")
        for row in rows:
            if "key" not in row:
                problems.append(f"{where}.rows: a row has no 'key'")
                continue
            values = paper.get(row["key"])
            if not isinstance(values, list) or len(values) != width:
                problems.append(f"{where}.paper.{row['key']}: expected {width} numbers, got {values!r}")
            for col in _columns(spec):
                report, split = _report_split(spec, row, col)
                if report not in reports:
                    problems.append(f"{where}.rows.{row['key']}: report {report!r} is not in 'reports'")
                if split not in splits:
                    problems.append(f"{where}.rows.{row['key']}: split {split!r} is not in 'splits'")
    if problems:
        raise ValueError("; ".join(dict.fromkeys(problems)))


def _columns(spec: Mapping) -> list[dict]:
    """A grid table's columns; a per-class table is one cell per row (its columns are the classes)."""
    return [{}] if spec.get("columns") == "classes" else list(spec.get("columns") or [])


def _report_split(spec: Mapping, row: Mapping, col: Mapping) -> tuple[str, str]:
    """The report folder (row wins over column over table) and split (column over row over table)."""
    return (row.get("report", col.get("report", spec.get("report"))),
            col.get("split", row.get("split", spec.get("split", "val"))))


def _resolve(value: Any, params: Mapping | None, key: str) -> Any:
    """'${data.test_split}' -> params.yaml's value; anything else unchanged."""
    match = _TEMPLATE.match(value) if isinstance(value, str) else None
    if not match:
        return value
    if params is None:
        raise ValueError(f"{key}: {value} needs params.yaml to resolve")
    node: Any = params
    for part in match.group(1).split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ValueError(f"{key}: {value} is not a key of params.yaml")
        node = node[part]
    return node


def format_override(key: str, value: Any) -> str:
    """One `-S` argument in DVC's (Hydra) override syntax: 0.1 -> 0.1, True -> true, None -> null."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, (int, float)):
        text = repr(value)
    elif isinstance(value, (list, tuple)):
        text = "[" + ",".join(format_override("", v)[1:] for v in value) + "]"
    elif isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_./-]+", value):
        text = value
    else:
        text = "'" + str(value).replace("'", "\\'") + "'"
    return f"{key}={text}"


def plan(table: Mapping, params: Mapping | None = None) -> Plan:
    """Expand the table file into cells and deduplicated experiments.

    Overrides merge base <- table.set <- row.set <- column.set <- the split's overrides. The dedupe key is
    the sorted override set, so e.g. Table 1 joint r0.4 and Table 5 one-step val are one experiment.
    """
    base, splits, reports = table.get("base") or {}, table.get("splits") or {}, table.get("reports") or {}
    cells: list[Cell] = []
    for tkey, spec in table["tables"].items():
        per_class = spec.get("columns") == "classes"
        for row in spec["rows"]:
            paper = [float(v) for v in spec["paper"][row["key"]]]
            for j, col in enumerate(_columns(spec)):
                report, split = _report_split(spec, row, col)
                merged: dict[str, Any] = {**base, **(spec.get("set") or {}), **(row.get("set") or {}),
                                          **(col.get("set") or {}), **(splits[split] or {})}
                name = f"{tkey}-{row['key']}" + ("" if per_class else f"-{col['key']}")
                overrides = tuple(sorted(format_override(k, _resolve(v, params, f"{name}: {k}"))
                                         for k, v in merged.items()))
                cells.append(Cell(table=tkey, name=name, row=row["key"], column=col.get("key"),
                                  label=str(col.get("label", row.get("label", name))),
                                  overrides=overrides, report=report, split=split,
                                  paper=tuple(paper) if per_class else (paper[j],)))
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate cell names: {sorted({n for n in names if names.count(n) > 1})}")
    for claim in table.get("claims") or []:
        unknown = [n for n in [*(n for pair in claim.get("pairs", []) for n in pair), *claim.get("curve", [])]
                   if n not in names]
        if unknown:
            raise ValueError(f"claims: {claim.get('claim')!r} names unknown cells {unknown}")
    result, first = Plan(cells=cells), {}
    for cell in cells:
        exp = first.setdefault(cell.overrides, cell.name)
        result.experiment_of[cell.name] = exp
        result.overrides[exp] = list(cell.overrides)
        stage = reports[cell.report]
        result.targets[exp] = sorted({*result.targets.get(exp, []), stage})
        result.metrics_files[exp] = sorted({*result.metrics_files.get(exp, []), cell.metrics_file})
        result.splits.setdefault(exp, set()).add(cell.split)
    return result


def expand(table: Mapping, params: Mapping | None = None) -> dict[str, list[str]]:
    """{experiment name: its `-S` overrides}, one entry per distinct set of overrides."""
    return plan(table, params).overrides


# ------------------------------------------------------------------------------------------- the results


def parse_exp_show(rows: Sequence[Mapping]) -> dict[str, dict]:
    """`dvc exp show --json` output -> {experiment name: result}.

    A result holds state (success | queued | running | failed), rev, baseline, timestamp, params (per
    params file), metrics ({file: data}), deps, the executor's pid/log, and entries: (state, pid) of
    every entry with that name. Where a name appears more than once (re-runs, several baselines) a
    success beats a pending run, which beats a failure; among equals the newest wins.
    """
    rank = {"success": 3, "running": 2, "queued": 2, "failed": 1}
    found: dict[str, dict] = {}
    for row in rows:
        for exp in row.get("experiments") or []:
            revs = exp.get("revs") or []
            if not revs or not (exp.get("name") or revs[0].get("name")):
                continue
            head, executor = revs[0], exp.get("executor") or {}
            local = executor.get("local") or {}
            data = head.get("data") or {}
            state = executor.get("state") or ("failed" if head.get("error") else "success")
            if head.get("error") and state == "success":
                state = "failed"
            result = {
                "name": exp.get("name") or head.get("name"), "state": state, "rev": head.get("rev"),
                "baseline": row.get("rev"), "timestamp": data.get("timestamp") or "",
                "params": {f: (v or {}).get("data", {}) for f, v in (data.get("params") or {}).items()},
                "metrics": {f: v["data"] for f, v in (data.get("metrics") or {}).items()
                            if isinstance(v, Mapping) and "data" in v},
                "deps": data.get("deps") or {}, "stale": [],
                "pid": local.get("pid"), "log": local.get("log"), "entries": [(state, local.get("pid"))],
            }
            old = found.get(result["name"])
            if old is not None:
                result["entries"] += old["entries"]
            if old is None or (rank.get(state, 0), result["timestamp"]) > (rank.get(old["state"], 0),
                                                                            old["timestamp"]):
                found[result["name"]] = result
            else:
                old["entries"] = result["entries"]
    return found


def _lookup(params: Mapping, dotted: str) -> tuple[bool, Any]:
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def stale_outputs(lock: Mapping, params: Mapping[str, Mapping]) -> set[str]:
    """Outputs in a revision's dvc.lock that this revision did not produce.

    A stage is consistent when every param it recorded equals the revision's params file and every
    input another stage produces has that output's md5; an output is fresh only when its stage and
    all stages upstream of it are consistent. A targeted experiment leaves the baseline's entries for
    the stages it skipped, which fail this check as soon as an override or an upstream output differs.
    """
    stages = lock.get("stages") or {}
    producer, md5 = {}, {}
    for name, stage in stages.items():
        for out in stage.get("outs") or []:
            producer[out["path"]], md5[out["path"]] = name, out.get("md5")

    def consistent(stage: Mapping) -> bool:
        for file, recorded in (stage.get("params") or {}).items():
            for key, value in recorded.items():
                ok, current = _lookup(params.get(file) or {}, key)
                if not ok or current != value:
                    return False
        return all(dep.get("md5") == md5[dep["path"]] for dep in stage.get("deps") or []
                   if dep["path"] in producer)

    verdict: dict[str, bool] = {}

    def fresh(name: str, seen: frozenset = frozenset()) -> bool:
        if name not in verdict:
            stage = stages[name]
            ups = {producer[d["path"]] for d in stage.get("deps") or [] if d["path"] in producer} - {name}
            verdict[name] = consistent(stage) and all(fresh(u, seen | {name}) for u in ups if u not in seen)
        return verdict[name]

    return {out["path"] for name, stage in stages.items() if not fresh(name)
            for out in stage.get("outs") or []}


def _env(jobs: int = 1) -> dict[str, str]:
    """Subprocess environment: analytics off, this interpreter's bin first so stages' `python` is ours, and
    with several queue workers the cores split between them (OpenMP threads of two workers sharing a core
    spin-wait on each other)."""
    env = dict(os.environ)
    env.setdefault("DVC_NO_ANALYTICS", "1")
    if jobs > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _dvc() -> str:
    local = Path(sys.executable).parent / "dvc"
    found = str(local) if local.is_file() else shutil.which("dvc")
    if not found:
        raise RuntimeError("dvc: executable not found (install the project: make repro / pip install -e .)")
    return found


def _call(args: Sequence[str], repo: Path, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(list(args), cwd=repo, env=_env(), capture_output=True, text=True)
    if check and done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-2000:]
        raise RuntimeError(f"`{' '.join(args)}` failed in {repo} (exit {done.returncode}):\n{tail}")
    return done


def _git_lock(repo: Path, rev: str) -> dict | None:
    done = _call(["git", "show", f"{rev}:dvc.lock"], repo, check=False)
    return read_yaml(done.stdout) if done.returncode == 0 and done.stdout.strip() else None


def collect_results(repo: str | os.PathLike = ".", all_commits: bool = False) -> dict[str, dict]:
    """{experiment name: result} from `dvc exp show --json`, stale metrics files removed (see
    `stale_outputs`; their paths are listed under "stale").

    all_commits=False: experiments of HEAD only (what `run` may reuse). True: those of every baseline
    that has experiments (what `report` shows; each number keeps its own baseline commit).
    """
    repo = Path(repo)
    args = [_dvc(), "exp", "show", "--json"]
    if all_commits:
        refs = _call(["git", "for-each-ref", "--format=%(refname)", "refs/exps/"], repo).stdout.split()
        baselines = {m.group(1) + m.group(2) for m in map(_EXP_REF.match, refs) if m}
        for rev in ["HEAD", *sorted(baselines)]:
            args += ["--rev", rev]
    results = parse_exp_show(json.loads(_call(args, repo).stdout or "[]"))
    for result in results.values():
        if result["state"] != "success":
            continue
        lock = _git_lock(repo, result["rev"])
        stale = stale_outputs(lock, result["params"]) if lock else set()
        result["stale"] = sorted(stale & set(result["metrics"]))
        result["metrics"] = {f: m for f, m in result["metrics"].items() if f not in stale}
    return results


def missing(names: Iterable[str], results: Mapping[str, Mapping],
            metrics_files: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """Names without a finished experiment holding (fresh) every metrics file its cells read."""
    out = []
    for name in names:
        result = results.get(name)
        needed = (metrics_files or {}).get(name, [])
        if not result or result["state"] != "success" or any(f not in result["metrics"] for f in needed):
            out.append(name)
    return out


def _alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process nobody reaped (its parent died too) is a zombie: gone, though kill(0) succeeds
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def check_git_identity(repo: Path) -> None:
    """dvc exp commits need user.name/email in the repo's config or $HOME/.gitconfig (DVC's git library
    ignores GIT_CONFIG_GLOBAL)."""
    for key in ("user.name", "user.email"):
        if not any(_call(["git", "config", *scope, "--get", key], repo, check=False).stdout.strip()
                   for scope in (["--local"], ["--file", str(Path.home() / ".gitconfig")])):
            raise RuntimeError(f"git {key} is not set: dvc exp run needs it in the repo's config or "
                               f"$HOME/.gitconfig (git config {key} '...')")


def running_tasks(queue_status: str) -> list[str]:
    """Names of the `Running` tasks in `dvc queue status` output (Task, Name, Created, Status columns)."""
    rows = [line.split() for line in queue_status.splitlines()[1:]]
    return [row[1] for row in rows if len(row) >= 4 and row[-1] == "Running"]


def _workers_alive(repo: Path) -> bool:
    pids = (repo / ".dvc" / "tmp" / "exps" / "celery").glob("*.pid")
    return any(_alive(int(text)) for text in (p.read_text().strip() for p in pids) if text.isdigit())


def reap_dead_runs(repo: Path, log: Callable[[str], None] = print) -> None:
    """Mark runs whose queue worker was killed (Ctrl-C, SIGKILL) as failed. DVC still lists them as Running,
    and `dvc exp show` then fails on their deleted info file, so a re-run could neither read nor redo them."""
    if _workers_alive(repo):
        return
    for name in running_tasks(_call([_dvc(), "queue", "status"], repo, check=False).stdout):
        _call([_dvc(), "queue", "kill", name], repo, check=False)
        log(f"  {name}: its queue worker is gone; marked failed, will be queued again")


def queue_and_run(names: Sequence[str], jobs: int, the_plan: Plan, *, repo: str | os.PathLike = ".",
                  log: Callable[[str], None] = print) -> list[str]:
    """Queue the experiments among `names` that have no result yet, run the queue, return those still
    missing afterwards (failed). Safe to interrupt and repeat: finished experiments are found through
    `dvc exp show --json` and skipped, queued or running ones are not queued again, and DVC's run cache
    restores any stage whose inputs were already computed."""
    repo = Path(repo)
    check_git_identity(repo)
    reap_dead_runs(repo, log)
    results = collect_results(repo)
    todo = missing(names, results, the_plan.metrics_files)
    log(f"{len(names) - len(todo)} of {len(names)} experiments already finished")
    pending = 0
    for name in todo:
        result = results.get(name) or {}
        waiting = [s for s, pid in result.get("entries", [])
                   if s == "queued" or (s == "running" and _alive(pid))]  # a killed worker's run is dead
        if waiting:
            pending += 1
            log(f"  {name}: already {waiting[0]}")
            continue
        if result.get("state") == "success":  # finished, but a needed stage is stale: replace it. Not with
            # `-f`, which would re-run every stage; a fresh run restores the up-to-date ones from the run cache.
            _call([_dvc(), "exp", "remove", name], repo)
        args = [_dvc(), "exp", "run", "--queue", "-n", name]
        for override in the_plan.overrides[name]:
            args += ["-S", override]
        _call([*args, *the_plan.targets[name]], repo)
        pending += 1
        log(f"  {name}: queued ({' '.join(the_plan.overrides[name])} -> {' '.join(the_plan.targets[name])})")
    if not pending:
        return []
    log(f"running the queue with {jobs} worker(s)...")
    subprocess.run([_dvc(), "exp", "run", "--run-all", "-j", str(jobs)], cwd=repo, env=_env(jobs), check=False)
    # --run-all exits 0 even when an experiment failed: ask the queue's records (the executor states that
    # `dvc queue status` prints, as `dvc exp show --json` reports them) what actually finished.
    results = collect_results(repo)
    still = missing(names, results, the_plan.metrics_files)
    for name in still:
        result = results.get(name) or {}
        state = result.get("state", "not run").upper()
        if state == "SUCCESS":  # ran, yet a metrics file its cells need is not its own
            state = "INCOMPLETE: " + ", ".join(set(the_plan.metrics_files[name]) - set(result["metrics"]))
        where = f"log {result['log']}" if result.get("log") else "dvc queue status"
        log(f"  {name}: {state} (dvc queue logs {name}; {where})")
    return still


# ------------------------------------------------------------------------------------------- the report


def split_labelled(params: Mapping, split: str) -> bool:
    """Whether data.root has masks for every id of `split` (real VOC's test split has none). The embedded
    generator always writes test masks, so a not-yet-generated embedded root counts as labelled."""
    from rrm.data.voc import read_split, resolve_mask_dir

    data = params.get("data") or {}
    root = Path(data.get("root", ""))
    if not root.is_dir():
        return bool((params.get("prepare_data") or {}).get("generate", False))
    try:
        ids = read_split(root, split)
    except (FileNotFoundError, ValueError):
        return False
    mask_dir = resolve_mask_dir(root, data.get("mask_dir"))
    return all((mask_dir / f"{i}.png").is_file() for i in ids)


def cell_values(cell: Cell, result: Mapping | None, metric: str = "crf") -> list[float | None] | None:
    """Our numbers for a cell as fractions: [mIoU] or 21 class IoUs + [mIoU]; None when not run.
    A class absent from the split (IoU NaN, dropped by DVC) gives None in its place."""
    if not result or result.get("state") != "success" or cell.metrics_file not in result["metrics"]:
        return None
    miou_key, per_class_key = METRIC_KEYS[metric]
    data = result["metrics"][cell.metrics_file]
    miou = data.get(miou_key)
    if len(cell.paper) == 1:
        return [miou]
    per_class = data.get(per_class_key) or {}
    return [per_class.get(c) for c in CLASSES] + [miou]


def _fmt(value: float | None, digits: int, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _table_md(spec: Mapping, cells: list[Cell], values: Mapping[str, list | None],
              notes: Mapping[str, str]) -> list[str]:
    """One paper table as markdown: per paper row three rows (ours, paper, ours - paper)."""
    scale = float(spec.get("scale", 1))
    digits = 3 if scale == 1 else 1
    per_class = spec["columns"] == "classes"
    headers = [*PAPER_COLUMNS, "mIOU"] if per_class else [c["label"] for c in spec["columns"]]
    lines = [f"### {spec['title']}", "", "| " + " | ".join([spec.get("corner", ""), *headers]) + " |",
             "|---" + "|---:" * len(headers) + "|"]
    for row in spec["rows"]:
        row_cells = [c for c in cells if c.row == row["key"]]
        ours, paper, delta = [], [], []
        for cell in row_cells:
            got = values.get(cell.name)
            for j, p in enumerate(cell.paper):
                paper.append(_fmt(p, digits))
                if got is None:
                    ours.append(notes.get(cell.name, NOT_RUN))
                    delta.append("—")
                else:
                    v = None if got[j] is None else got[j] * scale
                    ours.append(_fmt(v, digits))
                    delta.append("—" if v is None else _fmt(v - p, digits, sign=True))
        for tag, entries in (("ours", ours), ("paper", paper), ("Δ", delta)):
            lines.append(f"| {row['label']} ({tag}) | " + " | ".join(entries) + " |")
    return [*lines, ""]


def _ordered(better: float | None, worse: float | None) -> bool | None:
    return None if better is None or worse is None else better > worse


def _peak_text(labels: Sequence[str], values: Sequence[float | None]) -> tuple[str, bool | None]:
    """Where the curve peaks and whether it is an inverted U: peak inside, both ends strictly lower."""
    measured = [(lab, v) for lab, v in zip(labels, values, strict=True) if v is not None]
    if len(measured) < 3 or values[0] is None or values[-1] is None:
        return f"{len(measured)} of {len(values)} points measured", None
    best = max(range(len(values)), key=lambda i: -math.inf if values[i] is None else values[i])
    inverted = 0 < best < len(values) - 1 and values[0] < values[best] and values[-1] < values[best]
    return f"peak at {labels[best]} ({values[best]:.3f}; ends {values[0]:.3f} / {values[-1]:.3f})", inverted


def claims_md(table: Mapping, the_plan: Plan, values: Mapping[str, list | None]) -> list[str]:
    """The auto-generated paragraph: for each claimed ordering, whether the paper's and our numbers
    show it."""
    by_name = {c.name: c for c in the_plan.cells}
    scale = {c.name: float(table["tables"][c.table].get("scale", 1)) for c in the_plan.cells}

    def ours(name: str) -> float | None:
        got = values.get(name)
        return None if got is None else got[-1]

    def paper(name: str) -> float:
        return by_name[name].paper[-1] / scale[name]

    yes = {True: "yes", False: "no", None: "not measured"}
    lines = ["## Where our ordering agrees with the paper", ""]
    for claim in table.get("claims") or []:
        if "pairs" in claim:
            # cells sharing experiments compare the same two runs: count each comparison once
            exp = the_plan.experiment_of
            unique: dict[tuple[str, str], tuple[str, str]] = {}
            for b, w in claim["pairs"]:
                unique.setdefault((exp[b], exp[w]), (b, w))
            pairs = list(unique.values())
            theirs = [_ordered(paper(b), paper(w)) for b, w in pairs]
            mine = [_ordered(ours(b), ours(w)) for b, w in pairs]
            measured = [i for i, m in enumerate(mine) if m is not None]
            agree = [i for i in measured if mine[i] == theirs[i]]
            text = (f"- **{claim['claim']}.** Paper: holds in {sum(theirs)} of {len(pairs)} comparisons. "
                    f"Ours: holds in {sum(mine[i] for i in measured)} of {len(measured)} measured "
                    f"({len(pairs) - len(measured)} not run); same ordering as the paper in {len(agree)} of "
                    f"{len(measured)}.")
            differ = [f"{b} vs {w} (ours {ours(b):.3f} vs {ours(w):.3f}; "
                      f"paper {paper(b):.3f} vs {paper(w):.3f})"
                      for i, (b, w) in enumerate(pairs) if i in measured and i not in agree]
            if differ:
                text += " Different: " + "; ".join(differ) + "."
        else:
            curve = claim["curve"]
            labels = [by_name[n].label for n in curve]
            their_text, their_u = _peak_text(labels, [paper(n) for n in curve])
            our_text, our_u = _peak_text(labels, [ours(n) for n in curve])
            verdict = "cannot be judged yet" if our_u is None else "agrees" if our_u == their_u else "differs"
            text = (f"- **{claim['claim']}.** Paper: {their_text}, inverted U: {yes[their_u]}. "
                    f"Ours: {our_text}, inverted U: {yes[our_u]} — {verdict}.")
        lines.append(text)
    return [*lines, ""]


def _provenance_md(the_plan: Plan, results: Mapping[str, Mapping], params: Mapping) -> list[str]:
    lines = ["## Where each number came from", "",
             "| experiment | cells | overrides (`dvc exp run -S`) | state | experiment commit "
             "| baseline commit | date | dataset (data.root) |", "|---|---|---|---|---|---|---|---|"]
    cells_of: dict[str, list[str]] = {}
    for cell in the_plan.cells:
        cells_of.setdefault(the_plan.experiment_of[cell.name], []).append(cell.name)
    for exp, overrides in the_plan.overrides.items():
        result = results.get(exp) or {}
        ok, root = _lookup(result.get("params", {}).get("params.yaml", {}), "data.root")
        dataset = "—"
        if ok:
            dep = (result.get("deps") or {}).get(root) or {}
            dataset = f"`{root}`" + (f" (md5 {str(dep['hash'])[:8]})" if dep.get("hash") else "")
        state = result.get("state", NOT_RUN)
        if result.get("stale"):
            state += " (stale: " + ", ".join(result["stale"]) + ")"
        lines.append(f"| {exp} | {', '.join(cells_of[exp])} | `{' '.join(overrides)}` | {state} | "
                     f"{str(result.get('rev') or '—')[:7]} | {str(result.get('baseline') or '—')[:7]} | "
                     f"{result.get('timestamp') or '—'} | {dataset} |")
    return [*lines, ""]


def render_report(table: Mapping, results: Mapping[str, Mapping], meta: Mapping,
                  out: str | os.PathLike | None = None) -> str:
    """reports/tables.md: every table in the paper's layout (ours, paper, difference), the claims
    paragraph and each experiment's provenance. meta: date, commit, params (the workspace's
    params.yaml) and optionally test_labelled (False on real VOC: test cells point to the server)."""
    from rrm.io import write_text

    params = meta.get("params") or {}
    the_plan = plan(table, params)
    metric = table.get("metric", "crf")
    values = {c.name: cell_values(c, results.get(the_plan.experiment_of[c.name]), metric)
              for c in the_plan.cells}
    server = "server" if not meta.get("test_labelled", True) else None
    notes = {c.name: server for c in the_plan.cells if server and c.split == "test"}
    ran = sum(v is not None for v in values.values())
    root = _lookup(params, "data.root")[1]
    scored = ("mIoU after dense-CRF post-processing (`miou_crf`), as the paper scores val/test"
              if metric == "crf" else "mIoU without CRF post-processing (`miou`)")
    lines = [
        "# The paper's tables, re-run", "",
        f"Generated {meta.get('date', '—')} from commit {str(meta.get('commit') or '—')[:7]} by "
        f"`rrm tables report` ({ran} of {len(values)} cells measured, {len(the_plan.overrides)} "
        f"experiments). Ours = {scored}; Δ = ours − paper. Dataset: `{root}`. A cell marked \"{NOT_RUN}\" "
        "has no finished experiment: `rrm tables run` computes it.", "",
    ]
    if server:
        lines += [f"The test split of `{root}` has no masks, so test cells read \"server\": export "
                  "with `rrm export-server models/deeplab.pt --root <VOC2012> --split test` and submit the "
                  "archive to the PASCAL VOC evaluation server.", ""]
    for key, spec in table["tables"].items():
        lines += _table_md(spec, [c for c in the_plan.cells if c.table == key], values, notes)
    lines += claims_md(table, the_plan, values)
    lines += _provenance_md(the_plan, results, params)
    text = "\n".join(lines)
    if out is not None:
        write_text(out, text)
    return text


def curve_figure(path: str | os.PathLike, table: Mapping, results: Mapping[str, Mapping],
                 params: Mapping | None = None) -> None:
    """mIoU vs the columns of a grid table (Table 1: the ratio), one colour per row: ours solid with
    markers, the paper's dashed. Unmeasured points are left out. Also writes the numbers as CSV beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rrm.io import atomic_path, write_text

    key = table["figures"]["curve"]["table"]
    spec, the_plan = table["tables"][key], plan(table, params)
    metric = table.get("metric", "crf")
    labels = [c["label"] for c in spec["columns"]]
    try:
        xs = [float(v) for v in labels]
    except ValueError:
        xs = list(range(len(labels)))
    scale = float(spec.get("scale", 1))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    x_name = re.sub(r"\W+", "_", (spec.get("corner") or "x").strip().lower())
    csv = [f"{x_name}," + ",".join(f"{r['key']},paper_{r['key']}" for r in spec["rows"])]
    series = {}
    for k, row in enumerate(spec["rows"]):
        cells = [c for c in the_plan.cells if c.table == key and c.row == row["key"]]
        ours = [cell_values(c, results.get(the_plan.experiment_of[c.name]), metric) for c in cells]
        ours = [None if v is None or v[0] is None else v[0] * scale for v in ours]
        paper = [c.paper[0] for c in cells]
        series[row["key"]] = (ours, paper)
        colour = f"C{k}"
        ax.plot(xs, paper, "--", color=colour, alpha=0.6, label=f"{row['label']} (paper)")
        pts = [(x, v) for x, v in zip(xs, ours, strict=True) if v is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), "o-", color=colour, label=f"{row['label']} (ours)")
    for j, x in enumerate(xs):
        csv.append(f"{x}," + ",".join(f"{'' if ours[j] is None else ours[j]},{paper[j]}"
                                      for ours, paper in series.values()))
    ax.set_xlabel(spec.get("corner") or key)
    ax.set_ylabel(METRIC_KEYS[metric][0] + (" (%)" if scale == 100 else ""))
    ax.set_title(spec["title"], fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    write_text(Path(path).with_suffix(".csv"), "\n".join(csv) + "\n")


def per_class_figure(path: str | os.PathLike, table: Mapping,
                     reports_dir: str | os.PathLike = "reports") -> list[str]:
    """Per-class IoU bars of the main workspace's runs (one-step vs two-step vs full supervision).
    Returns the series drawn; writes nothing when no metrics file exists yet."""
    from rrm.figures import per_class_bars

    metric = table.get("metric", "crf")
    series = {}
    for label, report in (table.get("figures", {}).get("per_class", {}).get("series") or {}).items():
        file = Path(reports_dir) / report / "metrics.json"
        if file.is_file():
            per_class = json.loads(file.read_text()).get(METRIC_KEYS[metric][1]) or {}
            series[label] = {col: math.nan if per_class.get(c) is None else per_class[c]
                             for c, col in zip(CLASSES, PAPER_COLUMNS, strict=True)}
    if series:
        per_class_bars(path, series, title=f"per-class IoU on val, main workspace ({METRIC_KEYS[metric][1]})")
    return list(series)


# ------------------------------------------------------------------------------------------- the commands

app = typer.Typer(help="The paper's Tables 1-5 as DVC experiments: run the missing cells, then report "
                       "ours beside the paper's.", no_args_is_help=True, pretty_exceptions_show_locals=False)

TableOpt = Annotated[Path, typer.Option("--table", help="experiment table")]
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
        only: Annotated[str | None, typer.Option(help="comma-separated tables, e.g. t1,t2")] = None,
        dry_run: Annotated[bool, typer.Option(help="list the experiments and their overrides only")] = False,
        table: TableOpt = DEFAULT_TABLE, params: ParamsOpt = Path("params.yaml")) -> None:
    """Queue the experiments that have no result yet and run them (`dvc exp run --queue`, `--run-all`)."""
    with _clean_errors():
        spec, cfg = load_table(table), _load_params(params)
        the_plan = plan(spec, cfg)
    tables = None if only is None else [t.strip() for t in only.split(",") if t.strip()]
    unknown = sorted(set(tables or []) - set(spec["tables"]))
    if unknown:
        raise typer.BadParameter(f"unknown table(s) {', '.join(unknown)}; "
                                 f"{table} has {', '.join(spec['tables'])}", param_hint="--only")
    names = the_plan.experiments_for(tables)
    test_split = _lookup(cfg, "data.test_split")[1] or "test"
    if not split_labelled(cfg, test_split):
        skipped = [n for n in names if "test" in the_plan.splits[n]]
        names = [n for n in names if n not in skipped]
        typer.echo(f"{test_split} split of {_lookup(cfg, 'data.root')[1]} has no masks: skipping "
                   f"{', '.join(skipped)} (score it on the evaluation server: rrm export-server)")
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
def report(table: TableOpt = DEFAULT_TABLE, params: ParamsOpt = Path("params.yaml"),
           out: Annotated[Path, typer.Option(help="markdown report")] = REPORT,
           figures: Annotated[Path, typer.Option(help="figure folder")] = FIGURES) -> None:
    """Write reports/tables.md (ours vs the paper's, with provenance) and the figures."""
    with _clean_errors():
        spec, cfg = load_table(table), _load_params(params)
        results = collect_results(".", all_commits=True)
    commit = _call(["git", "rev-parse", "HEAD"], Path("."), check=False).stdout.strip()
    meta = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit, "params": cfg,
            "test_labelled": split_labelled(cfg, _lookup(cfg, "data.test_split")[1] or "test")}
    render_report(spec, results, meta, out)
    written, figs = [str(out)], spec.get("figures") or {}
    if "curve" in figs:
        curve = figures / figs["curve"]["file"]
        curve_figure(curve, spec, results, cfg)
        written += [str(curve), str(curve.with_suffix(".csv"))]
    if "per_class" in figs:
        bars = figures / figs["per_class"]["file"]
        if per_class_figure(bars, spec):
            written.append(str(bars))
    typer.echo("wrote " + ", ".join(written))
