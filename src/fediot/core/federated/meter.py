"""What one device task costs, measured where it runs: :class:`TaskMeter`.

Several devices often share one process (the in-process engine runs them one after another;
a worker process or a Ray actor serves several), so process-wide figures (the process's CPU
time, its peak RSS since it started) would be the same for every device it hosts. The meter
measures the task itself instead:

- **CPU time**: the CPU time of the thread that ran the task (``time.thread_time``). A device
  trains with one torch thread (:meth:`~fediot.core.federated.client.DeviceClient._load`), so
  this is all of its computation, and nothing of the other threads of the process (a
  dashboard, the server's bookkeeping).
- **Task peak memory**: how far the process's resident memory rose above its level at the
  task's start, at its highest during the task. On Linux the kernel's high-water mark
  (``VmHWM``) is reset at the start (``/proc/self/clear_refs``), after handing the memory the
  allocator keeps from earlier tasks back to the system (glibc ``malloc_trim``), so a device's
  task is not measured as free because the previous device's freed pages were reused. Where
  that is unavailable (other systems), the rise of the process's lifetime peak
  (``ru_maxrss``) is used: a lower bound, 0 when the task stayed under an earlier peak.
  Trimming makes the task fault its memory back in (about a quarter of a default run's time
  when done on every task, measured), so a device trims only on the tasks
  :func:`exact_memory_round` selects (rounds 1 and 2, the first with the libraries already
  loaded, and every :data:`EXACT_MEMORY_EVERY`-th); other
  tasks report the rise without trimming, a lower bound, and the faces show each device's
  largest figure over the rounds.
- **Process peak RSS**: the process's peak resident memory so far, kept as well: in the Flower
  deployment each device is its own process, so there it is the device's own.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

from fediot.core.federated.messages import SystemStats

_PROC_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_PEAK = "5"  # clear_refs: "reset the peak resident set size" (Linux ≥ 4.0)


def _glibc_trim() -> Any:
    """glibc's ``malloc_trim``, or None (another C library or system)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _glibc_trim()


def process_peak_rss_bytes() -> int:
    """The process's peak resident memory since it started, in bytes: the kernel's peak mark
    of this program (``VmHWM``) and the highest mark a :class:`TaskMeter` saw before resetting
    it. Without ``/proc``, ``ru_maxrss``; on Linux that is no measure of a started program:
    it keeps the peak of the process it was forked from across ``exec`` (a 9 MB Python
    started by a 410 MB parent reports 410 MB; measured). Never less than an earlier answer
    (the kernel's mark can lag behind pages handed back by ``malloc_trim``)."""
    global _peak_before_resets
    status = _proc_status_bytes()
    if status is not None:
        _peak_before_resets = max(status["VmHWM"], _peak_before_resets)
        return _peak_before_resets
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(int(peak) * (1 if sys.platform == "darwin" else 1024),  # macOS counts bytes
               _peak_before_resets)


def _proc_status_bytes(keys: tuple[str, ...] = ("VmRSS", "VmHWM")) -> dict[str, int] | None:
    """The memory figures ``keys`` of this process (default ``VmRSS`` and ``VmHWM``) in
    bytes, or None without ``/proc`` (or without one of them)."""
    try:
        text = _PROC_STATUS.read_text()
    except OSError:
        return None
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            found[key] = int(value.split()[0]) * 1024  # the kernel writes kB
    return found if len(found) == len(keys) else None


def anonymous_rss_bytes() -> int | None:
    """This process's resident anonymous memory (``RssAnon``: its heap, not the pages of the
    files it maps) in bytes, or None without ``/proc``."""
    status = _proc_status_bytes(("RssAnon",))
    return None if status is None else status["RssAnon"]


def files_held_under(root: Path) -> tuple[int, int] | None:
    """How many file descriptors and memory mappings this process holds on files under
    ``root``, or None without ``/proc``."""
    prefix = str(Path(root).resolve()) + "/"
    descriptors = 0
    try:
        entries = list(Path("/proc/self/fd").iterdir())
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    for entry in entries:
        try:
            descriptors += str(entry.readlink()).startswith(prefix)
        except OSError:  # the listing's own descriptor, closed since
            continue
    # a maps line: address, permissions, offset, device, inode, then the path (if any)
    mappings = sum(line.split(maxsplit=5)[-1].startswith(prefix) for line in maps
                   if line.count(" ") >= 5)
    return descriptors, mappings


_peak_before_resets = 0
"""The highest peak-RSS mark (bytes) seen in this process, also when a meter reset it:
resetting the mark also resets what ``ru_maxrss`` reports, so the lifetime peak is kept here."""


def _reset_high_water_mark() -> int | None:
    """Reset the kernel's peak-RSS mark to the current RSS, first keeping the mark in
    :data:`_peak_before_resets`; the RSS it was reset to (bytes), or None where that is
    impossible."""
    global _peak_before_resets
    status = _proc_status_bytes()
    if status is None:
        return None
    _peak_before_resets = max(_peak_before_resets, status["VmHWM"])
    try:
        _CLEAR_REFS.write_text(_RESET_PEAK)
    except OSError:
        return None
    return status["VmRSS"]


EXACT_MEMORY_EVERY = 10
"""A training task trims the allocator (an exact memory figure) in rounds 1 and 2 and every this
many rounds; in the others its memory figure is a lower bound (see the module)."""


def exact_memory_round(server_round: int) -> bool:
    """Whether a training task of ``server_round`` measures its memory exactly."""
    return server_round <= 2 or server_round % EXACT_MEMORY_EVERY == 0


class TaskMeter:
    """Measures a block (one device task): wall time, this thread's CPU time, the task's peak
    memory above its start and the process's peak RSS (see the module). Use as a context
    manager; ``stats`` holds the :class:`SystemStats` after the block.

    Parameters
    ----------
    exact_memory
        Hand the allocator's free pages back first (default True), so memory that earlier
        tasks freed and this one reuses counts as this task's; False: cheaper, a lower bound.
    """

    stats: SystemStats

    def __init__(self, exact_memory: bool = True) -> None:
        self._exact_memory = exact_memory

    def __enter__(self) -> TaskMeter:
        if _MALLOC_TRIM is not None and self._exact_memory:
            _MALLOC_TRIM(0)  # the allocator's free pages back to the system: a fair baseline
        self._start_rss = _reset_high_water_mark()
        self._start_peak = process_peak_rss_bytes()
        self._wall = time.perf_counter()
        self._cpu = time.thread_time()
        return self

    def __exit__(self, *_: Any) -> None:
        wall = time.perf_counter() - self._wall
        cpu = time.thread_time() - self._cpu
        peak = process_peak_rss_bytes()
        status = _proc_status_bytes() if self._start_rss is not None else None
        if status is not None and self._start_rss is not None:
            task_peak = status["VmHWM"] - self._start_rss
        else:  # no resettable mark: the rise of the lifetime peak (a lower bound)
            task_peak = peak - self._start_peak
        self.stats = SystemStats(wall_seconds=wall, cpu_seconds=cpu,
                                 task_peak_memory_bytes=max(0, task_peak),
                                 peak_rss_bytes=peak)


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
