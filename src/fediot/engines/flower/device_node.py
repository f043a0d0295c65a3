"""A device's side of a deployment: its SuperNode and warm worker, watched and explained.

:class:`DeviceNode` starts a device's SuperNode (and, in warm mode, its worker once the task API
listens), starts the worker again if it stops on its own, and, when the SuperNode stops or
cannot connect, returns the cause its log names (:mod:`fediot.engines.flower.device_log`). A
plain-HTTP node whose server speaks TLS is stopped at once (Flower would retry it silently).
Every process is stopped by its PID.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from fediot.core.errors import FediotError
from fediot.engines.flower.certificates import NodeSecurity
from fediot.engines.flower.deployment import (
    FlowerProcess,
    flower_env,
    join_address,
    safe_name,
    split_address,
    supernode,
    wait_for_port,
)
from fediot.engines.flower.device_log import Diagnosis, Failure, diagnose, speaks_tls

WORKER_RESTARTS: Final[int] = 3
"""How many times a device's warm worker is started again after it stopped on its own."""

PROBE_SECONDS: Final[float] = 2.0
"""While a plain-HTTP SuperNode waits for its server, how often the server is asked whether it
speaks TLS (a TLS server would otherwise be retried silently until the wait runs out)."""


class DeviceNode:
    """A device's SuperNode and, in warm mode, its worker; restartable, stopped by PID.

    Parameters
    ----------
    home, server, name, port, data_dir, security, wait
        As :func:`fediot.engines.flower.deployment.supernode` takes them.
    warm
        Start the SuperNode in process isolation with a warm worker beside it.
    say
        Where a line about a restarted worker goes (default: nowhere).
    """

    def __init__(self, home: Path, server: str, name: str, port: int, data_dir: str,
                 security: NodeSecurity | None, wait: float, *, warm: bool,
                 backend: str = "", say: Callable[[str], None] | None = None) -> None:
        self.home, self.server, self.name, self.port = home, server, name, port
        self.data_dir, self.security, self.wait, self.warm = data_dir, security, wait, warm
        self.backend = backend
        self.say = say or (lambda line: None)
        self.node: FlowerProcess | None = None
        self.worker: FlowerProcess | None = None
        self.failed_exit: str | None = None
        self._log_offset = 0
        self._secret: Path | None = None
        self._worker_restarts = 0

    @property
    def mode(self) -> str:
        return "warm worker" if self.warm else "a process per task"

    @property
    def node_pid(self) -> int:
        return self.node.pid if self.node else 0

    @property
    def log_path(self) -> Path:
        return self.home / "logs" / f"supernode-{safe_name(self.name)}.log"

    def start(self) -> None:
        """(Re)start the SuperNode, then its worker once the task API listens."""
        self.stop()
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)  # the device's Flower state: its own only
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        secret = None
        if self.warm:
            from fediot.engines.flower import worker as warm

            secret = warm.write_task_api_secret(self.home)
        self.node = supernode(
            self.home, self.server, self.name, self.port, data_dir=self.data_dir,
            security=self.security, max_wait_seconds=self.wait, backend=self.backend,
            task_api_secret=secret).start()
        if secret is None:
            return
        deadline = time.monotonic() + 60
        while self.node.alive() and time.monotonic() < deadline:
            try:
                wait_for_port("127.0.0.1", self.port, 1, "the SuperNode's task API")
                break
            except FediotError:
                continue
        if not self.node.alive():
            return  # the log says why: watch() reports it
        self._secret = secret
        self._start_worker()

    def _start_worker(self) -> None:
        from fediot.engines.flower import worker as warm

        assert self.node is not None and self._secret is not None
        address = join_address("127.0.0.1", self.port)
        self.worker = FlowerProcess(
            f"worker {self.name}",
            warm.worker_command(address, self._secret, [os.getpid(), self.node.pid]),
            flower_env(self.home),
            self.home / "logs" / f"worker-{safe_name(self.name)}.log").start()

    def _log_text(self) -> str:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def watch(self) -> Diagnosis | None:
        """Return once the SuperNode stops (a worker that stops is started again, up to
        :data:`WORKER_RESTARTS` times): the cause the SuperNode's log names, or None
        (``failed_exit`` then tells an unexplained non-zero exit). A plain-HTTP node whose
        server speaks TLS is stopped at once."""
        assert self.node is not None
        host, port = split_address(self.server)
        probe_tls = self.security is None
        next_probe = time.monotonic()
        while self.node.alive() and (self.worker is None or self.worker.alive()):
            if probe_tls and time.monotonic() >= next_probe:
                next_probe = time.monotonic() + PROBE_SECONDS
                if "SuperNode ID:" in self._log_text():
                    probe_tls = False  # connected: the server speaks what we speak
                elif speaks_tls(host, port):
                    return Diagnosis(Failure.PLAIN_HTTP, "")
            time.sleep(0.5)
        if self.worker is not None and not self.worker.alive() and self.node.alive():
            code = self.worker.process.returncode if self.worker.process else None
            if self._worker_restarts < WORKER_RESTARTS:
                # Flower's task heartbeat stops the process running an expired task
                self._worker_restarts += 1
                self.say(f"the warm worker stopped (exit code {code}); starting it again "
                         f"({self._worker_restarts}/{WORKER_RESTARTS})")
                self.worker.stop()
                self._start_worker()
                return self.watch()
            self.failed_exit = (f"the warm worker stopped with exit code {code} "
                                f"{WORKER_RESTARTS + 1} times: see {self.worker.log_path}")
            return None
        text = self._log_text()
        diagnosis = diagnose(text)
        code = self.node.process.returncode if self.node.process else None
        if diagnosis is None and code == 0 and "SuperNode ID:" in text:
            # a connected SuperNode stops itself only on HTTP 401, not always logged
            diagnosis = Diagnosis(Failure.DROPPED, "SuperNode terminated gracefully")
        if diagnosis is None and code not in (0, None, -15):
            self.failed_exit = (f"the SuperNode stopped with exit code {code}: see "
                                f"{self.log_path}")
        return diagnosis

    def stop(self) -> None:
        """Stop the worker, then the SuperNode (each by its PID)."""
        for process in (self.worker, self.node):
            if process is not None:
                process.stop()
