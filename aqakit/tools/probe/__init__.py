"""``aqakit probe``: linear (ridge) probes on the per-stage activations of frozen backbones.

Parmar & Morris (CVPR 2019) section 5.2: do features learned for AQA capture quality better than
others? For every model (a checkpoint, or a recipe = seeded random init) and every stage (c1..c5),
ridge regression is fitted from the pooled activations to the judged score, its regularisation chosen
by k-fold CV on the training part only, and the test Spearman is reported.

Protocols: ``within`` = the dataset's own train/test split. ``out-of-dataset`` = leave one
competition out: every competition is the test part once, the model is fitted on all others (all of
the dataset's splits pooled), and the per-competition Spearman values are averaged with Fisher's z.
Where samples have several ``class`` values, a probe is fitted per class and the per-class values are
averaged with Fisher's z.
"""

from __future__ import annotations

import copy
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aqakit.media import checkpoint
from aqakit.errors import AqakitError
from aqakit.interfaces import Dataset
from aqakit.engine.metrics import fisher_z_mean, spearman
from aqakit.plugins import Plugins
from aqakit.tools.probe.features import (Features, ProbeModel, load_checkpoint_model, random_init_model, split_features,
                                   stage_names)
from aqakit.tools.probe.ridge import DEFAULT_ALPHAS, fit_and_predict

PROTOCOLS: tuple[str, ...] = ("within", "out-of-dataset")
DEFAULT_LAYERS = "c1,c2,c3,c4,c5"
MIN_TRAIN = 3  # samples a probe needs to be fitted (and cross-validated)


# -- parsing the command line -------------------------------------------------------------------

def parse_layers(text: str) -> list[str]:
    layers = [part.strip() for part in text.split(",") if part.strip()]
    if not layers:
        raise AqakitError(f"--layers {text!r} names no layer; give stage names, e.g. --layers {DEFAULT_LAYERS}")
    return list(dict.fromkeys(layers))


def parse_alphas(text: str | None) -> tuple[float, ...]:
    if text is None:
        return DEFAULT_ALPHAS
    try:
        alphas = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise AqakitError(f"--alphas {text!r}: give positive numbers separated by commas, e.g. 0.1,1,10,100") from None
    if not alphas or any(not math.isfinite(a) or a <= 0 for a in alphas):
        raise AqakitError(f"--alphas {text!r}: give positive numbers separated by commas, e.g. 0.1,1,10,100")
    return tuple(sorted(set(alphas)))


def read_groups(path: Path) -> dict[str, str]:
    """A CSV of ``key,group`` rows (an optional ``key,group`` header) -> {sample key: group}."""
    if not path.is_file():
        raise AqakitError(f"--groups file not found: {path}")
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f), 1):
            row = [cell.strip() for cell in row]
            if not any(row) or (number == 1 and [c.lower() for c in row] == ["key", "group"]):
                continue
            if len(row) != 2 or not all(row):
                raise AqakitError(f"{path} line {number}: expected 'key,group', got {','.join(row)!r}")
            out[row[0]] = row[1]
    if not out:
        raise AqakitError(f"{path}: no 'key,group' rows")
    return out


# -- models -------------------------------------------------------------------------------------

def _checkpoint_label(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.name}" if path.parent.name == "checkpoints" else path.name


def load_models(sources: list[str], plugins: Plugins, baseline: str | None = None) -> list[ProbeModel]:
    """Rows of the comparison: each checkpoint; each recipe as built (random init, or its backbone's
    ``weights``); with ``baseline='random'`` a random-init row per checkpoint architecture (same recipe
    without pretrained ``weights``, same input window), listed first."""
    from aqakit.recipe import load_recipe

    baselines: list[ProbeModel] = []
    rows: list[ProbeModel] = []
    for src in sources:
        path = Path(src)
        if path.suffix in (".yaml", ".yml"):
            recipe = load_recipe(path, registry=plugins.registry)
            what = "init" if recipe.model.backbone.args.get("weights") else "random init"  # e.g. Sports-1M C3D
            rows.append(random_init_model(recipe, plugins, f"{what} ({path.stem})", str(path)))
            continue
        model = load_checkpoint_model(path, plugins, _checkpoint_label(path))
        rows.append(model)
        if baseline == "random":
            recipe = copy.deepcopy(model.recipe)
            recipe.model.backbone.args.pop("weights", None)  # random means random, even if it was pretrained
            baselines.append(random_init_model(recipe, plugins, f"random init ({recipe.name})",
                                               f"{path} (recipe)", frames=model.frames))
    models, seen = [], set()
    for m in baselines + rows:
        ident = (m.digest, m.frames)
        if ident in seen:
            continue
        seen.add(ident)
        taken = {x.label for x in models}
        base, i = m.label, 2
        while m.label in taken:
            m.label, i = f"{base} #{i}", i + 1
        models.append(m)
    return models


