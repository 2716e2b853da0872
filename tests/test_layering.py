"""The house plan holds: imports only point down (docs/architecture.md), no cycles, no bundled plugin in the core."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aqakit"
# Lower layers never import higher ones; within a layer, no cycles.
LAYERS = {
    "aqakit.errors": 0, "aqakit.kinds": 0,
    "aqakit.media": 1,
    "aqakit.hookspecs": 2, "aqakit.interfaces": 2, "aqakit.registry": 2, "aqakit.plugins": 2, "aqakit.recipe": 2,
    "aqakit.engine": 3,
    "aqakit.tools": 4, "aqakit.testing": 4, "aqakit.api": 4,
    "aqakit.cli": 5, "aqakit.__main__": 5,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def layer(name: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if name == prefix or name.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{name} is in no layer of the plan: add it to LAYERS and docs/architecture.md")


def imports(name: str) -> set[str]:
    """aqakit modules ``name`` imports, at module level or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m in MODULES and m != name and m != "aqakit"}


GRAPH = {name: imports(name) for name in MODULES if name != "aqakit"}


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_point_down(name):
    wrong = sorted(m for m in GRAPH[name] if layer(m) > layer(name) and not name.startswith(m + "."))
    assert not wrong, f"{name} (layer {layer(name)}) imports {wrong} from above; see docs/architecture.md"


def test_no_import_cycles():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(GRAPH):
        if node not in state:
            visit(node)


def test_the_core_never_imports_a_bundled_plugin():
    offenders = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            offenders += [f"{name}: {m}" for m in mods if m.startswith("aqakit_")]
    assert not offenders, offenders
