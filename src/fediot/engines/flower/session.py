"""One ``fediot server`` session per Flower home: a lock file naming its processes.

``$FLWR_HOME/server.lock`` (JSON) records the server process and every Flower process it
started (the enrolment SuperLink, the SuperLink), each as a
:class:`~fediot.core.liveness.ProcessIdentity`, so a reused pid is never taken for one of them.
A new session refuses to start while any recorded process lives, naming them and the command
that stops them (:func:`stop_session`, ``fediot server --stop-stale``); a lock whose processes
are all gone (a crash) is simply replaced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from fediot.core.errors import FediotError
from fediot.core.io import atomic_path
from fediot.core.liveness import ProcessIdentity, process_start
from fediot.engines.flower.deployment import private_folder, terminate_tree

LOCK_NAME: Final[str] = "server.lock"
"""The lock file's name in the server's Flower home."""

SERVER: Final[str] = "fediot server"
"""The lock's name for the server process itself."""


def _read(path: Path) -> dict[str, ProcessIdentity]:
    """The processes a lock file records; one clear error naming it if it is not one."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as error:
        raise FediotError(f"{path}: not a FedIoT server lock ({error}); remove it if no "
                          "fediot server uses this Flower home") from None
    recorded = raw.get("processes") if isinstance(raw, dict) else None
    if not isinstance(recorded, dict):
        raise FediotError(f"{path}: not a FedIoT server lock (no 'processes'); remove it if "
                          "no fediot server uses this Flower home")
    found = {}
    for name, identity in recorded.items():
        parsed = ProcessIdentity.from_dict(identity)
        if parsed is None:
            raise FediotError(f"{path}: processes.{name} is not a process identity")
        found[str(name)] = parsed
    return found


def live_processes(flwr_home: Path) -> dict[str, ProcessIdentity]:
    """The processes recorded in ``flwr_home``'s lock that still run (same pid and start
    token); one of another machine counts as live, since it cannot be checked from here."""
    return {name: identity for name, identity in _read(flwr_home / LOCK_NAME).items()
            if identity.alive() is not False}


def describe(processes: dict[str, ProcessIdentity]) -> str:
    """``superlink pid 12, fediot server pid 10`` (for one line)."""
    return ", ".join(f"{name} {identity.describe()}" for name, identity in processes.items())


def stop_session(flwr_home: Path, timeout: float = 15.0) -> dict[str, ProcessIdentity]:
    """Stop every live process of ``flwr_home``'s lock with its descendants (the SuperLink's
    SuperExec and ServerApp), remove the lock, and return what was stopped.

    Parameters
    ----------
    flwr_home
        The server's Flower home.
    timeout
        Seconds each process gets after SIGTERM before SIGKILL (default 15).
    """
    live = live_processes(flwr_home)
    elsewhere = {name: p for name, p in live.items() if not p.on_this_machine()}
    if elsewhere:
        raise FediotError(f"{flwr_home / LOCK_NAME}: {describe(elsewhere)} runs on another "
                          "machine; stop it there")
    for identity in live.values():
        if identity.alive():  # still the same process (not ended by an earlier one's stop)
            terminate_tree(identity.pid, timeout)
    (flwr_home / LOCK_NAME).unlink(missing_ok=True)
    return live


@dataclass
class ServerSession:
    """The lock of the running session: :meth:`acquire` it, :meth:`record` each process
    started, :meth:`release` at the end (a crash leaves it for the next start to judge).

    Parameters
    ----------
    flwr_home
        The server's Flower home.
    processes
        The recorded processes by name, this one first.
    """

    flwr_home: Path
    processes: dict[str, ProcessIdentity] = field(default_factory=dict)

    @classmethod
    def acquire(cls, flwr_home: Path, stop_command: str) -> ServerSession:
        """Lock ``flwr_home`` for this process, or refuse with one line naming the live
        processes of an earlier session and ``stop_command``, the command that stops them."""
        private_folder(flwr_home)
        live = live_processes(flwr_home)
        if live:
            raise FediotError(f"{flwr_home} is in use by an earlier server session "
                              f"({describe(live)}): stop it with `{stop_command}`")
        session = cls(flwr_home, {SERVER: ProcessIdentity.current()})
        session._write()
        return session

    def record(self, name: str, pid: int) -> None:
        """Add process ``pid`` (a child just started) under ``name``."""
        me = self.processes[SERVER]
        self.processes[name] = ProcessIdentity(me.host, pid, process_start(pid), me.namespace)
        self._write()

    def release(self) -> None:
        """Remove the lock (its processes are stopped)."""
        path = self.flwr_home / LOCK_NAME
        if _read(path).get(SERVER) == self.processes[SERVER]:  # still ours
            path.unlink(missing_ok=True)

    def _write(self) -> None:
        payload = {"processes": {name: p.to_dict() for name, p in self.processes.items()}}
        with atomic_path(self.flwr_home / LOCK_NAME) as tmp:
            tmp.write_text(json.dumps(payload, indent=1) + "\n")
