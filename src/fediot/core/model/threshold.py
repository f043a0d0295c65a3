"""Anomaly thresholds from summable statistics of reconstruction errors.

Each device reduces its per-row errors to an :class:`ErrorStats`: the count, sum and sum of squares
(for N-BaIoT's ``mean + k·std`` threshold) and a fixed-bin histogram over ``log10(error)`` (for
quantile thresholds and for ROC curves). All parts add up exactly across devices, so a server can
set a global threshold, or each device its own, without seeing any error value.

Binning (module constants): :data:`N_ERROR_BINS` = 800 equal bins of :data:`BIN_WIDTH_LOG10` =
0.02 decade (a factor 10^0.02 ≈ 1.047, i.e. 4.7 % in value) from 10^:data:`LOG10_ERROR_MIN`
= 1e-8 to 10^:data:`LOG10_ERROR_MAX` = 1e8. Errors below 1e-8 (including 0) are counted in the
first bin and errors of 1e8 or more in the last. Standardised benign rows have errors near
1e-2–1e1 and flood attacks up to ~1e6, well inside the range.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fediot.core.model.transform import ModelInputError

LOG10_ERROR_MIN: Final[float] = -8.0
"""log10 of the lower edge of the first histogram bin."""
LOG10_ERROR_MAX: Final[float] = 8.0
"""log10 of the upper edge of the last histogram bin."""
BINS_PER_DECADE: Final[int] = 50
N_ERROR_BINS: Final[int] = round((LOG10_ERROR_MAX - LOG10_ERROR_MIN) * BINS_PER_DECADE)
"""Number of histogram bins (800)."""
BIN_WIDTH_LOG10: Final[float] = 1.0 / BINS_PER_DECADE
"""Width of one bin in log10 units (0.02)."""


def error_bin_edges() -> npt.NDArray[np.float64]:
    """The ``N_ERROR_BINS + 1`` bin edges in error units (1e-8 … 1e8), ascending."""
    return np.power(10.0, np.linspace(LOG10_ERROR_MIN, LOG10_ERROR_MAX, N_ERROR_BINS + 1))


def error_bin_centres() -> npt.NDArray[np.float64]:
    """The ``N_ERROR_BINS`` bin centres in log space (geometric means of the edges)."""
    exponents = LOG10_ERROR_MIN + (np.arange(N_ERROR_BINS) + 0.5) * BIN_WIDTH_LOG10
    centres: npt.NDArray[np.float64] = np.power(10.0, exponents)
    return centres


def error_bin_index(errors: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """The histogram bin of each error (end bins absorb the values out of range)."""
    with np.errstate(divide="ignore"):
        log_errors = np.log10(errors)
    position = np.floor((log_errors - LOG10_ERROR_MIN) * BINS_PER_DECADE)
    clipped = np.clip(np.nan_to_num(position, neginf=0.0), 0, N_ERROR_BINS - 1)
    return np.asarray(clipped, dtype=np.int64)


def _check_errors(errors: npt.ArrayLike) -> npt.NDArray[np.float64]:
    try:
        array = np.asarray(errors, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ModelInputError(f"errors are not numeric: {exc}") from exc
    if array.ndim != 1:
        raise ModelInputError(f"errors must be 1-D (one per row); got shape {array.shape}")
    bad = ~np.isfinite(array) | (array < 0)
    if bad.any():
        index = int(np.argmax(bad))
        raise ModelInputError(
            f"errors must be finite and ≥ 0; row {index} is {array[index]}"
        )
    return array


def _check_hist(hist: npt.ArrayLike) -> npt.NDArray[np.int64]:
    array = np.array(hist)
    if array.shape != (N_ERROR_BINS,):
        raise ModelInputError(
            f"ErrorStats.hist has shape {array.shape}; expected ({N_ERROR_BINS},)"
        )
    if array.dtype.kind not in "iu" and not (
        array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all()
    ):
        raise ModelInputError(f"ErrorStats.hist must hold integer counts; got {array.dtype}")
    counts = array.astype(np.int64)
    if (counts < 0).any():
        raise ModelInputError("ErrorStats.hist has a negative count")
    counts.setflags(write=False)
    return counts


@dataclass(frozen=True, eq=False)
class ErrorStats:
    """Summable statistics of per-row reconstruction errors.

    Parameters
    ----------
    n
        Number of errors.
    sum, sumsq
        Sum and sum of squares of the errors (float64).
    hist
        int64[N_ERROR_BINS] counts per log10 bin; must sum to ``n``.
    """

    n: int
    sum: float
    sumsq: float
    hist: npt.NDArray[np.int64] = field(repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int | np.integer) or self.n < 0:
            raise ModelInputError(f"ErrorStats.n must be a non-negative integer; got {self.n!r}")
        for name in ("sum", "sumsq"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise ModelInputError(f"ErrorStats.{name} must be a number; got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ModelInputError(f"ErrorStats.{name} must be finite and ≥ 0; got {value!r}")
            object.__setattr__(self, name, float(value))
        hist = _check_hist(self.hist)
        if int(hist.sum()) != self.n:
            raise ModelInputError(
                f"ErrorStats.hist counts {int(hist.sum())} errors but n is {self.n}"
            )
        object.__setattr__(self, "n", int(self.n))
        object.__setattr__(self, "hist", hist)

    @classmethod
    def empty(cls) -> ErrorStats:
        """Statistics of no errors: the neutral element of ``+``."""
        return cls(0, 0.0, 0.0, np.zeros(N_ERROR_BINS, dtype=np.int64))

    @classmethod
    def from_errors(cls, errors: npt.ArrayLike) -> ErrorStats:
        """Statistics of a 1-D array of finite, non-negative errors."""
        values = _check_errors(errors)
        hist = np.bincount(error_bin_index(values), minlength=N_ERROR_BINS).astype(np.int64)
        return cls(len(values), float(values.sum()), float(np.dot(values, values)), hist)

    @classmethod
    def of_parts(cls, errors: npt.ArrayLike, ends: Sequence[int]) -> list[ErrorStats]:
        """:meth:`from_errors` of each part ``errors[previous end:end]`` (the same numbers),
        with the checks and histogram bins of all parts computed in one pass."""
        values = _check_errors(errors)
        bounds = np.asarray([0, *ends], dtype=np.int64)
        if len(bounds) > 1 and (np.any(np.diff(bounds) < 0) or bounds[-1] != len(values)):
            raise ModelInputError(f"part ends {list(ends)[:5]}… must rise to {len(values)}")
        part_of = np.repeat(np.arange(len(ends)), np.diff(bounds))
        hists = np.bincount(part_of * N_ERROR_BINS + error_bin_index(values),
                            minlength=len(ends) * N_ERROR_BINS).reshape(-1, N_ERROR_BINS)
        parts = []
        for hist, start, stop in zip(hists.astype(np.int64), bounds[:-1].tolist(),
                                     bounds[1:].tolist(), strict=True):
            part = values[start:stop]
            parts.append(cls(stop - start, float(part.sum()), float(np.dot(part, part)), hist))
        return parts

    @classmethod
    def from_histogram(cls, hist: npt.ArrayLike) -> ErrorStats:
        """Statistics of errors known only by their histogram: each count taken at its bin's
        centre in log space (its geometric mean), so the mean and the root-mean-square are
        within half a bin (2.3 %) of the exact ones for errors within 1e-8 … 1e8."""
        counts = _check_hist(hist)
        centres = error_bin_centres()
        return cls(int(counts.sum()), float(np.dot(counts, centres)),
                   float(np.dot(counts, centres * centres)), counts)

    def __add__(self, other: ErrorStats) -> ErrorStats:
        if not isinstance(other, ErrorStats):
            return NotImplemented
        return ErrorStats.pool((self, other))  # 0.0 + a + b: the same numbers as a + b

    @classmethod
    def pool(cls, parts: Iterable[ErrorStats]) -> ErrorStats:
        """The sum of ``parts`` (:meth:`empty` for none), added in order from zero and checked
        once, not at every addition (``+`` is the pool of two)."""
        n, total, squares = 0, 0.0, 0.0
        hist = np.zeros(N_ERROR_BINS, dtype=np.int64)
        for part in parts:
            if not isinstance(part, ErrorStats):
                raise TypeError(f"cannot pool {type(part).__name__} with ErrorStats")
            n, total, squares = n + part.n, total + part.sum, squares + part.sumsq
            hist += part.hist
        return cls(n, total, squares, hist)

    @property
    def mean(self) -> float:
        """Mean error (requires ``n ≥ 1``)."""
        if self.n == 0:
            raise ModelInputError("ErrorStats has no errors; the mean is undefined")
        return self.sum / self.n

    @property
    def std(self) -> float:
        """Population (ddof=0) standard deviation of the errors (requires ``n ≥ 1``)."""
        mean = self.mean
        return math.sqrt(max(self.sumsq / self.n - mean * mean, 0.0))

    def share_above(self, threshold: float) -> float:
        """The share of the errors above ``threshold``, read from the histogram: whole bins
        above it count fully, the bin holding it by the log-linear part above (so the answer
        is exact to within that one bin's count). NaN when there are no errors."""
        if self.n == 0:
            return float("nan")
        if not threshold > 0:
            return 1.0 - float(self.hist[0]) / self.n if threshold == 0 else 1.0
        position = (math.log10(threshold) - LOG10_ERROR_MIN) * BINS_PER_DECADE
        if position >= N_ERROR_BINS:
            return 0.0
        index = max(math.floor(position), 0)
        above = float(self.hist[index + 1:].sum())
        above += float(self.hist[index]) * (1.0 - min(max(position - index, 0.0), 1.0))
        return above / self.n

    def to_arrays(self) -> list[npt.NDArray[Any]]:
        """``[int64[1] n, float64[2] (sum, sumsq), int64 hist]`` for array transports."""
        return [
            np.array([self.n], dtype=np.int64),
            np.array([self.sum, self.sumsq], dtype=np.float64),
            self.hist.copy(),
        ]

    @classmethod
    def from_arrays(cls, arrays: Sequence[npt.ArrayLike]) -> ErrorStats:
        """Inverse of :meth:`to_arrays`."""
        if len(arrays) != 3:
            raise ModelInputError(f"ErrorStats needs 3 arrays (n, sums, hist); got {len(arrays)}")
        n = np.asarray(arrays[0])
        sums = np.asarray(arrays[1], dtype=np.float64)
        if n.shape != (1,) or not np.issubdtype(n.dtype, np.integer):
            raise ModelInputError(f"ErrorStats array 0 must be one integer; got {n!r}")
        if sums.shape != (2,):
            raise ModelInputError(f"ErrorStats array 1 must be (sum, sumsq); got {sums.shape}")
        return cls(int(n[0]), float(sums[0]), float(sums[1]), np.asarray(arrays[2]))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, including the binning so a mismatch is caught on arrival."""
        return {
            "n": self.n,
            "sum": self.sum,
            "sumsq": self.sumsq,
            "log10_min": LOG10_ERROR_MIN,
            "log10_max": LOG10_ERROR_MAX,
            "hist": self.hist.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorStats:
        """Inverse of :meth:`to_dict`; a missing key or another binning is named in the error."""
        for key in ("n", "sum", "sumsq", "hist"):
            if key not in data:
                raise ModelInputError(f"ErrorStats dict lacks key {key!r}")
        binning = (data.get("log10_min", LOG10_ERROR_MIN), data.get("log10_max", LOG10_ERROR_MAX))
        if binning != (LOG10_ERROR_MIN, LOG10_ERROR_MAX):
            raise ModelInputError(
                f"ErrorStats dict uses bins over 1e{binning[0]}…1e{binning[1]}; this build "
                f"uses 1e{LOG10_ERROR_MIN}…1e{LOG10_ERROR_MAX}"
            )
        return cls(data["n"], data["sum"], data["sumsq"], np.asarray(data["hist"]))


def threshold_mean_std(stats: ErrorStats, k: float = 1.0) -> float:
    """N-BaIoT's threshold ``mean + k·std`` of the errors in ``stats`` (pooled or one device's)."""
    if not (isinstance(k, int | float) and math.isfinite(k)):
        raise ModelInputError(f"k must be a finite number; got {k!r}")
    return stats.mean + k * stats.std


def threshold_quantile(stats: ErrorStats, q: float) -> float:
    """The ``q``-quantile of the errors, read from the histogram.

    Let ``x`` be the true quantile in the inverted-CDF sense (the ``ceil(q·n)``-th smallest
    error, ``numpy.quantile(..., method="inverted_cdf")``). The result lies in the same bin as
    ``x``, interpolated linearly in log space by rank, so ``|log10(result) − log10(x)|`` is at most
    :data:`BIN_WIDTH_LOG10` (0.02 decade, 4.7 % in value), provided ``x`` lies within
    1e-8 … 1e8 (outside, the end bins absorb it and only the edge is known).
    """
    if not (isinstance(q, int | float) and 0.0 <= q <= 1.0):
        raise ModelInputError(f"q must be a number in [0, 1]; got {q!r}")
    if stats.n == 0:
        raise ModelInputError("ErrorStats has no errors; no quantile exists")
    rank = max(math.ceil(q * stats.n), 1)
    cumulative = np.cumsum(stats.hist)
    index = int(np.searchsorted(cumulative, rank, side="left"))
    below = int(cumulative[index - 1]) if index else 0
    fraction = (rank - below) / int(stats.hist[index])
    log_value = LOG10_ERROR_MIN + (index + fraction) * BIN_WIDTH_LOG10
    return float(10.0**log_value)
