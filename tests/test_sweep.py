"""`aqakit sweep`: nested training subsets, sweep files, resume-skip logic and the result tables."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aqakit.engine.data import nested_subset, resolve_splits, training_labels
from aqakit.errors import AqakitError
from aqakit.tools.sweep import aggregate, collect, execute, expand, load_sweep, markdown, run_state, write_tables
from conftest import ROOT, needs_toy, run_aqakit

SWEEPS = sorted((ROOT / "recipes").rglob("*.sweep.yaml"))


# -- nested subsets ------------------------------------------------------------------------------
def test_nested_subsets_are_nested_seeded_and_inside_the_pool():
    pool = list(range(100, 400, 3))
    small, mid, large = (nested_subset(pool, n, seed=7) for n in (10, 40, 80))
    assert set(small) <= set(mid) <= set(large) <= set(pool)
    assert (len(small), len(mid), len(large)) == (10, 40, 80)
    assert nested_subset(pool, 40, seed=7) == mid                     # seeded
    assert nested_subset(pool, 40, seed=8) != mid                     # another seed, another subset
    with pytest.raises(AqakitError, match="data.train_size=101"):
        nested_subset(pool, 101, seed=0)


def test_training_subsets_never_hold_a_test_key_and_shrink_inside_each_other():
    from aqakit_diving import DivingSynth

    dataset = DivingSynth(n=24, size=32, render_frames=16, events=2)
    test_keys = {row["key"] for row in dataset.labels("test")}
    train_rows = dataset.labels("train")
    chosen = {}
    for size in (12, 6, 3):
        splits = resolve_splits(dataset, val_fraction=0.2, seed=3, train_size=size)
        keys = {row["key"] for row in training_labels(dataset, splits)}
        assert len(keys) == size == len(splits.sets["train"])
        assert not keys & test_keys
        val_keys = {train_rows[i]["key"] for i in splits.record["val"]["val_indices"]}
        assert not keys & val_keys                                      # the validation part stays out too
        assert {splits.sets["train"][i]["key"] for i in range(size)} == keys  # loader and labels agree
        chosen[size] = keys
    assert chosen[3] <= chosen[6] <= chosen[12]


# -- sweep files -------------------------------------------------------------------------------------
def _write_sweep(tmp_path: Path, body: str, base: Path | None = None) -> Path:
    base = base or tmp_path / "base.yaml"
    if not base.exists():
        base.write_text("name: base\n")
    path = tmp_path / "s.sweep.yaml"
    path.write_text(f"base: {base.name if base.parent == tmp_path else base}\n" + body)
    return path


AXES = """
axes:
  seed: {key: seed, values: [0, 1]}
  tasks: {STL: ["~model.heads.b"], MTL: []}
