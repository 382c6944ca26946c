"""The report of the table's experiments: reports/tables.md (ours beside the paper's, the claims paragraph,
provenance) and the figures (the Table 1 curve with its CSV, per-class bars)."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from rrm.data.classes import PAPER_COLUMNS
from rrm.data.datasets import VOC, DatasetSpec, get_dataset
from rrm.experiments.spread import SIGNIFICANCE, paired, spread
from rrm.experiments.tables.plan import METRIC_KEYS, Cell, Plan, lookup_key, plan, split_labelled, with_seeds
from rrm.experiments.tables.runner import collect_results, git_head

REPORT = Path("reports/tables.md")
FIGURES = Path("reports/figures")
NOT_RUN = "not run"


def dataset_of(params: Mapping) -> DatasetSpec:
    """The dataset (rrm.data.datasets) a params.yaml mapping's data.dataset names; VOC where it names none."""
    found, name = lookup_key(params, "data.dataset")
    return get_dataset(name) if found else VOC


def class_columns(spec: DatasetSpec) -> tuple[str, ...]:
    """Column names of a per-class table: the paper's (Tables 3/4) for VOC, the class names otherwise."""
    return PAPER_COLUMNS if spec is VOC else spec.classes


def cell_values(cell: Cell, result: Mapping | None, metric: str = "crf") -> list[float | None] | None:
    """Our numbers for a cell as fractions: [mIoU] or the class IoUs of the run's dataset + [mIoU]; None when
    not run. A class absent from the split (IoU NaN, dropped by DVC) gives None in its place. A per-class
    cell whose run is on another dataset than the paper's row (VOC's 21 classes) raises, naming the cell."""
    if not result or result.get("state") != "success" or cell.metrics_file not in result["metrics"]:
        return None
    miou_key, per_class_key = METRIC_KEYS[metric]
    data = result["metrics"][cell.metrics_file]
    miou = data.get(miou_key)
    if len(cell.paper) == 1:
        return [miou]
    spec = dataset_of(result.get("params", {}).get("params.yaml", {}))
    if len(cell.paper) != spec.num_classes + 1:
        raise ValueError(f"{cell.name}: its run is on {spec.name} ({spec.num_classes} classes); the paper's row "
                         f"has {len(cell.paper) - 1} class columns")
    per_class = data.get(per_class_key) or {}
    return [per_class.get(c) for c in spec.classes] + [miou]


def seed_values(the_plan: Plan, results: Mapping[str, Mapping], seeds: int,
                metric: str = "crf") -> dict[str, dict[int, list[float | None]]]:
    """{cell: {seed: its cell_values}} over the cell's runs at seeds 0..seeds-1 that finished."""
    seeded = with_seeds(the_plan, seeds)
    out: dict[str, dict[int, list[float | None]]] = {}
    for cell in the_plan.cells:
        runs = seeded.seeds[the_plan.experiment_of[cell.name]]
        got = {i: cell_values(cell, results.get(run), metric) for i, run in enumerate(runs)}
        out[cell.name] = {i: v for i, v in got.items() if v is not None}
    return out


def _mean_sd(per_seed: Mapping[int, list[float | None]]) -> tuple[list[float | None], list[tuple[float, int]]]:
    """Per entry of a cell: the mean over seeds (None where no seed has it) and (sample sd, n)."""
    width = len(next(iter(per_seed.values())))
    means, spreads = [], []
    for j in range(width):
        xs = [v[j] for v in per_seed.values() if v[j] is not None]
        s = spread(xs) if xs else None
        means.append(None if s is None else s.mean)
        spreads.append((0.0, 0) if s is None else (s.sd, s.n))
    return means, spreads


