"""Shared test fixtures: where the shared real data lives (``../shared`` beside the repo); the
Hypothesis profile of the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# The suite runs in parallel (./run_tests.sh, pytest-xdist) on a machine other work may load:
# Hypothesis's default 200 ms per-example deadline would turn that load into failures. Hangs
# are caught where they matter by the fuzz suite's own guard (tests/fuzz/conftest.py).
settings.register_profile("fediot", deadline=None)
settings.load_profile("fediot")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FEDIOT_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session", autouse=True)
def _test_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Feature-file caches of the suite's throw-away data sets go to a temporary folder (each
    run would otherwise leave ~200 entries, keyed on files that are gone, in the user's cache);
    the testbed, costly to build and the same every run, stays shared with the user's cache.
    Set for this process and every command the tests start."""
    from fediot.core.paths import CACHE_ENV, cache_dir

    testbed = cache_dir("testbed")
    testbed.mkdir(parents=True, exist_ok=True)
    root = tmp_path_factory.mktemp("cache")
    (root / "testbed").symlink_to(testbed, target_is_directory=True)
    previous = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(root)
    yield
    if previous is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = previous


def _shared_path(relative: str) -> Path:
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"shared test data not found: {path} (set FEDIOT_SHARED to the shared folder)")
    return path


@pytest.fixture(scope="session")
def nbaiot_dir() -> Path:
    """``shared/data/nbaiot``: three real N-BaIoT files, feature names, official metadata."""
    return _shared_path("data/nbaiot")


@pytest.fixture(scope="session")
def nbaiot_more_dir() -> Path:
    """``shared/data/nbaiot_more``: the real Danmini's first 3,050 benign rows in time order
    and the complete real Ennio Gafgyt TCP/UDP floods (zipped)."""
    return _shared_path("data/nbaiot_more")


@pytest.fixture
def real_pcap() -> Path:
    """``shared/data/pcap/kitsune_mirai_first2000.pcap``: 2,000 real IoT-camera packets."""
    return _shared_path("data/pcap/kitsune_mirai_first2000.pcap")


from browser import browser_page, chromium  # noqa: E402  (page-test fixtures for every test)

__all__ = ["browser_page", "chromium", "nbaiot_dir", "nbaiot_more_dir", "real_pcap"]
