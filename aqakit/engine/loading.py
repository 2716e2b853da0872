"""One way to get a trained model back: from a run folder, a checkpoint or an exported folder.

``load_model`` is what ``eval``, ``predict``, ``report``, ``probe`` and ``aqakit.load`` use. The stored
recipe is validated like any recipe (names of registered components only: docs/security.md), ``key=value``
overrides apply to it first (e.g. a dataset that moved), and the backbone's weight-source arguments
(``weights``, ``pretrained``) are dropped: the trained weights replace them anyway, so a model loads on a
machine that never had the pretrained file.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from aqakit.media import checkpoint
from aqakit.errors import AqakitError
from aqakit.engine.model import AQAModel, build_model
from aqakit.plugins import Plugins
from aqakit.recipe import Recipe, apply_overrides, validate

# Backbone arguments that only say where initial weights come from.
WEIGHT_SOURCE_ARGS = ("weights", "pretrained")
EXPORT_FORMAT = "aqakit.export/1"
EXPORT_FILES = ("model.safetensors", "aqakit.json", "recipe.yaml")
HEAD_STATE_PREFIX = "head_state/"
TENSOR_MARK = "__tensor__"


@dataclass
class LoadedModel:
    """A trained model in eval mode with what the checkpoint recorded about it."""

    model: AQAModel
    recipe: Recipe
    source: Path
    frames: int | None  # the input window it was trained on
    device: torch.device
    state: dict[str, Any] = field(default_factory=dict)  # the checkpoint's records (no tensors of the model)


def portable(recipe: dict[str, Any]) -> dict[str, Any]:
    """The recipe without the backbone's weight-source arguments and the run's loggers (a copy): neither
    changes the trained model, and their plugins or packages need not be installed where it is used."""
    out = copy.deepcopy(recipe)
    if isinstance(out.get("train"), dict):
        out["train"].pop("loggers", None)
    backbone = out.get("model", {}).get("backbone")
    if isinstance(backbone, dict):
        for key in WEIGHT_SOURCE_ARGS:
            backbone.pop(key, None)
    return out


def recipe_from_state(state: dict[str, Any], plugins: Plugins, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Validate the recipe stored in a checkpoint, saying which plugin is missing if any."""
    components = state.get("components", {})
    if not isinstance(components, dict) or not isinstance(state.get("recipe"), dict):
        raise AqakitError("this checkpoint has no valid 'recipe' / 'components' record (damaged, or not written by "
                          "aqakit train)")
    for what, record in components.items():
        kind = "head" if str(what).startswith("heads.") else str(what)
        name, distribution = record if isinstance(record, list) and len(record) == 2 else (record, "?")
        try:
            plugins.registry.get(kind, str(name))
        except AqakitError as exc:
            if ":" in str(name):  # never imported from a checkpoint: see docs/security.md
                raise AqakitError(f"this checkpoint names {kind} '{name}', which no installed plugin registers; "
                                  "aqakit never imports code named in a checkpoint: install the plugin that "
                                  "registers it") from None
            if "registered by both" in str(exc):
                raise
            raise AqakitError(f"this checkpoint needs {kind} '{name}' from the distribution '{distribution}', "
                              f"which is not installed or not loaded (pip install {distribution})") from None
    return validate(apply_overrides(state["recipe"], list(overrides)), registry=plugins.registry)


def find_checkpoint(source: Path) -> Path:
    """A run folder means its ``checkpoints/best.pt``; anything else is taken as given."""
    if source.is_dir() and not (source / "aqakit.json").is_file():
        best = source / "checkpoints" / "best.pt"
        if not best.is_file():
            raise AqakitError(f"{source} is neither a run folder (no checkpoints/best.pt) nor an exported model "
                              "(no aqakit.json)")
        return best
    return source


def read_source(source: str | Path) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor]]:
    """(path, records, model state dict) of a run folder, checkpoint or exported folder."""
    path = find_checkpoint(Path(source).expanduser())
    if path.is_dir():
        return (path, *read_export(path))
    state = checkpoint.load(path)
    if not isinstance(state.get("model"), dict):
        raise AqakitError(f"{path} holds no model weights ('model' missing): damaged, or not a training checkpoint")
    model_state = state.pop("model")
    for key in ("optimizer", "scheduler", "scaler"):
        state.pop(key, None)
    return path, state, model_state


def load_model(source: str | Path, plugins: Plugins, overrides: list[str] | tuple[str, ...] = (), *,
               device: str | None = None) -> LoadedModel:
    """Rebuild the trained model of a run folder, checkpoint or exported folder, in eval mode."""
    from aqakit.engine.runtime import pick_device

    path, state, model_state = read_source(source)
    if isinstance(state.get("recipe"), dict):
        state["recipe"] = portable(state["recipe"])
    recipe = recipe_from_state(state, plugins, overrides)
    target = pick_device(device or recipe.train.device)
    model = build_model(recipe, plugins.registry)
    model.restore_heads(state.get("head_state") or {})
    try:
        model.load_state_dict(model_state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise AqakitError(f"{path}: the weights do not fit the model its recipe builds ({first[:200]}); "
                          "were overrides changing the model given?") from None
    model.to(target).eval()
    if recipe.train.channels_last:
        model.use_channels_last()
    frames = int((state.get("input") or {}).get("frames") or 0) or None
    return LoadedModel(model, recipe, path, frames, target, state)


def read_export(folder: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(records with ``recipe`` and ``head_state``, model state dict) of an exported folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    missing = [name for name in EXPORT_FILES if not (folder / name).is_file()]
    if missing:
        raise AqakitError(f"{folder} is not a complete aqakit export: missing {', '.join(missing)}")
    record = read_json(folder / "aqakit.json")
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


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
