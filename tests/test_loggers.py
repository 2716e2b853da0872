"""Loggers as a plugin kind: the bundled ones write what they promise (read back), recipes validate them,
a broken logger plugin cannot stop a run. W&B and MLflow run in their offline / local-file modes."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TOY_RECIPE, needs_toy

import aqakit
from aqakit.cli import cli
from aqakit.errors import AqakitError
from aqakit.engine.follow import logger_configs
from aqakit.interfaces import Logger, RunInfo
from aqakit.recipe import load_recipe
from aqakit.engine.train import train

pytestmark = needs_toy
STEPS = [2, 4, 5, 7, 9, 10]  # log_every=2 over two epochs of 5 steps: every 2nd step and each epoch's last
EPOCH_ROWS = [(1, "train"), (1, "val"), (2, "train"), (2, "val")]


@pytest.fixture
def toy(register_plugin, aqakit_plugins):
    """Bundled plugins plus the toy plugin, current for the test (strict: a broken registration raises)."""
    import aqakit_plugin_toy

    register_plugin(aqakit_plugin_toy, distribution="aqakit-plugin-toy")
    return aqakit_plugins


def run_toy(plugins, run: Path, *overrides: str) -> dict:
    recipe = load_recipe(TOY_RECIPE, ["train.epochs=2", "train.log_every=2", *overrides], registry=plugins.registry)
    return train(recipe, plugins, run_dir=run)


@pytest.fixture(scope="module")
def files_run(tmp_path_factory) -> Path:
    """One toy run with the csv and tensorboard loggers (read back by several tests)."""
    from aqakit import plugins

    previous = plugins._current
    toy = plugins.Plugins(selected={"aqakit-plugin-toy"}).load()
    plugins.reset(toy)
    try:
        run = tmp_path_factory.mktemp("loggers") / "run"
        run_toy(toy, run, "train.loggers=[csv, {name: tensorboard, images: true}]")
        return run
    finally:
        plugins.reset(previous)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_logger_writes_a_row_per_epoch_and_split_equal_to_metrics_jsonl(files_run):
    rows = read_csv(files_run / "metrics.csv")
    lines = [json.loads(line) for line in (files_run / "metrics.jsonl").read_text().splitlines()]  # jsonl: always on
    assert [(int(r["epoch"]), r["split"]) for r in rows] == EPOCH_ROWS == [(e["epoch"], e["split"]) for e in lines]
    for row, line in zip(rows, lines):
        for name, value in line["metrics"].items():
            assert float(row[name]) == pytest.approx(value, rel=1e-12), name
        assert (row["seconds"] == "") == ("seconds" not in line)


def test_csv_logger_writes_a_row_per_logged_step(files_run):
    rows = read_csv(files_run / "steps.csv")
    assert list(rows[0]) == ["step", "epoch", "loss", "score.loss", "lr"]
    assert [(int(r["step"]), int(r["epoch"])) for r in rows] == list(zip(STEPS, [1, 1, 1, 2, 2, 2]))
    assert all(float(r["loss"]) > 0 and float(r["lr"]) == pytest.approx(3e-3) for r in rows)


def test_csv_logger_restarts_from_the_checkpoint_history(tmp_path):
    from aqakit_loggers.files import CsvLogger

    (tmp_path / "steps.csv").write_text("step,epoch,loss\n2,1,0.9\n5,1,0.8\n7,2,0.7\n")  # epoch 2 was cut short
    history = ({"epoch": 1, "split": "train", "metrics": {"loss": 0.8, "lr": 0.1}, "seconds": 1.5},)
    logger = CsvLogger()
    logger.start(RunInfo(run_dir=tmp_path, name="t", recipe={}, epochs=3, steps_per_epoch=5, start_epoch=1,
                         history=history))
    logger.log_step(7, 2, {"loss": 0.6, "lr": 0.1})
    assert [(r["step"], r["loss"], r["lr"]) for r in read_csv(tmp_path / "steps.csv")] == [
        ("2", "0.9", ""), ("5", "0.8", ""), ("7", "0.6", "0.1")]  # the replayed step once, a new column added
    assert read_csv(tmp_path / "metrics.csv") == [{"epoch": "1", "split": "train", "seconds": "1.5", "loss": "0.8",
                                                   "lr": "0.1"}]


def test_tensorboard_logger_writes_steps_epochs_and_the_report_figures(files_run):
    pytest.importorskip("tensorboard", reason="tensorboard is a dev dependency")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(files_run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("train_step/loss")] == STEPS
    assert {"train_step/score.loss", "train_step/lr"} <= set(scalars)
    jsonl = [json.loads(line) for line in (files_run / "metrics.jsonl").read_text().splitlines()]
    for split in ("train", "val"):
        logged = [(e.step, e.value) for e in events.Scalars(f"{split}/loss")]
        expected = [(h["epoch"], h["metrics"]["loss"]) for h in jsonl if h["split"] == split]
        assert logged == [(epoch, pytest.approx(value, rel=1e-6)) for epoch, value in expected]
    assert "val/score.spearman" in scalars
    assert set(events.Tags()["images"]) == {"report/curves", "report/score_scatter"}
    image = events.Images("report/curves")[0]
    assert image.step == 2 and image.width > 100 and image.encoded_image_string[:4] == b"\x89PNG"


def test_train_tensorboard_true_is_the_tensorboard_logger_and_jsonl_is_always_on(toy):
    recipe = load_recipe(TOY_RECIPE, ["train.tensorboard=true", "train.loggers=[csv]"], registry=toy.registry)
    assert [(field, cfg.name) for field, cfg in logger_configs(recipe)] == [
        ("train.loggers", "jsonl"), ("train.loggers[0]", "csv"), ("train.tensorboard", "tensorboard")]
    listed = load_recipe(TOY_RECIPE, ["train.tensorboard=true", "train.loggers=[tensorboard, jsonl]"],
                         registry=toy.registry)
    assert [cfg.name for _, cfg in logger_configs(listed)] == ["tensorboard", "jsonl"]


@pytest.mark.parametrize("loggers, expected", [
    ("[jsonl, cvs]", "recipe field 'train.loggers[1].name': unknown logger 'cvs' (did you mean 'csv'?); known: "),
    ("[{name: tensorboard, imagez: true}]", ("recipe field 'train.loggers[0].imagez': unknown argument for logger "
                                             "'tensorboard' (did you mean 'images'?); allowed: images")),
    ("[csv, csv]", "recipe field 'train.loggers[1]': logger 'csv' is listed twice"),
    ("csv", "recipe field 'train.loggers': expected a list of components (names or {name: ..., arg: ...}), got 'csv'"),
    ("[{name: wandb, mode: sometimes}]", ("recipe field 'train.loggers[0].mode': expected one of 'online', "
                                          "'offline', 'disabled' or null, got 'sometimes'")),
])
def test_recipe_validates_loggers_like_other_components(toy, loggers, expected):
    if "wandb" in loggers and importlib.util.find_spec("wandb") is None:
        pytest.skip("wandb is not installed (pip install wandb)")
    result = CliRunner().invoke(cli, ["validate", str(TOY_RECIPE), f"train.loggers={loggers}"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {expected}"] or (
        expected.endswith("known: ") and result.stderr.startswith(f"error: {expected}"))


class NeedsMissingPackage(Logger):
    """A logger needing a package nobody has."""

    packages = ("aqakit_no_such_package",)

    def log_step(self, step, epoch, metrics):
        pass

    def log_epoch(self, epoch, entries):
        pass


class FailsWhileLogging(NeedsMissingPackage):
    """Breaks after the first epoch, as a full disk or a lost connection would."""

    packages = ()

    def log_epoch(self, epoch, entries):
        raise RuntimeError("disk on fire")


class FailsToStart(FailsWhileLogging):
    def start(self, run):
        raise ConnectionError("service unreachable")


class LoggerPlugin:
    @aqakit.hookimpl
    def register_loggers(self, register):
        register("needs_missing", NeedsMissingPackage)
        register("fails_while_logging", FailsWhileLogging)
        register("fails_to_start", FailsToStart)


class RaisingLoggerPlugin:
    @aqakit.hookimpl
    def register_loggers(self, register):
        register("half", FailsWhileLogging)
        raise ImportError("its service client is broken")


def test_a_logger_without_its_package_is_refused_by_validation(toy, register_plugin):
    register_plugin(LoggerPlugin(), distribution="aqakit-plugin-loggers")
    with pytest.raises(AqakitError, match=r"^recipe field 'train.loggers\[0\]': logger 'needs_missing' needs "
                                          r"aqakit_no_such_package, which is not installed \(pip install "
                                          r"aqakit_no_such_package, or leave it out of train.loggers\)$"):
        load_recipe(TOY_RECIPE, ["train.loggers=[needs_missing]"], registry=toy.registry)


def test_a_logger_failing_while_logging_is_switched_off_and_the_run_finishes(toy, register_plugin, tmp_path, capfd):
    register_plugin(LoggerPlugin(), distribution="aqakit-plugin-loggers")
    summary = run_toy(toy, tmp_path / "run", "train.loggers=[jsonl, fails_while_logging, csv]")
    assert summary["best_epoch"] is not None and (tmp_path / "run" / "report.html").is_file()
    warnings = [line for line in capfd.readouterr().err.splitlines() if line.startswith("aqakit: warning")]
    assert warnings == [("aqakit: warning: logger 'fails_while_logging' failed in log_epoch (RuntimeError: disk on "
                         "fire); it is off for the rest of this run")]
    assert [(int(r["epoch"]), r["split"]) for r in read_csv(tmp_path / "run" / "metrics.csv")] == EPOCH_ROWS


def test_a_logger_failing_to_start_stops_the_run_before_training(toy, register_plugin, tmp_path):
    register_plugin(LoggerPlugin(), distribution="aqakit-plugin-loggers")
    with pytest.raises(AqakitError, match=r"^recipe field 'train.loggers\[1\]': logger 'fails_to_start' failed to "
                                          r"start: ConnectionError: service unreachable$"):
        run_toy(toy, tmp_path / "run", "train.loggers=[jsonl, fails_to_start]")
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_a_broken_logger_plugin_fails_alone(aqakit_plugins, register_plugin, capsys):
    aqakit_plugins.strict = False
    record = register_plugin(RaisingLoggerPlugin(), distribution="aqakit-plugin-half", name="half")
    assert record.errors == ["register_loggers failed: ImportError: its service client is broken"]
    assert capsys.readouterr().err.splitlines() == [
        "aqakit: warning: plugin 'half': register_loggers failed: ImportError: its service client is broken"]
    assert aqakit_plugins.registry.get("logger", "csv").distribution == "aqakit"  # the bundled ones still work
    assert aqakit_plugins.registry.get("logger", "half").distribution == "aqakit-plugin-half"  # registered before


# -- W&B and MLflow, offline ------------------------------------------------------------------------------


def wandb_records(run_dir: Path) -> tuple[list[dict], dict]:
    """(history rows, config) of the offline W&B run in ``run_dir/wandb``: its .wandb file is a LevelDB-style
    log of protobuf records in 32 KiB blocks after a 7-byte header."""
    from wandb.proto import wandb_internal_pb2

    path = next((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    raw, pos, pending, rows, config = path.read_bytes(), 7, b"", [], {}
    while pos + 7 <= len(raw):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(raw[pos + 4:pos + 6], "little"), raw[pos + 6]
        pending += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            kind_of = record.WhichOneof("record_type")
            if kind_of == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
            elif kind_of in ("run", "config"):  # the config comes with the run record, updates after it
                items = record.run.config.update if kind_of == "run" else record.config.update
                config.update({item.key: json.loads(item.value_json) for item in items})
    return rows, config


def test_wandb_logger_offline_records_steps_epochs_config_and_figures(toy, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb is optional (pip install wandb)")
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb-home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    run_toy(toy, run, "train.loggers=[jsonl, {name: wandb, mode: offline, project: aqakit-test}]")
    rows, config = wandb_records(run)
    assert config["train"]["epochs"] == 2 and config["model"]["backbone"]["name"] == "tiny3d"
    steps = [r["_step"] for r in rows if "train_step/loss" in r]
    assert steps == STEPS
    epochs = {r["_step"]: r for r in rows if "val/score.spearman" in r}
    assert sorted(epochs) == [5, 10] and epochs[10]["epoch"] == 2
    jsonl = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert epochs[10]["val/loss"] == pytest.approx(jsonl[3]["metrics"]["loss"])
    figures = {k.rsplit("/", 1)[0]: v for r in rows for k, v in r.items() if k.endswith("/_type")}
    assert figures == {"report/curves": "image-file", "report/score_scatter": "image-file"}
    assert (run / "wandb" / "aqakit-run-id").read_text().strip() in str(next((run / "wandb").glob("offline-run-*")))


def test_mlflow_logger_local_file_store_records_steps_epochs_params_and_figures(toy, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow is optional (pip install mlflow-skinny)")
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    run_toy(toy, run, "train.loggers=[jsonl, {name: mlflow, tracking_uri: 'file:{run_dir}/mlruns', experiment: t}]")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads a file store back only with it
    client = MlflowClient(tracking_uri=f"file:{run.resolve()}/mlruns")
    run_id = (run / "mlflow-run-id").read_text().strip()
    record = client.get_run(run_id)
    assert [m.step for m in client.get_metric_history(run_id, "train_step/loss")] == STEPS
    assert [m.step for m in client.get_metric_history(run_id, "val/score.spearman")] == [1, 2]
    assert record.data.params["train.epochs"] == "2" and record.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(run_id, "report")} == {"report/curves.png",
                                                                        "report/score_scatter.png"}


def test_a_checkpoint_of_a_run_with_loggers_loads_where_they_are_not_installed(toy, register_plugin, tmp_path):
    """Loggers are no part of the model: eval, predict and export drop them from the stored recipe."""
    from aqakit import plugins
    from aqakit.engine.evaluate import evaluate_checkpoint

    register_plugin(LoggerPlugin(), distribution="aqakit-plugin-loggers")
    run = tmp_path / "run"
    run_toy(toy, run, "train.epochs=1", "train.loggers=[jsonl, fails_while_logging]")
    without = plugins.Plugins(selected={"aqakit-plugin-toy"}, strict=True).load()  # no logger plugin here
    assert evaluate_checkpoint(run / "checkpoints" / "best.pt", "val", without) == json.loads(
        (run / "summary.json").read_text())["val"]


def test_every_bundled_logger_argument_is_documented(aqakit_plugins):
    from test_docs import RECIPES_DOC, argument_tables

    from aqakit.recipe import factory_parameters

    tables = argument_tables(RECIPES_DOC.read_text(encoding="utf-8"))
    loggers = aqakit_plugins.registry.components("logger")
    assert {c.name for c in loggers} == {"jsonl", "csv", "tensorboard", "wandb", "mlflow"}
    for component in loggers:
        arguments = set(factory_parameters(component.factory)[0])
        assert component.name in tables and arguments <= tables[component.name], (
            f"docs/recipes.md: document logger '{component.name}' arguments {sorted(arguments)}")


def test_resume_may_add_a_logger_which_starts_from_the_checkpoint_history(toy, tmp_path):
    run = tmp_path / "run"
    run_toy(toy, run, "train.epochs=1")
    assert not (run / "metrics.csv").exists()
    recipe = load_recipe(TOY_RECIPE, ["train.epochs=1", "train.log_every=7", "train.loggers=[jsonl, csv]",
                                      "train.keep_freed_memory=false"],
                         registry=toy.registry)  # fields changing no result may change on resume; train.epochs may not
    train(recipe, toy, run_dir=run, resume=True)  # a finished run: only the final evaluation again
    assert [(int(r["epoch"]), r["split"]) for r in read_csv(run / "metrics.csv")] == EPOCH_ROWS[:2]
    with pytest.raises(AqakitError, match="'train.epochs' differs from the run being resumed"):
        train(load_recipe(TOY_RECIPE, ["train.epochs=2", "train.loggers=[csv]"], registry=toy.registry), toy,
              run_dir=run, resume=True)
