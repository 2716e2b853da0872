"""Recipes: one plain YAML file per experiment (``yaml.safe_load``, no inheritance).

``load_recipe(path, overrides)`` reads the file, applies ``a.b=value`` / ``~a.b`` overrides and
validates every field against the schema below and every component argument against its factory's
signature, without building anything. Errors name the field path and suggest close matches.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml

from aqakit.errors import AqakitError, RecipeError, suggest
from aqakit.registry import Component, Registry

# Arguments the core passes to factories itself; a recipe must not set them.
INJECTED_ARGS = frozenset({"in_dim", "seq_dim", "self"})


@dataclass
class ComponentConfig:
    """``{name: NAME, arg: value, ...}`` in YAML: a registered component and its keyword arguments."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.args}


@dataclass
class HeadConfig(ComponentConfig):
    weight: float = 1.0
    lr_mult: float = 1.0  # the head's parameters learn at train.optimizer.lr x lr_mult

    def to_dict(self) -> dict[str, Any]:
        extra = {"lr_mult": self.lr_mult} if self.lr_mult != 1.0 else {}  # recipes of older runs stay as written
        return {"name": self.name, "weight": self.weight, **extra, **self.args}


@dataclass
class ClipsConfig:
    """How the core cuts the window into clips: ``count`` clips, ``stride`` frames apart.
    ``null`` means as many non-overlapping clips as fit / a stride of one clip length."""

    count: int | None = None
    stride: int | None = None


@dataclass
class ModelConfig:
    backbone: ComponentConfig
    heads: dict[str, HeadConfig]
    aggregator: ComponentConfig = field(default_factory=lambda: ComponentConfig("avg"))
    clips: ClipsConfig = field(default_factory=ClipsConfig)


@dataclass
class DataConfig:
    """Loading: batch sizes, workers, the carved validation fraction and the spatial pipeline.

    Frames are resized to ``resize`` ([height, width]) if set, then cropped to the backbone's frame
    size (``crop``: ``random`` or ``center`` for training; evaluation always crops the centre), then
    flipped horizontally with probability 0.5 in training if ``flip``. All on uint8, in the workers.

    ``train_size`` trains on a seeded subset of that many training samples (after the validation part
    is carved off; the test split is never touched). Subsets drawn with the same ``train_size_seed``
    (default: the recipe's ``seed``) are nested: a smaller one lies inside every larger one.

    ``decoded_cache`` keeps decoded frame windows (``memory``: per process, ``disk``: ``.npy`` files in
    ``decoded_cache_dir``), at most ``decoded_cache_gb``; ``decode_device: cuda`` decodes video files on the
    GPU with torchcodec (needs ``num_workers: 0``). See aqakit/media/video.py.
    """

    dataset: ComponentConfig
    batch_size: int = 4
    eval_batch_size: int | None = None
    num_workers: int = 0
    val_fraction: float = 0.1
    resize: list[int] | None = None
    crop: Literal["center", "random"] = "center"
    flip: bool = False
    train_size: int | None = None
    train_size_seed: int | None = None
    pin_memory: bool | None = None  # page-locked batches for fast, asynchronous copies (null: on CUDA)
    persistent_workers: bool = False  # keep the loader workers for the whole run (resume stays exact)
    prefetch_factor: int | None = None  # batches each worker loads ahead (null: torch's default, 2)
    # decoded-frame cache; YAML reads a bare `off` as false, which means off too
    decoded_cache: Literal["off", "memory", "disk"] = "off"
    decoded_cache_gb: float = 8.0  # memory: per process; disk: the whole folder (trimmed least recently used first)
    decoded_cache_dir: str | None = None  # disk: where (null: decoded/ under $AQAKIT_CACHE or ~/.cache/aqakit)
    decode_device: Literal["cpu", "cuda"] = "cpu"  # cuda: video files decoded by torchcodec on the GPU


@dataclass
class OptimizerConfig:
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    fused: bool | Literal["auto"] = "auto"  # one fused kernel per step (CUDA only; auto: on CUDA)


@dataclass
class SchedulerConfig:
    name: Literal["none", "cosine", "step"] = "none"
    step_size: int = 10
    gamma: float = 0.1
    warmup_epochs: int = 0


