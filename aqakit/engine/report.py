"""``aqakit report RUN_DIR``: one self-contained HTML page about a run (images embedded). ``aqakit train``
writes it at the end of every run too.

The summary (best epoch, selection metric first), learning curves per metric and split (the selection
metric first, the best epoch marked), predicted vs judged scores as an SVG scatter whose points name
their samples, the worst-predicted test samples with a strip of their frames, a confusion matrix per
classification field, generated commentary beside the ground truth, and probe charts when the run folder
has them (``probe/*.png``).
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

from aqakit.media import checkpoint
from aqakit.errors import AqakitError

CURVES_PNG = "curves.png"
MAX_COMMENTARIES = 8
WORST = 6  # worst-predicted test samples shown per score head


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


def read_summary(run: Path) -> dict[str, Any]:
    """``RUN/summary.json``, or ``{}`` for a run that has not finished."""
    path = run / "summary.json"
    return json.loads(path.read_text()) if path.exists() else {}


def panel_order(history: list[dict[str, Any]], primary: str | None = None) -> list[str]:
    """Metric names to plot: the selection metric first, then ``loss``, then the rest alphabetically."""
    names = sorted({m for h in history for m in h["metrics"] if m != "lr"})
    first = [n for n in (primary, "loss") if n in names]
    return list(dict.fromkeys(first + names))


def curves_figure(history: list[dict[str, Any]], primary: str | None = None, best_epoch: int | None = None):
    """One panel per metric (``primary`` first), one line per split; ``best_epoch`` marked in every panel."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    names = panel_order(history, primary)
    cols = min(4, max(1, len(names)))
    rows = math.ceil(len(names) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for split in ("train", "val"):
            points = [(h["epoch"], h["metrics"][name]) for h in history
                      if h["split"] == split and h["metrics"].get(name) is not None]
            if points:
                ax.plot(*zip(*points), marker=".", label=split)
            best = [v for e, v in points if e == best_epoch]
            if split == "val" and name == primary and best:
                ax.plot([best_epoch], best, marker="*", markersize=11, color="crimson", linestyle="none")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="crimson", linestyle=":", linewidth=1, label=f"best (epoch {best_epoch})")
        ax.set_title(f"{name} (selection)" if name == primary else name, fontsize=9,
                     fontweight="bold" if name == primary else "normal")
        ax.set_xlabel("epoch", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def _selection(summary: dict[str, Any]) -> tuple[str | None, int | None]:
    return (summary.get("selection") or {}).get("metric"), summary.get("best_epoch")


def plot_curves(run: Path) -> Path:
    """Write ``RUN/curves.png`` (the engine calls this at the end of every run)."""
    fig = curves_figure(read_history(run), *_selection(read_summary(run)))
    fig.savefig(run / CURVES_PNG, dpi=90)
    _pyplot().close(fig)
    return run / CURVES_PNG


def _png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    _pyplot().close(fig)
    return buf.getvalue()


def _img(png: bytes | str, alt: str) -> str:
    b64 = png if isinstance(png, str) else base64.b64encode(png).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def scatter_figure(pred: torch.Tensor, target: torch.Tensor, title: str):
    """Predicted vs judged as a matplotlib figure (the PNG the loggers get)."""
    from aqakit.engine.metrics import spearman

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


def scatter_svg(pred: torch.Tensor, target: torch.Tensor, ids: list[str], title: str, size: int = 380) -> str:
    """Predicted vs judged as inline SVG: each point's ``<title>`` (a tooltip) names its sample."""
    from matplotlib.ticker import MaxNLocator

    from aqakit.engine.metrics import spearman

    points = [(float(t), float(p), i) for t, p, i in zip(target.tolist(), pred.tolist(), ids)
              if math.isfinite(t) and math.isfinite(p)]
    values = [v for t, p, _ in points for v in (t, p)] or [0.0, 1.0]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.05 or 0.5
    lo, hi = lo - pad, hi + pad
    left, right, top, bottom = 52, 14, 30, 40
    span_x, span_y = size - left - right, size - top - bottom

    def x(v: float) -> float:
        return left + (v - lo) / (hi - lo) * span_x

    def y(v: float) -> float:
        return top + span_y - (v - lo) / (hi - lo) * span_y

    rho = spearman(pred.numpy(), target.numpy())
    esc = html.escape
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" class="scatter" width="{size}" height="{size}" '
              f'viewBox="0 0 {size} {size}" role="img" aria-label="{esc(title)}: predicted vs judged">'),
             (f'<text x="{size / 2}" y="18" text-anchor="middle" font-size="13">{esc(title)}: Spearman {rho:.3f} '
              f'({len(points)} test samples)</text>'),
             f'<rect x="{left}" y="{top}" width="{span_x}" height="{span_y}" fill="none" stroke="#999"/>',
             f'<line x1="{x(lo)}" y1="{y(lo)}" x2="{x(hi)}" y2="{y(hi)}" stroke="#bbb" stroke-dasharray="4 3"/>']
    for tick in MaxNLocator(5).tick_values(lo, hi):
        if lo <= tick <= hi:
            parts.append(f'<text x="{x(tick):.1f}" y="{top + span_y + 14}" text-anchor="middle" font-size="10">'
                         f'{tick:g}</text><text x="{left - 5}" y="{y(tick) + 3:.1f}" text-anchor="end" '
                         f'font-size="10">{tick:g}</text>')
    parts.append(f'<text x="{left + span_x / 2}" y="{size - 6}" text-anchor="middle" font-size="11">judged</text>'
                 f'<text x="12" y="{top + span_y / 2}" text-anchor="middle" font-size="11" '
                 f'transform="rotate(-90 12 {top + span_y / 2})">predicted</text>')
    for t, p, sample in points:
        parts.append(f'<circle cx="{x(t):.1f}" cy="{y(p):.1f}" r="3.5" fill="#1f77b4" fill-opacity="0.7">'
                     f'<title>{esc(sample)}: judged {t:.2f}, predicted {p:.2f}</title></circle>')
    return "".join(parts) + "</svg>"


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


