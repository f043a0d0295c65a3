"""Stopping a command we started: SIGTERM, SIGKILL after the timeout, leftovers swept."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from fediot.core.liveness import pid_alive
from fediot.engines.flower.deployment import descendants, stop_command

IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
                  "print('ready', flush=True); time.sleep(600)"


def _started(code: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def test_a_command_that_ends_on_sigterm_is_not_killed() -> None:
    process = _started("import time; print('ready', flush=True); time.sleep(600)")
    started = time.monotonic()
    stop_command(process, timeout=30)
    assert process.returncode == -15 and time.monotonic() - started < 30


def test_a_command_ignoring_sigterm_is_killed_after_the_timeout() -> None:
    process = _started(IGNORES_SIGTERM)
    stop_command(process, timeout=0.5)
    assert process.returncode == -9


def test_leftovers_below_the_command_are_killed_only_when_asked() -> None:
    # the parent ends on SIGTERM; its child ignores it and would outlive it (the child's own
    # "ready" goes to its stdout, not the parent's pipe, so the parent's line is the one read)
    parent_code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
                   f"{IGNORES_SIGTERM!r}], stdout=subprocess.DEVNULL); time.sleep(1); "
                   "print('ready', flush=True); time.sleep(600)")
    for leftovers in (False, True):
        parent = _started(parent_code)
        children = descendants(parent.pid)
        assert len(children) == 1
        stop_command(parent, timeout=10, leftovers=leftovers)
        deadline = time.monotonic() + 10
        while leftovers and pid_alive(children[0]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert pid_alive(children[0]) is (not leftovers)
        if not leftovers:  # started by this test: ours to end
            os.kill(children[0], signal.SIGKILL)
