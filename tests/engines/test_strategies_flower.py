"""FedDetect's aggregation against Flower's own strategies, on the same reports."""

from __future__ import annotations

import numpy as np
import pytest

from fediot.core.config import CHOICES, Config
from fediot.core.federated.messages import FitReport, SystemStats
from fediot.core.federated.strategies import FedAvg
from fediot.engines.strategies import FlowerAggregation, strategy_for, train_reply

NO_COST = SystemStats(0.0, 0.0, 0, 0)


def reports(seed: int, n: int = 5) -> list[FitReport]:
    rng = np.random.default_rng(seed)
    return [FitReport(f"d{i}", [rng.standard_normal((4, 3)).astype(np.float32),
                               rng.standard_normal(3).astype(np.float32)],
                      int(rng.integers(10, 500)), 0.0, NO_COST) for i in range(n)]


def test_our_fedavg_equals_flowers() -> None:
    from flwr.serverapp.strategy import FedAvg as FlowerFedAvg

    rs = reports(0)
    ours = FedAvg().aggregate([], rs)
    replies = [train_reply(r.weights, r.num_examples, i + 1) for i, r in enumerate(rs)]
    theirs, _ = FlowerFedAvg().aggregate_train(1, replies)
    for a, b in zip(ours, theirs.to_numpy_ndarrays(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_median_trimmed_and_krum_come_from_flower() -> None:
    rs = reports(1)
    median = FlowerAggregation(name="FedMedian").aggregate([], rs)
    stacked = np.stack([r.weights[0] for r in rs])
    np.testing.assert_allclose(median[0], np.median(stacked, axis=0), rtol=1e-6)
    trimmed = FlowerAggregation(name="FedTrimmedAvg", trimmed_beta=0.2).aggregate([], rs)
    assert trimmed[0].shape == (4, 3)
    krum = FlowerAggregation(name="Krum", krum_selected=1).aggregate([], rs)
    assert any(np.allclose(krum[0], r.weights[0]) for r in rs)  # classical Krum: one update


def _weighted_mean(rs: list[FitReport]) -> np.ndarray:
    total = sum(r.num_examples for r in rs)
    return sum(r.weights[0].astype(np.float64) * r.num_examples for r in rs) / total


@pytest.mark.parametrize("name", ["Krum", "MultiKrum"])
def test_krum_averages_all_but_the_assumed_malicious(name: str) -> None:
    rs = reports(2, n=7)
    far = FitReport("bad", [rs[0].weights[0] + 100.0, rs[0].weights[1] + 100.0], 10_000, 0.0,
                    NO_COST)
    strategy = FlowerAggregation(name=name)  # f = -1: the most 8 replies tolerate, 2
    assert strategy.malicious(8) == 2 and strategy.malicious(2) == 0
    kept = strategy.aggregate([], [*rs, far])
    assert np.abs(kept[0]).max() < 10  # the far update is never among the 8 − 2 = 6 kept
    assert not any(np.allclose(kept[0], r.weights[0]) for r in rs)  # an average, no single pick
    # f = 0 and everything kept: the weighted mean of all
    everything = FlowerAggregation(name=name, krum_malicious=0).aggregate([], rs)
    np.testing.assert_allclose(everything[0], _weighted_mean(rs), rtol=1e-5, atol=1e-6)
    # f from the configuration, capped at what the replies tolerate
    assert FlowerAggregation(name=name, krum_malicious=1).malicious(8) == 1
    assert FlowerAggregation(name=name, krum_malicious=3).malicious(5) == 1


def test_bulyan_resists_one_far_update_and_runs_with_few_replies() -> None:
    rs = reports(3, n=7)
    far = FitReport("bad", [rs[0].weights[0] + 100.0, rs[0].weights[1] + 100.0], 10_000, 0.0,
                    NO_COST)
    bulyan = FlowerAggregation(name="Bulyan")
    assert bulyan.malicious(8) == 1 and bulyan.malicious(7) == 1 and bulyan.malicious(6) == 0
    kept = bulyan.aggregate([], [*rs, far])
    assert np.abs(kept[0]).max() < 10
    two = bulyan.aggregate([], rs[:2])  # below 3 replies: the median (here the mean) of two
    np.testing.assert_allclose(two[0], (rs[0].weights[0] + rs[1].weights[0]) / 2, rtol=1e-5)


@pytest.mark.parametrize("name", CHOICES["train_args.federated_optimizer"])
def test_config_selects_the_strategy(name: str) -> None:
    """Every optimiser the configuration (and so `simulate --help`) names has a strategy."""
    strategy = strategy_for(Config().with_overrides({"train_args.federated_optimizer": name}))
    assert strategy.name == name


def test_krum_takes_f_and_the_kept_count_from_the_configuration() -> None:
    strategy = strategy_for(Config().with_overrides({
        "train_args.federated_optimizer": "Krum", "train_args.krum_malicious": 2,
        "train_args.krum_selected": 4}))
    assert isinstance(strategy, FlowerAggregation)
    assert (strategy.krum_malicious, strategy.krum_selected) == (2, 4)
    assert strategy.malicious(9) == 2
