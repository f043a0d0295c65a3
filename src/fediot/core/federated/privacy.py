"""Differential privacy: DP-SGD on each device, private statistics, and the run's (ε, δ).

Every engine runs the same :class:`~fediot.core.federated.client.DeviceClient`, which calls the
functions here (its :class:`~fediot.core.federated.client.DeviceGuards` carry the run's
:class:`PrivacyPlan`), so the in-process simulator, Flower on Ray and a Flower deployment add
the same noise; the server only accounts (:func:`privacy_report`).

Unit: one row of one device (record-level DP, as in cross-silo federated learning)
    A row belongs to one device, so its privacy loss is what that device releases: its
    training (every round it takes part in) and its statistics. Row counts (training,
    threshold, warm-up rows) are *public*: the server needs and checks them, and DP-SGD's
    sampling rate and step count are set by them (as in Opacus and TensorFlow Privacy).

Training: DP-SGD on the device (:func:`~fediot.core.model.train_local` with
:class:`~fediot.core.model.PrivateTraining`)
    Each local step samples every training row independently with probability
    q = batch_size / rows (Poisson sampling: what the accountant's amplification proves), clips
    every row's gradient to L2 norm ``clip_norm`` C, sums them and adds N(0, σ²C²) per
    coordinate. A row added or removed moves that sum by at most C, so each step is a
    Poisson-sampled Gaussian mechanism of multiplier σ; a round is ``epochs`` ×
    rows / batch_size such steps. The weights a device sends are post-processing of those
    noisy gradients (the optimiser, weight decay, FedProx and anything the server does with
    them: FedAvg, FedAdam, trimmed means, Krum), so they carry no extra noise, and the
    guarantee holds against the server too, which sees each reply on its own: the sampling
    and the noise come from the operating system's entropy (:func:`secure_rng`), never the
    run's seed, which the server knows. A run with privacy is therefore not bit-for-bit
    reproducible. (Floating-point Gaussian samples are not the discrete Gaussian a hardened
    implementation would use: a known caveat.) The device refuses a training task whose
    epochs or batch size differ from the plan's: the accountant counted those.

Statistics (replacing one row; the sensitivities also bound adding or removing one)
    Scaler: Σx and Σx² of the signed-log features, each row clipped to
    [−``feature_bound``, ``feature_bound``] (:func:`noisy_scaler_stats`). Threshold: only the
    error *histogram* (:func:`noisy_error_stats`): replacing a row moves one count out of one
    bin into another (L2 sensitivity √2) whatever the error's scale, so no a-priori error
    bound is needed; Σe and Σe² are not released but recomputed from the noisy histogram's bin
    centres (post-processing), and so are ``mean + k·std`` and the quantile thresholds. Each
    sum gets Gaussian noise of ``statistics multiplier × sensitivity``. The histogram is
    released at :data:`PRIVATE_BINS_PER_DECADE` (ten exact bins per released bin, so counts
    stand out of the noise), then post-processed (:func:`noisy_histogram`): bins under
    :data:`HISTOGRAM_CUTOFF` noise deviations, and bins apart from the run around the largest
    one, are emptied (most bins are empty, and their noise would otherwise become false
    errors up to 1e8), and the counts are made non-negative integers totalling the public n;
    for the scaler, Σx² ≥ (Σx)²/n.

What the server must not see
    No un-noised function of a device's rows: no training loss (a private reply's
    ``mean_loss`` is 0), no validation loss (so early stopping and best-round selection are off
    and the run ends with its last round), no exact feature or error sums or histogram.

Accounting (Google's ``dp-accounting``, Rényi DP)
    With ``target_epsilon`` > 0 the budget is split: the statistics alone spend
    ``statistics_epsilon_share`` × ε (which fixes the statistics multiplier), and each
    device's DP-SGD multiplier σ is then solved so that its training *and* statistics compose
    to ε, assuming it trains in every planned round (σ depends on its row count: a larger
    device samples a smaller share of its rows per step and needs less noise). The run's
    recorded ``epsilon`` is the largest over devices of that composition for the rounds each
    device was actually sampled in, and the threshold steps actually run.

    Not covered: the evaluation step's replies (test-split verdict counts and error
    statistics, and the ws* window chosen on threshold rows) — they measure the experiment.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import N_FEATURES
from fediot.core.errors import FediotError
from fediot.core.model import ErrorStats, ScalerStats, private_steps_per_epoch
from fediot.core.model.threshold import BINS_PER_DECADE
from fediot.core.model.transform import signed_log1p

if TYPE_CHECKING:
    import dp_accounting

RDP_ORDERS: tuple[float, ...] = (*map(float, range(2, 64)), 128.0, 256.0, 512.0, 1024.0)
"""Rényi orders the accountant evaluates: integers (the library's series for fractional orders
below 2 does not converge at large sampling rates; integer orders are computed exactly)."""

SCALER_SUMS: Final[int] = 2
"""Gaussian releases per scaler step: Σx and Σx²."""
THRESHOLD_SUMS: Final[int] = 1
"""Gaussian releases per threshold step: the error histogram."""
HISTOGRAM_SENSITIVITY: Final[float] = math.sqrt(2.0)
"""L2 change of an error histogram when one row is replaced (one count −1, another +1)."""
PRIVATE_BINS_PER_DECADE: Final[int] = 5
"""Resolution of a released error histogram: 5 bins per decade (a factor 1.58 each), ten of
the exact histogram's bins summed into one, so each released count is ten times larger against
the same noise (the sweep in BENCHMARKS.md: 50 per decade leave benign bins under the noise)."""
HISTOGRAM_CUTOFF: Final[float] = 3.0
"""Noisy released bins under this many noise standard deviations are emptied (an empty bin
passes with probability 0.13 %)."""
HISTOGRAM_MAX_GAP: Final[int] = 2
"""Kept bins further than this many empty bins from the run of bins around the largest one are
emptied too: benign errors form one run of bins, and a lone empty bin whose noise passed the
cutoff far out (say at 1e6) would otherwise set a threshold millions of times too high."""

_MAX_MULTIPLIER = 1e6


class PrivacyError(FediotError):
    """A privacy setting cannot be met (e.g. no noise reaches the target ε)."""


@dataclass(frozen=True)
class PrivacyPlan:
    """What a device adds and what the server accounts, for one run.

    Parameters
    ----------
    clip_norm
        C: every row's gradient is clipped to this L2 norm in DP-SGD.
    noise_multiplier
        σ of DP-SGD when ``target_epsilon`` is 0 (with a target, σ is solved per device:
        :meth:`training_multiplier`).
    statistics_multiplier
        Noise of each statistics sum, in units of its sensitivity.
    target_epsilon
        ε every device's rows must stay within (0: none, the multipliers are as given).
    statistics_epsilon_share
        The share of ``target_epsilon`` the statistics alone spend (the rest is DP-SGD's).
    feature_bound
        Clipping of a row's signed-log features before the scaler sums.
    rounds, epochs, batch_size
        Training rounds planned (``comm_round``), local epochs and batch size per round.
    threshold_releases
        Threshold steps planned (the final one and one per in-training evaluation).
    target_delta
        δ the ε's are stated for.
    """

    clip_norm: float
    noise_multiplier: float
    statistics_multiplier: float
    target_epsilon: float
    statistics_epsilon_share: float
    feature_bound: float
    rounds: int
    epochs: int
    batch_size: int
    threshold_releases: int
    target_delta: float

    @classmethod
    def from_config(cls, config: Any) -> PrivacyPlan | None:
        """The plan of a run's configuration (``None`` when ``privacy_args.enabled`` is off);
        with ``target_epsilon`` > 0 the statistics multiplier is solved with the accountant
        from its share of ε."""
        p = config.privacy_args
        if not p.enabled:
            return None
        t = config.train_args
        every = config.validation_args.frequency_of_the_test
        releases = 1 + (sum(1 for r in range(1, t.comm_round) if r % every == 0)
                        if every else 0)
        statistics_multiplier = p.statistics_noise_multiplier
        if p.target_epsilon > 0:
            statistics_multiplier = _solve_statistics(
                p.statistics_epsilon_share * p.target_epsilon, releases, p.target_delta)
        return cls(p.clip_norm, p.noise_multiplier, statistics_multiplier, p.target_epsilon,
                   p.statistics_epsilon_share, p.feature_bound, t.comm_round, t.epochs,
                   t.batch_size, releases, p.target_delta)

    def training_multiplier(self, rows: int) -> float:
        """σ of DP-SGD on a device with ``rows`` training rows: solved so that its training in
        every planned round and the statistics compose to ``target_epsilon``, else the
        configured ``noise_multiplier``."""
        if self.target_epsilon <= 0:
            return self.noise_multiplier
        return _solve_training(rows, self.epochs, self.batch_size, self.rounds,
                               self.statistics_multiplier, self.threshold_releases,
                               self.target_epsilon, self.target_delta)

    def device_epsilon(self, rows: int, rounds: int, threshold_releases: int) -> float:
        """ε of one row of a device with ``rows`` training rows that trained ``rounds`` rounds
        and took part in ``threshold_releases`` threshold steps (and the scaler step)."""
        return rdp_epsilon(run_events(
            rows=rows, epochs=self.epochs, batch_size=self.batch_size, rounds=rounds,
            noise_multiplier=self.training_multiplier(rows),
            statistics_multiplier=self.statistics_multiplier,
            threshold_releases=threshold_releases), self.target_delta)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def training_event(*, rows: int, epochs: int, batch_size: int, rounds: int,
                   noise_multiplier: float) -> dp_accounting.DpEvent:
    """DP-SGD of one device over ``rounds`` rounds: ``rounds × epochs ×``
    :func:`~fediot.core.model.private_steps_per_epoch` Poisson-sampled Gaussian steps."""
    import dp_accounting  # with scipy: loaded only when privacy is on (not by every device)

    steps = rounds * epochs * private_steps_per_epoch(rows, batch_size)
    rate = min(1.0, batch_size / rows)
    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    step = gaussian if rate >= 1 else dp_accounting.PoissonSampledDpEvent(rate, gaussian)
    return dp_accounting.SelfComposedDpEvent(step, steps)


def statistics_event(statistics_multiplier: float,
                     threshold_releases: int) -> dp_accounting.DpEvent:
    """One scaler step and ``threshold_releases`` threshold steps of one device."""
    import dp_accounting  # with scipy: loaded only when privacy is on (not by every device)

    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(statistics_multiplier),
        SCALER_SUMS + THRESHOLD_SUMS * threshold_releases)


def run_events(*, rows: int, epochs: int, batch_size: int, rounds: int,
               noise_multiplier: float, statistics_multiplier: float,
               threshold_releases: int) -> dp_accounting.DpEvent:
    """Everything one device releases about its rows, as one composed DP event."""
    import dp_accounting  # with scipy: loaded only when privacy is on (not by every device)

    parts = [statistics_event(statistics_multiplier, threshold_releases)]
    if rounds:
        parts.append(training_event(rows=rows, epochs=epochs, batch_size=batch_size,
                                    rounds=rounds, noise_multiplier=noise_multiplier))
    return dp_accounting.ComposedDpEvent(parts)


def rdp_epsilon(event: dp_accounting.DpEvent, delta: float) -> float:
    """ε at ``delta`` of ``event`` by ``dp-accounting``'s Rényi-DP accountant."""
    import dp_accounting  # with scipy: loaded only when privacy is on (not by every device)

    accountant = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


def _solve(make_event: Any, target_epsilon: float, delta: float) -> float:
    import dp_accounting  # with scipy: loaded only when privacy is on (not by every device)

    try:
        return float(dp_accounting.calibrate_dp_mechanism(
            lambda: dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS)), make_event,
            target_epsilon, delta,
            bracket_interval=dp_accounting.ExplicitBracketInterval(1e-3, _MAX_MULTIPLIER),
            tol=1e-4))
    except Exception as error:  # the library raises plain ValueError / its own errors
        raise PrivacyError(f"no noise multiplier up to {_MAX_MULTIPLIER:g} reaches ε = "
                           f"{target_epsilon:g} at δ = {delta:g}: {error}") from None


