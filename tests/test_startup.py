"""`aqakit --version` and `--help` start without importing torch or any plugin (< 0.5 s on a laptop)."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
import sys
sys.argv = ["aqakit", *sys.argv[1:]]
from aqakit.cli import main
try:
    main()
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules if m in ("torch", "torchvision", "numpy") or m.startswith("aqakit_"))
print("HEAVY:" + ",".join(heavy))
"""


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["-h"]])
def test_version_and_help_import_no_torch_and_no_plugin(args):
    result = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "HEAVY:", result.stdout
    assert "Traceback" not in result.stderr and "aqakit-plugin-broken" not in result.stderr


def test_a_plugin_group_loads_the_plugins_commands():
    result = subprocess.run([sys.executable, "-c", PROBE, "synth", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "diving" in result.stdout and "vault" in result.stdout