def check_layers(models: list[ProbeModel], layers: list[str]) -> None:
    for m in models:
        name = m.recipe.model.backbone.name
        m.layers = stage_names(m.model, name)
        unknown = [layer for layer in layers if layer not in m.layers]
        if unknown:
            raise AqakitError(f"--layers: unknown layer '{unknown[0]}' for backbone '{name}' "
                              f"(it has: {', '.join(m.layers)})")


# -- protocols ----------------------------------------------------------------------------------

@dataclass
class Table:
    """Samples as arrays: features, scores, class and group per sample."""

    x: np.ndarray
    y: np.ndarray
    cls: np.ndarray
    group: np.ndarray

    @classmethod
    def of(cls, parts: list[Features], groups: list[str] | None = None) -> Table:
        x = np.concatenate([p.x.numpy().astype(np.float64) for p in parts])
        y = np.concatenate([np.asarray(p.score, dtype=np.float64) for p in parts])
        classes = np.array([c for p in parts for c in p.meta["class"]], dtype=object)
        group = np.array(groups if groups is not None else [""] * len(y), dtype=object)
        return cls(x, y, classes, group)

    def rows(self, mask: np.ndarray) -> Table:
        return Table(self.x[mask], self.y[mask], self.cls[mask], self.group[mask])


def _fit(train: Table, test: Table, alphas: tuple[float, ...], folds: int) -> dict[str, Any]:
    out: dict[str, Any] = {"n_train": len(train.y), "n_test": len(test.y)}
    if len(train.y) < MIN_TRAIN or len(test.y) < 2:
        return {**out, "spearman": math.nan, "alpha": None}
    pred, alpha = fit_and_predict(train.x, train.y, test.x, alphas, folds)
    return {**out, "spearman": spearman(pred, test.y), "alpha": alpha}


def _classes(*tables: Table) -> list[str]:
    return sorted({c for t in tables for c in t.cls})


def within(train: Table, test: Table, alphas: tuple[float, ...], folds: int) -> dict[str, Any]:
    """Fit on the train split, Spearman on the test split (per class, Fisher-z averaged)."""
    classes = _classes(test)
    if len(classes) == 1:
        return _fit(train, test, alphas, folds)
    per_class = {c: _fit(train.rows(train.cls == c), test.rows(test.cls == c), alphas, folds) for c in classes}
    return {"spearman": fisher_z_mean([r["spearman"] for r in per_class.values()]), "per_class": per_class,
            "n_train": len(train.y), "n_test": len(test.y)}


def out_of_dataset(data: Table, alphas: tuple[float, ...], folds: int) -> dict[str, Any]:
    """Leave one competition out, per class; Fisher-z mean over competitions, then over classes."""
    per_class: dict[str, Any] = {}
    for c in _classes(data):
        part = data.rows(data.cls == c)
        held = {g: _fit(part.rows(part.group != g), part.rows(part.group == g), alphas, folds)
                for g in sorted(set(part.group))} if len(set(part.group)) > 1 else {}
        per_class[c] = {"spearman": fisher_z_mean([r["spearman"] for r in held.values()]), "competitions": held}
    if len(per_class) == 1:
        return next(iter(per_class.values()))
    return {"spearman": fisher_z_mean([r["spearman"] for r in per_class.values()]), "per_class": per_class}


