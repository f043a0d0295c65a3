"""A crash-safe ``fediot server``: one-process key enrolment that recognises registered keys,
one session per Flower home, Flower processes that die with the server, private state.

Real SuperLinks and real ``fediot server`` processes on loopback; every process a test starts
is stopped by its PID.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from federated_data import write_cross_silo_config
from fediot.core.catalog import DEVICES
from fediot.core.errors import FediotError
from fediot.core.liveness import ProcessIdentity, pid_alive
from fediot.engines.flower import certificates as tls
from fediot.engines.flower import deployment, session
from fediot.engines.run_folder import RunView
from ports import free_port

FEDIOT = Path(sys.executable).with_name("fediot")


def fediot(*args: str | Path, home: Path, timeout: float = 300
           ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FEDIOT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False,
                          env={**deployment.flower_env(home), "COLUMNS": "200"})


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("certs") / "certs"
    for args in (["ca"], ["server", "--host", "127.0.0.1"], ["device", "1", "2", "3"]):
        made = fediot("certs", *args, "--dir", folder, home=folder.parent)
        assert made.returncode == 0, made.stdout + made.stderr
    return folder


@pytest.fixture
def waiting_config(tmp_path: Path) -> Path:
    """A cross-silo configuration of one device and many rounds: its server runs (or waits for
    the device) until a test stops it."""
    return write_cross_silo_config(tmp_path, 1, train={"comm_round": 50})


@pytest.mark.slow
def test_enrolment_registers_each_key_once_and_recognises_it_on_resume(
        certs: Path, tmp_path: Path) -> None:
    home = tmp_path / "server"
    security = tls.ServerSecurity.load(certs, "127.0.0.1", None)
    deployment.protect_state(home)
    first = deployment.enrol_nodes(home, security, timeout=300)
    assert set(first) == {f"device-{n}.pub" for n in (1, 2, 3)}
    assert len(set(first.values())) == 3 and all(first.values())
    # a resumed session enrols again over the same state: the same nodes, no error
    again = deployment.enrol_nodes(home, security, timeout=300)
    assert again == first
    # everything private: the home, its logs, the SuperLink's database, the enrolment home
    assert mode(home) == 0o700
    assert mode(home / "logs") == 0o700 and mode(home / "enrol") == 0o700
    assert mode(home / "state.db") == 0o600
    assert mode(home / "logs" / "enrol.log") == 0o600


@pytest.mark.slow
def test_an_enrolment_past_its_limit_fails_with_one_clear_line(certs: Path,
                                                               tmp_path: Path) -> None:
    security = tls.ServerSecurity.load(certs, "127.0.0.1", None)
    with pytest.raises(FediotError, match=r"took over 0 s .*raise --enrol-timeout"):
        deployment.enrol_nodes(tmp_path / "server", security, timeout=0.01)


def test_an_older_world_readable_state_is_made_private(tmp_path: Path) -> None:
    home = tmp_path / "server"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / "state.db").write_text("")
    (home / "state.db").chmod(0o644)
    deployment.protect_state(home)
    assert mode(home) == 0o700 and mode(home / "state.db") == 0o600


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something else (this test process) listens on."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        yield int(held.getsockname()[1])


def test_a_taken_port_is_refused_naming_the_process_that_holds_it(
        listener: int, waiting_config: Path, tmp_path: Path) -> None:
    assert deployment.listening_pids(listener) == [os.getpid()]
    done = fediot("server", "--config", waiting_config, "--port", listener, "--insecure",
                  "--flwr-home", tmp_path / "server", home=tmp_path / "server", timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: the SuperLink: 127.0.0.1:"), done.stderr
    assert f"is not free: Address already in use (held by pid {os.getpid()})" in lines[-1]
    # the refused session left no lock behind
    assert not (tmp_path / "server" / session.LOCK_NAME).exists()


def test_a_port_answered_by_another_process_is_not_taken_for_our_superlink(
        listener: int, tmp_path: Path) -> None:
    # a process of ours that never listens stands for a SuperLink that could not bind
    home = tmp_path / "device" / "flwr"  # as a device's Flower home: made private
    sleeper = deployment.FlowerProcess(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(60)"],
        deployment.flower_env(home), home / "logs" / "sleeper.log").start()
    try:
        assert mode(home) == 0o700 and mode(home / "logs") == 0o700
        assert mode(home / "logs" / "sleeper.log") == 0o600
        with pytest.raises(FediotError, match=rf"answers from pid {os.getpid()}, not from the "
                                              rf"SuperLink \(pid {sleeper.pid}\)"):
            deployment.wait_for_port("127.0.0.1", listener, 10, "the SuperLink", sleeper)
    finally:
        sleeper.stop()
    # and one that exits says so at once, with the last line of its log
    failing = deployment.FlowerProcess(
        "failing", [sys.executable, "-c", "import sys; sys.exit('address already in use')"],
        dict(os.environ), tmp_path / "logs" / "failing.log").start()
    with pytest.raises(FediotError, match=r"exited \(code 1\) before listening on .*: address "
                                          r"already in use \(log: "):
        deployment.wait_for_port("127.0.0.1", free_port(), 60, "the SuperLink", failing)
    failing.stop()


def test_a_flower_process_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    # a parent (a stand-in for fediot server) starts a FlowerProcess, reports its pid, and is
    # killed with SIGKILL: nothing of it can clean up, the kernel's death signal must
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from fediot.engines.flower.deployment import FlowerProcess\n"
        "child = FlowerProcess('child', [sys.executable, '-c', 'import time; time.sleep(600)'],"
        " {}, Path(sys.argv[1])).start()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n")
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "child.log")],
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert pid_alive(child)
        parent.kill()
        parent.wait(timeout=30)
        wait_until(lambda: not pid_alive(child), 30, "the child to die with its parent")
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)


def start_server(config: Path, port: int, home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(FEDIOT), "server", "--config", str(config), "--port", str(port), "--insecure",
         "--flwr-home", str(home), "--wait", "600", "--timeout", "900"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**deployment.flower_env(home), "COLUMNS": "200"})


def recorded(home: Path, name: str) -> int | None:
    """The pid the session lock of ``home`` records under ``name``, if any yet."""
    try:
        processes = json.loads((home / session.LOCK_NAME).read_text())["processes"]
    except (OSError, ValueError):
        return None
    entry = processes.get(name)
    return int(entry["pid"]) if entry else None


def running_run(runs: Path) -> RunView | None:
    views = [RunView(p.parent) for p in runs.glob("*/status.json")]
    return views[0] if views else None


@pytest.mark.slow
def test_a_crashed_server_takes_its_flower_processes_along_and_the_next_one_starts_clean(
        waiting_config: Path, tmp_path: Path) -> None:
    home, port = tmp_path / "server", free_port()
    device = deployment.supernode(tmp_path / "node", f"127.0.0.1:{port}", DEVICES[0].name,
                                  free_port(), max_wait_seconds=600).start()
    first = start_server(waiting_config, port, home)
    family: list[int] = []
    try:
        # the run is under way: the ServerApp found the device and wrote its run folder
        wait_until(lambda: running_run(tmp_path / "runs") is not None, 300, "the run folder")
        link = recorded(home, "superlink")
        assert link is not None and deployment.listening_pids(port) == [link]
        family = [link, *deployment.descendants(link)]
        assert len(family) >= 3, family  # SuperLink, its SuperExec and the ServerApp
        run = running_run(tmp_path / "runs")
        assert run is not None and (run.status() or {}).get("state") == "running"
        # a second session on the same Flower home is refused while the first lives
        refused = fediot("server", "--config", waiting_config, "--port", free_port(),
                         "--insecure", "--flwr-home", home, home=home, timeout=120)
        assert refused.returncode == 2
        line = refused.stderr.strip().splitlines()[-1]
        assert f"is in use by an earlier server session (fediot server pid {first.pid}" in line
        assert f"superlink pid {link}" in line
        assert f"stop it with `fediot server --stop-stale --flwr-home {home.resolve()}`" in line

        first.send_signal(signal.SIGKILL)  # a crash: nothing of fediot server cleans up
        first.wait(timeout=30)
        wait_until(lambda: not any(pid_alive(pid) for pid in family), 60,
                   f"the Flower processes {family} to die with the server")
        # the run's owner (the ServerApp) is gone: the run reads as interrupted
        status = fediot("status", run.root, home=home, timeout=120)
        assert status.returncode == 0, status.stderr
        assert ": interrupted," in status.stdout, status.stdout

        # the next server finds the port free and the old session dead: it starts its own
        second = start_server(waiting_config, port, home)
        try:
            wait_until(lambda: recorded(home, "superlink") not in (None, link), 300,
                       "the second session's SuperLink")
            new_link = recorded(home, "superlink")
            wait_until(lambda: deployment.listening_pids(port) == [new_link], 120,
                       "the second SuperLink to listen")
            # and --stop-stale stops a live session with everything it started
            new_family = [new_link, *deployment.descendants(new_link)]  # type: ignore[list-item]
            stopped = fediot("server", "--stop-stale", "--flwr-home", home, home=home,
                             timeout=120)
            assert stopped.returncode == 0, stopped.stderr
            assert f"stopped fediot server pid {second.pid}" in stopped.stdout
            second.wait(timeout=60)
            wait_until(lambda: not any(pid_alive(pid) for pid in new_family), 60,
                       "the stopped session's processes to end")
            assert not (home / session.LOCK_NAME).exists()
        finally:
            if second.poll() is None:
                second.kill()
                second.wait()
        nothing = fediot("server", "--stop-stale", "--flwr-home", home, home=home)
        assert nothing.returncode == 0 and "nothing of an earlier session runs" in nothing.stdout
    finally:
        device.stop()
        if first.poll() is None:
            first.kill()
            first.wait()
        for pid in family:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_lock_whose_processes_are_gone_is_replaced_and_released(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead = ProcessIdentity.current().to_dict() | {"pid": int(gone.stdout), "started": "x:1"}
    (tmp_path / session.LOCK_NAME).write_text(json.dumps({"processes": {
        session.SERVER: dead, "superlink": dead}}))
    lock = session.ServerSession.acquire(tmp_path, "stop it")
    assert recorded(tmp_path, session.SERVER) == os.getpid()
    lock.record("superlink", os.getpid())
    assert recorded(tmp_path, "superlink") == os.getpid()
    assert mode(tmp_path) == 0o700
    with pytest.raises(FediotError, match=rf"in use by an earlier server session \(fediot "
                                          rf"server pid {os.getpid()} on .*\): stop it with "
                                          rf"`stop it`"):
        session.ServerSession.acquire(tmp_path, "stop it")
    lock.release()
    assert not (tmp_path / session.LOCK_NAME).exists()


def test_a_lock_that_is_not_one_is_named_in_one_error(tmp_path: Path) -> None:
    for text, message in [("{", "not a FedIoT server lock"),
                          ('{"processes": 3}', "no 'processes'"),
                          ('{"processes": {"superlink": {"pid": "x"}}}',
                           "processes.superlink is not a process identity")]:
        (tmp_path / session.LOCK_NAME).write_text(text)
        with pytest.raises(FediotError, match=message) as caught:
            session.ServerSession.acquire(tmp_path, "stop it")
        assert str(caught.value).startswith(f"{tmp_path / session.LOCK_NAME}: ")
