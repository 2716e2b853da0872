"""The plugin manager: bundled plugins by import, third-party ones from entry-point group ``aqakit``.

Each third-party entry point is loaded inside its own try/except: a broken plugin becomes one warning
line on stderr and a listed failure (``aqakit plugins``), never a crash. Environment:

* ``AQAKIT_LOAD_PLUGINS``: comma-separated distribution names to load; set but empty loads none.
* ``AQAKIT_STRICT_PLUGINS=1``: any plugin failure raises :class:`PluginError` instead.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points, version
from types import ModuleType
from typing import Any

import pluggy

from aqakit import hookspecs
from aqakit.errors import PluginError
from aqakit.registry import Registry

ENTRY_POINT_GROUP = "aqakit"
BUNDLED_PLUGINS: tuple[str, ...] = (
    "aqakit_aggregators", "aqakit_heads", "aqakit_c3d", "aqakit_mscadc", "aqakit_modern", "aqakit_caption",
    "aqakit_diving", "aqakit_vault", "aqakit_table", "aqakit_finediving",
    "aqakit_features", "aqakit_loggers",
)
BUNDLED_DISTRIBUTION = "aqakit"


@dataclass
class PluginRecord:
    """One loaded (or failed) plugin module and what it registered."""

    name: str
    distribution: str
    version: str
    bundled: bool
    components: dict[str, list[str]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "bundled": self.bundled,
            "components": self.components,
            "errors": self.errors,
        }


class Plugins:
    """A pluggy manager plus the component registry it filled and a record per plugin."""

    def __init__(self, *, strict: bool | None = None, selected: set[str] | None | bool = True) -> None:
        """``selected``: ``True`` reads ``AQAKIT_LOAD_PLUGINS``; ``None`` loads every entry point."""
        self.strict = _env_flag("AQAKIT_STRICT_PLUGINS") if strict is None else strict
        self.selected = _selection_from_env() if selected is True else selected
        self.pm = pluggy.PluginManager("aqakit")
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.records: dict[str, PluginRecord] = {}

    # -- loading ---------------------------------------------------------------------------
    def load(self) -> Plugins:
        aqakit_version = _dist_version(BUNDLED_DISTRIBUTION)
        for module_name in BUNDLED_PLUGINS:  # isolated like entry points: a broken one fails alone
            try:
                module = importlib.import_module(module_name)
            except Exception as exc:
                record = PluginRecord(module_name, BUNDLED_DISTRIBUTION, aqakit_version, True)
                self.records[record.name] = record
                self._fail(record, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self.add_module(module, BUNDLED_DISTRIBUTION, aqakit_version, bundled=True)
        found: set[str] = set()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
            found.add(canonical(dist))
            if self.selected is not None and canonical(dist) not in self.selected:
                continue
            record = PluginRecord(f"{dist}:{ep.name}", dist, ep.dist.version if ep.dist else "?", False)
            self.records[record.name] = record
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take aqakit down
                self._fail(record, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self._pm_register(module, record)
        unknown = sorted((self.selected or set()) - found)
        if unknown:
            print(f"aqakit: warning: AQAKIT_LOAD_PLUGINS names {', '.join(unknown)}, which no installed "
                  f"distribution provides (installed: {', '.join(sorted(found)) or 'none'})", file=sys.stderr)
        self._check_pending()
        self._collect_components()
        return self

    def add_module(self, module: ModuleType | object, distribution: str, dist_version: str = "", *,
                   bundled: bool = False, name: str | None = None) -> PluginRecord:
        """Register a plugin object directly (bundled plugins, tests). Call before :meth:`load`'s
        component collection or use :meth:`register_plugin` afterwards."""
        name = name or getattr(module, "__name__", repr(module))
        record = PluginRecord(name, distribution, dist_version, bundled)
        self.records[name] = record
        self._pm_register(module, record)
        return record

    def _pm_register(self, module: object, record: PluginRecord) -> None:
        try:
            self.pm.register(module, name=record.name)
        except pluggy.PluginValidationError as exc:  # e.g. a hook with misnamed parameters
            self._fail(record, f"invalid hook implementation: {exc}")

    def register_plugin(self, module: ModuleType | object, distribution: str = "test",
                        name: str | None = None) -> PluginRecord:
        """Add a plugin after loading, e.g. from a test: hooks are validated and called at once."""
        record = self.add_module(module, distribution, name=name)
        self._check_pending()
        self._collect_components(only=record.name)
        return record

    def _check_pending(self) -> None:
        """Unknown (e.g. misspelled) hook implementations: fail the plugin that has them."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                plugin_name = self.pm.get_name(exc.plugin)
                record = self.records[plugin_name]
                self.pm.unregister(exc.plugin)
                known = ", ".join(sorted(n for n in dir(hookspecs) if n.startswith("register_")))
                self._fail(record, f"{exc} (known hooks: {known})")

    def _collect_components(self, only: str | None = None) -> None:
        for hook_name, kind in hookspecs.COMPONENT_HOOKS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if only is not None and impl.plugin_name != only:
                    continue
                record = self.records[impl.plugin_name]
                register = functools.partial(self._register_component, record, kind)
                try:
                    impl.function(register=register)
                except PluginError:
                    raise  # strict mode: _fail already decided to raise
                except Exception as exc:
                    self._fail(record, f"{hook_name} failed: {type(exc).__name__}: {exc}")

    def _register_component(self, record: PluginRecord, kind: str, name: str, factory: Any,
                            description: str = "") -> None:
        try:
            self.registry.add(kind, name, factory, record.distribution, description)
        except PluginError as exc:  # a conflict or bad entry fails this component, not the plugin
            self._fail(record, str(exc))
            return
        record.components.setdefault(kind, []).append(name)

    def add_commands(self, cli: Any) -> None:
        """Call every plugin's ``register_commands(cli)``; one that raises fails only that plugin."""
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(cli=cli)
            except Exception as exc:  # a plugin's command must not break the CLI
                self._fail(self.records[impl.plugin_name], f"register_commands failed: {type(exc).__name__}: {exc}")

    def _fail(self, record: PluginRecord, message: str) -> None:
        message = " ".join(message.split())  # one line, whatever the exception said
        record.errors.append(message)
        if record.name not in self.registry.failed_plugins and not record.components:
            self.registry.failed_plugins.append(record.name)
        if self.strict:
            raise PluginError(f"plugin '{record.name}': {message}")
        print(f"aqakit: warning: plugin '{record.name}': {message}", file=sys.stderr)

    # -- queries ---------------------------------------------------------------------------
    def failures(self) -> list[PluginRecord]:
        return [r for r in self.records.values() if r.errors]

    def distribution_of(self, kind: str, name: str) -> str:
        return self.registry.get(kind, name).distribution


def canonical(name: str) -> str:
    """Distribution names compare as pip does: case-insensitive, '_' and '.' equal to '-'."""
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _selection_from_env() -> set[str] | None:
    raw = os.environ.get("AQAKIT_LOAD_PLUGINS")
    if raw is None:
        return None
    return {canonical(part) for part in raw.split(",") if part.strip()}


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _dist_version(name: str) -> str:
    try:
        return version(name)
    except Exception:
        return "unknown"


_current: Plugins | None = None


def current() -> Plugins:
    """The process-wide plugin set, loaded on first use."""
    global _current
    if _current is None:
        _current = Plugins().load()
    return _current


def reset(plugins: Plugins | None = None) -> None:
    """Replace (or forget) the process-wide plugin set; tests use this."""
    global _current
    _current = plugins


def registry() -> Registry:
    return current().registry
