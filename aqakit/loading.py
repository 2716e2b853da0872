"""One way to get a trained model back: from a run folder, a checkpoint or an exported folder.

``load_model`` is what ``eval``, ``predict``, ``report``, ``probe`` and ``aqakit.load`` use. The stored
recipe is validated like any recipe (names of registered components only: docs/security.md), ``key=value``
overrides apply to it first (e.g. a dataset that moved), and the backbone's weight-source arguments
(``weights``, ``pretrained``) are dropped: the trained weights replace them anyway, so a model loads on a
machine that never had the pretrained file.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aqakit import checkpoint
from aqakit.errors import AqakitError
from aqakit.model import AQAModel, build_model
from aqakit.plugins import Plugins
from aqakit.recipe import Recipe, apply_overrides, validate

# Backbone arguments that only say where initial weights come from.
WEIGHT_SOURCE_ARGS = ("weights", "pretrained")
EXPORT_FORMAT = "aqakit.export/1"
EXPORT_FILES = ("model.safetensors", "aqakit.json", "recipe.yaml")


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
        from aqakit.export import read_export

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
    from aqakit.train import pick_device

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
