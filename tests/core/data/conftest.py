"""Data-layer test setup: every test gets its own parse cache, never the user's ~/.cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from fediot.core.paths import CACHE_ENV


@pytest.fixture(autouse=True)
def private_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Point ``FEDIOT_CACHE_DIR`` at a fresh folder; return the N-BaIoT cache root inside it."""
    folder = tmp_path_factory.mktemp("fediot-cache")
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder / "nbaiot"
