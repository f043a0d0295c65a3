"""Entry point of the ``fediot`` command: imports every command module so it registers."""

from __future__ import annotations

from fediot.faces.cli import (  # noqa: F401  (each module registers its commands)
    dashboard,
    data,
    deploy,
    detect,
    extract,
    nbaiot,
    protocol,
    report,
    runs,
    serve,
    simulate,
    status,
)
from fediot.faces.cli.app import app


def main() -> None:
    app()


if __name__ == "__main__":
    main()
