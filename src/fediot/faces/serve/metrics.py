"""A small, thread-safe Prometheus registry rendered in the text exposition format (0.0.4).

Only what the server needs: counters, gauges and histograms, with labels. Each family renders
as ``# HELP``, ``# TYPE`` and its samples; label values escape ``\\``, ``"`` and newlines, help
text escapes ``\\`` and newlines, and values are Go-style floats (``+Inf``, ``NaN``).
"""

from __future__ import annotations

import itertools
import math
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Final, TypeVar

CONTENT_TYPE: Final[str] = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final[tuple[float, ...]] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (seconds) of the latency histograms."""

_NAME: Final[re.Pattern[str]] = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL: Final[re.Pattern[str]] = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

LabelValues = tuple[str, ...]


def format_value(value: float) -> str:
    """A sample value as the exposition format writes it."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class _Family:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        if not _NAME.fullmatch(name):
            raise ValueError(f"invalid metric name {name!r}")
        for label in labelnames:
            if not _LABEL.fullmatch(label) or label.startswith("__") or label == "le":
                raise ValueError(f"invalid label name {label!r}")
        self.name = name
        self.help_text = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}; got {sorted(labels)}")
        return tuple(str(labels[name]) for name in self.labelnames)

    def samples(self) -> Iterator[str]:
        raise NotImplementedError

    def render(self) -> str:
        help_text = self.help_text.replace("\\", "\\\\").replace("\n", "\\n")
        head = f"# HELP {self.name} {help_text}\n# TYPE {self.name} {self.kind}\n"
        return head + "".join(line + "\n" for line in self.samples())


class Counter(_Family):
    """A monotonically increasing count per label set (name should end in ``_total``)."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {} if labelnames else {(): 0.0}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def samples(self) -> Iterator[str]:
        with self._lock:
            items = sorted(self._values.items())
        for key, value in items:
            yield f"{self.name}{_labels(self.labelnames, key)} {format_value(value)}"


class Gauge(_Family):
    """A value that goes up and down, per label set; :meth:`clear` drops every label set."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {} if labelnames else {(): 0.0}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def replace(self, value: float, **labels: str) -> None:
        """Drop every label set, then set this one (an info gauge's new identity)."""
        key = self._key(labels)
        with self._lock:
            self._values = {key: float(value)}

    def clear(self) -> None:
        with self._lock:
            self._values = {} if self.labelnames else {(): 0.0}

    def samples(self) -> Iterator[str]:
        with self._lock:
            items = sorted(self._values.items())
        for key, value in items:
            yield f"{self.name}{_labels(self.labelnames, key)} {format_value(value)}"


class Histogram(_Family):
    """Observations counted into cumulative ``le`` buckets, with ``_sum`` and ``_count``.

    Parameters
    ----------
    buckets
        Increasing finite upper bounds; ``+Inf`` is added.
    """

    kind = "histogram"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = (),
                 buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        super().__init__(name, help_text, labelnames)
        bounds = [float(b) for b in buckets]
        if not bounds or any(b >= c for b, c in itertools.pairwise(bounds)):
            raise ValueError("histogram buckets must be non-empty and increasing")
        self.bounds = (*bounds, math.inf)
        self._counts: dict[LabelValues, list[int]] = {}
        self._sums: dict[LabelValues, float] = {}
        if not labelnames:
            self._counts[()] = [0] * len(self.bounds)
            self._sums[()] = 0.0

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * len(self.bounds))
            for index, bound in enumerate(self.bounds):
                if value <= bound:
                    counts[index] += 1
                    break
            self._sums[key] = self._sums.get(key, 0.0) + value

    def samples(self) -> Iterator[str]:
        with self._lock:
            items = sorted((key, list(counts), self._sums[key])
                           for key, counts in self._counts.items())
        names = (*self.labelnames, "le")
        for key, counts, total in items:
            cumulative = 0
            for bound, count in zip(self.bounds, counts, strict=True):
                cumulative += count
                labels = _labels(names, (*key, format_value(bound)))
                yield f"{self.name}_bucket{labels} {cumulative}"
            plain = _labels(self.labelnames, key)
            yield f"{self.name}_sum{plain} {format_value(total)}"
            yield f"{self.name}_count{plain} {cumulative}"


FamilyT = TypeVar("FamilyT", bound=_Family)


class Registry:
    """The families a server exposes, rendered in registration order."""

    def __init__(self) -> None:
        self._families: list[_Family] = []

    def _add(self, family: FamilyT) -> FamilyT:
        if any(f.name == family.name for f in self._families):
            raise ValueError(f"metric {family.name!r} is registered already")
        self._families.append(family)
        return family

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help_text, labelnames))

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help_text, labelnames))

    def histogram(self, name: str, help_text: str, labelnames: Sequence[str] = (),
                  buckets: Sequence[float] = LATENCY_BUCKETS) -> Histogram:
        return self._add(Histogram(name, help_text, labelnames, buckets))

    def render(self) -> str:
        """The whole exposition, ending with a newline."""
        return "".join(family.render() for family in self._families)
