"""The live dashboard's web app: a read-only view of a runs folder, as JSON and one page.

Every engine keeps its run folder current (``status.json``, ``metrics.jsonl``, ``logs.jsonl``,
``results.json``); this app only reads them through :class:`~fediot.engines.run_folder.RunView`,
whose status shows a run whose process is gone as ``interrupted`` (with ``interrupted_because``).

Endpoints (GET and HEAD only; any other method answers 405):

``/``
    The page (:mod:`fediot.faces.dashboard.page`): inline CSS and JavaScript, no external
    resource; it polls the two endpoints below about once a second.
``/api/runs``
    Every run, newest first, and ``default``: the newest running run (else the newest run).
``/api/runs/{run_id}/state?after=N``
    One run: status, rounds, evaluation series (with the final evaluation once the run has
    ended) and why the chart has the points it has (``evaluation_note``, from the run's
    config), devices (display state, last seen, per-device system figures), how to show those
    figures (``system``: :func:`system_layout`) and the log lines from index ``N`` on (at most
    :data:`LOG_LIMIT`), with ``log_cursor`` to pass as ``after`` next time.

Access: with a ``token`` every request must carry it (``?token=`` on the page URL, which also
sets a cookie; the page's own API calls send the ``X-Fediot-Token`` header), else 401. Without
a token the app answers only requests addressed to a loopback host name (``Host`` header), so
a web page elsewhere cannot reach it by rebinding a DNS name to 127.0.0.1.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from fediot.core.catalog import client_label
from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.federated.messages import SYSTEM_FIGURE_LABELS
from fediot.engines.run_folder import (
    RunView,
    finite_number,
    list_runs,
    parse_time,
    system_figures,
)
from fediot.faces.access import FOREIGN_HOST_STATUS, addressed_to_loopback, token_matches
from fediot.faces.dashboard.page import CONTENT_SECURITY_POLICY, PAGE_HTML

LOG_LIMIT = 200
"""Most log lines one state answer carries (the newest ones)."""

ONLINE_SECONDS = 60.0
"""A device of a running run seen this recently (or within the last 2 rounds) is online."""

ONLINE_ROUNDS = 2

TOKEN_COOKIE = "fediot_dashboard_token"
TOKEN_HEADER = "x-fediot-token"

READ_METHODS = frozenset({"GET", "HEAD"})

_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")

# evaluation dict path → series name on the page (RoundRecord.evaluation, pooled metrics)
EVALUATION_SERIES = {
    ("rows", "f1"): "F1",
    ("rows", "recall"): "TPR",
    ("rows", "fpr"): "FPR",
    ("window_vote", "f1"): "F1 (window vote)",
    ("roc_auc",): "ROC AUC",
}

OWN_PROCESS_ENGINES = frozenset({"flower"})
"""Engines (``status.json`` ``engine``) that run each device in a process of its own (the
Flower deployment): only there is a device's process peak RSS its own."""


def _seconds_since(text: Any, now: datetime) -> float | None:
    moment = parse_time(text)
    return None if moment is None else max(0.0, (now - moment).total_seconds())


def run_summary(view: RunView) -> dict[str, Any]:
    """One line of the run list: id, state (``interrupted`` for a run whose process is gone:
    :meth:`RunView.status`), phase, round of total, engine, last update."""
    status = view.status() or {}
    return {
        "id": view.run_id, "state": status.get("state", "unknown"),
        "phase": status.get("phase"), "round": status.get("round"),
        "total_rounds": status.get("total_rounds"), "engine": status.get("engine"),
        "updated_at": status.get("updated_at"),
        "interrupted_because": status.get("interrupted_because"),
    }


def device_state(info: dict[str, Any], run_state: str, current_round: int,
                 seen_ago: float | None) -> str:
    """What the page shows: ``lost``, ``training``, ``online`` (answered lately in a running
    run) or ``idle`` (never seen, long unseen, or the run is over)."""
    if info.get("state") == "lost":
        return "lost"
    if run_state != "running":
        return "idle"
    if info.get("state") == "training":
        return "training"
    last_round = info.get("last_round")
    if isinstance(last_round, int) and current_round - last_round <= ONLINE_ROUNDS:
        return "online"
    if seen_ago is not None and seen_ago <= ONLINE_SECONDS:
        return "online"
    return "idle"


