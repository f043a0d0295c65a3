"""``fediot dashboard``, and the ``--dashboard PORT`` option of ``fediot simulate`` and
``fediot server``: the live dashboard over a runs folder.

The web stack (FastAPI, uvicorn) is imported only when a dashboard is asked for, so the other
commands start as fast as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.faces.cli.app import app, console, fail
from fediot.faces.cli.lazy import command

DEFAULT_RUNS_DIR = Path(Config().tracking_args.log_file_dir)

DashboardOption = Annotated[int | None, typer.Option(
    "--dashboard", metavar="PORT",
    help="serve the live dashboard on this port while the command runs (0: any free port)")]
DashboardHostOption = Annotated[str, typer.Option(
    "--dashboard-host",
    help="the dashboard's address; a non-loopback one gets a fresh access token")]


@contextmanager
def live_dashboard(runs_dir: Path, port: int | None, host: str = "127.0.0.1"
                   ) -> Iterator[None]:
    """Serve the dashboard over ``runs_dir`` for the block's duration (nothing when ``port``
    is None); prints its URL. On exit an open page gets to see how the run ended."""
    if port is None:
        yield
        return
    from fediot.engines.addresses import is_loopback
    from fediot.faces.dashboard import new_token, start_dashboard

    token = None if is_loopback(host) else new_token()
    handle = start_dashboard(runs_dir, host, port, token)
    console.print(f"live dashboard: {handle.url}", soft_wrap=True, highlight=False)
    try:
        yield
    except BaseException:  # Ctrl-C or a failure: stop at once
        handle.stop(linger=0.0)
        raise
    handle.stop()


@command(app, "dashboard")
def dashboard_command(
    runs_dir: Annotated[Path, typer.Option(help="the runs folder to show")] = DEFAULT_RUNS_DIR,
    host: Annotated[str, typer.Option(
        help="address to listen on; a non-loopback one needs --token or --new-token")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free port)")] = 8765,
    token: Annotated[str | None, typer.Option(
        help="require this access token (at least 16 characters) in every request",
        envvar="FEDIOT_DASHBOARD_TOKEN")] = None,
    new_token: Annotated[bool, typer.Option(
        "--new-token", help="make a random access token and print the URL holding it")
    ] = False,
) -> None:
    # its help is its line in fediot.faces.cli.lazy.COMMANDS
    from fediot.faces.dashboard import new_token as make_token
    from fediot.faces.dashboard import serve_dashboard

    if token is not None and new_token:
        raise fail("--token and --new-token: give one of them")

    def announce(url: str) -> None:
        console.print(f"FedIoT dashboard of {runs_dir.resolve()}: {url}  (Ctrl-C stops it)",
                      soft_wrap=True, highlight=False)

    try:
        serve_dashboard(runs_dir, host, port, make_token() if new_token else token,
                        on_listening=announce)
    except FediotError as error:
        raise fail(str(error)) from None
