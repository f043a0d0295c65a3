"""A real Flower deployment on this machine or a network: SuperLink, SuperNodes, and a run.

Processes are started with Flower's own commands (``flower-superlink``, ``flower-supernode``,
``flwr run`` / ``flwr ls`` / ``flwr supernode register``), each with its own ``FLWR_HOME`` and
ports, telemetry, update check and runtime dependency installation off, and are stopped by the
PID we started. A run's success is read from its status (``flwr ls --format json``), never from
``flwr run``'s exit code.

Security: see :mod:`fediot.engines.flower.certificates`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.io import atomic_path
from fediot.engines.addresses import is_loopback
from fediot.engines.flower import FLOWER_ENVIRONMENT, TASK_POLL_SECONDS
from fediot.engines.flower.certificates import NodeSecurity, ServerSecurity

TASK_POLL_ENVIRONMENT = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
"""Flower's SuperExec task poll (seconds), inherited by the SuperExec a SuperNode spawns."""

REPO_APP = Path(__file__).resolve().parents[4]
"""The folder whose pyproject.toml declares the Flower app (this repository)."""



def flower_env(flwr_home: Path) -> dict[str, str]:
    """The environment of every Flower process we start."""
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, **FLOWER_ENVIRONMENT, "FLWR_HOME": str(flwr_home),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def _tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


# --- addresses ----------------------------------------------------------------------------------


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) → ``(host, port)``; a clear error otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FediotError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def join_address(host: str, port: int) -> str:
    """``(host, port)`` → ``host:port``, with brackets around an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def require_tls_outside_loopback(host: str, secure: bool) -> None:
    """The rule of every FedIoT connection: no TLS → loopback addresses only."""
    if not secure and not is_loopback(host):
        raise FediotError(
            f"{host} is not a loopback address: --insecure (no TLS, no node authentication) "
            "is only allowed on 127.0.0.1/localhost/::1"
        )


def wait_for_port(host: str, port: int, timeout: float, what: str) -> None:
    """Return once ``host:port`` accepts connections; a clear error after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.settimeout(1.0)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.2)
    raise FediotError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


# --- processes ----------------------------------------------------------------------------------


