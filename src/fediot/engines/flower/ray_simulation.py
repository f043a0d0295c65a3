"""FedDetect on Flower's simulation runtime (Ray): virtual SuperNodes, one per device.

Flower's runtime dependency installation, telemetry and update check are switched off by
importing :mod:`fediot.engines.flower`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from flwr.app import ConfigRecordValues

from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.federated.devices import client_ids, dataset_root
from fediot.core.federated.server import RunObserver, RunResult, ServerState


def run_ray(config: Config, observer: RunObserver | None = None,
            ray_address: str | None = None, *, resume: ServerState | None = None,
            checkpoint: Callable[[ServerState], None] | None = None) -> RunResult:
    """Run FedDetect on Ray with ``device_args.worker_num`` devices training at once.

    ``ray_address`` attaches to an existing Ray cluster (``ray start --head`` elsewhere);
    by default a private local Ray runtime is started and stopped.
    """
    from flwr.simulation import run_simulation

    from fediot.engines.flower.apps import make_client_app, make_server_app

    ids = client_ids(config)
    if observer is not None:
        observer.on_phase("data", "preparing the devices' data")
    dataset_root(config)  # build the testbed once, before the actors start
    cpus = os.cpu_count() or 1
    init_args: dict[str, ConfigRecordValues] = {"include_dashboard": False}
    if ray_address:
        init_args["address"] = ray_address
    else:
        init_args["num_cpus"] = cpus
    results: list[RunResult] = []
    run_simulation(
        server_app=make_server_app(config, observer, results, wait_seconds=60.0,
                                   resume=resume, checkpoint=checkpoint),
        client_app=make_client_app(config),
        num_supernodes=len(ids),
        backend_config={
            "client_resources": {"num_cpus": max(cpus / config.device_args.worker_num, 0.01)},
            "init_args": init_args,
        },
    )
    if not results:
        raise FediotError("the Flower simulation ended without a result (see its log above)")
    return results[0]
