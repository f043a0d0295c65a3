"""Faults in a real loopback deployment: a device killed mid-run, and a server restarted
(stopped, or crashed with TLS on).

Devices are SuperNode processes we start and kill by PID; the server is ``fediot server``
(``--insecure`` on loopback, or TLS with device keys). Rounds are read from the run folder
the ServerApp writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest

from federated_data import write_cross_silo_config
from fediot.core.catalog import DEVICES
from fediot.core.config import load_config
from fediot.engines.flower import certificates as tls
from fediot.engines.flower import deployment
from fediot.engines.simulation import run_federated
from ports import free_port

FEDIOT = Path(sys.executable).with_name("fediot")


def write_config(tmp_path: Path, **train: object) -> Path:
    return write_cross_silo_config(tmp_path, 3, train=train)


def rounds_done(runs: Path) -> list[dict[str, object]]:
    files = list(runs.glob("*/metrics.jsonl"))
    if not files:
        return []
    return [json.loads(line) for line in files[0].read_text().splitlines() if line]


def start_server(config: Path, port: int, home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(FEDIOT), "server", "--config", str(config), "--port", str(port), "--insecure",
         "--flwr-home", str(home), "--wait", "120", "--timeout", "900"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**deployment.flower_env(home), "COLUMNS": "160"},
    )


def start_nodes(tmp_path: Path, port: int) -> dict[str, deployment.FlowerProcess]:
    """One running SuperNode for each of the first three devices, by device name."""
    return {d.name: deployment.supernode(tmp_path / f"node{d.uci_id}", f"127.0.0.1:{port}",
                                         d.name, free_port()).start()
            for d in DEVICES[:3]}


def stop_all(server: subprocess.Popen[str],
             nodes: Iterable[deployment.FlowerProcess | None]) -> None:
    """Stop the server (if still running) and every node this test started."""
    if server.poll() is None:
        server.terminate()
        server.wait(timeout=60)
    for process in nodes:
        if process is not None:
            process.stop()


def wait_until(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(1.0)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_killed_device_is_skipped_and_rejoins_after_restart(tmp_path: Path) -> None:
    config = write_config(tmp_path, comm_round=4, client_num_min_replies=2)
    port = free_port()
    node = start_nodes(tmp_path, port)
    victim = DEVICES[2].name
    server = start_server(config, port, tmp_path / "server")
    restarted = None
    try:
        wait_until(lambda: len(rounds_done(tmp_path / "runs")) >= 1, 600, "round 1")
        node[victim].stop()  # killed mid-run, by its PID
        wait_until(lambda: any(victim not in r["answered"]  # type: ignore[operator]
                               for r in rounds_done(tmp_path / "runs")), 600,
                   "a round completed without the killed device")
        restarted = deployment.supernode(tmp_path / "node3-again", f"127.0.0.1:{port}",
                                         victim, free_port()).start()
        output, _ = server.communicate(timeout=900)
        assert server.returncode == 0, output
    finally:
        stop_all(server, [*node.values(), restarted])
    rounds = rounds_done(tmp_path / "runs")
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    assert victim in rounds[0]["answered"]  # type: ignore[operator]
    assert any(victim not in r["answered"] for r in rounds)  # type: ignore[operator]
    results = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())
    # the restarted device rejoined: it trained again or was at least evaluated
    rejoined = victim in rounds[-1]["answered"] or victim in results["evaluation"]["devices"]
    assert rejoined, (rounds, list(results["evaluation"]["devices"]))


@pytest.mark.slow
def test_a_restarted_server_resumes_at_the_next_round(tmp_path: Path) -> None:
    config = write_config(tmp_path, comm_round=3)
    port = free_port()
    nodes = [deployment.supernode(tmp_path / f"node{d.uci_id}", f"127.0.0.1:{port}", d.name,
                                  free_port(), max_wait_seconds=900).start()
             for d in DEVICES[:3]]
    try:
        first = start_server(config, port, tmp_path / "server")
        wait_until(lambda: len(rounds_done(tmp_path / "runs")) >= 1, 600, "round 1")
        first.terminate()  # the server stops its SuperLink and run on SIGTERM
        first.communicate(timeout=120)
        done = len(rounds_done(tmp_path / "runs"))
        assert 1 <= done < 3
        run = next((tmp_path / "runs").iterdir())
        second = subprocess.run(
            [str(FEDIOT), "server", "--config", str(config), "--port", str(port), "--insecure",
             "--flwr-home", str(tmp_path / "server"), "--wait", "120", "--timeout", "900",
             "--resume", str(run)],
            capture_output=True, text=True, timeout=1000, check=False,
            env={**deployment.flower_env(tmp_path / "server"), "COLUMNS": "160"},
        )
        assert second.returncode == 0, second.stdout + second.stderr
    finally:
        for node in nodes:
            node.stop()
    rounds = [r["round"] for r in rounds_done(tmp_path / "runs")]
    assert rounds == [1, 2, 3]  # no round lost, none run twice
    assert (run / "results.json").is_file()


@pytest.mark.slow
def test_a_crashed_tls_server_resumes_and_ends_as_an_uninterrupted_run(tmp_path: Path) -> None:
    """kill -9 of ``fediot server`` and all its Flower processes mid-run, TLS and device keys
    on: ``--resume`` recognises the registered keys, continues at the next round and reaches
    the global model of an uninterrupted run (the in-process engine's), bit for bit."""
    certs = tmp_path / "certs"
    for args in (["ca"], ["server", "--host", "127.0.0.1"], ["device", "1", "2", "3"]):
        made = subprocess.run([str(FEDIOT), "certs", *args, "--dir", str(certs)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert made.returncode == 0, made.stdout + made.stderr
    config = write_config(tmp_path, comm_round=3)
    port, home = free_port(), tmp_path / "server"
    nodes = [deployment.supernode(
        tmp_path / f"node{d.uci_id}", f"127.0.0.1:{port}", d.name, free_port(),
        security=tls.NodeSecurity.load(certs / "ca.crt",
                                       tls.device_key_paths(certs, d.uci_id)[0]),
        max_wait_seconds=900).start() for d in DEVICES[:3]]
    command = [str(FEDIOT), "server", "--config", str(config), "--port", str(port),
               "--certificates", str(certs), "--flwr-home", str(home), "--wait", "300",
               "--timeout", "900"]
    env = {**deployment.flower_env(home), "COLUMNS": "160"}
    try:
        first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=env)
        try:
            wait_until(lambda: len(rounds_done(tmp_path / "runs")) >= 1, 600, "round 1")
        finally:  # a crash: the server and every process it started, at once, no clean-up
            for pid in [first.pid, *deployment.descendants(first.pid)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            first.wait(timeout=60)
        done = len(rounds_done(tmp_path / "runs"))
        assert 1 <= done < 3
        run = next((tmp_path / "runs").iterdir())
        status = subprocess.run([str(FEDIOT), "status", str(run)], capture_output=True,
                                text=True, timeout=120, check=False, env=env)
        assert ": interrupted," in status.stdout, status.stdout + status.stderr
        second = subprocess.run([*command, "--resume", str(run)], capture_output=True,
                                text=True, timeout=1000, check=False, env=env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "admitted 3 device keys" in second.stdout
    finally:
        for node in nodes:
            node.stop()
    assert [r["round"] for r in rounds_done(tmp_path / "runs")] == [1, 2, 3]
    resumed = np.load(run / "model" / "weights.npz")
    uninterrupted = run_federated(load_config(config).with_overrides({
        "common_args.training_type": "simulation",
        "tracking_args.log_file_dir": str(tmp_path / "runs-inprocess")}))
    for i, weights in enumerate(uninterrupted.model.weights):
        np.testing.assert_array_equal(resumed[f"w{i}"], weights)
