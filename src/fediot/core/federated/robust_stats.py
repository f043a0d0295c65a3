"""How the server combines the devices' statistics outside training: the scaler step's
:class:`ScalerStats` and the threshold step's :class:`ErrorStats`.

A robust aggregation of the weights (FedMedian, FedTrimmedAvg, Krum, MultiKrum, Bulyan) is
worth little if the other two steps stay plain sums: one device reporting inflated scaler
sums, or errors twice their size, moves a pooled sum wherever it likes. So each aggregation
comes with a matching combination of statistics (:func:`statistics_combination`):

* :class:`PooledSums` — the exact sums, every row weighing the same (FedAvg, FedProx, FedAdam;
  what the engines assert equal across engines).
* :class:`TrimmedMeanCombination` — every device reduced to its own mean, spread and error
  CDF, then the coordinate-wise trimmed mean across devices with ``train_args.trimmed_beta``
  (``int(beta · n)`` devices cut at each end, as Flower's FedTrimmedAvg cuts, but at least one
  from 3 devices on): the default for every robust strategy.
* :class:`MedianCombination` — the same, combined by the coordinate-wise median
  (``robust_statistics: median``).

Why the trimmed mean by default, even under FedMedian or Krum: the devices differ (each
IoT device its own traffic), and the median of their error CDFs is the median of their
per-device quantiles, so on the global quantile threshold about half the devices sit above it
(on the synthetic test devices: a false-alarm rate of 33 % for q = 0.99, against 0 % for the
pooled sums). The trimmed mean averages the honest middle devices as the pooled sums would,
and still cuts the one that claims the most extreme value in either direction.

In the robust combinations each device weighs 1/n whatever row count it claims, and a single
device can move no combined value beyond the range the honest devices span.

Means and spreads: with per-device means ``m_i`` and variances ``v_i``, the combined mean is
``μ = R(m_i)`` and the combined variance ``R(v_i + (m_i − μ)²)`` (``R`` the median or the
trimmed mean). With ``R`` the plain mean this is exactly the variance of the equal-weight
mixture of the devices (within-device plus between-device spread), so honest non-identical
devices keep the spread the pooled statistics would give them.

Quantiles: each device's histogram becomes its empirical CDF at the bin edges (normalised, so
no device weighs more than 1/n), the CDFs are combined bin by bin with ``R`` and the threshold
is where the combined CDF reaches ``q`` (interpolated within the bin in log space, as
:func:`~fediot.core.model.threshold_quantile` does). CDFs, not densities: the per-bin median
of densities is 0 wherever the devices' errors do not overlap and a per-bin trimmed density is
no distribution at all, whereas order statistics of non-decreasing functions are
non-decreasing, so the combined CDF is a CDF. The median of the CDFs is exactly the median of
the per-device ``q``-quantiles (at least half the devices have ``F_i(t) ≥ q`` iff at least
half of their quantiles are ≤ ``t``), and with ``R`` the plain mean it is the quantile of the
equal-weight mixture. A device whose histogram is shifted up has the lowest CDF everywhere the
honest devices' quantiles are, and is outvoted (median) or cut (trimmed mean).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol

import numpy as np
import numpy.typing as npt

from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.model import ErrorStats, ScalerStats, threshold_mean_std, threshold_quantile
from fediot.core.model.threshold import BIN_WIDTH_LOG10, LOG10_ERROR_MIN, N_ERROR_BINS

ROBUST_STRATEGIES: Final[tuple[str, ...]] = (
    "FedTrimmedAvg", "FedMedian", "Krum", "MultiKrum", "Bulyan")
"""Aggregations of the weights that resist a few bad devices: with
``train_args.robust_statistics: auto`` their scaler and threshold steps are robust too."""

ROBUST_STATISTICS_CHOICES: Final[tuple[str, ...]] = ("auto", "off", "trimmed_mean", "median")
"""Values of ``train_args.robust_statistics``."""


class StatisticsCombination(Protocol):
    """Combines the devices' scaler and error statistics into the server's."""

    @property
    def name(self) -> str:
        """``pooled``, ``median`` or ``trimmed_mean``."""
        ...

    def scaler(self, parts: Sequence[ScalerStats]) -> ScalerStats:
        """The global scaler statistics from each device's (at least one)."""
        ...

    def mean_std_threshold(self, parts: Sequence[ErrorStats], k: float) -> float:
        """``mean + k·std`` of the devices' errors combined."""
        ...

    def quantile_threshold(self, parts: Sequence[ErrorStats], q: float) -> float:
        """The ``q``-quantile of the devices' errors combined."""
        ...


@dataclass(frozen=True)
class PooledSums:
    """The exact sums: every row counts once, whichever device holds it (FedAvg's way).

    No parameters.
    """

    name: str = "pooled"

    def scaler(self, parts: Sequence[ScalerStats]) -> ScalerStats:
        return ScalerStats.pool(parts)

    def mean_std_threshold(self, parts: Sequence[ErrorStats], k: float) -> float:
        return threshold_mean_std(ErrorStats.pool(parts), k)

    def quantile_threshold(self, parts: Sequence[ErrorStats], q: float) -> float:
        return threshold_quantile(ErrorStats.pool(parts), q)


