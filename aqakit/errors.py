"""Errors a user can cause and fix. The CLI prints them as one line and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class AqakitError(Exception):
    """A mistake in input (recipe, data, checkpoint, plugin): shown as one line, never a traceback."""


class RecipeError(AqakitError):
    """A recipe field is wrong. ``path`` is the dotted field path, e.g. ``train.epochs``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        where = f"recipe field '{path}'" if path else "recipe"
        super().__init__(f"{where}: {message}")


class PluginError(AqakitError):
    """A plugin could not be loaded or conflicts with another."""


def suggest(word: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def os_error(exc: BaseException) -> OSError | None:
    """The OSError with an errno that ``exc`` is, or was raised from or while handling; else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class PluginFault(Exception):
    """A plugin's own code raised while aqakit called it: a bug in that plugin, not the user's input.

    The CLI shows it in two lines naming the component, its plugin and the method (``--debug``: the
    traceback, chained from the original exception)."""

    def __init__(self, component: str, method: str, error: BaseException) -> None:
        self.component, self.method, self.error = component, method, error
        detail = " ".join(str(error).split())[:300]
        super().__init__(f"{component} raised in {method}(): {type(error).__name__}: {detail}")


@contextmanager
def blame(component: str, method: str) -> Iterator[None]:
    """Turn an unexpected exception raised inside a plugin's ``method`` into a :class:`PluginFault`."""
    try:
        yield
    except (AqakitError, PluginFault, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise PluginFault(component, method, exc) from exc
