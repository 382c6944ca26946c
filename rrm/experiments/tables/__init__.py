"""The paper's Tables 1-5 as DVC experiments: `plan` expands the table file into cells and deduplicated
experiments, `runner` queues and runs the missing ones through DVC, `report` writes reports/tables.md with
our numbers beside the paper's, and the figures."""

from rrm.experiments.tables.plan import (
    METRIC_KEYS,
    Cell,
    Plan,
    default_table,
    expand,
    format_override,
    load_table,
    plan,
    runnable,
    seeded_name,
    split_labelled,
    validate_table,
    with_seeds,
)
from rrm.experiments.tables.report import (
    FIGURES,
    NOT_RUN,
    REPORT,
    cell_values,
    claims_md,
    class_columns,
    curve_figure,
    per_class_figure,
    render_report,
    write_report,
)
from rrm.experiments.tables.runner import (
    collect_results,
    missing,
    parse_exp_show,
    queue_and_run,
    running_tasks,
    stale_outputs,
)

__all__ = [
    "FIGURES", "METRIC_KEYS", "NOT_RUN", "REPORT", "Cell", "Plan", "cell_values", "claims_md", "class_columns",
    "collect_results", "curve_figure", "default_table", "expand", "format_override", "load_table", "missing",
    "parse_exp_show", "per_class_figure", "plan", "queue_and_run", "render_report", "runnable",
    "running_tasks", "seeded_name", "split_labelled", "stale_outputs", "validate_table", "with_seeds",
    "write_report",
]
