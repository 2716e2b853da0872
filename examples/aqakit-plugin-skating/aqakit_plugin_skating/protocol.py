"""The judges' protocol of a figure-skating jump: element codes, base values, the panel's GOE.

An element code is ``<rotations><jump>[<]``, e.g. ``3Lz`` or ``2A<`` (under-rotated). The element
score follows the ISU rules (simplified to single jumps): an under-rotated jump keeps 80 % of its base
value; the panel's GOE is the mean of the judges' grades (-5..+5) without the highest and the lowest,
and each grade point is worth 10 % of the base value.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from aqakit.errors import AqakitError

JUMPS: tuple[str, ...] = ("T", "S", "Lo", "F", "Lz", "A")  # toe loop, salchow, loop, flip, lutz, axel
JUMP_NAMES = ("toe loop", "salchow", "loop", "flip", "lutz", "axel")
TOE_JUMPS = frozenset({"T", "F", "Lz"})  # taken off with a toe pick
MAX_ROTATIONS = 4
# ISU scale of values (2022/23), base value per jump and number of rotations 1..4
BASE_VALUES: dict[str, tuple[float, float, float, float]] = {
    "T": (0.40, 1.30, 4.20, 9.50),
    "S": (0.40, 1.30, 4.30, 9.70),
    "Lo": (0.50, 1.70, 4.90, 10.50),
    "F": (0.50, 1.80, 5.30, 11.00),
    "Lz": (0.60, 2.10, 5.90, 11.50),
    "A": (1.10, 3.30, 8.00, 12.50),
}
UNDER_ROTATED_FACTOR = 0.8
GOE_STEP = 0.1  # one GOE grade = 10 % of the base value
CODE_RE = re.compile(r"([1-4])(Lo|Lz|T|S|F|A)(<?)")


def parse_element(code: str) -> tuple[int, int, bool]:
    """``"3Lz<"`` -> (jump index 4, rotations 3, under-rotated True); a clear error otherwise."""
    match = CODE_RE.fullmatch(code.strip())
    if not match:
        raise AqakitError(f"element code {code!r}: expected rotations 1-4, a jump ({', '.join(JUMPS)}) "
                          f"and an optional '<', e.g. '3Lz' or '2A<'")
    return JUMPS.index(match.group(2)), int(match.group(1)), bool(match.group(3))


def element_code(jump: int, rotations: int, under_rotated: bool) -> str:
    return f"{rotations}{JUMPS[jump]}{'<' if under_rotated else ''}"


def base_value(jump: int, rotations: int, under_rotated: bool) -> float:
    value = BASE_VALUES[JUMPS[jump]][rotations - 1]
    return round(value * (UNDER_ROTATED_FACTOR if under_rotated else 1.0), 2)


def panel_goe(grades: Sequence[int]) -> float:
    """The trimmed mean of the judges' grades: drop one highest and one lowest (needs 3+ judges)."""
    if len(grades) < 3 or any(not -5 <= g <= 5 for g in grades):
        raise AqakitError(f"judges' grades {list(grades)}: need at least 3 grades, each -5..+5")
    kept = sorted(grades)[1:-1]
    return sum(kept) / len(kept)


def element_score(base: float, goe: float) -> float:
    """Base value plus the GOE's worth: ``base * (1 + 0.1 * goe)``."""
    return round(base * (1.0 + GOE_STEP * goe), 2)
