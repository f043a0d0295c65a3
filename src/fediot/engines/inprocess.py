"""The in-process engine: every device of the federation on this machine.

``worker_num = 1`` runs the devices one after another in this process; ``worker_num > 1``
starts that many worker processes, each holding a fixed share of the devices (data loaded once,
memory-mapped from the dataset cache) and running their tasks in parallel. A device's result
depends only on its data and its task (seeded, one torch thread), so both modes give the same
numbers.

Each device call runs through :meth:`DeviceClient.call`, so its log lines come back with its
:class:`~fediot.core.federated.messages.Reply` (as Python objects); worker processes also count
the bytes each task and reply took through the pipe.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import pickle
import traceback
from collections.abc import Mapping
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any

from fediot.core.config import Config
from fediot.core.data.layouts import open_dataset
from fediot.core.errors import FediotError
from fediot.core.federated.batch import DeviceBatch
from fediot.core.federated.client import ClientData, DeviceClient, DeviceGuards
from fediot.core.federated.devices import dataset_root, load_clients
from fediot.core.federated.messages import Reply


class SequentialPool:
    """Devices as objects in this process, called one after another.

    Nothing crosses a process boundary, so every :class:`Reply` records ``bytes_down`` and
    ``bytes_up`` as 0.

    Parameters
    ----------
    clients
        The devices' data.
    use_gpu
        Train and score on a CUDA GPU when one is present (default False).
    guards
        The bounds every device holds its tasks to (default :class:`DeviceGuards` ()).
    backend
        What the devices train with: ``auto`` (default), ``torch`` or ``numpy``.
    """

    def __init__(self, clients: list[ClientData], use_gpu: bool = False,
                 guards: DeviceGuards | None = None, backend: str = "auto") -> None:
        self._clients = {c.client_id: DeviceClient(c, use_gpu, guards, backend)
                         for c in clients}

    @property
    def client_ids(self) -> list[str]:
        return list(self._clients)

    def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]:
        """Each device's :class:`Reply` to its task (no bytes move: all zero)."""
        return {cid: self._clients[cid].call(method, task) for cid, task in tasks.items()}

    def call(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Any]:
        """The results of :meth:`exchange` alone."""
        return {cid: reply.result for cid, reply in self.exchange(method, tasks).items()}

    def close(self) -> None:
        """Nothing to release (the same interface as :class:`ProcessPool`)."""


def _worker(config: Config, ids: list[str], conn: Connection) -> None:
    """A worker process: load its devices, then answer ``(method, {id: pickled task})`` with
    ``{id: pickled Reply}`` until ``None``. A task shared by several devices arrives once
    (the same bytes object) and is unpickled once. Under the vectorised engine the worker's
    devices run each step together (:class:`DeviceBatch`), otherwise one after another."""
    try:
        source = open_dataset(dataset_root(config))
        clients = load_clients(config, ids, source)
        # the vectorised engine's workers compute their share of each step together
        devices = (DeviceBatch.from_config(config, clients).call
                   if config.comm_args.backend == "vectorised" else
                   SequentialPool(clients, config.device_args.using_gpu,
                                  DeviceGuards.from_config(config),
                                  config.device_args.backend).exchange)
        conn.send(("ready", None))
    except BaseException as error:  # report, then end: the parent raises
        conn.send(("error", f"{type(error).__name__}: {error}"))
        return
    while True:
        message = conn.recv()
        if message is None:
            return
        method, blobs = message
        try:
            unpickled: dict[int, Any] = {}
            for blob in blobs.values():
                if id(blob) not in unpickled:
                    unpickled[id(blob)] = pickle.loads(blob)
            answers = devices(method, {cid: unpickled[id(blob)] for cid, blob in blobs.items()})
            replies = {cid: pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
                       for cid, reply in answers.items()}
            conn.send(("ok", replies))
        except BaseException as error:
            conn.send(("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))


class ProcessPool:
    """Devices spread over ``workers`` processes; a call runs on all workers at once.

    Each task and each reply crosses the pipe pickled on its own; a :class:`Reply`'s
    ``bytes_down`` is the size of its device's pickled task (a task shared by several devices
    of one worker travels once, but each is counted in full: what it would receive alone) and
    ``bytes_up`` the size of the pickled reply.

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

    def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]:
        """Each device's :class:`Reply`, with the pickled sizes of its task and reply."""
        pickled: dict[int, bytes] = {}  # a task shared by devices is pickled once
        sent: dict[str, bytes] = {}
        by_worker: dict[int, dict[str, bytes]] = {}
        for cid, task in tasks.items():
            if id(task) not in pickled:
                pickled[id(task)] = pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
            sent[cid] = pickled[id(task)]
            by_worker.setdefault(self._owner[cid], {})[cid] = sent[cid]
        for w, share in by_worker.items():
            self._conns[w].send((method, share))
        received: dict[str, bytes] = {}
        for w in by_worker:
            received.update(self._receive(w, self._conns[w]))
        replies: dict[str, Reply] = {}
        for cid in tasks:
            if cid in received:
                reply = pickle.loads(received[cid])
                replies[cid] = replace(reply, bytes_down=len(sent[cid]),
                                       bytes_up=len(received[cid]))
        return replies

    def call(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Any]:
        """The results of :meth:`exchange` alone."""
        return {cid: reply.result for cid, reply in self.exchange(method, tasks).items()}

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
    return SequentialPool(load_clients(config, ids, source),
                          config.device_args.using_gpu, DeviceGuards.from_config(config),
                          config.device_args.backend)
