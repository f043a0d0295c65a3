"""FedDetect's phases over an in-process pool, on synthetic separable devices."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from federated_data import FixedReplies, synthetic_clients
from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.federated.client import DeviceClient, LogCapture, capturing_level
from fediot.core.federated.evaluation import make_thresholds, summarize
from fediot.core.federated.messages import LogLine, ModelState, Refusal, Reply, ScoreTask
from fediot.core.federated.server import FedDetectServer
from fediot.core.model import ErrorStats, FeatureScaler, ScalerStats, threshold_mean_std
from fediot.engines.inprocess import SequentialPool


def config(**overrides: object) -> Config:
    base = {"train_args.client_num_in_total": 3, "train_args.client_num_per_round": 3,
            "train_args.comm_round": 3, "detection_args.window": 5,
            "train_args.learning_rate": 0.003}
    return Config().with_overrides({**base, **overrides})


def test_scaler_is_pooled_from_training_rows_only() -> None:
    clients = synthetic_clients()
    pooled = FedDetectServer(config()).fit_scaler(SequentialPool(clients))
    central = ScalerStats.from_data(np.concatenate([c.train for c in clients]))
    assert pooled.n == central.n == sum(len(c.train) for c in clients)
    np.testing.assert_allclose(pooled.sum, central.sum, rtol=1e-12)
    np.testing.assert_allclose(pooled.sumsq, central.sumsq, rtol=1e-12)


def test_a_run_detects_attacks_without_seeing_rows() -> None:
    result = FedDetectServer(config()).run(SequentialPool(synthetic_clients()))
    pooled = result.evaluation.pooled
    assert pooled["window_vote"]["recall"] == 1.0
    assert pooled["window_vote"]["fpr"] <= 0.01
    assert pooled["roc_auc"] > 0.99
    assert len(result.history) == 3
    assert [r.server_round for r in result.history] == [1, 2, 3]
    assert result.history[-1].train_loss < result.history[0].train_loss
    # counts are summed over devices, not averaged
    total = sum(d["rows"]["tp"] + d["rows"]["fn"] for d in result.evaluation.devices.values())
    assert pooled["rows"]["tp"] + pooled["rows"]["fn"] == total


def test_same_seed_same_model_and_different_seed_differs() -> None:
    a = FedDetectServer(config()).run(SequentialPool(synthetic_clients()))
    b = FedDetectServer(config()).run(SequentialPool(synthetic_clients()))
    c = FedDetectServer(config(**{"common_args.random_seed": 1})).run(
        SequentialPool(synthetic_clients()))
    for x, y in zip(a.model.weights, b.model.weights, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, y)
               for x, y in zip(a.model.weights, c.model.weights, strict=True))


@pytest.mark.parametrize("optimizer", ["FedProx", "FedAdam"])
def test_other_optimizers_run(optimizer: str) -> None:
    result = FedDetectServer(config(**{"train_args.federated_optimizer": optimizer})).run(
        SequentialPool(synthetic_clients()))
    assert result.evaluation.pooled["roc_auc"] > 0.95


def test_fewer_clients_per_round_than_devices() -> None:
    result = FedDetectServer(config(**{"train_args.client_num_per_round": 1,
                                       "train_args.comm_round": 4})).run(
        SequentialPool(synthetic_clients()))
    assert all(len(r.clients) == 1 for r in result.history)
    assert len({r.clients[0] for r in result.history}) > 1  # not always rank 0
    assert set(result.evaluation.devices) == {c.client_id for c in synthetic_clients()}


def test_thresholds_per_mode() -> None:
    clients = synthetic_clients()
    server = FedDetectServer(config())
    pool = SequentialPool(clients)
    model = ModelState(server.initial_weights(), server.fit_scaler(pool))
    stats = {c.client_id: DeviceClient(c).threshold_stats(ScoreTask(model)) for c in clients}
    pooled = ErrorStats.pool(stats.values())
    glob = make_thresholds(stats, mode="global", k=2.0, quantile=0.99)
    assert set(glob.per_device.values()) == {threshold_mean_std(pooled, 2.0)}
    own = make_thresholds(stats, mode="per_device", k=2.0, quantile=0.99)
    for cid, s in stats.items():
        assert own.per_device[cid] == threshold_mean_std(s, 2.0)
    q = make_thresholds(stats, mode="quantile", k=2.0, quantile=0.99)
    assert len(set(q.per_device.values())) == 1


def test_opt_errors_come_from_the_opt_split_only() -> None:
    clients = synthetic_clients(n_devices=1)
    server = FedDetectServer(config(**{"train_args.client_num_in_total": 1,
                                       "train_args.client_num_per_round": 1}))
    model = ModelState(server.initial_weights(), server.fit_scaler(SequentialPool(clients)))
    stats = DeviceClient(clients[0]).threshold_stats(ScoreTask(model))
    assert stats.n == len(clients[0].opt)
    scaler = FeatureScaler.from_stats(model.scaler)
    assert scaler.n_features == 115


def test_summaries_reject_empty_input() -> None:
    with pytest.raises(Exception, match="no device"):
        summarize([])


def test_gpu_request_without_gpu_warns_and_uses_the_cpu() -> None:
    import torch

    from fediot.core.model.training import TorchLocalModel

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: this test covers the fallback only")
    data = synthetic_clients(n_devices=1)[0]
    with pytest.warns(RuntimeWarning, match="no CUDA GPU"):
        client = DeviceClient(data, use_gpu=True, backend="torch")
    assert isinstance(client.model, TorchLocalModel) and client.model.device.type == "cpu"
    assert client.scaler_stats().stats.n == len(data.train)


class _Recorder:
    """An observer keeping every log line it is given."""

    def __init__(self) -> None:
        self.lines: list[LogLine] = []

    def on_phase(self, phase: str, detail: str) -> None:
        pass

    def on_round(self, record: object) -> None:
        pass

    def on_logs(self, lines: Sequence[LogLine]) -> None:
        self.lines.extend(lines)


def test_devices_log_lines_reach_the_observer_with_their_round_and_step() -> None:
    recorder = _Recorder()
    clients = synthetic_clients()
    result = FedDetectServer(config(**{"train_args.comm_round": 2,
                                       "validation_args.frequency_of_the_test": 1}),
                             recorder).run(SequentialPool(clients))
    seen = {(line.device, line.step, line.round) for line in recorder.lines}
    for client in clients:
        cid = client.client_id
        assert (cid, "scaler_stats", None) in seen
        assert {(cid, "fit", 1), (cid, "fit", 2)} <= seen
        # the intermediate evaluation belongs to round 1, the final one to no round
        assert {(cid, "threshold_stats", 1), (cid, "evaluate", 1)} <= seen
        assert {(cid, "threshold_stats", None), (cid, "evaluate", None)} <= seen
    fit = next(line for line in recorder.lines if line.step == "fit")
    assert fit.level == "INFO" and "trained" in fit.message and fit.time.endswith("+00:00")
    # in this process nothing is carried: no bytes
    assert all(figures["bytes_down"] == figures["bytes_up"] == 0
               for record in result.history for figures in record.system.values())


def test_log_capture_keeps_at_most_its_limit_and_only_this_thread() -> None:
    log = logging.getLogger("fediot.test")
    level_before = logging.getLogger("fediot").level
    with LogCapture("dev", "fit", 3, limit=5) as capture:
        for i in range(12):
            log.info("line %d", i)
        other = threading.Thread(target=log.warning, args=("from another thread",))
        other.start()
        other.join()
    lines = capture.lines()
    assert len(lines) == 5
    assert [line.message for line in lines[:4]] == [f"line {i}" for i in range(4)]
    assert lines[-1].level == "WARNING" and "8 more log lines dropped" in lines[-1].message
    assert all(line.device == "dev" and line.round == 3 and line.step == "fit"
               for line in lines)
    log.info("after the call")  # the handler is gone and the level restored
    assert len(capture.lines()) == 5
    assert logging.getLogger("fediot").level == level_before


def test_log_captures_inside_capturing_level_leave_the_level_alone() -> None:
    fediot_logger = logging.getLogger("fediot")
    level_before = fediot_logger.level
    fediot_logger.setLevel(logging.WARNING)
    changes: list[int] = []
    set_level = fediot_logger.setLevel
    try:
        fediot_logger.setLevel = lambda level: (changes.append(level),  # type: ignore[method-assign]
                                                set_level(level))[1]
        with capturing_level():
            captures = []
            for device in ("a", "b"):
                with LogCapture(device, "fit", 1) as capture:
                    logging.getLogger("fediot.test").info("trained %s", device)
                captures.append(capture)
        assert changes == [logging.INFO, logging.WARNING]  # once down, once back: not per call
        assert [c.lines()[0].message for c in captures] == ["trained a", "trained b"]
        with LogCapture("c", "fit", 1) as alone:  # on its own it lowers and restores
            logging.getLogger("fediot.test").info("alone")
        assert [line.message for line in alone.lines()] == ["alone"]
        assert fediot_logger.level == logging.WARNING
    finally:
        del fediot_logger.setLevel
        fediot_logger.setLevel(level_before)


def test_a_device_refuses_an_unknown_method() -> None:
    client = DeviceClient(synthetic_clients(n_devices=1)[0])
    with pytest.raises(FediotError, match="unknown client method 'train'"):
        client.call("train", None)


def test_validation_losses_choose_the_model_and_a_truncated_run_agrees() -> None:
    """Every round's validation loss (threshold rows only) is recorded; the run ends with the
    lowest one, which is exactly what a run stopped at that round ends with."""
    # a constant learning rate too high for this data: later rounds get worse
    settings = {"train_args.comm_round": 5, "train_args.learning_rate": 0.02,
                "train_args.lr_schedule": "constant",
                "validation_args.early_stopping_patience": 0}
    result = FedDetectServer(config(**settings)).run(SequentialPool(synthetic_clients()))
    losses = [r.validation_loss for r in result.history]
    assert all(loss is not None and loss > 0 for loss in losses)
    best = int(np.argmin(losses)) + 1
    assert result.model_round == best < 5 and not result.stopped_early
    shorter = FedDetectServer(config(**{**settings, "train_args.comm_round": best,
                                        "validation_args.keep_best_round": False})).run(
        SequentialPool(synthetic_clients()))
    for x, y in zip(result.model.weights, shorter.model.weights, strict=True):
        np.testing.assert_array_equal(x, y)
    assert result.thresholds.to_dict() == shorter.thresholds.to_dict()
    # the last round's loss came from the final threshold step's statistics
    last = FedDetectServer(config(**{**settings, "validation_args.keep_best_round": False})).run(
        SequentialPool(synthetic_clients()))
    assert last.model_round == 5
    assert last.history[-1].validation_loss == pytest.approx(
        ErrorStats.pool(last.threshold_stats.values()).mean, rel=1e-12)


def test_the_best_round_is_kept_when_later_rounds_get_worse() -> None:
    """A learning rate far too high makes later rounds worse: the run ends with an earlier
    round's model, equal to the model that round produced."""
    states: list[ModelState] = []
    settings = {"train_args.comm_round": 6, "train_args.learning_rate": 0.05,
                "train_args.lr_schedule": "constant",
                "validation_args.early_stopping_patience": 0}
    result = FedDetectServer(config(**settings)).run(
        SequentialPool(synthetic_clients()), checkpoint=lambda state: states.append(state.model))
    losses = [r.validation_loss for r in result.history]
    assert result.model_round == int(np.argmin(losses)) + 1 < 6
    kept = states[result.model_round - 1]  # the checkpoint after that round
    for x, y in zip(result.model.weights, kept.weights, strict=True):
        np.testing.assert_array_equal(x, y)


