"""The in-process engine end to end: data on disk, worker processes, run folders, baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from federated_data import small_run_config, write_uci_dataset
from fediot.core.config import Config, load_config
from fediot.core.federated.devices import load_client_data
from fediot.core.metrics.window import smallest_quiet_window
from fediot.core.model import FeatureScaler, build_autoencoder, reconstruction_errors, set_weights
from fediot.engines.run_folder import RunView
from fediot.engines.simulation import (
    local_summary,
    run_centralised,
    run_federated,
    run_local,
    simulate,
)
from fediot.faces.cli.main import app


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_uci_dataset(tmp_path_factory.mktemp("nbaiot"), n_devices=3)


def config(dataset: Path, tmp_path: Path, **overrides: object) -> Config:
    return small_run_config(dataset, tmp_path / "runs", **{
        "train_args.learning_rate": 0.003, **overrides})


@pytest.mark.slow
def test_worker_processes_give_the_same_model(dataset: Path, tmp_path: Path) -> None:
    sequential = run_federated(config(dataset, tmp_path, **{
        "train_args.client_num_per_round": 2}))
    parallel = run_federated(config(dataset, tmp_path, **{
        "train_args.client_num_per_round": 2, "device_args.worker_num": 2}))
    for a, b in zip(sequential.model.weights, parallel.model.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert sequential.evaluation.to_dict() == parallel.evaluation.to_dict()
    assert [r.clients for r in sequential.history] == [r.clients for r in parallel.history]


def test_run_folder_holds_everything(dataset: Path, tmp_path: Path) -> None:
    result, folder = simulate(config(dataset, tmp_path))
    root = folder.root
    assert yaml.safe_load((root / "config.yaml").read_text())["train_args"]["comm_round"] == 2
    lines = (root / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2]
    results = json.loads((root / "results.json").read_text())
    assert set(results["evaluation"]["devices"]) == {"Danmini_Doorbell", "Ecobee_Thermostat",
                                                     "Ennio_Doorbell"}
    weights = np.load(root / "model" / "weights.npz")
    assert [weights[f"w{i}"].shape for i in range(len(weights.files))] == [
        w.shape for w in result.model.weights]
    thresholds = json.loads((root / "model" / "thresholds.json").read_text())
    assert thresholds["mode"] == "per_device"
    assert thresholds["windows"] == {}  # this run has one fixed window (5)
    # every device's data counts, warm-up rows dropped, and the validation losses
    assert set(results["devices_data"]) == set(results["evaluation"]["devices"])
    assert all(d["train"] > 0 and d["warmup_train"] >= 0
               for d in results["devices_data"].values())
    assert results["model_round"] in (1, 2)
    assert all(json.loads(line)["validation_loss"] > 0 for line in lines)
    assert not list(root.rglob("*.tmp"))


def test_each_device_chooses_its_window_on_its_threshold_rows(dataset: Path,
                                                              tmp_path: Path) -> None:
    """``window: 0``: N-BaIoT's ws*, the smallest window with no alarm on the device's own
    threshold rows, computed on the device and kept with the thresholds."""
    result, folder = simulate(config(dataset, tmp_path, **{"detection_args.window": 0,
                                                           "detection_args.max_window": 40}))
    windows = json.loads((folder.root / "model" / "thresholds.json").read_text())["windows"]
    assert set(windows) == set(result.evaluation.devices)
    for device, metrics in result.evaluation.devices.items():
        assert metrics["window"] == windows[device]
        data = load_client_data(result_config := folder.load_config(), device)
        scaler = FeatureScaler.from_stats(result.model.scaler)
        model = build_autoencoder(115, 0)
        set_weights(model, result.model.weights)
        flags = (reconstruction_errors(model, scaler.transform(data.opt))
                 > result.thresholds.per_device[device])
        assert windows[device] == smallest_quiet_window(flags, 40)
        assert result_config.detection_args.window == 0
    view = RunView(folder.root)
    first = next(iter(windows))
    assert view.detector(first).window == windows[first]
    assert view.detector().window == max(windows.values())  # no device: the largest


def test_baselines_use_the_same_devices_and_splits(dataset: Path, tmp_path: Path) -> None:
    cfg = config(dataset, tmp_path)
    federated = run_federated(cfg).evaluation
    central = run_centralised(cfg).evaluation
    local = local_summary(run_local(cfg))
    for summary in (central, local):
        assert set(summary.devices) == set(federated.devices)
        for device, metrics in summary.devices.items():
            ours = federated.devices[device]["rows"]
            # identical test rows: the same number of benign and attack rows per device
            assert metrics["rows"]["tn"] + metrics["rows"]["fp"] == ours["tn"] + ours["fp"]
            assert metrics["rows"]["tp"] + metrics["rows"]["fn"] == ours["tp"] + ours["fn"]


def test_cli_simulate_prints_the_table(dataset: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from fediot.faces.cli.app import console

    monkeypatch.setattr(console, "width", 80)  # piped, 80 columns: no number is cut short
    runner = CliRunner()
    result = runner.invoke(app, [
        "simulate", "--dataset", "N-BaIoT", "--data-dir", str(dataset), "--clients", "3",
        "--rounds", "1", "--runs-dir", str(tmp_path / "runs"),
        "--set", "detection_args.window=3",
    ])
    assert result.exit_code == 0, result.output
    assert "Ennio doorbell" in result.output
    assert "all devices" in result.output
    assert len(list((tmp_path / "runs").iterdir())) == 1
    assert "…" not in result.stdout and max(map(len, result.stdout.splitlines())) <= 80
    pooled = next(line for line in result.stdout.splitlines() if "all devices" in line)
    (run,) = (tmp_path / "runs").iterdir()
    figures = json.loads((run / "results.json").read_text())["evaluation"]["pooled"]
    assert f"{100 * figures['window_vote']['f1']:.2f}" in pooled
    assert f"{figures['roc_auc']:.3f}" in pooled


def test_cli_simulate_writes_json_and_csv_figures(dataset: Path, tmp_path: Path) -> None:
    args = ["simulate", "--dataset", "N-BaIoT", "--data-dir", str(dataset), "--clients", "2",
            "--rounds", "1", "--runs-dir", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, [*args, "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # stdout holds the JSON alone
    run = tmp_path / "runs" / document["run"]
    figures = json.loads((run / "results.json").read_text())["evaluation"]
    pooled = document["devices"][-1]
    assert pooled["device"] is None and pooled["f1_w"] == figures["pooled"]["window_vote"]["f1"]
    assert pooled["auc"] == figures["pooled"]["roc_auc"]
    assert {r["device"] for r in document["devices"][:-1]} == set(figures["devices"])
    assert "FedDetect" in result.stderr and "FedDetect" not in result.stdout
    csv_run = CliRunner().invoke(app, [*args, "--format", "csv"])
    assert csv_run.exit_code == 0, csv_run.output
    header, *rows = csv_run.stdout.splitlines()
    assert header.startswith("device,label,tpr,fpr,f1,tpr_w,fpr_w,f1_w,auc") and len(rows) == 3


def test_cli_rejects_bad_keys_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "--set", "train_args.epoch=2"])
    assert result.exit_code == 2
    assert "train_args.epoch" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["simulate", "--workers", "12"])
    assert result.exit_code == 2
    assert "device_args.worker_num" in result.output


@pytest.mark.parametrize(("arguments", "files", "message"), [
    (["-c", "{bomb}"], {"bomb": b"a: &a [x, x]\nb: [*a, *a]\n"}, "line 2, column 5: alias *a"),
    (["-c", "{latin}"], {"latin": b"train_args:\n  epochs: 1 # caf\xe9\n"},
     "line 2: not UTF-8 text"),
    (["-c", "{deep}"], {"deep": b"[" * 5000 + b"]" * 5000}, "nested more than 64 levels"),
    (["-c", "{env}"], {"env": b"environment_args: 5\n"}, "environment_args must be a mapping"),
    (["--set", "tracking_args.run_name=.."], {}, "tracking_args.run_name: must not start"),
    (["--seed", str(2**64)], {}, "common_args.random_seed: must be an integer in 0…"),
    (["--set", "detection_args.threshold_k=.nan"], {},
     "detection_args.threshold_k: must be a finite number, got nan"),
    (["--set", "data_args.testbed_scale=1.0e+9"], {}, "data_args.testbed_scale: must be a "
                                                       "finite number in (0, 10]"),
])
def test_cli_refuses_hostile_inputs_in_one_line(tmp_path: Path, arguments: list[str],
                                                files: dict[str, bytes], message: str) -> None:
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_bytes(data)
    argv = [a.format(**paths) for a in arguments]
    result = CliRunner().invoke(app, ["simulate", *argv, "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_virtual_devices_split_each_device_in_disjoint_blocks(dataset: Path,
                                                              tmp_path: Path) -> None:
    from fediot.core.data.layouts import open_dataset
    from fediot.core.federated.devices import client_ids, load_client_data

    cfg = config(dataset, tmp_path, **{"data_args.virtual_devices_per_device": 2,
                                       "train_args.client_num_in_total": 4,
                                       "train_args.client_num_per_round": 4})
    ids = client_ids(cfg)
    assert ids == ["Danmini_Doorbell#1", "Danmini_Doorbell#2",
                   "Ecobee_Thermostat#1", "Ecobee_Thermostat#2"]
    source = open_dataset(dataset)
    one, two = (load_client_data(cfg, cid, source) for cid in ids[:2])
    whole = load_client_data(config(dataset, tmp_path), "Danmini_Doorbell", source)
    np.testing.assert_array_equal(np.concatenate([one.train, two.train]), whole.train)
    np.testing.assert_array_equal(np.concatenate([one.test_benign, two.test_benign]),
                                  whole.test_benign)
    result = run_federated(cfg)
    assert set(result.evaluation.devices) == set(ids)


def test_intermediate_evaluation_follows_frequency_of_the_test(dataset: Path,
                                                                tmp_path: Path) -> None:
    result = run_federated(config(dataset, tmp_path, **{
        "train_args.comm_round": 3, "validation_args.frequency_of_the_test": 1}))
    evaluated = [r.evaluation is not None for r in result.history]
    assert evaluated == [True, True, False]  # the last round's is the final evaluation
    assert result.history[0].evaluation is not None
    assert "window_vote" in result.history[0].evaluation
    # each evaluated round records the thresholds it applied (the report plots them)
    assert result.history[0].evaluation["thresholds"]["mode"] == "per_device"
    assert result.history[0].evaluation["thresholds"]["global"] > 0


def test_cross_silo_is_refused_with_the_key(dataset: Path, tmp_path: Path) -> None:
    from fediot.core.errors import FediotError

    with pytest.raises(FediotError, match=r"common_args\.training_type.*`fediot server`"):
        run_federated(config(dataset, tmp_path, **{"common_args.training_type": "cross_silo"}))


class _CrashAfter:
    """An observer that stops the run after a given round (a server killed mid-run)."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds

    def on_phase(self, phase: str, detail: str) -> None:
        pass

    def on_round(self, record: object) -> None:
        if record.server_round == self.rounds:  # type: ignore[attr-defined]
            raise KeyboardInterrupt

    def on_logs(self, lines: object) -> None:
        pass


