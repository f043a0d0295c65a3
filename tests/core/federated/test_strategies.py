"""Federated arithmetic: FedAvg by true counts, FedAdam, schedules, sampling."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fediot.core.errors import FediotError
from fediot.core.federated.messages import FitReport, SystemStats
from fediot.core.federated.strategies import (
    FedAdam,
    FedAvg,
    FedProx,
    LearningRateSchedule,
    make_strategy,
    sample_clients,
    weighted_average,
)

NO_COST = SystemStats(0.0, 0.0, 0, 0)


def report(client: str, value: float, n: int) -> FitReport:
    return FitReport(client, [np.full((2, 2), value, np.float32), np.full(3, value, np.float32)],
                     n, 0.0, NO_COST)


def test_fedavg_weights_by_true_sample_counts() -> None:
    # 10 rows at 1.0 and 30 rows at 5.0 → (10·1 + 30·5) / 40 = 4.0; by batch count (1 and 1
    # batch of 64) it would be 3.0
    out = weighted_average([report("a", 1.0, 10), report("b", 5.0, 30)])
    np.testing.assert_allclose(out[0], 4.0)
    np.testing.assert_allclose(out[1], 4.0)
    assert out[0].dtype == np.float32


def test_fedavg_rejects_empty_rounds() -> None:
    with pytest.raises(FediotError, match="zero fit reports"):
        weighted_average([])
    with pytest.raises(FediotError, match="no training rows"):
        weighted_average([report("a", 1.0, 0)])


def test_fedprox_sends_mu_and_averages_like_fedavg() -> None:
    reports = [report("a", 1.0, 10), report("b", 2.0, 10)]
    prox = FedProx(proximal_mu=0.2)
    assert prox.client_proximal_mu() == 0.2
    assert FedAvg().client_proximal_mu() == 0.0
    np.testing.assert_allclose(prox.aggregate([], reports)[0], 1.5)


def test_fedadam_first_steps_by_hand() -> None:
    adam = FedAdam(server_learning_rate=0.1, beta_1=0.9, beta_2=0.99, tau=1e-3)
    current = [np.zeros(1, np.float32)]
    delta = 0.5
    out = adam.aggregate(current, [FitReport("a", [np.full(1, delta, np.float32)], 1, 0.0,
                                             NO_COST)])
    m, v = 0.1 * delta, 0.01 * delta**2
    step = 0.1 * math.sqrt(1 - 0.99) / (1 - 0.9)
    assert out[0][0] == pytest.approx(step * m / (math.sqrt(v) + 1e-3), rel=1e-6)
    state = adam.state()
    restored = FedAdam(server_learning_rate=0.1)
    restored.load_state(state)
    second = [np.full(1, 1.0, np.float32)]
    a = adam.aggregate(out, [FitReport("a", second, 1, 0.0, NO_COST)])
    b = restored.aggregate(out, [FitReport("a", second, 1, 0.0, NO_COST)])
    np.testing.assert_array_equal(a[0], b[0])


def test_make_strategy_names() -> None:
    assert isinstance(make_strategy("FedAdam"), FedAdam)
    with pytest.raises(FediotError, match="FedSGD"):
        make_strategy("FedSGD")


def test_learning_rate_schedules() -> None:
    cosine = LearningRateSchedule(initial=1.0, kind="cosine", total_rounds=5, min_factor=0.1)
    rates = [cosine.at(r) for r in range(1, 6)]
    assert rates[0] == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in itertools.pairwise(rates))
    step = LearningRateSchedule(initial=1.0, kind="step", gamma=0.5, step_rounds=2)
    assert [step.at(r) for r in range(1, 6)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert LearningRateSchedule(initial=0.3, kind="constant").at(7) == 0.3


def test_sampling_any_subset_seeded_and_resumable() -> None:
    ids = [f"device-{i}" for i in range(9)]
    rounds = [sample_clients(ids, 3, seed=7, server_round=r) for r in range(1, 41)]
    assert all(len(set(r)) == 3 and set(r) <= set(ids) for r in rounds)
    # not a rank window: over many rounds every device is drawn, in varying company
    assert {d for r in rounds for d in r} == set(ids)
    assert len({tuple(r) for r in rounds}) > 10
    assert sample_clients(ids, 3, seed=7, server_round=12) == rounds[11]
    assert sample_clients(ids, 9, seed=1, server_round=1) == ids
    with pytest.raises(FediotError):
        sample_clients(ids, 10, seed=0, server_round=1)
