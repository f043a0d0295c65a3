"""A warm device worker: one long-lived process per SuperNode that runs every ClientApp task.

Flower 1.42's SuperExec starts a fresh ``flwr-clientapp`` process for each task, which imports
Python, Flower, torch and FedIoT and reloads the device's data every time (several seconds of
CPU for a tenth of a second of training). A SuperNode started with ``--isolation process``
starts no SuperExec; this worker takes its place. It imports once, keeps the ClientApp module
(and so the device's loaded data and model, cached in :mod:`fediot.engines.flower.apps`) in
memory, and loops on the SuperNode's task API exactly as the SuperExec and ``flwr-clientapp``
do together: ``AcquireTask`` (signed with the SuperNode's ``--superexec-auth-secret-file``
secret), then Flower's own ``pull_task_input`` / ClientApp call / ``push_message`` /
``push_task_output`` steps with the task's token, in this process.

The Flower internals used are pinned to Flower |FLOWER| (:data:`UNSUPPORTED` says why they are
not usable, else None): ``fediot client`` falls back to Flower's subprocess mode otherwise.

Run as ``python -m fediot.engines.flower.worker --runtime-api-address HOST:PORT --secret-file
PATH --watch-pid PID…``; it ends when any watched process ends (its ``fediot client`` and its
SuperNode) or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from fediot.engines.flower import TASK_POLL_SECONDS
from fediot.engines.flower.certificates import write_private_file

PINNED_FLOWER: Final[str] = "1.42.0"
"""The Flower release whose task API and ClientApp steps this worker drives."""

SECRET_FILE: Final[str] = "task-api.secret"
"""The SuperExec secret's file in the device's FLWR_HOME (0600, a fresh secret per start)."""

CLIENTAPP_MODULE: Final[str] = "fediot.engines.flower.apps"
"""Imported at start so that the first task finds torch, Flower and FedIoT loaded."""

_PINNED_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "flwr.supernode.runtime.run_clientapp": ("pull_task_input", "push_message",
                                              "push_task_output"),
    "flwr.supercore.interceptors": ("RuntimeTokenHttpInterceptor",
                                    "RuntimeVersionHttpInterceptor",
                                    "SuperExecAuthHttpInterceptor"),
    "flwr.supercore.runtime": ("RuntimeHttpClient",),
    "flwr.supercore.retry": ("make_simple_http_retry_invoker",),
    "flwr.supercore.heartbeat": ("HeartbeatSender", "make_task_heartbeat_fn_http"),
    "flwr.supercore.auth": ("load_superexec_auth_secret", "add_superexec_auth_secret_args"),
    "flwr.supercore.app_utils": ("start_parent_process_monitor",),
    "flwr.supercore.constant": ("TaskType",),
    "flwr.cli.install": ("install_from_fab",),
    "flwr.clientapp.utils": ("get_load_client_app_fn",),
    "flwr.clientapp.client_app": ("LoadClientAppError",),
    "flwr.common.config": ("get_project_dir",),
    "flwr.common.constant": ("ErrorCode", "SubStatus"),
    "flwr.app": ("Message",),
    "flwr.app.error": ("Error",),
    "flwr.proto.runtime_pb2": ("AcquireTaskRequest",),
}
"""Every Flower module and name the worker uses: checked once, before a SuperNode is started
in process-isolation mode."""

ACQUIRE_TASK: Final[str] = "/flwr.proto.Runtime/AcquireTask"
"""The task-API method the SuperNode guards with the SuperExec secret."""


def _unsupported() -> str | None:
    """Why this Flower cannot run the warm worker, or None when it can."""
    try:
        import flwr
    except ImportError as error:  # pragma: no cover - flwr is a dependency
        return f"Flower is not installed ({error})"
    version = getattr(flwr, "__version__", "?")
    if version != PINNED_FLOWER:
        return f"Flower {version} is installed; the warm worker is pinned to {PINNED_FLOWER}"
    for module_name, names in _PINNED_NAMES.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            return f"{module_name} cannot be imported ({error})"
        missing = [name for name in names if not hasattr(module, name)]
        if missing:
            return f"{module_name} has no {', '.join(missing)}"
    return None


UNSUPPORTED: Final[str | None] = _unsupported()
"""None when the pinned Flower internals are present; otherwise the reason, and ``fediot
client`` runs Flower's subprocess mode instead."""


def _flower(module_name: str) -> ModuleType:
    return importlib.import_module(module_name)


MESSAGE_WAIT_SECONDS: Final[float] = 30.0
"""How long a task waits for its message to be stored (see :class:`PatientRuntimeClient`)."""


