"""Pretrained weights from local files only: pytorchvideo / timm checkpoints, with a loaded/skipped report."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from aqakit.errors import AqakitError

# Wrappers checkpoints put around the state dict, and key prefixes of wrapped or aqakit-saved models.
WRAPPER_KEYS = ("model_state", "state_dict", "model")
PREFIXES = ("module.", "backbone.", "net.")


@dataclass
class WeightReport:
    """What a weight file gave a backbone: loaded keys, skipped ones (head / unknown) and missing ones."""

    file: str
    loaded: list[str] = field(default_factory=list)
    head: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        parts = [f"aqakit: {name} weights {self.file}: loaded {len(self.loaded)} tensors"]
        if self.head:
            parts.append(f"skipped {len(self.head)} classification-head key(s): {', '.join(self.head)}")
        if self.unexpected:
            parts.append(f"skipped {len(self.unexpected)} key(s) not in this backbone: {_few(self.unexpected)}")
        if self.missing:
            parts.append(f"NOT initialised from the file ({len(self.missing)}): {_few(self.missing)}")
        return "; ".join(parts)


def _few(keys: list[str], n: int = 8) -> str:
    return ", ".join(keys[:n]) + (f", ... (+{len(keys) - n})" if len(keys) > n else "")


def read_state_dict(path: str | Path, name: str) -> dict[str, torch.Tensor]:
    """A tensor state dict from a local ``.pt``/``.pth``/``.pyth`` (``weights_only``) or ``.safetensors`` file.

    pytorchvideo model-zoo files wrap it as ``{"model_state": ...}``; ``state_dict`` / ``model``
    wrappers and ``module.`` prefixes are unwrapped too.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise AqakitError(f"{name}: weights file not found: {file} (weights must be a local file)")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file), device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AqakitError(f"{name}: {file} is not a loadable state dict ({type(exc).__name__}: "
                          f"{' '.join(str(exc).split())[:160]})") from None
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise AqakitError(f"{name}: {file} holds no state dict of tensors (expected a plain state dict "
                          f"or {{'model_state': state_dict}})")
    return {_unprefix(k): v for k, v in state.items()}


def _unprefix(key: str) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def load_weights(module: nn.Module, path: str | Path, *, name: str,
                 head_keys: Iterable[str] = (), head_prefixes: Iterable[str] = ()) -> WeightReport:
    """Load matching tensors of a local weight file into ``module`` and print the report to stderr.

    ``head_keys`` / ``head_prefixes`` name the classification head this backbone dropped: such keys are
    reported as skipped head keys. A key whose shape differs is an error naming the key.
    """
    state = read_state_dict(path, name)
    own = module.state_dict()
    head_keys, head_prefixes = set(head_keys), tuple(head_prefixes)
    report = WeightReport(file=Path(path).name)
    matched: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        target = own.get(key)
        if target is None:
            is_head = key in head_keys or (head_prefixes and key.startswith(head_prefixes))
            (report.head if is_head else report.unexpected).append(key)
        elif tuple(tensor.shape) != tuple(target.shape):
            raise AqakitError(f"{name}: weights {report.file}: key '{key}' has shape {tuple(tensor.shape)} in the "
                              f"file but {tuple(target.shape)} in the backbone (check the variant/size arguments)")
        else:
            matched[key] = tensor
    if not matched:
        raise AqakitError(f"{name}: no key of {report.file} matches this backbone (e.g. file key "
                          f"'{next(iter(state))}', backbone key '{next(iter(own))}'): a checkpoint of another model?")
    module.load_state_dict(matched, strict=False)
    report.loaded, report.head, report.unexpected = sorted(matched), sorted(report.head), sorted(report.unexpected)
    report.missing = sorted(k for k in own if k not in matched and not k.endswith("num_batches_tracked"))
    print(report.line(name), file=sys.stderr)
    return report