def write_report(run: str | Path, plugins: Any, images: dict[str, bytes] | None = None) -> Path:
    """Write ``RUN/report.html`` (and ``RUN/curves.png``); return its path. Pass a dict as ``images`` to
    receive the report's figures as PNG bytes by name (``curves``, ``<head>_scatter``, ``<head>_<field>``)."""
    run = Path(run)
    history = read_history(run)
    summary = read_summary(run)
    primary, best_epoch = _selection(summary)
    parts = [f"<h1>aqakit run: {html.escape(run.name)}</h1>"]
    if summary:
        parts.append(_summary_table(summary))
    curves = _png_bytes(curves_figure(history, primary, best_epoch))
    checkpoint.atomic_write_bytes(run / CURVES_PNG, lambda f: f.write(curves))
    if images is not None:
        images["curves"] = curves
    order = ", ".join(panel_order(history, primary))
    parts.append("<h2>Learning curves</h2>" + _img(curves, f"learning curves: {order}"))
    predictions_path = run / "predictions" / "test.pt"
    if predictions_path.exists():
        parts.extend(_prediction_sections(run, predictions_path, plugins, images))
    else:
        parts.append("<p>No per-sample test predictions in this run (no test split, or an older run).</p>")
    probes = sorted((run / "probe").glob("*.png")) if (run / "probe").is_dir() else []
    if probes:
        parts.append("<h2>Probes</h2>" + "".join(_img(p.read_bytes(), p.stem) for p in probes))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>aqakit report</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 6px;font-size:13px}"
            "tr.selection td{font-weight:bold;background:#fff4d6}svg.scatter circle:hover{fill:crimson}"
            "</style></head><body>" + "\n".join(parts) + "</body></html>")
    out = run / "report.html"
    checkpoint.atomic_write_text(out, page)
    return out


