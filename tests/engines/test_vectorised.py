"""The vectorised engine: the sequential engine's numbers, many devices at once."""

from __future__ import annotations

import json
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from federated_data import small_run_config, synthetic_clients, write_uci_dataset
from fediot.core.config import Config
from fediot.core.federated.batch import DeviceBatch, errors_in_parts
from fediot.core.federated.client import DeviceClient
from fediot.core.federated.messages import EvaluateTask, FitTask, ModelState, Refusal, ScoreTask
from fediot.core.federated.server import FedDetectServer, ServerState
from fediot.core.model import (
    ScalerStats,
    build_autoencoder,
    get_weights,
    reconstruction_errors,
    set_weights,
    train_local,
)
from fediot.core.model.stacked import StackedSettings, train_stacked
from fediot.engines.simulation import run_federated
from fediot.faces.cli.main import app


@pytest.fixture(scope="module")
def nine_types(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All nine device types, 1,800 benign rows each: cut into 100 virtual devices, each
    trains on a handful of rows (900 devices stay quick)."""
    return write_uci_dataset(tmp_path_factory.mktemp("nbaiot9"), n_devices=9, rows=1800)


def _weights_per_round(config: Config) -> list[list[np.ndarray]]:
    states: list[ServerState] = []
    run_federated(config, checkpoint=states.append)
    return [s.model.weights for s in states[: config.train_args.comm_round]]


def _largest_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("per_type", [
    1, 10, pytest.param(100, marks=pytest.mark.slow)])
@pytest.mark.parametrize("optimizer", ["FedAvg", "FedProx"])
def test_exact_mode_equals_the_sequential_engine(nine_types: Path, tmp_path: Path,
                                                 per_type: int, optimizer: str) -> None:
    devices = 9 * per_type
    settings = {"data_args.virtual_devices_per_device": per_type,
                "train_args.client_num_in_total": devices,
                "train_args.client_num_per_round": devices, "train_args.comm_round": 3,
                "train_args.federated_optimizer": optimizer, "train_args.proximal_mu": 0.1,
                "device_args.min_rows_for_statistics": 1}
    sequential = _weights_per_round(small_run_config(nine_types, tmp_path, **settings))
    vectorised = _weights_per_round(small_run_config(
        nine_types, tmp_path, **settings, **{"comm_args.backend": "vectorised"}))
    assert len(sequential) == len(vectorised) == 3
    for server_round in (0, 2):  # after round 1 and round 3
        assert _largest_difference(sequential[server_round],
                                   vectorised[server_round]) <= 1e-6


def test_a_sampled_subset_trains_in_chunks_as_the_sequential_engine(
        nine_types: Path, tmp_path: Path) -> None:
    settings = {"data_args.virtual_devices_per_device": 4, "train_args.client_num_in_total": 36,
                "train_args.client_num_per_round": 13, "train_args.comm_round": 2,
                "train_args.client_optimizer": "sgd", "train_args.epochs": 2,
                "device_args.min_rows_for_statistics": 1}
    sequential = run_federated(small_run_config(nine_types, tmp_path, **settings))
    vectorised = run_federated(small_run_config(nine_types, tmp_path, **settings, **{
        "comm_args.backend": "vectorised", "device_args.vectorised_chunk_devices": 4}))
    assert _largest_difference(sequential.model.weights, vectorised.model.weights) <= 1e-6
    assert [r.clients for r in sequential.history] == [r.clients for r in vectorised.history]
    assert vectorised.history[-1].train_loss == pytest.approx(
        sequential.history[-1].train_loss, rel=1e-5)
    assert vectorised.evaluation.pooled["window_vote"]["f1"] == pytest.approx(
        sequential.evaluation.pooled["window_vote"]["f1"], abs=1e-6)
    assert {c: round(t, 6) for c, t in vectorised.thresholds.per_device.items()} == {
        c: round(t, 6) for c, t in sequential.thresholds.per_device.items()}


@pytest.mark.parametrize(("chunk_devices", "threads"), [(2, 1), (None, 1), (2, 2)])
def test_stacked_training_equals_train_local_per_device(chunk_devices: int | None,
                                                        threads: int) -> None:
    # one chunk (None) stacks last batches of 77, 44, 2 and 5 rows in one step: each step
    # stacks as many rows as its largest batch, the others padded to it
    rng = np.random.default_rng(0)
    counts = [300, 130, 128, 5, 700, 205, 172]
    rows = [rng.standard_normal((n, 115)).astype(np.float32) for n in counts]
    start = get_weights(build_autoencoder(seed=3))
    seeds = [11, 22, 33, 44, 55, 66, 77]
    stacked_rows = torch.from_numpy(np.concatenate([*rows, np.zeros((1, 115), np.float32)]))
    ends = np.cumsum(counts)
    bounds = [(int(e - n), int(e)) for e, n in zip(ends, counts, strict=True)]
    for optimizer, mu, decay, epochs in [("adam", 0.0, 0.0, 1), ("adam", 0.1, 0.01, 3),
                                         ("sgd", 0.05, 0.0, 2)]:
        result = train_stacked(start, stacked_rows, bounds, StackedSettings(
            epochs, 128, 0.003, optimizer, decay, mu), seeds=seeds,
            chunk_devices=chunk_devices, threads=threads)
        for device, seed in enumerate(seeds):
            model = build_autoencoder(seed=0)
            set_weights(model, start)
            report = train_local(model, rows[device], epochs=epochs, batch_size=128,
                                 learning_rate=0.003, optimizer=optimizer,
                                 weight_decay=decay, prox_mu=mu, seed=seed)
            assert _largest_difference(get_weights(model), result.weights[device]) <= 1e-6
            assert result.mean_loss[device] == pytest.approx(report.mean_loss, rel=1e-5)
            assert result.steps[device] == report.steps


def test_fast_mode_trains_as_well_on_the_testbed(tmp_path: Path) -> None:
    """Fast shuffles give other numbers, statistically the same training: on the testbed's
    90 devices the detection metrics stay within 0.01 and the loss within 2 %."""
    settings = {"data_args.virtual_devices_per_device": 10,
                "train_args.client_num_in_total": 90, "train_args.client_num_per_round": 90,
                "train_args.comm_round": 2, "comm_args.backend": "vectorised",
                "tracking_args.log_file_dir": str(tmp_path)}
    exact = run_federated(Config().with_overrides(settings))
    fast = run_federated(Config().with_overrides({
        **settings, "device_args.vectorised_shuffle": "fast"}))
    assert _largest_difference(exact.model.weights, fast.model.weights) > 1e-6  # not the same
    assert fast.history[-1].train_loss == pytest.approx(exact.history[-1].train_loss, rel=0.02)
    for metric in ("f1", "fpr", "recall"):
        assert fast.evaluation.pooled["window_vote"][metric] == pytest.approx(
            exact.evaluation.pooled["window_vote"][metric], abs=0.01)


def _model() -> ModelState:
    clients = synthetic_clients(3)
    stats = ScalerStats.from_data(np.concatenate([c.train for c in clients]))
    return ModelState(get_weights(build_autoencoder(seed=1)), stats)


@pytest.mark.parametrize(("method", "task"), [
    ("fit", FitTask(_model(), 1, learning_rate=-1.0, epochs=1, batch_size=16)),
    ("fit", FitTask(_model(), 1, learning_rate=0.01, epochs=1, batch_size=16,
                    optimizer="lbfgs")),
    ("threshold_stats", ScoreTask(ModelState([np.zeros(3)], _model().scaler))),
    ("evaluate", EvaluateTask(_model(), threshold=-1.0, window=1, max_window=5)),
])
def test_bad_tasks_are_refused_as_the_device_refuses_them(method: str, task: object) -> None:
    clients = synthetic_clients(3)
    batch = DeviceBatch(clients)
    replies = batch.call(method, dict.fromkeys([c.client_id for c in clients], task))
    for client in clients:
        alone = DeviceClient(client).call(method, task)
        assert isinstance(replies[client.client_id].result, Refusal)
        assert replies[client.client_id].result == alone.result
        assert [line.message for line in replies[client.client_id].logs] == [
            line.message for line in alone.logs]


@pytest.mark.parametrize("threads", [1, 2])
def test_replies_and_log_lines_match_the_devices_own(threads: int) -> None:
    clients = synthetic_clients(3)
    model = _model()
    ids = [c.client_id for c in clients]
    batch = DeviceBatch(clients, threads=threads)
    alone = {c.client_id: DeviceClient(c) for c in clients}
    score = ScoreTask(model)
    stats = batch.call("threshold_stats", dict.fromkeys(ids, score))
    for cid in ids:
        own = alone[cid].call("threshold_stats", score)
        assert stats[cid].result.n == own.result.n
        assert stats[cid].result.mean == pytest.approx(own.result.mean, rel=1e-6)
        assert stats[cid].logs[0].message.startswith("scored")
    tasks = {cid: EvaluateTask(model, threshold=stats[cid].result.mean * 2, window=0,
                               max_window=9) for cid in ids}
    verdicts = batch.call("evaluate", tasks)
    for cid in ids:
        own = alone[cid].call("evaluate", tasks[cid]).result
        ours = verdicts[cid].result
        assert (ours.window, ours.counts, ours.counts_window) == (
            own.window, own.counts, own.counts_window)
    fit = FitTask(model, 1, learning_rate=0.01, epochs=1, batch_size=16)
    trained = batch.call("fit", dict.fromkeys(ids, fit))
    for cid in ids:
        own = alone[cid].call("fit", fit).result
        assert _largest_difference(own.weights, trained[cid].result.weights) <= 1e-6
        assert trained[cid].result.num_examples == own.num_examples
        assert trained[cid].result.validation_rows == own.validation_rows
        assert trained[cid].logs[0].message.startswith("round 1: trained")


def test_using_gpu_without_one_warns_once_and_trains_on_the_cpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: the fallback is not taken")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batch = DeviceBatch(synthetic_clients(3), use_gpu=True)
    gpu = [w for w in caught if "no CUDA GPU" in str(w.message)]
    assert len(gpu) == 1 and issubclass(gpu[0].category, RuntimeWarning)
    assert batch.device.type == "cpu"


def test_the_same_server_drives_it_with_resume(nine_types: Path, tmp_path: Path) -> None:
    """A run interrupted after round 1 and resumed ends as the uninterrupted run."""
    config = small_run_config(nine_types, tmp_path, **{
        "comm_args.backend": "vectorised", "train_args.comm_round": 2})
    whole = run_federated(config)
    states: list[ServerState] = []
    run_federated(small_run_config(nine_types, tmp_path, **{
        "comm_args.backend": "vectorised", "train_args.comm_round": 1}),
        checkpoint=states.append)
    resumed = run_federated(config, resume=ServerState(
        states[0].model, states[0].strategy_state, states[0].history[:1], states[0].best,
        states[0].data))
    assert _largest_difference(whole.model.weights, resumed.model.weights) == 0.0
    assert isinstance(FedDetectServer(config).strategy, object)


def test_cli_simulate_runs_the_vectorised_engine(nine_types: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, [
        "simulate", "--engine", "vectorised", "--set", "data_args.dataset=N-BaIoT",
        "--set", f"data_args.data_cache_dir={nine_types}", "--set", "train_args.comm_round=1",
        "--set", "train_args.client_num_in_total=9", "--set",
        "train_args.client_num_per_round=9", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    status = json.loads(next(runs.glob("*/status.json")).read_text())
    assert status["engine"] == "vectorised"
    assert status["state"] in ("done", "finished", "completed")


def test_worker_processes_train_their_shares_to_the_same_model(nine_types: Path,
                                                               tmp_path: Path) -> None:
    settings = {"comm_args.backend": "vectorised", "data_args.virtual_devices_per_device": 2,
                "train_args.client_num_in_total": 18, "train_args.client_num_per_round": 18,
                "train_args.comm_round": 2}
    one = run_federated(small_run_config(nine_types, tmp_path, **settings))
    two = run_federated(small_run_config(nine_types, tmp_path, **settings, **{
        "device_args.worker_num": 2}))
    assert _largest_difference(one.model.weights, two.model.weights) <= 1e-6
    assert one.evaluation.pooled["window_vote"] == two.evaluation.pooled["window_vote"]


@pytest.mark.parametrize("threads", [2, 3])
def test_scoring_in_threads_gives_the_numbers_of_one_pass(threads: int) -> None:
    model = build_autoencoder(seed=5).eval()
    rows = np.random.default_rng(1).standard_normal((2 * 2048 + 77, 115)).astype(np.float32)
    one_pass = reconstruction_errors(model, rows)
    assert np.array_equal(errors_in_parts(model, rows, threads), one_pass)
    assert np.array_equal(errors_in_parts(model, rows[:10], threads), one_pass[:10])
    assert errors_in_parts(model, rows[:0], threads).shape == (0,)


def test_a_round_reuses_the_weights_array_only_when_no_reply_holds_it() -> None:
    clients = synthetic_clients(3)
    ids = [c.client_id for c in clients]
    batch = DeviceBatch(clients)
    first = FitTask(_model(), 1, learning_rate=0.01, epochs=1, batch_size=16)
    kept = batch.call("fit", dict.fromkeys(ids, first))
    kept_weights = {cid: [w.copy() for w in kept[cid].result.weights] for cid in ids}
    array = weakref.ref(batch._trained)  # a weak reference: it must not hold the array
    second = FitTask(_model(), 2, learning_rate=0.05, epochs=1, batch_size=16)
    batch.call("fit", dict.fromkeys(ids, second))
    assert batch._trained is not array()  # round 1's replies still live: a new array
    for cid in ids:  # and round 1's weights are untouched
        assert all(np.array_equal(a, b) for a, b in zip(kept_weights[cid],
                                                         kept[cid].result.weights, strict=True))
    array = weakref.ref(batch._trained)
    batch.call("fit", dict.fromkeys(ids, second))  # round 2's replies were dropped
    assert batch._trained is array()