def test_training_stops_when_the_validation_loss_plateaus() -> None:
    settings = {"train_args.comm_round": 8, "validation_args.early_stopping_patience": 1,
                "validation_args.early_stopping_min_delta": 0.9}
    result = FedDetectServer(config(**settings)).run(SequentialPool(synthetic_clients()))
    assert result.stopped_early
    assert len(result.history) < 8
    assert result.model_round <= len(result.history)


def test_a_resumed_run_keeps_its_best_round_and_ends_identically() -> None:
    settings = {"train_args.comm_round": 5, "train_args.learning_rate": 0.05,
                "train_args.lr_schedule": "constant",
                "validation_args.early_stopping_patience": 3}
    states = []
    whole = FedDetectServer(config(**settings)).run(SequentialPool(synthetic_clients()),
                                                    checkpoint=states.append)
    resumed = FedDetectServer(config(**settings)).run(SequentialPool(synthetic_clients()),
                                                      resume=states[2])
    assert resumed.model_round == whole.model_round
    assert [r.validation_loss for r in resumed.history] == [
        r.validation_loss for r in whole.history]
    for x, y in zip(resumed.model.weights, whole.model.weights, strict=True):
        np.testing.assert_array_equal(x, y)
    assert resumed.data == whole.data


class _TiredDevice(SequentialPool):
    """The second device refuses to train in odd rounds: rejected replies over the whole run."""

    def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]:
        replies = super().exchange(method, tasks)
        tired = self.client_ids[1]
        round_ = getattr(next(iter(tasks.values()), None), "server_round", 0)
        if method == "fit" and round_ % 2 and tired in replies:
            replies[tired] = Reply(Refusal("tired"))
        return replies


