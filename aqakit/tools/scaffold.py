"""``aqakit new-plugin NAME``: write an installable ``aqakit-plugin-NAME`` package that trains as generated.

The package has one working component per kind asked for (from ``aqakit/tools/templates/plugin/``), the
hooks registering them, a CPU recipe that uses them (bundled or rendered stand-ins for kinds not
asked for), a test file built on :mod:`aqakit.testing`, and a README.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from aqakit.errors import AqakitError, suggest
from aqakit.kinds import MODEL_KINDS as KINDS  # the kinds a generated plugin can hold

TEMPLATES = Path(__file__).parent / "templates" / "plugin"
NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")


@dataclass(frozen=True)
class PluginNames:
    """The spellings of one plugin name: ``my-sport`` -> ``my_sport``, ``aqakit-plugin-my-sport``, ..."""

    name: str    # component prefix and entry-point name: my_sport
    dist: str    # distribution: aqakit-plugin-my-sport
    module: str  # import name: aqakit_plugin_my_sport
    camel: str   # class prefix: MySport


# kind -> (template, component suffix, class suffix, hook)
COMPONENTS = {
    "backbone": ("backbone", "net", "Net", "register_backbones"),
    "aggregator": ("aggregator", "attention", "Attention", "register_aggregators"),
    "head": ("head", "score", "ScoreHead", "register_heads"),
    "dataset": ("dataset", "videos", "Videos", "register_datasets"),
}

# Recipe lines: the plugin's own component, or a stand-in when the kind was not asked for.
RECIPE_OWN = {
    "backbone": "  backbone: {{name: {n}_net, width: 8, clip_len: 4, frame_size: 16}}",
    "aggregator": "  aggregator: {{name: {n}_attention, out_dim: 32}}",
    "head": "    score: {{name: {n}_score, max_score: 10.0}}",
    "dataset": "  dataset: {{name: {n}_videos, n: 32, frames: 16, size: 16}}",
}
RECIPE_STAND_IN = {
    "backbone": "  backbone: {name: c3d, width: 0.0625, clip_len: 16, frame_size: 32, batchnorm: true}",
    "aggregator": "  aggregator: {name: avg}",
    "head": "    score: {name: score, scale: 10.0}",
    "dataset": ("  # a stand-in: rendered dives (scores 0..~100); use your own dataset, e.g. video_table\n"
                "  dataset: {name: diving_synth, n: 40, size: 32, render_frames: 16, events: 2}"),
}


def plugin_names(name: str) -> PluginNames:
    """Check NAME and derive the package's names; one clear error for a bad one."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name) or len(name) > 40:
        raise AqakitError(f"plugin name {name!r}: use lowercase letters and digits, starting with a letter, "
                          f"words joined by single '-' or '_', at most 40 characters (e.g. 'mysport')")
    if name.replace("-", "_").startswith("aqakit"):
        raise AqakitError(f"plugin name {name!r}: give only the part after 'aqakit-plugin-' (e.g. 'mysport')")
    snake = name.replace("-", "_")
    return PluginNames(name=snake, dist=f"aqakit-plugin-{name.replace('_', '-')}", module=f"aqakit_plugin_{snake}",
                       camel="".join(part.capitalize() for part in snake.split("_")))


