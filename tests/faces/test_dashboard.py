"""The live dashboard: its API over real run folders through a real uvicorn server, its
access rules, and the page in a real headless Chromium following a running ``fediot
simulate``."""

from __future__ import annotations

import itertools
import json
import math
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
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

import fediot.faces.cli.main  # noqa: F401  (registers every command)
from exited_process import killed_run
from federated_data import small_run_config, write_uci_dataset
from fediot.core.catalog import DEVICES, client_label
from fediot.core.config import Config
from fediot.core.federated.meter import exact_memory_round
from fediot.core.federated.participation import StepContact
from fediot.core.federated.server import RoundRecord
from fediot.engines.run_folder import RunFolder, RunView, StatusRecorder
from fediot.engines.simulation import simulate
from fediot.faces.cli.app import app, err_console
from fediot.faces.dashboard import (
    DashboardError,
    DashboardHandle,
    check_binding,
    start_dashboard,
)
from fediot.faces.dashboard.app import LOG_LIMIT, evaluation_note, run_state
from fediot.faces.dashboard.page import PAGE_HTML

FEDIOT = Path(sys.executable).with_name("fediot")
TOKEN = "a-test-token-of-enough-length"
A, B, C, D = (d.name for d in DEVICES[:4])


BENIGN_ROWS = [600, 3000, 9000]
"""Each device's benign rows: devices of different sizes take different memory."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_uci_dataset(tmp_path_factory.mktemp("nbaiot"), n_devices=3, rows=BENIGN_ROWS)


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
        system={d: {"wall_seconds": 0.25 * number, "cpu_seconds": 0.125,
                    "task_peak_memory_bytes": 1000 * number + i, "peak_rss_bytes": 5000 + i,
                    "bytes_down": 4096, "bytes_up": 2048, "note": "not a number"}
                for i, d in enumerate(answered)})


class InProgressRun:
    """A run folder kept by the real :class:`StatusRecorder`, rounds appended by hand."""

    def __init__(self, runs: Path, engine: str | None = None) -> None:
        config = Config().with_overrides({
            "tracking_args.log_file_dir": str(runs), "tracking_args.run_name": "live-run",
            "train_args.comm_round": 5})
        self.folder = RunFolder.create(config)
        self.rounds: list[RoundRecord] = []
        self.status = StatusRecorder(self.folder, config, [A, B, C, D], engine=engine)

    def start_round(self, number: int) -> None:
        self.status.on_phase("round", f"{number}/5")

    def lose(self, device: str, server_round: int) -> None:
        self.status.on_contact(StepContact("fit", server_round, (), (device,)))

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


def _metrics(runs_dir: Path, run: str = "finished-run") -> list[dict[str, Any]]:
    return [json.loads(line) for line in
            (runs_dir / run / "metrics.jsonl").read_text().splitlines()]


def test_state_of_a_finished_real_run(dashboard: DashboardHandle, runs_dir: Path) -> None:
    with client(dashboard) as http:
        state = http.get("/api/runs/finished-run/state").json()
    assert (state["state"], state["round"], state["total_rounds"]) == ("finished", 3, 3)
    assert [r["round"] for r in state["rounds"]] == [1, 2, 3]
    metrics = _metrics(runs_dir)
    results = json.loads((runs_dir / "finished-run" / "results.json").read_text())
    # evaluated every round but the last; the last point is the final evaluation
    assert state["evaluation"]["ROC AUC"] == [
        [1, metrics[0]["evaluation"]["roc_auc"]], [2, metrics[1]["evaluation"]["roc_auc"]],
        [3, results["evaluation"]["pooled"]["roc_auc"]]]
    assert state["evaluation_note"].startswith(
        "Evaluated every 1 round(s) (validation_args.frequency_of_the_test)")
    assert state["results"]["pooled"]["TPR"] is not None and state["results"]["rounds"] == 3
    devices = {d["id"]: d for d in state["devices"]}
    assert set(devices) == {A, B, C}
    assert {d["state"] for d in devices.values()} == {"idle"}  # the run is over
    wall = [m["system"][A]["wall_seconds"] for m in metrics]
    system = devices[A]["system"]
    assert system["wall_seconds"]["total"] == pytest.approx(sum(wall))
    assert system["wall_seconds"]["last"] == wall[-1]
    assert system["task_peak_memory_bytes"]["max"] == max(
        m["system"][A]["task_peak_memory_bytes"] for m in metrics)
    assert devices[A]["rounds_answered"] == 3
    # in-process and one worker: memory and CPU per device, one shared process, no traffic
    layout = state["system"]
    assert [c["key"] for c in layout["per_device"]] == [
        "wall_seconds", "cpu_seconds", "task_peak_memory_bytes"]
    once = {entry["key"]: entry for entry in layout["once"]}
    assert set(once) == {"peak_rss_bytes", "bytes_down", "bytes_up"}
    assert once["peak_rss_bytes"]["value"]["max"] == max(
        f["peak_rss_bytes"] for m in metrics for f in m["system"].values())
    assert "share worker processes" in once["peak_rss_bytes"]["why"]
    assert once["bytes_down"]["value"] == {"last": 0, "total": 0, "max": 0}
    assert "nothing crossed a process boundary" in once["bytes_down"]["why"]


def test_evaluation_note_follows_the_config() -> None:
    def note(every: int, total: int, evaluated: int, finished: bool) -> str:
        return evaluation_note(Config().with_overrides({
            "validation_args.frequency_of_the_test": every, "train_args.comm_round": total}),
            evaluated, finished)

    assert note(0, 5, 0, False) == (
        "No round is evaluated during training (validation_args.frequency_of_the_test = 0): "
        "the final evaluation runs after the last round and appears here then. For a curve, "
        "set validation_args.frequency_of_the_test = N to evaluate every N rounds.")
    assert "the last point is the final evaluation (results.json)" in note(0, 5, 0, True)
    assert note(5, 5, 0, False).startswith("Evaluated every 5 rounds "
                                           "(validation_args.frequency_of_the_test), but the "
                                           "run has 5: no round is evaluated")
    assert note(2, 5, 0, False).endswith("The first point comes after round 2.")
    assert "first point" not in note(2, 5, 1, False)


def test_figures_the_same_for_every_device_are_shown_once(runs_dir: Path) -> None:
    for engine, rss_per_device in (("inprocess", False), ("flower", True)):
        run = InProgressRun(runs_dir, engine=engine)
        try:
            run.end_round(round_record(1, [A, B, C], [A, B, C]))
            state = run_state(RunView(run.folder.root))
        finally:
            shutil.rmtree(run.folder.root)
        columns = [c["key"] for c in state["system"]["per_device"]]
        once = {e["key"]: e for e in state["system"]["once"]}
        # the task memory differs per device; every device got and sent as much
        assert "task_peak_memory_bytes" in columns
        assert once["bytes_down"]["value"]["total"] == 4096
        assert once["bytes_down"]["why"] == ("the same for all 3 devices: every device "
                                             "receives the same model")
        assert once["bytes_up"]["why"] == ("the same for all 3 devices: measured the same for "
                                           "every device")
        # a device's own process only in the deployment
        assert ("peak_rss_bytes" in columns) is rss_per_device
        assert ("peak_rss_bytes" in once) is not rss_per_device
        if not rss_per_device:
            assert once["peak_rss_bytes"]["value"]["max"] == 5002


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
    live_run.lose(C, 2)
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
        assert {line["device_label"] for line in first["logs"]} == {client_label(A)}
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


def test_ctrl_c_in_wait_still_lets_stop_wait_for_the_server(runs_dir: Path) -> None:
    """Ctrl-C lands in wait(), as when an operator closes ``fediot simulate --dashboard``:
    the server is still running then, and stop() returns only once it has shut down (on
    CPython 3.11 a Ctrl-C inside Thread.join marks the thread stopped while it runs on, and
    a process leaving during uvicorn's shutdown could hang on its way out)."""
    handle = start_dashboard(runs_dir, port=0)
    with client(handle) as http:
        assert http.get("/api/runs").status_code == 200  # a kept-alive connection, as a page's
        threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            handle.wait()
        assert handle.running
        handle.stop(linger=0.0)
        assert not handle.running
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", handle.port), timeout=5).close()


def test_a_page_left_open_after_exit_when_done_keeps_the_end_calmly(
        browser_page: Any, runs_dir: Path) -> None:
    handle = start_dashboard(runs_dir, port=0)
    page = browser_page
    try:
        _open_finished_run(page, handle)
    finally:
        handle.stop()  # what --exit-when-done does once the page has seen the end
    page.wait_for_selector("#error.closed", timeout=30_000)
    assert page.text_content("#error-text") == (
        "The dashboard server has closed; this page keeps the run's final state as last "
        "read. Retrying…")
    assert page.text_content("#run-state") == "finished" and page.text_content("#round") == "3"


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
    """``fediot dashboard`` serves until Ctrl-C; ``kill -USR1`` meanwhile prints every
    thread's stack (what a command that seems stuck is doing) and it serves on."""
    process = subprocess.Popen(
        [str(FEDIOT), "dashboard", "--runs-dir", str(runs_dir), "--port", "0", "--new-token"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"})
    output: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, output), daemon=True).start()
    printed: list[str] = []
    try:
        found = _wait_for_line(output, printed, r"(http://127\.0\.0\.1:(\d+)/)\?token=([\w-]+)",
                               120)
        base, token = found.group(1), found.group(3)
        assert len(token) >= 16
        with httpx.Client(base_url=base, timeout=30) as http:
            assert http.get("/api/runs").status_code == 401
            listing = http.get("/api/runs", params={"token": token}).json()
            assert [run["id"] for run in listing["runs"]] == ["finished-run"]
            process.send_signal(signal.SIGUSR1)
            _wait_for_line(output, printed, r"(Current thread|Thread) 0x[0-9a-f]+ \(most recent "
                           r"call first\)", 30)
            _wait_for_line(output, printed, r'File ".*uvicorn.*", line \d+ in ', 30)
            assert http.get("/api/runs", params={"token": token}).status_code == 200
        assert process.poll() is None
        process.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        assert _exit_code(process, output, printed) == 0
        assert "Traceback" not in _drain(output, printed)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


def _open_finished_run(page: Any, dashboard: DashboardHandle, width: int = 1280) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    page.goto(dashboard.url + "?run=finished-run")
    page.wait_for_selector("#system-body tr[data-device]")
    page.wait_for_selector("#logs-body tr")
    page.wait_for_selector("#chart-evaluation-plot svg")


def _is_one_two_five(step: float) -> bool:
    mantissa = step / 10 ** math.floor(math.log10(step) + 1e-9)
    return any(math.isclose(mantissa, m) for m in (1, 2, 5))


def test_the_page_shows_each_devices_own_system_figures(
        browser_page: Any, dashboard: DashboardHandle, runs_dir: Path) -> None:
    page = browser_page
    _open_finished_run(page, dashboard)
    metrics = _metrics(runs_dir)
    cells = page.eval_on_selector_all(
        "#system-body td[data-key]", "els => els.map(e => [e.parentElement.dataset.device, "
        "e.dataset.key, Number(e.dataset.last), Number(e.dataset.value)])")
    shown = {(device, key): (last, value) for device, key, last, value in cells}
    devices = [d.name for d in DEVICES[:3]]
    for device in devices:
        mine = [m["system"][device] for m in metrics]
        assert shown[device, "task_peak_memory_bytes"] == (
            mine[-1]["task_peak_memory_bytes"], max(f["task_peak_memory_bytes"] for f in mine))
        assert shown[device, "cpu_seconds"] == pytest.approx(
            (mine[-1]["cpu_seconds"], sum(f["cpu_seconds"] for f in mine)))
    # each device's own memory: it differs between devices and grows with its training rows
    assert len({shown[d, "task_peak_memory_bytes"][1] for d in devices}) == len(devices)
    # round 2: measured exactly (allocator trimmed first, exact_memory_round), libraries loaded
    second = [metrics[1]["system"][d]["task_peak_memory_bytes"] for d in devices]
    assert exact_memory_round(metrics[1]["round"])
    assert second == sorted(second) and sorted(BENIGN_ROWS) == BENIGN_ROWS
    head = page.inner_text("#system-head")
    assert "memory its training task took (peak RSS rise above the start) (last round / max)" \
        in head and "CPU time of its training thread (last round / total)" in head
    # said once, not as identical columns
    once = {key: (value, text) for key, value, text in page.eval_on_selector_all(
        "#system-once li", "els => els.map(e => [e.dataset.key, Number(e.dataset.value), "
        "e.textContent])")}
    assert set(once) == {"peak_rss_bytes", "bytes_down", "bytes_up"}
    assert once["peak_rss_bytes"][0] == max(f["peak_rss_bytes"] for m in metrics
                                            for f in m["system"].values())
    assert "not any one device's" in once["peak_rss_bytes"][1]
    assert once["bytes_down"][0] == sum(m["system"][A]["bytes_down"] for m in metrics) == 0
    assert "nothing crossed a process boundary" in once["bytes_down"][1]


def test_charts_have_round_ticks_and_one_two_five_ticks_with_units(
        browser_page: Any, dashboard: DashboardHandle, runs_dir: Path) -> None:
    page = browser_page
    _open_finished_run(page, dashboard)
    metrics = _metrics(runs_dir)
    results = json.loads((runs_dir / "finished-run" / "results.json").read_text())
    points = {plot: page.eval_on_selector_all(
        f"#{plot} circle", "els => els.map(e => [e.dataset.series, Number(e.dataset.x), "
        "Number(e.dataset.y)])") for plot in ("chart-loss-plot", "chart-seconds-plot",
                                              "chart-evaluation-plot")}
    assert points["chart-loss-plot"] == [["train loss", m["round"], m["train_loss"]]
                                         for m in metrics]
    assert points["chart-seconds-plot"] == [["round time", m["round"], m["seconds"]]
                                            for m in metrics]
    auc = [(x, y) for series, x, y in points["chart-evaluation-plot"] if series == "ROC AUC"]
    assert auc == [(1, metrics[0]["evaluation"]["roc_auc"]),
                   (2, metrics[1]["evaluation"]["roc_auc"]),
                   (3, results["evaluation"]["pooled"]["roc_auc"])]
    for plot, unit in (("chart-loss-plot", ""), ("chart-seconds-plot", " s"),
                       ("chart-evaluation-plot", " %")):
        svg = f"#{plot} svg"
        assert json.loads(page.get_attribute(svg, "data-x-ticks") or "") == [1, 2, 3]
        assert page.eval_on_selector_all(f"{svg} text.x-tick",
                                         "els => els.map(e => e.textContent)") == ["1", "2", "3"]
        ticks = json.loads(page.get_attribute(svg, "data-y-ticks") or "")
        steps = [b - a for a, b in itertools.pairwise(ticks)]
        assert len(ticks) >= 3 and all(math.isclose(x, steps[0]) for x in steps), ticks
        assert _is_one_two_five(steps[0]), ticks
        assert all(math.isclose(t / steps[0], round(t / steps[0]), abs_tol=1e-9)
                   for t in ticks), ticks
        values = [y for _, _, y in points[plot]]
        assert ticks[0] <= min(values) and max(values) <= ticks[-1]
        labels = page.eval_on_selector_all(f"{svg} text.y-tick",
                                           "els => els.map(e => e.textContent)")
        assert len(labels) == len(ticks)
        assert all(label.endswith(unit) for label in labels) if unit else all(
            re.fullmatch(r"-?[\d.,]+", label) for label in labels), labels
    assert page.eval_on_selector_all("#chart-evaluation-plot svg text.y-tick",
                                     "els => els.map(e => e.textContent)") == [
        "0 %", "20 %", "40 %", "60 %", "80 %", "100 %"]
    config = RunView(runs_dir / "finished-run").config()
    assert page.text_content("#chart-evaluation-note") == evaluation_note(config, 2, True)


def test_logs_are_newest_first_with_device_names_and_whole_rows(
        browser_page: Any, dashboard: DashboardHandle, runs_dir: Path) -> None:
    page = browser_page
    _open_finished_run(page, dashboard)
    lines = RunView(runs_dir / "finished-run").logs()
    assert 0 < len(lines) <= LOG_LIMIT
    rows = page.eval_on_selector_all(
        "#logs-body tr", "els => els.map(e => [e.dataset.time, e.dataset.device, "
        "e.children[1].textContent, e.children[5].textContent])")
    times = [datetime.fromisoformat(time) for time, *_ in rows]
    assert times == sorted(times, reverse=True)
    assert len(set(times)) > 1
    assert sorted(rows) == sorted([line["time"], line.get("device") or "",
                                   client_label(line["device"]) if line.get("device")
                                   else "server", line["message"]] for line in lines)
    box, head, first = (page.eval_on_selector(selector, "e => e.getBoundingClientRect().toJSON()")
                        for selector in ("#logs-scroll", "#logs thead", "#logs-body tr"))
    assert first["top"] >= head["bottom"] - 0.5 and first["bottom"] <= box["bottom"]


def test_logs_of_parallel_devices_are_ordered_by_time(
        browser_page: Any, dashboard: DashboardHandle, live_run: InProgressRun) -> None:
    # parallel devices' lines reach the file one reply at a time: grouped by device
    written = [(A, "00:00:01"), (A, "00:00:03"), (B, "00:00:02"), (B, "00:00:04")]
    with (live_run.folder.root / "logs.jsonl").open("a") as f:
        for device, moment in written:
            f.write(json.dumps({"time": f"2026-01-01T{moment}.000+00:00", "device": device,
                                "round": 1, "step": "fit", "level": "INFO",
                                "message": f"{device} at {moment}"}) + "\n")
    page = browser_page
    page.goto(dashboard.url + "?run=live-run")
    page.wait_for_selector("#logs-body tr")
    shown = page.eval_on_selector_all(
        "#logs-body tr", "els => els.map(e => [e.children[0].textContent, "
        "e.children[1].textContent, e.children[1].title])")
    assert shown == [["00:00:04.000", client_label(B), B], ["00:00:03.000", client_label(A), A],
                     ["00:00:02.000", client_label(B), B], ["00:00:01.000", client_label(A), A]]


OVERFLOWS = """() => {
  const problems = [];
  const page = document.documentElement.scrollWidth;
  if (page > innerWidth) problems.push(`page ${page} > ${innerWidth}`);
  for (const card of document.querySelectorAll("header, main > section")) {
    if (card.hidden) continue;
    const box = card.getBoundingClientRect();
    if (card.scrollWidth > card.clientWidth) {
      problems.push(`${card.id || card.tagName} scrolls: ${card.scrollWidth} > `
                    + card.clientWidth);
    }
    for (const inner of card.querySelectorAll("*")) {
      const r = inner.getBoundingClientRect();
      if (r.width && (r.right > box.right + 0.5 || r.left < box.left - 0.5)) {
        problems.push(`${card.id || card.tagName}: ${inner.tagName} ${inner.id} `
                      + `${r.left}..${r.right} outside ${box.left}..${box.right}`);
      }
    }
  }
  return problems;
}"""


@pytest.mark.parametrize("width", [360, 390, 414])
def test_narrow_screens_have_no_horizontal_overflow(
        browser_page: Any, dashboard: DashboardHandle, width: int) -> None:
    page = browser_page
    _open_finished_run(page, dashboard, width)
    assert page.evaluate(OVERFLOWS) == []
    assert page.evaluate("innerWidth") == width
    # the tables are still there, one labelled block per row
    labels = page.eval_on_selector_all("#devices-body tr:first-child td",
                                       "els => els.map(e => getComputedStyle(e, '::before')"
                                       ".content)")
    assert labels[:3] == ['"device"', '"state"', '"last round"']


def _read_lines(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line)


def _drain(lines: queue.Queue[str], printed: list[str]) -> str:
    while not lines.empty():
        printed.append(lines.get())
    return "".join(printed)


def _exit_code(process: subprocess.Popen[str], output: queue.Queue[str], printed: list[str],
               seconds: float = 60.0) -> int:
    """``process``'s exit code once it ends within ``seconds`` of a Ctrl-C; otherwise a test
    failure showing its output and, from ``kill -USR1``, what each of its threads was doing."""
    try:
        return process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGUSR1)
        time.sleep(3)
        pytest.fail(f"still running {seconds:g} s after Ctrl-C; its output, then its threads' "
                    f"stacks:\n{_drain(output, printed)}")


