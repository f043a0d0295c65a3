"""Detection counts that add up across devices: a confusion matrix and per-class flag counts.

Convention: attack = positive, benign = negative. Every ratio is computed from summed counts, so
pooled metrics are exact (not averages of per-device ratios).

Undefined ratios: a ratio whose denominator is 0 (e.g. recall on a device without attack rows) is
``float("nan")`` — not 0, which would read as "detected nothing". F1 is ``2·tp / (2·tp + fp + fn)``,
0 when there are errors but no true positive and NaN only when ``tp = fp = fn = 0``. ``rates()``
gives the same values with ``None`` for NaN, ready for JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import ATTACK_CLASSES, BENIGN, TRAFFIC_CLASSES
from fediot.core.metrics.errors import MetricsInputError


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise MetricsInputError(f"{what} must be a non-negative integer; got {value!r}")
    return int(value)


def _flags(values: npt.ArrayLike, what: str) -> npt.NDArray[np.bool_]:
    array = np.asarray(values)
    if array.ndim != 1:
        raise MetricsInputError(f"{what} must be 1-D; got shape {array.shape}")
    if array.dtype != np.bool_:
        if array.size and not np.isin(array, (0, 1)).all():
            raise MetricsInputError(f"{what} must be booleans or 0/1 values")
        array = array.astype(np.bool_)
    return array


def _json_rate(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class ConfusionCounts:
    """Binary confusion counts (attack = positive).

    Parameters
    ----------
    tp, fp, tn, fn
        True/false positives and negatives (non-negative integers; all default to 0).
    """

    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _count(getattr(self, f.name), f"ConfusionCounts.{f.name}")
            object.__setattr__(self, f.name, value)

    @classmethod
    def from_labels(cls, is_attack: npt.ArrayLike, flagged: npt.ArrayLike) -> ConfusionCounts:
        """Counts from true labels and predictions (1-D booleans or 0/1, same length)."""
        truth = _flags(is_attack, "is_attack")
        predicted = _flags(flagged, "flagged")
        if truth.shape != predicted.shape:
            raise MetricsInputError(
                f"is_attack has {len(truth)} rows but flagged has {len(predicted)}"
            )
        tp = int(np.count_nonzero(truth & predicted))
        fp = int(np.count_nonzero(~truth & predicted))
        fn = int(np.count_nonzero(truth)) - tp
        return cls(tp=tp, fp=fp, tn=len(truth) - tp - fp - fn, fn=fn)

    def __add__(self, other: ConfusionCounts) -> ConfusionCounts:
        if not isinstance(other, ConfusionCounts):
            return NotImplemented
        return ConfusionCounts(
            self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn
        )

    @classmethod
    def pool(cls, parts: Iterable[ConfusionCounts]) -> ConfusionCounts:
        total = cls()
        for part in parts:
            total = total + part
        return total

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.total)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        """True-positive rate: the share of attack rows flagged."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def tpr(self) -> float:
        return self.recall

    @property
    def fpr(self) -> float:
        """False-positive rate: the share of benign rows flagged."""
        return _ratio(self.fp, self.fp + self.tn)

    @property
    def f1(self) -> float:
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def rates(self) -> dict[str, float | None]:
        """accuracy, precision, recall, fpr, f1; ``None`` where undefined."""
        return {
            "accuracy": _json_rate(self.accuracy),
            "precision": _json_rate(self.precision),
            "recall": _json_rate(self.recall),
            "fpr": _json_rate(self.fpr),
            "f1": _json_rate(self.f1),
        }

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConfusionCounts:
        for key in ("tp", "fp", "tn", "fn"):
            if key not in data:
                raise MetricsInputError(f"ConfusionCounts dict lacks key {key!r}")
        return cls(tp=data["tp"], fp=data["fp"], tn=data["tn"], fn=data["fn"])


def _check_class(name: Any) -> str:
    if name not in TRAFFIC_CLASSES:
        raise MetricsInputError(
            f"unknown traffic class {name!r}; expected one of {list(TRAFFIC_CLASSES)}"
        )
    return str(name)


