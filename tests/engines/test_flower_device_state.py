"""Honest device state in a real deployment (issue 12, item 4): TLS and device keys on
loopback, three ``fediot client`` devices and ``fediot server``, every process ours.

One device is killed outright (SIGKILL to its ``fediot client`` and every process below it)
after round 1, and restarted once the server has found it lost. It answers later steps:
``fediot status`` must show it online, ``logs.jsonl`` must hold its loss and its rejoin under its
name, and the run's pooled F1 must stay within 2 points of the same run undisturbed (computed
in-process: the engines agree bit for bit on an undisturbed run). Flower notices a dead node
only after its heartbeat runs out (about 60 s), so the run is kept to five short rounds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from federated_data import write_cross_silo_config
from fediot.core.catalog import DEVICES, client_label
from fediot.core.config import load_config
from fediot.core.liveness import pid_alive
from fediot.engines.flower import certificates as tls
from fediot.engines.flower import deployment
from fediot.engines.simulation import run_federated
from ports import free_port

FEDIOT = Path(sys.executable).with_name("fediot")
MEMBERS = DEVICES[:3]
VICTIM = MEMBERS[2]
ROUNDS = 5


def fediot_env(home: Path | None = None) -> dict[str, str]:
    env = deployment.flower_env(home) if home is not None else dict(os.environ)
    return {**env, "COLUMNS": "200"}


def wait_until(condition: Callable[[], bool], timeout: float, what: str,
               server: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if server.poll() is not None:
            raise AssertionError(f"the server ended (exit {server.returncode}) before {what}")
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def start_client(tmp: Path, certs: Path, address: str, uci_id: int, home: str
                 ) -> subprocess.Popen[str]:
    """``fediot client`` for one device (TLS, its own key), in a session of its own."""
    out = (tmp / f"{home}.out").open("w")
    return subprocess.Popen(
        [str(FEDIOT), "client", "--device", str(uci_id), "--server", address,
         "--root-certificates", str(certs / "ca.crt"),
         "--node-key", str(tls.device_key_paths(certs, uci_id)[0]),
         "--port", str(free_port()), "--flwr-home", str(tmp / home), "--wait", "900"],
        stdout=out, stderr=subprocess.STDOUT, text=True, env=fediot_env(),
        start_new_session=True)


def kill_outright(process: subprocess.Popen[str]) -> None:
    """SIGKILL to the client and every process below it (its SuperNode and what that
    started), all at once, as a power cut would: none can clean up."""
    family = [process.pid, *deployment.descendants(process.pid)]
    for pid in family:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in family):
        time.sleep(0.2)


def run_folder(runs: Path) -> Path | None:
    return next((p.parent for p in runs.glob("*/config.yaml")), None)


def rounds_done(runs: Path) -> int:
    folder = run_folder(runs)
    metrics = folder / "metrics.jsonl" if folder is not None else None
    return len(metrics.read_text().splitlines()) if metrics and metrics.exists() else 0


def device_status(runs: Path) -> dict[str, Any]:
    folder = run_folder(runs)
    if folder is None:
        return {}
    try:
        return dict(json.loads((folder / "status.json").read_text())["devices"][VICTIM.name])
    except (OSError, ValueError, KeyError):
        return {}


def victim_row(runs: Path, observed: dict[str, Any]) -> str:
    """The victim's row of ``fediot status`` (the whole output kept in ``observed``)."""
    folder = run_folder(runs)
    if folder is None:
        return ""
    shown = subprocess.run([str(FEDIOT), "status", str(folder)], capture_output=True,
                           text=True, timeout=120, check=False, env=fediot_env())
    observed["status_output"] = shown.stdout + shown.stderr
    return next((line for line in shown.stdout.splitlines()
                 if client_label(VICTIM.name) in line), "")


