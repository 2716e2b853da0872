"""``aqakit export``: a trained model as a self-contained folder a hub can host as is.

::

    DIR/model.safetensors   the model's tensors, and tensors of the heads' fitted state (``head_state/...``)
    DIR/aqakit.json         format marker, input window, heads' fitted state, components, selection, metrics
    DIR/recipe.yaml         the recipe that rebuilds the model, without weight-source arguments
    DIR/README.md           a model card: data, splits, metrics, intended use, limits

No pickle anywhere: tensors go to safetensors, everything else to JSON / YAML, so loading an export
runs no code from it (docs/security.md). ``huggingface-cli upload OWNER/NAME DIR`` publishes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from aqakit.media import checkpoint
from aqakit.errors import AqakitError
from aqakit.engine.loading import (EXPORT_FORMAT, HEAD_STATE_PREFIX, TENSOR_MARK, find_checkpoint, portable,
                                   read_json)
from aqakit.recipe import dump_yaml



def _split_tensors(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of ``obj`` with each tensor moved to ``tensors`` and replaced by a reference."""
    if torch.is_tensor(obj):
        tensors[HEAD_STATE_PREFIX + path] = obj.detach().cpu().contiguous()
        return {TENSOR_MARK: HEAD_STATE_PREFIX + path}
    if isinstance(obj, dict):
        return {str(k): _split_tensors(v, f"{path}/{k}", tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split_tensors(v, f"{path}/{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, bytes):
        return _split_tensors(torch.frombuffer(bytearray(obj), dtype=torch.uint8).clone(), path, tensors)
    return obj


def write_export(source: str | Path, out: str | Path, plugins: Any) -> Path:
    """Export the best checkpoint of a run folder (or a checkpoint file) to the folder ``out``."""
    from aqakit.engine.loading import recipe_from_state

    path = find_checkpoint(Path(source).expanduser())
    state = checkpoint.load(path)
    if not isinstance(state.get("model"), dict):
        raise AqakitError(f"{path} holds no model weights ('model' missing): damaged, or not a training checkpoint")
    state["recipe"] = portable(state.get("recipe") or {})
    recipe = recipe_from_state(state, plugins)  # refuses what could not be loaded back
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AqakitError(f"{out} exists and is not an empty folder: choose a new export folder")
    tensors = {k: v.detach().cpu().contiguous() for k, v in state["model"].items()}
    head_state = _split_tensors(state.get("head_state") or {}, "", tensors)
    run = path.parent.parent if path.parent.name == "checkpoints" else None
    summary = read_json(run / "summary.json") if run else {}
    record = {"format": EXPORT_FORMAT, "aqakit_version": state.get("aqakit_version"), "source": path.name,
              "input": state.get("input") or {}, "head_state": {k.lstrip("/"): v for k, v in head_state.items()},
              "components": state.get("components") or {}, "selection": state.get("selection") or {},
              "epoch": state.get("epoch"), "metrics": {k: summary.get(k) for k in ("val", "test") if k in summary}}
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_bytes(out / "model.safetensors", lambda f: f.write(_safetensors_bytes(tensors)))
    checkpoint.atomic_write_json(out / "aqakit.json", record)
    checkpoint.atomic_write_text(out / "recipe.yaml", dump_yaml(recipe))
    splits = read_json(run / "splits.json") if run else {}
    checkpoint.atomic_write_text(out / "README.md", model_card(recipe.to_dict(), record, splits))
    return out


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata={"format": EXPORT_FORMAT})


def model_card(recipe: dict[str, Any], record: dict[str, Any], splits: dict[str, Any]) -> str:
    """README.md with Hugging Face front matter: what the model is, how it was trained, how it scored."""
    heads = recipe["model"]["heads"]
    dataset = recipe["data"]["dataset"]
    data_args = ", ".join(f"{k}={v}" for k, v in dataset.items() if k != "name") or "defaults"
    lines = ["---", "library_name: aqakit", "tags:", "- action-quality-assessment", "- video", "---", "",
             f"# {recipe.get('name', 'aqakit model')}", "",
             "An action quality assessment model trained with [aqakit](https://pypi.org/project/aqakit/): "
             "a video of an action goes in; " + ", ".join(f"`{h}` ({c['name']})" for h, c in heads.items())
             + " come out.", "",
             "## Use", "", "```python", "import aqakit", "", 'model = aqakit.load("PATH/TO/THIS/FOLDER")  '
             '# or "hf://OWNER/NAME"', 'print(model.predict("dive.mp4"))', "```", "",
             "or `aqakit predict THIS_FOLDER dive.mp4`. Inputs are resampled to the "
             f"{(record.get('input') or {}).get('frames', '?')}-frame window the model was trained on.", "",
             "## Model", "",
             f"- backbone `{recipe['model']['backbone']['name']}`, aggregator `{recipe['model']['aggregator']['name']}`",
             f"- heads: {', '.join(f'`{h}`' for h in heads)}",
             f"- trained {record.get('epoch')} epochs (`{record.get('source')}`); selected on validation "
             f"`{(record.get('selection') or {}).get('metric')}`", "", "## Data", "",
             f"- dataset `{dataset['name']}` ({data_args})"]
    if splits.get("sizes"):
        lines.append("- split sizes: " + ", ".join(f"{k} {v}" for k, v in splits["sizes"].items()))
    lines += ["", "## Metrics", ""]
    metrics = record.get("metrics") or {}
    names = sorted(set().union(*(m.keys() for m in metrics.values() if isinstance(m, dict)))) if metrics else []
    if names:
        lines += ["| metric | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for name in names:
            cells = [metrics[split].get(name) for split in metrics]
            lines.append(f"| {name} | " + " | ".join(f"{c:.4f}" if isinstance(c, (int, float)) else "" for c in cells)
                         + " |")
    else:
        lines.append("No summary.json was found beside the checkpoint: no metrics recorded.")
    lines += ["", "## Intended use and limits", "",
              "Research on action quality assessment. The score reflects the judges of the training data and "
              "the footage it was trained on (camera, sport, competition level); on other footage check it "
              "against your own judged samples before relying on it. Not for decisions about people without "
              "human review.", ""]
    return "\n".join(lines)