@functools.lru_cache(maxsize=64)
def _solve_statistics(epsilon: float, releases: int, delta: float) -> float:
    return _solve(lambda z: statistics_event(z, releases), epsilon, delta)


@functools.lru_cache(maxsize=4096)
def _solve_training(rows: int, epochs: int, batch_size: int, rounds: int,
                    statistics_multiplier: float, releases: int, epsilon: float,
                    delta: float) -> float:
    return _solve(lambda sigma: run_events(
        rows=rows, epochs=epochs, batch_size=batch_size, rounds=rounds,
        noise_multiplier=sigma, statistics_multiplier=statistics_multiplier,
        threshold_releases=releases), epsilon, delta)


def privacy_report(plan: PrivacyPlan, rows: Mapping[str, int], rounds: Mapping[str, int],
                   threshold_releases: int) -> dict[str, Any]:
    """The (ε, δ) of a finished run, with the plan's settings: what ``results.json`` records
    under ``privacy``.

    Parameters
    ----------
    plan
        The run's plan.
    rows
        Device → training rows (public counts), for every device whose rows took part.
    rounds
        Device → rounds it was sampled to train in (absent: none).
    threshold_releases
        Threshold steps run.
    """
    if not rows:
        raise PrivacyError("no device declared its rows: nothing to account")
    by_device = {device: plan.device_epsilon(count, rounds.get(device, 0), threshold_releases)
                 for device, count in sorted(rows.items())}
    sigmas = {device: plan.training_multiplier(count) for device, count in sorted(rows.items())}
    statistics = rdp_epsilon(statistics_event(plan.statistics_multiplier, threshold_releases),
                             plan.target_delta)
    return {
        "epsilon": max(by_device.values()),
        "delta": plan.target_delta,
        "epsilon_by_device": by_device,
        "epsilon_statistics": statistics,
        "noise_multiplier_by_device": sigmas,
        "noise_multiplier_min": min(sigmas.values()),
        "noise_multiplier_max": max(sigmas.values()),
        "rounds": max(rounds.values(), default=0),
        "threshold_releases": threshold_releases,
        "accountant": "dp-accounting RDP",
        "unit": "one row of a device",
        "mechanism": "DP-SGD on each device (Poisson sampling, per-row clipping to C, "
                     "N(0, σ²C²) per step); noisy scaler sums and error histogram",
        **{k: v for k, v in plan.to_dict().items()
           if k not in ("rounds", "threshold_releases", "target_delta", "noise_multiplier")},
    }


