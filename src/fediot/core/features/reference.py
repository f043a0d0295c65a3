"""A plain-Python AfterImage: the readable oracle the fast extractor is tested against.

One object per statistic, exactly as Kitsune's ``AfterImage.py`` (MIT, Y. Mirsky) defines them,
with N-BaIoT's conventions (see :mod:`fediot.core.features.extractor` for the list). It is slow
(a Python loop per packet, per stream, per λ) and meant for tests and the benchmark's baseline,
never for real traffic.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import LAMBDAS, N_FEATURES
from fediot.core.features.packets import (
    KIND_ARP,
    KIND_OTHER,
    PORT_NONE,
    PacketTable,
)

INITIAL_WEIGHT = 1e-20
"""Kitsune starts every stream at this weight, so the mean of an unseen stream is 0."""


class IncStat:
    """Damped-window count, linear sum and squared sum of one stream at one decay factor λ.

    Every observation's weight decays as 2^(−λ·Δt); ``weight`` is the decayed count.

    Parameters
    ----------
    lam
        Decay factor λ.
    last_time
        Time the sums were last decayed to (Kitsune's ``init_time``).
    is_jitter
        If true the inserted value is the time since ``last_time`` (0 if not positive).
    """

    def __init__(self, lam: float, last_time: float, is_jitter: bool = False) -> None:
        self.lam = lam
        self.last_time = last_time
        self.is_jitter = is_jitter
        self.cf1 = 0.0
        self.cf2 = 0.0
        self.w = INITIAL_WEIGHT
        self.covs: list[IncStatCov] = []

    def decay(self, t: float) -> None:
        dt = t - self.last_time
        if dt > 0:
            factor = math.pow(2.0, -self.lam * dt)
            self.cf1 *= factor
            self.cf2 *= factor
            self.w *= factor
            self.last_time = t

    def insert(self, v: float, t: float) -> None:
        if self.is_jitter:
            dt = t - self.last_time
            v = dt if dt > 0 else 0.0
        self.decay(t)
        self.cf1 += v
        self.cf2 += v * v
        self.w += 1.0
        for cov in self.covs:
            cov.update(self, v, t)

    def mean(self) -> float:
        # a stream never inserted into keeps only its start weight, which can decay to 0
        return self.cf1 / self.w if self.w > 0 else 0.0

    def var(self) -> float:
        # m * m, not m ** 2: libm's pow may differ from the product in the last bit, and this
        # difference of near-equal terms turns that bit into visible noise
        if self.w <= 0:
            return 0.0
        mean = self.mean()
        return abs(self.cf2 / self.w - mean * mean)

    def std(self) -> float:
        return math.sqrt(self.var())


class IncStatCov:
    """Damped sum of residual products between two streams (Kitsune's covariance approximation).

    ``streams[0]`` is the stream whose packet created the pair.
    """

    def __init__(self, first: IncStat, second: IncStat, t: float) -> None:
        self.streams = (first, second)
        self.last_residual = [0.0, 0.0]
        self.cf3 = 0.0
        self.w3 = INITIAL_WEIGHT
        self.last_time = t
        first.covs.append(self)
        second.covs.append(self)

    def update(self, stream: IncStat, v: float, t: float) -> None:
        side = 0 if stream is self.streams[0] else 1
        self.streams[1 - side].decay(t)
        dt = t - self.last_time
        if dt > 0:
            factor = math.pow(2.0, -stream.lam * dt)
            self.cf3 *= factor
            self.w3 *= factor
            # the reference convention: the other direction's residual ages with the sums it
            # is multiplied into (upstream Kitsune decays this side's, which is overwritten
            # below anyway, so a residual from hours ago counted in full: |pcc| up to ~2,400)
            self.last_residual[1 - side] *= factor
            self.last_time = t
        residual = v - stream.mean()
        self.cf3 += residual * self.last_residual[1 - side]
        self.w3 += 1.0
        self.last_residual[side] = residual

    def cov(self) -> float:
        return self.cf3 / self.w3

    def pcc(self) -> float:
        ss = self.streams[0].std() * self.streams[1].std()
        return self.cov() / ss if ss != 0 else 0.0


class ReferenceExtractor:
    """Per-packet, per-stream, per-λ Python loop producing the 115 N-BaIoT features.

    Parameters
    ----------
    first_jitter
        ``"epoch"`` (default, as in N-BaIoT): a new channel's first jitter is the packet's
        absolute time; ``"zero"``: it is 0.
    """

    def __init__(self, first_jitter: str = "epoch") -> None:
        self.first_jitter = first_jitter
        self.stats: dict[tuple[str, Hashable, float], IncStat] = {}
        self.pairs: dict[tuple[str, frozenset[Hashable], float], IncStatCov] = {}

    def _stat(self, kind: str, key: Hashable, lam: float, t: float) -> IncStat:
        stat = self.stats.get((kind, key, lam))
        if stat is None:
            is_jitter = kind == "jit"
            start = 0.0 if is_jitter and self.first_jitter == "epoch" else t
            stat = IncStat(lam, start, is_jitter)
            self.stats[(kind, key, lam)] = stat
        return stat

    def _one_d(self, kind: str, key: Hashable, v: float, t: float) -> list[float]:
        out: list[float] = []
        for lam in LAMBDAS:
            s = self._stat(kind, key, lam, t)
            s.insert(v, t)
            out += [s.w, s.mean(), s.var()]
        return out

    def _two_d(self, kind: str, src: Hashable, dst: Hashable, v: float, t: float) -> list[float]:
        if src == dst:  # keep the two directions distinct, as N-BaIoT's keys do
            dst = ("suffix", dst)
        out: list[float] = []
        for lam in LAMBDAS:
            s = self._stat(kind, (src, dst), lam, t)
            r = self._stat(kind, (dst, src), lam, t)
            pair_key = (kind, frozenset(((src, dst), (dst, src))), lam)
            if pair_key not in self.pairs:
                # Kitsune registers the pair before the first insert, so that insert updates it
                self.pairs[pair_key] = IncStatCov(s, r, t)
            cov = self.pairs[pair_key]
            s.insert(v, t)
            magnitude = math.sqrt(s.mean() * s.mean() + r.mean() * r.mean())
            radius = math.sqrt(s.var() * s.var() + r.var() * r.var())
            out += [s.w, s.mean(), s.std(), magnitude, radius, cov.cov(), cov.pcc()]
        return out

    def update(
        self,
        *,
        t: float,
        size: float,
        src_mac: int,
        dst_mac: int,
        src_ip: str,
        dst_ip: str,
        src_port: int,
        dst_port: int,
        kind: int,
    ) -> list[float]:
        """Add one packet; return its 115 features."""
        src: Hashable = src_ip
        dst: Hashable = dst_ip
        if kind == KIND_OTHER:  # no IP and no ARP: the MACs stand in for the IPs
            src, dst = ("mac", src_mac), ("mac", dst_mac)
        if kind in (KIND_ARP, KIND_OTHER):
            # Kitsune keys an ARP socket by MAC alone: the key a non-IP frame of that MAC gets
            src_sock: Hashable = (("mac", src_mac), PORT_NONE)
            dst_sock: Hashable = (("mac", dst_mac), PORT_NONE)
        else:
            src_sock, dst_sock = (src, src_port), (dst, dst_port)
        return (
            self._one_d("mi", (src_mac, src), size, t)
            + self._one_d("h", src, size, t)
            + self._two_d("hh", src, dst, size, t)
            + self._one_d("jit", (src, dst), 0.0, t)
            + self._two_d("hphp", src_sock, dst_sock, size, t)
        )


def reference_features(
    packets: PacketTable, first_jitter: str = "epoch"
) -> npt.NDArray[np.float64]:
    """The 115 features of every packet, by :class:`ReferenceExtractor` (slow; for tests)."""
    extractor = ReferenceExtractor(first_jitter)
    out = np.empty((len(packets), N_FEATURES), dtype=np.float64)
    for i in range(len(packets)):
        out[i] = extractor.update(
            t=float(packets.timestamp[i]),
            size=float(packets.frame_len[i]),
            src_mac=int(packets.src_mac[i]),
            dst_mac=int(packets.dst_mac[i]),
            src_ip=str(packets.src_ip[i]),
            dst_ip=str(packets.dst_ip[i]),
            src_port=int(packets.src_port[i]),
            dst_port=int(packets.dst_port[i]),
            kind=int(packets.kind[i]),
        )
    return out
