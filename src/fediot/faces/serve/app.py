"""The scoring API: N-BaIoT feature rows in, anomaly scores and verdicts out (FastAPI).

Endpoints
---------
``POST /score``
    Body: JSON, CSV or Parquet rows (see :mod:`fediot.faces.serve.bodies`), at most
    ``max_body_bytes`` (default 64 MiB) and ``max_rows`` rows (default 100,000; more → 413).
    Query parameters ``device`` (whose threshold applies; default the server's ``device``, else
    the run's global threshold) and ``window`` (1…100,000, or ``run`` / ``true`` for the run's
    window: its fixed
    ``detection_args.window``, or the device's own ws* when the run chose one per device;
    adds N-BaIoT's majority vote over the request's rows, which must then be consecutive rows
    of one device). Reply (JSON)::

        {"run": ..., "model_version": ..., "device": ... | null, "threshold": t, "rows": n,
         "scores": [...], "verdicts": ["attack" | "benign", ...], "attacks": k,
         "window": w, "window_verdicts": [...], "window_attacks": k_w}   # window keys if asked

    A verdict is ``attack`` when the score exceeds the threshold, as
    :meth:`AutoencoderDetector.predict`. With ``Accept: text/csv`` the reply is CSV
    (``row,score,threshold,verdict[,window_verdict]``) with ``X-Run`` / ``X-Model-Version``
    headers. Refusals are 4xx JSON ``{"detail": message}``; 503 while no model is loadable.
``GET /healthz``
    200 ``{"status": "ok", "run", "model_version", "devices", "window", "threshold_mode"}``, or
    503 ``{"status": "unavailable", "detail": why}`` while no model is loadable.
``GET /metrics``
    Prometheus text format: requests by endpoint and status, rows scored, attack verdicts,
    scoring and request latency histograms, the served model (info gauge), reloads.

An unexpected error is logged with its traceback and answered 500 ``{"detail": "internal
server error"}`` (counted in ``fediot_serve_internal_errors_total``); bad input never gets
there.

Access (:mod:`fediot.faces.access`, the dashboard's rules): with a ``token`` every request must
carry ``Authorization: Bearer <token>`` (else 401); without one, only requests whose ``Host``
names a loopback host are answered (else 403), so a web page cannot reach a server on
127.0.0.1 through DNS rebinding. FastAPI's ``/docs``, ``/redoc`` and ``/openapi.json`` are off:
its documentation pages load scripts from public CDNs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fediot.core.errors import FediotError
from fediot.core.metrics.window import window_vote
from fediot.engines.run_folder import RunView
from fediot.faces.access import (
    FOREIGN_HOST_STATUS,
    MIN_TOKEN_LENGTH,
    addressed_to_loopback,
    token_matches,
)
from fediot.faces.serve.bodies import (
    DEFAULT_MAX_ROWS,
    RequestError,
    ScoreRequest,
    media_type,
    parse_body,
    parse_window,
)
from fediot.faces.serve.metrics import CONTENT_TYPE, Registry
from fediot.faces.serve.models import LoadedModel, ModelSource

log = logging.getLogger("fediot.serve")

DEFAULT_MAX_BODY_BYTES: Final[int] = 64 * 1024 * 1024
"""Largest ``/score`` body accepted (64 MiB ≈ 45,000 CSV rows of real N-BaIoT values)."""
ENDPOINTS: Final[tuple[str, ...]] = ("/score", "/healthz", "/metrics")
_VERDICTS: Final[np.ndarray] = np.array(["benign", "attack"])


class ServeMetrics:
    """The server's Prometheus families (one registry per app)."""

    def __init__(self) -> None:
        self.registry = registry = Registry()
        self.requests = registry.counter(
            "fediot_serve_requests_total", "HTTP requests by endpoint and status code.",
            ("endpoint", "status"))
        self.request_seconds = registry.histogram(
            "fediot_serve_request_seconds", "HTTP request latency by endpoint.", ("endpoint",))
        self.rows = registry.counter(
            "fediot_serve_rows_scored_total", "Feature rows scored.")
        self.attacks = registry.counter(
            "fediot_serve_attack_verdicts_total",
            "Rows whose verdict was attack, by device (global: the run's global threshold).",
            ("device",))
        self.scoring_seconds = registry.histogram(
            "fediot_serve_scoring_seconds", "Model time per /score request (scaler and "
            "autoencoder), excluding body parsing.")
        self.model_info = registry.gauge(
            "fediot_serve_model_info", "The served model: 1 for its run and version.",
            ("run", "model_version"))
        self.model_loaded = registry.gauge(
            "fediot_serve_model_loaded", "1 while a model is loaded, else 0.")
        self.reloads = registry.counter(
            "fediot_serve_model_reloads_total",
            "Models loaded after the first (a newer global model or a later run).")
        self.reload_failures = registry.counter(
            "fediot_serve_model_load_failures_total", "Model loads that failed.")
        self.internal_errors = registry.counter(
            "fediot_serve_internal_errors_total", "Requests that hit an unexpected error (500).")


