"""What a run records besides its model: devices' log lines, bytes carried, MLflow tracking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from federated_data import small_run_config, write_uci_dataset
from fediot.core.config import Config, ConfigError, TrackingArgs
from fediot.core.errors import FediotError
from fediot.core.federated.server import RunResult
from fediot.core.model import build_autoencoder, get_weights
from fediot.engines.run_folder import RunFolder, RunView
from fediot.engines.simulation import simulate
from fediot.engines.tracking import MlflowTracker, metric_key, record_run, round_metrics

DEVICES = {"Danmini_Doorbell", "Ecobee_Thermostat", "Ennio_Doorbell"}
MODEL_BYTES = sum(w.nbytes for w in get_weights(build_autoencoder(115, seed=0)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_uci_dataset(tmp_path_factory.mktemp("nbaiot"), n_devices=3)


def config(dataset: Path, tmp_path: Path, **overrides: object) -> Config:
    return small_run_config(dataset, tmp_path / "runs", **overrides)


def assert_every_device_logged(view: RunView, rounds: int) -> None:
    """logs.jsonl: each device's scaler, fit (every round), threshold and evaluate lines."""
    lines = view.logs()
    assert lines and all(set(line) == {"time", "device", "round", "step", "level", "message"}
                         for line in lines)
    seen = {(line["device"], line["step"], line["round"]) for line in lines}
    for device in DEVICES:
        assert (device, "scaler_stats", None) in seen
        assert {(device, "fit", r) for r in range(1, rounds + 1)} <= seen
        assert {(device, "threshold_stats", None), (device, "evaluate", None)} <= seen
    assert any("trained 200 rows" in line["message"] for line in lines)


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_in_process_runs_record_device_logs_and_bytes(dataset: Path, tmp_path: Path,
                                                      workers: int) -> None:
    _, folder = simulate(config(dataset, tmp_path, **{"device_args.worker_num": workers}))
    view = RunView(folder.root)
    assert_every_device_logged(view, rounds=2)
    for record in view.rounds():
        assert set(record["system"]) == DEVICES
        for figures in record["system"].values():
            assert {"wall_seconds", "cpu_seconds", "peak_rss_bytes", "bytes_down",
                    "bytes_up"} <= set(figures)
            if workers == 1:  # devices in the server's process: nothing carried
                assert figures["bytes_down"] == figures["bytes_up"] == 0
            else:  # the pickled task and reply each hold a whole model, and not much more
                assert MODEL_BYTES <= figures["bytes_down"] < 2 * MODEL_BYTES
                assert MODEL_BYTES <= figures["bytes_up"] < 2 * MODEL_BYTES


class CrashAfterRoundOne:
    """An observer that stops the run after its first round, as a crash would."""

    def on_phase(self, phase: str, detail: str) -> None:
        pass

    def on_round(self, record: object) -> None:
        raise KeyboardInterrupt

    def on_logs(self, lines: object) -> None:
        pass


def test_a_resumed_run_appends_to_its_logs(dataset: Path, tmp_path: Path) -> None:
    cfg = config(dataset, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, CrashAfterRoundOne())
    (root,) = (tmp_path / "runs").iterdir()
    before = RunView(root).logs()
    assert {line["round"] for line in before if line["step"] == "fit"} == {1}
    simulate(cfg, resume=root)
    view = RunView(root)
    assert view.logs()[: len(before)] == before
    assert_every_device_logged(view, rounds=2)


# --- configuration --------------------------------------------------------------------------

def test_mlflow_keys_default_to_off_and_are_checked() -> None:
    tracking = Config().tracking_args
    assert tracking.mlflow_tracking_uri == "" and tracking.mlflow_experiment == "fediot"
    for uri in ("sqlite:///runs/mlflow.db", "http://127.0.0.1:5000", "file:/tmp/mlruns",
                "./mlruns", "/abs/mlruns"):
        Config().with_overrides({"tracking_args.mlflow_tracking_uri": uri})
    for uri, problem in (("databricks", "not supported"), ("s3://bucket/x", "not supported"),
                         ("sqlite://", "names no store"), (" sqlite:///x.db", "spaces")):
        with pytest.raises(ConfigError, match=rf"tracking_args\.mlflow_tracking_uri: .*{problem}"):
            Config().with_overrides({"tracking_args.mlflow_tracking_uri": uri})
    with pytest.raises(ConfigError, match=r"tracking_args\.mlflow_experiment"):
        Config().with_overrides({"tracking_args.mlflow_experiment": " "})
    with pytest.raises(ConfigError, match=r"tracking_args\.mlflow_tracking_uri: expected str"):
        Config().with_overrides({"tracking_args.mlflow_tracking_uri": 5})


def test_metric_keys_are_ones_mlflow_accepts() -> None:
    assert metric_key("system", "Danmini_Doorbell#2", "bytes_up") == (
        "system.Danmini_Doorbell_2.bytes_up")


def test_without_mlflow_installed_the_error_says_how_to_get_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow → ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    cfg = Config().with_overrides({
        "tracking_args.mlflow_tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
        "tracking_args.log_file_dir": str(tmp_path / "runs")})
    with pytest.raises(FediotError, match=r"pip install fediot\[mlflow\]"):
        MlflowTracker(cfg, RunFolder.create(cfg))


# --- MLflow, on a local store ----------------------------------------------------------------