def _summary_table(summary: dict[str, Any]) -> str:
    """Best epoch and selection, then a row per metric (the selection metric first, highlighted)."""
    primary, best_epoch = _selection(summary)
    selection = summary.get("selection") or {}
    rows = ["<tr><th>metric</th><th>val (best epoch)</th><th>test (best epoch)</th><th>test (last epoch)</th></tr>"]
    last = summary.get("last_epoch", {}).get("test", {})
    names = sorted(summary.get("test") or summary.get("val") or {})
    for name in [n for n in names if n == primary] + [n for n in names if n != primary]:
        cells = [summary.get("val", {}).get(name), summary.get("test", {}).get(name), last.get(name)]
        mark = " class='selection'" if name == primary else ""
        rows.append(f"<tr{mark}><td>{html.escape(name)}</td>" + "".join(
            f"<td>{c:.4f}</td>" if isinstance(c, (int, float)) else "<td></td>" for c in cells) + "</tr>")
    value = (summary.get("val") or {}).get(primary)
    shown = f" = {value:.4f}" if isinstance(value, (int, float)) else ""
    split = selection.get("split") or "the last epoch: no validation split"
    head = (f"<p class='best'>best epoch <b>{best_epoch}</b> of {summary.get('epochs')}, selected on "
            f"<b>{html.escape(str(primary))}</b> ({html.escape(str(split))}, {html.escape(str(selection.get('mode')))})"
            f"{shown}</p>")
    return "<h2>Summary</h2>" + head + "<table>" + "".join(rows) + "</table>"


class _TestSplit:
    """The run's test split, built on first use. Without it (moved, or the report is made elsewhere) samples
    are named by their index and shown without frames, with one note saying why."""

    def __init__(self, recipe: Any, plugins: Any) -> None:
        self.recipe, self.plugins = recipe, plugins
        self.dataset: Any = None
        self.problem: str | None = None
        self._tried = False
        self._ids: list[str] | None = None

    def _load(self) -> Any:
        if not self._tried:
            self._tried = True
            try:
                from aqakit.engine.data import build_dataset

                self.dataset = build_dataset(self.recipe, self.plugins.registry)
            except Exception as exc:  # optional: the report stands without the dataset
                self.problem = " ".join(f"{type(exc).__name__}: {exc}".split()) if not isinstance(
                    exc, AqakitError) else str(exc)
        return self.dataset

    def ids(self, index: torch.Tensor) -> list[str]:
        """The samples' ``key`` labels (their ids), or ``#<index>``."""
        if self._ids is None:
            self._ids = self._names(index)
        return self._ids

    def _names(self, index: torch.Tensor) -> list[str]:
        keys: list[Any] = []
        if self._load() is not None:
            try:
                keys = [row.get("key") for row in self.dataset.labels("test")]
            except Exception as exc:
                self.problem = self.problem or " ".join(f"{type(exc).__name__}: {exc}".split())
        return [str(keys[i]) if i < len(keys) and keys[i] is not None else f"#{i}" for i in index.tolist()]

    def strips(self, index: list[int]) -> list[str | None]:
        """A base64 frame strip per sample (None where it has no video)."""
        if self._load() is None:
            return [None] * len(index)
        try:
            split = self.dataset.split("test")
            videos = [split[i].get("video") for i in index]
        except Exception as exc:
            self.problem = self.problem or " ".join(f"{type(exc).__name__}: {exc}".split())
            return [None] * len(index)
        return [frame_strip(v) if torch.is_tensor(v) and v.dim() == 4 else None for v in videos]

    def note(self) -> str:
        return f"<p>Sample names and frames not shown: {html.escape(self.problem)}</p>" if self.problem else ""


