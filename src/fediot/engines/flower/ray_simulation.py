"""FedDetect on Flower's simulation runtime (Ray): virtual SuperNodes, one per device.

Flower's runtime dependency installation, telemetry and update check are switched off by
importing :mod:`fediot.engines.flower`.

Flower 1.42's simulation hands messages to nodes by sweeping every node every 0.1 s, and each
node's look-up scans every stored instruction message: a step that sends one message to each
of N devices costs O(N²) per sweep, under the state's lock. With 900 virtual devices that
sweep, not training, took most of the simulation process's CPU. :class:`InFlightLimit` keeps
only a few messages in the state at a time (enough to keep every ClientApp actor busy), which
makes a sweep O(N).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from flwr.app import ConfigRecordValues, Context
from flwr.serverapp import Grid, ServerApp

from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.federated.devices import client_ids, dataset_root
from fediot.core.federated.server import RunObserver, RunResult, ServerState
from fediot.engines.flower.grid import InFlightLimit

__all__ = ["MIN_IN_FLIGHT", "InFlightLimit", "run_ray"]

MIN_IN_FLIGHT = 8
"""Messages outstanding at once in a simulation step, at least (4 per worker above that):
measured with 900 devices on 2 cores, 8 and 32 gave the same round time, 8 the least CPU."""


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
    inner = make_server_app(config, observer, results, wait_seconds=60.0,
                            resume=resume, checkpoint=checkpoint)
    limit = max(MIN_IN_FLIGHT, 4 * config.device_args.worker_num)
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        inner(grid=InFlightLimit(grid, limit), context=context)

    run_simulation(
        server_app=server_app,
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
