"""The `tlog` package imports without a loop: its module graph, read from the source (imports under
TYPE_CHECKING and inside functions included, which a plain import would not reveal), has no cycle.
A loop means a module reaches "up" to one that depends on it: the code belongs somewhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import tlog

ROOT = Path(tlog.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that the module `name` (at `path`) imports, anywhere in its source."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module or ""
            # `from . import merkle` imports the module merkle (its package is already loaded: every module
            # of a package runs after the package's __init__); `from .errors import X` imports errors.
            names = {f"{base}.{alias.name}" for alias in node.names}
            found.update(names & known if names <= known else names | {base})
    return (found & known) - {name}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: imported(name, path, set(paths)) for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` as [a, b, …, a], or None (depth-first search, colouring the nodes)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "tlog.server.app" in graph and "tlog.sequencer" in graph["tlog.server.appender"]  # the graph is read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_search_names_a_cycle_hidden_under_type_checking_or_in_a_function() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_hidden_from_a_plain_import_are_read(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .x import Y\n"
                      "def f():\n    from ..z import w\n    import tlog.q\n    from . import sibling\n")
    known = {"p.s", "p.s.x", "p.z", "tlog.q", "p.s.m", "p.s.sibling"}
    # The package p.s is not imported by `from . import sibling`: only the sibling module is.
    assert imported("p.s.m", source, known) == {"p.s.x", "p.z", "tlog.q", "p.s.sibling"}
