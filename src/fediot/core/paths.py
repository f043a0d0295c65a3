"""Where FedIoT keeps derived files (dataset caches), in one place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

CACHE_ENV: Final[str] = "FEDIOT_CACHE_DIR"
"""Environment variable naming FedIoT's cache root."""

XDG_ENV: Final[str] = "XDG_CACHE_HOME"
"""The XDG base-directory variable, used when :data:`CACHE_ENV` is unset."""


def cache_dir(kind: str) -> Path:
    """``$FEDIOT_CACHE_DIR/<kind>``, else ``$XDG_CACHE_HOME/fediot/<kind>``, else
    ``~/.cache/fediot/<kind>`` (``kind``: ``nbaiot``, ``testbed``)."""
    configured = os.environ.get(CACHE_ENV)
    if configured:
        return Path(configured).expanduser() / kind
    xdg = os.environ.get(XDG_ENV)
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fediot" / kind


def describe_cache_dir(kind: str) -> str:
    """How :func:`cache_dir` chooses ``kind``'s folder, for help texts."""
    return (f"${CACHE_ENV}/{kind}, else ${XDG_ENV}/fediot/{kind}, "
            f"else ~/.cache/fediot/{kind}")