class PatientRuntimeClient:
    """Flower's Runtime API client for one task, whose ``PullMessages`` waits (bounded) for the
    task's message instead of answering "no message" at once.

    Flower's SuperNode creates a task *before* it stores the task's message
    (``start_client_internal._pull_and_store_message``). A fresh ``flwr-clientapp`` process
    takes seconds to start, so it never asks in between; a warm worker polling every 0.1 s
    does, and Flower's ``pull_task_input`` then fails the task ("No messages received from
    Runtime API"), leaving the SuperNode waiting for a reply that never comes. Every other
    call goes to the wrapped client unchanged.

    Parameters
    ----------
    client
        Flower's ``RuntimeHttpClient`` for the task.
    wait_seconds
        Longest wait for the message (default :data:`MESSAGE_WAIT_SECONDS`).
    """

    def __init__(self, client: Any, wait_seconds: float = MESSAGE_WAIT_SECONDS) -> None:
        self._client = client
        self._wait_seconds = wait_seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def PullMessages(self, request: Any) -> Any:  # noqa: N802 - Flower's method name
        deadline = time.monotonic() + self._wait_seconds
        pause = 0.01
        while True:
            response = self._client.PullMessages(request)
            if response.messages_list or time.monotonic() >= deadline:
                return response
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


class WarmWorker:
    """Acquires the SuperNode's ClientApp tasks and runs each in this process.

    Parameters
    ----------
    runtime_api_address
        The SuperNode's Runtime API (its ``--port``), ``host:port``; plain HTTP on loopback.
    secret
        The SuperExec secret the SuperNode read from ``--superexec-auth-secret-file``.
    poll_seconds
        Pause between two empty ``AcquireTask`` answers (default :data:`TASK_POLL_SECONDS`).
    log
        Where one line per task goes (default: standard output).
    """

    def __init__(self, runtime_api_address: str, secret: bytes, *,
                 poll_seconds: float = TASK_POLL_SECONDS,
                 log: Callable[[str], None] | None = None) -> None:
        interceptors = _flower("flwr.supercore.interceptors")
        self.address = runtime_api_address
        self.poll_seconds = poll_seconds
        self.log = log or (lambda line: print(line, flush=True))
        self.tasks_done = 0
        self._apps: dict[str, Any] = {}  # FAB hash → its loaded ClientApp
        self._acquirer = _flower("flwr.supercore.runtime").RuntimeHttpClient.from_server_address(
            server_address=runtime_api_address, insecure=True, root_certificates=None,
            interceptors=[
                interceptors.RuntimeVersionHttpInterceptor(component_name="SuperExec"),
                interceptors.SuperExecAuthHttpInterceptor(
                    master_secret=secret, protected_methods=frozenset({ACQUIRE_TASK})),
            ],
            retry_invoker=_flower("flwr.supercore.retry").make_simple_http_retry_invoker())

    def serve(self, max_tasks: int | None = None) -> None:
        """Acquire and run tasks until stopped (or ``max_tasks`` were run)."""
        request = _flower("flwr.proto.runtime_pb2").AcquireTaskRequest(
            supported_task_types=[_flower("flwr.supercore.constant").TaskType.CLIENT_APP])
        try:
            while max_tasks is None or self.tasks_done < max_tasks:
                acquired = self._acquirer.AcquireTask(request)
                if acquired.HasField("task") and acquired.token:
                    self.run_task(acquired.token, int(acquired.task.task_id))
                else:
                    time.sleep(self.poll_seconds)
        finally:
            self._acquirer.close()

    def run_task(self, token: str, task_id: int) -> None:
        """One task, with Flower's own steps (``run_clientapp``'s, minus the process start):
        pull the message and context, call the ClientApp, push the reply and the context."""
        steps = _flower("flwr.supernode.runtime.run_clientapp")
        interceptors = _flower("flwr.supercore.interceptors")
        heartbeat = _flower("flwr.supercore.heartbeat")
        constant = _flower("flwr.common.constant")
        started = time.perf_counter()
        client = _flower("flwr.supercore.runtime").RuntimeHttpClient.from_server_address(
            server_address=self.address, insecure=True, root_certificates=None,
            interceptors=[
                interceptors.RuntimeVersionHttpInterceptor(component_name="flwr-clientapp"),
                interceptors.RuntimeTokenHttpInterceptor(token),
            ],
            retry_invoker=_flower("flwr.supercore.retry").make_simple_http_retry_invoker())
        beat = heartbeat.HeartbeatSender(heartbeat.make_task_heartbeat_fn_http(client))
        message = reply = context = None
        sub_status, details = constant.SubStatus.FAILED, "ClientApp task failed"
        message_type = "?"
        try:
            beat.start()
            message, context, run, fab = steps.pull_task_input(PatientRuntimeClient(client))
            message_type = message.metadata.message_type
            client_app = self._client_app(run, fab)
            reply = client_app(message=message, context=context)
            sub_status, details = constant.SubStatus.COMPLETED, ""
        except Exception as error:  # reported to the server, as Flower does
            code = constant.ErrorCode.CLIENT_APP_RAISED_EXCEPTION
            details = f"{type(error)}:<'{error}'>"
            if isinstance(error, _flower("flwr.clientapp.client_app").LoadClientAppError):
                code = constant.ErrorCode.LOAD_CLIENT_APP_EXCEPTION
                details = "An exception was raised when attempting to load `ClientApp`"
            self.log(f"task {task_id}: the ClientApp raised {details}")
            if message is not None:
                reply = _flower("flwr.app").Message(
                    _flower("flwr.app.error").Error(code=code, reason=details),
                    reply_to=message)
        finally:
            try:
                if reply is not None and context is not None:
                    steps.push_message(client, reply, context)
                steps.push_task_output(client=client, context=context, sub_status=sub_status,
                                       details=details)
            finally:
                if beat.is_running:
                    beat.stop()
                client.close()
            self.tasks_done += 1
            self.log(f"task {task_id} {message_type} pid {os.getpid()} {sub_status} "
                     f"{time.perf_counter() - started:.3f} s")

    def _client_app(self, run: Any, fab: Any) -> Any:
        """The FAB's ClientApp, installed and loaded once per FAB hash (Flower's loader)."""
        if fab.hash_str not in self._apps:
            project = _flower("flwr.common.config").get_project_dir(
                run.fab_id, run.fab_version, fab.hash_str)
            if not Path(project).is_dir():
                _flower("flwr.cli.install").install_from_fab(fab.content, skip_prompt=True)
            load = _flower("flwr.clientapp.utils").get_load_client_app_fn(
                default_app_ref="", app_path=None, multi_app=True)
            self._apps[fab.hash_str] = load(run.fab_id, run.fab_version, fab.hash_str)
        return self._apps[fab.hash_str]


