"""The house: every import of ours (at module level, inside functions, under TYPE_CHECKING)
points down the layers or sideways within one, and no modules import each other in a circle."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "steerfront"

# Layer ranks, by module or package (the longest name that prefixes a module's wins); a module
# may import only modules of its own rank or below.
RANKS = {
    "steerfront": 0,  # the package's own __init__ only: a new top-level module needs its row
    "steerfront.data": 0,
    "steerfront.lm": 0,
    "steerfront.defaults": 0,
    "steerfront.errors": 0,
    "steerfront.files": 0,
    "steerfront.memory": 0,
    "steerfront.batches": 0,
    "steerfront.cluster": 0,
    "steerfront.forward": 1,
    "steerfront.methods": 2,
    "steerfront.scoring": 3,
    "steerfront.models": 4,  # loading composed with the self-check (which scores)
    "steerfront.search": 5,
    "steerfront.cli": 6,
}


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: name -> (file, whether it is a package's __init__)."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if package else parts)] = (path, package)
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The module of ours an imported name lands in (the deepest one that exists)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """The modules of ours that `module` imports, anywhere in its file."""
    path, package = MODULES[module]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")[: None if package else -1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for name in names:
            if name.split(".")[0] == "steerfront" and (target := _target(name)) != module:
                out.add(target)
    return out


GRAPH = {module: imports(module) for module in MODULES}


def rank(module: str) -> int:
    prefixes = [
        p for p in RANKS if module == p or (p != "steerfront" and module.startswith(p + "."))
    ]
    assert prefixes, f"{module} has no layer: add it to RANKS"
    return RANKS[max(prefixes, key=len)]


def test_every_module_has_a_layer():
    for module in MODULES:
        rank(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module):
    upward = sorted(t for t in GRAPH[module] if rank(t) > rank(module))
    assert not upward, f"{module} (layer {rank(module)}) imports higher layers: {upward}"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
