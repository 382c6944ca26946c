"""The rrm modules each dvc.yaml stage loads, and its deps lists rewritten to exactly those files.

DVC does not follow imports: a stage's deps must name every rrm module its script can load (else a change to
one keeps stale results) and nothing more (else an unrelated change re-runs it; on real VOC the training
stages are GPU-days). A script's modules are the rrm modules loaded by importing it in a fresh interpreter
(its main() does not run) plus those imported inside their functions (loaded when called), followed
transitively in the source.

    python -m rrm.experiments.stage_deps            # print each stage's rrm deps
    python -m rrm.experiments.stage_deps --write    # rewrite them in dvc.yaml (other deps, comments kept)
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

# Imports a script in a fresh interpreter; prints the files of the rrm modules then loaded.
_LOADED = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("stage_script", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(m.__file__ for name, m in list(sys.modules.items())
                        if (name == "rrm" or name.startswith("rrm.")) and getattr(m, "__file__", None))))
"""


def module_file(name: str, repo: Path = REPO) -> Path | None:
    """The source file of module `name` under the repository's rrm package (None when it has none)."""
    base = repo.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def imported_names(path: Path, repo: Path = REPO) -> set[str]:
    """rrm modules `path` imports anywhere (module level and inside functions), with their parent packages."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(repo).with_suffix("").parts[:-1])  # for relative imports
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[:len(parts) - node.level + 1], base]).strip(".")
            # `from rrm.engine import distributed` imports the submodule rrm.engine.distributed
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in names if name == "rrm" or name.startswith("rrm.")}


def used_files(script: Path, repo: Path = REPO) -> set[Path]:
    """Every rrm module file `script` can load (see the module doc), resolved."""
    loaded = subprocess.run([sys.executable, "-c", _LOADED, str(script)], cwd=repo, capture_output=True, text=True,
                            env={"PYTHONPATH": str(repo), "PATH": ""})
    if loaded.returncode != 0:
        raise RuntimeError(f"importing {script} failed:\n{loaded.stderr[-3000:]}")
    files = {Path(f).resolve() for f in json.loads(loaded.stdout)}
    todo = list(files)
    while todo:  # imports inside functions: loaded only when called, so follow them in the source
        for name in imported_names(todo.pop(), repo):
            path = module_file(name, repo)
            if path is not None and path.resolve() not in files:
                files.add(path.resolve())
                todo.append(path.resolve())
    return files


def stage_script(stage: dict, repo: Path = REPO) -> Path:
    """The stages/*.py script a stage's command runs."""
    words = shlex.split(stage["cmd"])
    return repo / next(word for word in words if word.startswith("stages/") and word.endswith(".py"))


def is_rrm_dep(dep: str) -> bool:
    return dep == "rrm" or dep.startswith("rrm/")


def stage_modules(repo: Path = REPO) -> dict[str, list[str]]:
    """Stage name -> the rrm files its script loads, relative to the repository, sorted."""
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    resolved = repo.resolve()
    return {name: sorted(str(path.relative_to(resolved)) for path in used_files(stage_script(stage, repo), repo))
            for name, stage in stages.items()}


def rewrite(text: str, modules: dict[str, list[str]]) -> str:
    """dvc.yaml `text` with each stage's rrm deps replaced by `modules[stage]` (after its other deps);
    everything else, comments included, unchanged."""
    out: list[str] = []
    stage = None
    in_deps = False
    for line in text.splitlines(keepends=True):
        top = re.match(r"^  (\w+):", line)
        if top:
            stage, in_deps = top[1], False
        item = re.match(r"^(\s+)- (\S+)\s*$", line)
        if re.match(r"^    deps:\s*$", line):
            in_deps = True
            out.append(line)
            continue
        if in_deps and item:
            if not is_rrm_dep(item[2]):
                out.append(line)
            continue
        if in_deps:  # the first line after the deps list: the stage's rrm files go at its end
            out.extend(f"      - {path}\n" for path in modules.get(stage, []))
            in_deps = False
        out.append(line)
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite dvc.yaml's rrm deps")
    args = parser.parse_args()
    modules = stage_modules()
    if args.write:
        path = REPO / "dvc.yaml"
        path.write_text(rewrite(path.read_text(), modules))
        print(f"{path}: rrm deps of {len(modules)} stages rewritten")
    else:
        for name, files in modules.items():
            print(f"{name}:\n" + "".join(f"  {f}\n" for f in files), end="")


if __name__ == "__main__":
    main()
