"""The component kinds plugins register (a module without torch, so the CLI starts fast)."""

from __future__ import annotations

MODEL_KINDS: tuple[str, ...] = ("backbone", "aggregator", "head", "dataset")  # what a model recipe wires
KINDS: tuple[str, ...] = (*MODEL_KINDS, "logger")
