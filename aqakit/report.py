"""``aqakit report RUN_DIR``: one self-contained HTML page about a run (images embedded).

Learning curves per metric and split, predicted vs judged scores with Spearman, a confusion matrix per
classification field, generated commentary beside the ground truth with a strip of frames from each
video, and probe charts when the run folder has them (``probe/*.png``).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import torch

from aqakit import checkpoint
from aqakit.errors import AqakitError

CURVES_PNG = "curves.png"
MAX_COMMENTARIES = 8


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_history(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.exists():
        raise AqakitError(f"{run} is not a run folder (no metrics.jsonl)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves_figure(history: list[dict[str, Any]]):
    """One panel per metric, one line per split."""
    plt = _pyplot()
    names = sorted({m for h in history for m in h["metrics"] if m != "lr"})
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for split in ("train", "val"):
            points = [(h["epoch"], h["metrics"][name]) for h in history
                      if h["split"] == split and h["metrics"].get(name) is not None]
            if points:
                ax.plot(*zip(*points), marker=".", label=split)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def plot_curves(run: Path) -> Path:
    """Write ``RUN/curves.png`` (the engine calls this at the end of every run)."""
    fig = curves_figure(read_history(run))
    fig.savefig(run / CURVES_PNG, dpi=90)
    _pyplot().close(fig)
    return run / CURVES_PNG


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def scatter_figure(pred: torch.Tensor, target: torch.Tensor, title: str):
    from aqakit.metrics import spearman

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.scatter(target.numpy(), pred.numpy(), s=10, alpha=0.7)
    lo, hi = float(min(target.min(), pred.min())), float(max(target.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8)
    ax.set_xlabel("judged")
    ax.set_ylabel("predicted")
    ax.set_title(f"{title}: Spearman {spearman(pred.numpy(), target.numpy()):.3f}", fontsize=9)
    fig.tight_layout()
    return fig


def confusion_figure(pred: torch.Tensor, target: torch.Tensor, names: list[str] | None, title: str):
    plt = _pyplot()
    known = target >= 0  # -1: a class name the head never saw in training; no row to count it in
    unknown = int((~known).sum())
    pred, target = pred[known], target[known]
    n = int(max(pred.max(), target.max()) + 1) if len(pred) else 1
    if names:
        n = max(n, len(names))
    matrix = torch.zeros(n, n, dtype=torch.long)
    for t, p in zip(target.tolist(), pred.tolist()):
        matrix[t, p] += 1
    fig, ax = plt.subplots(figsize=(1.2 + 0.42 * n, 1.0 + 0.42 * n))
    ax.imshow(matrix.numpy(), cmap="Blues")
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=7)
    labels = (names or [str(i) for i in range(n)])[:n]
    ax.set_xticks(range(n), labels, rotation=60, fontsize=7, ha="right")
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    acc = float((pred == target).float().mean()) if len(pred) else float("nan")
    note = f", {unknown} with unseen classes left out" if unknown else ""
    ax.set_title(f"{title} (accuracy {acc:.2f}{note})", fontsize=9)
    fig.tight_layout()
    return fig


def frame_strip(video: torch.Tensor, count: int = 6) -> str:
    """A row of ``count`` frames (uint8 C x T x H x W) as a base64 PNG."""
    from torchvision.io import encode_png

    t = video.shape[1]
    picks = [round(i * (t - 1) / max(count - 1, 1)) for i in range(count)]
    strip = torch.cat([video[:, i] for i in picks], dim=2)
    return base64.b64encode(encode_png(strip).numpy().tobytes()).decode()


def write_report(run: str | Path, plugins: Any) -> Path:
    """Write ``RUN/report.html``; return its path."""
    run = Path(run)
    history = read_history(run)
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    parts = [f"<h1>aqakit run: {html.escape(run.name)}</h1>"]
    if summary:
        parts.append(_summary_table(summary))
    parts.append("<h2>Learning curves</h2>" + _img(_png(curves_figure(history)), "learning curves"))
    predictions_path = run / "predictions" / "test.pt"
    if predictions_path.exists():
        parts.extend(_prediction_sections(run, predictions_path, plugins))
    else:
        parts.append("<p>No per-sample test predictions in this run (no test split, or an older run).</p>")
    probes = sorted((run / "probe").glob("*.png")) if (run / "probe").is_dir() else []
    if probes:
        parts.append("<h2>Probes</h2>" + "".join(
            _img(base64.b64encode(p.read_bytes()).decode(), p.stem) for p in probes))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>aqakit report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}"
            "</style></head><body>" + "\n".join(parts) + "</body></html>")
    out = run / "report.html"
    checkpoint.atomic_write_text(out, page)
    return out


def _summary_table(summary: dict[str, Any]) -> str:
    rows = ["<tr><th>metric</th><th>val (best epoch)</th><th>test (best epoch)</th><th>test (last epoch)</th></tr>"]
    last = summary.get("last_epoch", {}).get("test", {})
    for name in sorted(summary.get("test") or summary.get("val") or {}):
        cells = [summary.get("val", {}).get(name), summary.get("test", {}).get(name), last.get(name)]
        rows.append(f"<tr><td>{html.escape(name)}</td>" + "".join(
            f"<td>{c:.4f}</td>" if isinstance(c, (int, float)) else "<td></td>" for c in cells) + "</tr>")
    head = (f"<p>best epoch {summary.get('best_epoch')} of {summary.get('epochs')}, selected on "
            f"{html.escape(str(summary.get('selection', {}).get('metric')))} (validation)</p>")
    return "<h2>Summary</h2>" + head + "<table>" + "".join(rows) + "</table>"


def _prediction_sections(run: Path, path: Path, plugins: Any) -> list[str]:
    from aqakit.loading import load_model

    preds = torch.load(path, map_location="cpu", weights_only=True)
    loaded = load_model(run / "checkpoints" / "best.pt", plugins, device="cpu")
    recipe, model = loaded.recipe, loaded.model
    out = []
    for head_id, head in model.heads.items():
        collected = preds.get(head_id, {})
        if {"pred", "target"} <= collected.keys():
            out.append(f"<h2>{html.escape(head_id)}: predicted vs judged (test)</h2>"
                       + _img(_png(scatter_figure(collected["pred"], collected["target"], head_id)), head_id))
        fields = [k[len("pred_"):] for k in collected if k.startswith("pred_")]
        if fields:
            names = getattr(head, "class_names", {}) or {}
            out.append(f"<h2>{html.escape(head_id)}: confusion matrices (test)</h2>" + "".join(
                _img(_png(confusion_figure(collected[f"pred_{f}"], collected[f"target_{f}"], names.get(f), f)), f)
                for f in fields))
        if {"generated", "reference"} <= collected.keys() and hasattr(head, "decode_rows"):
            out.append(_commentary_table(head_id, head, collected, preds["index"], recipe, plugins))
    return out


def _commentary_table(head_id: str, head: Any, collected: dict[str, torch.Tensor], index: torch.Tensor,
                      recipe: Any, plugins: Any) -> str:
    n = min(MAX_COMMENTARIES, len(index))
    generated = head.decode_rows(collected["generated"][:n])
    reference = head.decode_rows(collected["reference"][:n])
    strips: list[str | None] = [None] * n
    note = ""
    try:  # frames need the dataset; a report made elsewhere still has the text
        from aqakit.data import build_dataset

        test = build_dataset(recipe, plugins.registry).split("test")
        strips = [frame_strip(test[int(i)]["video"]) for i in index[:n]]
    except (AqakitError, OSError) as exc:
        note = f"<p>Frames not shown: {html.escape(str(exc))}</p>"
    rows = ["<tr><th>#</th><th>frames</th><th>generated</th><th>ground truth</th></tr>"]
    for k in range(n):
        img = _img(strips[k], "frames") if strips[k] else ""
        rows.append(f"<tr><td>{int(index[k])}</td><td>{img}</td><td>{html.escape(generated[k])}</td>"
                    f"<td>{html.escape(reference[k])}</td></tr>")
    return f"<h2>{html.escape(head_id)}: commentary (test)</h2>{note}<table>{''.join(rows)}</table>"
