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
from rich.console import Console

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
ExitWhenDoneOption = Annotated[bool, typer.Option(
    "--exit-when-done",
    help="with --dashboard: exit when the run ends (once an open page has seen the end) "
         "instead of serving the finished run until Ctrl-C; for scripts")]


@contextmanager
def live_dashboard(runs_dir: Path, port: int | None, host: str = "127.0.0.1",
                   exit_when_done: bool = False, chatter: Console = console
                   ) -> Iterator[None]:
    """Serve the dashboard over ``runs_dir`` for the block's duration and after it (nothing
    when ``port`` is None); prints its URL.

    The block is the whole command: the run and the results it prints. When the block ends
    normally the dashboard keeps serving the finished run, saying so, until Ctrl-C (or
    SIGTERM, where the command turns it into Ctrl-C); with ``exit_when_done`` it stops instead,
    once an open page has fetched the end (:meth:`DashboardHandle.stop`). A block ended by
    Ctrl-C or a failure stops it at once.

    Parameters
    ----------
    runs_dir
        The runs folder to show.
    port
        The port (0: any free one); None: no dashboard.
    host
        Where to listen (default 127.0.0.1); a non-loopback host gets a fresh token.
    exit_when_done
        Stop when the block ends instead of serving on (default False).
    chatter
        Where its lines go (default: the CLI's stdout console; stderr when stdout carries
        data).
    """
    if port is None:
        yield
        return
    from fediot.engines.addresses import is_loopback
    from fediot.faces.dashboard import new_token, start_dashboard

    token = None if is_loopback(host) else new_token()
    handle = start_dashboard(runs_dir, host, port, token)
    chatter.print(f"live dashboard: {handle.url}", soft_wrap=True, highlight=False)
    try:
        yield
    except BaseException:  # Ctrl-C or a failure: stop at once
        handle.stop(linger=0.0)
        raise
    if exit_when_done:
        handle.stop()
        return
    chatter.print(f"the run has ended; the dashboard keeps showing it at {handle.url} "
                  "- press Ctrl-C to close", soft_wrap=True, highlight=False)
    try:
        handle.wait()
    except KeyboardInterrupt:  # the operator closes it: a normal end
        pass
    finally:
        handle.stop(linger=0.0)


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
