"""The fuzz suite's bookkeeping: every example a property tries is counted, and guarded.

Each Hypothesis test under ``tests/fuzz`` has its inner test (the function Hypothesis calls
once per example, shrinking and replays included) wrapped so that every example

- is counted; ``pytest_terminal_summary`` prints ``fuzz: N examples tried across M
  properties`` at the end of the run (the acceptance asks for ≥ 10,000 in CI);
- must finish within :data:`HANG_SECONDS` (a ``SIGALRM`` interrupts a Python-level hang and
  fails the example; ``faulthandler`` kills the whole run, with every thread's traceback, if a
  property hangs inside C code where the alarm cannot reach it);
- must not raise the process's peak memory by more than :data:`MAX_EXAMPLE_BYTES` above what
  was resident when it started (measured only when the example sets a new peak, since
  ``ru_maxrss`` is a high-water mark).

The time guard is deliberately generous (the readers' own limits keep every example far below
it): it catches hangs, not slowness, so a loaded CI machine cannot make it flaky.
"""

from __future__ import annotations

import faulthandler
import functools
import resource
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

HANG_SECONDS = 20.0
"""Longest one example may take before it counts as a hang (the acceptance's bound is 2 s)."""

PROPERTY_HANG_SECONDS = 900.0
"""Longest one whole property may take before the run is killed with tracebacks."""

MAX_EXAMPLE_BYTES = 200 * 1024 * 1024
"""Most one example may add to the process's resident memory (the acceptance's bound)."""

_FUZZ_DIR = Path(__file__).resolve().parent
_examples: Counter[str] = Counter()


class ExampleHang(Exception):  # noqa: N818 - reads as what happened
    """An example ran longer than :data:`HANG_SECONDS`."""


def _resident_bytes() -> int:
    with Path("/proc/self/statm").open() as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _on_alarm(signum: int, frame: object) -> None:
    raise ExampleHang(f"one example ran longer than {HANG_SECONDS:g} s")


def _guarded(name: str, inner: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(inner)
    def example(*args: Any, **kwargs: Any) -> Any:
        _examples[name] += 1
        resident, peak = _resident_bytes(), _peak_bytes()
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
        try:
            result = inner(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        new_peak = _peak_bytes()
        if new_peak > peak and new_peak - resident > MAX_EXAMPLE_BYTES:
            raise AssertionError(
                f"one example raised the resident memory by {(new_peak - resident) >> 20} MiB "
                f"(limit {MAX_EXAMPLE_BYTES >> 20} MiB)"
            )
        return result

    return example


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if not isinstance(item, pytest.Function) or _FUZZ_DIR not in item.path.parents:
            continue
        handle = getattr(item.obj, "hypothesis", None)
        if handle is None or getattr(handle.inner_test, "_fuzz_guarded", False):
            continue
        guarded = _guarded(item.nodeid, handle.inner_test)
        guarded._fuzz_guarded = True  # type: ignore[attr-defined]
        handle.inner_test = guarded


@pytest.fixture(autouse=True)
def _property_hang_guard() -> Iterator[None]:
    faulthandler.dump_traceback_later(PROPERTY_HANG_SECONDS, exit=True, file=sys.stderr)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _examples:
        return
    total = sum(_examples.values())
    terminalreporter.write_sep("-", "fuzz")
    for name, count in sorted(_examples.items()):
        terminalreporter.write_line(f"{count:>7,}  {name}")
    terminalreporter.write_line(
        f"fuzz: {total:,} examples tried across {len(_examples)} properties"
    )
