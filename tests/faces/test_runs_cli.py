"""``fediot runs`` and ``fediot runs show``: run folders as tables."""

from __future__ import annotations

import json
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


@pytest.fixture
def narrow(runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """80 columns, not a terminal; the finished run under two long timestamped ids, one of
    them with 40 long log lines."""
    monkeypatch.setattr(console, "width", 80)
    first = tmp_path / "runs" / "20261129-203748-nbaiot-fed-fedavg"
    later = tmp_path / "runs" / "20261129-213748-nbaiot-fed-fedadam-2"
    for target in (first, later):
        shutil.copytree(runs / "alpha", target)
        status = json.loads((target / "status.json").read_text())
        status.pop("started_at", None)  # ordered by the ids' timestamps
        (target / "status.json").write_text(json.dumps(status))
    with (later / "logs.jsonl").open("a") as f:
        for i in range(40):
            f.write(json.dumps({"time": "2026-11-29T21:37:48.123456+00:00",
                                "device": "Ennio_Doorbell", "round": 1, "step": "train",
                                "level": "INFO", "message": f"line {i}: " + "word " * 60})
                    + "\n")
    return tmp_path / "runs"


def test_runs_at_80_columns_keep_ids_and_numbers_whole(narrow: Path) -> None:
    code, output = invoke("runs", "--runs-dir", str(narrow))
    assert code == 0, output
    assert "…" not in output and max(map(len, output.splitlines())) <= 80
    ids = sorted(p.name for p in narrow.iterdir())
    lines = output.splitlines()
    for run_id in ids:
        assert sum(run_id in line for line in lines) == 1  # whole, on one line
    f1 = RunView(narrow / ids[0]).results()["evaluation"]["pooled"]["window_vote"]["f1"]  # type: ignore[index]
    assert all(f"{100 * f1:.2f}" in next(line for line in lines if i in line) for i in ids)
    # oldest first by start: the id's timestamp, not which folder changed last
    (narrow / ids[0] / "report.html").write_text("read")
    order = [line.split()[0] for line in invoke("runs", "--runs-dir", str(narrow))[1]
             .splitlines() if line.split() and line.split()[0] in ids]
    assert order == ids


def test_runs_format_json_and_csv_hold_the_tables_figures(narrow: Path) -> None:
    code, output = invoke("runs", "--runs-dir", str(narrow), "--format", "json")
    assert code == 0, output
    records = json.loads(output)
    assert [r["run"] for r in records] == sorted(p.name for p in narrow.iterdir())
    pooled = RunView(narrow / records[0]["run"]).results()["evaluation"]["pooled"]  # type: ignore[index]
    assert records[0]["f1"] == pooled["window_vote"]["f1"]
    assert records[0]["state"] == "finished" and records[0]["round"] == 2
    _, table = invoke("runs", "--runs-dir", str(narrow))
    for record in records:
        line = next(line for line in table.splitlines() if record["run"] in line)
        assert f"{100 * record['f1']:.2f}" in line and f"{100 * record['fpr']:.2f}" in line
    code, text = invoke("runs", "list", "--runs-dir", str(narrow), "--format", "csv")
    assert code == 0, text
    header, *rows = text.splitlines()
    assert header.startswith("run,engine,state,round,total_rounds,devices,f1,tpr,fpr")
    assert len(rows) == 2 and rows[0].startswith(records[0]["run"])


def test_runs_show_logs_prints_that_many_lines_at_80_columns(narrow: Path) -> None:
    run_id = "20261129-213748-nbaiot-fed-fedadam-2"
    code, output = invoke("runs", "show", "latest", "--runs-dir", str(narrow), "--logs", "20")
    assert code == 0, output
    assert output.startswith(run_id)  # the newest start
    assert str(narrow / run_id) in output.splitlines()[0]  # id and path whole on one line
    assert max(map(len, output.splitlines()[1:])) <= 80
    logs = output[output.index("last 20 of"):].splitlines()
    assert len(logs) <= 20 + 4  # title, header, rule (no box when piped), rows
    assert sum("line " in line for line in logs) == 20
    before = output[:output.index("last 20 of")]
    assert "…" not in before  # rounds and devices: numbers whole
    for line in logs:  # only a message is cut, at its end
        assert "…" not in line or line.rstrip().endswith("…")


def test_runs_show_and_status_name_the_devices_left_out(runs: Path, tmp_path: Path) -> None:
    """A run that left a device out of the threshold and evaluation says which and why; every
    device that answered its last step reads online."""
    copy = Path(shutil.copytree(runs / "alpha", tmp_path / "gamma"))
    results = json.loads((copy / "results.json").read_text())
    results["excluded_devices"] = {"Ennio_Doorbell": "no reply to its last training round "
                                                     "(round 2)"}
    (copy / "results.json").write_text(json.dumps(results))
    code, output = invoke("runs", "show", str(copy))
    assert code == 0, output
    assert ("left out of the threshold and evaluation (train_args.stale_after_missed_rounds): "
            "Ennio doorbell: no reply to its last training round (round 2)") in output
    code, output = invoke("runs", "show", "alpha", "--runs-dir", str(runs))
    assert code == 0 and "left out" not in output
    code, output = invoke("status", str(runs / "alpha"))
    assert code == 0, output
    rows = [line for line in output.splitlines() if "doorbell" in line or "thermostat" in line]
    assert len(rows) == 3 and all(" online " in row and " 2 " in row for row in rows), output
