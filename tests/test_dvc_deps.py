"""dvc.yaml's deps cover the code each stage runs: DVC does not follow imports, so a module a stage imports but
does not list would let `dvc repro` keep stale results after that module changes.

Each stage's script is imported in a fresh interpreter (its main() does not run); every `rrm` module loaded
then, and every `rrm` module imported inside a function of one (imports done when called), followed
transitively, must lie under one of the stage's deps.
"""

from __future__ import annotations

import ast
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

# Imports the stage's script in a fresh interpreter; prints the files of the rrm modules then loaded.
LOADED = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("stage_script", sys.argv[1])
spec.loader.exec_module(importlib.util.module_from_spec(spec))
print(json.dumps(sorted(m.__file__ for name, m in list(sys.modules.items())
                        if (name == "rrm" or name.startswith("rrm.")) and getattr(m, "__file__", None))))
"""


def _module_file(name: str) -> Path | None:
    """The source file of module `name` under the repository's rrm package (None when it has none)."""
    base = REPO.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _imported_names(path: Path) -> set[str]:
    """rrm modules `path` imports anywhere (module level and inside functions), with their parent packages."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])  # for relative imports
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], base]).strip(".")
            # `from rrm.engine import distributed` imports the submodule rrm.engine.distributed
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            parts = target.split(".")
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {name for name in names if name == "rrm" or name.startswith("rrm.")}


def _used_files(script: Path) -> set[Path]:
    loaded = subprocess.run([sys.executable, "-c", LOADED, str(script)], cwd=REPO, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert loaded.returncode == 0, f"importing {script} failed:\n{loaded.stderr[-3000:]}"
    files = {Path(f).resolve() for f in json.loads(loaded.stdout)}
    todo = list(files)
    while todo:  # imports inside functions: loaded only when called, so follow them in the source
        for name in _imported_names(todo.pop()):
            path = _module_file(name)
            if path is not None and path.resolve() not in files:
                files.add(path.resolve())
                todo.append(path.resolve())
    return files


def _script(stage: dict) -> Path:
    words = shlex.split(stage["cmd"])
    return REPO / next(word for word in words if word.startswith("stages/") and word.endswith(".py"))


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_deps_cover_every_rrm_module_it_uses(name):
    stage = STAGES[name]
    script = _script(stage)
    deps = [(REPO / dep).resolve() for dep in stage.get("deps", []) if "${" not in dep]
    assert script.resolve() in deps, f"stage {name}: its script {script.relative_to(REPO)} is not in its deps"
    uncovered = sorted(str(path.relative_to(REPO)) for path in _used_files(script)
                       if not any(path == dep or dep in path.parents for dep in deps))
    assert not uncovered, f"stage {name}: deps in dvc.yaml miss rrm modules it uses: {', '.join(uncovered)}"


def test_imports_inside_functions_are_followed():
    """The evaluate stage's script loads rrm.experiments.pipeline, which imports these only when called."""
    script = REPO / "stages" / "evaluate.py"
    used = _used_files(script)
    assert REPO / "rrm" / "engine" / "evaluate.py" in used  # imported inside pipeline.evaluate: found by the AST walk
    assert REPO / "rrm" / "engine" / "train.py" in used  # inside pipeline.run_training