def _prediction_sections(run: Path, path: Path, plugins: Any, images: dict[str, bytes] | None) -> list[str]:
    from aqakit.engine.loading import load_model

    preds = torch.load(path, map_location="cpu", weights_only=True)
    loaded = load_model(run / "checkpoints" / "best.pt", plugins, device="cpu")  # refuses unregistered code first
    recipe, model = loaded.recipe, loaded.model
    test = _TestSplit(recipe, plugins)
    index = preds["index"]
    out = []
    for head_id, head in model.heads.items():
        collected = preds.get(head_id, {})
        if {"pred", "target"} <= collected.keys():
            pred, target = collected["pred"].float().flatten(), collected["target"].float().flatten()
            ids = test.ids(index)
            out.append(f"<h2>{html.escape(head_id)}: predicted vs judged (test)</h2>"
                       "<p>Hover over a point for its sample.</p>" + scatter_svg(pred, target, ids, head_id))
            out.append(_worst_table(head_id, pred, target, index, ids, test))
            if images is not None:
                images[f"{head_id}_scatter"] = _png_bytes(scatter_figure(pred, target, head_id))
        fields = [k[len("pred_"):] for k, v in collected.items()  # classification fields (not e.g. pred_execution)
                  if k.startswith("pred_") and not v.is_floating_point() and f"target_{k[len('pred_'):]}" in collected]
        if fields:
            names = head.class_names or {}
            pngs = {f: _png_bytes(confusion_figure(collected[f"pred_{f}"], collected[f"target_{f}"], names.get(f), f))
                    for f in fields}
            if images is not None:
                images.update({f"{head_id}_{f}": png for f, png in pngs.items()})
            out.append(f"<h2>{html.escape(head_id)}: confusion matrices (test)</h2>"
                       + "".join(_img(png, f) for f, png in pngs.items()))
        if {"generated", "reference"} <= collected.keys():
            out.append(_commentary_table(head_id, head, collected, index, test))
    note = test.note()
    return out + ([note] if note else [])


def _worst_table(head_id: str, pred: torch.Tensor, target: torch.Tensor, index: torch.Tensor, ids: list[str],
                 test: _TestSplit) -> str:
    """The test samples this head got most wrong, largest error first, with their frames."""
    error = (pred - target).abs().nan_to_num(nan=math.inf)
    rows_at = torch.argsort(error, descending=True, stable=True)[:WORST].tolist()
    strips = test.strips([int(index[r]) for r in rows_at])
    rows = ["<tr><th>#</th><th>sample</th><th>judged</th><th>predicted</th><th>error</th><th>frames</th></tr>"]
    for rank, (r, strip) in enumerate(zip(rows_at, strips), 1):
        img = _img(strip, f"frames of {ids[r]}") if strip else ""
        rows.append(f"<tr><td>{rank}</td><td>{html.escape(ids[r])}</td><td>{float(target[r]):.2f}</td>"
                    f"<td>{float(pred[r]):.2f}</td><td>{float(error[r]):.2f}</td><td>{img}</td></tr>")
    return (f"<h2>{html.escape(head_id)}: worst-predicted test samples</h2>"
            f"<table class='worst'>{''.join(rows)}</table>")


def _commentary_table(head_id: str, head: Any, collected: dict[str, torch.Tensor], index: torch.Tensor,
                      test: _TestSplit) -> str:
    n = min(MAX_COMMENTARIES, len(index))
    generated = head.decode_rows(collected["generated"][:n])
    reference = head.decode_rows(collected["reference"][:n])
    strips = test.strips([int(i) for i in index[:n]])
    rows = ["<tr><th>#</th><th>frames</th><th>generated</th><th>ground truth</th></tr>"]
    for k in range(n):
        img = _img(strips[k], "frames") if strips[k] else ""
        rows.append(f"<tr><td>{int(index[k])}</td><td>{img}</td><td>{html.escape(generated[k])}</td>"
                    f"<td>{html.escape(reference[k])}</td></tr>")
    return f"<h2>{html.escape(head_id)}: commentary (test)</h2><table>{''.join(rows)}</table>"