@dataclass
class FlowerProcess:
    """One started Flower process, stopped by its PID (never by name)."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> FlowerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.args, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise FediotError(f"{self.name} was never started")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``: the process group we started and every
        descendant (Flower starts its ClientApp / SuperExec processes in sessions of their
        own, so the group alone would leave them orphaned)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            family = descendants(self.process.pid)
            _signal_all(self.process.pid, family, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _signal_all(self.process.pid, family, signal.SIGKILL)
                self.process.wait(timeout=timeout)
            deadline = time.monotonic() + timeout
            while any(_alive(pid) for pid in family) and time.monotonic() < deadline:
                time.sleep(0.1)
            _signal_all(None, [pid for pid in family if _alive(pid)], signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


def descendants(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` (from ``/proc``), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    queue = [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # a zombie is gone for our purposes
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal_all(group: int | None, pids: list[int], sig: signal.Signals) -> None:
    if group is not None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def superlink(flwr_home: Path, port: int, *, host: str = "127.0.0.1",
              security: ServerSecurity | None = None, log_name: str = "superlink.log"
              ) -> FlowerProcess:
    """A SuperLink on ``host:port`` (Flower's single HTTP port for nodes and the CLI).

    With ``security``: TLS and node authentication (only registered keys may connect; see
    :func:`enrol_nodes`). Without: plain HTTP, refused unless ``host`` is a loopback address.
    """
    require_tls_outside_loopback(host, security is not None)
    args = [_tool("flower-superlink"), "--disable-runtime-dependency-installation",
            "--host", host, "--port", str(port), "--database", str(flwr_home / "state.db")]
    if security is None:
        args.append("--insecure")
    else:
        args += ["--ssl-ca-certfile", str(security.ca_certificate),
                 "--ssl-certfile", str(security.certificate),
                 "--ssl-keyfile", str(security.private_key), "--enable-supernode-auth"]
    return FlowerProcess("superlink", args, flower_env(flwr_home), flwr_home / "logs" / log_name)


def supernode(flwr_home: Path, superlink_address: str, device: str, port: int, *,
              data_dir: str = "", security: NodeSecurity | None = None,
              max_wait_seconds: float = 300.0,
              task_api_secret: Path | None = None) -> FlowerProcess:
    """A SuperNode serving ``device``; it retries the SuperLink for ``max_wait_seconds``.

    With ``security``: TLS verified against its CA and the device's node key. Without: plain
    HTTP, refused unless the SuperLink's address is a loopback address.

    ``task_api_secret`` (a 0600 file): ``--isolation process``, the SuperNode starts no
    SuperExec and its task API (on 127.0.0.1:``port``) hands tasks only to a runner signing
    with that secret (a warm worker, :mod:`fediot.engines.flower.worker`). Without it Flower's
    own SuperExec starts one ``flwr-clientapp`` process per task, polling every
    :data:`~fediot.engines.flower.TASK_POLL_SECONDS`.
    """
    require_tls_outside_loopback(split_address(superlink_address)[0], security is not None)
    node_config = f'device="{device}"'
    if data_dir:
        node_config += f' data-dir="{data_dir}"'
    args = [_tool("flower-supernode"), "--superlink", superlink_address,
            "--node-config", node_config, "--port", str(port),
            "--max-wait-time", str(max_wait_seconds)]
    if security is None:
        args.append("--insecure")
    else:
        args += ["--root-certificates", str(security.root_certificates),
                 "--auth-supernode-private-key", str(security.private_key)]
    if task_api_secret is not None:
        args += ["--isolation", "process", "--superexec-auth-secret-file", str(task_api_secret)]
    env = {**flower_env(flwr_home), TASK_POLL_ENVIRONMENT: str(TASK_POLL_SECONDS)}
    return FlowerProcess(f"supernode {device}", args, env,
                         flwr_home / "logs" / f"supernode-{safe_name(device)}.log")


def safe_name(device: str) -> str:
    """A device name as it appears in file names (its logs)."""
    return device.replace("#", "-")


def write_federation(flwr_home: Path, name: str, address: str,
                     root_certificates: Path | None = None) -> None:
    """``$FLWR_HOME/config.toml`` naming the SuperLink the ``flwr`` CLI talks to: over TLS
    verified against ``root_certificates``, or plain HTTP (loopback only) when it is None."""
    require_tls_outside_loopback(split_address(address)[0], root_certificates is not None)
    flwr_home.mkdir(parents=True, exist_ok=True)
    text = f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "{address}"\n'
    if root_certificates is None:
        text += "insecure = true\n"
    else:  # a JSON string is a valid TOML basic string
        text += f"insecure = false\nroot-certificates = {json.dumps(str(root_certificates))}\n"
    with atomic_path(flwr_home / "config.toml") as tmp:
        tmp.write_text(text)


def reset_state(flwr_home: Path) -> None:
    """Remove the SuperLink's database so a session starts from an empty node registry."""
    for path in flwr_home.glob("state.db*"):
        path.unlink()


def enrol_nodes(flwr_home: Path, security: ServerSecurity, *, timeout: float = 60.0
                ) -> dict[str, int]:
    """Register ``security.node_public_keys`` in the SuperLink database of ``flwr_home``, before
    any device can reach the SuperLink; returns ``{public key file name: node id}``.

    Flower registers keys through a running SuperLink (``flwr supernode register``), and a
    SuperNode whose key is not yet registered exits at once. So a SuperLink on a private
    loopback port opens the same database, takes the registrations and stops; the real one
    opens it afterwards with the registry complete.
    """
    port = free_port()
    federation = "fediot-enrol"
    address = join_address("127.0.0.1", port)
    link = superlink(flwr_home, port, security=security, log_name="enrol.log").start()
    registering: dict[Path, subprocess.Popen[str]] = {}
    registered: dict[str, int] = {}
    try:
        wait_for_port("127.0.0.1", port, timeout, "the enrolment SuperLink")
        enrol_home = flwr_home / "enrol"
        write_federation(enrol_home, federation, address, security.ca_certificate)
        for key in security.node_public_keys:  # side by side: each mostly imports Flower
            registering[key] = subprocess.Popen(
                [_tool("flwr"), "supernode", "register", str(key), federation,
                 "--name", key.stem, "--format", "json"],
                env=flower_env(enrol_home), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
        for key, process in registering.items():
            try:
                stdout, stderr = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                raise FediotError(f"{key}: flwr supernode register took over "
                                  f"{timeout:.0f} s") from None
            registered[key.name] = _registered_node_id(process.returncode, stdout, stderr, key)
    finally:
        for process in registering.values():
            if process.poll() is None:
                process.kill()
                process.wait()
        link.stop()
    return registered


def _registered_node_id(returncode: int, stdout: str, stderr: str, key: Path) -> int:
    start = stdout.find("{")
    try:
        payload = json.loads(stdout[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        payload = {}
    if returncode != 0 or not payload.get("success"):
        detail = payload.get("error-message") or (stdout + stderr).strip()[-300:]
        raise FediotError(f"{key}: flwr supernode register failed: {detail}")
    return int(payload["node-id"])


def _yaml_safe_json(data: Any) -> str:
    """JSON whose floats a YAML 1.1 reader also reads as floats: ``1e-05`` (JSON) is text to
    YAML, ``1.0e-05`` is a float (the ClientApp and ServerApp read ``config-json`` as YAML)."""
    marks: dict[str, str] = {}

    def walk(value: Any) -> Any:
        if isinstance(value, float):
            token = repr(value)
            mantissa, e, exponent = token.partition("e")
            if e and "." not in mantissa:
                token = f"{mantissa}.0e{exponent}"
            mark = f"\0float{len(marks)}\0"
            marks[mark] = token
            return mark
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [walk(v) for v in value]
        return value

    text = json.dumps(walk(data), separators=(",", ":"))
    for mark, token in marks.items():
        text = text.replace(json.dumps(mark), token)
    return text


def run_config_argument(config: Config, wait_seconds: float,
                        resume_from: Path | None = None) -> str:
    """``--run-config`` value carrying the whole checked configuration as one JSON line (and
    the run folder to resume, if any)."""
    text = _yaml_safe_json(config.to_dict())
    resume = json.dumps(str(resume_from.resolve())) if resume_from else '""'
    if "'" in text:
        raise FediotError("the configuration may not contain a single quote (')")
    return f"config-json='{text}' wait-seconds={wait_seconds} resume-from={resume}"


def submit_run(flwr_home: Path, federation: str, config: Config, *, wait_seconds: float,
               timeout: float, log_path: Path, resume_from: Path | None = None
               ) -> dict[str, Any]:
    """Launch the run, follow it to its end, and return its ``flwr ls`` status record."""
    env = flower_env(flwr_home)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            subprocess.run(
                [_tool("flwr"), "run", str(REPO_APP), federation, "--run-config",
                 run_config_argument(config, wait_seconds, resume_from), "--stream"],
                env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise FediotError(f"the run did not finish within {timeout:.0f} s "
                              f"(log: {log_path})") from None
    return latest_run_status(flwr_home, federation)


def latest_run_status(flwr_home: Path, federation: str) -> dict[str, Any]:
    """The newest run's record from ``flwr ls --format json``."""
    listed = subprocess.run([_tool("flwr"), "ls", federation, "--format", "json"],
                            env=flower_env(flwr_home), capture_output=True, text=True,
                            timeout=60, check=False)
    try:
        payload = json.loads(listed.stdout)
    except json.JSONDecodeError:
        raise FediotError(f"flwr ls gave no JSON: {listed.stdout[-300:]}") from None
    if not payload.get("success"):
        raise FediotError(f"flwr ls failed: {payload.get('error-message', '?')}")
    runs = payload.get("runs") or []
    if not runs:
        raise FediotError("the SuperLink knows no run")
    return dict(max(runs, key=lambda r: str(r.get("pending-at", ""))))
