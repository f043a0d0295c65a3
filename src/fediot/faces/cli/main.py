"""Entry point of the ``fediot`` command.

The command modules are imported lazily, when their command runs (see :mod:`.lazy`): ``fediot
--help`` imports neither torch nor numba nor Flower.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
from typing import Final

from fediot.faces.cli.app import app

FULL_INSTALL_MODULES: Final[frozenset[str]] = frozenset({
    "torch", "pandas", "numba", "dpkt", "rarfile", "fastapi", "uvicorn", "dp_accounting"})
"""Top-level modules of the ``full`` extra (pyproject.toml): a device-only install lacks them."""


def main() -> None:
    # `kill -USR1 PID` prints every thread's stack to stderr: what a command that seems stuck
    # is doing, without stopping it (not chained: SIGUSR1's default action ends the process)
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        app()
    except ModuleNotFoundError as error:
        missing = (error.name or "").partition(".")[0]
        if missing not in FULL_INSTALL_MODULES:
            raise
        # a device-only install running a server-side command: one line, not a traceback
        print(f"error: this command needs {missing}, which a device-only install leaves out; "
              "install FedIoT's full extra (pip install -e '.[full]', or scripts/setup.sh)",
              file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
