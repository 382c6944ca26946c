"""Seeds as an axis: the spread of the headline metrics over seeds, paired differences between settings, and
whether one run falls inside a published spread. Pure statistics on metrics dicts; the `rrm seeds` commands
feed it from DVC's experiment records (`dvc exp show --json`), so no second store of results exists.

Rules (stated once, here):
- spread: mean, sample sd (n - 1), min, max over the seeds.
- paired comparison of B against A on the same seeds: d_i = B_i - A_i, standard error se = sd(d) / sqrt(n);
  "B > A" / "B < A" when |mean d| > 2 se (and n >= 2), else "within noise".
- a new single run x reproduces a published spread of n seeds when |x - mean| <= t(0.975, n - 1) * sd *
  sqrt(1 + 1/n): the two-sided 95 % prediction interval for one more draw from the same distribution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

# The pipeline's headline figures: (label, metrics file, key). mIoU in [0, 1] as the metrics files hold it.
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("CAM (train)", "reports/cam/metrics.json", "miou"),
    ("one-step", "reports/onestep/metrics.json", "miou"),
    ("one-step + CRF", "reports/onestep/metrics.json", "miou_crf"),
    ("full supervision", "reports/full/metrics.json", "miou"),
    ("full supervision + CRF", "reports/full/metrics.json", "miou_crf"),
    ("pseudo masks (train_aug)", "reports/pseudo/metrics.json", "miou"),
    ("two-step", "reports/twostep/metrics.json", "miou"),
    ("two-step + CRF", "reports/twostep/metrics.json", "miou_crf"),
)
SEED_KEY = "seed"
SIGNIFICANCE = 2.0  # |mean paired difference| must exceed this many standard errors
# t(0.975, df) for df = 1..30; beyond, the normal 1.96.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


@dataclass(frozen=True)
class Spread:
    n: int
    mean: float
    sd: float  # sample standard deviation (n - 1); 0.0 for n = 1
    min: float
    max: float

    def as_dict(self) -> dict:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "min": self.min, "max": self.max}


@dataclass(frozen=True)
class Paired:
    n: int
    mean_delta: float
    se: float  # standard error of the mean paired difference (nan for n < 2)
    verdict: str  # "B > A" | "B < A" | "within noise"


def spread(values: Iterable[float]) -> Spread:
    """Mean, sample sd, min and max of `values` (at least one)."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("spread of no values")
    n, mean = len(xs), math.fsum(xs) / len(xs)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return Spread(n, mean, sd, min(xs), max(xs))


def paired(a: Mapping[int, float], b: Mapping[int, float]) -> Paired:
    """B against A on the seeds both have (module docstring for the rule)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ValueError(f"no common seeds: A has {sorted(a)}, B has {sorted(b)}")
    s = spread(b[i] - a[i] for i in seeds)
    se = s.sd / math.sqrt(s.n) if s.n > 1 else math.nan
    if s.n > 1 and abs(s.mean) > SIGNIFICANCE * se:
        verdict = "B > A" if s.mean > 0 else "B < A"
    else:
        verdict = "within noise"
    return Paired(s.n, s.mean, se, verdict)


def t975(df: int) -> float:
    if df < 1:
        raise ValueError(f"a prediction interval needs at least 2 seeds (df >= 1), got df {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def prediction_halfwidth(s: Spread) -> float:
    """Half-width of the 95 % prediction interval for one more run (module docstring)."""
    return t975(s.n - 1) * s.sd * math.sqrt(1.0 + 1.0 / s.n)


def headline_values(metrics: Mapping[str, Mapping]) -> dict[str, float]:
    """{label: value} of the headline figures present in `metrics` ({metrics file: its data})."""
    out = {}
    for label, path, key in HEADLINE:
        value = (metrics.get(path) or {}).get(key)
        if isinstance(value, int | float):
            out[label] = float(value)
    return out


def spread_table(runs: Mapping[int, Mapping[str, Mapping]]) -> dict[str, dict]:
    """{label: spread dict + per-seed values} over runs ({seed: {metrics file: data}})."""
    per_seed = {seed: headline_values(m) for seed, m in runs.items()}
    table = {}
    for label, _, _ in HEADLINE:
        values = {seed: v[label] for seed, v in sorted(per_seed.items()) if label in v}
        if values:
            table[label] = {**spread(values.values()).as_dict(), "seeds": values}
    return table


def check_run(metrics: Mapping[str, Mapping], published: Mapping[str, Mapping]) -> list[dict]:
    """Per headline figure of `published` (a spread_table), whether this run's value lies inside its 95 %
    prediction interval. A figure missing from the run is reported as not within."""
    values = headline_values(metrics)
    rows = []
    for label, s in published.items():
        sp = Spread(s["n"], s["mean"], s["sd"], s["min"], s["max"])
        half = prediction_halfwidth(sp)
        value = values.get(label)
        rows.append({"label": label, "value": value, "mean": sp.mean, "halfwidth": half,
                     "within": value is not None and abs(value - sp.mean) <= half})
    return rows


def _freeze(value: object) -> object:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    return value


def without_seed(params: Mapping[str, Mapping]) -> tuple:
    """A hashable key of an experiment's params ({params file: data}) with the top-level seed left out."""
    return _freeze({f: {k: v for k, v in data.items() if k != SEED_KEY} for f, data in params.items()})


