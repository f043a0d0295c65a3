"""Differential privacy: what a device adds to what it sends, and what the run's (ε, δ) is.

Every engine runs the same :class:`~fediot.core.federated.client.DeviceClient`, which calls the
functions here (its :class:`~fediot.core.federated.client.DeviceGuards` carry the run's
:class:`PrivacyPlan`), so the in-process simulator, Flower on Ray and a Flower deployment add
the same noise; the server only accounts (:func:`privacy_report`).

Choice: local noise, on each device
    A device clips its update Δ = w_local − w_global to L2 norm ``clip_norm`` C and adds
    N(0, σ²C²) to every coordinate itself, before the reply leaves it (:func:`privatize_update`).
    Noise calibrated for the sum (σC/√n per device, "distributed DP") protects a device only
    if the server sees nothing but the sum, i.e. with secure aggregation, which FedIoT does not
    have: the server receives each reply on its own. With local noise every reply is protected
    by itself, whatever the server does with it (FedAvg, FedAdam, trimmed means, Krum are all
    post-processing); the price is √n times the noise on the average that central DP would need.
    The noise comes from the operating system's entropy (:func:`secure_rng`), never from the
    run's seed, which the server knows and could use to subtract it; a run with privacy is
    therefore not bit-for-bit reproducible. (Floating-point Gaussian samples are not the
    discrete Gaussian a hardened implementation would use: a known caveat.)

What the server must not see
    Any un-noised function of a device's rows: no raw update (only the clipped, noised one), no
    exact feature or error sums, no exact histogram, no per-round validation loss (devices send
    none while privacy is on, so early stopping and best-round selection are off: the run ends
    with its last round). Row counts (training, threshold, warm-up rows; the rows a training
    round used) are *public*: the server needs and checks them, and the guarantee is stated
    for neighbouring data sets of the same size.

Statistics
    The scaler step's Σx, Σx² (115 features) and the threshold step's Σe, Σe² and error
    histogram are sums over rows; each row is first clipped (features in signed-log space to
    [−``feature_bound``, ``feature_bound``], errors to [0, ``error_bound``]) so that replacing
    one row moves each sum by a known L2 sensitivity, and each sum gets Gaussian noise of
    ``statistics multiplier × sensitivity`` (:func:`noisy_scaler_stats`,
    :func:`noisy_error_stats`), then is made consistent (counts ≥ 0 totalling the public n,
    Σx² ≥ (Σx)²/n, …), which is post-processing.

Accounting (Google's ``dp-accounting``, Rényi DP)
    Unit: one row of one device, replaced by any other row. A replaced row moves a device's
    clipped update by at most 2C, so each round is a Gaussian mechanism of multiplier σ/2,
    sampled with probability q = client_num_per_round / client_num_in_total; each statistics
    release is a Gaussian mechanism of the statistics multiplier per sum. All of them are
    composed in one accountant:

    ``epsilon``
        For whoever sees the global models but not which devices were sampled: rounds are
        Poisson-subsampled Gaussians (the DP-FedAvg convention; FedIoT's seeded fixed-size
        sample is approximated as Poisson sampling of rate q).
    ``epsilon_server``
        For the server, which knows who was sampled and sees every reply: no amplification
        by sampling (q = 1).
    ``epsilon_device_updates``
        The training updates alone at the level of a whole device (add or remove a device:
        multiplier σ, amplified by q). The statistics have no device-level guarantee (a
        device's influence on a sum grows with its row count).

    Not covered: the evaluation step's replies (test-split verdict counts and error
    statistics, and the ws* window chosen on threshold rows) — they measure the experiment.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dp_accounting
import numpy as np
import numpy.typing as npt

from fediot.core.catalog import N_FEATURES
from fediot.core.errors import FediotError
from fediot.core.model import ErrorStats, ScalerStats
from fediot.core.model.threshold import error_bin_edges, error_bin_index
from fediot.core.model.transform import signed_log1p

RDP_ORDERS: tuple[float, ...] = (*map(float, range(2, 64)), 128.0, 256.0, 512.0, 1024.0)
"""Rényi orders the accountant evaluates: integers (the library's series for fractional orders
below 2 does not converge at large sampling rates; integer orders are computed exactly)."""

SCALER_SUMS = 2
"""Gaussian releases per scaler step: Σx and Σx²."""
THRESHOLD_SUMS = 3
"""Gaussian releases per threshold step: Σe, Σe² and the histogram."""

_MAX_MULTIPLIER = 1e6


class PrivacyError(FediotError):
    """A privacy setting cannot be met (e.g. no noise reaches the target ε)."""


@dataclass(frozen=True)
class PrivacyPlan:
    """What a device adds and what the server accounts, for one run.

    Parameters
    ----------
    clip_norm
        C: the L2 norm an update is clipped to.
    noise_multiplier
        σ: each device adds N(0, σ²C²) per coordinate of its clipped update.
    statistics_multiplier
        Noise of each statistics sum, in units of its sensitivity.
    feature_bound, error_bound
        Clipping of a row's signed-log features and of an error before they are summed.
    sampling_rate
        q = client_num_per_round / client_num_in_total.
    rounds
        Training rounds planned (``comm_round``).
    threshold_releases
        Threshold steps planned (the final one and one per in-training evaluation).
    target_delta
        δ the ε's are stated for.
    """

    clip_norm: float
    noise_multiplier: float
    statistics_multiplier: float
    feature_bound: float
    error_bound: float
    sampling_rate: float
    rounds: int
    threshold_releases: int
    target_delta: float

    @classmethod
    def from_config(cls, config: Any) -> PrivacyPlan | None:
        """The plan of a run's configuration (``None`` when ``privacy_args.enabled`` is off);
        with ``target_epsilon`` > 0 both multipliers are solved with the accountant."""
        p = config.privacy_args
        if not p.enabled:
            return None
        t = config.train_args
        every = config.validation_args.frequency_of_the_test
        releases = 1 + (sum(1 for r in range(1, t.comm_round) if r % every == 0)
                        if every else 0)
        return _plan(p.clip_norm, p.noise_multiplier, p.statistics_noise_multiplier,
                     p.target_epsilon, p.statistics_epsilon_share, p.feature_bound,
                     p.error_bound, t.client_num_per_round / t.client_num_in_total,
                     t.comm_round, releases, p.target_delta)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _events(rounds: int, q: float, update_multiplier: float, statistics_multiplier: float,
            threshold_releases: int) -> dp_accounting.DpEvent:
    """The run's releases as one composed DP event (the multipliers already per unit)."""
    parts: list[dp_accounting.DpEvent] = []
    if rounds and update_multiplier > 0:
        gaussian = dp_accounting.GaussianDpEvent(update_multiplier)
        event = gaussian if q >= 1 else dp_accounting.PoissonSampledDpEvent(q, gaussian)
        parts.append(dp_accounting.SelfComposedDpEvent(event, rounds))
    stat_count = SCALER_SUMS + THRESHOLD_SUMS * threshold_releases
    if statistics_multiplier > 0 and stat_count:
        parts.append(dp_accounting.SelfComposedDpEvent(
            dp_accounting.GaussianDpEvent(statistics_multiplier), stat_count))
    return dp_accounting.ComposedDpEvent(parts)


