"""TLS and SuperNode authentication of a real Flower deployment, on loopback.

Certificates and keys are made with FedIoT's own commands (``fediot certs``,
``scripts/make-certs.sh``). One deployment (SuperLink + two admitted SuperNodes + one SuperNode
whose key was never admitted) serves the two deployment tests; every process is ours, with its
own ports and FLWR_HOME, and is stopped by its PID. The refusals need no process at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from federated_data import write_cross_silo_config
from fediot.core.catalog import DEVICES
from fediot.core.errors import FediotError
from fediot.engines.flower import certificates as tls
from fediot.engines.flower import deployment
from ports import free_port

FEDIOT = Path(sys.executable).with_name("fediot")
REPO = Path(__file__).resolve().parents[2]
ADMITTED = DEVICES[:2]
ROGUE = DEVICES[2]


def fediot(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(FEDIOT), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, "COLUMNS": "200"})


def assert_one_error_line(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def write_config(tmp: Path, n_devices: int, rounds: int) -> Path:
    return write_cross_silo_config(tmp, n_devices, train={"comm_round": rounds})


# --- certificates and keys ----------------------------------------------------------------------


@pytest.mark.slow
def test_make_certs_writes_a_ca_a_server_certificate_and_a_key_pair_per_device(
    tmp_path: Path,
) -> None:
    out = tmp_path / "certs"
    script = [str(REPO / "scripts" / "make-certs.sh"), str(out), "192.0.2.10", "myserver.lan"]
    env = {**os.environ, "FEDIOT": str(FEDIOT)}
    done = subprocess.run(script, capture_output=True, text=True, timeout=300, env=env,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    server = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(map(str, names.get_values_for_type(x509.DNSName))) == {"myserver.lan", "localhost"}
    assert set(map(str, names.get_values_for_type(x509.IPAddress))) == {
        "192.0.2.10", "127.0.0.1", "::1"}
    for private in ["ca.key", "server.key", *(f"devices/device-{d.uci_id}.key" for d in DEVICES)]:
        assert (out / private).stat().st_mode & 0o777 == 0o600, private
    assert (out / ".gitignore").read_text().splitlines()[-1] == "*"
    assert not list(out.rglob("*.tmp"))

    # Flower's own readers accept the device keys (what `flwr supernode register` and
    # `flower-supernode --auth-supernode-private-key` load)
    from flwr.cli.supernode.register import try_load_public_key
    for device in DEVICES:
        private_path, public_path = tls.device_key_paths(out, device.uci_id)
        assert try_load_public_key(public_path)
        key = serialization.load_ssh_private_key(private_path.read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)

    # a second run re-issues the server certificate, keeps the CA and every device key
    before = {p: p.read_bytes() for p in [out / "ca.crt", out / "ca.key",
                                          *(out / "devices").iterdir()]}
    again = subprocess.run([*script[:2], "otherhost"], capture_output=True, text=True,
                           timeout=300, env=env, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert all(p.read_bytes() == data for p, data in before.items())
    reissued = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    reissued.verify_directly_issued_by(ca)
    assert "otherhost" in str(reissued.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value)


def test_a_ca_or_device_key_is_replaced_only_when_forced(tmp_path: Path) -> None:
    tls.create_ca(tmp_path)
    tls.create_device_key(tmp_path, 1)
    ca, key = (tmp_path / "ca.crt").read_bytes(), (tmp_path / "devices/device-1.key").read_bytes()
    with pytest.raises(FediotError, match=r"ca\.key exists"):
        tls.create_ca(tmp_path)
    with pytest.raises(FediotError, match=r"device-1\.key exists"):
        tls.create_device_key(tmp_path, 1)
    assert (tmp_path / "ca.crt").read_bytes() == ca
    tls.create_ca(tmp_path, overwrite=True)
    tls.create_device_key(tmp_path, 1, overwrite=True)
    assert (tmp_path / "ca.crt").read_bytes() != ca
    assert (tmp_path / "devices/device-1.key").read_bytes() != key
    with pytest.raises(FediotError, match="no N-BaIoT device 10"):
        tls.create_device_key(tmp_path, 10)


def test_the_server_checks_its_certificates_before_starting(tmp_path: Path) -> None:
    good, other = tmp_path / "good", tmp_path / "other"
    for folder in (good, other):
        tls.create_ca(folder)
        tls.create_server_certificate(folder, ["myserver.lan"])
        tls.create_device_key(folder, 1)
    loaded = tls.ServerSecurity.load(good, "myserver.lan")
    assert loaded.node_public_keys == (good / "devices" / "device-1.pub",)
    assert tls.ServerSecurity.load(good, "0.0.0.0").certificate == good / "server.pem"
    with pytest.raises(FediotError, match=r"does not name 192\.0\.2\.1"):
        tls.ServerSecurity.load(good, "192.0.2.1")
    (good / "server.pem").write_bytes((other / "server.pem").read_bytes())
    with pytest.raises(FediotError, match="is not signed by"):
        tls.ServerSecurity.load(good, "myserver.lan")
    with pytest.raises(FediotError, match="no device public keys"):
        tls.ServerSecurity.load(other, "myserver.lan", node_keys=tmp_path / "none")
    (other / "devices" / "device-1.key").chmod(0o644)
    with pytest.raises(FediotError, match="readable by others"):
        tls.NodeSecurity.load(other / "ca.crt", other / "devices" / "device-1.key")


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "flags", "phrases"), [
    ("0.0.0.0", ["--insecure"], ["0.0.0.0 is not a loopback address", "--insecure"]),
    ("192.0.2.7", ["--insecure"], ["192.0.2.7 is not a loopback address", "--insecure"]),
    ("0.0.0.0", [], ["0.0.0.0 is not a loopback address", "no server certificate"]),
    ("myserver.lan", [], ["myserver.lan is not a loopback address", "no server certificate"]),
    ("127.0.0.1", [], ["needs TLS unless --insecure", "no server certificate"]),
])
def test_the_server_refuses_plain_http_or_missing_certificates_off_loopback(
    tmp_path: Path, host: str, flags: list[str], phrases: list[str]
) -> None:
    config = write_config(tmp_path, n_devices=1, rounds=1)
    done = fediot("server", "--config", config, "--host", host, "--certificates",
                  tmp_path / "no-certs", "--flwr-home", tmp_path / "home", *flags)
    assert_one_error_line(done, *phrases)
    assert not (tmp_path / "home").exists()  # refused before anything started


@pytest.mark.slow
def test_a_device_refuses_plain_http_off_loopback_and_needs_the_ca(tmp_path: Path) -> None:
    done = fediot("client", "--device", "1", "--server", "192.0.2.7:9092", "--insecure",
                  "--flwr-home", tmp_path / "home")
    assert_one_error_line(done, "192.0.2.7 is not a loopback address")
    done = fediot("client", "--device", "1", "--server", "192.0.2.7:9092",
                  "--root-certificates", tmp_path / "ca.crt", "--flwr-home", tmp_path / "home")
    assert_one_error_line(done, "no CA certificate")
    assert not (tmp_path / "home").exists()


# --- a secure deployment ------------------------------------------------------------------------


@dataclass
class SecureRun:
    server: subprocess.CompletedProcess[str]
    rogue: subprocess.CompletedProcess[str]
    rogue_key: Path
    superlink_log: str
    rogue_log: str
    results: dict[str, object]
    metrics: list[str]


def test_a_device_reads_the_server_sent_configuration_safely() -> None:
    """config-json comes over the network: an alias bomb, a NUL or a deep nesting is one
    ConfigError on the device, never a hang (the refusal takes milliseconds)."""
    from flwr.app import Context, RecordDict

    from fediot.core.config import ConfigError
    from fediot.engines.flower.apps import _config_from

    def context(text: str) -> Context:
        return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(),
                       run_config={"config-json": text})

    assert _config_from(context("train_args: {epochs: 2}"), None).train_args.epochs == 2
    for text, message in [
        ("a: &a [x, x]\nb: &b [*a, *a]\ntrain_args: *b\n", "line 2, column 8: alias *a"),
        ("train_args: {run: a\x00b}", "line 1: NUL byte"),
        ("[" * 5000 + "]" * 5000, "nested more than 64 levels deep"),
        ("train_args: {batch_size: 1.0e+20}", "train_args.batch_size: expected int"),
    ]:
        with pytest.raises(ConfigError) as caught:
            _config_from(context(text), None)
        assert str(caught.value).startswith("run config config-json: ")
        assert message in str(caught.value), str(caught.value)


@pytest.fixture(scope="module")
def secure_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRun]:
    tmp = tmp_path_factory.mktemp("secure")
    certs, rogue_certs = tmp / "certs", tmp / "rogue-certs"
    commands: list[list[str | Path]] = [
        ["ca", "--dir", certs], ["server", "--dir", certs, "--host", "127.0.0.1"],
        ["device", *(str(d.uci_id) for d in ADMITTED), "--dir", certs],
        ["device", str(ROGUE.uci_id), "--dir", rogue_certs]]
    for args in commands:
        made = fediot("certs", *args)
        assert made.returncode == 0, made.stdout + made.stderr
    config = write_config(tmp, n_devices=len(ADMITTED), rounds=1)
    port = free_port()
    address = f"127.0.0.1:{port}"
    nodes = [
        deployment.supernode(
            tmp / f"node{d.uci_id}", address, d.name, free_port(),
            security=tls.NodeSecurity.load(
                certs / "ca.crt", tls.device_key_paths(certs, d.uci_id)[0]),
            max_wait_seconds=600).start()
        for d in ADMITTED
    ]
    server_out, server_err = (tmp / "server.out").open("w+"), (tmp / "server.err").open("w+")
    server = subprocess.Popen(
        [str(FEDIOT), "server", "--config", str(config), "--port", str(port),
         "--certificates", str(certs), "--flwr-home", str(tmp / "server"), "--wait", "300",
         "--timeout", "900"],
        stdout=server_out, stderr=server_err, text=True,
        env={**deployment.flower_env(tmp / "server"), "COLUMNS": "160"})
    rogue_key = tls.device_key_paths(rogue_certs, ROGUE.uci_id)[0]
    rogue: subprocess.Popen[str] | None = None
    try:
        # the rogue device knocks once the real SuperLink listens (after the enrolment)
        deadline = time.monotonic() + 300
        while server.poll() is None and time.monotonic() < deadline:
            try:
                deployment.wait_for_port("127.0.0.1", port, 1, "the SuperLink")
                break
            except FediotError:
                continue
        assert server.poll() is None, server_err.name
        rogue = subprocess.Popen(
            [str(FEDIOT), "client", "--device", str(ROGUE.uci_id), "--server", address,
             "--root-certificates", str(certs / "ca.crt"), "--node-key", str(rogue_key),
             "--port", str(free_port()), "--flwr-home", str(tmp / "rogue"),
             "--wait", "300"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COLUMNS": "200"})
        rogue_out, rogue_err = rogue.communicate(timeout=300)
        server.wait(timeout=1200)
        alive_after_run = [node.alive() for node in nodes]
    finally:
        if rogue is not None:
            deployment.stop_command(rogue)
        deployment.stop_command(server)
        for node in nodes:
            node.stop()
    assert alive_after_run == [True, True]  # admitted devices outlive the run
    assert not any(node.alive() for node in nodes)
    server_out.seek(0)
    server_err.seek(0)
    runs = tmp / "runs"
    results_path = next(runs.glob("*/results.json"), None)
    metrics_path = next(runs.glob("*/metrics.jsonl"), None)
    yield SecureRun(
        server=subprocess.CompletedProcess(server.args, server.returncode, server_out.read(),
                                           server_err.read()),
        rogue=subprocess.CompletedProcess(rogue.args, rogue.returncode, rogue_out, rogue_err),
        rogue_key=rogue_key,
        superlink_log=(tmp / "server" / "logs" / "superlink.log").read_text(errors="replace"),
        rogue_log="".join(p.read_text(errors="replace")
                          for p in (tmp / "rogue" / "logs").glob("supernode-*.log")),
        results=json.loads(results_path.read_text()) if results_path else {},
        metrics=metrics_path.read_text().splitlines() if metrics_path else [],
    )
    server_out.close()
    server_err.close()


@pytest.mark.slow
def test_tls_and_node_authentication_complete_a_run_of_the_admitted_devices(
    secure_run: SecureRun,
) -> None:
    server = secure_run.server
    assert server.returncode == 0, server.stdout + server.stderr
    assert f"admitted {len(ADMITTED)} device keys" in server.stdout
    assert "TLS + node authentication" in server.stdout
    assert "finished:completed" in server.stdout
    assert "Uvicorn running on https://127.0.0.1:" in secure_run.superlink_log
    evaluation = secure_run.results["evaluation"]
    assert isinstance(evaluation, dict)
    assert set(evaluation["devices"]) == {d.name for d in ADMITTED}
    assert {json.loads(line)["round"] for line in secure_run.metrics} == {1}


@pytest.mark.slow
def test_a_device_whose_key_was_not_admitted_is_refused(secure_run: SecureRun) -> None:
    rogue = secure_run.rogue
    assert rogue.returncode == 1, rogue.stdout + rogue.stderr
    assert f"refused this device's key {secure_run.rogue_key}" in rogue.stderr
    assert "Failed to activate SuperNode" in rogue.stderr
    assert "Failed to activate SuperNode" in secure_run.rogue_log
    # the SuperLink names the refused key: the rogue's own public key
    key = serialization.load_ssh_private_key(secure_run.rogue_key.read_bytes(), None)
    pem_lines = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode().splitlines()
    refusals = [line for line in secure_run.superlink_log.splitlines()
                if "No SuperNode found with the given public key" in line]
    assert refusals and all(pem_lines[1] in line for line in refusals)
    activated = {line.rsplit("node_id=", 1)[1].strip() for line in
                 secure_run.superlink_log.splitlines() if "[Fleet.ActivateNode] Activated" in line}
    assert len(activated) == len(ADMITTED)
    evaluation = secure_run.results["evaluation"]
    assert isinstance(evaluation, dict)
    assert ROGUE.name not in evaluation["devices"]
