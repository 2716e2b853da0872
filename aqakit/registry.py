"""One table of components per kind, remembering which distribution registered each name."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aqakit.errors import AqakitError, PluginError, suggest
from aqakit.interfaces import KINDS


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


class Registry:
    """Components by kind and name. ``pkg.module:Attr`` names are resolved by import."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
        self._conflicts: dict[tuple[str, str], list[str]] = {}

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
            return self._import(kind, name)
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
            raise AqakitError(
                f"unknown {kind} '{name}'{suggest(name, self._tables[kind])}; known: {known}"
            ) from None

    def create(self, kind: str, name: str, **kwargs: Any) -> Any:
        return self.get(kind, name).factory(**kwargs)

    def _import(self, kind: str, spec: str) -> Component:
        module_name, _, attr = spec.partition(":")
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise AqakitError(f"cannot import {kind} '{spec}': {exc}") from None
        return Component(kind, spec, factory, module_name.split(".")[0], _first_doc_line(factory))