def test_resume_continues_at_the_next_round_and_ends_as_an_uninterrupted_run(
    dataset: Path, tmp_path: Path
) -> None:
    from fediot.engines.run_folder import RunFolder

    cfg = config(dataset, tmp_path, **{"train_args.comm_round": 4,
                                       "train_args.federated_optimizer": "FedAdam",
                                       "train_args.client_num_per_round": 2})
    whole, _ = simulate(cfg)
    with pytest.raises(KeyboardInterrupt):
        simulate(cfg, _CrashAfter(2))
    interrupted = max((tmp_path / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
    assert RunFolder(interrupted).load_checkpoint().completed_rounds == 2
    resumed, folder = simulate(cfg, resume=interrupted)
    assert folder.root == interrupted
    rounds = [json.loads(line)["round"]
              for line in (interrupted / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [1, 2, 3, 4]  # none lost, none run twice
    for a, b in zip(whole.model.weights, resumed.model.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert whole.evaluation.to_dict() == resumed.evaluation.to_dict()


def test_resume_without_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    from fediot.core.errors import FediotError
    from fediot.engines.run_folder import RunFolder

    with pytest.raises(FediotError, match="no checkpoint"):
        RunFolder(tmp_path).load_checkpoint()


def test_status_shows_the_finished_run_and_its_devices(dataset: Path, tmp_path: Path) -> None:
    _, folder = simulate(config(dataset, tmp_path))
    status = json.loads((folder.root / "status.json").read_text())
    assert status["state"] == "finished" and status["round"] == 2
    assert all(d["last_round"] == 2 for d in status["devices"].values())
    shown = CliRunner().invoke(app, ["status", "--runs-dir", str(tmp_path / "runs")])
    assert shown.exit_code == 0, shown.output
    assert "finished" in shown.output and "Ennio doorbell" in shown.output
    missing = CliRunner().invoke(app, ["status", "--runs-dir", str(tmp_path / "none")])
    assert missing.exit_code == 2


def test_run_view_reads_the_run_and_its_detector_gives_the_runs_verdicts(
        dataset: Path, tmp_path: Path) -> None:
    from fediot.core.catalog import BENIGN
    from fediot.core.federated.devices import load_client_data
    from fediot.core.metrics import ClassCounts
    from fediot.engines.run_folder import RunView, find_run, list_runs

    cfg = config(dataset, tmp_path)
    result, folder = simulate(cfg)
    view = find_run("latest", tmp_path / "runs")
    assert view.root == folder.root and [v.root for v in list_runs(tmp_path / "runs")] == [
        folder.root]
    assert [r["round"] for r in view.rounds()] == [1, 2]
    # the global model of every round is kept; the last one is the final model
    assert view.round_models() == [1, 2]
    for a, b in zip(view.load_round_model(2).weights, result.model.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert view.load_round_model(1).scaler.n == result.model.scaler.n
    with pytest.raises(Exception, match="no model kept for round 3"):
        view.load_round_model(3)
    assert view.status()["state"] == "finished"  # type: ignore[index]
    results = view.results()
    assert results is not None and set(results["error_stats"]) == set(
        result.evaluation.devices)
    # the saved detector flags exactly the test rows the run's own evaluation flagged
    device = "Ennio_Doorbell"
    detector = view.detector(device)
    data = load_client_data(cfg, device)
    counts = ClassCounts.pool(
        [ClassCounts.from_flags(BENIGN, detector.score_samples(data.test_benign)
                                > detector.threshold_)]
        + [ClassCounts.from_flags(name, detector.score_samples(rows) > detector.threshold_)
           for name, rows in data.test_attacks.items() if len(rows)])
    report = next(r for r in result.reports if r.client_id == device)
    assert counts == report.counts
    with pytest.raises(Exception, match="not a run folder"):
        RunView(tmp_path)
    with pytest.raises(Exception, match="no run 'nope'"):
        find_run("nope", tmp_path / "runs")


def test_compare_takes_every_option_of_simulate_but_resume() -> None:
    """The README says compare takes simulate's options: the same names, from one source."""
    import typer.main

    from fediot.faces.cli.lazy import load_all

    load_all()
    commands = typer.main.get_group(app).commands

    def options(name: str) -> set[str]:
        return {opt for p in commands[name].params for opt in p.opts}

    assert options("simulate") - options("compare") == {"--resume"}
    assert options("compare") == options("simulate") - {"--resume"}


def test_cli_compare_prints_and_records_the_three_modes(dataset: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from fediot.faces.cli.app import console

    monkeypatch.setattr(console, "width", 80)
    result = CliRunner().invoke(app, [
        "compare", "--dataset", "N-BaIoT", "--data-dir", str(dataset), "--clients", "2",
        "--rounds", "1", "--runs-dir", str(tmp_path / "runs"),
        "--set", "detection_args.window=3",
        "--per-round", "1", "--engine", "MPI", "--dashboard", "0",  # simulate's options
        "--exit-when-done",
    ])
    assert result.exit_code == 0, result.output
    assert "live dashboard: http://127.0.0.1:" in result.output
    assert "Danmini" in result.output and "Ecobee" in result.output
    table = result.stdout[result.stdout.index("F1 / TPR / FPR"):]  # ("federated…" precedes)
    assert "…" not in table and max(map(len, table.splitlines())) <= 80
    (run,) = (tmp_path / "runs").iterdir()
    resolved = load_config(run / "config.yaml")
    assert resolved.train_args.client_num_per_round == 1
    assert resolved.comm_args.backend == "MPI"
    comparison = json.loads((run / "comparison.json").read_text())
    assert set(comparison) == {"federated", "centralised", "local"}
    assert set(comparison["local"]["devices"]) == {"Danmini_Doorbell", "Ecobee_Thermostat"}


def test_baselines_run_under_secure_aggregation(dataset: Path, tmp_path: Path) -> None:
    # one training client has no one to hide its sum among: the baselines run in clear (a
    # secure step of one device cannot even start: it needs two to share keys)
    cfg = config(dataset, tmp_path, **{"comm_args.secure_aggregation": True,
                                       "detection_args.threshold_mode": "global",
                                       "train_args.comm_round": 1})
    central = run_centralised(cfg)
    assert sorted(central.threshold_stats) == sorted(central.thresholds.per_device)
    assert len(central.thresholds.per_device) == 3
    assert len(run_local(cfg)) == 3
