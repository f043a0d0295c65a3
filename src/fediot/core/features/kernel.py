"""The compiled AfterImage update: one pass over packets, all streams and λ in machine code.

The state of every stream lives in flat NumPy arrays (one row per stream id, one column per λ),
so the loop below touches no Python object. Semantics are those of
:class:`fediot.core.features.reference.ReferenceExtractor`, which the tests hold it to.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import numpy.typing as npt
from numba import njit

from fediot.core.catalog import LAMBDAS

N_LAMBDAS = len(LAMBDAS)
INITIAL_WEIGHT = 1e-20
ID_COLUMNS = (
    "mi", "h", "jit", "hh", "hh_rev", "hh_pair", "hh_side",
    "hphp", "hphp_rev", "hphp_pair", "hphp_side",
)
"""Columns of the per-packet stream-id matrix :func:`update_features` reads."""

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


class _GrowingTable:
    """Per-stream state arrays (one row per stream id) that grow by doubling.

    Subclasses list their arrays in ``_layout``: name → (shape after the row axis, start value).
    """

    _layout: ClassVar[dict[str, tuple[tuple[int, ...], float]]] = {}

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = 0
        for name, (shape, fill) in self._layout.items():
            setattr(self, name, np.full((capacity, *shape), fill))
        self.capacity = capacity

    def reserve(self, size: int) -> None:
        """Grow (doubling) so that ids below ``size`` are valid."""
        if size <= self.capacity:
            return
        new = max(size, 2 * self.capacity)
        for name, (shape, fill) in self._layout.items():
            grown = np.full((new, *shape), fill)
            grown[: self.capacity] = getattr(self, name)
            setattr(self, name, grown)
        self.capacity = new


class StatTable(_GrowingTable):
    """Decayed sums of a set of streams: ``cf1``, ``cf2``, ``w`` (rows × λ) and ``last``.

    ``last`` is NaN for a stream that has not been touched yet.
    """

    _layout: ClassVar[dict[str, tuple[tuple[int, ...], float]]] = {
        "cf1": ((N_LAMBDAS,), 0.0),
        "cf2": ((N_LAMBDAS,), 0.0),
        "w": ((N_LAMBDAS,), INITIAL_WEIGHT),
        "last": ((), np.nan),
    }
    cf1: FloatArray
    cf2: FloatArray
    w: FloatArray
    last: FloatArray


class PairTable(_GrowingTable):
    """Residual-product sums of two-direction stream pairs: ``cf3``, ``w3``, the last residual
    of each side (rows × 2 × λ) and ``last``."""

    _layout: ClassVar[dict[str, tuple[tuple[int, ...], float]]] = {
        "cf3": ((N_LAMBDAS,), 0.0),
        "w3": ((N_LAMBDAS,), INITIAL_WEIGHT),
        "residual": ((2, N_LAMBDAS), 0.0),
        "last": ((), np.nan),
    }
    cf3: FloatArray
    w3: FloatArray
    residual: FloatArray
    last: FloatArray


@njit(cache=True, nogil=True)
def _insert(cf1: FloatArray, cf2: FloatArray, w: FloatArray, last: FloatArray,
            i: int, v: float, t: float, lambdas: FloatArray, base: FloatArray) -> None:
    if math.isnan(last[i]):
        last[i] = t
    dt = t - last[i]
    for k in range(lambdas.shape[0]):
        if dt > 0:
            f = math.pow(base[0], -lambdas[k] * dt)
            cf1[i, k] *= f
            cf2[i, k] *= f
            w[i, k] *= f
        cf1[i, k] += v
        cf2[i, k] += v * v
        w[i, k] += 1.0
    if dt > 0:
        last[i] = t


@njit(cache=True, nogil=True)
def _write_1d(out: FloatArray, row: int, col: int, cf1: FloatArray, cf2: FloatArray,
              w: FloatArray, i: int) -> None:
    for k in range(cf1.shape[1]):
        mean = cf1[i, k] / w[i, k]
        out[row, col + 3 * k] = w[i, k]
        out[row, col + 3 * k + 1] = mean
        out[row, col + 3 * k + 2] = abs(cf2[i, k] / w[i, k] - mean * mean)


@njit(cache=True, nogil=True)
def _update_2d(out: FloatArray, row: int, col: int,
               cf1: FloatArray, cf2: FloatArray, w: FloatArray, last: FloatArray,
               cf3: FloatArray, w3: FloatArray, res: FloatArray, plast: FloatArray,
               s: int, r: int, p: int, side: int, v: float, t: float,
               lambdas: FloatArray, base: FloatArray) -> None:
    if math.isnan(plast[p]):
        plast[p] = t
    if math.isnan(last[r]):
        last[r] = t
    _insert(cf1, cf2, w, last, s, v, t, lambdas, base)
    # the reverse stream decays to t (its mean and variance do not change by decaying)
    dr = t - last[r]
    dp = t - plast[p]
    for k in range(lambdas.shape[0]):
        if dr > 0:
            f = math.pow(base[0], -lambdas[k] * dr)
            cf1[r, k] *= f
            cf2[r, k] *= f
            w[r, k] *= f
        if dp > 0:
            f = math.pow(base[0], -lambdas[k] * dp)
            cf3[p, k] *= f
            w3[p, k] *= f
            res[p, 1 - side, k] *= f  # the other direction's residual ages (reference.py)
        mean_s = cf1[s, k] / w[s, k]
        var_s = abs(cf2[s, k] / w[s, k] - mean_s * mean_s)
        # a reverse direction never seen has only its 1e-20 start weight, which decays to 0
        # after a few minutes; its mean and variance stay 0
        mean_r = cf1[r, k] / w[r, k] if w[r, k] > 0 else 0.0
        var_r = abs(cf2[r, k] / w[r, k] - mean_r * mean_r) if w[r, k] > 0 else 0.0
        residual = v - mean_s
        cf3[p, k] += residual * res[p, 1 - side, k]
        w3[p, k] += 1.0
        res[p, side, k] = residual
        cov = cf3[p, k] / w3[p, k]
        ss = math.sqrt(var_s) * math.sqrt(var_r)
        c = col + 7 * k
        out[row, c] = w[s, k]
        out[row, c + 1] = mean_s
        out[row, c + 2] = math.sqrt(var_s)
        out[row, c + 3] = math.sqrt(mean_s * mean_s + mean_r * mean_r)
        out[row, c + 4] = math.sqrt(var_s * var_s + var_r * var_r)
        out[row, c + 5] = cov
        out[row, c + 6] = cov / ss if ss != 0 else 0.0
    if dr > 0:
        last[r] = t
    if dp > 0:
        plast[p] = t


@njit(cache=True, nogil=True)
def update_features(
    out: FloatArray, t: FloatArray, size: FloatArray, lambdas: FloatArray, base: FloatArray,
    jitter_epoch: bool, ids: IntArray,
    mi_cf1: FloatArray, mi_cf2: FloatArray, mi_w: FloatArray, mi_last: FloatArray,
    h_cf1: FloatArray, h_cf2: FloatArray, h_w: FloatArray, h_last: FloatArray,
    jit_cf1: FloatArray, jit_cf2: FloatArray, jit_w: FloatArray, jit_last: FloatArray,
    hh_cf1: FloatArray, hh_cf2: FloatArray, hh_w: FloatArray, hh_last: FloatArray,
    hhp_cf3: FloatArray, hhp_w3: FloatArray, hhp_res: FloatArray, hhp_last: FloatArray,
    hp_cf1: FloatArray, hp_cf2: FloatArray, hp_w: FloatArray, hp_last: FloatArray,
    hpp_cf3: FloatArray, hpp_w3: FloatArray, hpp_res: FloatArray, hpp_last: FloatArray,
) -> None:
    """Add packets ``0..n-1`` in order, writing each one's 115 features to ``out``.

    ``ids`` holds each packet's stream ids, one row per packet, columns in
    :data:`ID_COLUMNS` order. Live traffic calls this with one-row buffers, so a packet
    added alone goes through exactly the code a capture does.

    ``base`` holds the decay base 2.0 as data: a literal 2.0 lets LLVM rewrite pow(2, x) as
    exp2(x), which differs from the reference's ``math.pow`` in the last bit, and variances
    of near-constant streams amplify that bit into visible noise.
    """
    n_l = lambdas.shape[0]
    for row in range(t.shape[0]):
        ti = t[row]
        v = size[row]
        mi = ids[row, 0]
        h = ids[row, 1]
        _insert(mi_cf1, mi_cf2, mi_w, mi_last, mi, v, ti, lambdas, base)
        _write_1d(out, row, 0, mi_cf1, mi_cf2, mi_w, mi)
        _insert(h_cf1, h_cf2, h_w, h_last, h, v, ti, lambdas, base)
        _write_1d(out, row, 3 * n_l, h_cf1, h_cf2, h_w, h)
        _update_2d(out, row, 6 * n_l, hh_cf1, hh_cf2, hh_w, hh_last,
                   hhp_cf3, hhp_w3, hhp_res, hhp_last,
                   ids[row, 3], ids[row, 4], ids[row, 5], ids[row, 6], v, ti, lambdas, base)
        j = ids[row, 2]
        if math.isnan(jit_last[j]):
            # N-BaIoT's quirk: a new channel's clock starts at the epoch, not at its first packet
            jit_last[j] = 0.0 if jitter_epoch else ti
        gap = ti - jit_last[j]
        _insert(jit_cf1, jit_cf2, jit_w, jit_last, j, gap if gap > 0 else 0.0, ti, lambdas, base)
        _write_1d(out, row, 13 * n_l, jit_cf1, jit_cf2, jit_w, j)
        _update_2d(out, row, 16 * n_l, hp_cf1, hp_cf2, hp_w, hp_last,
                   hpp_cf3, hpp_w3, hpp_res, hpp_last,
                   ids[row, 7], ids[row, 8], ids[row, 9], ids[row, 10], v, ti, lambdas, base)