def rdp_epsilon(event: dp_accounting.DpEvent, delta: float) -> float:
    """ε at ``delta`` of ``event`` by ``dp-accounting``'s Rényi-DP accountant."""
    accountant = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def run_epsilon(*, noise_multiplier: float, statistics_multiplier: float, sampling_rate: float,
                rounds: int, threshold_releases: int, delta: float) -> float:
    """The record-level ε of a run (``epsilon`` of :func:`privacy_report`)."""
    return rdp_epsilon(_events(rounds, sampling_rate, noise_multiplier / 2,
                               statistics_multiplier, threshold_releases), delta)


def _solve(make_event: Any, target_epsilon: float, delta: float) -> float:
    try:
        return float(dp_accounting.calibrate_dp_mechanism(
            lambda: dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS)), make_event,
            target_epsilon, delta,
            bracket_interval=dp_accounting.ExplicitBracketInterval(1e-3, _MAX_MULTIPLIER)))
    except Exception as error:  # the library raises plain ValueError / its own errors
        raise PrivacyError(f"no noise multiplier up to {_MAX_MULTIPLIER:g} reaches ε = "
                           f"{target_epsilon:g} at δ = {delta:g}: {error}") from None


@functools.lru_cache(maxsize=64)
def _plan(clip_norm: float, noise_multiplier: float, statistics_multiplier: float,
          target_epsilon: float, share: float, feature_bound: float, error_bound: float,
          q: float, rounds: int, releases: int, delta: float) -> PrivacyPlan:
    if target_epsilon > 0:
        statistics_multiplier = _solve(
            lambda s: _events(0, q, 0.0, s, releases), share * target_epsilon, delta)
        noise_multiplier = _solve(
            lambda z: _events(rounds, q, z / 2, statistics_multiplier, releases),
            target_epsilon, delta)
    return PrivacyPlan(clip_norm, noise_multiplier, statistics_multiplier, feature_bound,
                       error_bound, q, rounds, releases, delta)


