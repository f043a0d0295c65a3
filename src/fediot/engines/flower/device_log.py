"""Why a device's SuperNode stopped or cannot connect, read from its own log (and one probe).

Flower's SuperNode writes the precise cause of a failed connection to its log and exits with
code 305 (``Failed to activate SuperNode`` for a key the SuperLink does not admit,
``CERTIFICATE_VERIFY_FAILED`` for a certificate that does not chain to its CA, an SSL error for
TLS spoken to a plain-HTTP server); a node the SuperLink no longer knows (a new server session)
gets HTTP 401 and stops itself with exit code 0. Plain HTTP spoken to a TLS port only shows as
endless "Connection attempt failed" retries, so :func:`speaks_tls` asks the server directly.
"""

from __future__ import annotations

import re
import socket
import ssl
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Final


class Failure(Enum):
    """What went wrong between a device and the server."""

    REFUSED = "refused"
    """The SuperLink does not admit this device's key."""
    CERTIFICATE = "certificate"
    """The server's certificate failed verification against the device's CA."""
    NOT_TLS = "not-tls"
    """The device speaks TLS, the server plain HTTP."""
    PLAIN_HTTP = "plain-http"
    """The device speaks plain HTTP, the server TLS."""
    DROPPED = "dropped"
    """The SuperLink stopped knowing the node (HTTP 401): a new server session."""
    OTHER = "other"
    """Flower could not connect for another reason (its words are kept)."""


@dataclass(frozen=True)
class Diagnosis:
    """A failure and Flower's own words for it (one line)."""

    failure: Failure
    detail: str


_CONNECTION_FAILED: Final[str] = "Failed to initialize the connection to the SuperLink."
_UNAUTHORIZED: Final[re.Pattern[str]] = re.compile(r"\b401 Unauthorized\b")
_ANSI: Final[re.Pattern[str]] = re.compile(r"\x1b\[[0-9;]*m")


def diagnose(log_text: str) -> Diagnosis | None:
    """The failure a SuperNode's log (one start's part of it) reports, or None.

    Parameters
    ----------
    log_text
        The SuperNode's output since it was started.
    """
    text = _ANSI.sub("", log_text)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() == _CONNECTION_FAILED:
            detail = next((rest.strip() for rest in lines[index + 1:] if rest.strip()), "")
            return Diagnosis(_classify(detail), detail)
    match = _UNAUTHORIZED.search(text)
    if match:
        line = text[text.rfind("\n", 0, match.start()) + 1:text.find("\n", match.end())]
        return Diagnosis(Failure.DROPPED, line.strip())
    return None


def _classify(detail: str) -> Failure:
    if "Failed to activate SuperNode" in detail:
        return Failure.REFUSED
    if "CERTIFICATE_VERIFY_FAILED" in detail:
        return Failure.CERTIFICATE
    if any(term in detail.lower() for term in ("ssl", "tls", "record layer")):
        return Failure.NOT_TLS
    return Failure.OTHER


def speaks_tls(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether ``host:port`` completes a TLS handshake (certificate not checked: this only
    tells plain HTTP from TLS; the SuperNode checks the certificate itself)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw, \
                context.wrap_socket(raw, server_hostname=host):
            return True
    except (OSError, ssl.SSLError):
        return False


def explain(diagnosis: Diagnosis, *, server: str, node_key: Path | None,
            root_certificates: Path | None) -> str:
    """One line for the device's operator: the cause, Flower's words, and what to do.

    Parameters
    ----------
    diagnosis
        What :func:`diagnose` (or the plain-HTTP probe) found.
    server
        The SuperLink's ``host:port``.
    node_key, root_certificates
        The device's key and CA certificate (None with ``--insecure``).
    """
    failure, detail = diagnosis.failure, diagnosis.detail
    if failure is Failure.REFUSED:
        key = f"this device's key {node_key}" if node_key else "this device"
        public = f" ({node_key.with_suffix('.pub').name})" if node_key else ""
        return (f"{server} refused {key}: \"{detail}\" — the server admits only the public "
                f"keys in its devices folder; add this device's{public} and restart the server")
    if failure is Failure.CERTIFICATE:
        return (f"{server}'s TLS certificate failed verification against {root_certificates}: "
                f"\"{detail}\" — pass the server's ca.crt with --root-certificates, and check "
                "that the server certificate names the host you connect to")
    if failure is Failure.NOT_TLS:
        return (f"{server} does not speak TLS (a server started with --insecure?): \"{detail}\""
                " — start the server with certificates, or use --insecure on loopback")
    if failure is Failure.PLAIN_HTTP:
        return (f"{server} speaks TLS but this device uses plain HTTP (--insecure): drop "
                "--insecure and pass the server's CA with --root-certificates")
    if failure is Failure.DROPPED:
        return (f"{server} dropped this device (HTTP 401: it no longer knows this node, as after "
                f"a new server session): \"{detail}\"")
    return f"the SuperNode could not connect to {server}: \"{detail}\""
