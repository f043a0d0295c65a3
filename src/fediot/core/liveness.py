"""Who owns a run or a temporary file, and whether that owner is still alive: the one place
that decides liveness, for run folders (``status.json``) and for leftovers (partial testbed
builds, half-written cache entries, half-extracted downloads).

A process is identified by its host name, its pid and, on Linux, its *start token*: the boot
id (``/proc/sys/kernel/random/boot_id``) and the start time in clock ticks since boot (field 22
of ``/proc/<pid>/stat``). The pid alone is not enough: pids are reused, and a run killed last
week must not look alive because some new process got its pid. The start token changes with
every new process of that pid and with every reboot, so a match means the very same process.

Liveness can only be checked on the *same machine*: same host name and same pid namespace
(``/proc/self/ns/pid``; two containers on one host have different namespaces, and their pids
mean nothing to each other). For an owner elsewhere :meth:`ProcessIdentity.alive` answers
``None`` and the caller falls back on time: a heartbeat (runs) or the last modification
(leftovers) older than a bound.

Temporary files and folders carry their owner in their name, as an :func:`owner_tag`
(``<pid>-<start digest>-<machine digest>``), so :func:`remove_stale` can tell a leftover of a
dead process from the work in progress of a live concurrent one without any side file.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

STALE_SECONDS: Final[float] = 24 * 3600.0
"""A leftover whose owner cannot be checked (another machine, or a name from before owner tags)
is removed once nothing in it changed for this long: far longer than any build or parse takes
between two writes, so a live build elsewhere is never caught."""

_TAG: Final[re.Pattern[str]] = re.compile(r"(\d+)-([0-9a-f]{8})-([0-9a-f]{8})")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


@functools.cache
def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return str(Path("/proc/self/ns/pid").readlink())
    except OSError:
        return None


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state first), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name is in parentheses and may itself hold spaces and parentheses
    return text.rpartition(")")[2].split()


def _start_token(fields: list[str]) -> str | None:
    # field 22 of stat (starttime) is the 20th after the command name
    return f"{_boot_id() or '?'}:{fields[19]}" if len(fields) > 19 else None


def process_start(pid: int) -> str | None:
    """The start token of process ``pid`` (see the module), or None where it is unknown (no
    such process, or no ``/proc``)."""
    fields = _proc_stat(pid)
    return None if fields is None else _start_token(fields)


def _machine() -> tuple[str, str | None]:
    return socket.gethostname(), _pid_namespace()


def _machine_digest(host: str, namespace: str | None) -> str:
    return _digest(f"{host}\0{namespace or ''}")


def pid_alive(pid: int, started: str | None = None) -> bool | None:
    """Whether process ``pid`` *of this machine* still runs (and, if ``started`` is given, is
    the process that had that start token, not a later one that got the same pid); None where
    it cannot be told (Windows, where probing a pid with ``os.kill`` would end it)."""
    if pid <= 0:
        return False
    fields = _proc_stat(pid)
    if fields is not None:
        if fields[0] in ("Z", "X"):  # a zombie has exited; only its exit status is left
            return False
        return started is None or _start_token(fields) == started
    if os.name == "nt":
        return None
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the pid exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user (or /proc hides it)
        return True
    # it exists but /proc says nothing about it: no /proc (macOS), so no start token either
    return True


@dataclass(frozen=True)
class ProcessIdentity:
    """One process: where it runs and which one it is.

    Parameters
    ----------
    host
        ``socket.gethostname()`` of its machine.
    pid
        Its process id.
    started
        Its start token (see the module), None where there is no ``/proc``.
    namespace
        Its pid namespace (``pid:[4026531836]``), None where unknown.
    """

    host: str
    pid: int
    started: str | None = None
    namespace: str | None = None

    @classmethod
    def current(cls) -> ProcessIdentity:
        """This process (computed afresh: a forked child is another process)."""
        host, namespace = _machine()
        pid = os.getpid()
        return cls(host, pid, process_start(pid), namespace)

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "started": self.started,
                "namespace": self.namespace}

    @classmethod
    def from_dict(cls, raw: Any) -> ProcessIdentity | None:
        """The identity :meth:`to_dict` wrote; None if ``raw`` is not one (missing, or from a
        file written by hand or by an older version)."""
        if not isinstance(raw, Mapping):
            return None
        host, pid = raw.get("host"), raw.get("pid")
        started, namespace = raw.get("started"), raw.get("namespace")
        if (not isinstance(host, str) or isinstance(pid, bool) or not isinstance(pid, int)
                or not isinstance(started, str | None) or not isinstance(namespace, str | None)):
            return None
        return cls(host, pid, started, namespace)

    def on_this_machine(self) -> bool:
        """Same host name and same pid namespace as this process, so its pid can be checked."""
        return (self.host, self.namespace) == _machine()

    def alive(self) -> bool | None:
        """Whether it still runs; None when that cannot be checked from here (another machine
        or namespace), for the caller to decide by time."""
        if not self.on_this_machine():
            return None
        return pid_alive(self.pid, self.started)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


def owner_tag() -> str:
    """This process as a file-name token, ``<pid>-<start digest>-<machine digest>``: what a
    temporary file or folder's name carries so that :func:`remove_stale` knows its owner."""
    me = ProcessIdentity.current()
    return f"{me.pid}-{_digest(me.started or '')}-{_machine_digest(me.host, me.namespace)}"


def tag_alive(text: str) -> bool | None:
    """Whether the owner named by the :func:`owner_tag` at the start of ``text`` still runs;
    None when it cannot be told (no tag, as in names from before owner tags, or an owner on
    another machine)."""
    match = _TAG.match(text)
    if match is None:
        return None
    host, namespace = _machine()
    if match.group(3) != _machine_digest(host, namespace):
        return None
    pid = int(match.group(1))
    alive = pid_alive(pid)
    if not alive:
        return alive
    started = process_start(pid)
    # a live process with another start token is a later one that reused the pid
    return started is None or _digest(started) == match.group(2)


def last_change(path: Path) -> float:
    """The newest modification time (seconds since the epoch) of ``path`` and, for a folder,
    of everything in it: a build writing deep inside keeps its top folder's time unchanged."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, folders, files in os.walk(path):
            for name in (*folders, *files):
                with contextlib.suppress(OSError):  # removed meanwhile by its owner
                    newest = max(newest, Path(folder, name).lstat().st_mtime)
    return newest


def remove_stale(candidates: Iterable[tuple[Path, str]], *, max_age: float = STALE_SECONDS,
                 now: float | None = None) -> list[Path]:
    """Remove the leftovers among ``candidates`` and return them.

    Each candidate is a path and the part of its name where its :func:`owner_tag` starts.
    A candidate whose owner is alive is kept, however old (a long build is still a build); one
    whose owner is dead is removed; one whose owner cannot be checked is removed only when
    nothing in it changed for ``max_age`` seconds. Files are unlinked, folders deleted with
    their content; one that cannot be removed is left for a later start.
    """
    now = time.time() if now is None else now
    removed = []
    for path, tag in candidates:
        alive = tag_alive(tag)
        if alive:
            continue
        try:
            if alive is None and now - last_change(path) < max_age:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:  # gone meanwhile (its owner finished, another sweep won), or locked
            continue
        removed.append(path)
    return removed