def describe(report: dict[str, Any]) -> str:
    """One line for a run's summary."""
    low, high = report["noise_multiplier_min"], report["noise_multiplier_max"]
    sigma = f"{low:.3g}" if math.isclose(low, high, rel_tol=1e-3) else f"{low:.3g}–{high:.3g}"
    return (f"differential privacy: ε = {report['epsilon']:.3g} per row at δ = "
            f"{report['delta']:g} (statistics {report['epsilon_statistics']:.3g}); DP-SGD "
            f"σ = {sigma}, C = {report['clip_norm']:g}")


def secure_rng() -> np.random.Generator:
    """A generator seeded from the operating system's entropy (never from the run's seed)."""
    return np.random.default_rng()


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


def _counts_with_total(noisy: npt.NDArray[np.float64], total: int) -> npt.NDArray[np.int64]:
    """Non-negative integer counts proportional to ``noisy`` (clipped at 0) summing to
    ``total`` (largest remainders); all in the largest bin if none is positive."""
    weights = np.maximum(noisy, 0.0)
    if weights.sum() <= 0:
        weights = np.zeros(len(noisy))
        weights[int(np.argmax(noisy))] = 1.0
    ideal = weights / weights.sum() * total
    counts: npt.NDArray[np.int64] = np.floor(ideal).astype(np.int64)
    short = total - int(counts.sum())
    counts[np.argsort(-(ideal - counts), kind="stable")[:short]] += 1
    return counts