@pytest.fixture(scope="module")
def disturbed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("device-state")
    certs = tmp / "certs"
    for args in (["ca"], ["server", "--host", "127.0.0.1"],
                 ["device", *(str(d.uci_id) for d in MEMBERS)]):
        made = subprocess.run([str(FEDIOT), "certs", *args, "--dir", str(certs)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert made.returncode == 0, made.stdout + made.stderr
    config = write_cross_silo_config(tmp, len(MEMBERS), train={"comm_round": ROUNDS,
                                                               "client_num_min_replies": 2})
    port = free_port()
    address = f"127.0.0.1:{port}"
    clients = {d.uci_id: start_client(tmp, certs, address, d.uci_id, f"client-{d.uci_id}")
               for d in MEMBERS}
    server_log = (tmp / "server.out").open("w+")
    server = subprocess.Popen(
        [str(FEDIOT), "server", "--config", str(config), "--port", str(port),
         "--certificates", str(certs), "--flwr-home", str(tmp / "server"), "--wait", "300",
         "--timeout", "1500"],
        stdout=server_log, stderr=subprocess.STDOUT, text=True,
        env=fediot_env(tmp / "server"), start_new_session=True)
    runs = tmp / "runs"
    restarted: subprocess.Popen[str] | None = None
    observed: dict[str, Any] = {}
    try:
        wait_until(lambda: rounds_done(runs) >= 1, 900, "round 1", server)
        kill_outright(clients[VICTIM.uci_id])
        wait_until(lambda: device_status(runs).get("state") == "lost", 600,
                   "the server to find the killed device lost", server)
        observed["lost"] = device_status(runs)
        restarted = start_client(tmp, certs, address, VICTIM.uci_id, "client-again")
        # what an operator sees: `fediot status`, asked until the device shows online (between
        # its answers it may show training, when a round asks it again)
        wait_until(lambda: " online " in victim_row(runs, observed), 900,
                   "`fediot status` to show the restarted device online", server)
        observed["online"] = device_status(runs)
        server.wait(timeout=1500)
    finally:
        deployment.stop_command(server, leftovers=True)
        for process in [*clients.values(), restarted]:
            if process is not None:
                deployment.stop_command(process, leftovers=True)
    server_log.seek(0)
    folder = run_folder(runs)
    assert folder is not None
    in_process = run_federated(load_config(config).with_overrides({
        "common_args.training_type": "simulation",
        "tracking_args.log_file_dir": str(tmp / "runs-inprocess")}))
    yield {
        **observed, "server_exit": server.returncode, "server_output": server_log.read(),
        "folder": folder, "in_process": in_process,
        "run_log": (tmp / "server" / "logs" / "run.log").read_text(errors="replace"),
    }
    server_log.close()


@pytest.mark.slow
def test_a_restarted_device_shows_online_once_it_answers(disturbed: dict[str, Any]) -> None:
    assert disturbed["server_exit"] == 0, disturbed["server_output"]
    assert disturbed["lost"]["last_round"] is not None
    online = disturbed["online"]
    assert online["last_seen"] > disturbed["lost"]["last_seen"]
    assert online["last_round"] > disturbed["lost"]["last_round"]
    rows = [line for line in disturbed["status_output"].splitlines()
            if client_label(VICTIM.name) in line]
    assert rows and " online " in rows[0], disturbed["status_output"]
    status = json.loads((disturbed["folder"] / "status.json").read_text())
    assert status["devices"][VICTIM.name]["state"] == "online"  # to the end of the run
    assert status["devices"][VICTIM.name]["last_round"] == ROUNDS


@pytest.mark.slow
def test_the_loss_and_the_rejoin_are_logged_under_the_device_name(
        disturbed: dict[str, Any]) -> None:
    lines = [json.loads(text) for text in
             (disturbed["folder"] / "logs.jsonl").read_text().splitlines() if text]
    about = [line for line in lines if line["device"] == VICTIM.name
             and line["message"].startswith(("lost:", "rejoined:"))]
    assert [line["message"].split(":")[0] for line in about] == ["lost", "rejoined"], about
    assert about[0]["level"] == "WARNING" and about[0]["round"] >= 2
    # the ServerApp's own log names the device, not only its node id
    log = disturbed["run_log"]
    assert f"no reply from {VICTIM.name} (node" in log
    assert f"failed on device {VICTIM.name} (node" in log
    assert "ignored a reply" not in log  # the SuperLink's failure reply is the device's


@pytest.mark.slow
def test_the_disturbed_run_detects_as_well_as_an_undisturbed_one(
        disturbed: dict[str, Any]) -> None:
    results = json.loads((disturbed["folder"] / "results.json").read_text())
    rounds = [json.loads(text) for text in
              (disturbed["folder"] / "metrics.jsonl").read_text().splitlines() if text]
    assert any(VICTIM.name not in r["answered"] for r in rounds)  # it did miss training
    assert VICTIM.name in rounds[-1]["answered"]  # and trained again
    assert results["excluded_devices"] == {}
    assert set(results["evaluation"]["devices"]) == {d.name for d in MEMBERS}
    undisturbed = disturbed["in_process"].evaluation.pooled
    for kind in ("rows", "window_vote"):
        f1, oracle = results["evaluation"]["pooled"][kind]["f1"], undisturbed[kind]["f1"]
        assert abs(f1 - oracle) <= 0.02, (kind, f1, oracle)
