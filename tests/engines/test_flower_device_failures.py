"""Devices that explain themselves: ``fediot client`` against real SuperLinks on loopback.

A device refused (its key is not admitted), one whose CA did not sign the server's certificate,
one speaking plain HTTP to the TLS port and one speaking TLS to a plain-HTTP server each exit
with code 1 and ONE error line naming the cause read from the SuperNode's log (or, for plain
HTTP, from asking the server). A device dropped by a new server session joins again while its
key is admitted, and exits with the refusal once it is not. Every process is ours, with its own
ports and FLWR_HOME, and is stopped by its PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fediot.core.catalog import DEVICES
from fediot.core.errors import FediotError
from fediot.engines.flower import certificates as tls
from fediot.engines.flower import deployment
from fediot.engines.flower.device_log import Failure, diagnose
from ports import free_port

FEDIOT = Path(sys.executable).with_name("fediot")
ADMITTED = DEVICES[:2]
ROGUE = DEVICES[2]


@dataclass
class Keys:
    certs: Path
    other_ca: Path
    rogue_key: Path


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    tmp = tmp_path_factory.mktemp("keys")
    certs, other, rogue = tmp / "certs", tmp / "other", tmp / "rogue"
    tls.create_ca(certs)
    tls.create_server_certificate(certs, ["127.0.0.1"])
    for device in ADMITTED:
        tls.create_device_key(certs, device.uci_id)
    tls.create_ca(other)
    tls.create_device_key(rogue, ROGUE.uci_id)
    return Keys(certs, other / "ca.crt", tls.device_key_paths(rogue, ROGUE.uci_id)[0])


def start_superlink(home: Path, port: int, security: tls.ServerSecurity | None
                    ) -> deployment.FlowerProcess:
    deployment.reset_state(home)
    if security is not None:
        deployment.enrol_nodes(home, security)
    link = deployment.superlink(home, port, security=security).start()
    deployment.wait_for_port("127.0.0.1", port, 60, "the SuperLink")
    return link


@pytest.fixture(scope="module")
def tls_superlink(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    link = start_superlink(tmp_path_factory.mktemp("tls-server"), port,
                           tls.ServerSecurity.load(keys.certs, "127.0.0.1"))
    try:
        yield port
    finally:
        link.stop()


def client_args(device: int, port: int, home: Path, *extra: str | Path) -> list[str]:
    return [str(FEDIOT), "client", "--device", str(device), "--server", f"127.0.0.1:{port}",
            "--port", str(free_port()), "--flwr-home", str(home), "--wait", "120",
            *map(str, extra)]


def run_client(*args: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                          check=False, env={**os.environ, "COLUMNS": "400"})
    return done, time.monotonic() - started


def the_one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.mark.slow
def test_a_device_whose_key_is_not_admitted_says_it_was_refused(
    keys: Keys, tls_superlink: int, tmp_path: Path
) -> None:
    done, _ = run_client(*client_args(ROGUE.uci_id, tls_superlink, tmp_path / "home",
                                      "--root-certificates", keys.certs / "ca.crt",
                                      "--node-key", keys.rogue_key))
    line = the_one_error_line(done)
    assert f"refused this device's key {keys.rogue_key}" in line, line
    assert '"[code: 2004] Failed to activate SuperNode."' in line, line
    assert "restart the server" in line


@pytest.mark.slow
def test_a_device_with_the_wrong_ca_names_the_certificate_failure(
    keys: Keys, tls_superlink: int, tmp_path: Path
) -> None:
    key = tls.device_key_paths(keys.certs, ADMITTED[0].uci_id)[0]
    done, _ = run_client(*client_args(ADMITTED[0].uci_id, tls_superlink, tmp_path / "home",
                                      "--root-certificates", keys.other_ca, "--node-key", key))
    line = the_one_error_line(done)
    assert f"certificate failed verification against {keys.other_ca}" in line, line
    assert "CERTIFICATE_VERIFY_FAILED" in line and "--root-certificates" in line


@pytest.mark.slow
def test_plain_http_to_the_tls_port_stops_at_once_and_says_so(
    tls_superlink: int, tmp_path: Path
) -> None:
    done, seconds = run_client(*client_args(ADMITTED[0].uci_id, tls_superlink,
                                            tmp_path / "home", "--insecure"))
    line = the_one_error_line(done.__class__(done.args, done.returncode, done.stdout,
                                             _without_insecure_warning(done.stderr)))
    assert "speaks TLS but this device uses plain HTTP (--insecure)" in line, line
    assert seconds < 60  # not the --wait of 120 s (an hour by default)


@pytest.mark.slow
def test_tls_to_a_plain_http_server_says_the_server_does_not_speak_tls(
    keys: Keys, tmp_path: Path
) -> None:
    port = free_port()
    link = start_superlink(tmp_path / "server", port, None)
    try:
        key = tls.device_key_paths(keys.certs, ADMITTED[0].uci_id)[0]
        done, _ = run_client(*client_args(ADMITTED[0].uci_id, port, tmp_path / "home",
                                          "--root-certificates", keys.certs / "ca.crt",
                                          "--node-key", key))
    finally:
        link.stop()
    line = the_one_error_line(done)
    assert f"127.0.0.1:{port} does not speak TLS" in line, line


def _without_insecure_warning(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines()
                     if "WARNING: --insecure" not in line)


def _wait_for(predicate: object, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_a_dropped_device_joins_the_new_session_and_exits_once_refused(
    keys: Keys, tmp_path: Path
) -> None:
    device = ADMITTED[0]
    port = free_port()
    server_home = tmp_path / "server"
    security = tls.ServerSecurity.load(keys.certs, "127.0.0.1")
    link = start_superlink(server_home, port, security)
    home = tmp_path / "home"
    node_log = home / "logs" / f"supernode-{deployment.safe_name(device.name)}.log"
    key = tls.device_key_paths(keys.certs, device.uci_id)[0]
    out, err = (tmp_path / "client.out").open("w+"), (tmp_path / "client.err").open("w+")
    client = subprocess.Popen(
        client_args(device.uci_id, port, home, "--root-certificates", keys.certs / "ca.crt",
                    "--node-key", key),
        stdout=out, stderr=err, text=True, env={**os.environ, "COLUMNS": "400"})

    def joined(times: int) -> bool:
        return node_log.exists() and node_log.read_text().count("SuperNode ID:") >= times

    try:
        _wait_for(lambda: joined(1), "the device to join")
        # a new server session that still admits the key: the device joins again
        link.stop()
        link = start_superlink(server_home, port, security)
        _wait_for(lambda: joined(2), "the device to join the new session")
        assert client.poll() is None
        out.seek(0)
        assert "dropped this device (HTTP 401" in out.read()
        assert "joining again" in Path(out.name).read_text()
        # a new session that no longer admits it: the device exits with the refusal
        link.stop()
        only_other = tmp_path / "admitted"
        only_other.mkdir()
        public = tls.device_key_paths(keys.certs, ADMITTED[1].uci_id)[1]
        (only_other / public.name).write_bytes(public.read_bytes())
        link = start_superlink(server_home, port,
                               tls.ServerSecurity.load(keys.certs, "127.0.0.1", only_other))
        client.wait(timeout=180)
    except (AssertionError, FediotError, subprocess.TimeoutExpired):
        out.seek(0)
        err.seek(0)
        raise AssertionError(f"client output:\n{out.read()}\n{err.read()}\n"
                             f"SuperNode log:\n{node_log.read_text()[-3000:]}") from None
    finally:
        if client.poll() is None:
            client.send_signal(signal.SIGTERM)
            client.wait(timeout=60)
        link.stop()
    err.seek(0)
    out.seek(0)
    line = the_one_error_line(subprocess.CompletedProcess([], client.returncode, out.read(),
                                                          err.read()))
    assert f"refused this device's key {key}" in line, line
    assert "Failed to activate SuperNode" in line


def test_the_log_reader_tells_each_cause_apart() -> None:
    failed = "\x1b[91mERROR \x1b[0m:     Exit Code: 305\n" \
             "Failed to initialize the connection to the SuperLink.\n{}\n" \
             "The SuperNode could not establish a connection to the SuperLink.\n"
    cases = {
        "[code: 2004] Failed to activate SuperNode.": Failure.REFUSED,
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local "
        "issuer certificate (_ssl.c:1006)": Failure.CERTIFICATE,
        "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)": Failure.NOT_TLS,
        "[code: 9] something else": Failure.OTHER,
    }
    for detail, failure in cases.items():
        found = diagnose(failed.format(detail))
        assert found is not None and (found.failure, found.detail) == (failure, detail)
    dropped = diagnose("INFO : SuperNode ID: 7\nhttpx.HTTPStatusError: Client error "
                       "'401 Unauthorized' for url 'https://127.0.0.1:1/v1/fleet/x'\n")
    assert dropped is not None and dropped.failure is Failure.DROPPED
    assert diagnose("WARNING : Connection attempt failed, retrying in 0.36 seconds\n") is None