def _run_around_largest(counts: npt.NDArray[np.float64],
                        max_gap: int) -> npt.NDArray[np.float64]:
    """``counts`` with every positive bin emptied that is not in the run around the largest
    one (neighbours at most ``max_gap`` empty bins apart)."""
    kept = np.flatnonzero(counts > 0)
    position = int(np.searchsorted(kept, int(np.argmax(counts))))
    high = low = position
    while high + 1 < len(kept) and kept[high + 1] - kept[high] <= max_gap + 1:
        high += 1
    while low > 0 and kept[low] - kept[low - 1] <= max_gap + 1:
        low -= 1
    run = np.zeros_like(counts)
    run[kept[low]:kept[high] + 1] = counts[kept[low]:kept[high] + 1]
    return run


def noisy_histogram(hist: npt.NDArray[np.int64], statistics_multiplier: float,
                    rng: np.random.Generator, *,
                    bins_per_decade: int = PRIVATE_BINS_PER_DECADE,
                    cutoff: float = HISTOGRAM_CUTOFF,
                    max_gap: int = HISTOGRAM_MAX_GAP) -> npt.NDArray[np.int64]:
    """An error histogram (:data:`~fediot.core.model.threshold.N_ERROR_BINS` bins) released
    under privacy, as a histogram of the same bins.

    The exact bins are summed to ``bins_per_decade`` per decade, each sum gets Gaussian noise
    of ``statistics_multiplier`` × √2, then post-processing: sums under ``cutoff`` noise
    deviations and those outside the run around the largest (gaps of at most ``max_gap``)
    are emptied, and the rest spread evenly over their exact bins as non-negative integer
    counts totalling the (public) ``hist.sum()``.
    """
    group = BINS_PER_DECADE // bins_per_decade
    if group < 1 or BINS_PER_DECADE % bins_per_decade:
        raise PrivacyError(f"bins_per_decade must divide {BINS_PER_DECADE}, got "
                           f"{bins_per_decade}")
    std = statistics_multiplier * HISTOGRAM_SENSITIVITY
    noisy = hist.reshape(-1, group).sum(axis=1) + rng.normal(0.0, std, len(hist) // group)
    kept = np.where(noisy >= cutoff * std, noisy, 0.0)
    if not kept.any():  # nothing stands out of the noise: the likeliest bin holds every row
        kept = np.where(noisy == noisy.max(), 1.0, 0.0)
    kept = _run_around_largest(kept, max_gap)
    return _counts_with_total(np.repeat(kept / group, group), int(hist.sum()))


def noisy_error_stats(errors: npt.ArrayLike, plan: PrivacyPlan,
                      rng: np.random.Generator) -> ErrorStats:
    """Error statistics released under privacy: the noisy histogram (:func:`noisy_histogram`)
    only, Σe and Σe² recomputed from its bin centres; the count is exact (public)."""
    exact = ErrorStats.from_errors(errors)
    if exact.n == 0:
        return exact
    return ErrorStats.from_histogram(noisy_histogram(exact.hist, plan.statistics_multiplier,
                                                     rng))


__all__ = [
    "HISTOGRAM_CUTOFF", "HISTOGRAM_MAX_GAP", "PRIVATE_BINS_PER_DECADE", "PrivacyError",
    "PrivacyPlan", "describe",
    "noisy_error_stats", "noisy_histogram", "noisy_scaler_stats", "privacy_report",
    "rdp_epsilon", "run_events", "secure_rng", "statistics_event", "training_event",
]
