"""FedDetect's aggregation against Flower's own strategies, on the same reports."""

from __future__ import annotations

import numpy as np
import pytest

from fediot.core.config import Config
from fediot.core.federated.messages import FitReport, SystemStats
from fediot.core.federated.strategies import FedAvg
from fediot.engines.strategies import FlowerAggregation, strategy_for, train_reply

NO_COST = SystemStats(0.0, 0.0, 0)


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
    krum = FlowerAggregation(name="Krum").aggregate([], rs)
    assert any(np.allclose(krum[0], r.weights[0]) for r in rs)  # Krum picks one update


@pytest.mark.parametrize("name", ["FedTrimmedAvg", "FedMedian", "Krum", "FedAvg", "FedAdam"])
def test_config_selects_the_strategy(name: str) -> None:
    strategy = strategy_for(Config().with_overrides({"train_args.federated_optimizer": name}))
    assert strategy.name == name
