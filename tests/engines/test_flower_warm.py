"""Warm device workers over a real deployment on loopback, TLS and device keys.

Two ``fediot client`` processes (default ``--worker warm``) and ``fediot server`` run two
rounds; the final model equals the in-process engine's bit for bit, and each device's tasks
were all run by one worker process (its log names the pid of every task). Every process is
ours, with its own ports and FLWR_HOME, and is stopped by its PID.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from federated_data import write_cross_silo_config
from fediot.core.catalog import DEVICES
from fediot.core.config import load_config
from fediot.engines.flower import certificates as tls
from fediot.engines.flower import deployment
from fediot.engines.flower import worker as warm
from fediot.engines.simulation import run_federated
from ports import free_port

FEDIOT = Path(sys.executable).with_name("fediot")
DEVICES_USED = DEVICES[:2]
TASK_LINE = re.compile(r"^task (\d+) (\S+) pid (\d+) (\S+) ([0-9.]+) s$")


def make_certificates(folder: Path, devices: list[int]) -> Path:
    tls.create_ca(folder)
    tls.create_server_certificate(folder, ["127.0.0.1"])
    for device in devices:
        tls.create_device_key(folder, device)
    return folder


def test_the_pinned_flower_internals_are_present() -> None:
    assert warm.PINNED_FLOWER == "1.42.0"
    assert warm.UNSUPPORTED is None, warm.UNSUPPORTED


def test_another_flower_falls_back_to_the_subprocess_mode(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import flwr

    monkeypatch.setattr(flwr, "__version__", "1.43.0")
    reason = warm._unsupported()
    assert reason == "Flower 1.43.0 is installed; the warm worker is pinned to 1.42.0"
    monkeypatch.setattr(flwr, "__version__", warm.PINNED_FLOWER)
    monkeypatch.setitem(warm._PINNED_NAMES, "flwr.supercore.heartbeat", ("NoSuchSender",))
    assert warm._unsupported() == "flwr.supercore.heartbeat has no NoSuchSender"

    from fediot.faces.cli import deploy

    monkeypatch.setattr(warm, "UNSUPPORTED", reason)
    assert deploy._warm_available("warm") is False
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "warm worker unavailable (Flower 1.43.0" in lines[0]
    assert "subprocess mode" in lines[0]
    assert deploy._warm_available("subprocess") is False


def test_the_task_api_secret_is_private_and_fresh(tmp_path: Path) -> None:
    home = tmp_path / "client"
    first = warm.write_task_api_secret(home)
    secret = first.read_bytes()
    assert len(secret) == 32 and home.stat().st_mode & 0o777 == 0o700
    assert first.stat().st_mode & 0o777 == 0o600
    assert warm.write_task_api_secret(home).read_bytes() != secret
    command = warm.worker_command("127.0.0.1:9101", first, [1, 2])
    assert secret.hex() not in " ".join(command) and str(first) in command
    assert command[-4:] == ["--watch-pid", "1", "--watch-pid", "2"]


@pytest.mark.slow
def test_two_warm_devices_finish_bit_identical_with_one_worker_each(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path / "certs", [d.uci_id for d in DEVICES_USED])
    config = write_cross_silo_config(tmp_path, len(DEVICES_USED), train={"comm_round": 2})
    port = free_port()
    env = {**os.environ, "COLUMNS": "200"}
    clients = [
        subprocess.Popen(
            [str(FEDIOT), "client", "--device", str(d.uci_id), "--server", f"127.0.0.1:{port}",
             "--root-certificates", str(certs / "ca.crt"),
             "--node-key", str(tls.device_key_paths(certs, d.uci_id)[0]),
             "--port", str(free_port()), "--flwr-home", str(tmp_path / f"client{d.uci_id}"),
             "--wait", "600"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for d in DEVICES_USED
    ]
    try:
        server = subprocess.run(
            [str(FEDIOT), "server", "--config", str(config), "--port", str(port),
             "--certificates", str(certs), "--flwr-home", str(tmp_path / "server"),
             "--wait", "300", "--timeout", "900"],
            capture_output=True, text=True, timeout=1000, check=False,
            env={**deployment.flower_env(tmp_path / "server"), "COLUMNS": "160"})
        assert all(client.poll() is None for client in clients)  # devices outlive the run
        family = [pid for client in clients for pid in deployment.descendants(client.pid)]
    finally:
        for client in clients:
            deployment.stop_command(client)
    outputs = [client.communicate() for client in clients]
    assert server.returncode == 0, server.stdout + server.stderr
    assert "finished:completed" in server.stdout
    for client, (out, err) in zip(clients, outputs, strict=True):
        assert "warm worker" in out, out + err
        assert client.returncode == 0, out + err
    leftover = [pid for pid in family if Path(f"/proc/{pid}").exists()
                and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not leftover, f"processes left behind: {leftover}"

    for d in DEVICES_USED:
        home = tmp_path / f"client{d.uci_id}"
        assert home.stat().st_mode & 0o777 == 0o700
        assert (home / warm.SECRET_FILE).stat().st_mode & 0o777 == 0o600
        log = (home / "logs" / f"worker-{deployment.safe_name(d.name)}.log").read_text()
        tasks = [m.groups() for m in map(TASK_LINE.match, log.splitlines()) if m]
        # identify, scaler, 2 × train, threshold, evaluate: each once, all in one process
        assert len(tasks) >= 6, log
        assert {status for *_, status, _ in tasks} == {"completed"}, log
        assert len({pid for _, _, pid, _, _ in tasks}) == 1, log
        assert sum(kind == "train" for _, kind, *_ in tasks) == 2, log
        supernode_log = (home / "logs" / f"supernode-{deployment.safe_name(d.name)}.log")
        assert "Starting Flower SuperExec" not in supernode_log.read_text()

    deployed = np.load(next((tmp_path / "runs").glob("*/model/weights.npz")))
    in_process = run_federated(load_config(config).with_overrides({
        "common_args.training_type": "simulation",
        "tracking_args.log_file_dir": str(tmp_path / "runs-inprocess")}))
    for i, weights in enumerate(in_process.model.weights):
        np.testing.assert_array_equal(deployed[f"w{i}"], weights)


def _workers(pid: int) -> list[int]:
    """The warm worker processes below ``pid``."""
    found = []
    for child in deployment.descendants(pid):
        try:
            command = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if warm.__name__.encode() in command:
            found.append(child)
    return found


@pytest.mark.slow
def test_a_killed_worker_is_started_again_and_everything_stops_with_the_client(
    tmp_path: Path,
) -> None:
    port = free_port()
    link = deployment.superlink(tmp_path / "server", port).start()
    client = subprocess.Popen(
        [str(FEDIOT), "client", "--device", "1", "--server", f"127.0.0.1:{port}",
         "--insecure", "--port", str(free_port()), "--flwr-home", str(tmp_path / "client"),
         "--wait", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"})
    try:
        deadline = time.monotonic() + 120
        while not (first := _workers(client.pid)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(first) == 1, "no warm worker started"
        os.kill(first[0], signal.SIGKILL)
        while (not (second := _workers(client.pid)) or second == first) \
                and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(second) == 1 and second != first
        assert client.poll() is None
        family = deployment.descendants(client.pid)
    finally:
        deployment.stop_command(client)
        link.stop()
    out, err = client.communicate()
    assert client.returncode == 0, out + err
    assert "the warm worker stopped (exit code -9); starting it again (1/3)" in out
    time.sleep(1)
    assert not [pid for pid in family if Path(f"/proc/{pid}").exists()
                and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]


class _MessagesLater:
    """A stand-in for Flower's runtime client: no message for the first ``empty`` calls."""

    def __init__(self, empty: int) -> None:
        self.empty, self.calls = empty, 0

    def PullMessages(self, request: object) -> SimpleNamespace:  # noqa: N802 - Flower's name
        self.calls += 1
        return SimpleNamespace(messages_list=[] if self.calls <= self.empty else ["message"])

    def PullObject(self, request: object) -> str:  # noqa: N802 - Flower's name
        return "object"


def test_a_task_waits_for_its_message_the_supernode_stores_after_the_task() -> None:
    # Flower creates the task before it stores the message: a fast worker can ask in between
    client = _MessagesLater(empty=3)
    patient = warm.PatientRuntimeClient(client, wait_seconds=10)
    assert patient.PullMessages(None).messages_list == ["message"]
    assert client.calls == 4
    assert patient.PullObject(None) == "object"  # every other call passes through


def test_a_message_that_never_comes_ends_the_wait() -> None:
    client = _MessagesLater(empty=10**9)
    assert warm.PatientRuntimeClient(client, wait_seconds=0.2).PullMessages(None) \
        .messages_list == []
