"""rrm.models has no import circle: layers <- resnet38 <- rrm_net, weights loads files only (the MXNet readers
mxnet_params <- resnet38_mxnet are file readers too)."""

from __future__ import annotations

import ast
from pathlib import Path

import rrm.models

PACKAGE = Path(rrm.models.__file__).parent


def _imports(path: Path) -> set[str]:
    """The rrm.models modules a file imports anywhere (top level, functions, TYPE_CHECKING blocks)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        found |= {name.split(".")[2] for name in names if name.startswith("rrm.models.")}
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph as a path (first module repeated at the end), or None."""
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target, [*path, target])):
                return found
        state[module] = "done"
        return None

    return next((c for m in sorted(graph) if m not in state and (c := visit(m, [m]))), None)


def test_cycle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_models_package_has_no_import_circle() -> None:
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    assert graph["layers"] == set() and graph["mxnet_params"] == set(), graph
    assert graph["resnet38_mxnet"] == {"mxnet_params"} and graph["weights"] <= {"mxnet_params", "resnet38_mxnet"}, graph
    assert _cycle(graph) is None, _cycle(graph)
