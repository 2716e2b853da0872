"""Bundled generic dataset: a folder of videos plus a CSV / JSON Lines table of scores and labels."""