def resolve_groups(parts: list[Features], dataset_name: str, groups_file: Path | None) -> list[str]:
    """Each sample's competition: from ``--groups FILE`` if given, else the dataset's ``competition``."""
    keys = [k for p in parts for k in p.keys]
    if groups_file is not None:
        mapping = read_groups(groups_file)
        missing = [k for k in keys if k not in mapping]
        if missing:
            raise AqakitError(f"{groups_file}: no group for sample key {missing[0]!r} ({len(missing)} of {len(keys)} "
                              "keys missing); list every sample as 'key,group'")
        groups = [mapping[k] for k in keys]
    else:
        groups = [c for p in parts for c in p.meta["competition"]]
        if not all(groups):
            raise AqakitError(f"dataset '{dataset_name}' records no competition for {groups.count('')} of its "
                              f"{len(groups)} samples; pass --groups FILE (CSV: key,group) for the out-of-dataset "
                              "protocol")
    if len(set(groups)) < 2:
        raise AqakitError(f"the out-of-dataset protocol needs at least 2 competitions; found {len(set(groups))} "
                          f"({', '.join(sorted(set(groups)))})")
    return groups


# -- the whole probe ----------------------------------------------------------------------------

def run_probe(sources: list[str], dataset_name: str, dataset_args: list[str], plugins: Plugins, *,
              layers: list[str], protocols: list[str], alphas: tuple[float, ...] = DEFAULT_ALPHAS, folds: int = 5,
              baseline: str | None = None, groups_file: Path | None = None, cache: Path | None = None,
              batch_size: int = 8, workers: int = 0) -> dict[str, Any]:
    """Probe every model on every layer under every protocol; returns the JSON-ready result."""
    from aqakit.tools.probe.features import cache_dir
    from aqakit.recipe import apply_overrides, check_arguments

    t0 = time.perf_counter()
    if not layers:
        raise AqakitError(f"--layers names no layer; give stage names, e.g. --layers {DEFAULT_LAYERS}")
    if folds < 2:
        raise AqakitError(f"--folds {folds}: cross-validation needs at least 2 folds")
    comp = plugins.registry.get("dataset", dataset_name)
    kwargs = check_arguments(comp.factory, apply_overrides({}, list(dataset_args)), "dataset",
                             what=f"dataset '{dataset_name}'")
    try:
        dataset: Dataset = comp.factory(**kwargs)
    except (ValueError, TypeError) as exc:
        raise AqakitError(f"dataset '{dataset_name}': {' '.join(str(exc).split())}") from None
    if "out-of-dataset" in protocols and groups_file is None and "competition" not in dataset.provides:
        hint = dataset.competition_help or f"dataset '{dataset_name}' records no competition per sample"
        raise AqakitError(f"the out-of-dataset protocol needs each sample's competition: {hint.rstrip('.')}; "
                          "or pass --groups FILE (CSV: key,group)")
    models = load_models(sources, plugins, baseline)
    check_layers(models, layers)
    splits = list(dataset.splits())
    if "within" in protocols and not {"train", "test"} <= set(splits):
        raise AqakitError(f"dataset '{dataset_name}' has no train/test split (it has: {', '.join(splits)}); "
                          "use --protocol out-of-dataset")
    needed = splits if "out-of-dataset" in protocols else ["train", "test"]
    cache = Path(cache) if cache else cache_dir()
    computed = reused = 0
    features: dict[str, dict[str, dict[str, Features]]] = {}
    for m in models:
        features[m.label] = {}
        for split in needed:
            feats, n = split_features(m, dataset, dataset_name, kwargs, split, layers, cache, batch_size, workers)
            features[m.label][split] = feats
            computed, reused = computed + n, reused + len(layers) - n
    t_features = time.perf_counter() - t0
    groups = None
    if "out-of-dataset" in protocols:
        first = features[models[0].label]
        groups = resolve_groups([first[s][layers[0]] for s in needed], dataset_name, groups_file)
    results: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in protocols}
    for m in models:
        for protocol in protocols:
            row = results[protocol].setdefault(m.label, {})
            for layer in layers:
                f = features[m.label]
                if protocol == "within":
                    row[layer] = within(Table.of([f["train"][layer]]), Table.of([f["test"][layer]]), alphas, folds)
                else:
                    row[layer] = out_of_dataset(Table.of([f[s][layer] for s in needed], groups), alphas, folds)
    first = features[models[0].label]
    info: dict[str, Any] = {}
    if "within" in protocols:
        info["within"] = {"train": len(first["train"][layers[0]].keys), "test": len(first["test"][layers[0]].keys)}
    if groups is not None:
        info["out-of-dataset"] = {"splits": needed, "competitions": {g: groups.count(g) for g in sorted(set(groups))}}
    classes = sorted({c for s in needed for c in first[s][layers[0]].meta["class"]})
    return {
        "dataset": dataset_name, "args": kwargs, "layers": layers, "protocols": protocols,
        "alphas": list(alphas), "folds": folds, "classes": [c for c in classes if c],
        "groups_file": str(groups_file) if groups_file else None, "samples": info,
        "models": [{"label": m.label, "kind": m.kind, "source": m.source, "backbone": m.recipe.model.backbone.name,
                    "frames": m.frames, "digest": m.digest[:16]} for m in models],
        "results": results,
        "cache": {"dir": str(cache), "computed": computed, "reused": reused},
        "seconds": {"features": round(t_features, 2), "fit": round(time.perf_counter() - t0 - t_features, 2),
                    "total": round(time.perf_counter() - t0, 2)},
    }