@dataclass(frozen=True)
class ClassCounts:
    """Flagged and total rows per traffic class (``benign``, ``gafgyt.combo`` … ``mirai.udpplain``).

    Parameters
    ----------
    counts
        Mapping traffic class → ``(flagged, total)``; stored read-only, in catalogue order.
    """

    counts: Mapping[str, tuple[int, int]]

    def __post_init__(self) -> None:
        checked: dict[str, tuple[int, int]] = {}
        for name, pair in self.counts.items():
            _check_class(name)
            if not (isinstance(pair, Sequence) and len(pair) == 2):
                raise MetricsInputError(f"counts[{name!r}] must be (flagged, total); got {pair!r}")
            flagged = _count(pair[0], f"counts[{name!r}] flagged")
            total = _count(pair[1], f"counts[{name!r}] total")
            if flagged > total:
                raise MetricsInputError(f"counts[{name!r}] flags {flagged} of only {total} rows")
            checked[name] = (flagged, total)
        ordered = {name: checked[name] for name in TRAFFIC_CLASSES if name in checked}
        object.__setattr__(self, "counts", MappingProxyType(ordered))

    def __reduce__(self) -> tuple[Any, ...]:
        # the read-only mapping proxy cannot be pickled; engines send counts between processes
        return (ClassCounts, (dict(self.counts),))

    @classmethod
    def from_flags(cls, traffic_class: str, flagged: npt.ArrayLike) -> ClassCounts:
        """Counts of one class's rows (e.g. one N-BaIoT file) from their flags."""
        array = _flags(flagged, "flagged")
        return cls({_check_class(traffic_class): (int(np.count_nonzero(array)), len(array))})

    @classmethod
    def from_labels(cls, classes: npt.ArrayLike, flagged: npt.ArrayLike) -> ClassCounts:
        """Counts from a per-row class name array and the per-row flags (same length)."""
        names = np.asarray(classes)
        array = _flags(flagged, "flagged")
        if names.shape != array.shape:
            raise MetricsInputError(
                f"classes has shape {names.shape} but flagged has shape {array.shape}"
            )
        unique, inverse = np.unique(names, return_inverse=True)
        totals = np.bincount(inverse, minlength=len(unique))
        hits = np.bincount(inverse, weights=array, minlength=len(unique))
        return cls({
            _check_class(str(name)): (int(hit), int(total))
            for name, hit, total in zip(unique.tolist(), hits, totals, strict=True)
        })

    def __add__(self, other: ClassCounts) -> ClassCounts:
        if not isinstance(other, ClassCounts):
            return NotImplemented
        return ClassCounts.pool((self, other))

    @classmethod
    def pool(cls, parts: Iterable[ClassCounts]) -> ClassCounts:
        """The sum of ``parts`` (no counts for none), checked once rather than at every
        addition."""
        merged: dict[str, tuple[int, int]] = {}
        for part in parts:
            if not isinstance(part, ClassCounts):
                raise TypeError(f"cannot pool {type(part).__name__} with ClassCounts")
            for name, (flagged, total) in part.counts.items():
                old_flagged, old_total = merged.get(name, (0, 0))
                merged[name] = (old_flagged + flagged, old_total + total)
        return cls(merged)

    def flag_rate(self, traffic_class: str) -> float:
        """Share of the class's rows flagged: TPR for an attack class, FPR for benign."""
        flagged, total = self.counts.get(_check_class(traffic_class), (0, 0))
        return _ratio(flagged, total)

    def tpr_by_attack(self) -> dict[str, float]:
        """TPR of every attack class present, in catalogue order."""
        return {name: self.flag_rate(name) for name in ATTACK_CLASSES if name in self.counts}

    def confusion(self) -> ConfusionCounts:
        """Collapse to attack-vs-benign counts."""
        tp = fn = fp = tn = 0
        for name, (flagged, total) in self.counts.items():
            if name == BENIGN:
                fp, tn = fp + flagged, tn + total - flagged
            else:
                tp, fn = tp + flagged, fn + total - flagged
        return ConfusionCounts(tp=tp, fp=fp, tn=tn, fn=fn)

    def to_dict(self) -> dict[str, dict[str, int]]:
        """``{class: {"flagged": int, "total": int}}``."""
        return {
            name: {"flagged": flagged, "total": total}
            for name, (flagged, total) in self.counts.items()
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> ClassCounts:
        counts = {}
        for name, entry in data.items():
            for key in ("flagged", "total"):
                if not isinstance(entry, Mapping) or key not in entry:
                    raise MetricsInputError(f"ClassCounts dict entry {name!r} lacks key {key!r}")
            counts[name] = (entry["flagged"], entry["total"])
        return cls(counts)