def _fmt(value: float | None, digits: int, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _table_md(spec: Mapping, cells: list[Cell], values: Mapping[str, list | None],
              notes: Mapping[str, str], spreads: Mapping[str, list[tuple[float, int]]] | None = None,
              classes: Sequence[str] = PAPER_COLUMNS) -> list[str]:
    """One paper table as markdown: per paper row three rows (ours, paper, ours - paper). Ours is the mean
    over seeds, written mean ± sd (n) where more than one seed finished. `classes`: the per-class tables'
    column names (class_columns of the workspace's dataset)."""
    scale = float(spec.get("scale", 1))
    digits = 3 if scale == 1 else 1
    per_class = spec["columns"] == "classes"
    headers = [*classes, "mIOU"] if per_class else [c["label"] for c in spec["columns"]]
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
                    sd, n = (spreads or {}).get(cell.name, [(0.0, 1)] * len(got))[j]
                    ours.append(_fmt(v, digits) + (f" ± {_fmt(sd * scale, digits)} ({n})" if n > 1 else ""))
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


def paired_verdict(better: Mapping[int, list], worse: Mapping[int, list]) -> str:
    """Whether "better > worse" holds on our mIoUs, from the per-seed differences on the seeds both have:
    "holds" / "reversed" when |mean Δ| > SIGNIFICANCE standard errors of the paired Δ (rrm.experiments.spread),
    "within noise" otherwise, "one seed" when fewer than 2 seeds are common (no standard error)."""
    b = {i: v[-1] for i, v in better.items() if v[-1] is not None}
    w = {i: v[-1] for i, v in worse.items() if v[-1] is not None}
    if len(set(b) & set(w)) < 2:
        return "one seed"
    verdict = paired(w, b).verdict
    return {"B > A": "holds", "B < A": "reversed"}.get(verdict, "within noise")


def claims_md(table: Mapping, the_plan: Plan, values: Mapping[str, list | None],
              per_seed: Mapping[str, Mapping[int, list]] | None = None) -> list[str]:
    """The auto-generated paragraph: for each claimed ordering, whether the paper's and our numbers
    show it; with `per_seed` (seed_values), each comparison's paired verdict over the seeds."""
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
            if per_seed is not None:
                verdicts = [paired_verdict(per_seed.get(b, {}), per_seed.get(w, {})) for b, w in pairs]
                counts = {v: verdicts.count(v) for v in ("holds", "reversed", "within noise", "one seed")}
                text += (f" Paired over seeds (|mean Δ| > {SIGNIFICANCE:g} se): "
                         + ", ".join(f"{k} {n}" for k, n in counts.items()) + "; "
                         + "; ".join(f"{b} vs {w}: {v}" for (b, w), v in zip(pairs, verdicts, strict=True)) + ".")
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


def _provenance_md(the_plan: Plan, results: Mapping[str, Mapping], params: Mapping, seeds: int = 1) -> list[str]:
    """One line per run: every experiment at each of its seeds (with_seeds)."""
    seeded = with_seeds(the_plan, seeds)
    lines = ["## Where each number came from", "",
             "| experiment | cells | overrides (`dvc exp run -S`) | state | experiment commit "
             "| baseline commit | date | dataset (data.root) |", "|---|---|---|---|---|---|---|---|"]
    cells_of: dict[str, list[str]] = {}
    for cell in the_plan.cells:
        cells_of.setdefault(the_plan.experiment_of[cell.name], []).append(cell.name)
    runs = [(base, run) for base in the_plan.overrides for run in seeded.seeds[base]]
    for base, exp in runs:
        overrides, result = seeded.overrides[exp], results.get(exp) or {}
        ok, root = lookup_key(result.get("params", {}).get("params.yaml", {}), "data.root")
        dataset = "—"
        if ok:
            dep = (result.get("deps") or {}).get(root) or {}
            dataset = f"`{root}`" + (f" (md5 {str(dep['hash'])[:8]})" if dep.get("hash") else "")
        state = result.get("state", NOT_RUN)
        if result.get("stale"):
            state += " (stale: " + ", ".join(result["stale"]) + ")"
        lines.append(f"| {exp} | {', '.join(cells_of[base])} | `{' '.join(overrides)}` | {state} | "
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
    seeds = table.get("seeds", 1)
    per_seed = seed_values(the_plan, results, seeds, metric)
    summary = {name: _mean_sd(runs) for name, runs in per_seed.items() if runs}
    values = {c.name: summary[c.name][0] if c.name in summary else None for c in the_plan.cells}
    spreads = {name: s[1] for name, s in summary.items()}
    server = "server" if not meta.get("test_labelled", True) else None
    notes = {c.name: server for c in the_plan.cells if server and c.split == "test"}
    ran = sum(v is not None for v in values.values())
    root = lookup_key(params, "data.root")[1]
    scored = ("mIoU after dense-CRF post-processing (`miou_crf`), as the paper scores val/test"
              if metric == "crf" else "mIoU without CRF post-processing (`miou`)")
    lines = [
        "# The paper's tables, re-run", "",
        f"Generated {meta.get('date', '—')} from commit {str(meta.get('commit') or '—')[:7]} by "
        f"`rrm tables report` ({ran} of {len(values)} cells measured, {len(the_plan.overrides)} "
        f"experiments at seeds 0..{seeds - 1}). Ours = {scored}: the mean over the seeds that finished, "
        "± the sample sd (n seeds) where n > 1; Δ = ours − paper. Orderings are judged on the per-seed "
        f"differences: holds / reversed when |mean Δ| > {SIGNIFICANCE:g} standard errors of the paired Δ, "
        f"else within noise. Dataset: `{root}`. A cell marked \"{NOT_RUN}\" has no finished experiment: "
        "`rrm tables run` computes it.", "",
    ]
    if server:
        lines += [f"The test split of `{root}` has no masks, so test cells read \"server\": export "
                  "with `rrm export-server models/deeplab.pt --root <VOC2012> --split test` and submit the "
                  "archive to the PASCAL VOC evaluation server.", ""]
    for key, spec in table["tables"].items():
        lines += _table_md(spec, [c for c in the_plan.cells if c.table == key], values, notes, spreads,
                           class_columns(dataset_of(params)))
    lines += claims_md(table, the_plan, values, per_seed)
    lines += _provenance_md(the_plan, results, params, seeds)
    text = "\n".join(lines)
    if out is not None:
        write_text(out, text)
    return text


def curve_figure(path: str | os.PathLike, table: Mapping, results: Mapping[str, Mapping],
                 params: Mapping | None = None) -> None:
    """mIoU vs the columns of a grid table (Table 1: the ratio), one colour per row: ours solid with
    markers and ± 1 sd error bars over the seeds, the paper's dashed. Unmeasured points are left out. Also
    writes the numbers (mean, sd, n seeds, paper) as CSV beside it."""
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
    csv = [f"{x_name}," + ",".join(f"{r['key']},sd_{r['key']},n_{r['key']},paper_{r['key']}"
                                   for r in spec["rows"])]
    per_seed = seed_values(the_plan, results, table.get("seeds", 1), metric)
    series = {}
    for k, row in enumerate(spec["rows"]):
        cells = [c for c in the_plan.cells if c.table == key and c.row == row["key"]]
        ours = [_mean_sd(per_seed[c.name]) if per_seed[c.name] else ([None], [(0.0, 0)]) for c in cells]
        points = [(None, 0.0, 0) if m[0] is None else (m[0] * scale, sd[0][0] * scale, sd[0][1])
                  for m, sd in ours]
        paper = [c.paper[0] for c in cells]
        series[row["key"]] = (points, paper)
        colour = f"C{k}"
        ax.plot(xs, paper, "--", color=colour, alpha=0.6, label=f"{row['label']} (paper)")
        pts = [(x, v, sd) for x, (v, sd, _) in zip(xs, points, strict=True) if v is not None]
        if pts:
            px, py, err = zip(*pts, strict=True)
            ax.errorbar(px, py, yerr=err, fmt="o-", color=colour, capsize=3, label=f"{row['label']} (ours)")
    for j, x in enumerate(xs):
        csv.append(f"{x}," + ",".join(
            f"{'' if pts[j][0] is None else pts[j][0]},{'' if pts[j][2] < 2 else pts[j][1]},{pts[j][2]},{paper[j]}"
            for pts, paper in series.values()))
    ax.set_xlabel(spec.get("corner") or key)
    ax.set_ylabel(METRIC_KEYS[metric][0] + (" (%)" if scale == 100 else ""))
    ax.set_title(spec["title"], fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    write_text(Path(path).with_suffix(".csv"), "\n".join(csv) + "\n")


def per_class_figure(path: str | os.PathLike, table: Mapping, reports_dir: str | os.PathLike = "reports",
                     params: Mapping | None = None) -> list[str]:
    """Per-class IoU bars of the main workspace's runs (one-step vs two-step vs full supervision), one bar
    group per class of the workspace's dataset (`params`: its params.yaml; VOC's paper columns by default).
    Returns the series drawn; writes nothing when no metrics file exists yet."""
    from rrm.figures import per_class_bars

    spec = dataset_of(params or {})
    metric = table.get("metric", "crf")
    series = {}
    for label, report in (table.get("figures", {}).get("per_class", {}).get("series") or {}).items():
        file = Path(reports_dir) / report / "metrics.json"
        if file.is_file():
            per_class = json.loads(file.read_text()).get(METRIC_KEYS[metric][1]) or {}
            series[label] = {col: math.nan if per_class.get(c) is None else per_class[c]
                             for c, col in zip(spec.classes, class_columns(spec), strict=True)}
    if series:
        per_class_bars(path, series, title=f"per-class IoU on val, main workspace ({METRIC_KEYS[metric][1]})")
    return list(series)


def write_report(table: Mapping, params: Mapping, out: str | os.PathLike = REPORT,
                 figures: str | os.PathLike = FIGURES, repo: str | os.PathLike = ".") -> list[str]:
    """Collect every baseline's experiments in `repo`, write the markdown report and the table's figures;
    returns the files written."""
    results = collect_results(repo, all_commits=True)
    meta = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": git_head(repo),
            "params": params,
            "test_labelled": split_labelled(params, lookup_key(params, "data.test_split")[1] or "test")}
    render_report(table, results, meta, out)
    written, figs, figures = [str(out)], table.get("figures") or {}, Path(figures)
    if "curve" in figs:
        curve = figures / figs["curve"]["file"]
        curve_figure(curve, table, results, params)
        written += [str(curve), str(curve.with_suffix(".csv"))]
    if "per_class" in figs:
        bars = figures / figs["per_class"]["file"]
        if per_class_figure(bars, table, params=params):
            written.append(str(bars))
    return written
