"""Loopback TCP ports for tests that must name a port before anything listens on it (a
SuperLink, a SuperNode, ``fediot serve`` in a subprocess, a Ray head, an address nobody
answers).

The usual trick, bind port 0 and release it, is racy under ``pytest -n``: the OS hands the
released port to the next ``bind(0)`` of any process, often another test worker's. So ports are
taken instead from a range the OS never hands out (below the ephemeral range of
``/proc/sys/net/ipv4/ip_local_port_range``, above Ray's worker ports 10002–19999), split into
one disjoint block per xdist worker (``PYTEST_XDIST_WORKER`` = ``gw<i>``,
``PYTEST_XDIST_WORKER_COUNT``): two workers of one session can never pick the same port. Each
port is checked free when handed out and a process goes round its whole block before it hands
one out again, which leaves
only another test session on the same machine, started at the same moment, as a (retried by
the bind check, random-offset) source of a clash.

A server that can bind port 0 itself and report its port (uvicorn given a bound socket, the
dashboard with ``port=0``) should do that instead: it needs no helper at all.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

RESERVED_LOW: Final[int] = 20_000
"""First port of the test range: above Ray's default worker ports (10002–19999)."""

_EPHEMERAL_RANGE: Final[Path] = Path("/proc/sys/net/ipv4/ip_local_port_range")
_DEFAULT_EPHEMERAL_LOW: Final[int] = 32_768  # Linux's default, also where /proc is absent
_MIN_BLOCK: Final[int] = 64
"""Smallest useful block per worker; below it (a machine with a wide ephemeral range) the
helper falls back on the OS's choice."""

_lock = threading.Lock()
_candidates: Iterator[int] | None = None


def ephemeral_low() -> int:
    """The first port of the range the OS hands out to ``bind(0)`` and outgoing connections."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_LOW


def worker_block(worker: str | None = None, workers: str | None = None) -> range:
    """This xdist worker's ports: the reserved range cut into ``workers`` equal blocks, block
    number ``<i>`` of ``gw<i>``; the whole range without xdist. Empty when the range is too
    small for that many workers.

    Parameters
    ----------
    worker
        ``gw<i>``; default ``$PYTEST_XDIST_WORKER`` (unset: not under xdist).
    workers
        How many workers the session has; default ``$PYTEST_XDIST_WORKER_COUNT`` (unset: 1).
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") if workers is None else workers
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    count = max(int(workers) if workers.isdigit() else 1, index + 1)
    size = (ephemeral_low() - RESERVED_LOW) // count
    if size < _MIN_BLOCK:
        return range(0)
    start = RESERVED_LOW + index * size
    return range(start, start + size)


def _bindable(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _os_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def free_port(host: str = "127.0.0.1") -> int:
    """The next port of this worker's block that nothing holds now (the OS's choice where the
    block is empty)."""
    global _candidates
    block = worker_block()
    if not block:
        return _os_port(host)
    with _lock:
        if _candidates is None:
            # a random start: another session's worker of the same number starts elsewhere
            offset = random.randrange(len(block))
            _candidates = itertools.cycle([*block[offset:], *block[:offset]])
        for port in itertools.islice(_candidates, len(block)):
            if _bindable(port, host):
                return port
    raise RuntimeError(f"no free port left in {block} (this worker's test ports)")