def group_by_setting(results: Iterable[Mapping]) -> dict[tuple, dict[int, Mapping]]:
    """Finished experiments (as rrm.experiments.tables.runner.parse_exp_show gives them) grouped by their
    non-seed params: {setting key: {seed: {metrics file: data}}}. Two runs of one setting and seed: the later
    listed wins."""
    groups: dict[tuple, dict[int, Mapping]] = {}
    for result in results:
        if result.get("state") != "success":
            continue
        params = result.get("params") or {}
        seed = (params.get("params.yaml") or {}).get(SEED_KEY)
        if not isinstance(seed, int):
            continue
        groups.setdefault(without_seed(params), {})[seed] = result.get("metrics") or {}
    return groups


def _flat(frozen: object, prefix: str = "") -> dict[str, object]:
    if isinstance(frozen, tuple) and frozen and all(
            isinstance(i, tuple) and len(i) == 2 and isinstance(i[0], str) for i in frozen):
        out: dict[str, object] = {}
        for k, v in frozen:
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: frozen}


def setting_diff(key: tuple, baseline: tuple) -> str:
    """The params of `key` that differ from `baseline`, as `section.key=value` overrides (params of a file
    other than params.yaml prefixed with `file:`)."""
    def flat(frozen: tuple) -> dict[str, object]:
        out: dict[str, object] = {}
        for file, data in frozen:
            out.update(_flat(data, "" if file == "params.yaml" else f"{file}:"))
        return out
    a, b = flat(key), flat(baseline)
    diffs = [f"{k}={a.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return ", ".join(diffs) or "baseline"


def format_spread_md(table: Mapping[str, Mapping], title: str) -> str:
    """A markdown table of a spread_table, in mIoU points."""
    lines = [f"# {title}", "", "| figure | n | mean | sd | min – max | per seed |", "|---|---:|---:|---:|---|---|"]
    for label, s in table.items():
        seeds = ", ".join(f"{seed}: {100 * v:.1f}" for seed, v in s["seeds"].items())
        lines.append(f"| {label} | {s['n']} | {100 * s['mean']:.1f} | {100 * s['sd']:.1f} | "
                     f"{100 * s['min']:.1f} – {100 * s['max']:.1f} | {seeds} |")
    return "\n".join(lines) + "\n"


def format_groups(groups: Mapping[tuple, Mapping[int, Mapping]], baseline: tuple | None,
                  labels: Sequence[str] | None = None) -> str:
    """Per setting: mean ± sd (n) of each headline figure and, against `baseline`, the paired difference."""
    labels = list(labels or [label for label, _, _ in HEADLINE])
    base = groups.get(baseline) if baseline is not None else None
    lines = []
    for key, runs in groups.items():
        lines.append(f"## {setting_diff(key, baseline) if baseline is not None else 'setting'} "
                     f"(seeds {sorted(runs)})")
        lines += ["| figure | mean ± sd (n) | paired Δ vs baseline ± se | verdict |", "|---|---|---|---|"]
        values = {seed: headline_values(m) for seed, m in runs.items()}
        base_values = {seed: headline_values(m) for seed, m in (base or {}).items()}
        for label in labels:
            mine = {s: v[label] for s, v in values.items() if label in v}
            if not mine:
                continue
            sp = spread(mine.values())
            cell = f"{100 * sp.mean:.1f} ± {100 * sp.sd:.1f} ({sp.n})"
            theirs = {s: v[label] for s, v in base_values.items() if label in v}
            if base is not None and key != baseline and set(mine) & set(theirs):
                p = paired(theirs, mine)
                se = "–" if math.isnan(p.se) else f"{100 * p.se:.1f}"
                verdict = {"B > A": "above baseline", "B < A": "below baseline"}.get(p.verdict, p.verdict)
                lines.append(f"| {label} | {cell} | {100 * p.mean_delta:+.1f} ± {se} ({p.n}) | {verdict} |")
            else:
                lines.append(f"| {label} | {cell} | – | – |")
        lines.append("")
    return "\n".join(lines)
