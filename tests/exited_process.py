"""Real processes for liveness tests: one that has exited (its owner tag and identity, as it
recorded them alive), one still running, and a run folder whose recording process was killed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fediot

SRC = str(Path(fediot.__file__).resolve().parents[1])
"""The ``src`` folder the tests import fediot from, for child processes to import the same."""

_CHILD = ("import json; from fediot.core.liveness import ProcessIdentity, owner_tag; "
          "print(json.dumps({'tag': owner_tag(), "
          "'identity': ProcessIdentity.current().to_dict()}))")


def child_env() -> dict[str, str]:
    """This environment with :data:`SRC` first on ``PYTHONPATH``."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": SRC + (os.pathsep + path if path else "")}


def exited_process() -> dict[str, Any]:
    """Run a short-lived Python child that reports its :func:`owner_tag` and
    :class:`ProcessIdentity`, wait until it has exited (and been reaped), return its report."""
    done = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                          env=child_env(), timeout=120, check=True)
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@contextmanager
def running_process() -> Iterator[str]:
    """A Python child that stays alive inside the block (a concurrent build, say); yields its
    :func:`owner_tag`, and ends it (and waits for it) when the block ends."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from fediot.core.liveness import owner_tag; "
         "print(owner_tag(), flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert child.stdout is not None
        yield child.stdout.readline().strip()
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=60)


_RUN_CHILD = """
import sys
from fediot.core.config import Config
from fediot.engines.run_folder import RunFolder, StatusRecorder

config = Config().with_overrides({
    "tracking_args.log_file_dir": sys.argv[1], "tracking_args.run_name": sys.argv[2],
    "train_args.comm_round": 5})
folder = RunFolder.create(config)
recorder = StatusRecorder(folder, config, ["a", "b"])
recorder.on_phase("round", "2/5")
print(folder.root, flush=True)
sys.stdin.read()  # until the test kills it
"""


def killed_run(runs_dir: Path, name: str) -> tuple[Path, int]:
    """A run folder whose real recording process (a :class:`StatusRecorder` in round 2 of 5)
    was killed with SIGKILL, so it could not mark its run failed; the folder and the pid."""
    child = subprocess.Popen([sys.executable, "-c", _RUN_CHILD, str(runs_dir), name],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             env=child_env())
    try:
        assert child.stdout is not None
        folder = Path(child.stdout.readline().strip())
    finally:
        child.kill()
        child.wait(timeout=60)
    assert (folder / "status.json").is_file(), f"the child wrote no run folder ({folder})"
    return folder, child.pid
