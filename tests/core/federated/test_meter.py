"""The task meter measures the task, not the process it shares with others."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fediot.core.federated.meter import TaskMeter, process_peak_rss_bytes

MIB = 2**20


BLOCK = 64 * 1024  # below glibc's mmap threshold: from the heap, like most small arrays


def _touch(megabytes: int, kept: list[np.ndarray] | None = None) -> int:
    """Allocate and write ``megabytes`` in blocks; keep one more block in ``kept``."""
    blocks = [np.ones(BLOCK // 8) for _ in range(megabytes * MIB // BLOCK)]
    if kept is not None:  # outlives the task, above its blocks: the heap cannot shrink
        kept.append(np.ones(BLOCK // 8))
    return len(blocks)


def test_task_peak_memory_is_what_the_task_took() -> None:
    kept: list[np.ndarray] = []
    with TaskMeter() as big:
        _touch(200, kept)
    with TaskMeter() as small:  # reuses the big task's freed pages unless they were returned
        _touch(20)
    assert 195 * MIB <= big.stats.task_peak_memory_bytes < 230 * MIB  # ± a few pages
    # not hidden by the pages the previous task freed, not inflated by its peak
    assert 19 * MIB <= small.stats.task_peak_memory_bytes < 50 * MIB
    assert small.stats.peak_rss_bytes == process_peak_rss_bytes()
    assert small.stats.peak_rss_bytes >= big.stats.task_peak_memory_bytes
    # the process's peak is its lifetime's, though each meter resets the kernel's mark
    assert small.stats.peak_rss_bytes >= big.stats.peak_rss_bytes


def test_cpu_time_is_the_tasks_thread_only() -> None:
    stop = threading.Event()

    def spin() -> None:  # another thread of the process, busy meanwhile
        while not stop.is_set():
            pass

    other = threading.Thread(target=spin)
    other.start()
    try:
        with TaskMeter() as meter:
            time.sleep(0.5)
    finally:
        stop.set()
        other.join()
    assert meter.stats.wall_seconds == pytest.approx(0.5, abs=0.3)
    assert meter.stats.cpu_seconds < 0.05
