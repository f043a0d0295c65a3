"""Who may talk to FedIoT's HTTP faces (the live dashboard and ``fediot serve``): one place for
the rules both follow.

- Bound to a loopback address, a face needs no token, but answers only requests whose ``Host``
  header names a loopback host: a web page elsewhere cannot reach it by rebinding a DNS name
  to 127.0.0.1 (the browser would send that name as ``Host``).
- Bound to any other address, a face must have an access token (at least
  :data:`MIN_TOKEN_LENGTH` characters), and then every request must carry it; the token,
  unknown to a rebinding page, replaces the ``Host`` check.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Final

from fediot.engines.addresses import is_loopback

MIN_TOKEN_LENGTH: Final[int] = 16
"""Shortest access token accepted (a guessable token protects nothing)."""

FOREIGN_HOST_STATUS: Final[int] = 403
"""HTTP status of a request without a token whose ``Host`` is not a loopback name."""


def new_token() -> str:
    """A fresh random access token (URL-safe, 32 characters)."""
    return secrets.token_urlsafe(24)


def host_name(host_header: str) -> str:
    """``127.0.0.1:8765`` → ``127.0.0.1``, ``[::1]:8765`` → ``::1``, ``localhost`` as is."""
    if host_header.startswith("["):
        return host_header[1:].partition("]")[0]
    return host_header.rpartition(":")[0] if host_header.count(":") == 1 else host_header


def addressed_to_loopback(host_header: str | None) -> bool:
    """Whether a request's ``Host`` header names a loopback host (a missing one does not)."""
    return is_loopback(host_name(host_header or ""))


def token_matches(given: str | None, expected: str) -> bool:
    """Whether ``given`` is the token, compared in constant time (no timing side channel)."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def binding_problem(host: str, token: str | None, service: str,
                    token_options: str = "a --token") -> str | None:
    """Why ``service`` may not listen on ``host`` with ``token`` (``None`` if it may): a
    non-loopback address without a token, or a token shorter than :data:`MIN_TOKEN_LENGTH`.

    ``token_options`` names the options that give a token, for the message.
    """
    if token is None and not is_loopback(host):
        return (f"--host {host}: {service} would be open to anyone who can reach this address; "
                f"give {token_options} (at least {MIN_TOKEN_LENGTH} characters), or bind "
                "127.0.0.1 and use an SSH tunnel")
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        return f"--token: at least {MIN_TOKEN_LENGTH} characters (got {len(token)})"
    return None
