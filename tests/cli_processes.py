"""Stopping the ``fediot`` command processes a test started (server, client)."""

from __future__ import annotations

import signal
import subprocess


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM (``fediot`` stops the Flower processes it started), SIGKILL after 60 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