def _simulate(dataset: Path, runs: Path, rounds: int, *options: str) -> subprocess.Popen[str]:
    """``fediot simulate --dashboard 0`` of the 3 devices in ``dataset``, in a subprocess."""
    return subprocess.Popen(
        [str(FEDIOT), "simulate", "--dataset", "N-BaIoT", "--data-dir", str(dataset),
         "--clients", "3", "--rounds", str(rounds), "--runs-dir", str(runs),
         "--set", "detection_args.window=3", "--dashboard", "0", *options],
        cwd=runs.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "COLUMNS": "200"})


def _wait_for_line(output: queue.Queue[str], printed: list[str], pattern: str,
                   seconds: float) -> re.Match[str]:
    deadline = time.monotonic() + seconds
    while True:
        line = output.get(timeout=max(0.1, deadline - time.monotonic()))
        printed.append(line)
        found = re.search(pattern, line)
        if found:
            return found


EMPTY_EVALUATION_CHART = """() => {
  const empty = document.querySelector("#chart-evaluation-plot svg[data-points='0'] text.empty");
  return empty ? [empty.textContent, document.getElementById("chart-evaluation-note")
                  .textContent] : [];
}"""
"""What the evaluation chart says while it has no point (read at once: it may be redrawn)."""

ACCEPTANCE_SECONDS = 60.0
"""The finished run must still be on the page this long after the run ended."""


