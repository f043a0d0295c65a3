"""Input transform: signed log1p, then standardisation from statistics that sum across devices.

N-BaIoT features are heavy-tailed (weights and variances up to 5.7e17, negative covariances), so
every value is first mapped through ``sign(x)·log1p(|x|)``, which is odd, monotone, exact near 0
and turns 5.7e17 into 40.9. Each column is then standardised with the mean and standard deviation
of the transformed training rows.

Federated use: each device computes :class:`ScalerStats` (row count, column sums and sums of
squares of the transformed values) on its own rows; the server adds them up and builds one
:class:`FeatureScaler` with :meth:`FeatureScaler.from_stats`. No row leaves a device, and the pooled
scaler equals the one a central fit on all rows would give (up to float64 rounding).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import FEATURE_NAMES, N_FEATURES
from fediot.core.errors import FediotError

Float64Array = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]

DEFAULT_STD_FLOOR: Final[float] = 1e-2
"""Smallest standard deviation (in signed-log1p units) a column is divided by.

A column that is constant (or nearly so) on the training rows would otherwise be divided by ~0
and turn harmless float noise into huge standardised values. One signed-log1p unit is a factor
e in magnitude, so a floor of 0.01 treats a 1 % change in a constant column as one standard
deviation. Float64 rounding of ``sumsq/n − mean²`` is about 1e-12 for |values| ≤ 41 (raw ≤ 1e18),
far below ``floor² = 1e-4``, so the floor also hides the cancellation of the sums formula.
"""


class ModelInputError(FediotError):
    """Bad input to the model pieces: a feature matrix, weights, statistics or a hyperparameter."""


def _column_label(column: int, n_columns: int) -> str:
    if n_columns == N_FEATURES:
        return f"column {column} ({FEATURE_NAMES[column]})"
    return f"column {column}"


def check_features(
    X: npt.ArrayLike,
    n_features: int | None = None,
    *,
    name: str = "X",
    dtype: type[np.floating[Any]] = np.float64,
) -> npt.NDArray[Any]:
    """Validate a feature matrix and return it as a C-contiguous array of ``dtype``.

    Parameters
    ----------
    X
        Rows × features, array-like; a pandas DataFrame with 115 string columns must carry
        :data:`~fediot.core.catalog.FEATURE_NAMES` in order.
    n_features
        Required column count; ``None`` accepts any width ≥ 1.
    name
        What to call ``X`` in error messages.
    dtype
        ``np.float64`` (default) or ``np.float32``; converting copies, a match does not.

    Raises
    ------
    ModelInputError
        Not numeric, not 2-D, wrong width, misnamed columns, or a NaN/inf (the first one is
        named by row and column).
    """
    columns = getattr(X, "columns", None)
    if columns is not None and len(columns) == N_FEATURES:
        names = [str(c) for c in columns]
        if all(isinstance(c, str) for c in columns) and tuple(names) != FEATURE_NAMES:
            bad = next(i for i, pair in enumerate(zip(names, FEATURE_NAMES, strict=True))
                       if pair[0] != pair[1])
            raise ModelInputError(
                f"{name} column {bad} is {names[bad]!r}; expected {FEATURE_NAMES[bad]!r} "
                "(columns must follow the N-BaIoT order)"
            )
    try:
        array = np.ascontiguousarray(X, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ModelInputError(f"{name} is not a numeric matrix: {exc}") from exc
    if array.ndim != 2:
        raise ModelInputError(f"{name} must be 2-D (rows × features); got shape {array.shape}")
    width = array.shape[1]
    if n_features is not None and width != n_features:
        raise ModelInputError(f"{name} has {width} columns; expected {n_features}")
    if width < 1:
        raise ModelInputError(f"{name} has no columns")
    # Fast path: a column sum is finite whenever every value is (bar float64 overflow, which
    # only sends us to the exact check below).
    with np.errstate(over="ignore", invalid="ignore"):
        column_sums = array.sum(axis=0, dtype=np.float64)
    if array.size and not np.isfinite(column_sums).all():
        bad_cells = np.argwhere(~np.isfinite(array))
        if len(bad_cells):
            row, column = (int(v) for v in bad_cells[0])
            raise ModelInputError(
                f"{name} has a non-finite value ({array[row, column]}) at row {row}, "
                f"{_column_label(column, width)}; {len(bad_cells)} such values in all"
            )
    return array


def signed_log1p(X: npt.ArrayLike) -> Float64Array:
    """``sign(x)·log1p(|x|)`` element-wise in float64 (unvalidated; see :func:`check_features`)."""
    values = np.asarray(X, dtype=np.float64)
    out = np.log1p(np.abs(values))
    np.copysign(out, values, out=out)
    return out


def _check_vector(value: npt.ArrayLike, length: int | None, what: str) -> Float64Array:
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ModelInputError(f"{what} is not numeric: {exc}") from exc
    if array.ndim != 1 or (length is not None and len(array) != length):
        expected = f"({length},)" if length is not None else "1-D"
        raise ModelInputError(f"{what} has shape {array.shape}; expected {expected}")
    if not np.isfinite(array).all():
        raise ModelInputError(f"{what} contains NaN or inf")
    array.setflags(write=False)
    return array


def _check_count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise ModelInputError(f"{what} must be a non-negative integer; got {value!r}")
    return int(value)


@dataclass(frozen=True, eq=False)
class ScalerStats:
    """Sufficient statistics of the transformed features: summable across devices.

    Parameters
    ----------
    n
        Number of rows.
    sum
        float64[n_features]: column sums of ``signed_log1p(X)``.
    sumsq
        float64[n_features]: column sums of ``signed_log1p(X)²``.
    """

    n: int
    sum: Float64Array
    sumsq: Float64Array = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", _check_count(self.n, "ScalerStats.n"))
        total = _check_vector(self.sum, None, "ScalerStats.sum")
        object.__setattr__(self, "sum", total)
        squares = _check_vector(self.sumsq, len(total), "ScalerStats.sumsq")
        object.__setattr__(self, "sumsq", squares)

    @property
    def n_features(self) -> int:
        return len(self.sum)

    @classmethod
    def empty(cls, n_features: int = N_FEATURES) -> ScalerStats:
        """Statistics of zero rows: the neutral element of ``+``."""
        return cls(0, np.zeros(n_features), np.zeros(n_features))

    @classmethod
    def from_data(cls, X: npt.ArrayLike, n_features: int | None = None) -> ScalerStats:
        """Statistics of the raw rows ``X`` (validated; zero rows are allowed)."""
        values = signed_log1p(check_features(X, n_features))
        return cls(
            len(values),
            values.sum(axis=0),
            np.einsum("ij,ij->j", values, values),
        )

    def __add__(self, other: ScalerStats) -> ScalerStats:
        if not isinstance(other, ScalerStats):
            return NotImplemented
        if other.n_features != self.n_features:
            raise ModelInputError(
                f"cannot add ScalerStats of {self.n_features} and {other.n_features} features"
            )
        return ScalerStats(self.n + other.n, self.sum + other.sum, self.sumsq + other.sumsq)

    @classmethod
    def pool(cls, parts: Iterable[ScalerStats], n_features: int = N_FEATURES) -> ScalerStats:
        """The sum of ``parts``; an empty iterable gives :meth:`empty` of ``n_features``."""
        total: ScalerStats | None = None
        for part in parts:
            total = part if total is None else total + part
        return cls.empty(n_features) if total is None else total

    @property
    def mean(self) -> Float64Array:
        """Column means (requires ``n ≥ 1``)."""
        if self.n == 0:
            raise ModelInputError("ScalerStats has no rows; the mean is undefined")
        return self.sum / self.n

    @property
    def std(self) -> Float64Array:
        """Population (ddof=0) column standard deviations (requires ``n ≥ 1``)."""
        mean = self.mean
        return np.sqrt(np.maximum(self.sumsq / self.n - mean * mean, 0.0))

    def to_arrays(self) -> list[npt.NDArray[Any]]:
        """``[int64[1] n, float64 sum, float64 sumsq]`` for array transports (e.g. Flower)."""
        return [np.array([self.n], dtype=np.int64), self.sum.copy(), self.sumsq.copy()]

    @classmethod
    def from_arrays(cls, arrays: Sequence[npt.ArrayLike]) -> ScalerStats:
        """Inverse of :meth:`to_arrays`."""
        if len(arrays) != 3:
            raise ModelInputError(f"ScalerStats needs 3 arrays (n, sum, sumsq); got {len(arrays)}")
        n = np.asarray(arrays[0])
        if n.shape != (1,) or not np.issubdtype(n.dtype, np.integer):
            raise ModelInputError(f"ScalerStats array 0 must be one integer; got {n!r}")
        return cls(int(n[0]), np.asarray(arrays[1]), np.asarray(arrays[2]))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: ``{"n": int, "sum": [float…], "sumsq": [float…]}``."""
        return {"n": self.n, "sum": self.sum.tolist(), "sumsq": self.sumsq.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScalerStats:
        """Inverse of :meth:`to_dict`; a missing key is named in the error."""
        missing = [key for key in ("n", "sum", "sumsq") if key not in data]
        if missing:
            raise ModelInputError(f"ScalerStats dict lacks key {missing[0]!r}")
        return cls(data["n"], data["sum"], data["sumsq"])


@dataclass(frozen=True, eq=False)
class FeatureScaler:
    """Signed log1p, then per-column standardisation: ``(signed_log1p(x) − mean_) / scale_``.

    Parameters
    ----------
    mean_
        float64[n_features] column means in signed-log1p space.
    scale_
        float64[n_features] column standard deviations, floored (all > 0).
    """

    mean_: Float64Array
    scale_: Float64Array = field(repr=False)

    def __post_init__(self) -> None:
        mean = _check_vector(self.mean_, None, "FeatureScaler.mean_")
        scale = _check_vector(self.scale_, len(mean), "FeatureScaler.scale_")
        if len(mean) < 1:
            raise ModelInputError("FeatureScaler needs at least one feature")
        if (scale <= 0).any():
            raise ModelInputError("FeatureScaler.scale_ must be positive in every column")
        object.__setattr__(self, "mean_", mean)
        object.__setattr__(self, "scale_", scale)

    @property
    def n_features(self) -> int:
        return len(self.mean_)

    @classmethod
    def from_stats(cls, stats: ScalerStats, std_floor: float = DEFAULT_STD_FLOOR) -> FeatureScaler:
        """The scaler of pooled statistics; each std is raised to at least ``std_floor``."""
        if not (np.isfinite(std_floor) and std_floor > 0):
            raise ModelInputError(f"std_floor must be a positive number; got {std_floor!r}")
        if stats.n == 0:
            raise ModelInputError("cannot fit a FeatureScaler on zero rows")
        return cls(stats.mean, np.maximum(stats.std, std_floor))

    @classmethod
    def fit(cls, X: npt.ArrayLike, std_floor: float = DEFAULT_STD_FLOOR) -> FeatureScaler:
        """Central fit: ``from_stats(ScalerStats.from_data(X))``."""
        return cls.from_stats(ScalerStats.from_data(X), std_floor)

    def transform(self, X: npt.ArrayLike) -> Float32Array:
        """Validated raw rows → standardised float32 rows, same shape."""
        values = signed_log1p(check_features(X, self.n_features))
        values -= self.mean_
        values /= self.scale_
        return values.astype(np.float32)

    def to_arrays(self) -> list[Float64Array]:
        """``[mean_, scale_]`` for array transports."""
        return [self.mean_.copy(), self.scale_.copy()]

    @classmethod
    def from_arrays(cls, arrays: Sequence[npt.ArrayLike]) -> FeatureScaler:
        """Inverse of :meth:`to_arrays`."""
        if len(arrays) != 2:
            raise ModelInputError(f"FeatureScaler needs 2 arrays (mean, scale); got {len(arrays)}")
        return cls(np.asarray(arrays[0]), np.asarray(arrays[1]))
