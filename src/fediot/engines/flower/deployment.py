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
import ctypes
import ctypes.util
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.io import atomic_path
from fediot.core.liveness import pid_alive
from fediot.engines.addresses import is_loopback
from fediot.engines.flower import FLOWER_ENVIRONMENT, TASK_POLL_SECONDS
from fediot.engines.flower.certificates import NodeSecurity, ServerSecurity
from fediot.engines.flower.enrolment import RESULT_MARK

TASK_POLL_ENVIRONMENT = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
"""Flower's SuperExec task poll (seconds), inherited by the SuperExec a SuperNode spawns."""

REPO_APP = Path(__file__).resolve().parents[4]
"""The folder whose pyproject.toml declares the Flower app (this repository)."""

PRIVATE_FOLDER_MODE = 0o700
"""Mode of every Flower state folder we create (FLWR_HOME, its logs): they hold the SuperLink's
database (task tokens, configurations, in-flight messages) and the devices' logs."""

PRIVATE_UMASK = 0o077
"""umask of every Flower process we start, so the files it creates (``state.db``, the
installed app) are readable by their owner only."""

SUPERLINK_WAIT_SECONDS = 120.0
"""Default wait for a started SuperLink to listen (about 1 s idle; far more on a loaded machine)."""

ENROL_TIMEOUT_SECONDS = 300.0
"""Default limit for registering every device key (one process, one key after another)."""

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def private_folder(path: Path) -> Path:
    """``path`` created if missing and set to :data:`PRIVATE_FOLDER_MODE`; returns it."""
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER_MODE)
    path.chmod(PRIVATE_FOLDER_MODE)  # mkdir's mode is masked by the umask, and skips old folders
    return path


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


def wait_for_port(host: str, port: int, timeout: float, what: str,
                  process: FlowerProcess | None = None) -> None:
    """Return once ``host:port`` accepts connections; a clear error after ``timeout``.

    With ``process`` (the one that should listen): an error as soon as it exits, and once the
    port answers, an error unless that process or one of its children is the listener, so an
    orphan of an earlier session holding the port is never taken for it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive():
            raise FediotError(f"{what} exited (code {process.returncode}) before listening on "
                              f"{join_address(host, port)}: {process.last_log_line()}")
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.settimeout(1.0)
            if s.connect_ex((host, port)) == 0:
                break
        time.sleep(0.2)
    else:
        raise FediotError(f"{what} did not listen on {host}:{port} within {timeout:.0f} s")
    if process is None:
        return
    holders = listening_pids(port)
    ours = {process.pid, *descendants(process.pid)}
    if holders and not ours.intersection(holders):
        raise FediotError(f"{join_address(host, port)} answers from pid "
                          f"{', '.join(map(str, holders))}, not from {what} (pid {process.pid})")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def listening_pids(port: int) -> list[int]:
    """PIDs of the processes of this machine holding a socket that listens on TCP ``port`` (any
    address), from ``/proc``; empty where that cannot be seen (no ``/proc``, another user)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                # local address is HEXIP:HEXPORT; state 0A is LISTEN
                if len(fields) > 9 and fields[3] == "0A" and \
                        int(fields[1].rpartition(":")[2], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return []
    found = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):  # gone meanwhile, or another user's process
            if any(str(fd.readlink()) in inodes for fd in fd_dir.iterdir()):
                found.add(int(fd_dir.parent.name))
    return sorted(found)


def require_free_port(host: str, port: int, what: str) -> None:
    """One clear error when ``host:port`` cannot be bound (something listens on it), naming the
    processes that hold it where they can be seen."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the SuperLink binds
        try:
            s.bind((host, port))
            return
        except OSError as error:
            reason = error.strerror or str(error)
    holders = listening_pids(port)
    held = f" (held by pid {', '.join(map(str, holders))})" if holders else ""
    raise FediotError(f"{what}: {join_address(host, port)} is not free: {reason}{held}")


# --- processes ----------------------------------------------------------------------------------


@functools.cache
def _prctl() -> Any:
    """libc's prctl, or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return libc.prctl


def _child_setup(parent: int) -> Any:
    """The ``preexec_fn`` of every Flower process: a private umask, and (Linux) SIGKILL when the
    process that started it dies, so a crashed ``fediot server`` leaves no SuperLink behind.

    Flower's own children need nothing more: the SuperLink starts its SuperExec, and the
    SuperExec each ServerApp, with ``--parent-pid``, and each exits once its parent is gone.
    The kernel sends the death signal when the *thread* that started the process ends, so a
    Flower process is started from a thread that outlives it (the main thread, in FedIoT).
    """
    prctl = _prctl()

    def setup() -> None:
        os.umask(PRIVATE_UMASK)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the parent died before the death signal was armed
                os.kill(os.getpid(), signal.SIGKILL)

    return setup


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
        """Start it in a session of its own, dying with this process (see
        :func:`_child_setup`), its Flower home and log folder private."""
        if "FLWR_HOME" in self.env:
            private_folder(Path(self.env["FLWR_HOME"]))
        private_folder(self.log_path.parent)
        self._log = self.log_path.open("ab")
        self.log_path.chmod(0o600)
        self.process = subprocess.Popen(self.args, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        preexec_fn=_child_setup(os.getpid()))
        return self

    @property
    def pid(self) -> int:
        if self.process is None:
            raise FediotError(f"{self.name} was never started")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def last_log_line(self) -> str:
        """The last non-empty line of its log (why it exited, usually), or a pointer to it."""
        with contextlib.suppress(OSError):
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines()
                     if line.strip()]
            if lines:
                return f"{lines[-1].strip()} (log: {self.log_path})"
        return f"see {self.log_path}"

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``: the process group we started and every
        descendant (Flower starts its ClientApp / SuperExec processes in sessions of their
        own, so the group alone would leave them orphaned)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            terminate_tree(self.process.pid, timeout, group=True)
            self.process.wait(timeout=timeout)  # reaps it (terminate_tree saw it exit)
        if self._log is not None:
            self._log.close()
            self._log = None