class _DeviceWise:
    """Shared arithmetic of the robust combinations: per-device summaries, then
    :meth:`reduce` across devices (axis 0)."""

    name: str

    def reduce(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        raise NotImplementedError

    def _mean_var(self, means: npt.NDArray[np.float64], variances: npt.NDArray[np.float64]
                  ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        centre = self.reduce(means)
        spread = self.reduce(variances + (means - centre) ** 2)
        return centre, np.maximum(spread, 0.0)

    def scaler(self, parts: Sequence[ScalerStats]) -> ScalerStats:
        used = [p for p in parts if p.n > 0]
        if not used:
            return ScalerStats.pool(parts)
        means = np.stack([p.mean for p in used])
        variances = np.stack([p.std ** 2 for p in used])
        centre, spread = self._mean_var(means, variances)
        # Σ of the declared rows, only so the result is ScalerStats like the pooled one: the
        # scaler reads the mean and the spread, which the row count does not move
        rows = sum(p.n for p in used)
        return ScalerStats(rows, centre * rows, (spread + centre * centre) * rows)

    def mean_std_threshold(self, parts: Sequence[ErrorStats], k: float) -> float:
        used = _with_errors(parts)
        means = np.array([p.mean for p in used])
        variances = np.array([p.std ** 2 for p in used])
        centre, spread = self._mean_var(means, variances)
        if not (isinstance(k, int | float) and math.isfinite(k)):
            raise FediotError(f"k must be a finite number; got {k!r}")
        return float(centre) + k * math.sqrt(float(spread))

    def quantile_threshold(self, parts: Sequence[ErrorStats], q: float) -> float:
        if not (isinstance(q, int | float) and 0.0 <= q <= 1.0):
            raise FediotError(f"q must be a number in [0, 1]; got {q!r}")
        used = _with_errors(parts)
        cdfs = np.stack([np.cumsum(p.hist) / p.n for p in used])
        combined = np.maximum.accumulate(np.clip(self.reduce(cdfs), 0.0, 1.0))
        target = min(float(q), float(combined[-1]))
        index = min(int(np.searchsorted(combined, target - 1e-12, side="left")),
                    N_ERROR_BINS - 1)
        below = float(combined[index - 1]) if index else 0.0
        step = float(combined[index]) - below
        fraction = min(max((target - below) / step, 0.0), 1.0) if step > 0 else 1.0
        return float(10.0 ** (LOG10_ERROR_MIN + (index + fraction) * BIN_WIDTH_LOG10))


@dataclass(frozen=True)
class MedianCombination(_DeviceWise):
    """Coordinate-wise median across devices of their means, spreads and error CDFs.

    No parameters: tolerates fewer than half the devices being wrong.
    """

    name: str = "median"

    def reduce(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(np.median(values, axis=0), dtype=np.float64)


@dataclass(frozen=True)
class TrimmedMeanCombination(_DeviceWise):
    """Coordinate-wise trimmed mean across devices of their means, spreads and error CDFs.

    Parameters
    ----------
    beta
        Fraction cut at each end: ``int(beta · n)`` of the ``n`` devices (as Flower's
        FedTrimmedAvg cuts), in [0, 0.5), but at least one device at each end from 3 devices
        on (cutting none would be no robust combination; with 3 devices this is the median).
        Default 0.2 (``train_args.trimmed_beta``).
    """

    beta: float = 0.2
    name: str = "trimmed_mean"

    def __post_init__(self) -> None:
        if not 0.0 <= self.beta < 0.5:
            raise FediotError(f"trimmed mean: beta must be in [0, 0.5); got {self.beta!r}")

    def reduce(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        n = values.shape[0]
        cut = max(int(self.beta * n), 1 if n >= 3 else 0)
        ordered = np.sort(values, axis=0)
        return np.asarray(ordered[cut:n - cut].mean(axis=0), dtype=np.float64)


def _with_errors(parts: Sequence[ErrorStats]) -> list[ErrorStats]:
    used = [p for p in parts if p.n > 0]
    if not used:
        raise FediotError("no device reported any threshold error")
    return used


StatisticsStep = Literal["scaler", "threshold"]
"""The two steps that combine statistics: feature scaling, and the global/quantile threshold."""


def statistics_combination(config: Config,
                           step: StatisticsStep = "threshold") -> StatisticsCombination:
    """The combination ``train_args.robust_statistics`` asks for at ``step``: ``off`` the
    pooled sums; ``trimmed_mean`` (with ``trimmed_beta``) or ``median`` whatever the strategy;
    ``auto`` the pooled sums unless the strategy is one of :data:`ROBUST_STRATEGIES`, and then
    the median for the scaler and the trimmed mean for the threshold.

    Why the split: the scaler only centres and spreads the features, so the median of the
    devices' means and spreads serves as well as their pooled values and tolerates up to half
    the devices lying (with 9 devices a trimmed mean at β = 0.2 cuts one per end, and two
    devices inflating their sums ×1000 took every robust strategy to F1 ≈ 66 %,
    ``bench/bench_poisoning.py``). A threshold is a quantity of the errors' tail, where the
    median of the devices' quantiles over-alarms whenever devices differ; the trimmed mean keeps
    the honest devices' spread."""
    t = config.train_args
    choice = t.robust_statistics
    if choice == "auto":
        if t.federated_optimizer not in ROBUST_STRATEGIES:
            choice = "off"
        else:
            choice = "median" if step == "scaler" else "trimmed_mean"
    if choice == "median":
        return MedianCombination()
    if choice == "trimmed_mean":
        return TrimmedMeanCombination(beta=t.trimmed_beta)
    return PooledSums()
