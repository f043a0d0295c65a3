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
import time
from collections.abc import Callable, Iterable

from flwr.app import ConfigRecordValues, Context, Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid, ServerApp
from flwr.supercore.run import Run

from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.federated.devices import client_ids, dataset_root
from fediot.core.federated.server import RunObserver, RunResult, ServerState

MIN_IN_FLIGHT = 8
"""Messages outstanding at once in a simulation step, at least (4 per worker above that):
measured with 900 devices on 2 cores, 8 and 32 gave the same round time, 8 the least CPU."""


class InFlightLimit(Grid):
    """A ``Grid`` whose ``send_and_receive`` keeps at most ``limit`` messages outstanding.

    Parameters
    ----------
    grid
        The simulation's grid; everything else is delegated to it.
    limit
        Messages pushed but not yet answered, at most (≥ 1).
    pull_interval
        Seconds between polls for replies (default 0.02).
    """

    def __init__(self, grid: Grid, limit: int, pull_interval: float = 0.02) -> None:
        if limit < 1:
            raise FediotError(f"in-flight limit must be at least 1, got {limit}")
        self.grid = grid
        self.limit = limit
        self.pull_interval = pull_interval

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Like ``Grid.send_and_receive`` (the same overall ``timeout``), ``limit`` at a time."""
        waiting = list(messages)
        waiting.reverse()  # pop() from the end sends in the caller's order
        deadline = None if timeout is None else time.monotonic() + timeout
        outstanding: set[str] = set()
        replies: list[Message] = []
        while waiting or outstanding:
            free = self.limit - len(outstanding)
            if waiting and free > 0:
                batch = [waiting.pop() for _ in range(min(free, len(waiting)))]
                outstanding.update(self.grid.push_messages(batch))
            for reply in self.grid.pull_messages(outstanding):
                outstanding.discard(reply.metadata.reply_to_message_id)
                replies.append(reply)
            if deadline is not None and time.monotonic() >= deadline:
                break
            if len(outstanding) >= self.limit or (outstanding and not waiting):
                time.sleep(self.pull_interval)
        return replies


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
