"""Robust scaler and threshold steps: one device lying about its statistics (consistently, so
the server's reply checks pass) moves no robust run far from its clean result."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from federated_data import synthetic_clients
from fediot.core.config import Config
from fediot.core.federated.adversaries import (
    ReplyChange,
    TamperingPool,
    inflated_scaler,
    shifted,
    shifted_errors,
)
from fediot.core.federated.robust_stats import (
    MedianCombination,
    PooledSums,
    TrimmedMeanCombination,
    statistics_combination,
)
from fediot.core.federated.server import FedDetectServer
from fediot.core.model import ErrorStats, ScalerStats, threshold_mean_std, threshold_quantile
from fediot.engines.inprocess import SequentialPool
from fediot.engines.strategies import strategy_for

N_DEVICES = 9


def lying_pool(scaler: float = 1.0, shift: int = 0) -> TamperingPool:
    """The synthetic devices, the first inflating its scaler sums by ``scaler`` (Σx ×c,
    Σx² ×c²) or its threshold errors by 10^(``shift``/50) (sums scaled, histogram shifted by
    ``shift`` bins): internally consistent lies."""
    pool = SequentialPool(synthetic_clients(n_devices=N_DEVICES))
    changes: dict[str, ReplyChange] = {}
    if scaler != 1.0:
        changes["scaler_stats"] = inflated_scaler(scaler)
    if shift:
        changes["threshold_stats"] = shifted_errors(shift)
    return TamperingPool(pool, pool.client_ids[:1], changes)


def config(optimizer: str, mode: str) -> Config:
    return Config().with_overrides({
        "train_args.client_num_in_total": N_DEVICES, "train_args.client_num_per_round": N_DEVICES,
        "train_args.comm_round": 2, "detection_args.window": 5, "train_args.learning_rate": 0.003,
        "train_args.federated_optimizer": optimizer, "detection_args.threshold_mode": mode})


def f1(optimizer: str, mode: str, **lie: Any) -> float:
    cfg = config(optimizer, mode)
    result = FedDetectServer(cfg, strategy=strategy_for(cfg)).run(lying_pool(**lie))
    return float(result.evaluation.pooled["rows"]["f1"])


LIES = [pytest.param({"scaler": 1000.0}, "global", id="scaler-x1000-global"),
        pytest.param({"scaler": 1000.0}, "quantile", id="scaler-x1000-quantile"),
        pytest.param({"shift": 15}, "global", id="errors-x2-global"),
        pytest.param({"shift": 35}, "global", id="errors-x5-global"),
        pytest.param({"shift": 35}, "quantile", id="histogram-x5-quantile"),
        pytest.param({"shift": 50}, "quantile", id="histogram-x10-quantile")]


# errors ×2 stay below these synthetic attacks' errors, so that lie cannot break even FedAvg
BREAKING_LIES = [lie for lie in LIES if lie.id != "errors-x2-global"]


@pytest.mark.parametrize(("lie", "mode"), BREAKING_LIES)
def test_one_lying_device_breaks_fedavg(lie: dict[str, Any], mode: str) -> None:
    assert f1("FedAvg", mode, **lie) < f1("FedAvg", mode) - 0.5


@pytest.mark.parametrize("optimizer", ["FedMedian", "FedTrimmedAvg", "Krum",
                                       pytest.param("Bulyan", marks=pytest.mark.slow)])
@pytest.mark.parametrize(("lie", "mode"), LIES)
def test_robust_strategies_keep_f1_within_5_points(optimizer: str, lie: dict[str, Any],
                                                   mode: str) -> None:
    assert f1(optimizer, mode, **lie) >= f1(optimizer, mode) - 0.05


def test_krum_without_an_attacker_matches_fedavg() -> None:
    for mode in ("global", "per_device"):
        assert abs(f1("Krum", mode) - f1("FedAvg", mode)) <= 0.02


def _errors(rng: np.random.Generator, scale: float, n: int = 500) -> ErrorStats:
    return ErrorStats.from_errors(rng.lognormal(np.log(scale), 0.3, n))


def test_combinations_agree_on_honest_identical_devices_and_ignore_a_liar() -> None:
    rng = np.random.default_rng(0)
    honest = [_errors(rng, 1.0) for _ in range(8)]
    pooled = ErrorStats.pool(honest)
    for combine in (MedianCombination(), TrimmedMeanCombination(0.2)):
        # identical devices: close to the pooled values
        assert combine.mean_std_threshold(honest, 3.0) == pytest.approx(
            threshold_mean_std(pooled, 3.0), rel=0.05)
        assert combine.quantile_threshold(honest, 0.99) == pytest.approx(
            threshold_quantile(pooled, 0.99), rel=0.1)
        liar = [*honest, shifted(honest[0], 100)]  # errors × 100
        assert combine.mean_std_threshold(liar, 3.0) < 1.2 * threshold_mean_std(pooled, 3.0)
        assert combine.quantile_threshold(liar, 0.99) < 1.2 * threshold_quantile(pooled, 0.99)
        assert PooledSums().mean_std_threshold(liar, 3.0) > 5 * threshold_mean_std(pooled, 3.0)


def test_robust_scaler_ignores_one_inflated_device() -> None:
    clients = synthetic_clients(n_devices=5)
    parts = [ScalerStats.from_data(c.train) for c in clients]
    liar = ScalerStats(parts[0].n * 1000, parts[0].sum * 1e6, parts[0].sumsq * 1e9)
    honest = TrimmedMeanCombination(0.2).scaler(parts)
    robust = TrimmedMeanCombination(0.2).scaler([liar, *parts[1:]])
    means = np.stack([p.mean for p in parts])
    assert np.all((robust.mean >= means.min(axis=0)) & (robust.mean <= means.max(axis=0)))
    spread = np.ptp(means, axis=0) + np.stack([p.std for p in parts]).max(axis=0)
    assert np.all(robust.std <= spread)  # within what the honest devices span
    # the plain sums follow the liar
    assert np.all(ScalerStats.pool([liar, *parts[1:]]).mean > 100 * honest.mean)


def test_trimmed_mean_cuts_as_flower_does_but_at_least_one_from_three_devices() -> None:
    values = np.array([[1.0], [2.0], [100.0]])
    assert TrimmedMeanCombination(0.2).reduce(values)[0] == 2.0  # int(0.6) = 0, yet one cut
    assert TrimmedMeanCombination(0.0).reduce(values[:2])[0] == 1.5


@pytest.mark.parametrize(("optimizer", "setting", "scaler", "threshold"), [
    ("FedAvg", "auto", PooledSums, PooledSums), ("FedAdam", "auto", PooledSums, PooledSums),
    ("FedMedian", "auto", MedianCombination, TrimmedMeanCombination),
    ("Bulyan", "auto", MedianCombination, TrimmedMeanCombination),
    ("Krum", "off", PooledSums, PooledSums),
    ("FedAvg", "median", MedianCombination, MedianCombination),
    ("FedAvg", "trimmed_mean", TrimmedMeanCombination, TrimmedMeanCombination)])
def test_configuration_chooses_the_combination(optimizer: str, setting: str, scaler: type,
                                               threshold: type) -> None:
    cfg = Config().with_overrides({"train_args.federated_optimizer": optimizer,
                                   "train_args.robust_statistics": setting})
    assert isinstance(statistics_combination(cfg, "scaler"), scaler)
    assert isinstance(statistics_combination(cfg, "threshold"), threshold)
