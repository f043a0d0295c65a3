"""The in-process engine: every device of the federation on this machine.

``worker_num = 1`` runs the devices one after another in this process; ``worker_num > 1``
starts that many worker processes, each holding a fixed share of the devices (data loaded once,
memory-mapped from the dataset cache) and running their tasks in parallel. A device's result
depends only on its data and its task (seeded, one torch thread), so both modes give the same
numbers.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import traceback
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

from fediot.core.config import Config
from fediot.core.data.layouts import open_dataset
from fediot.core.errors import FediotError
from fediot.core.federated.client import ClientData, DeviceClient
from fediot.core.federated.devices import dataset_root, load_client_data

CLIENT_METHODS = ("scaler_stats", "fit", "threshold_stats", "evaluate")


def _run(client: DeviceClient, method: str, task: Any) -> Any:
    if method not in CLIENT_METHODS:
        raise FediotError(f"unknown client method {method!r}")
    function = getattr(client, method)
    return function() if task is None else function(task)


class SequentialPool:
    """Devices as objects in this process, called one after another.

    Parameters
    ----------
    clients
        The devices' data.
    """

    def __init__(self, clients: list[ClientData], use_gpu: bool = False) -> None:
        self._clients = {c.client_id: DeviceClient(c, use_gpu) for c in clients}

    @property
    def client_ids(self) -> list[str]:
        return list(self._clients)

    def call(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Any]:
        return {cid: _run(self._clients[cid], method, task) for cid, task in tasks.items()}

    def close(self) -> None:
        """Nothing to release (the same interface as :class:`ProcessPool`)."""


def _worker(config: Config, ids: list[str], conn: Connection) -> None:
    """A worker process: load its devices, then answer ``(method, tasks)`` until ``None``."""
    try:
        source = open_dataset(dataset_root(config))
        clients = {cid: DeviceClient(load_client_data(config, cid, source),
                                     config.device_args.using_gpu) for cid in ids}
        conn.send(("ready", None))
    except BaseException as error:  # report, then end: the parent raises
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    while True:
        message = conn.recv()
        if message is None:
            return
        method, tasks = message
        try:
            conn.send(("ok", {cid: _run(clients[cid], method, t) for cid, t in tasks.items()}))
        except BaseException as error:
            conn.send(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))


class ProcessPool:
    """Devices spread over ``workers`` processes; a call runs on all workers at once.

    Parameters
    ----------
    config
        The run configuration (workers load their devices' data from it).
    ids
        The devices, assigned round-robin to the workers.
    workers
        Number of worker processes (≥ 2).
    """

    def __init__(self, config: Config, ids: list[str], workers: int) -> None:
        self._ids = list(ids)
        context = mp.get_context("spawn")  # no fork after torch has started threads
        self._owner: dict[str, int] = {cid: i % workers for i, cid in enumerate(self._ids)}
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        for w in range(workers):
            parent, child = context.Pipe()
            share = [cid for cid in self._ids if self._owner[cid] == w]
            proc = context.Process(target=_worker, args=(config, share, child), daemon=True,
                                   name=f"fediot-worker-{w}")
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        for w, conn in enumerate(self._conns):
            self._receive(w, conn)

    @property
    def client_ids(self) -> list[str]:
        return list(self._ids)

    def _receive(self, worker: int, conn: Connection) -> Any:
        try:
            status, payload = conn.recv()
        except EOFError:
            self.close()
            raise FediotError(f"worker {worker} died (see its output above)") from None
        if status == "error":
            self.close()
            raise FediotError(f"worker {worker} failed: {payload}")
        return payload

    def call(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Any]:
        by_worker: dict[int, dict[str, Any]] = {}
        for cid, task in tasks.items():
            by_worker.setdefault(self._owner[cid], {})[cid] = task
        for w, share in by_worker.items():
            self._conns[w].send((method, share))
        results: dict[str, Any] = {}
        for w in by_worker:
            results.update(self._receive(w, self._conns[w]))
        return {cid: results[cid] for cid in tasks if cid in results}

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):  # worker already gone
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        self._conns, self._procs = [], []


def make_pool(config: Config, ids: list[str]) -> SequentialPool | ProcessPool:
    """The pool ``device_args.worker_num`` asks for."""
    workers = config.device_args.worker_num
    root = dataset_root(config)  # builds the testbed once, here, not in every worker
    if workers > 1:
        return ProcessPool(config, ids, workers)
    source = open_dataset(root)
    return SequentialPool([load_client_data(config, cid, source) for cid in ids],
                          config.device_args.using_gpu)
