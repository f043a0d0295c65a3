"""A device refuses tasks outside its bounds, says why, and never sends statistics of too few
rows."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from federated_data import synthetic_clients
from fediot.core.config import Config
from fediot.core.federated.client import DeviceClient, DeviceGuards
from fediot.core.federated.messages import (
    EvaluateTask,
    FitTask,
    ModelState,
    Refusal,
    ScoreTask,
)
from fediot.core.federated.server import FedDetectServer
from fediot.core.model import ScalerStats
from fediot.engines.inprocess import SequentialPool


@pytest.fixture(scope="module")
def setting() -> tuple[DeviceClient, ModelState]:
    data = synthetic_clients(n_devices=1)[0]
    server = FedDetectServer(Config())
    model = ModelState(server.initial_weights(), ScalerStats.from_data(data.train))
    return DeviceClient(data), model


def fit_task(model: ModelState, **changes: Any) -> FitTask:
    return dataclasses.replace(FitTask(model, 1, 0.003, 1, 128), **changes)


def with_weights(model: ModelState, change: Any) -> ModelState:
    return ModelState(change([w.copy() for w in model.weights]), model.scaler)


def _nan(ws: list[np.ndarray]) -> list[np.ndarray]:
    ws[1].flat[0] = np.nan
    return ws


def _scaler(model: ModelState, **changes: Any) -> ModelState:
    scaler = object.__new__(ScalerStats)
    for name in ("n", "sum", "sumsq"):
        object.__setattr__(scaler, name, changes.get(name, getattr(model.scaler, name)))
    return ModelState(model.weights, scaler)


FIT_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "learning rate 0": ({"learning_rate": 0.0}, "learning rate 0.0 outside"),
    "learning rate 1e9": ({"learning_rate": 1e9}, "learning rate 1000000000.0 outside"),
    "learning rate nan": ({"learning_rate": float("nan")}, "learning rate nan outside"),
    "epochs 0": ({"epochs": 0}, "epochs 0 outside"),
    "epochs 10**9": ({"epochs": 10**9}, "epochs 1000000000 outside"),
    "epochs float": ({"epochs": 1.5}, "epochs must be an integer"),
    "batch size 0": ({"batch_size": 0}, "batch size 0 outside"),
    "batch size 2**40": ({"batch_size": 2**40}, "batch size 1099511627776 outside"),
    "proximal mu -1": ({"proximal_mu": -1.0}, "proximal mu -1.0 outside"),
    "proximal mu inf": ({"proximal_mu": float("inf")}, "proximal mu inf outside"),
    "weight decay 1e9": ({"weight_decay": 1e9}, "weight decay 1000000000.0 outside"),
    "optimizer": ({"optimizer": "lbfgs"}, "optimizer 'lbfgs' is not one of"),
}


@pytest.mark.parametrize("name", list(FIT_CASES))
def test_out_of_bounds_training_tasks_are_refused_with_their_reason(
        setting: tuple[DeviceClient, ModelState], name: str) -> None:
    client, model = setting
    changes, reason = FIT_CASES[name]
    reply = client.call("fit", fit_task(model, **changes))
    assert isinstance(reply.result, Refusal)
    assert reason in reply.result.reason
    assert any(line.level == "WARNING" and reason in line.message for line in reply.logs)


MODEL_CASES: dict[str, tuple[Any, str]] = {
    "nan weight": (lambda m: with_weights(m, _nan), "model weight 1 is not finite"),
    "wrong shape": (lambda m: with_weights(m, lambda ws: [ws[0].T.copy(), *ws[1:]]),
                    "model weight 0 is"),
    "missing array": (lambda m: with_weights(m, lambda ws: ws[:-1]), "weight arrays"),
    "scaler nan": (lambda m: _scaler(m, sum=np.full(115, np.nan)), "NaN or infinite"),
    "scaler shape": (lambda m: _scaler(m, sum=np.zeros(3)), "not 115 values"),
    "scaler no rows": (lambda m: _scaler(m, n=0), "row count 0"),
}


@pytest.mark.parametrize("name", list(MODEL_CASES))
@pytest.mark.parametrize("method", ["fit", "threshold_stats", "evaluate"])
def test_bad_global_models_are_refused(setting: tuple[DeviceClient, ModelState], name: str,
                                       method: str) -> None:
    client, model = setting
    change, reason = MODEL_CASES[name]
    bad = change(model)
    task = {"fit": fit_task(bad), "threshold_stats": ScoreTask(bad),
            "evaluate": EvaluateTask(bad, 1.0, 5)}[method]
    reply = client.call(method, task)
    assert isinstance(reply.result, Refusal) and reason in reply.result.reason


@pytest.mark.parametrize(("changes", "reason"), [
    ({"threshold": float("nan")}, "threshold nan outside"),
    ({"window": -1}, "window -1 outside"),
    ({"max_window": 0}, "max window 0 outside"),
])
def test_bad_evaluation_tasks_are_refused(setting: tuple[DeviceClient, ModelState],
                                          changes: dict[str, Any], reason: str) -> None:
    client, model = setting
    reply = client.call("evaluate", dataclasses.replace(EvaluateTask(model, 1.0, 5), **changes))
    assert isinstance(reply.result, Refusal) and reason in reply.result.reason


def test_good_tasks_run(setting: tuple[DeviceClient, ModelState]) -> None:
    client, model = setting
    assert not isinstance(client.call("fit", fit_task(model)).result, Refusal)


def test_no_statistics_of_too_few_rows() -> None:
    data = synthetic_clients(n_devices=1, rows=45)[0]  # 15 training and 15 threshold rows
    client = DeviceClient(data, guards=DeviceGuards(min_rows_for_statistics=20))
    reply = client.call("scaler_stats")
    assert isinstance(reply.result, Refusal)
    assert "15 training rows, fewer than min_rows_for_statistics = 20" in reply.result.reason
    model = ModelState(FedDetectServer(Config()).initial_weights(),
                       ScalerStats.from_data(data.train))
    reply = client.call("threshold_stats", ScoreTask(model))
    assert isinstance(reply.result, Refusal) and "15 threshold rows" in reply.result.reason
    fit = client.call("fit", fit_task(model)).result
    assert fit.validation_rows == 0 and fit.validation_loss == 0.0
    relaxed = DeviceClient(data, guards=DeviceGuards(min_rows_for_statistics=10))
    assert relaxed.call("scaler_stats").result.stats.n == 15


def test_a_refusing_device_is_rejected_and_counted_by_the_server() -> None:
    clients = synthetic_clients(n_devices=3)
    clients[1] = dataclasses.replace(clients[1], opt=clients[1].opt[:5])
    config = Config().with_overrides({"train_args.client_num_in_total": 3,
                                      "train_args.client_num_per_round": 3,
                                      "train_args.comm_round": 1,
                                      "detection_args.window": 5})
    result = FedDetectServer(config).run(SequentialPool(clients))
    assert [(r.device, r.step) for r in result.rejections] == [
        (clients[1].client_id, "threshold_stats")]
    assert "refused: 5 threshold rows" in result.rejections[0].reason
    assert set(result.evaluation.devices) == {clients[0].client_id, clients[2].client_id}