@pytest.mark.slow
def test_the_page_follows_a_running_simulation_and_keeps_the_finished_run(
        browser_page: Any, tmp_path: Path) -> None:
    """A real ``fediot simulate --dashboard 0`` in a subprocess, watched in Chromium while it
    runs and for :data:`ACCEPTANCE_SECONDS` after it ended, then closed with Ctrl-C."""
    rounds = 10
    dataset = write_uci_dataset(tmp_path / "nbaiot", n_devices=3)
    runs = tmp_path / "runs"
    # default evaluation settings (no round evaluated during training); the page must see
    # several rounds run, so slow rounds and no early stop
    process = _simulate(dataset, runs, rounds, "--set", "train_args.epochs=100",
                        "--set", "validation_args.early_stopping_patience=0")
    output: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, output), daemon=True).start()
    printed: list[str] = []
    try:
        url = _wait_for_line(output, printed, r"live dashboard: (http://127\.0\.0\.1:\d+/)",
                             180).group(1)
        page = browser_page
        page.goto(url)
        page.wait_for_selector("#devices-body tr[data-device]", timeout=120_000)
        names = page.eval_on_selector_all("#devices-body tr[data-device]",
                                          "rows => rows.map(r => r.dataset.device)")
        assert sorted(names) == sorted(d.name for d in DEVICES[:3])
        seen_rounds: set[int] = set()
        loss_points: list[int] = []
        notes: set[str] = set()
        for _ in range(3000):  # up to ~10 minutes of 0.2 s looks
            state = page.text_content("#run-state")
            points = page.get_attribute("#chart-loss-plot svg", "data-points")
            if state == "running":
                seen_rounds.add(int(page.text_content("#round") or 0))
                loss_points.append(int(points or 0))
                notes.update(page.evaluate(EMPTY_EVALUATION_CHART))
            if state in ("finished", "failed"):
                break
            page.wait_for_timeout(200)
        assert state == "finished", _drain(output, printed)
        assert len(seen_rounds - {0}) >= 2, f"rounds seen while running: {seen_rounds}"
        assert min(loss_points) < rounds and max(loss_points) > min(loss_points)
        # while running, the empty evaluation chart said why
        assert "no evaluated round yet" in notes
        assert any(n.startswith("No round is evaluated during training (validation_args."
                                "frequency_of_the_test = 0): the final evaluation runs after "
                                "the last round") for n in notes), notes
        run = RunView(next(p for p in runs.iterdir() if (p / "config.yaml").is_file()))
        results = run.results()
        assert results is not None
        _wait_for_line(output, printed, r"the dashboard keeps showing it at .*Ctrl-C to close",
                       120)
        ended = time.monotonic()

        def shows_the_finished_run() -> None:
            assert page.text_content("#run-state") == "finished"
            assert page.is_hidden("#error"), page.text_content("#error")
            assert page.text_content("#round") == str(rounds)
            assert page.text_content("#total-rounds") == str(rounds)
            assert page.get_attribute("#chart-loss-plot svg", "data-points") == str(rounds)
            final = page.eval_on_selector_all(
                "#chart-evaluation-plot circle", "els => els.map(e => [e.dataset.series, "
                "Number(e.dataset.x), Number(e.dataset.y)])")
            pooled = results["evaluation"]["pooled"]
            assert ["ROC AUC", rounds, pooled["roc_auc"]] in final
            assert ["F1 (window vote)", rounds, pooled["window_vote"]["f1"]] in final
            assert page.is_visible("#final") and "F1" in (page.text_content("#final-text") or "")
            assert "CPU time of its training thread" in (page.text_content("#system-head") or "")

        shows_the_finished_run()
        page.wait_for_timeout(1000 * max(0.0, ACCEPTANCE_SECONDS - (time.monotonic() - ended)))
        assert time.monotonic() - ended >= ACCEPTANCE_SECONDS
        assert process.poll() is None, _drain(output, printed)  # still serving
        page.wait_for_timeout(2 * 1000)  # a poll or two more after the minute
        shows_the_finished_run()
        process.send_signal(signal.SIGINT)  # the operator closes it
        assert _exit_code(process, output, printed) == 0, _drain(output, printed)
        assert "Traceback" not in _drain(output, printed)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)


@pytest.mark.slow
def test_simulate_with_exit_when_done_ends_by_itself(tmp_path: Path) -> None:
    dataset = write_uci_dataset(tmp_path / "nbaiot", n_devices=3)
    process = _simulate(dataset, tmp_path / "runs", 2, "--exit-when-done")
    try:
        out, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    assert process.returncode == 0, out
    assert "live dashboard: http://127.0.0.1:" in out and "Ctrl-C" not in out


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
