"""Fine-tuning a pretrained backbone: freeze it (wholly or up to a stage), keep its BatchNorm statistics,
train it with a smaller learning rate (``train.finetune`` in a recipe).

Which parameters make up "the stages up to c3" is found from the backbone itself, not from a list each
plugin keeps: the parameters that ``stages(x)["c3"]`` depends on (one small forward and backward on a
dummy clip), so any backbone with ``stages()`` supports stage-wise freezing.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aqakit.errors import RecipeError
from aqakit.recipe import FinetuneConfig, OptimizerConfig


def stage_parameters(backbone: nn.Module, stage: str) -> set[str]:
    """Names of the backbone parameters that the activations of ``stage`` depend on."""
    spec = backbone.spec
    dummy = torch.zeros(1, 3, spec.clip_len or 8, *spec.frame_size, device=next(backbone.parameters()).device)
    was_training = backbone.training
    backbone.eval()  # no BatchNorm statistics updated by this probe
    try:
        with torch.enable_grad():
            outputs = backbone.stages(dummy)
            if not outputs:
                raise RecipeError("train.finetune.freeze", f"'{stage}': this backbone has no stages(); "
                                  "use 'all' or 'none'")
            if stage not in outputs:
                raise RecipeError("train.finetune.freeze", f"'{stage}' is not a stage of this backbone; "
                                  f"stages: {', '.join(outputs)} (or 'all' / 'none')")
            named = [(n, p) for n, p in backbone.named_parameters() if p.requires_grad]
            grads = torch.autograd.grad(outputs[stage].float().sum(), [p for _, p in named], allow_unused=True)
    finally:
        backbone.train(was_training)
    return {n for (n, _), g in zip(named, grads) if g is not None}


def apply(model: nn.Module, cfg: FinetuneConfig) -> str | None:
    """Freeze what ``cfg.freeze`` names; return a line saying what was frozen (None: nothing)."""
    backbone = model.backbone
    if cfg.freeze == "none":
        names: set[str] = set()
    elif cfg.freeze == "all":
        names = {n for n, _ in backbone.named_parameters()}
    else:
        names = stage_parameters(backbone, cfg.freeze)
    for name, param in backbone.named_parameters():
        if name in names:
            param.requires_grad_(False)
    if not names and not cfg.freeze_bn:
        return None
    frozen = sum(p.numel() for n, p in backbone.named_parameters() if n in names)
    total = sum(p.numel() for p in backbone.parameters())
    what = f"backbone up to stage {cfg.freeze}" if cfg.freeze not in ("none", "all") else f"backbone ({cfg.freeze})"
    bn = "; backbone BatchNorm statistics frozen" if cfg.freeze_bn else ""
    return f"fine-tuning: froze {frozen:,} of {total:,} parameters of the {what}{bn}" if names else bn.lstrip("; ")


def freeze_batchnorm(model: nn.Module, cfg: FinetuneConfig) -> None:
    """Put the backbone's BatchNorm layers in eval mode (call after ``model.train()``)."""
    if cfg.freeze_bn:
        for module in model.backbone.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def param_groups(model: nn.Module, optimizer: OptimizerConfig, cfg: FinetuneConfig,
                 head_lr_mult: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Trainable parameters in groups: the backbone's at ``lr x backbone_lr_mult``, then one group per head
    whose ``lr_mult`` (``head_lr_mult``) is not 1, then the rest at ``lr``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    taken = {id(p) for p in model.backbone.parameters()}
    groups = [{"params": [p for p in trainable if id(p) in taken], "lr": optimizer.lr * cfg.backbone_lr_mult}]
    for head, mult in (head_lr_mult or {}).items():
        if mult != 1.0:
            own = {id(p) for p in model.heads[head].parameters()} - taken
            groups.append({"params": [p for p in trainable if id(p) in own], "lr": optimizer.lr * mult})
            taken |= own
    groups.append({"params": [p for p in trainable if id(p) not in taken], "lr": optimizer.lr})
    return [g for g in groups if g["params"]]
