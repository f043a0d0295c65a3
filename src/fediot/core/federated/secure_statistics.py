"""The scaler and threshold statistics as integer vectors for secure aggregation.

Under ``comm_args.secure_aggregation`` the scaler step (n, Σx, Σx² over the features) and the
threshold step of a global or quantile threshold (n, Σe, Σe², the error histogram) are summed
by the same protocol as the weights (:mod:`~fediot.core.federated.secure_aggregation`): each
device turns its statistics into one vector of 64-bit words here, masks it, and the server
unmasks only the sum, which it turns back into :class:`ScalerStats` / :class:`ErrorStats`.

Encoding, chosen from public bounds so that nothing overflows and nothing needs clipping:

* **Counts** (n, the histogram's bins) are exact integers, one word each. A device holds at
  most :data:`~fediot.core.limits.MAX_ROWS` (10^9 < 2^30) rows, so the sum of up to
  :data:`MAX_DEVICES_SUMMED` devices stays far below 2^63.
* **Real sums** (Σx, Σx², Σe, Σe²) are fixed point: ``S = round(v · 2^FRACTION_BITS)``, cut
  into :data:`LIMBS` signed limbs of :data:`LIMB_BITS` bits (``S = Σ_l limb_l · 2^(l·40)``,
  every limb carrying the sign of ``S``). Limbs are summed word by word, and a column of at
  most :data:`MAX_DEVICES_SUMMED` limbs stays below 2^63 in magnitude, so no carry is lost;
  the server rebuilds ``ΣS`` exactly from the columns. The sum is then exact up to each
  device's rounding to 2^−32: an error of at most ``devices · 2^−33`` per value
  (:func:`sum_error_bound`), however large the value. Σx² needs no per-row normalisation:
  a device's value only has to stay below :data:`VALUE_BOUND` = 2^88 ≈ 3·10^26 in
  magnitude (checked; a signed-log feature of any finite float64 is below 710, so Σx² of
  10^9 rows is below 5·10^14; an error sum that large is refused with a clear error).

What the server learns: the devices' summed statistics and, in clear, each device's data
counts (the scaler step's :class:`~fediot.core.federated.messages.DataReport`, which training
reveals anyway through the rows each device trains on).
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import N_FEATURES
from fediot.core.federated.secure_aggregation import MASK_DTYPE, U64, SecAggError
from fediot.core.model import ErrorStats, ScalerStats
from fediot.core.model.threshold import N_ERROR_BINS
from fediot.core.model.transform import ModelInputError

FRACTION_BITS: Final[int] = 32
"""Fixed-point resolution of a real sum: 2^−32 ≈ 2.3·10^−10."""
LIMB_BITS: Final[int] = 40
"""Bits per limb of a real sum."""
LIMBS: Final[int] = 3
"""Limbs per real sum (120 bits with the sign carried by every limb)."""
VALUE_BOUND: Final[float] = 2.0 ** (LIMB_BITS * LIMBS - FRACTION_BITS)
"""A device's real sum must be below this in magnitude (2^88 ≈ 3.1·10^26)."""
MAX_DEVICES_SUMMED: Final[int] = 1 << (62 - LIMB_BITS)
"""Most devices one secure sum of statistics may add up (2^22): a column of limbs stays
below 2^62 in magnitude."""


def sum_error_bound(devices: int) -> float:
    """The largest difference between a secure sum of real values and their exact sum."""
    return devices * 2.0 ** -(FRACTION_BITS + 1)


def _encode_reals(values: npt.ArrayLike, what: str) -> npt.NDArray[np.int64]:
    """``values`` as fixed-point limbs (``LIMBS`` signed words per value, lowest first)."""
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise SecAggError(f"{what} holds NaN or infinite values")
    if (np.abs(array) >= VALUE_BOUND).any():
        raise SecAggError(f"{what} reaches {float(np.max(np.abs(array))):.3g}, beyond the "
                          f"{VALUE_BOUND:.3g} a secure sum of statistics can carry")
    # integral floats: scaling by 2^k, rint, mod 2^40 and division by 2^40 are all exact
    magnitude = np.rint(np.ldexp(np.abs(array), FRACTION_BITS))
    limbs = np.empty((array.size, LIMBS), dtype=np.int64)
    for limb in range(LIMBS):
        low = np.mod(magnitude, 2.0**LIMB_BITS)
        limbs[:, limb] = low.astype(np.int64)
        magnitude = (magnitude - low) / 2.0**LIMB_BITS
    return np.where(array.reshape(-1, 1) < 0, -limbs, limbs).ravel()


def _decode_reals(words: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """Inverse of :func:`_encode_reals` on a (summed) vector of limbs."""
    out = np.empty(len(words) // LIMBS, dtype=np.float64)
    for i, row in enumerate(words.reshape(-1, LIMBS).tolist()):
        exact = sum(int(word) << (LIMB_BITS * limb) for limb, word in enumerate(row))
        out[i] = exact / (1 << FRACTION_BITS)  # an int / int: correctly rounded
    return out


def scaler_length(n_features: int = N_FEATURES) -> int:
    """Words in a scaler vector: n, then Σx and Σx² as limbs."""
    return 1 + 2 * n_features * LIMBS


ERRORS_LENGTH: Final[int] = 1 + N_ERROR_BINS + 2 * LIMBS
"""Words in an error-statistics vector: n, the histogram, then Σe and Σe² as limbs."""


def scaler_vector(stats: ScalerStats) -> U64:
    """One device's scaler statistics as a vector to mask."""
    words = np.concatenate([np.asarray([stats.n], dtype=np.int64), _encode_reals(stats.sum, "Σx"),
                            _encode_reals(stats.sumsq, "Σx²")])
    return words.view(MASK_DTYPE)


def scaler_from_sum(total: U64, n_features: int = N_FEATURES) -> ScalerStats:
    """The summed scaler statistics from an unmasked sum of :func:`scaler_vector`."""
    words = _signed(total, scaler_length(n_features))
    reals = _decode_reals(words[1:])
    try:
        return ScalerStats(int(words[0]), reals[:n_features], reals[n_features:])
    except ModelInputError as error:
        raise SecAggError(f"the unmasked sum is no scaler statistics: {error}") from error


def errors_vector(stats: ErrorStats) -> U64:
    """One device's error statistics as a vector to mask."""
    words = np.concatenate([np.asarray([stats.n], dtype=np.int64),
                            np.asarray(stats.hist, dtype=np.int64),
                            _encode_reals([stats.sum, stats.sumsq], "Σe, Σe²")])
    return words.view(MASK_DTYPE)


def errors_from_sum(total: U64) -> ErrorStats:
    """The summed error statistics from an unmasked sum of :func:`errors_vector` (an error
    when the histogram does not count Σn errors, or a count is negative)."""
    words = _signed(total, ERRORS_LENGTH)
    reals = _decode_reals(words[1 + N_ERROR_BINS:])
    try:
        return ErrorStats(int(words[0]), float(reals[0]), float(reals[1]),
                          words[1:1 + N_ERROR_BINS].copy())
    except ModelInputError as error:
        raise SecAggError(f"the unmasked sum is no error statistics: {error}") from error


def _signed(total: U64, length: int) -> npt.NDArray[np.int64]:
    array = np.asarray(total, dtype=MASK_DTYPE)
    if array.shape != (length,):
        raise SecAggError(f"the unmasked sum has {array.size} words, expected {length}")
    return array.view(np.int64)
