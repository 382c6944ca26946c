"""rrm.ops imports with torch and numpy alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

BLOCKED = ("dvc", "dvclive", "typer", "pydensecrf", "torchvision", "pandas", "matplotlib", "yaml", "PIL", "tqdm")

SCRIPT = f"""
import importlib.abc, sys
BLOCKED = {BLOCKED!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"blocked: {{name}}")
sys.meta_path.insert(0, Block())
for name in BLOCKED:
    sys.modules.pop(name, None)
import torch
import rrm.ops
from rrm.ops import DenseEnergyLoss, bilateral_filter, dense_crf
x = torch.rand(1, 2, 6, 7)
out = dense_crf(torch.zeros(1, 3, 6, 7), x / x.sum(1, keepdim=True), iterations=2)
assert out.shape == (1, 2, 6, 7)
print(sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_import_without_heavy_packages() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_blocking_works() -> None:
    """The same script fails when a module it needs is blocked (the finder really blocks)."""
    script = SCRIPT.replace(repr(BLOCKED), repr((*BLOCKED, "rrm")))
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode != 0 and "blocked: rrm" in result.stderr


def test_ops_sit_below_the_engine() -> None:
    """No module of rrm.ops imports rrm.engine, rrm.experiments or rrm.cli (at the top or inside a function)."""
    import ast

    above = ("rrm.engine", "rrm.experiments", "rrm.cli")
    for path in sorted((REPO / "rrm" / "ops").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad = [n for n in names if n.startswith(above)]
            assert not bad, f"{path.name} imports {bad}"
