"""The experiment table -> cells and deduplicated experiments (`-S` override sets, target stages).

tables.yaml defines every cell of the paper's Tables 1-5 by `-S` overrides of params.yaml. Cells whose
overrides are equal share one experiment, named after the first such cell; each experiment runs only the
stages its cells read (`dvc exp run NAME... evaluate_onestep`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from rrm.data.datasets import VOC
from rrm.experiments.configs import config_file
from rrm.settings import read_yaml

METRIC_KEYS = {"crf": ("miou_crf", "per_class_iou_crf"), "raw": ("miou", "per_class_iou")}
_TEMPLATE = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


def default_table() -> Traversable:
    """The paper's experiment table shipped with the package (rrm/experiments/configs/tables.yaml)."""
    return config_file("tables.yaml")


def lookup_key(params: Mapping, dotted: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key such as "data.root"."""
    node: Any = params
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


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
    seeds: dict[str, list[str]] = field(default_factory=dict)        # experiment -> its run per seed (with_seeds)

    def experiments_for(self, tables: Iterable[str] | None = None) -> list[str]:
        """Experiment names (file order) needed by the given tables (all tables when None)."""
        wanted = None if tables is None else set(tables)
        names = [self.experiment_of[c.name] for c in self.cells if wanted is None or c.table in wanted]
        return list(dict.fromkeys(names))


def load_table(path: str | os.PathLike | Traversable | None = None) -> dict:
    """Read and check a table file (None: the packaged one); errors name the file and the offending key."""
    path = default_table() if path is None else path if hasattr(path, "read_text") else Path(path)
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
    seeds = table.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        problems.append(f"seeds: expected a whole number >= 1, got {seeds!r}")
    if table.get("metric", "crf") not in METRIC_KEYS:
        problems.append(f"metric: {table.get('metric')!r} is not one of {', '.join(METRIC_KEYS)}")
    reports, splits = table.get("reports") or {}, table.get("splits") or {}
    for key, spec in table["tables"].items():
        where = f"tables.{key}"
        rows, columns, paper = spec.get("rows") or [], spec.get("columns"), spec.get("paper") or {}
        if not rows:
            problems.append(f"{where}.rows: missing or empty")
        width = VOC.num_classes + 1 if columns == "classes" else len(columns or [])
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


def seeded_name(experiment: str, seed: int) -> str:
    """The DVC experiment of `experiment` at `seed`: seed 0 keeps the name, seed i > 0 is `<name>-s<i>`."""
    return experiment if seed == 0 else f"{experiment}-s{seed}"


def with_seeds(the_plan: Plan, seeds: int) -> Plan:
    """The plan with every experiment run at seeds 0..seeds-1, the same seeds for every cell, so two cells
    compare seed by seed (paired). Each run is an experiment of its own with `seed=<i>` among its overrides;
    `cells` and `experiment_of` are unchanged (they name the seed-0 run), `seeds` lists every experiment's
    runs in seed order."""
    if not isinstance(seeds, int) or isinstance(seeds, bool) or seeds < 1:
        raise ValueError(f"seeds: expected a whole number >= 1, got {seeds!r}")
    out = Plan(cells=the_plan.cells, experiment_of=dict(the_plan.experiment_of))
    for exp, overrides in the_plan.overrides.items():
        kept = [o for o in overrides if not o.startswith("seed=")]
        out.seeds[exp] = [seeded_name(exp, i) for i in range(seeds)]
        for i, name in enumerate(out.seeds[exp]):
            out.overrides[name] = sorted([*kept, format_override("seed", i)])
            out.targets[name] = the_plan.targets[exp]
            out.metrics_files[name] = the_plan.metrics_files[exp]
            out.splits[name] = the_plan.splits[exp]
    return out


def expand(table: Mapping, params: Mapping | None = None) -> dict[str, list[str]]:
    """{experiment name: its `-S` overrides}, one entry per distinct set of overrides."""
    return plan(table, params).overrides


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


def runnable(the_plan: Plan, params: Mapping, tables: Iterable[str] | None = None) -> tuple[list[str], list[str]]:
    """(experiments to run, experiments left out) for the given tables (all when None): experiments that
    score the test split are left out when data.root has no test masks (real VOC: the evaluation server)."""
    names = the_plan.experiments_for(tables)
    test_split = lookup_key(params, "data.test_split")[1] or "test"
    if split_labelled(params, test_split):
        return names, []
    skipped = [n for n in names if "test" in the_plan.splits[n]]
    return [n for n in names if n not in skipped], skipped
