"""The error raised on bad input to the metrics."""

from __future__ import annotations

from fediot.core.errors import FediotError


class MetricsInputError(FediotError):
    """Bad input to a metric: wrong shape or type, a negative count, an unknown traffic class."""
