"""Poisoning devices for tests and benchmarks: honest devices whose replies, or data, an
attacker changed.

A :class:`TamperingPool` wraps any :class:`~fediot.core.federated.server.ClientPool` and
rewrites the replies of its attacking devices (``changes``: client method → change); the
changes below are the attacks of the poisoning benchmark (``bench/bench_poisoning.py``), each
*internally consistent* so that the server's structural reply checks
(:mod:`~fediot.core.federated.validation`) pass and only the optional ones (the update-norm
bound) or the robust combination can stop it:

* :func:`scaled_update` — a fit reply whose update ``Δ = w_local − w_global`` is replaced by
  ``factor · Δ`` (sign-flip ×10: ``factor = -10``; scaling ×1000: ``factor = 1000``);
* :func:`inflated_scaler` — scaler sums ``Σx × c`` and ``Σx² × c²`` (a consistent lie: the
  device's rows times ``c``);
* :func:`shifted_errors` — threshold-row errors × 10^(bins/50): sums scaled, histogram shifted
  ``bins`` bins up (35 bins ≈ ×5);
* :func:`on_attack_traffic` — not a reply change but a data change: the device trains (and
  reports its scaler statistics) on its own attack rows instead of its benign training rows.

Nothing here is used by a run of FedIoT itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

import numpy as np

from fediot.core.federated.client import ClientData
from fediot.core.federated.messages import (
    FitReport,
    FitTask,
    Refusal,
    Reply,
    ScalerReport,
)
from fediot.core.model import ErrorStats, ScalerStats

ReplyChange = Callable[[Any, Any], Any]
"""``change(task, result) → result``: what an attacking device sends instead of ``result``."""


class _Pool(Protocol):
    @property
    def client_ids(self) -> list[str]: ...

    def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]: ...


class TamperingPool:
    """A pool whose devices in ``attackers`` answer ``changes[method](task, result)`` instead
    of their honest result (a :class:`Refusal` is passed on unchanged).

    Parameters
    ----------
    pool
        The honest pool (a :class:`~fediot.engines.inprocess.SequentialPool`, …).
    attackers
        The client ids that lie.
    changes
        Client method (``scaler_stats``, ``fit``, ``threshold_stats``, ``evaluate``) → change.
    """

    def __init__(self, pool: _Pool, attackers: Collection[str],
                 changes: Mapping[str, ReplyChange]) -> None:
        self.pool, self.attackers, self.changes = pool, frozenset(attackers), dict(changes)

    @property
    def client_ids(self) -> list[str]:
        return self.pool.client_ids

    def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]:
        replies = self.pool.exchange(method, tasks)
        change = self.changes.get(method)
        if change is None:
            return replies
        for cid in self.attackers & replies.keys():
            reply = replies[cid]
            if not isinstance(reply.result, Refusal):
                replies[cid] = dataclasses.replace(reply,
                                                   result=change(tasks[cid], reply.result))
        return replies

    def call(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Any]:
        """The results of :meth:`exchange` alone."""
        return {cid: reply.result for cid, reply in self.exchange(method, tasks).items()}

    def close(self) -> None:
        close = getattr(self.pool, "close", None)
        if close is not None:
            close()


def scaled_update(factor: float) -> ReplyChange:
    """A fit change: the update ``Δ = w − w_global`` becomes ``factor · Δ`` (``-10``: the
    sign-flip ×10 attack; ``1000``: the scaling attack)."""

    def change(task: FitTask, report: FitReport) -> FitReport:
        weights = [(g.astype(np.float64) + factor * (w.astype(np.float64) - g)).astype(w.dtype)
                   for w, g in zip(report.weights, task.model.weights, strict=True)]
        return dataclasses.replace(report, weights=weights)

    return change


def inflated_scaler(factor: float) -> ReplyChange:
    """A scaler-step change: ``Σx × c``, ``Σx² × c²`` (the statistics of the rows × c, so
    every consistency check passes)."""

    def change(_task: Any, report: ScalerReport) -> ScalerReport:
        s = report.stats
        return ScalerReport(ScalerStats(s.n, s.sum * factor, s.sumsq * factor * factor),
                            report.data)

    return change


def shifted(stats: ErrorStats, bins: int) -> ErrorStats:
    """``stats`` of errors × 10^(``bins``/50): every error moved ``bins`` histogram bins up
    (those beyond the last bin land in it), sums scaled to match."""
    factor = 10 ** (bins / 50)
    hist = np.zeros_like(stats.hist)
    hist[bins:] = stats.hist[:len(hist) - bins]
    hist[-1] += stats.hist[len(hist) - bins:].sum()
    return ErrorStats(stats.n, stats.sum * factor, stats.sumsq * factor**2, hist)


def shifted_errors(bins: int) -> ReplyChange:
    """A threshold-step change: the device's errors × 10^(bins/50) (35 bins ≈ ×5)."""
    return lambda _task, stats: shifted(stats, bins)


def on_attack_traffic(data: ClientData, seed: int = 0) -> ClientData:
    """``data`` with its training rows replaced by its own attack rows: as many as it had
    training rows (or all it has), drawn evenly from every attack class, in time order within
    each class. The threshold and test rows stay (its attack rows are still scored)."""
    classes = [rows for _, rows in sorted(data.test_attacks.items()) if len(rows)]
    if not classes:
        return data
    attack = np.concatenate(classes)
    n = min(len(data.train), len(attack))
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(attack), size=n, replace=False))
    return dataclasses.replace(data, train=np.ascontiguousarray(attack[keep]))