def _refusal(status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None
             ) -> tuple[Message, Message]:
    """The two ASGI messages of a JSON ``{"detail": ...}`` reply."""
    body = json.dumps({"detail": detail}).encode()
    return ({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(headers or [])]}, {"type": "http.response.body", "body": body})


class ObservedApp:
    """ASGI middleware: counts and times every HTTP request, and turns an unexpected exception
    into a logged, clean 500 JSON reply (no traceback leaves the server)."""

    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        status = 500
        started = False

        async def observe(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = int(message["status"]), True
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, observe)
        except Exception:
            log.exception("unexpected error on %s %s", scope.get("method"), path)
            self.metrics.internal_errors.inc()
            status = 500
            if not started:
                for message in _refusal(500, "internal server error"):
                    await send(message)
        finally:
            self.metrics.requests.inc(endpoint=endpoint, status=str(status))
            self.metrics.request_seconds.observe(time.perf_counter() - start, endpoint=endpoint)


class AccessGuard:
    """ASGI middleware: the access rules of :mod:`fediot.faces.access` (a bearer token when
    one is set, else a loopback ``Host``), checked before any endpoint runs."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        refusal = None
        if self.token is None:
            if not addressed_to_loopback(headers.get("host")):
                refusal = _refusal(FOREIGN_HOST_STATUS, "this server answers requests to a "
                                   "loopback address only (start it with --token to serve "
                                   "other names)")
        else:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token_matches(given.strip(), self.token):
                refusal = _refusal(401, "an access token is required: send "
                                   "'Authorization: Bearer <token>'",
                                   [(b"www-authenticate", b'Bearer realm="fediot"')])
        if refusal is None:
            await self.app(scope, receive, send)
            return
        for message in refusal:
            await send(message)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    too_large = f"body larger than the limit of {limit:,} bytes; split the rows into requests"
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(too_large, 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(too_large, 413)
        chunks.append(chunk)
    return b"".join(chunks)


def _json(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload), status, media_type="application/json")


def _wants_csv(accept: str | None) -> bool:
    """True when ``Accept`` ranks ``text/csv`` above JSON (q-values; ties go to JSON)."""
    ranks: dict[str, float] = {}
    for part in (accept or "").split(","):
        kind, *params = (p.strip().lower() for p in part.split(";"))
        quality = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        ranks[kind] = max(ranks.get(kind, 0.0), quality)
    json_rank = max(ranks.get("application/json", 0.0), ranks.get("*/*", 0.0),
                    ranks.get("application/*", 0.0))
    return ranks.get("text/csv", 0.0) > json_rank


def _resolve_device(model: LoadedModel, device: str | None) -> float:
    try:
        return model.threshold(device)
    except KeyError:
        raise RequestError(f"unknown device {device!r}; run {model.run_id} has thresholds for "
                           f"{', '.join(model.devices)}") from None


def _merge(name: str, body_value: Any, query_value: Any) -> Any:
    if body_value is not None and query_value is not None and body_value != query_value:
        raise RequestError(f"{name} is {body_value!r} in the body but {query_value!r} in the "
                           "query; give it once")
    return body_value if body_value is not None else query_value


def create_app(view_or_run_ref: RunView | str | Path, *, runs_dir: Path = Path("runs"),
               device: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_rows: int = DEFAULT_MAX_ROWS, check_interval: float = 1.0,
               token: str | None = None) -> FastAPI:
    """The scoring API of a run's global model (see the module docstring).

    Parameters
    ----------
    view_or_run_ref
        A :class:`RunView`, or a run reference for :func:`find_run` (path, id, unique prefix,
        or ``latest``, which follows the newest finished run with a saved model).
    runs_dir
        Where run ids and ``latest`` are looked up (default ``runs``).
    device
        Default device whose threshold applies when a request names none (default: the
        run's global threshold).
    max_body_bytes
        Largest ``/score`` body (default 64 MiB).
    max_rows
        Most rows per ``/score`` request (default 100,000).
    check_interval
        Minimum seconds between two looks for a newer model (default 1.0).
    token
        Access token every request must carry as ``Authorization: Bearer``; ``None`` (default)
        answers loopback ``Host`` names only. Binding a non-loopback address without a token
        is refused by ``fediot serve``.

    Raises
    ------
    FediotError
        A pinned reference naming no run, a bad limit, a short token, or ``device`` unknown to
        the model loaded at start.
    """
    if max_body_bytes < 1:
        raise FediotError(f"max_body_bytes must be ≥ 1; got {max_body_bytes}")
    if max_rows < 1:
        raise FediotError(f"max_rows must be ≥ 1; got {max_rows}")
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise FediotError(f"token: at least {MIN_TOKEN_LENGTH} characters (got {len(token)})")
    metrics = ServeMetrics()
    loads = 0

    def on_load(model: LoadedModel) -> None:
        nonlocal loads
        loads += 1
        if loads > 1:
            metrics.reloads.inc()
        metrics.model_info.replace(1, run=model.run_id, model_version=model.version)
        metrics.model_loaded.set(1)

    source = ModelSource(view_or_run_ref, runs_dir, check_interval=check_interval,
                         on_load=on_load, on_failure=lambda _: metrics.reload_failures.inc())
    if device is not None and source.model is not None:
        _resolve_device(source.model, device)  # fail at start, not on every request

    # no /docs, /redoc, /openapi.json: FastAPI's pages load their scripts from public CDNs
    app = FastAPI(title="FedIoT scoring API", version="1",
                  description="Anomaly scores of N-BaIoT feature rows from a run's global model.",
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.source = source
    app.state.metrics = metrics
    app.add_middleware(AccessGuard, token=token)
    app.add_middleware(ObservedApp, metrics=metrics)  # the outermost: counts refusals too

    @app.exception_handler(RequestError)
    async def refused(_: Request, error: RequestError) -> Response:
        return _json({"detail": str(error)}, error.status)

    def unavailable() -> RequestError:
        why = source.last_error or "no model loaded"
        return RequestError(f"no model to serve yet: {why}", 503)

    def score(model: LoadedModel, parsed: ScoreRequest, device: str | None,
              window: int | None) -> dict[str, Any]:
        threshold = _resolve_device(model, device)
        start = time.perf_counter()
        scores = model.detector.score_samples(parsed.rows)
        metrics.scoring_seconds.observe(time.perf_counter() - start)
        flags = scores > threshold
        attacks = int(flags.sum())
        metrics.rows.inc(len(scores))
        metrics.attacks.inc(attacks, device=device or "global")
        reply: dict[str, Any] = {
            "run": model.run_id, "model_version": model.version, "device": device,
            "threshold": threshold, "rows": len(scores), "scores": scores.tolist(),
            "verdicts": _VERDICTS[flags.astype(np.int64)].tolist(), "attacks": attacks}
        if window is not None:
            voted = window_vote(flags, window)
            reply.update(window=window, window_verdicts=_VERDICTS[voted.astype(np.int64)].tolist(),
                         window_attacks=int(voted.sum()))
        return reply

    @app.post("/score")
    async def score_rows(request: Request) -> Response:
        media_type(request.headers.get("content-type"))  # 415 before reading the body
        query = request.query_params
        query_window = parse_window(query.get("window"), "query parameter 'window'")
        model = source.current()
        if model is None:
            raise unavailable()
        body = await read_body(request, max_body_bytes)
        parsed = await run_in_threadpool(parse_body, body, request.headers.get("content-type"),
                                         max_rows)
        chosen = _merge("device", parsed.device, query.get("device")) or device
        choice = _merge("window", parsed.window, query_window)
        window = model.window_for(chosen) if choice == "run" else choice
        reply = await run_in_threadpool(score, model, parsed, chosen, window)
        if _wants_csv(request.headers.get("accept")):
            return Response(_csv_reply(reply), media_type="text/csv", headers={
                "X-Run": model.run_id, "X-Model-Version": model.version})
        return _json(reply)

    @app.get("/healthz")
    async def healthz() -> Response:
        model = source.current()
        if model is None:
            return _json({"status": "unavailable", "run": source.run_id,
                          "detail": source.last_error or "no model loaded"}, 503)
        return _json({"status": "ok", "run": model.run_id, "model_version": model.version,
                      "devices": model.devices, "window": model.window,
                      "windows": {d: model.window_for(d) for d in model.devices},
                      "threshold_mode": model.thresholds.mode,
                      "follows_latest": source.follows_latest})

    @app.get("/metrics")
    async def prometheus() -> Response:
        if source.current() is None:
            metrics.model_loaded.set(0)
        return Response(metrics.registry.render(), media_type=CONTENT_TYPE)

    return app


def _csv_reply(reply: dict[str, Any]) -> str:
    voted = reply.get("window_verdicts")
    header = "row,score,threshold,verdict" + (",window_verdict" if voted else "")
    threshold = repr(float(reply["threshold"]))
    lines = [header]
    for index, (value, verdict) in enumerate(zip(reply["scores"], reply["verdicts"],
                                                 strict=True)):
        line = f"{index + 1},{value!r},{threshold},{verdict}"
        lines.append(line + f",{voted[index]}" if voted else line)
    return "\n".join(lines) + "\n"
