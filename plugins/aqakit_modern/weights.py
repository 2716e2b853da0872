"""Re-export of the core weight loader (``aqakit.weights``), where ``load_weights`` used to live."""

from __future__ import annotations

from aqakit.weights import (
    PREFIXES,
    WRAPPER_KEYS,
    WeightReport,
    load_weights,
    read_state_dict,
    resolve,
)

__all__ = ["PREFIXES", "WRAPPER_KEYS", "WeightReport", "load_weights", "read_state_dict", "resolve"]