def _dig(node: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node


def evaluation_series(rounds: list[dict[str, Any]],
                      results: dict[str, Any] | None = None) -> dict[str, list[list[float]]]:
    """Series name → ``[round, value]`` points from the rounds that were evaluated, then the
    final evaluation (``results.json``, at its ``rounds``) when ``results`` is given."""
    sources: list[tuple[float, Any]] = [(float(record["round"]), record.get("evaluation"))
                                        for record in rounds]
    if results and isinstance(results.get("rounds"), int):
        sources.append((float(results["rounds"]), (results.get("evaluation") or {})
                        .get("pooled")))
    series: dict[str, list[list[float]]] = {}
    for x, evaluation in sources:
        if not isinstance(evaluation, dict):
            continue
        for path, name in EVALUATION_SERIES.items():
            value = finite_number(_dig(evaluation, path))
            if value is not None:
                series.setdefault(name, []).append([x, value])
    return series


def evaluation_note(config: Config, evaluated_rounds: int, finished: bool) -> str:
    """Why the evaluation chart holds the points it holds, from the run's config.

    Parameters
    ----------
    config
        The run's configuration (``validation_args.frequency_of_the_test``,
        ``train_args.comm_round``).
    evaluated_rounds
        Rounds evaluated during training so far.
    finished
        Whether ``results.json`` (the final evaluation) exists.
    """
    every = config.validation_args.frequency_of_the_test
    total = config.train_args.comm_round
    final = ("the last point is the final evaluation (results.json)." if finished else
             "the final evaluation runs after the last round and appears here then.")
    setting = "validation_args.frequency_of_the_test"
    if every == 0:
        return (f"No round is evaluated during training ({setting} = 0): {final} For a "
                f"curve, set {setting} = N to evaluate every N rounds.")
    if every >= total:
        return (f"Evaluated every {every} rounds ({setting}), but the run has {total}: no "
                f"round is evaluated during training; {final}")
    first = "" if evaluated_rounds else f" The first point comes after round {every}."
    return f"Evaluated every {every} round(s) ({setting}); {final}{first}"


def _figure_unit(key: str) -> str:
    words = key.lower().split("_")
    return "bytes" if "bytes" in words else "seconds" if "seconds" in words else ""


def _is_peak(key: str) -> bool:
    words = key.lower().split("_")
    return "peak" in words or "max" in words


def _why_the_same(key: str, figure: dict[str, float]) -> str:
    if key in ("bytes_down", "bytes_up") and figure["max"] == 0:
        return "the devices ran in the server's process: nothing crossed a process boundary"
    if key == "bytes_down":
        return "every device receives the same model"
    return "measured the same for every device"


def system_layout(system: dict[str, dict[str, dict[str, float]]], engine: str | None
                  ) -> dict[str, list[dict[str, Any]]]:
    """How to show the per-device system figures (:func:`system_figures`).

    A figure that differs between devices gets a column (``per_device``). One that is the
    same for every device that reported it (every device receives the same model) is shown
    once (``once``) instead of as identical columns, and so is the process peak RSS where
    devices share worker processes (not :data:`OWN_PROCESS_ENGINES`): there it is the
    workers', not any device's, and ``once`` gives the highest. Each entry has ``key``,
    ``label`` (what it measures: :data:`SYSTEM_FIGURE_LABELS`), ``unit`` (``bytes``,
    ``seconds`` or ``""``) and ``how`` (``peak``: the maximum over rounds, else ``total``
    beside the last round's value); a ``once`` entry also ``value`` (``last``, ``total``,
    ``max``), ``devices`` (how many reported it) and ``why`` it is shown once.

    Parameters
    ----------
    system
        Device → key → ``last``/``total``/``max``.
    engine
        The run's engine (``status.json``).
    """
    keys = list(dict.fromkeys(key for figures in system.values() for key in figures))
    per_device: list[dict[str, Any]] = []
    once: list[dict[str, Any]] = []
    shared_process = engine not in OWN_PROCESS_ENGINES
    for key in keys:
        label = SYSTEM_FIGURE_LABELS.get(key, key.replace("_", " "))
        entry = {"key": key, "label": label, "unit": _figure_unit(key),
                 "how": "peak" if _is_peak(key) else "total"}
        figures = [mine[key] for mine in system.values() if key in mine]
        if key == "peak_rss_bytes" and shared_process:
            highest = {part: max(f[part] for f in figures) for part in ("last", "total", "max")}
            once.append({**entry, "label": "peak RSS of the worker processes", "value": highest,
                         "devices": len(figures),
                         "why": f"under the {engine or 'unknown'} engine the devices share "
                                "worker processes, so it is theirs, not any one device's; the "
                                "highest is shown"})
        elif len(figures) > 1 and all(f == figures[0] for f in figures):
            once.append({**entry, "value": figures[0], "devices": len(figures),
                         "why": f"the same for all {len(figures)} devices: "
                                + _why_the_same(key, figures[0])})
        else:
            if key == "peak_rss_bytes":
                entry["label"] = label + " (its own)"
            per_device.append(entry)
    return {"per_device": per_device, "once": once}


def _round_row(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "round": record.get("round"), "train_loss": finite_number(record.get("train_loss")),
        "seconds": finite_number(record.get("seconds")),
        "learning_rate": finite_number(record.get("learning_rate")),
        "clients": len(record.get("clients") or []),
        "answered": len(record.get("answered") or []),
        "num_examples": record.get("num_examples"),
    }


def _log_row(line: Any) -> dict[str, Any]:
    line = line if isinstance(line, dict) else {"message": line}
    device = line.get("device")
    return {"time": line.get("time"), "device": device,
            "device_label": client_label(str(device)) if device else "server",
            "round": line.get("round"),
            "step": line.get("step"), "level": str(line.get("level") or "INFO"),
            "message": str(line.get("message", ""))}


def _final_results(results: dict[str, Any] | None) -> dict[str, Any] | None:
    """Pooled metrics and thresholds of a finished run (``results.json``)."""
    if not results:
        return None
    pooled = (results.get("evaluation") or {}).get("pooled") or {}
    metrics = {name: finite_number(value) for name, value in
               ((name, _dig(pooled, path)) for path, name in EVALUATION_SERIES.items())}
    thresholds = results.get("thresholds") or {}
    rounds = results.get("rounds")
    return {"finished_at": results.get("finished_at"), "pooled": metrics,
            "rounds": rounds if isinstance(rounds, int) else None,
            "threshold_mode": thresholds.get("mode"),
            "global_threshold": finite_number(thresholds.get("global"))}


def run_state(view: RunView, after: int = 0, now: datetime | None = None) -> dict[str, Any]:
    """Everything the page shows about one run; logs from line index ``after`` on."""
    now = now or datetime.now(UTC)
    status = view.status() or {}
    rounds = view.rounds()
    state = str(status.get("state", "unknown"))
    current: int = status["round"] if isinstance(status.get("round"), int) else 0
    listed: dict[str, Any] = dict(status.get("devices") or {})
    for record in rounds:  # a device known only from the metrics still gets a row
        for device in record.get("clients") or []:
            listed.setdefault(device, {"state": "idle", "last_seen": None, "last_round": None})
    devices = []
    system = system_figures(rounds)
    for device, info in listed.items():
        info = info if isinstance(info, dict) else {}
        seen_ago = _seconds_since(info.get("last_seen"), now)
        devices.append({
            "id": device, "label": client_label(device),
            "state": device_state(info, state, current, seen_ago),
            "reported_state": info.get("state"), "last_seen": info.get("last_seen"),
            "seen_seconds_ago": seen_ago, "last_round": info.get("last_round"),
            "rounds_answered": sum(device in (r.get("answered") or []) for r in rounds),
            "rejected": int(info.get("rejected") or 0)
            if isinstance(info.get("rejected"), int) else 0,
            "last_rejection": str(info["last_rejection"])
            if info.get("last_rejection") is not None else None,
            "system": system.get(device, {}),
        })
    lines = view.logs()
    reset = after > len(lines)  # the log was rewritten: start over
    start = max(0 if reset else after, len(lines) - LOG_LIMIT)
    results = view.results() if state != "running" else None
    config = view.config()
    return {
        "run": view.run_id, "state": state, "phase": status.get("phase"), "round": current,
        "interrupted_because": status.get("interrupted_because"),
        "total_rounds": status.get("total_rounds"), "engine": status.get("engine"),
        "updated_at": status.get("updated_at"),
        "updated_seconds_ago": _seconds_since(status.get("updated_at"), now),
        "now": now.isoformat(timespec="seconds"),
        "rounds": [_round_row(r) for r in rounds],
        "evaluation": evaluation_series(rounds, results),
        "evaluation_note": evaluation_note(config, sum(isinstance(r.get("evaluation"), dict)
                                                       for r in rounds), results is not None),
        "devices": devices,
        "system": system_layout(system, status.get("engine")),
        "logs": [_log_row(line) for line in lines[start:]],
        "log_cursor": len(lines), "log_reset": reset,
        "results": _final_results(results),
    }


def _runs(runs_dir: Path) -> list[RunView]:
    """:func:`list_runs`, retried when a file vanishes under it (an atomic replace)."""
    for _ in range(4):
        try:
            return list_runs(runs_dir)
        except FileNotFoundError:
            time.sleep(0.05)
    return list_runs(runs_dir)


class PollClock:
    """When the page last asked for a run's state: :meth:`~fediot.faces.dashboard.server.
    DashboardHandle.stop` (``--exit-when-done``) first lets a watching page see the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_started = -math.inf
        """Start time (``time.monotonic``) of the newest state request that completed."""

    def completed(self, started: float) -> None:
        with self._lock:
            self.last_started = max(self.last_started, started)


def create_app(runs_dir: Path, token: str | None = None) -> FastAPI:
    """The dashboard over ``runs_dir`` (which may not exist yet); ``token``: see the module."""
    runs_dir = Path(runs_dir)
    app = FastAPI(title="FedIoT dashboard", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.polls = PollClock()

    @app.middleware("http")
    async def guard(request: Request,
                    call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method not in READ_METHODS:
            return PlainTextResponse("the dashboard is read-only: GET and HEAD only", 405,
                                     headers={"Allow": "GET, HEAD"})
        given = (request.query_params.get("token") or request.headers.get(TOKEN_HEADER)
                 or request.cookies.get(TOKEN_COOKIE))
        if token is None:
            if not addressed_to_loopback(request.headers.get("host")):
                return PlainTextResponse("this dashboard answers loopback addresses only",
                                         FOREIGN_HOST_STATUS)
        elif not token_matches(given, token):
            return PlainTextResponse(
                "a token is required: open the URL with ?token= that the dashboard printed",
                401)
        response = await call_next(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if token is not None and request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, str(token), httponly=True, samesite="strict")
        return response

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def page() -> HTMLResponse:
        return HTMLResponse(PAGE_HTML, headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Frame-Options": "DENY"})

    @app.api_route("/api/runs", methods=["GET", "HEAD"])
    def runs() -> JSONResponse:
        try:
            views = _runs(runs_dir)[::-1]
            summaries = [run_summary(v) for v in views]
        except FediotError as error:
            return JSONResponse({"detail": str(error)}, 500)
        running = [s["id"] for s in summaries if s["state"] == "running"]
        default = running[0] if running else (summaries[0]["id"] if summaries else None)
        return JSONResponse({"runs_dir": str(runs_dir), "runs": summaries,
                             "default": default})

    @app.api_route("/api/runs/{run_id}/state", methods=["GET", "HEAD"])
    def state(run_id: str, after: int = 0) -> JSONResponse:
        started = time.monotonic()
        if not _RUN_ID.fullmatch(run_id) or not (runs_dir / run_id / "config.yaml").is_file():
            return JSONResponse({"detail": f"no run {run_id!r} under {runs_dir}"}, 404)
        try:
            payload = run_state(RunView(runs_dir / run_id), max(0, after))
        except FediotError as error:
            return JSONResponse({"detail": str(error)}, 500)
        app.state.polls.completed(started)
        return JSONResponse(payload)

    return app
