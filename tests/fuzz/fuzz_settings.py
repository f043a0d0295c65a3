"""Hypothesis settings shared by the fuzz suite.

``fuzz(n)`` runs a property on ``n`` examples with no per-example deadline (the conftest's hang
guard stands in for one) and no health checks (fuzz strategies are slow and large on purpose).
``FEDIOT_FUZZ_SCALE`` multiplies every ``n`` (e.g. ``FEDIOT_FUZZ_SCALE=10`` for a long local
run; CI uses 1, about 16,000 examples in all). The examples are derandomised (the same ones
every run) so that CI fails only on a change of the code, never on a lucky draw;
``FEDIOT_FUZZ_RANDOM=1`` draws fresh ones to hunt for new bugs.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def _scale() -> float:
    try:
        return max(0.01, float(os.environ.get("FEDIOT_FUZZ_SCALE", "1")))
    except ValueError:
        return 1.0


def fuzz(max_examples: int) -> settings:
    """Settings for a fuzz property that tries ``max_examples`` examples (times the scale)."""
    return settings(
        max_examples=max(1, round(max_examples * _scale())),
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=os.environ.get("FEDIOT_FUZZ_RANDOM") != "1",
    )
