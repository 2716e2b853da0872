"""``aqakit data info``: what a dataset holds, before anything trains on it."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from aqakit.recipe import apply_overrides, check_arguments
from aqakit.registry import Registry

MAX_PROBLEMS_SHOWN = 20
MAX_CLASSES = 20  # integer labels with more distinct values are summarised as numbers


def dataset_info(name: str, args: tuple[str, ...] | list[str], registry: Registry) -> dict[str, Any]:
    """Build dataset ``name`` with ``key=value`` args and summarise every split."""
    comp = registry.get("dataset", name)
    kwargs = check_arguments(comp.factory, apply_overrides({}, list(args)), "dataset", what=f"dataset '{name}'")
    dataset = comp.factory(**kwargs)
    out: dict[str, Any] = {"dataset": name, "args": kwargs, "provides": list(dataset.provides), "splits": {}}
    for split in dataset.splits():
        labels = dataset.labels(split)
        problems = dataset.problems(split)
        out["splits"][split] = {
            "count": len(labels),
            "labels": summarise(labels),
            "problems": len(problems),
            "problem_examples": problems[:MAX_PROBLEMS_SHOWN],
        }
    return out


def summarise(labels: list[dict[str, Any]]) -> dict[str, Any]:
    """Integer and text labels -> class counts; float labels -> min / mean / std / max; others skipped.

    Text counts as classes when values repeat and are few (so keys and commentary are skipped)."""
    out: dict[str, Any] = {}
    keys = sorted({k for row in labels for k in row})
    for key in keys:
        values = [row[key] for row in labels if key in row]
        if values and all(isinstance(v, int) for v in values) and len(set(values)) <= MAX_CLASSES:
            out[key] = {"classes": {str(k): c for k, c in sorted(Counter(values).items())}}
        elif (values and key not in ("key", "caption") and all(isinstance(v, str) for v in values)
              and len(set(values)) < len(values) and len(set(values)) <= MAX_CLASSES):
            out[key] = {"classes": dict(sorted(Counter(values).items()))}
        elif values and all(isinstance(v, (int, float)) for v in values):
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
            out[key] = {"min": min(values), "mean": round(mean, 4), "std": round(std, 4), "max": max(values)}
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
        for problem in s["problem_examples"]:
            lines.append(f"  ! {problem}")
    return "\n".join(lines)


__all__ = ["dataset_info", "format_info", "summarise"]