def write_task_api_secret(flwr_home: Path) -> Path:
    """A fresh random SuperExec secret in ``flwr_home`` (made 0700), in a 0600 file; its path.

    Only the path goes on command lines (the SuperNode's and the worker's)."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    flwr_home.chmod(0o700)
    path = flwr_home / SECRET_FILE
    write_private_file(path, secrets.token_bytes(32))
    return path


def worker_command(runtime_api_address: str, secret_file: Path, watch_pids: Sequence[int],
                   poll_seconds: float = TASK_POLL_SECONDS) -> list[str]:
    """The command line starting a worker (the secret stays in its 0600 file).

    Parameters
    ----------
    runtime_api_address
        The SuperNode's Runtime API, ``host:port``.
    secret_file
        The file the SuperNode got as ``--superexec-auth-secret-file``.
    watch_pids
        Processes the worker must not outlive (its ``fediot client``, its SuperNode).
    poll_seconds
        Idle pause between two task requests (default :data:`TASK_POLL_SECONDS`).
    """
    args = [sys.executable, "-m", __name__, "--runtime-api-address", runtime_api_address,
            "--secret-file", str(secret_file), "--poll-seconds", str(poll_seconds)]
    for pid in watch_pids:
        args += ["--watch-pid", str(pid)]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m fediot.engines.flower.worker``; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--watch-pid", type=int, action="append", default=[])
    parser.add_argument("--poll-seconds", type=float, default=TASK_POLL_SECONDS)
    args = parser.parse_args(argv)
    if UNSUPPORTED is not None:
        print(f"warm worker unavailable: {UNSUPPORTED}", file=sys.stderr, flush=True)
        return 2
    try:
        secret = _flower("flwr.supercore.auth").load_superexec_auth_secret(str(args.secret_file))
    except ValueError as error:
        print(f"{args.secret_file}: {error}", file=sys.stderr, flush=True)
        return 2
    for pid in args.watch_pid:  # Flower's monitor: SIGINT here once that process is gone
        _flower("flwr.supercore.app_utils").start_parent_process_monitor(pid)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM ends it as Ctrl-C
    importlib.import_module(CLIENTAPP_MODULE)  # torch, Flower and FedIoT: once
    worker = WarmWorker(args.runtime_api_address, secret, poll_seconds=args.poll_seconds)
    print(f"warm worker pid {os.getpid()} serving {args.runtime_api_address}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):  # SIGTERM, SIGINT or a watched pid gone
        worker.serve()
    print(f"warm worker pid {os.getpid()} stopped after {worker.tasks_done} tasks", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
