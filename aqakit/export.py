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

import json
from pathlib import Path
from typing import Any

import torch
import yaml

from aqakit import checkpoint
from aqakit.errors import AqakitError
from aqakit.loading import EXPORT_FILES, EXPORT_FORMAT, find_checkpoint, portable
from aqakit.recipe import dump_yaml

HEAD_STATE_PREFIX = "head_state/"
TENSOR_MARK = "__tensor__"


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


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {TENSOR_MARK}:
            key = obj[TENSOR_MARK]
            if key not in tensors:
                raise AqakitError(f"exported model: aqakit.json refers to tensor '{key}', missing in model.safetensors")
            return tensors[key]
        return {k: _join_tensors(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_join_tensors(v, tensors) for v in obj]
    return obj


def write_export(source: str | Path, out: str | Path, plugins: Any) -> Path:
    """Export the best checkpoint of a run folder (or a checkpoint file) to the folder ``out``."""
    from aqakit.loading import recipe_from_state

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
    summary = _read_json(run / "summary.json") if run else {}
    record = {"format": EXPORT_FORMAT, "aqakit_version": state.get("aqakit_version"), "source": path.name,
              "input": state.get("input") or {}, "head_state": {k.lstrip("/"): v for k, v in head_state.items()},
              "components": state.get("components") or {}, "selection": state.get("selection") or {},
              "epoch": state.get("epoch"), "metrics": {k: summary.get(k) for k in ("val", "test") if k in summary}}
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.atomic_write_bytes(out / "model.safetensors", lambda f: f.write(_safetensors_bytes(tensors)))
    checkpoint.atomic_write_json(out / "aqakit.json", record)
    checkpoint.atomic_write_text(out / "recipe.yaml", dump_yaml(recipe))
    splits = _read_json(run / "splits.json") if run else {}
    checkpoint.atomic_write_text(out / "README.md", model_card(recipe.to_dict(), record, splits))
    return out


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    return save(tensors, metadata={"format": EXPORT_FORMAT})


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def read_export(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(records with ``recipe`` and ``head_state``, model state dict) of an exported folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    missing = [name for name in EXPORT_FILES if not (folder / name).is_file()]
    if missing:
        raise AqakitError(f"{folder} is not a complete aqakit export: missing {', '.join(missing)}")
    record = _read_json(folder / "aqakit.json")
    if record.get("format") != EXPORT_FORMAT:
        raise AqakitError(f"{folder / 'aqakit.json'}: not an aqakit export (no '{EXPORT_FORMAT}' format marker)")
    try:
        tensors = load_file(str(folder / "model.safetensors"), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise AqakitError(f"{folder / 'model.safetensors'} is not a readable safetensors file ({exc})") from None
    try:
        recipe = yaml.safe_load((folder / "recipe.yaml").read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise AqakitError(f"{folder / 'recipe.yaml'}: not valid YAML ({type(exc).__name__})") from None
    model_state = {k: v for k, v in tensors.items() if not k.startswith(HEAD_STATE_PREFIX)}
    record["head_state"] = _join_tensors(record.get("head_state") or {}, tensors)
    record["recipe"] = recipe
    return record, model_state


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