def test_a_resumed_run_counts_the_rejections_before_the_resume_too() -> None:
    settings = {"train_args.comm_round": 5}
    states = []
    whole = FedDetectServer(config(**settings)).run(_TiredDevice(synthetic_clients()),
                                                    checkpoint=states.append)
    tired = synthetic_clients()[1].client_id
    assert [(r.device, r.server_round) for r in whole.rejections] == [
        (tired, 1), (tired, 3), (tired, 5)]
    assert states[2].rejections == whole.rejections[:2]  # after round 3
    resumed = FedDetectServer(config(**settings)).run(_TiredDevice(synthetic_clients()),
                                                      resume=states[2])
    assert resumed.rejections == whole.rejections


def test_devices_report_their_data_counts_and_warm_up_rows() -> None:
    clients = synthetic_clients()
    clients[0] = dataclasses.replace(clients[0], warmup_dropped={"train": 4, "opt": 1})
    result = FedDetectServer(config()).run(SequentialPool(clients))
    assert set(result.data) == {c.client_id for c in clients}
    first = result.data[clients[0].client_id]
    assert (first.train, first.opt, first.warmup_train, first.warmup_opt) == (
        len(clients[0].train), len(clients[0].opt), 4, 1)
    assert result.data[clients[1].client_id].warmup_train == 0


