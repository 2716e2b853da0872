"""``aqakit data info``: what a dataset holds, and every problem in it, before anything trains on it."""

from __future__ import annotations

import math
import numbers
from collections import Counter
from typing import Any

from aqakit.errors import AqakitError
from aqakit.recipe import apply_overrides, check_arguments
from aqakit.registry import Registry

MAX_CLASSES = 20  # integer labels with more distinct values are summarised as numbers


def dataset_info(name: str, args: tuple[str, ...] | list[str], registry: Registry) -> dict[str, Any]:
    """Build dataset ``name`` with ``key=value`` args; summarise every split and list all its problems."""
    comp = registry.get("dataset", name)
    kwargs = check_arguments(comp.factory, apply_overrides({}, list(args)), "dataset", what=f"dataset '{name}'")
    dataset = comp.factory(**kwargs)
    provides = list(dataset.provides)
    out: dict[str, Any] = {"dataset": name, "args": kwargs, "provides": provides, "splits": {}}
    for split in dataset.splits():
        labels = dataset.labels(split)
        problems = list(dataset.problems(split))
        problems += label_problems(labels, provides, reported={p.split(": ", 1)[0] for p in problems})
        out["splits"][split] = {
            "count": len(labels),
            "labels": summarise(labels),
            "problems": len(problems),
            "problem_lines": problems,
        }
    return out


def problem_count(info: dict[str, Any]) -> int:
    """All problem lines of a ``dataset_info`` result, over every split."""
    return sum(s["problems"] for s in info["splits"].values())


def check_clean(info: dict[str, Any]) -> None:
    """Raise (exit 2) when ``dataset_info`` found problems; call after printing the report."""
    count = problem_count(info)
    if count:
        where = ", ".join(f"{n} in {split}" for split, s in info["splits"].items() if (n := s["problems"]))
        raise AqakitError(f"dataset '{info['dataset']}': {count} sample(s) with problems ({where}), listed under "
                          "'problems'; fix them before training on it")


def _kind(value: Any) -> str:
    """A label value's kind for the type check: number, text, flag, or the type's name."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, numbers.Real):
        return "number"
    return "text" if isinstance(value, str) else type(value).__name__


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Integral) or math.isfinite(value)


def _stats(values: list[Any]) -> dict[str, Any] | None:
    """min / mean / std / max of numbers; None when they do not fit a float."""
    try:
        floats = [float(v) for v in values]
        mean = sum(floats) / len(floats)
        std = math.sqrt(sum((v - mean) ** 2 for v in floats) / len(floats))
    except OverflowError:
        return None
    if not math.isfinite(mean) or not math.isfinite(std):
        return None
    return {"min": min(values), "mean": round(mean, 4), "std": round(std, 4), "max": max(values)}


def label_problems(labels: list[dict[str, Any]], provides: list[str], reported: set[str] = frozenset()) -> list[str]:
    """Generic label checks, one line per sample: provided fields missing, NaN/inf numbers, and values of
    another kind than the field's usual one (e.g. a number among text captions). Samples whose key the
    dataset's own ``problems`` already reported (``reported``) are not checked again."""
    usual: dict[str, str] = {}
    for field in {k for row in labels for k in row}:
        kinds = Counter(_kind(row[field]) for row in labels if field in row)
        usual[field] = kinds.most_common(1)[0][0]
    out = []
    for i, row in enumerate(labels):
        key = str(row.get("key", f"sample {i}"))
        if key in reported:
            continue
        found = [f"field '{f}' is missing" for f in provides if f not in row]
        for field, value in row.items():
            kind = _kind(value)
            if kind == "number" and not _finite(value):
                found.append(f"field '{field}': {value!r} is not a finite number")
            elif kind != usual[field]:
                shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
                found.append(f"field '{field}': {shown} is {kind}, other samples have {usual[field]}")
        if found:
            out.append(f"{key}: {'; '.join(found)}")
    return out


def summarise(labels: list[dict[str, Any]]) -> dict[str, Any]:
    """Integer and text labels -> class counts; float labels -> min / mean / std / max; others skipped.

    Text counts as classes when values repeat and are few (so keys and commentary are skipped). Values of
    another kind than the rest, and NaN/inf numbers, are left out of the summary (``label_problems``
    lists them)."""
    out: dict[str, Any] = {}
    keys = sorted({k for row in labels for k in row}, key=str)
    for key in keys:
        values = [row[key] for row in labels if key in row]
        kinds = Counter(_kind(v) for v in values)
        usual = kinds.most_common(1)[0][0] if kinds else ""
        values = [v for v in values if _kind(v) == usual and (usual != "number" or _finite(v))]
        if values and usual == "number" and all(isinstance(v, numbers.Integral) for v in values) \
                and len(set(values)) <= MAX_CLASSES:
            out[str(key)] = {"classes": {str(k): c for k, c in sorted(Counter(int(v) for v in values).items())}}
        elif (values and usual in ("text", "bool") and key not in ("key", "caption")
              and len(set(values)) < len(values) and len(set(values)) <= MAX_CLASSES):
            out[str(key)] = {"classes": {str(k): c for k, c in sorted(Counter(values).items())}}
        elif values and usual == "number" and (stats := _stats(values)) is not None:
            out[str(key)] = stats
    return out


def format_info(info: dict[str, Any]) -> str:
    lines = [f"dataset {info['dataset']}  provides: {', '.join(info['provides'])}"]
    for split, s in info["splits"].items():
        lines.append(f"\n[{split}] {s['count']} samples, {s['problems']} with problems")
        for key, summary in s["labels"].items():
            if "classes" in summary:
                lines.append(f"  {key:<14} " + "  ".join(f"{k}:{c}" for k, c in summary["classes"].items()))
            else:
                lines.append(f"  {key:<14} min {summary['min']:g}  mean {summary['mean']:g}  "
                             f"std {summary['std']:g}  max {summary['max']:g}")
        if s["problem_lines"]:
            lines.append("  problems:")
            lines.extend(f"    ! {problem}" for problem in s["problem_lines"])
    return "\n".join(lines)


__all__ = ["check_clean", "dataset_info", "format_info", "label_problems", "problem_count", "summarise"]
