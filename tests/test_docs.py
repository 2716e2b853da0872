"""The plugin and recipe docs cover the code: every hook spec, every recipe key used in a shipped YAML,
and their links resolve."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from aqakit import hookspecs

DOCS = ROOT / "docs"
WRITING = DOCS / "plugins" / "writing.md"
RECIPES_DOC = DOCS / "recipes.md"
COMPONENT_FIELDS = {"model.backbone", "model.aggregator", "data.dataset"}
HEAD_KEYS = {"name", "weight", "lr_mult"}  # schema keys of a head entry; the others are the head's arguments
TICKED = re.compile(r"`([^`]+)`")


def recipe_yamls() -> list[Path]:
    """Every shipped recipe: YAML files under recipes/ and examples/ with ``model`` and ``data``
    (sweep files and other YAML have a schema of their own)."""
    found = []
    for top in ("recipes", "examples"):
        for path in sorted((ROOT / top).rglob("*.y*ml")):
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(data, dict) and "model" in data and "data" in data:
                found.append(path)
    return found


def recipe_keys(data: dict, prefix: str = "") -> Iterator[tuple[str, str | None]]:
    """``(field path, None)`` for schema fields and ``(argument, component)`` for component arguments."""
    for key, value in data.items():
        path = f"{prefix}{key}"
        if path in COMPONENT_FIELDS:
            yield path, None
            if isinstance(value, dict):
                yield from ((arg, str(value.get("name"))) for arg in value if arg != "name")
        elif path == "model.heads":
            yield path, None
            for head_id, head in (value or {}).items():
                head = head or {}
                yield from ((k, None) for k in head if k in HEAD_KEYS)
                yield from ((arg, str(head.get("name", head_id))) for arg in head if arg not in HEAD_KEYS)
        elif isinstance(value, dict):
            yield from recipe_keys(value, f"{path}.")
        else:
            yield path, None


def argument_tables(text: str) -> dict[str, set[str]]:
    """Component name -> arguments, from table rows ``| kind `name` | `arg` | ...``."""
    table: dict[str, set[str]] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and line.lstrip().startswith("|"):
            for component in TICKED.findall(cells[0]):
                table.setdefault(component, set()).update(TICKED.findall(cells[1]))
    return table


def undocumented(path: Path) -> list[str]:
    text = RECIPES_DOC.read_text(encoding="utf-8")
    tables = argument_tables(text)
    readme = next((p / "README.md" for p in path.parents if (p / "README.md").is_file() and p != ROOT), None)
    if readme is not None:
        for name, args in argument_tables(readme.read_text(encoding="utf-8")).items():
            tables.setdefault(name, set()).update(args)
    missing = []
    for key, component in recipe_keys(yaml.safe_load(path.read_text(encoding="utf-8"))):
        if component is None and f"`{key}`" not in text:
            missing.append(key)
        elif component is not None and key not in tables.get(component, set()):
            missing.append(f"{component}.{key}")
    return sorted(set(missing))


@pytest.mark.parametrize("path", recipe_yamls(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_recipe_key_is_documented(path):
    missing = undocumented(path)
    assert not missing, (f"{path.relative_to(ROOT)}: document {', '.join(missing)} in docs/recipes.md "
                         f"(fields as `a.b.c`; component arguments as a row | kind `component` | `arg` | ...)")


def test_recipe_walk_separates_fields_from_component_arguments():
    data = {"name": "x", "model": {"backbone": {"name": "c3d", "width": 0.5}, "clips": {"count": 2},
                                   "heads": {"score": {"weight": 2.0, "scale": 17.0}}},
            "data": {"dataset": "mtl_aqa", "batch_size": 3}, "train": {"optimizer": {"lr": 1.0e-3}}}
    assert set(recipe_keys(data)) == {
        ("name", None), ("model.backbone", None), ("width", "c3d"), ("model.clips.count", None),
        ("model.heads", None), ("weight", None), ("scale", "score"), ("data.dataset", None),
        ("data.batch_size", None), ("train.optimizer.lr", None)}
    assert argument_tables("| head `a`, `b` | `x`, `y` | int |\n") == {"a": {"x", "y"}, "b": {"x", "y"}}


def test_recipes_are_found():
    names = {p.name for p in recipe_yamls()}
    assert {"quickstart.yaml", "diving_mtl.yaml", "skating.yaml"} <= names


def test_every_hook_spec_is_documented():
    text = WRITING.read_text(encoding="utf-8")
    specs = [n for n in dir(hookspecs) if hasattr(getattr(hookspecs, n), "aqakit_spec")]
    assert len(specs) >= 5
    missing = [n for n in specs if f"`{n}(" not in text]
    assert not missing, f"docs/plugins/writing.md does not document hook(s) {missing}"


OWN_DOCS = [WRITING, DOCS / "plugins" / "testing.md", RECIPES_DOC, ROOT / "CONTRIBUTING.md", ROOT / "README.md",
            ROOT / "examples" / "aqakit-plugin-skating" / "README.md"]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", OWN_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    broken = [target for target in LINK.findall(doc.read_text(encoding="utf-8"))
              if "://" not in target and not (doc.parent / target).exists()]
    assert not broken, f"{doc.relative_to(ROOT)}: broken links {broken}"


def test_contributing_links_the_plugin_and_recipe_docs():
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    for target in ("docs/plugins/writing.md", "docs/plugins/testing.md", "docs/recipes.md"):
        assert f"]({target}" in text, target
    assert not (DOCS / "plugins.md").exists()