@pytest.mark.parametrize("epochs", [1, 3, 5])
def test_the_plateau_rule_counts_improvement_per_epoch(epochs: int) -> None:
    server = FedDetectServer(config(**{"train_args.epochs": epochs,
                                       "validation_args.early_stopping_min_delta": 0.02,
                                       "validation_args.early_stopping_patience": 1}))
    tracker = server._plateau([])
    assert tracker.min_delta == pytest.approx(1 - 0.98 ** epochs)
    assert tracker.patience == 1  # one epoch of patience is one round, whatever its epochs
    five = FedDetectServer(config(**{"train_args.epochs": epochs}))._plateau([])
    assert five.patience == {1: 5, 3: 2, 5: 1}[epochs]  # 5 epochs: ⌈5 / E⌉ rounds
    # a round improving by 5 % is the new best, but it is an improvement only for rounds of
    # fewer than 3 epochs (3 epochs of 2 % each would give 5.9 %)
    tracker.update(1, 1.0)
    assert tracker.update(2, 0.95)
    assert tracker.should_stop == (epochs >= 3)


TIME = "2026-01-01T00:00:00.000+00:00"


def test_lines_are_bound_to_the_engines_device_and_the_steps_round() -> None:
    right = LogLine(TIME, "a", 3, "fit", "INFO", "trained")
    no_round = LogLine(TIME, "b", None, "fit", "INFO", "trained")
    other_device = LogLine(TIME, "someone else", 2, "fit", "INFO", "trained")
    refusal = Refusal("no")  # rejected: its lines still count
    observer = _Recorder()
    server = FedDetectServer(Config(), observer)
    pool = FixedReplies({"a": Reply(refusal, (right,)), "b": Reply(refusal, (no_round,)),
                 "c": Reply(refusal, (other_device,))})
    assert server._exchange(pool, "fit", dict.fromkeys(["a", "b", "c"]), 3) == {}
    assert [(line.device, line.round) for line in observer.lines] == [
        ("a", 3), ("b", 3), ("c", 2)]
    assert observer.lines[0] is right  # already right: not copied
    assert observer.lines[1:] == [LogLine(TIME, "b", 3, "fit", "INFO", "trained"),
                                  LogLine(TIME, "c", 2, "fit", "INFO", "trained")]
    observer.lines.clear()
    server._exchange(pool, "scaler_stats", dict.fromkeys(["a", "b"]))  # outside rounds
    assert [(line.device, line.round) for line in observer.lines] == [("a", 3), ("b", None)]
