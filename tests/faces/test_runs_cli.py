"""``fediot runs`` and ``fediot runs show``: run folders as tables."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from exited_process import killed_run
from federated_data import small_run_config, write_uci_dataset
from fediot.engines.run_folder import RunView
from fediot.engines.simulation import simulate
from fediot.faces.cli import main  # noqa: F401  (registers every command)
from fediot.faces.cli.app import app, console


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run ``alpha`` (with per-round evaluation) and a run ``beta`` that never got
    past its configuration (as a crashed server leaves it)."""
    base = tmp_path_factory.mktemp("runs-cli")
    dataset = write_uci_dataset(base / "nbaiot", n_devices=3)
    config = small_run_config(dataset, base / "runs", **{
        "validation_args.frequency_of_the_test": 1, "device_args.worker_num": 2,
        "tracking_args.run_name": "alpha",
    })
    simulate(config)
    beta = base / "runs" / "beta"
    beta.mkdir()
    shutil.copy(base / "runs" / "alpha" / "config.yaml", beta / "config.yaml")
    return base / "runs"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 200)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_runs_lists_every_run(runs: Path) -> None:
    code, output = invoke("runs", "--runs-dir", str(runs))
    assert code == 0, output
    alpha = next(line for line in output.splitlines() if "alpha" in line)
    assert "inprocess" in alpha and "finished" in alpha and "2/2" in alpha
    f1 = RunView(runs / "alpha").results()["evaluation"]["pooled"]["window_vote"]["f1"]  # type: ignore[index]
    assert f"{100 * f1:.2f}" in alpha
    beta = next(line for line in output.splitlines() if "beta" in line)
    assert "0/2" in beta
    assert invoke("runs", "list", "--runs-dir", str(runs)) == (code, output)


def test_runs_show_gives_rounds_devices_system_figures_and_logs(runs: Path) -> None:
    code, output = invoke("runs", "show", "alpha", "--runs-dir", str(runs), "--logs", "4")
    assert code == 0, output
    assert "state finished" in output and "dataset N-BaIoT, 3 devices" in output
    view = RunView(runs / "alpha")
    for record in view.rounds():
        assert f"{record['train_loss']:.5f}" in output
        assert f"{record['validation_loss']:.5f}" in output
    results = view.results()
    assert results is not None
    dropped = sum(d["warmup_train"] for d in results["devices_data"].values())
    assert (f"model of round {results['model_round']} of 2" in output
            and f"warm-up rows dropped: {dropped:,} training" in output)
    for label in ("Danmini doorbell", "Ecobee thermostat", "Ennio doorbell"):
        # bytes down / up (a model each way per round) and the peak memory
        assert any(label in line and "kB" in line and ("MB" in line or "GB" in line)
                   for line in output.splitlines())
    assert "last 4 of" in output
    last = view.logs()[-1]
    assert last["message"][:40] in output
    shown_by_prefix = invoke("runs", "show", "alp", "--runs-dir", str(runs), "--logs", "4")
    assert shown_by_prefix == (code, output)


def test_runs_show_a_run_without_rounds(runs: Path) -> None:
    code, output = invoke("runs", "show", "beta", "--runs-dir", str(runs))
    assert code == 0, output
    assert "no completed round yet" in output


def test_an_unknown_run_is_one_line_of_error(runs: Path) -> None:
    code, output = invoke("runs", "show", "nope", "--runs-dir", str(runs))
    assert code == 2
    assert output.strip() == f"error: no run 'nope' under {runs}"
    code, output = invoke("runs", "--runs-dir", str(runs / "missing"))
    assert code == 0 and "no runs under" in output


def test_a_killed_run_shows_as_interrupted(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    folder, pid = killed_run(runs, "killed")
    code, output = invoke("runs", "--runs-dir", str(runs))
    assert code == 0, output
    row = next(line for line in output.splitlines() if line.split()[:1] == ["killed"])
    assert "interrupted" in row and "running" not in row and "2/5" in row
    code, output = invoke("runs", "show", "killed", "--runs-dir", str(runs))
    assert code == 0, output
    assert "state interrupted, phase training" in output
    assert f"recorded as running, but its process (pid {pid} on" in output
    code, output = invoke("status", str(folder))
    assert code == 0, output
    assert "killed: interrupted, training, round 2/5" in output
    assert f"pid {pid} on" in output and "--resume" in output
    code, output = invoke("status", "--runs-dir", str(runs))  # the newest run
    assert code == 0 and "interrupted" in output
