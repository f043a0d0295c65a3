"""A local HTTP server for download tests: one payload, HTTP Range support, optional dropped bodies.

Listens on 127.0.0.1 at an ephemeral port, in a background thread, and records every request
so a test can see whether a resume asked for the right range.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Final

_RANGE: Final[re.Pattern[str]] = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class Served:
    """What the server serves and how it misbehaves.

    Parameters
    ----------
    content
        The bytes at ``path``.
    path
        URL path of the payload (default ``/archive.zip``).
    ranges
        Honour ``Range`` headers (default True); False answers 200 with the whole payload.
    drop_after
        For the first ``drops`` responses, send only this many body bytes, then cut the
        connection (the headers announce the full length).
    drops
        How many responses to cut (default 0).
    etag
        The payload's ETag (compared with ``If-Range``).
    """

    content: bytes
    path: str = "/archive.zip"
    ranges: bool = True
    drop_after: int = 0
    drops: int = 0
    etag: str = '"fixture-v1"'
    requests: list[dict[str, str | None]] = field(default_factory=list)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, served: Served) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.served = served
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_GET(self) -> None:
        served = self.server.served
        range_header = self.headers.get("Range")
        with self.server.lock:
            served.requests.append(
                {"path": self.path, "range": range_header, "if_range": self.headers.get("If-Range")}
            )
        if self.path != served.path:
            self._send(404, b"not found", {})
            return
        content = served.content
        start, end, status = 0, len(content) - 1, 200
        match = _RANGE.match(range_header or "")
        if_range = self.headers.get("If-Range")
        if served.ranges and match is not None and if_range in (None, served.etag):
            start = int(match.group(1))
            if start >= len(content):
                self._send(416, b"", {"Content-Range": f"bytes */{len(content)}"})
                return
            end = min(int(match.group(2)), end) if match.group(2) else end
            status = 206
        headers = {"ETag": served.etag}
        if served.ranges:
            headers["Accept-Ranges"] = "bytes"
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
        body = content[start : end + 1]
        with self.server.lock:
            cut = served.drops > 0
            if cut:
                served.drops -= 1
        if cut:
            self._send(status, body, headers, send_only=served.drop_after)
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self._send(status, body, headers)

    def _send(
        self, status: int, body: bytes, headers: dict[str, str], send_only: int | None = None
    ) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if send_only is None else body[:send_only])


class RangeServer:
    """Context manager running a :class:`Served` payload; ``url`` is its address."""

    def __init__(self, served: Served) -> None:
        self.served = served
        self._server = _Server(served)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self.served.path}"

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
