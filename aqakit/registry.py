"""One table of components per kind, remembering which distribution registered each name.

Names come from data (recipes, checkpoints, exported models), so looking a name up never imports code:
``package.module:Class`` only selects a factory that an installed plugin registered (useful when two
plugins register the same short name). Importing an unregistered callable is an explicit opt-in for a
recipe the user wrote (``aqakit train --allow-imports``), scoped by :meth:`Registry.imports_allowed`.
See docs/security.md.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from aqakit.errors import AqakitError, PluginError, suggest
from aqakit.kinds import KINDS


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    factory: Callable[..., Any]
    distribution: str
    description: str = ""


def _first_doc_line(obj: object) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def import_name(factory: Callable[..., Any]) -> str:
    """``package.module:Qualname`` of a factory: the name a recipe may use instead of its short name."""
    return f"{getattr(factory, '__module__', '?')}:{getattr(factory, '__qualname__', '?')}"


class Registry:
    """Components by kind and name; ``pkg.module:Attr`` names select a registered factory by its import name."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self._conflicts: dict[tuple[str, str], list[str]] = {}
        self._shadowed: list[Component] = []  # registered under a name another distribution took first
        self._allow_imports = False
        self.imported: set[str] = set()  # names imported under imports_allowed(), for a run's provenance
        self.failed_plugins: list[str] = []  # plugins that failed to load: an unknown name may be theirs

    def add(
        self,
        kind: str,
        name: str,
        factory: Callable[..., Any],
        distribution: str,
        description: str = "",
    ) -> None:
        """Add a component; a name already taken by another distribution raises PluginError."""
        if kind not in self._tables:
            raise PluginError(f"unknown component kind '{kind}'{suggest(kind, KINDS)}")
        if not isinstance(name, str) or not name or ":" in name:
            raise PluginError(f"{distribution}: invalid {kind} name {name!r} (a non-empty string without ':')")
        if not callable(factory):
            raise PluginError(f"{distribution}: {kind} '{name}' factory is not callable: {factory!r}")
        existing = self._tables[kind].get(name)
        if existing is not None:
            owners = self._conflicts.setdefault((kind, name), [existing.distribution])
            owners.append(distribution)
            self._shadowed.append(Component(kind, name, factory, distribution, description or _first_doc_line(factory)))
            raise PluginError(
                f"{kind} '{name}' is registered by both '{existing.distribution}' and '{distribution}'"
            )
        self._tables[kind][name] = Component(
            kind, name, factory, distribution, description or _first_doc_line(factory)
        )

    def names(self, kind: str) -> list[str]:
        return sorted(self._tables[kind])

    def components(self, kind: str | None = None) -> list[Component]:
        kinds = KINDS if kind is None else (kind,)
        return [self._tables[k][n] for k in kinds for n in sorted(self._tables[k])]

    def get(self, kind: str, name: str) -> Component:
        """Look a component up by short name or ``package.module:Attr``; errors suggest close names."""
        if kind not in self._tables:
            raise AqakitError(f"unknown component kind '{kind}'{suggest(kind, KINDS)}")
        if ":" in name:
            return self._by_import_name(kind, name)
        if (kind, name) in self._conflicts:
            owners = " and ".join(f"'{d}'" for d in self._conflicts[(kind, name)])
            raise AqakitError(
                f"{kind} '{name}' is registered by both {owners}; uninstall one of them "
                "or name the class as 'package.module:Class'"
            )
        try:
            return self._tables[kind][name]
        except KeyError:
            known = ", ".join(self.names(kind)) or "none installed"
            failed = (f"; these plugins failed to load and may provide it: {', '.join(self.failed_plugins)} "
                      "('aqakit plugins' says why)") if self.failed_plugins else ""
            raise AqakitError(
                f"unknown {kind} '{name}'{suggest(name, self._tables[kind])}; known: {known}{failed}"
            ) from None

    def create(self, kind: str, name: str, **kwargs: Any) -> Any:
        return self.get(kind, name).factory(**kwargs)

    @contextmanager
    def imports_allowed(self) -> Iterator[None]:
        """Within this block, a ``package.module:Attr`` name no plugin registered is imported.

        Only ``aqakit train --allow-imports`` opens it, for a recipe the user wrote; never for a
        checkpoint, an exported model, ``eval``, ``predict``, ``report``, ``probe`` or ``aqakit.load``.
        """
        before, self._allow_imports = self._allow_imports, True
        try:
            yield
        finally:
            self._allow_imports = before

    def _by_import_name(self, kind: str, spec: str) -> Component:
        module_name, _, attr = spec.partition(":")
        loaded = sys.modules.get(module_name)  # looked at only if a plugin already imported it
        target = getattr(loaded, attr, None) if loaded is not None else None
        registered = [c for c in [*self._tables[kind].values(), *self._shadowed]
                      if c.kind == kind and (import_name(c.factory) == spec or (target is not None and c.factory is target))]
        if registered:
            return registered[0]
        if not self._allow_imports:
            raise AqakitError(
                f"{kind} '{spec}' is not a registered component, and aqakit never imports code named in a "
                "recipe or checkpoint: install the plugin that registers it (see 'aqakit ls'), or, for a recipe "
                "you wrote yourself, train with 'aqakit train --allow-imports'")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise AqakitError(f"cannot import {kind} '{spec}': {exc}") from None
        if not callable(factory):
            raise AqakitError(f"{kind} '{spec}' is not callable ({type(factory).__name__})")
        self.imported.add(spec)
        return Component(kind, spec, factory, module_name.split(".")[0], _first_doc_line(factory))
