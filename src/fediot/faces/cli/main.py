"""Entry point of the ``fediot`` command.

The command modules are imported lazily, when their command runs (see :mod:`.lazy`): ``fediot
--help`` imports neither torch nor numba nor Flower.
"""

from __future__ import annotations

from fediot.faces.cli.app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()
