"""FedDetect's messages survive the trip through Flower records unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord

from federated_data import synthetic_clients
from fediot.core.federated.client import DeviceClient
from fediot.core.federated.messages import EvaluateTask, FitTask, ModelState, ScoreTask
from fediot.core.model import ScalerStats, build_autoencoder, get_weights
from fediot.engines.flower.records import (
    RecordError,
    content_bytes,
    decode_logs,
    decode_reply,
    decode_task,
    encode_reply,
    encode_task,
)


@pytest.fixture(scope="module")
def setting() -> tuple[DeviceClient, ModelState]:
    data = synthetic_clients(n_devices=1)[0]
    client = DeviceClient(data)
    model = ModelState(get_weights(build_autoencoder(115, seed=3)), client.scaler_stats().stats)
    return client, model


def test_tasks_round_trip(setting: tuple[DeviceClient, ModelState]) -> None:
    _, model = setting
    fit = FitTask(model, server_round=4, learning_rate=0.002, epochs=2, batch_size=32,
                  optimizer="sgd", weight_decay=1e-4, proximal_mu=0.1, seed=9)
    back = decode_task("fit", encode_task("fit", fit))
    assert back.server_round == 4 and back.optimizer == "sgd" and back.proximal_mu == 0.1
    for a, b in zip(back.model.weights, model.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    assert back.model.scaler.n == model.scaler.n
    evaluate = decode_task("evaluate", encode_task("evaluate", EvaluateTask(model, 0.25, 7)))
    assert (evaluate.threshold, evaluate.window) == (0.25, 7)
    assert isinstance(decode_task("threshold_stats",
                                  encode_task("threshold_stats", ScoreTask(model))), ScoreTask)


def test_reports_round_trip(setting: tuple[DeviceClient, ModelState]) -> None:
    client, model = setting
    report = client.scaler_stats()
    back = decode_reply("scaler_stats", encode_reply("scaler_stats", client.client_id, report))
    assert isinstance(back.stats, ScalerStats)
    np.testing.assert_array_equal(back.stats.sum, report.stats.sum)
    assert back.data == report.data and back.data.train == len(client.data.train)
    fit = client.fit(FitTask(model, 1, 0.001, 1, 64))
    fit_back = decode_reply("fit", encode_reply("fit", client.client_id, fit))
    assert fit_back.client_id == client.client_id
    assert fit_back.num_examples == fit.num_examples
    assert fit_back.validation_rows == len(client.data.opt) > 0
    assert fit_back.validation_loss == fit.validation_loss > 0
    for a, b in zip(fit_back.weights, fit.weights, strict=True):
        np.testing.assert_array_equal(a, b)
    report = client.evaluate(EvaluateTask(model, 0.5, 3))
    report_back = decode_reply("evaluate", encode_reply("evaluate", client.client_id, report))
    assert report_back.counts == report.counts
    assert report_back.counts_window == report.counts_window
    assert (report_back.threshold, report_back.window) == (report.threshold, report.window)
    for name in ("benign_errors", "attack_errors"):
        got, want = getattr(report_back, name), getattr(report, name)
        assert (got.n, got.sum, got.sumsq) == (want.n, want.sum, want.sumsq)
        np.testing.assert_array_equal(got.hist, want.hist)
    errors = client.threshold_stats(ScoreTask(model))
    errors_back = decode_reply("threshold_stats",
                               encode_reply("threshold_stats", client.client_id, errors))
    np.testing.assert_array_equal(errors_back.hist, errors.hist)


def test_missing_records_are_named() -> None:
    from flwr.app import RecordDict

    with pytest.raises(RecordError, match=r"model\.weights"):
        decode_task("threshold_stats", RecordDict())
    with pytest.raises(RecordError, match="fly"):
        encode_task("fly", None)


def test_weights_travel_as_one_flat_vector_with_their_shapes(
        setting: tuple[DeviceClient, ModelState]) -> None:
    from flwr.app import ArrayRecord, ConfigRecord

    _, model = setting
    content = encode_task("threshold_stats", ScoreTask(model))
    record = content["model.weights"]
    assert isinstance(record, ArrayRecord) and len(record) == 1
    back = decode_task("threshold_stats", content).model.weights
    assert [w.shape for w in back] == [w.shape for w in model.weights]
    # shapes that do not account for every value are refused, naming the record
    shapes = content["model.weights.shapes"]
    assert isinstance(shapes, ConfigRecord)
    shapes["dims"] = [*shapes["dims"][:-1], 1]  # type: ignore[index]
    with pytest.raises(RecordError, match=r"model\.weights"):
        decode_task("threshold_stats", content)


def test_log_lines_travel_with_a_reply(setting: tuple[DeviceClient, ModelState]) -> None:
    client, model = setting
    reply = client.call("fit", FitTask(model, 2, 0.001, 1, 64))
    assert reply.logs and all(line.round == 2 for line in reply.logs)
    content = encode_reply("fit", client.client_id, reply.result, reply.logs)
    assert decode_logs(content) == reply.logs
    stats = client.call("scaler_stats")
    assert stats.logs[0].round is None
    assert decode_logs(encode_reply("scaler_stats", client.client_id, stats.result,
                                    stats.logs)) == stats.logs
    assert decode_logs(encode_reply("scaler_stats", client.client_id, stats.result)) == ()
    logs = content["logs"]
    assert isinstance(logs, ConfigRecord)
    logs["level"] = ["INFO"] * (len(reply.logs) + 1)
    with pytest.raises(RecordError, match="different lengths"):
        decode_logs(content)


def test_content_bytes_count_the_whole_model(setting: tuple[DeviceClient, ModelState]) -> None:
    _, model = setting
    nbytes = sum(w.nbytes for w in model.weights)
    task = encode_task("fit", FitTask(model, 1, 0.001, 1, 64))
    assert nbytes <= content_bytes(task) < nbytes + 20_000  # the scaler and headers
    assert content_bytes(encode_task("scaler_stats", None)) < 1_000
