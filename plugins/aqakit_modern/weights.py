"""Re-export of the core weight loader (``aqakit.media.weights``), where ``load_weights`` used to live."""

from __future__ import annotations

from aqakit.media.weights import (
    PREFIXES,
    WRAPPER_KEYS,
    WeightReport,
    load_weights,
    read_state_dict,
    resolve,
)

__all__ = ["PREFIXES", "WRAPPER_KEYS", "WeightReport", "load_weights", "read_state_dict", "resolve"]
