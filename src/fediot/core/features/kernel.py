"""The compiled AfterImage update: one pass over packets, all streams and λ in machine code.

The state of every stream lives in flat NumPy arrays (one row per stream id, its fields side by
side), so the loop below touches no Python object. Semantics are those of
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
    """Per-stream state, one row of float64 per stream id, grown by doubling.

    A stream's whole state is one contiguous row of :attr:`data` (one cache-friendly block, and
    one array to hand to the kernel); subclasses list its fields in ``_layout``:
    name → (columns, start value), in column order.
    """

    _layout: ClassVar[dict[str, tuple[int, float]]] = {}

    def __init__(self, capacity: int = 64) -> None:
        self.width = sum(columns for columns, _ in self._layout.values())
        self.data: FloatArray = self._fresh(capacity)
        self.capacity = capacity

    def _fresh(self, rows: int) -> FloatArray:
        data = np.empty((rows, self.width), dtype=np.float64)
        start = 0
        for columns, fill in self._layout.values():
            data[:, start:start + columns] = fill
            start += columns
        return data

    def reserve(self, size: int) -> None:
        """Grow (doubling) so that ids below ``size`` are valid."""
        if size <= self.capacity:
            return
        grown = self._fresh(max(size, 2 * self.capacity))
        grown[: self.capacity] = self.data
        self.data = grown
        self.capacity = len(grown)


class StatTable(_GrowingTable):
    """Decayed sums of a set of streams: per row ``cf1``, ``cf2``, ``w`` (one column per λ)
    and ``last`` (the time of the last update; NaN for a stream not touched yet)."""

    _layout: ClassVar[dict[str, tuple[int, float]]] = {
        "cf1": (N_LAMBDAS, 0.0),
        "cf2": (N_LAMBDAS, 0.0),
        "w": (N_LAMBDAS, INITIAL_WEIGHT),
        "last": (1, np.nan),
    }


class PairTable(_GrowingTable):
    """Residual-product sums of two-direction stream pairs: per row ``cf3``, ``w3``, the last
    residual of side 0 and of side 1 (one column per λ each) and ``last``."""

    _layout: ClassVar[dict[str, tuple[int, float]]] = {
        "cf3": (N_LAMBDAS, 0.0),
        "w3": (N_LAMBDAS, INITIAL_WEIGHT),
        "residual": (2 * N_LAMBDAS, 0.0),
        "last": (1, np.nan),
    }


@njit(cache=True, nogil=True)
def _stat_fields(
    table: FloatArray, n_l: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``cf1``, ``cf2``, ``w``, ``last`` of a :class:`StatTable`'s data (views)."""
    return table[:, 0:n_l], table[:, n_l:2 * n_l], table[:, 2 * n_l:3 * n_l], table[:, 3 * n_l]


@njit(cache=True, nogil=True)
def _pair_fields(
    table: FloatArray, n_l: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """``cf3``, ``w3``, ``residual`` (side · n_l + λ), ``last`` of a :class:`PairTable`'s data
    (views)."""
    return table[:, 0:n_l], table[:, n_l:2 * n_l], table[:, 2 * n_l:4 * n_l], table[:, 4 * n_l]


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
    n_l = lambdas.shape[0]
    mine = side * n_l  # this side's residuals in res[p]; the other side's start at other
    other = (1 - side) * n_l
    for k in range(n_l):
        if dr > 0:
            f = math.pow(base[0], -lambdas[k] * dr)
            cf1[r, k] *= f
            cf2[r, k] *= f
            w[r, k] *= f
        if dp > 0:
            f = math.pow(base[0], -lambdas[k] * dp)
            cf3[p, k] *= f
            w3[p, k] *= f
            res[p, other + k] *= f  # the other direction's residual ages (reference.py)
        mean_s = cf1[s, k] / w[s, k]
        var_s = abs(cf2[s, k] / w[s, k] - mean_s * mean_s)
        # a reverse direction never seen has only its 1e-20 start weight, which decays to 0
        # after a few minutes; its mean and variance stay 0
        mean_r = cf1[r, k] / w[r, k] if w[r, k] > 0 else 0.0
        var_r = abs(cf2[r, k] / w[r, k] - mean_r * mean_r) if w[r, k] > 0 else 0.0
        residual = v - mean_s
        cf3[p, k] += residual * res[p, other + k]
        w3[p, k] += 1.0
        res[p, mine + k] = residual
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
    mi: FloatArray, h: FloatArray, jit: FloatArray, hh: FloatArray, hh_pairs: FloatArray,
    hphp: FloatArray, hphp_pairs: FloatArray,
) -> None:
    """Add packets ``0..n-1`` in order, writing each one's 115 features to ``out``.

    ``ids`` holds each packet's stream ids, one row per packet, columns in
    :data:`ID_COLUMNS` order; ``mi`` … ``hphp_pairs`` are the ``data`` of the
    :class:`StatTable` / :class:`PairTable` of each stream kind (few arguments, because each
    one costs the per-packet caller about 0.1 µs of dispatch). Live traffic calls this with
    one-row buffers, so a packet added alone goes through exactly the code a capture does.

    ``base`` holds the decay base 2.0 as data: a literal 2.0 lets LLVM rewrite pow(2, x) as
    exp2(x), which differs from the reference's ``math.pow`` in the last bit, and variances
    of near-constant streams amplify that bit into visible noise.
    """
    n_l = lambdas.shape[0]
    mi_cf1, mi_cf2, mi_w, mi_last = _stat_fields(mi, n_l)
    h_cf1, h_cf2, h_w, h_last = _stat_fields(h, n_l)
    jit_cf1, jit_cf2, jit_w, jit_last = _stat_fields(jit, n_l)
    hh_cf1, hh_cf2, hh_w, hh_last = _stat_fields(hh, n_l)
    hhp_cf3, hhp_w3, hhp_res, hhp_last = _pair_fields(hh_pairs, n_l)
    hp_cf1, hp_cf2, hp_w, hp_last = _stat_fields(hphp, n_l)
    hpp_cf3, hpp_w3, hpp_res, hpp_last = _pair_fields(hphp_pairs, n_l)
    for row in range(t.shape[0]):
        ti = t[row]
        v = size[row]
        mi_id = ids[row, 0]
        h_id = ids[row, 1]
        _insert(mi_cf1, mi_cf2, mi_w, mi_last, mi_id, v, ti, lambdas, base)
        _write_1d(out, row, 0, mi_cf1, mi_cf2, mi_w, mi_id)
        _insert(h_cf1, h_cf2, h_w, h_last, h_id, v, ti, lambdas, base)
        _write_1d(out, row, 3 * n_l, h_cf1, h_cf2, h_w, h_id)
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