def privacy_report(plan: PrivacyPlan, rounds: int, threshold_releases: int) -> dict[str, Any]:
    """The (ε, δ) of a finished run (``rounds`` trained, ``threshold_releases`` threshold
    steps), with the plan's settings: what ``results.json`` records under ``privacy``."""
    delta = plan.target_delta
    record_level = functools.partial(
        run_epsilon, noise_multiplier=plan.noise_multiplier,
        statistics_multiplier=plan.statistics_multiplier, rounds=rounds,
        threshold_releases=threshold_releases, delta=delta)
    return {
        "epsilon": record_level(sampling_rate=plan.sampling_rate),
        "epsilon_server": record_level(sampling_rate=1.0),
        "epsilon_device_updates": rdp_epsilon(
            _events(rounds, plan.sampling_rate, plan.noise_multiplier, 0.0, 0), delta),
        "delta": delta,
        "rounds": rounds,
        "threshold_releases": threshold_releases,
        "accountant": "dp-accounting RDP",
        "unit": "one row of a device (replaced); epsilon_device_updates: one device",
        "noise": "local (each device adds N(0, σ²C²) to its clipped update)",
        **{k: v for k, v in plan.to_dict().items()
           if k not in ("rounds", "threshold_releases", "target_delta")},
    }


def describe(report: dict[str, Any]) -> str:
    """One line for a run's summary."""
    return (f"differential privacy: ε = {report['epsilon']:.3g} (server's view "
            f"{report['epsilon_server']:.3g}; device-level updates "
            f"{report['epsilon_device_updates']:.3g}) at δ = {report['delta']:g}, "
            f"σ = {report['noise_multiplier']:.3g}, C = {report['clip_norm']:g}")


def secure_rng() -> np.random.Generator:
    """A generator seeded from the operating system's entropy (never from the run's seed)."""
    return np.random.default_rng()


def clip_update(update: Sequence[npt.NDArray[np.floating[Any]]],
                clip_norm: float) -> list[npt.NDArray[np.float64]]:
    """``update`` scaled down (never up) so that its global L2 norm is at most ``clip_norm``."""
    arrays = [np.asarray(a, dtype=np.float64) for a in update]
    norm = math.sqrt(sum(float(np.dot(a.ravel(), a.ravel())) for a in arrays))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    return [a * scale for a in arrays]


def privatize_update(local: Sequence[npt.NDArray[Any]], global_: Sequence[npt.NDArray[Any]],
                     plan: PrivacyPlan, rng: np.random.Generator) -> list[npt.NDArray[Any]]:
    """The weights a device sends: w_global + clip(w_local − w_global, C) + N(0, σ²C²)."""
    delta = clip_update([np.asarray(w, np.float64) - np.asarray(g, np.float64)
                         for w, g in zip(local, global_, strict=True)], plan.clip_norm)
    std = plan.noise_multiplier * plan.clip_norm
    return [(np.asarray(g, np.float64) + d + rng.normal(0.0, std, d.shape)).astype(
                np.asarray(w).dtype)
            for w, g, d in zip(local, global_, delta, strict=True)]


