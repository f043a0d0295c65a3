"""The poisoning benchmark's core on tiny synthetic devices, and its attacks' arithmetic."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from federated_data import synthetic_clients
from fediot.core.federated.adversaries import on_attack_traffic, scaled_update
from fediot.core.federated.messages import FitReport, FitTask, ModelState, SystemStats
from fediot.core.model import ScalerStats

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("bench_poisoning")
    finally:
        sys.path.remove(str(BENCH))


def test_one_sign_flipper_under_fedmedian(bench: ModuleType) -> None:
    clients = synthetic_clients(n_devices=9, rows=300)
    base = bench.base_config(1.0, 2, 0, **{"detection_args.window": 5})
    order = bench.attacker_order([c.client_id for c in clients], 0)
    cells_to_run = bench.plan(["sign-flip×10"], ["FedMedian"], [0, 1], [True], "global")
    assert [c[:3] for c in cells_to_run] == [("none", "FedMedian", 0),
                                             ("sign-flip×10", "FedMedian", 1)]
    cells = list(bench.run_grid(clients, base, cells_to_run, order))
    clean, attacked = cells
    assert attacked["attackers"] == order[:1] and attacked["rounds_run"] == 2
    assert attacked["rejected_honest"] == 0
    assert attacked["f1"] >= clean["f1"] - 0.05
    (verdict,) = bench.acceptance(cells)
    assert verdict["holds"] and verdict["allowed"] == 0.05
    table = bench.table(cells, ["sign-flip×10"], ["FedMedian"], [0, 1], "global")
    assert table.row_count == 1


def _report(weights: list[np.ndarray[Any, Any]]) -> FitReport:
    return FitReport("d", weights, 10, 0.1, SystemStats(0.0, 0.0, 0, 0))


def test_scaled_update_replaces_the_update() -> None:
    current = [np.ones(3, dtype=np.float32)]
    task = FitTask(ModelState(current, ScalerStats.from_data(np.ones((2, 115)))), 1, 0.003,
                   1, 128)
    flipped = scaled_update(-10.0)(task, _report([np.full(3, 1.5, dtype=np.float32)]))
    assert np.allclose(flipped.weights[0], 1 - 10 * 0.5)
    assert flipped.weights[0].dtype == np.float32


def test_attack_traffic_replaces_only_the_training_rows() -> None:
    (client,) = synthetic_clients(n_devices=1, rows=300)
    poisoned = on_attack_traffic(client)
    attack = np.concatenate(list(client.test_attacks.values()))
    assert len(poisoned.train) == len(client.train)
    assert {row.tobytes() for row in poisoned.train} <= {row.tobytes() for row in attack}
    assert poisoned.opt is client.opt and poisoned.test_attacks is client.test_attacks
