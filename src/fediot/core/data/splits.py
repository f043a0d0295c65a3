"""Per-device splits in time order, as in N-BaIoT: train / threshold ("opt") / test.

A device's benign rows are cut, in file (time) order, into three consecutive blocks: ``train``
(fit the model and the feature scaler), ``opt`` (choose the anomaly threshold) and
``test_benign`` (evaluation only); default one third each. Attack rows are test-only; an
optional cap keeps a fixed-seed random subset of each attack class, still in time order.

The fit side (``train``, ``opt``) and the test side (``test_benign``, ``test_attacks``) are
separate fields, and nothing else in :class:`DeviceSplit` mixes them: code that fits a scaler,
a model or a threshold takes ``train`` / ``opt`` and has no reason to touch a ``test_*`` field.
Every block carries the row indices it came from, so disjointness can be proved, not assumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import ATTACK_CLASSES, BENIGN, device_by_id
from fediot.core.data.errors import DataError
from fediot.core.data.layouts import NBaIoTSource
from fediot.core.data.reader import FeatureMatrix

RowIndex = npt.NDArray[np.int64]
"""0-based row numbers into one feature file, ascending."""

DEFAULT_FRACTIONS: Final[tuple[float, float, float]] = (1 / 3, 1 / 3, 1 / 3)
"""N-BaIoT's split of each device's benign rows: train, opt (threshold), test."""

_SUM_TOLERANCE: Final[float] = 1e-9


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate (train, opt, test) fractions: three finite positive numbers summing to 1."""
    values = tuple(float(value) for value in fractions)
    if len(values) != 3:
        raise DataError(f"split fractions: expected 3 (train, opt, test), got {len(values)}")
    for name, value in zip(("train", "opt", "test"), values, strict=True):
        if not math.isfinite(value) or value <= 0:
            raise DataError(f"split fractions: {name} fraction is {value}, must be positive")
    if abs(sum(values) - 1.0) > _SUM_TOLERANCE:
        raise DataError(f"split fractions: {values} sum to {sum(values)}, must sum to 1")
    return values[0], values[1], values[2]


def benign_bounds(n_rows: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> tuple[int, int]:
    """Cut points ``(a, b)``: train rows ``[0, a)``, opt rows ``[a, b)``, test rows ``[b, n_rows)``.

    Each block gets at least one row; fewer than three rows is a :class:`DataError`.
    """
    train, opt, _ = check_fractions(fractions)
    if n_rows < 3:
        raise DataError(f"{n_rows} benign rows cannot be split into train, opt and test")
    # The tiny epsilon keeps e.g. 3 · (1/3 + 1/3) at 2, not 1.9999999999999998.
    a = min(max(math.floor(n_rows * train + 1e-9), 1), n_rows - 2)
    b = min(max(math.floor(n_rows * (train + opt) + 1e-9), a + 1), n_rows - 1)
    return a, b


@dataclass(frozen=True)
class DeviceSplit:
    """One device's data, split for fitting and for testing.

    Parameters
    ----------
    uci_id
        The device.
    train
        Benign rows for fitting the model and the feature scaler (first block in time).
    opt
        Benign rows for choosing the anomaly threshold (second block).
    test_benign
        Benign rows for evaluation only (last block). Never fit or threshold on it.
    test_attacks
        Attack class (``"gafgyt.combo"`` …) → its rows, evaluation only; only the classes the
        device has.
    train_rows, opt_rows, test_benign_rows
        Row numbers of each benign block in the benign file.
    test_attack_rows
        Attack class → row numbers in that class's file.

    All matrices are read-only float32 (rows, 115) arrays in time order; uncapped blocks are
    memory-mapped views of the cache, not copies.
    """

    uci_id: int
    train: FeatureMatrix
    opt: FeatureMatrix
    test_benign: FeatureMatrix
    test_attacks: Mapping[str, FeatureMatrix]
    train_rows: RowIndex
    opt_rows: RowIndex
    test_benign_rows: RowIndex
    test_attack_rows: Mapping[str, RowIndex]

    def test_sets(self) -> Iterator[tuple[str, FeatureMatrix]]:
        """Every test block with its traffic class: ``("benign", test_benign)``, then attacks."""
        yield BENIGN, self.test_benign
        yield from self.test_attacks.items()


def split_device(
    source: NBaIoTSource,
    uci_id: int,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    attack_cap: int | None = None,
    seed: int = 0,
) -> DeviceSplit:
    """Split one device of ``source``; see :class:`DeviceSplit`.

    Parameters
    ----------
    source
        The dataset (:func:`~fediot.core.data.layouts.open_dataset`).
    uci_id
        The device; it must have a benign file.
    fractions
        (train, opt, test) shares of the benign rows, positive, summing to 1; default 1/3 each.
    attack_cap
        At most this many rows per attack class (a random subset, kept in time order); None
        keeps every row.
    seed
        Seed of the attack subsets. The subset of a class depends only on (seed, device, class),
        not on which other classes are present.
    """
    checked = check_fractions(fractions)
    if attack_cap is not None and attack_cap < 1:
        raise DataError(f"attack_cap is {attack_cap}, must be a positive row count or None")
    if seed < 0:
        raise DataError(f"seed is {seed}, must be a non-negative integer")
    try:
        device_by_id(uci_id)
    except KeyError as error:
        raise DataError(str(error.args[0])) from None

    benign = source.load(uci_id, BENIGN)
    try:
        a, b = benign_bounds(benign.shape[0], checked)
    except DataError as error:
        raise DataError(f"{source.file(uci_id, BENIGN)}: {error}") from None
    n_benign = benign.shape[0]

    attacks: dict[str, FeatureMatrix] = {}
    attack_rows: dict[str, RowIndex] = {}
    for traffic_class in source.classes(uci_id):
        if traffic_class == BENIGN:
            continue
        matrix = source.load(uci_id, traffic_class)
        rows = _capped_rows(matrix.shape[0], attack_cap, seed, uci_id, traffic_class)
        attack_rows[traffic_class] = rows
        attacks[traffic_class] = matrix if rows.size == matrix.shape[0] else _frozen(matrix[rows])

    return DeviceSplit(
        uci_id=uci_id,
        train=benign[:a],
        opt=benign[a:b],
        test_benign=benign[b:],
        test_attacks=MappingProxyType(attacks),
        train_rows=_frozen_rows(np.arange(0, a, dtype=np.int64)),
        opt_rows=_frozen_rows(np.arange(a, b, dtype=np.int64)),
        test_benign_rows=_frozen_rows(np.arange(b, n_benign, dtype=np.int64)),
        test_attack_rows=MappingProxyType(attack_rows),
    )


def _capped_rows(
    n_rows: int, cap: int | None, seed: int, uci_id: int, traffic_class: str
) -> RowIndex:
    if cap is None or n_rows <= cap:
        return _frozen_rows(np.arange(n_rows, dtype=np.int64))
    generator = np.random.default_rng([seed, uci_id, ATTACK_CLASSES.index(traffic_class)])
    chosen = generator.choice(n_rows, size=cap, replace=False)
    return _frozen_rows(np.sort(chosen).astype(np.int64))


def _frozen(matrix: FeatureMatrix) -> FeatureMatrix:
    matrix.flags.writeable = False
    return matrix


def _frozen_rows(rows: RowIndex) -> RowIndex:
    rows.flags.writeable = False
    return rows
