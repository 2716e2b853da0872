"""``python -m aqakit`` (also what ``torchrun -m aqakit train ...`` runs)."""

from aqakit.cli import main

main()