def terminate_tree(pid: int, timeout: float = 15.0, *, group: bool = False) -> None:
    """End process ``pid`` and every descendant: SIGTERM, then SIGKILL to those still alive
    after ``timeout`` seconds; with ``group``, its process group too (``pid`` leads it)."""
    family = [pid, *descendants(pid)]
    leader = pid if group else None
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p in family if pid_alive(p)]
        if not alive:
            return
        signal_all(leader, alive, sig)
        deadline = time.monotonic() + timeout
        while any(pid_alive(p) for p in family) and time.monotonic() < deadline:
            time.sleep(0.1)


def stop_command(process: subprocess.Popen[Any], timeout: float = 60.0, *,
                 leftovers: bool = False) -> None:
    """Stop a ``fediot`` command this process started (a server, a client): SIGTERM, on which
    it stops the Flower processes it started itself, then SIGKILL if it still runs after
    ``timeout`` seconds; with ``leftovers``, SIGKILL too every process that was below it and
    still runs (for a test of what a command leaves behind)."""
    family = descendants(process.pid) if leftovers else []
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    signal_all(None, [pid for pid in family if pid_alive(pid)], signal.SIGKILL)


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


def signal_all(group: int | None, pids: list[int], sig: signal.Signals) -> None:
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
              max_wait_seconds: float = 300.0, backend: str = "",
              task_api_secret: Path | None = None) -> FlowerProcess:
    """A SuperNode serving ``device``; it retries the SuperLink for ``max_wait_seconds``.
    ``backend`` (``auto``/``torch``/``numpy``; empty: the run's ``device_args.backend``) is
    what the device trains with.

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
    if backend:
        node_config += f' backend="{backend}"'
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
    private_folder(flwr_home)
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


def protect_state(flwr_home: Path) -> None:
    """``flwr_home`` private (created if missing), and the SuperLink database an earlier
    version left world-readable made readable by its owner only (task tokens are in it)."""
    private_folder(flwr_home)
    for path in flwr_home.glob("state.db*"):
        path.chmod(0o600)


def enrol_nodes(flwr_home: Path, security: ServerSecurity, *,
                timeout: float = ENROL_TIMEOUT_SECONDS,
                superlink_timeout: float = SUPERLINK_WAIT_SECONDS,
                on_start: Callable[[FlowerProcess], None] | None = None) -> dict[str, int]:
    """Register ``security.node_public_keys`` in the SuperLink database of ``flwr_home``, before
    any device can reach the SuperLink; returns ``{public key file name: node id}``.

    Flower registers keys through a running SuperLink, and a SuperNode whose key is not yet
    registered exits at once. So a SuperLink on a private loopback port opens the same
    database, takes the registrations and stops; the real one opens it afterwards with the
    registry complete. One process (:mod:`fediot.engines.flower.enrolment`) registers every
    key in turn and recognises keys the database already holds (a resumed session).

    Parameters
    ----------
    flwr_home
        The server's Flower home (its ``state.db``).
    security
        The SuperLink's certificates and the admitted keys.
    timeout
        Seconds the registration of all keys may take (default :data:`ENROL_TIMEOUT_SECONDS`).
    superlink_timeout
        Seconds the enrolment SuperLink may take to listen (default
        :data:`SUPERLINK_WAIT_SECONDS`).
    on_start
        Told of the enrolment SuperLink once started (the session lock records it).
    """
    port = free_port()
    federation = "fediot-enrol"
    link = superlink(flwr_home, port, security=security, log_name="enrol.log").start()
    if on_start is not None:
        on_start(link)
    enrol_home = private_folder(flwr_home / "enrol")
    keys = {key.name: str(key.resolve()) for key in security.node_public_keys}
    try:
        wait_for_port("127.0.0.1", port, superlink_timeout, "the enrolment SuperLink", link)
        write_federation(enrol_home, federation, join_address("127.0.0.1", port),
                         security.ca_certificate)
        try:
            done = subprocess.run(
                [sys.executable, "-m", "fediot.engines.flower.enrolment", federation],
                input=json.dumps(keys), env=flower_env(enrol_home), capture_output=True,
                text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise FediotError(
                f"registering {len(keys)} device keys took over {timeout:.0f} s (a loaded "
                "machine: raise --enrol-timeout)") from None
    finally:
        link.stop()
    return _enrolled(done.stdout, done.stderr)


def _enrolled(stdout: str, stderr: str) -> dict[str, int]:
    """The enrolment process's result line, or one clear error."""
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARK)]
    try:
        payload = json.loads(lines[-1].removeprefix(RESULT_MARK)) if lines else {}
    except json.JSONDecodeError:
        payload = {}
    if not lines or not isinstance(payload, dict) or "error" in payload:
        detail = payload.get("error") if isinstance(payload, dict) else None
        raise FediotError("registering the device keys failed: "
                          f"{detail or (stdout + stderr).strip()[-300:] or 'no output'}")
    return {str(name): int(node) for name, node in payload.items()}


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
    private_folder(log_path.parent)
    with log_path.open("ab") as log:
        log_path.chmod(0o600)
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