def scaler_sensitivities(plan: PrivacyPlan, n_features: int = N_FEATURES) -> tuple[float, float]:
    """L2 sensitivities of (Σx, Σx²) to replacing one row whose features lie in [−B, B]."""
    b = plan.feature_bound
    return 2 * b * math.sqrt(n_features), b * b * math.sqrt(n_features)


def noisy_scaler_stats(rows: npt.ArrayLike, plan: PrivacyPlan,
                       rng: np.random.Generator) -> ScalerStats:
    """Scaler statistics of ``rows`` (raw features) with clipped rows and Gaussian noise; the
    count is exact (public)."""
    values = np.clip(signed_log1p(np.asarray(rows, dtype=np.float64)),
                     -plan.feature_bound, plan.feature_bound)
    n, d = values.shape
    s_sum, s_sq = scaler_sensitivities(plan, d)
    z = plan.statistics_multiplier
    total = values.sum(axis=0) + rng.normal(0.0, z * s_sum, d)
    squares = np.einsum("ij,ij->j", values, values) + rng.normal(0.0, z * s_sq, d)
    # post-processing: what any n rows in [−B, B] could give
    total = np.clip(total, -n * plan.feature_bound, n * plan.feature_bound)
    squares = np.clip(squares, total * total / max(n, 1), n * plan.feature_bound ** 2)
    return ScalerStats(n, total, np.maximum(squares, total * total / max(n, 1)))


def error_sensitivities(plan: PrivacyPlan) -> tuple[float, float, float]:
    """L2 sensitivities of (Σe, Σe², histogram) to replacing one error in [0, E]."""
    return plan.error_bound, plan.error_bound ** 2, math.sqrt(2.0)


def _counts_with_total(noisy: npt.NDArray[np.float64], total: int) -> npt.NDArray[np.int64]:
    """Non-negative integer counts proportional to ``noisy`` (clipped at 0) summing to
    ``total`` (largest remainders)."""
    weights = np.maximum(noisy, 0.0)
    if total == 0:
        return np.zeros(len(noisy), dtype=np.int64)
    if weights.sum() <= 0:
        weights = np.ones(len(noisy))
    ideal = weights / weights.sum() * total
    counts: npt.NDArray[np.int64] = np.floor(ideal).astype(np.int64)
    short = total - int(counts.sum())
    counts[np.argsort(-(ideal - counts), kind="stable")[:short]] += 1
    return counts


def noisy_error_stats(errors: npt.ArrayLike, plan: PrivacyPlan,
                      rng: np.random.Generator) -> ErrorStats:
    """Error statistics with errors clipped to [0, E] and Gaussian noise on Σe, Σe² and the
    histogram; the count is exact (public), the noisy histogram is rescaled to it and Σe, Σe²
    made consistent with it."""
    values = np.clip(np.asarray(errors, dtype=np.float64), 0.0, plan.error_bound)
    exact = ErrorStats.from_errors(values)
    if exact.n == 0:
        return exact
    z = plan.statistics_multiplier
    s_sum, s_sq, s_hist = error_sensitivities(plan)
    noisy = exact.hist + rng.normal(0.0, z * s_hist, exact.hist.shape)
    top = int(error_bin_index(np.asarray([plan.error_bound]))[0])
    noisy[top + 1:] = 0.0  # no clipped error lies above E: the bins there are known empty
    hist = _counts_with_total(noisy, exact.n)
    edges = error_bin_edges()
    low = float(np.dot(hist[1:], edges[1:-1]))
    high = float(np.dot(hist[:top], edges[1:top + 1])) + int(hist[top]) * plan.error_bound
    total = float(np.clip(exact.sum + rng.normal(0.0, z * s_sum), low, max(high, low)))
    squares = exact.sumsq + float(rng.normal(0.0, z * s_sq))
    squares = float(np.clip(squares, total * total / exact.n,
                            max(exact.n * plan.error_bound ** 2, total * total / exact.n)))
    return ErrorStats(exact.n, total, squares, hist)


__all__ = [
    "PrivacyError", "PrivacyPlan", "clip_update", "describe",
    "noisy_error_stats", "noisy_scaler_stats", "privacy_report", "privatize_update",
    "rdp_epsilon", "run_epsilon", "secure_rng",
]