@pytest.mark.slow
def test_a_run_is_mirrored_to_a_local_mlflow_store(dataset: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)

    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    (tmp_path / "store").mkdir()
    cfg = config(dataset, tmp_path, **{
        "tracking_args.mlflow_tracking_uri": uri, "tracking_args.mlflow_experiment": "tests",
        "validation_args.frequency_of_the_test": 1, "device_args.worker_num": 2})
    result, folder = simulate(cfg)
    recorded = json.loads((folder.root / "mlflow.json").read_text())
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(recorded["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == folder.root.name
    assert run.data.params["train_args.comm_round"] == "2"
    assert run.data.params["tracking_args.mlflow_experiment"] == "tests"
    assert client.get_experiment(run.info.experiment_id).name == "tests"
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in sorted(losses, key=lambda m: m.step)] == [
        (r.server_round, r.train_loss) for r in result.history]
    metrics = run.data.metrics
    for device in DEVICES:
        assert metrics[f"system.{device}.bytes_down"] >= MODEL_BYTES
        assert metrics[f"system.{device}.wall_seconds"] > 0
    # round 1 was evaluated (frequency_of_the_test = 1); the final metrics close the run
    f1 = client.get_metric_history(run.info.run_id, "eval.window_vote.f1")
    assert [m.step for m in f1] == [1]
    assert metrics["final.window_vote.f1"] == result.evaluation.pooled["window_vote"]["f1"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"results.json", "metrics.jsonl", "logs.jsonl", "config.yaml", "model"} <= artifacts
    model = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert {"model/weights.npz", "model/scaler.npz", "model/thresholds.json"} == model
    # the artifacts sit beside the database, not in the current directory
    assert (tmp_path / "store" / "mlartifacts").is_dir()
    assert not (tmp_path / "mlruns").exists()


def test_a_resumed_run_continues_its_mlflow_run(dataset: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = config(dataset, tmp_path, **{"tracking_args.mlflow_tracking_uri": uri})
    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, CrashAfterRoundOne())
    (root,) = (tmp_path / "runs").iterdir()
    run_id = json.loads((root / "mlflow.json").read_text())["run_id"]
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.status == "FAILED"
    simulate(cfg, resume=root)
    assert json.loads((root / "mlflow.json").read_text())["run_id"] == run_id
    assert client.get_run(run_id).info.status == "FINISHED"
    losses = client.get_metric_history(run_id, "train_loss")
    assert sorted(m.step for m in losses) == [1, 2]
    (experiment,) = [e for e in client.search_experiments() if e.name == "fediot"]
    assert len(client.search_runs([experiment.experiment_id])) == 1


def test_round_metrics_name_every_figure(dataset: Path, tmp_path: Path) -> None:
    _, folder = simulate(config(dataset, tmp_path, **{"train_args.comm_round": 1}))
    (record,) = RunFolder(folder.root).load_checkpoint().history
    keys = dict(round_metrics(record))
    assert {"train_loss", "learning_rate", "round_seconds", "num_examples",
            "devices_answered"} <= set(keys)
    assert keys["devices_answered"] == 3
    assert {f"system.{d}.{figure}" for d in DEVICES for figure in (
        "wall_seconds", "cpu_seconds", "peak_rss_bytes", "bytes_down", "bytes_up")} <= set(keys)


def test_an_unreachable_store_stops_the_run_before_training(dataset: Path,
                                                            tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the database folder should be")
    cfg = config(dataset, tmp_path, **{
        "tracking_args.mlflow_tracking_uri": f"sqlite:///{blocker}/mlflow.db"})
    with pytest.raises(FediotError, match="MLflow store sqlite:///"):
        simulate(cfg)
    (root,) = (tmp_path / "runs").iterdir()
    assert RunView(root).status()["state"] == "failed"  # type: ignore[index]
    assert not (root / "metrics.jsonl").exists()


@pytest.mark.parametrize("name", ["..", ".", "../up", "a/b", ".hidden"])
def test_a_hand_built_config_cannot_name_a_run_folder_outside_the_runs(
        tmp_path: Path, name: str) -> None:
    """parse_config refuses these names; a Config built in code is stopped at the folder."""
    config = Config(tracking_args=TrackingArgs(log_file_dir=str(tmp_path / "runs"),
                                               run_name=name))
    with pytest.raises(FediotError, match=r"tracking_args\.run_name"):
        RunFolder.create(config)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("stop", [KeyboardInterrupt(), SystemExit(0)])
def test_a_run_stopped_by_a_signal_records_itself_interrupted(
        dataset: Path, tmp_path: Path, stop: BaseException) -> None:
    # a deployment's ServerApp whose SuperLink died gets SIGINT (Flower exits through it)
    cfg = config(dataset, tmp_path)
    folder = RunFolder.create(cfg)

    def stopped(observer: object, checkpoint: object) -> RunResult:
        raise stop

    with pytest.raises(type(stop)):
        record_run(folder, cfg, ["a"], stopped)
    status = RunView(folder.root).status()
    assert status is not None and status["state"] == "interrupted"
    assert status["interrupted_because"] == "it was stopped by a signal before it finished"
    shown = subprocess.run([sys.executable, "-m", "fediot", "status", str(folder.root)],
                           capture_output=True, text=True, timeout=120, check=False,
                           env={**os.environ, "COLUMNS": "200"})
    assert shown.returncode == 0, shown.stderr
    assert ": interrupted," in shown.stdout
    assert ("it was stopped by a signal before it finished; the command that started it, "
            f"with `--resume {folder.root}`") in " ".join(shown.stdout.split())
    assert "recorded as" not in shown.stdout
