"""Serving the dashboard: in the foreground (``fediot dashboard``) or beside a run
(``--dashboard PORT`` on ``fediot simulate`` and ``fediot server``).

Loopback addresses need no token. Any other address is refused without one: give a token, or
let :func:`new_token` make one and hand out the URL it is in.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from fediot.core.errors import FediotError
from fediot.faces.access import binding_problem
from fediot.faces.dashboard.app import PollClock, create_app

DEFAULT_PORT = 8765
WATCHED_SECONDS = 10.0
"""A page that asked for a run's state this recently is watching (see :meth:`stop`)."""


class DashboardError(FediotError):
    """The dashboard cannot start: an unsafe binding, a weak token, a busy port."""


def check_binding(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token, and a short token
    (:func:`fediot.faces.access.binding_problem`)."""
    problem = binding_problem(host, token, "the dashboard", "a --token or --new-token")
    if problem:
        hint = "; --new-token makes a strong one" if problem.startswith("--token") else ""
        raise DashboardError(problem + hint)


def dashboard_url(host: str, port: int, token: str | None = None) -> str:
    """The address to open; a wildcard bind shows this machine's name."""
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port); one clear error if it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise DashboardError(f"the dashboard cannot listen on {host}:{port} "
                             f"({error.strerror or error}); choose another --port") from None
    return sock


def _uvicorn(app: FastAPI) -> uvicorn.Server:
    # log_config=None: the embedding command's logging setup is left as it is
    return uvicorn.Server(uvicorn.Config(
        app, log_config=None, log_level="warning", access_log=False, lifespan="off",
        server_header=False, ws="none", timeout_graceful_shutdown=2))


def serve_dashboard(runs_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                    token: str | None = None,
                    on_listening: Callable[[str], None] | None = None) -> None:
    """Serve the dashboard over ``runs_dir`` in the foreground until Ctrl-C (or SIGTERM).

    Parameters
    ----------
    runs_dir
        The runs folder to show (it may not exist yet).
    host, port
        Where to listen; default 127.0.0.1:8765. A non-loopback host needs ``token``.
    token
        Required in every request when given (``?token=`` in the page URL).
    on_listening
        Called with the page URL once the port is bound.
    """
    check_binding(host, token)
    sock = _listen(host, port)
    try:
        url = dashboard_url(host, sock.getsockname()[1], token)
        if on_listening is not None:
            on_listening(url)
        _uvicorn(create_app(runs_dir, token)).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it stopped on: a normal end
        pass
    finally:
        sock.close()


class DashboardHandle:
    """A dashboard serving in a daemon thread (from :func:`start_dashboard`).

    Attributes
    ----------
    url
        The page's address, with the token when there is one.
    port
        The port it listens on.
    """

    def __init__(self, url: str, port: int, server: uvicorn.Server, served: threading.Event,
                 polls: PollClock) -> None:
        self.url = url
        self.port = port
        self._server = server
        # set by the serving thread as its last act. Not Thread.join: on CPython 3.11 a
        # Ctrl-C landing in join() marks the still-running thread as stopped (bpo-45274's
        # fix releases the thread's own lock), so stop() would not wait for uvicorn and the
        # process could end while uvicorn was halfway through its shutdown
        self._served = served
        self._polls = polls

    @property
    def running(self) -> bool:
        return not self._served.is_set()

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C in the calling thread interrupts the wait)."""
        while not self._served.wait(timeout=0.5):  # short waits: Ctrl-C is seen at once
            pass

    def stop(self, linger: float = 15.0) -> None:
        """Stop serving. If a page was watching, first wait (up to ``linger`` seconds) until
        it has fetched a state after this call, so it shows how the run ended. Returns once
        the server has shut down (at most ~10 s more: uvicorn's graceful shutdown is 2 s)."""
        called = time.monotonic()
        watched = called - self._polls.last_started < WATCHED_SECONDS
        while (watched and self.running and self._polls.last_started < called
               and time.monotonic() - called < linger):
            time.sleep(0.05)
        self._server.should_exit = True
        self._served.wait(timeout=10.0)


def start_dashboard(runs_dir: Path, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                    token: str | None = None) -> DashboardHandle:
    """Serve the dashboard in a background (daemon) thread; ``port`` 0 picks a free port.
    Same checks as :func:`serve_dashboard`; :meth:`DashboardHandle.stop` ends it."""
    check_binding(host, token)
    sock = _listen(host, port)
    app = create_app(runs_dir, token)
    server = _uvicorn(app)  # off the main thread uvicorn leaves the signal handlers alone
    actual = sock.getsockname()[1]

    served = threading.Event()

    def serve() -> None:
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            served.set()

    threading.Thread(target=serve, name="fediot-dashboard", daemon=True).start()
    deadline = time.monotonic() + 30.0
    while not server.started:
        if served.is_set() or time.monotonic() > deadline:
            server.should_exit = True
            raise DashboardError(f"the dashboard did not start on {host}:{port}")
        time.sleep(0.02)
    return DashboardHandle(dashboard_url(host, actual, token), actual, server, served,
                           app.state.polls)
