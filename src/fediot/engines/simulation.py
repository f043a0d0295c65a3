"""Single-machine runs: the federated simulation and its two baselines, on identical splits.

- federated: FedDetect over the devices (:class:`FedDetectServer` on an in-process pool);
- centralised: one model trained on all devices' training rows pooled (what federated learning
  gives up by keeping data on devices), thresholds and evaluation per device as above;
- local: each device alone, with its own scaler, model and threshold.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from fediot.core.config import Config, check_simulation
from fediot.core.federated.client import ClientData, DeviceGuards
from fediot.core.federated.devices import (
    client_ids,
    load_clients,
    pooled_client_data,
)
from fediot.core.federated.evaluation import EvaluationSummary, summarize
from fediot.core.federated.server import (
    FedDetectServer,
    RunObserver,
    RunResult,
    ServerState,
)
from fediot.engines.inprocess import ProcessPool, SequentialPool, make_pool
from fediot.engines.run_folder import RunFolder
from fediot.engines.strategies import strategy_for
from fediot.engines.tracking import record_run
from fediot.engines.vectorised import VectorisedPool, make_vectorised_pool


def run_federated(config: Config, observer: RunObserver | None = None, *,
                  resume: ServerState | None = None,
                  checkpoint: Callable[[ServerState], None] | None = None) -> RunResult:
    """FedDetect on this machine with the engine ``comm_args.backend`` names: in-process
    (``worker_num`` client processes), vectorised (devices trained together as stacked
    tensors, ``worker_num`` processes) or Flower's simulation runtime on Ray."""
    check_simulation(config)
    if config.comm_args.backend == "ray":
        from fediot.engines.flower.ray_simulation import run_ray  # Flower only when asked

        return run_ray(config, observer, config.comm_args.ray_address or None,
                       resume=resume, checkpoint=checkpoint)
    if observer is not None:
        observer.on_phase("data", "preparing the devices' data (the testbed is built on first use)")
    pool: SequentialPool | ProcessPool | VectorisedPool = (
        make_vectorised_pool(config, client_ids(config))
        if config.comm_args.backend == "vectorised" else make_pool(config, client_ids(config)))
    # the devices live as long as the run: out of the cyclic garbage collector's way, whose
    # full passes over them took ~0.3 s each at 9,000 devices (15 in a 3-round run)
    gc.freeze()
    try:
        return FedDetectServer(config, observer, strategy_for(config)).run(
            pool, resume=resume, checkpoint=checkpoint)
    finally:
        pool.close()
        gc.unfreeze()  # collectable again once the run is over


def _device_data(config: Config) -> list[ClientData]:
    return load_clients(config)


def _one_client(config: Config) -> Config:
    """``config`` for a baseline that trains one client: plain FedAvg, and no secure
    aggregation (one client's sum is its own update: there is no one to hide it among)."""
    return replace(config, train_args=replace(config.train_args, client_num_in_total=1,
                                              client_num_per_round=1,
                                              federated_optimizer="FedAvg"),
                   comm_args=replace(config.comm_args, secure_aggregation=False))


def run_centralised(config: Config, observer: RunObserver | None = None) -> RunResult:
    """One model on all training rows pooled; per-device thresholds and evaluation."""
    check_simulation(config)
    devices = _device_data(config)
    central = _one_client(config)
    # trained on the pooled rows, calibrated and evaluated on each real device
    guards = DeviceGuards.from_config(config)
    return FedDetectServer(central, observer).run(
        SequentialPool([pooled_client_data(devices)], guards=guards),
        SequentialPool(devices, guards=guards))


def run_local(config: Config, observer: RunObserver | None = None) -> list[RunResult]:
    """Every device alone: its own scaler, model and threshold."""
    check_simulation(config)
    solo = _one_client(config)
    return [FedDetectServer(solo, observer).run(
                SequentialPool([device], guards=DeviceGuards.from_config(config)))
            for device in _device_data(config)]


def simulate(config: Config, observer: RunObserver | None = None,
             resume: Path | None = None) -> tuple[RunResult, RunFolder]:
    """The federated run, recorded in a new run folder (checkpointed every round, devices' log
    lines in ``logs.jsonl``; mirrored to MLflow when ``tracking_args.mlflow_tracking_uri`` is
    set), or the interrupted run in ``resume`` continued from its last completed round."""
    if resume is not None:
        folder = RunFolder(resume)
        config, state = folder.load_config(), folder.load_checkpoint()
    else:
        folder, state = RunFolder.create(config, "fed"), None
    result = record_run(folder, config, client_ids(config), lambda recorder, checkpoint:
                        run_federated(config, recorder, resume=state, checkpoint=checkpoint),
                        observer=observer)
    return result, folder


def local_summary(results: list[RunResult]) -> EvaluationSummary:
    """The local-only baseline's metrics: every device's own report, pooled like a run."""
    return summarize([report for result in results for report in result.reports])