@dataclass
class SelectConfig:
    """Which validation metric picks ``best.pt`` (default: the first head's primary metric)."""

    metric: str | None = None
    mode: Literal["max", "min"] | None = None


@dataclass
class FinetuneConfig:
    """Fine-tuning a pretrained backbone (aqakit/engine/finetune.py)."""

    freeze: str = "none"  # none | all | a stage name (e.g. c3): backbone parameters up to it are not trained
    freeze_bn: bool = False  # the backbone's BatchNorm layers keep their running statistics (eval mode)
    backbone_lr_mult: float = 1.0  # the backbone's learning rate is train.optimizer.lr x this (CoRe: 0.1)


@dataclass
class TrainConfig:
    epochs: int = 10
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    grad_accum: int = 1
    grad_clip: float = 0.0
    precise_bn: int = 0  # recompute BatchNorm statistics over this many training batches before each validation
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = False  # channels_last_3d memory format for the backbone (faster 3D convolutions on CPUs)
    tensorboard: bool = False  # shorthand: adds the 'tensorboard' logger to train.loggers
    loggers: list[ComponentConfig] = field(default_factory=lambda: [ComponentConfig("jsonl")])  # where metrics go
    log_every: int = 50  # training steps between step metrics to the loggers (and progress lines off a terminal)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    deterministic: bool = True
    compile: bool = False  # torch.compile the backbone (first steps slower while it compiles)
    cudnn_benchmark: bool = False  # let cuDNN time its kernels (needs deterministic: false)
    threads: int | None = None  # intra-op CPU threads (null: $OMP_NUM_THREADS, else every CPU the process may use)
    keep_freed_memory: bool = True  # CPU runs with glibc: reuse freed memory instead of faulting in fresh pages
    select: SelectConfig = field(default_factory=SelectConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)


@dataclass
class Recipe:
    model: ModelConfig
    data: DataConfig
    name: str = "recipe"
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(self)


