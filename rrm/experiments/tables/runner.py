"""Running the table's experiments through DVC: `dvc exp show` parsing, staleness from dvc.lock, queueing
and running what is missing, and noticing queue workers that died.

An experiment commit still carries the baseline's other metrics files, so a metrics file counts as an
experiment's result only when its stage and every stage upstream of it are consistent in the experiment's
own dvc.lock (params as set, inputs equal to the upstream outputs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rrm.experiments.tables.plan import Plan, lookup_key
from rrm.settings import read_yaml

_EXP_REF = re.compile(r"^refs/exps/([0-9a-f]{2})/([0-9a-f]{38})/(.+)$")


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
                ok, current = lookup_key(params.get(file) or {}, key)
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


def git_head(repo: str | os.PathLike = ".") -> str:
    """The commit checked out in `repo` ("" outside a git repository)."""
    return _call(["git", "rev-parse", "HEAD"], Path(repo), check=False).stdout.strip()
