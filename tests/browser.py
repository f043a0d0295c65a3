"""A real headless Chromium (Debian's ``chromium``) driven by Playwright, for page tests.

Use the ``browser_page`` fixture (re-exported by ``tests/conftest.py``): a fresh page in a
fresh browser context; the browser process is started once per test session and closed at
the end. Playwright never downloads a browser here: it drives ``/usr/bin/chromium``
(``scripts/setup-system.sh`` installs it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # this machine's network is closed: background connections only produce errors
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def chromium_path() -> str:
    path = os.environ.get("FEDIOT_CHROMIUM") or shutil.which("chromium")
    if path is None:
        pytest.fail("Chromium not found: run scripts/setup-system.sh (installs Debian's "
                    "chromium) or set FEDIOT_CHROMIUM to a Chromium executable")
    return path


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A Playwright ``Browser`` on Debian's Chromium (one process for the session)."""
    from playwright.sync_api import sync_playwright

    # Playwright gives the browser a fresh temporary profile of its own
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(),
                                             args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Any]:
    """A fresh Playwright ``Page``; JavaScript errors on the page fail the test."""
    context = chromium.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
