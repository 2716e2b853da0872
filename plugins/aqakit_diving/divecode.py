"""The dive code of FINA diving as MTL-AQA labels it: five fields, their class counts and names.

The diving plugin's public vocabulary: other plugins that predict dive codes (e.g. ``aqakit_mscadc``)
import it from here, never from the dataset reader. Values are those of the MTL-AQA release
(docs/datasets/mtl_aqa.md).
"""

from __future__ import annotations

DIVE_CODE_FIELDS: tuple[str, ...] = ("position", "armstand", "rotation_type", "ss_no", "tw_no")
NUM_CLASSES: dict[str, int] = {"position": 3, "armstand": 2, "rotation_type": 4, "ss_no": 10, "tw_no": 8}
CLASS_NAMES: dict[str, list[str]] = {
    "position": ["free", "pike", "tuck"],
    "armstand": ["no", "yes"],
    "rotation_type": ["backward", "forward", "inward", "reverse"],
    "ss_no": [f"{n / 2:g} somersaults" for n in range(10)],
    "tw_no": [f"{n / 2:g} twists" for n in range(8)],
}