table: {rows: tasks, over: seed, metrics: [test.score.spearman]}
"""


def test_expand_orders_runs_first_axis_slowest(tmp_path: Path):
    sweep = load_sweep(_write_sweep(tmp_path, AXES))
    assert [r.name for r in sweep.runs] == ["seed=0,tasks=STL", "seed=0,tasks=MTL", "seed=1,tasks=STL",
                                            "seed=1,tasks=MTL"]
    assert sweep.runs[0].overrides == ("seed=0", "~model.heads.b")
    assert expand(sweep.axes) == sweep.runs


@pytest.mark.parametrize("body, message", [
    ("axes: {a: {key: seed}}\ntable: {rows: a, metrics: [test.x]}\n", "axes.a"),
    (AXES.replace("rows: tasks", "rows: task"), "table.rows' names axis 'task'.*did you mean 'tasks'"),
    (AXES.replace("[test.score.spearman]", "[spearman]"), "table.metrics"),
    (AXES + "overides: []\n", "'overides' is unknown.*did you mean 'overrides'"),
    (AXES.replace("STL:", "S/TL:"), "cannot name a folder"),
])
def test_bad_sweep_files_name_the_field(tmp_path: Path, body: str, message: str):
    with pytest.raises(AqakitError, match=message):
        load_sweep(_write_sweep(tmp_path, body))


def test_missing_base_recipe_is_one_clear_error(tmp_path: Path):
    path = tmp_path / "s.sweep.yaml"
    path.write_text("base: nowhere.yaml\n" + AXES)
    with pytest.raises(AqakitError, match="sweep field 'base' names 'nowhere.yaml'"):
        load_sweep(path)


@pytest.mark.parametrize("path", SWEEPS, ids=[str(p.relative_to(ROOT)) for p in SWEEPS])
def test_every_sweep_in_the_repository_loads_and_its_runs_validate(path: Path):
    from aqakit import plugins
    from aqakit.tools.sweep import check_runs

    sweep = load_sweep(path)
    check_runs(sweep, plugins.current().registry)
    assert len(sweep.runs) >= 2


# -- resume-skip logic and tables ----------------------------------------------------------------------
def _finish(run_dir: Path, spearman: float | None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    test = {} if spearman is None else {"score.spearman": spearman}
    (run_dir / "summary.json").write_text(json.dumps({"test": test, "last_epoch": {"test": test}}))


def test_execute_skips_finished_runs_resumes_partial_ones_and_reports_failures(tmp_path: Path):
    sweep = load_sweep(_write_sweep(tmp_path, AXES))
    out = tmp_path / "out"
    _finish(out / "seed=0,tasks=STL", 0.5)                                # finished: skipped
    (out / "seed=0,tasks=MTL" / "checkpoints").mkdir(parents=True)        # killed mid-run: resumed
    (out / "seed=0,tasks=MTL" / "checkpoints" / "last.pt").write_bytes(b"x")
    assert run_state(out / "seed=0,tasks=STL") == "finished"
    assert run_state(out / "seed=0,tasks=MTL") == "partial"
    assert run_state(out / "seed=1,tasks=STL") == "new"
    calls = []

    def runner(command: list[str], log: Path) -> int:
        run_dir = Path(command[command.index("--run-dir") + 1])
        calls.append((run_dir.name, "--resume" in command))
        if run_dir.name == "seed=1,tasks=MTL":
            return 1                                                      # this one crashes
        _finish(run_dir, 0.7)
        return 0

    failed = execute(sweep, out, runner=runner, echo=lambda _: None)
    assert calls == [("seed=0,tasks=MTL", True), ("seed=1,tasks=STL", False), ("seed=1,tasks=MTL", False)]
    assert failed == ["seed=1,tasks=MTL"]
    calls.clear()
    failed = execute(sweep, out, runner=runner, echo=lambda _: None)      # rerun: only the failed one
    assert calls == [("seed=1,tasks=MTL", False)] and failed == ["seed=1,tasks=MTL"]


def test_tables_average_over_seeds_with_sample_sd(tmp_path: Path):
    sweep = load_sweep(_write_sweep(tmp_path, AXES))
    out = tmp_path / "out"
    _finish(out / "seed=0,tasks=STL", 0.5)
    _finish(out / "seed=1,tasks=STL", 0.7)
    _finish(out / "seed=0,tasks=MTL", 0.9)
    cells = aggregate(sweep, collect(sweep, out))
    stl, mtl = cells
    assert stl["tasks"] == "STL" and stl["test.score.spearman"]["n"] == 2
    assert stl["test.score.spearman"]["mean"] == pytest.approx(0.6)
    assert stl["test.score.spearman"]["std"] == pytest.approx(0.1414213, rel=1e-5)   # sample sd (n - 1)
    assert mtl["test.score.spearman"] == {"mean": 0.9, "std": None, "n": 1}
    text = markdown(sweep, cells)
    assert "| STL | 0.600 ± 0.141 (n=2) |" in text and "| MTL | 0.900 (n=1) |" in text
    table, csv_path, finished = write_tables(sweep, out)
    assert finished == 3 and "3 of 4 runs finished" in table.read_text()
    assert csv_path.read_text().splitlines()[1:] == ["STL,test.score.spearman,0.6,0.141421,2",
                                                     "MTL,test.score.spearman,0.9,,1"]


def test_missing_metric_is_a_dash_not_a_crash(tmp_path: Path):
    sweep = load_sweep(_write_sweep(tmp_path, AXES))
    _finish(tmp_path / "out" / "seed=0,tasks=STL", None)
    assert "| STL | – |" in markdown(sweep, aggregate(sweep, collect(sweep, tmp_path / "out")))


# -- the real command ----------------------------------------------------------------------------------
@needs_toy
def test_sweep_command_trains_then_a_rerun_only_rebuilds_the_table(tmp_path: Path, toy_recipe: Path):
    sweep = _write_sweep(tmp_path, """
overrides: [train.epochs=1, data.dataset.n_train=24, data.dataset.n_test=8]
axes:
  size: {key: data.train_size, values: [12, 6]}
table: {rows: size, metrics: [test.score.spearman, val.score.l2]}
""", base=toy_recipe)
    out = tmp_path / "out"
    first = run_aqakit("sweep", str(sweep), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert "2 to train" in first.stdout and "2 of 2 runs finished" in first.stdout
    small, large = (json.loads((out / f"size={n}" / "splits.json").read_text()) for n in (6, 12))
    assert small["train_subset"]["size"] == 6 and set(small["val"]["train_indices"]) < set(large["val"]["train_indices"])
    stamp = (out / "size=12" / "summary.json").stat().st_mtime_ns
    second = run_aqakit("sweep", str(sweep), "--out", str(out))
    assert second.returncode == 0, second.stderr
    assert "2 already finished, 0 to train" in second.stdout
    assert (out / "size=12" / "summary.json").stat().st_mtime_ns == stamp
    assert "| 12 |" in (out / "table.md").read_text()


def test_sweep_command_rejects_a_bad_override_before_training(tmp_path: Path, toy_recipe: Path):
    sweep = _write_sweep(tmp_path, AXES.replace('["~model.heads.b"]', '["train.epohcs=2"]'), base=toy_recipe)
    result = run_aqakit("sweep", str(sweep), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "sweep run seed=0,tasks=STL" in result.stderr and "epohcs" in result.stderr
    assert not (tmp_path / "out").exists()
