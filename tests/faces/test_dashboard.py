"""The live dashboard: its API over real run folders through a real uvicorn server, its
access rules, and the page in a real headless Chromium following a running ``fediot
simulate``."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import fediot.faces.cli.main  # noqa: F401  (registers every command)
from exited_process import killed_run
from federated_data import small_run_config, write_uci_dataset
from fediot.core.catalog import DEVICES
from fediot.core.config import Config
from fediot.core.federated.server import RoundRecord
from fediot.engines.run_folder import RunFolder, StatusRecorder
from fediot.engines.simulation import simulate
from fediot.faces.cli.app import app, err_console
from fediot.faces.dashboard import (
    DashboardError,
    DashboardHandle,
    check_binding,
    start_dashboard,
)
from fediot.faces.dashboard.app import LOG_LIMIT
from fediot.faces.dashboard.page import PAGE_HTML

FEDIOT = Path(sys.executable).with_name("fediot")
TOKEN = "a-test-token-of-enough-length"
A, B, C, D = (d.name for d in DEVICES[:4])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_uci_dataset(tmp_path_factory.mktemp("nbaiot"), n_devices=3)


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    """A folder holding one finished real run (3 rounds, 3 devices)."""
    runs = tmp_path_factory.mktemp("runs")
    simulate(small_run_config(dataset, runs, **{
        "train_args.comm_round": 3, "detection_args.window": 3,
        "validation_args.frequency_of_the_test": 1, "tracking_args.run_name": "finished-run",
    }))
    return runs


def round_record(number: int, answered: list[str], clients: list[str]) -> RoundRecord:
    return RoundRecord(
        server_round=number, learning_rate=0.01, clients=clients, answered=answered,
        train_loss=1.0 / number, num_examples=100 * len(answered), seconds=0.5 * number,
        system={d: {"wall_seconds": 0.25 * number, "cpu_seconds": 0.125, "peak_rss_bytes":
                    1000 * number, "bytes_up": 2048, "note": "not a number"} for d in answered})


class InProgressRun:
    """A run folder kept by the real :class:`StatusRecorder`, rounds appended by hand."""

    def __init__(self, runs: Path) -> None:
        config = Config().with_overrides({
            "tracking_args.log_file_dir": str(runs), "tracking_args.run_name": "live-run",
            "train_args.comm_round": 5})
        self.folder = RunFolder.create(config)
        self.rounds: list[RoundRecord] = []
        self.status = StatusRecorder(self.folder, config, [A, B, C, D])

    def start_round(self, number: int) -> None:
        self.status.on_phase("round", f"{number}/5")

    def lose(self, device: str) -> None:
        self.status.on_phase("lost", f"no reply from {device}; the round goes on")

    def end_round(self, record: RoundRecord) -> None:
        self.rounds.append(record)
        (self.folder.root / "metrics.jsonl").write_text(
            "".join(json.dumps(r.to_dict()) + "\n" for r in self.rounds))
        self.status.on_round(record)

    def log(self, *messages: str) -> None:
        with (self.folder.root / "logs.jsonl").open("a") as f:
            for message in messages:
                f.write(json.dumps({"time": "2026-01-01T00:00:00+00:00", "device": A,
                                    "round": 1, "step": "fit", "level": "INFO",
                                    "message": message}) + "\n")


@pytest.fixture
def live_run(runs_dir: Path) -> Iterator[InProgressRun]:
    run = InProgressRun(runs_dir)
    yield run
    shutil.rmtree(run.folder.root)  # the next test makes its own


@pytest.fixture
def dashboard(runs_dir: Path) -> Iterator[DashboardHandle]:
    handle = start_dashboard(runs_dir, port=0)
    try:
        yield handle
    finally:
        # no page is left to see the end: waiting for one (15 s by default) only slows the suite
        handle.stop(linger=0)


def client(handle: DashboardHandle, **options: Any) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{handle.port}", timeout=30, **options)


def test_runs_lists_every_run_and_defaults_to_the_running_one(
        dashboard: DashboardHandle, live_run: InProgressRun) -> None:
    with client(dashboard) as http:
        listing = http.get("/api/runs").json()
    states = {run["id"]: run["state"] for run in listing["runs"]}
    assert states == {"finished-run": "finished", "live-run": "running"}
    assert listing["default"] == "live-run"


def test_state_of_a_finished_real_run(dashboard: DashboardHandle, runs_dir: Path) -> None:
    with client(dashboard) as http:
        state = http.get("/api/runs/finished-run/state").json()
    assert (state["state"], state["round"], state["total_rounds"]) == ("finished", 3, 3)
    assert [r["round"] for r in state["rounds"]] == [1, 2, 3]
    # evaluated every round but the last, whose evaluation is the final one
    assert [p[0] for p in state["evaluation"]["ROC AUC"]] == [1, 2]
    assert state["results"]["pooled"]["TPR"] is not None
    devices = {d["id"]: d for d in state["devices"]}
    assert set(devices) == {A, B, C}
    assert {d["state"] for d in devices.values()} == {"idle"}  # the run is over
    metrics = [json.loads(line) for line in
               (runs_dir / "finished-run" / "metrics.jsonl").read_text().splitlines()]
    wall = [m["system"][A]["wall_seconds"] for m in metrics]
    system = devices[A]["system"]
    assert system["wall_seconds"]["total"] == pytest.approx(sum(wall))
    assert system["wall_seconds"]["last"] == wall[-1]
    assert system["peak_rss_bytes"]["max"] == max(m["system"][A]["peak_rss_bytes"]
                                                  for m in metrics)
    assert devices[A]["rounds_answered"] == 3


def test_device_states_follow_the_status_recorder(dashboard: DashboardHandle,
                                                  live_run: InProgressRun) -> None:
    def devices() -> dict[str, dict[str, Any]]:
        with client(dashboard) as http:
            state = http.get("/api/runs/live-run/state").json()
        return {d["id"]: d for d in state["devices"]}

    assert {d["state"] for d in devices().values()} == {"idle"}  # nobody seen yet
    live_run.start_round(1)
    live_run.end_round(round_record(1, [A, B, C], [A, B, C]))
    live_run.start_round(2)
    live_run.lose(C)
    live_run.end_round(round_record(2, [A, B], [A, B, C]))
    after_two = devices()
    assert {k: v["state"] for k, v in after_two.items()} == {
        A: "online", B: "online", C: "lost", D: "idle"}
    assert after_two[A]["last_round"] == 2 and after_two[C]["last_round"] == 1
    assert after_two[A]["seen_seconds_ago"] is not None and after_two[D]["last_seen"] is None
    assert after_two[A]["system"]["bytes_up"] == {"last": 2048, "total": 4096, "max": 2048}
    assert "note" not in after_two[A]["system"]
    live_run.start_round(3)
    assert {k: v["state"] for k, v in devices().items()} == {
        A: "training", B: "training", C: "lost", D: "training"}


def test_logs_come_after_the_cursor(dashboard: DashboardHandle,
                                    live_run: InProgressRun) -> None:
    url = "/api/runs/live-run/state"
    with client(dashboard) as http:
        assert http.get(url).json()["logs"] == []
        live_run.log("one", "two", "three")
        first = http.get(url, params={"after": 0}).json()
        assert [line["message"] for line in first["logs"]] == ["one", "two", "three"]
        assert first["log_cursor"] == 3
        live_run.log("four")
        second = http.get(url, params={"after": first["log_cursor"]}).json()
        assert [line["message"] for line in second["logs"]] == ["four"]
        assert (second["log_cursor"], second["log_reset"]) == (4, False)
        rewritten = http.get(url, params={"after": 50}).json()
        assert rewritten["log_reset"] and len(rewritten["logs"]) == 4
        live_run.log(*(f"line {n}" for n in range(LOG_LIMIT + 10)))
        capped = http.get(url).json()["logs"]
        assert len(capped) == LOG_LIMIT and capped[-1]["message"] == f"line {LOG_LIMIT + 9}"


def test_unknown_runs_and_paths_outside_are_404(dashboard: DashboardHandle) -> None:
    with client(dashboard) as http:
        assert http.get("/api/runs/no-such-run/state").status_code == 404
        assert http.get("/api/runs/..%2F..%2Fetc/state").status_code == 404
        assert http.get("/api/runs/.hidden/state").status_code == 404


def test_only_reads_are_allowed(dashboard: DashboardHandle) -> None:
    with client(dashboard) as http:
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            response = http.request(method, "/api/runs")
            assert response.status_code == 405, method
            assert response.headers["allow"] == "GET, HEAD"
        assert http.head("/").status_code == 200
        page = http.get("/")
    assert page.status_code == 200 and "FedIoT live dashboard" in page.text
    assert "script-src 'sha256-" in page.headers["content-security-policy"]


def test_without_a_token_only_loopback_host_names_are_answered(
        dashboard: DashboardHandle) -> None:
    with client(dashboard) as http:
        assert http.get("/api/runs", headers={"Host": f"localhost:{dashboard.port}"}
                        ).status_code == 200
        assert http.get("/api/runs", headers={"Host": "attacker.example"}).status_code == 403


def test_a_token_is_required_in_every_request(runs_dir: Path) -> None:
    handle = start_dashboard(runs_dir, port=0, token=TOKEN)
    try:
        assert handle.url.endswith(f"/?token={TOKEN}")
        with client(handle) as http:
            assert http.get("/").status_code == 401
            assert http.get("/api/runs").status_code == 401
            assert http.get("/api/runs", params={"token": TOKEN + "x"}).status_code == 401
            assert http.get("/api/runs", headers={"X-Fediot-Token": "wrong"}).status_code == 401
            assert http.get("/api/runs", headers={"X-Fediot-Token": TOKEN}).status_code == 200
            page = http.get("/", params={"token": TOKEN})
            assert page.status_code == 200
            assert "httponly" in page.headers["set-cookie"].lower()
        with client(handle, cookies={"fediot_dashboard_token": TOKEN}) as http:
            assert http.get("/api/runs/finished-run/state").status_code == 200
    finally:
        handle.stop(linger=0)  # no page is left to see the end


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "dashboard.example"])
def test_a_non_loopback_address_without_a_token_is_refused(host: str, tmp_path: Path) -> None:
    with pytest.raises(DashboardError, match="--token"):
        check_binding(host, None)
    with pytest.raises(DashboardError, match="--token"):
        start_dashboard(tmp_path, host=host, port=0)


def test_loopback_needs_no_token_and_short_tokens_are_refused() -> None:
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        check_binding(host, None)
    with pytest.raises(DashboardError, match="at least 16 characters"):
        check_binding("127.0.0.1", "short")


def test_all_interfaces_with_a_token(runs_dir: Path) -> None:
    handle = start_dashboard(runs_dir, host="0.0.0.0", port=0, token=TOKEN)
    try:
        assert f"?token={TOKEN}" in handle.url
        with client(handle) as http:
            assert http.get("/api/runs").status_code == 401
            assert http.get("/api/runs", params={"token": TOKEN}).status_code == 200
    finally:
        handle.stop()


def test_a_busy_port_is_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DashboardError, match=f"cannot listen on 127.0.0.1:{port}"):
            start_dashboard(tmp_path, port=port)


def test_stop_lets_a_watching_page_see_the_end_then_stops_serving(runs_dir: Path) -> None:
    handle = start_dashboard(runs_dir, port=0)
    with client(handle) as http:
        assert http.get("/api/runs/finished-run/state").status_code == 200  # a page watches
        stopper = threading.Thread(target=handle.stop, kwargs={"linger": 120.0})
        stopper.start()
        time.sleep(1.0)  # no poll meanwhile: stop() waits for one instead of stopping
        assert stopper.is_alive() and handle.running
        served_during_stop = 0
        while stopper.is_alive():  # the page's next poll is what lets stop() go on
            try:
                served_during_stop += http.get("/api/runs/finished-run/state").is_success
            except httpx.TransportError:
                break
        stopper.join(timeout=60)
        assert not stopper.is_alive() and served_during_stop >= 1
        assert not handle.running
        with pytest.raises(httpx.TransportError):
            http.get("/api/runs")


def test_the_page_loads_nothing_from_elsewhere() -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", PAGE_HTML)
    assert "<script src" not in PAGE_HTML and "@import" not in PAGE_HTML
    assert "innerHTML" not in PAGE_HTML  # server data is set as text only


def test_cli_refuses_an_open_address_without_a_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(err_console, "width", 5000)
    result = CliRunner().invoke(app, ["dashboard", "--runs-dir", str(tmp_path),
                                      "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "--host 0.0.0.0" in result.stderr and "--new-token" in result.stderr


def test_server_command_reports_a_busy_dashboard_port_before_starting_flower(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(err_console, "width", 5000)
    config = Path(__file__).resolve().parents[2] / "config" / "fedml_config.yaml"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, [
            "server", "--config", str(config), "--insecure",
            "--flwr-home", str(tmp_path / "flwr"), "--dashboard", str(port),
            "--set", f"tracking_args.log_file_dir={tmp_path / 'runs'}"])
    assert result.exit_code == 2, result.output
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "SuperLink on" not in result.stdout


@pytest.mark.slow
def test_dashboard_command_serves_in_the_foreground_until_stopped(runs_dir: Path) -> None:
    process = subprocess.Popen(
        [str(FEDIOT), "dashboard", "--runs-dir", str(runs_dir), "--port", "0", "--new-token"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"})
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"(http://127\.0\.0\.1:(\d+)/)\?token=([\w-]+)", line)
        assert found, line
        base, token = found.group(1), found.group(3)
        assert len(token) >= 16
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/api/runs").status_code == 401
            listing = http.get("/api/runs", params={"token": token}).json()
        assert [run["id"] for run in listing["runs"]] == ["finished-run"]
        process.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert process.wait(timeout=60) == 0
        assert "Traceback" not in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _read_lines(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _drain(lines: queue.Queue[str], printed: list[str]) -> str:
    while not lines.empty():
        printed.append(lines.get())
    return "".join(printed)


@pytest.mark.slow
def test_the_page_follows_a_running_simulation(browser_page: Any, dataset: Path,
                                               tmp_path: Path) -> None:
    """A real ``fediot simulate --dashboard 0`` in a subprocess, watched in Chromium."""
    rounds = 10
    runs = tmp_path / "runs"
    process = subprocess.Popen(
        [str(FEDIOT), "simulate", "--dataset", "N-BaIoT", "--data-dir", str(dataset),
         "--clients", "3", "--rounds", str(rounds), "--runs-dir", str(runs),
         "--set", "detection_args.window=3", "--set", "train_args.epochs=100",
         "--set", "validation_args.frequency_of_the_test=4",
         # the page must see several rounds run, so no early stop
         "--set", "validation_args.early_stopping_patience=0", "--dashboard", "0"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"})
    output: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, output), daemon=True).start()
    printed: list[str] = []
    try:
        url = None
        while url is None:
            line = output.get(timeout=180)
            printed.append(line)
            found = re.search(r"live dashboard: (http://127\.0\.0\.1:\d+/)", line)
            url = found.group(1) if found else None
        page = browser_page
        page.goto(url)
        page.wait_for_selector("#devices-body tr[data-device]", timeout=120_000)
        names = page.eval_on_selector_all("#devices-body tr[data-device]",
                                          "rows => rows.map(r => r.dataset.device)")
        assert sorted(names) == sorted(d.name for d in DEVICES[:3])
        seen_rounds: set[int] = set()
        loss_points: list[int] = []
        for _ in range(3000):  # up to ~10 minutes of 0.2 s looks
            state = page.text_content("#run-state")
            points = page.get_attribute("#chart-loss-plot svg", "data-points")
            if state == "running":
                seen_rounds.add(int(page.text_content("#round") or 0))
                loss_points.append(int(points or 0))
            if state in ("finished", "failed"):
                break
            page.wait_for_timeout(200)
        assert state == "finished", _drain(output, printed)
        assert len(seen_rounds - {0}) >= 2, f"rounds seen while running: {seen_rounds}"
        assert min(loss_points) < rounds and max(loss_points) > min(loss_points)
        assert page.text_content("#round") == str(rounds)
        assert page.text_content("#total-rounds") == str(rounds)
        assert page.get_attribute("#chart-loss-plot svg", "data-points") == str(rounds)
        assert page.get_attribute("#chart-evaluation-plot svg", "data-points") != "0"
        assert page.is_visible("#final") and "F1" in (page.text_content("#final-text") or "")
        assert page.text_content("#system-head") and "wall seconds" in (
            page.text_content("#system-head") or "")
        assert process.wait(timeout=120) == 0, _drain(output, printed)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.mark.slow
def test_a_killed_run_shows_as_interrupted_and_is_not_followed(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _, pid = killed_run(runs, "killed")
    handle = start_dashboard(runs, port=0)
    try:
        with client(handle) as http:
            listing = http.get("/api/runs").json()
            state = http.get("/api/runs/killed/state").json()
    finally:
        handle.stop()
    assert [(r["id"], r["state"]) for r in listing["runs"]] == [("killed", "interrupted")]
    assert f"pid {pid} on" in listing["runs"][0]["interrupted_because"]
    assert listing["default"] == "killed"  # the newest run, though none is running
    assert (state["state"], state["round"], state["total_rounds"]) == ("interrupted", 2, 5)
    assert f"pid {pid} on" in state["interrupted_because"]
    assert {d["state"] for d in state["devices"]} == {"idle"}  # nobody trains any more
    assert ".state-interrupted" in PAGE_HTML
