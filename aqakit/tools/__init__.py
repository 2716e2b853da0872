"""Things done with a run or a dataset: predict, report, sweep, probe, data info, export, demo."""