def parse_kinds(kinds: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"backbone,head"`` -> ``("backbone", "head")`` in aqakit's kind order; ``None`` = all four."""
    if kinds is None:
        return KINDS
    items = [k.strip() for k in (kinds.split(",") if isinstance(kinds, str) else kinds) if k.strip()]
    chosen = set()
    for item in items:
        kind = item if item in KINDS else item[:-1] if item.endswith("s") and item[:-1] in KINDS else None
        if kind is None:
            raise AqakitError(f"--kinds: unknown kind '{item}'{suggest(item, KINDS)}; kinds: {', '.join(KINDS)}")
        chosen.add(kind)
    if not chosen:
        raise AqakitError(f"--kinds: name at least one of {', '.join(KINDS)}")
    return tuple(k for k in KINDS if k in chosen)


def _render(template: str, values: dict[str, str]) -> str:
    return Template((TEMPLATES / template).read_text(encoding="utf-8")).substitute(values)


def _init_module(n: PluginNames, kinds: tuple[str, ...]) -> str:
    imports, hooks = [], []
    for kind in kinds:
        module, suffix, cls, hook = COMPONENTS[kind]
        imports.append(f"from {n.module}.{module} import {n.camel}{cls}")
        hooks.append(f"@aqakit.hookimpl\ndef {hook}(register):\n    register(\"{n.name}_{suffix}\", {n.camel}{cls})\n")
    names = ", ".join(f"{k} ``{n.name}_{COMPONENTS[k][1]}``" for k in kinds)
    return (f'"""aqakit plugin {n.dist}: {names}.\n\nEach hook registers components with '
            f'``register(name, factory)``; see aqakit\'s docs/plugins/writing.md.\n"""\n\n'
            "from __future__ import annotations\n\nimport aqakit\n" + "\n".join(imports) + "\n\n\n"
            + "\n\n".join(hooks))


def _recipe(n: PluginNames, kinds: tuple[str, ...]) -> str:
    line = {k: (RECIPE_OWN[k].format(n=n.name) if k in kinds else RECIPE_STAND_IN[k]) for k in KINDS}
    scale_note = "" if "dataset" in kinds or "head" not in kinds else "  # scores of the stand-in go to ~100"
    head = line["head"].replace("max_score: 10.0", "max_score: 100.0") if scale_note else line["head"]
    return "\n".join([
        f"# Trains the {n.dist} components on CPU in seconds: aqakit train {n.module}/{n.name}.yaml",
        f"name: {n.name}", "seed: 0", "model:", line["backbone"], line["aggregator"], "  clips: {count: 2}",
        "  heads:", head + scale_note, "data:", line["dataset"], "  batch_size: 8", "  val_fraction: 0.25",
        "train:", "  epochs: 3", "  optimizer: {name: adam, lr: 3.0e-3}", "  device: cpu", "",
    ])


def _readme(n: PluginNames, kinds: tuple[str, ...]) -> str:
    rows = "\n".join(f"| {k} | `{n.name}_{COMPONENTS[k][1]}` | `{n.module}/{COMPONENTS[k][0]}.py` |" for k in kinds)
    if "dataset" in kinds:
        note = (f"Without `root`, `{n.name}_videos` first writes a small sample (mp4s + `labels.csv`) into "
                f"`$AQAKIT_CACHE` (default `~/.cache/aqakit`). Your own data: a folder with `labels.csv` "
                f"(columns `path`, `score`, `split`) and the videos it names, then\n"
                f"`aqakit train {n.module}/{n.name}.yaml data.dataset.root=PATH/TO/FOLDER`.")
    else:
        note = "The recipe uses stand-ins for the kinds this plugin does not provide: replace them with yours."
    return _render("README.md.tmpl", {"dist": n.dist, "name": n.name, "module": n.module,
                                      "component_rows": rows, "data_note": note})


def plugin_files(n: PluginNames, kinds: tuple[str, ...]) -> dict[str, str]:
    """Relative path -> text of every file of the package."""
    values = {"name": n.name, "Name": n.camel, "dist": n.dist, "module": n.module}
    files = {
        "pyproject.toml": _render("pyproject.toml.tmpl", values),
        "README.md": _readme(n, kinds),
        f"{n.module}/__init__.py": _init_module(n, kinds),
        f"{n.module}/{n.name}.yaml": _recipe(n, kinds),
        "tests/test_plugin.py": _render("test_plugin.py.tmpl", values),
    }
    for kind in kinds:
        template = COMPONENTS[kind][0]
        files[f"{n.module}/{template}.py"] = _render(f"{template}.py.tmpl", values)
    return files


def new_plugin(name: str, parent: str | Path = ".", kinds: str | Iterable[str] | None = None) -> Path:
    """Write ``PARENT/aqakit-plugin-NAME/``; refuses a folder that exists and is not empty."""
    n = plugin_names(name)
    chosen = parse_kinds(kinds)
    target = Path(parent) / n.dist
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise AqakitError(f"'{target}' already exists and is not empty: choose another --out or remove it")
    for rel, text in plugin_files(n, chosen).items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target