# -- output -------------------------------------------------------------------------------------

def _cell(value: float | None) -> str:
    return "   n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:6.3f}"


def format_table(result: dict[str, Any]) -> str:
    """One aligned table per protocol: rows = models, columns = layers (test Spearman)."""
    layers = result["layers"]
    width = max(len("model"), *(len(m["label"]) for m in result["models"]))
    lines = [f"aqakit probe: dataset {result['dataset']}, test Spearman of ridge probes per layer "
             f"(alpha by {result['folds']}-fold CV on the training part)"]
    if len(result["classes"]) > 1:
        lines.append(f"classes: {', '.join(result['classes'])} (one probe each, Fisher-z mean)")
    for protocol in result["protocols"]:
        s = result["samples"].get(protocol, {})
        if protocol == "within":
            lines.append(f"\n[within] the dataset's split: train {s['train']} / test {s['test']} samples")
        else:
            comps = ", ".join(f"{g} ({n})" for g, n in s["competitions"].items())
            lines.append(f"\n[out-of-dataset] leave one competition out, Fisher-z mean over: {comps}")
        lines.append(f"{'model':<{width}}  " + "  ".join(f"{layer:>6}" for layer in layers))
        for m in result["models"]:
            row = result["results"][protocol][m["label"]]
            lines.append(f"{m['label']:<{width}}  " + "  ".join(_cell(row[layer]["spearman"]) for layer in layers))
    c, sec = result["cache"], result["seconds"]
    lines.append(f"\nfeatures: {c['computed']} computed, {c['reused']} from the cache ({sec['features']:.1f} s); "
                 f"probes {sec['fit']:.1f} s")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Grouped bars: one panel per protocol, one group per layer, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols, layers, models = result["protocols"], result["layers"], result["models"]
    fig, axes = plt.subplots(1, len(protocols), figsize=(1.2 + 1.3 * len(layers) * len(protocols), 3.4),
                             squeeze=False, sharey=True)
    width = 0.8 / len(models)
    for ax, protocol in zip(axes[0], protocols):
        for i, m in enumerate(models):
            values = [result["results"][protocol][m["label"]][layer]["spearman"] for layer in layers]
            values = [0.0 if v is None or math.isnan(v) else v for v in values]
            ax.bar(np.arange(len(layers)) + (i - (len(models) - 1) / 2) * width, values, width, label=m["label"])
        ax.set_xticks(np.arange(len(layers)), layers)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(protocol)
    axes[0][0].set_ylabel("test Spearman")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"linear probes on {result['dataset']}", fontsize=9)
    fig.tight_layout()
    checkpoint.atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=90))
    plt.close(fig)


def write_outputs(result: dict[str, Any], out: Path) -> list[Path]:
    """``probe_<dataset>.txt``, ``.json`` and ``.png`` in ``out`` (several datasets can share a folder)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"probe_{result['dataset']}"
    paths = [out / f"{stem}.txt", out / f"{stem}.json", out / f"{stem}.png"]
    checkpoint.atomic_write_text(paths[0], format_table(result) + "\n")
    checkpoint.atomic_write_json(paths[1], result)
    plot(result, paths[2])
    return paths