# ---------------------------------------------------------------------------------------------
# reading, overrides


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a recipe file: a UTF-8 YAML mapping of sections. Any problem is one AqakitError line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise AqakitError(f"recipe file not found: {path}") from None
    except IsADirectoryError:
        raise AqakitError(f"recipe {path} is a folder; give the recipe's .yaml file") from None
    except OSError as exc:
        raise AqakitError(f"cannot read recipe {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise AqakitError(f"recipe {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}, "
                          f"line {line}); save it as UTF-8") from None
    if not text.strip():
        raise AqakitError(f"recipe {path} is empty; a recipe needs at least the model and data sections")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AqakitError(f"recipe {path}{where}: invalid YAML: {problem}") from None
    except ValueError as exc:  # e.g. a date YAML cannot construct: name: 2024-13-45
        raise AqakitError(f"recipe {path}: a value YAML cannot read ({' '.join(str(exc).split())[:120]}); "
                          "quote it to keep it as text") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError("", f"{path} must hold a mapping of sections, got {type(data).__name__}")
    data.setdefault("name", path.stem)
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Apply ``a.b=value`` (value parsed as YAML) and ``~a.b`` (delete) overrides to a copy."""
    data = copy.deepcopy(data)
    for item in overrides:
        if item.startswith("~"):
            keys = item[1:].split(".")
            parent = _walk(data, keys[:-1], item[1:], create=False)
            if not isinstance(parent, dict) or keys[-1] not in parent:
                raise RecipeError(item[1:], f"cannot delete: no such field{_suggest_at(parent, keys[-1])}")
            del parent[keys[-1]]
            continue
        key, sep, raw = item.partition("=")
        if not sep or not key or not key.isprintable():
            raise AqakitError(f"override {item!r} must look like key.path=value or ~key.path")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except (yaml.YAMLError, ValueError):  # ValueError: an impossible date such as 2024-13-45
            value = raw
        keys = key.split(".")
        parent = _walk(data, keys[:-1], key, create=True)
        parent[keys[-1]] = value
    return data


def _walk(data: dict[str, Any], keys: list[str], full: str, *, create: bool) -> Any:
    node: Any = data
    for depth, k in enumerate(keys):
        if not isinstance(node, dict):
            raise RecipeError(".".join(keys[:depth]), f"is not a mapping, cannot set '{full}'")
        if k not in node:
            if not create:
                raise RecipeError(".".join(keys[: depth + 1]), f"no such field{_suggest_at(node, k)}")
            node[k] = {}
        node = node[k]
    if not isinstance(node, dict):
        raise RecipeError(".".join(keys), f"is not a mapping, cannot set '{full}'")
    return node


def _suggest_at(node: Any, key: str) -> str:
    return suggest(key, node.keys()) if isinstance(node, dict) else ""


# ---------------------------------------------------------------------------------------------
# validation


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
                registry: Registry | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    return validate(apply_overrides(read_yaml(path), overrides), registry=registry)


def from_dict(data: dict[str, Any]) -> Recipe:
    """The typed recipe of a mapping, defaults filled in; component names and arguments are not checked."""
    return _build(Recipe, data, "")


def validate(data: dict[str, Any], *, registry: Registry | None = None) -> Recipe:
    """Check the whole recipe (schema, component names and arguments, head/dataset keys)."""
    if registry is None:
        from aqakit import plugins

        registry = plugins.registry()
    recipe = _build(Recipe, data, "")
    _check_component(registry, "backbone", recipe.model.backbone, "model.backbone")
    _check_component(registry, "aggregator", recipe.model.aggregator, "model.aggregator")
    if not recipe.model.heads:
        raise RecipeError("model.heads", "at least one head is required, e.g. heads: {score: {}}")
    dataset = _check_component(registry, "dataset", recipe.data.dataset, "data.dataset")
    provides = set(getattr(dataset.factory, "provides", ()) or ()) if inspect.isclass(dataset.factory) else None
    for head_id, head in recipe.model.heads.items():
        comp = _check_component(registry, "head", head, f"model.heads.{head_id}")
        requires = tuple(getattr(comp.factory, "requires", ()) or ())
        missing = [k for k in requires if provides is not None and k not in provides]
        if missing:
            raise RecipeError(
                f"model.heads.{head_id}",
                f"head '{head.name}' needs batch key(s) {', '.join(map(repr, missing))} that dataset "
                f"'{recipe.data.dataset.name}' does not provide (it provides: {', '.join(sorted(provides)) or 'nothing'})",
            )
    _check_loggers(registry, recipe)
    _check_positive(recipe)
    _check_decoding(recipe)
    return recipe


def _check_loggers(registry: Registry, recipe: Recipe) -> None:
    """Each of ``train.loggers`` is a registered logger with valid arguments, listed once, installed."""
    seen: set[str] = set()
    for i, cfg in enumerate(recipe.train.loggers):
        path = f"train.loggers[{i}]"
        comp = _check_component(registry, "logger", cfg, path)
        if cfg.name in seen:
            raise RecipeError(path, f"logger '{cfg.name}' is listed twice")
        seen.add(cfg.name)
        missing = [m for m in getattr(comp.factory, "packages", ()) if importlib.util.find_spec(m) is None]
        if missing:
            raise RecipeError(path, f"logger '{cfg.name}' needs {', '.join(missing)}, which is not installed "
                                    f"(pip install {' '.join(missing)}, or leave it out of train.loggers)")


def _check_positive(recipe: Recipe) -> None:
    checks = {
        "train.epochs": recipe.train.epochs >= 1,
        "train.grad_accum": recipe.train.grad_accum >= 1,
        "train.log_every": recipe.train.log_every >= 1,
        "train.optimizer.lr": recipe.train.optimizer.lr > 0,
        "train.finetune.backbone_lr_mult": recipe.train.finetune.backbone_lr_mult >= 0,
        "data.batch_size": recipe.data.batch_size >= 1,
        "data.num_workers": recipe.data.num_workers >= 0,
        "data.val_fraction": 0.0 <= recipe.data.val_fraction < 1.0,
    }
    if recipe.data.eval_batch_size is not None:
        checks["data.eval_batch_size"] = recipe.data.eval_batch_size >= 1
    if recipe.data.train_size is not None:
        checks["data.train_size"] = recipe.data.train_size >= 1
    if recipe.data.prefetch_factor is not None:
        checks["data.prefetch_factor"] = recipe.data.prefetch_factor >= 1
    if recipe.train.threads is not None:
        checks["train.threads"] = recipe.train.threads >= 1
    for path, ok in checks.items():
        if not ok:
            value = _get_path(recipe, path)
            rule = "must be in [0, 1)" if path == "data.val_fraction" else (
                "must be >= 0" if path in ("data.num_workers", "train.finetune.backbone_lr_mult")
                else "must be positive")
            raise RecipeError(path, f"{rule}, got {value!r}")
    if recipe.train.cudnn_benchmark and recipe.train.deterministic:
        raise RecipeError("train.cudnn_benchmark", "true needs train.deterministic=false (cuDNN then picks kernels by "
                          "timing them, so two runs can differ); set both, or leave cudnn_benchmark off")
    if recipe.data.resize is not None and (len(recipe.data.resize) != 2 or min(recipe.data.resize) < 1):
        raise RecipeError("data.resize", f"must be [height, width] of positive ints, got {recipe.data.resize!r}")
    for key in ("count", "stride"):
        value = getattr(recipe.model.clips, key)
        if value is not None and value < 1:
            raise RecipeError(f"model.clips.{key}", f"must be positive or null, got {value!r}")


def _check_decoding(recipe: Recipe) -> None:
    """``data.decoded_cache``'s bound, and GPU decoding only in the main process (loader workers cannot
    use CUDA)."""
    data = recipe.data
    if not (data.decoded_cache_gb > 0 and math.isfinite(data.decoded_cache_gb)):
        raise RecipeError("data.decoded_cache_gb", f"must be a positive number, got {data.decoded_cache_gb!r}")
    if data.decode_device == "cuda" and data.num_workers > 0:
        raise RecipeError("data.decode_device",
                          f"cuda needs data.num_workers: 0 (loader workers cannot use CUDA), got data.num_workers: "
                          f"{data.num_workers}; set data.num_workers: 0, or data.decode_device: cpu")


def _get_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _check_component(registry: Registry, kind: str, cfg: ComponentConfig, path: str) -> Component:
    try:
        comp = registry.get(kind, cfg.name)
    except AqakitError as exc:
        raise RecipeError(f"{path}.name", str(exc)) from None
    cfg.args = check_arguments(comp.factory, cfg.args, path, what=f"{kind} '{cfg.name}'")
    return comp


def factory_parameters(factory: Any) -> tuple[dict[str, inspect.Parameter], bool, dict[str, Any]]:
    """(named parameters, accepts **kwargs, type hints) of a class or function."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    sig = inspect.signature(target)
    params = {n: p for n, p in sig.parameters.items()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    try:
        hints = typing.get_type_hints(target)
    except Exception:
        hints = {}
    return params, var_kw, hints


def check_arguments(factory: Any, args: dict[str, Any], path: str, *, what: str) -> dict[str, Any]:
    """Check recipe arguments against a factory signature (unknown, missing, wrong type);
    return them with YAML's string-typed floats such as ``1e-4`` converted."""
    params, var_kw, hints = factory_parameters(factory)
    args = dict(args)
    for key, value in list(args.items()):
        if key in INJECTED_ARGS:
            raise RecipeError(f"{path}.{key}", "is set by aqakit itself; remove it from the recipe")
        if key not in params:
            if var_kw:
                continue
            allowed = [p for p in params if p not in INJECTED_ARGS]
            raise RecipeError(
                f"{path}.{key}",
                f"unknown argument for {what}{suggest(key, allowed)}; allowed: {', '.join(allowed) or 'none'}",
            )
        hint = hints.get(key)
        if hint is not None:
            args[key] = value = coerce(value, hint)
            if not matches_type(value, hint):
                raise RecipeError(f"{path}.{key}", f"expected {type_name(hint)}, got {value!r}")
    for name, param in params.items():
        if name in INJECTED_ARGS or param.default is not inspect.Parameter.empty:
            continue
        if name not in args:
            raise RecipeError(f"{path}.{name}", f"missing required argument of {what}")
    return args


def coerce(value: Any, hint: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string and a bare ``off`` as false: turn such values back into the float
    or the ``'off'`` choice the field expects."""
    if value is False and not matches_type(value, hint) and _offers_off(hint):
        return "off"
    if isinstance(value, str) and not matches_type(value, hint) and matches_type(1.0, hint):
        try:
            return float(value)
        except ValueError:
            return value
    if isinstance(value, int) and not isinstance(value, bool) and (hint is float):
        try:
            return float(value)
        except OverflowError:  # an int beyond any float reads as inf, as 1e999 does
            return math.inf if value > 0 else -math.inf
    return value


def _offers_off(hint: Any) -> bool:
    """Whether ``hint`` is a choice (``Literal``, or a union with one) that includes ``'off'``."""
    if get_origin(hint) is Literal:
        return "off" in get_args(hint)
    if get_origin(hint) is Union or get_origin(hint) is types.UnionType:
        return any(_offers_off(h) for h in get_args(hint))
    return False


# -- generic typed dataclass building ---------------------------------------------------------


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, dict):
        raise RecipeError(path, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    known = [n for n in fields if n != "args"]
    for key in data:
        if key not in fields or key == "args":
            raise RecipeError(_join(path, str(key)), f"unknown field{suggest(str(key), known)}; allowed: {', '.join(known)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        sub = _join(path, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecipeError(sub, "missing required field")
            continue
        values[name] = _convert(hints[name], data[name], sub)
    return cls(**values)


def _convert(hint: Any, value: Any, path: str) -> Any:
    if hint is ComponentConfig or hint is HeadConfig:
        return _component(hint, value, path)
    if dataclasses.is_dataclass(hint):
        return _build(hint, {} if value is None else value, path)
    if get_origin(hint) is list and get_args(hint) == (ComponentConfig,):
        value = [] if value is None else value
        if not isinstance(value, list):
            raise RecipeError(path, f"expected a list of components (names or {{name: ..., arg: ...}}), got {value!r}")
        return [_component(ComponentConfig, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if get_origin(hint) is dict and get_args(hint)[1] is HeadConfig:
        if not isinstance(value, dict):
            raise RecipeError(path, f"expected a mapping of head id -> head settings, got {value!r}")
        return {str(k): _component(HeadConfig, v, _join(path, str(k)), default_name=str(k))
                for k, v in value.items()}
    value = coerce(value, hint)
    if not matches_type(value, hint):
        raise RecipeError(path, f"expected {type_name(hint)}, got {value!r}")
    return value


def _component(cls: type, value: Any, path: str, default_name: str | None = None) -> ComponentConfig:
    if isinstance(value, str):
        value = {"name": value}
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise RecipeError(path, f"expected a mapping with 'name' and arguments, got {value!r}")
    args = dict(value)
    name = args.pop("name", default_name)
    if not isinstance(name, str) or not name:
        raise RecipeError(_join(path, "name"), "missing required field (the registered component name)")
    if cls is HeadConfig:
        numbers = {}
        for key in ("weight", "lr_mult"):
            value = coerce(args.pop(key, 1.0), float)
            if not matches_type(value, float):
                raise RecipeError(_join(path, key), f"expected float, got {value!r}")
            numbers[key] = float(value)
        if not (numbers["lr_mult"] > 0 and math.isfinite(numbers["lr_mult"])):
            raise RecipeError(_join(path, "lr_mult"), f"must be a positive number, got {numbers['lr_mult']!r}")
        return HeadConfig(name=name, args=args, **numbers)
    return ComponentConfig(name=name, args=args)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def matches_type(value: Any, hint: Any) -> bool:
    """A small structural type check for YAML values (unknown hints pass)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = get_origin(hint)
    if origin is Literal:
        return value in get_args(hint)
    if origin is Union or origin is types.UnionType:
        return any(matches_type(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        args = get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(args) == len(value) and all(matches_type(v, h) for v, h in zip(value, args))
        return not args or all(matches_type(v, args[0]) for v in value)
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    if origin is Union or origin is types.UnionType:
        return " or ".join(type_name(h) for h in get_args(hint))
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, ComponentConfig):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def dump_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
