"""The vectorised engine: every device of the federation in this process, trained together.

Each step's sampled devices run as one :class:`~fediot.core.federated.batch.DeviceBatch`
call: local training as stacked models in memory-bounded chunks
(:mod:`fediot.core.model.stacked`), threshold and evaluation errors over many devices' rows in
large batches. The replies are the devices' own :class:`Reply` objects, so the same
:class:`~fediot.core.federated.server.FedDetectServer` drives it (run folder, status,
checkpoints, resume, dashboard) and every aggregation strategy works unchanged.

``device_args.vectorised_threads`` (default: the usable cores) trains that many chunks at once
in threads of one torch thread each, then scores the validation rows in as many parts;
``device_args.worker_num`` > 1 splits the devices over that many worker processes instead
(the in-process engine's :class:`~fediot.engines.inprocess.ProcessPool`, the cores shared out
between them). On this 2-core machine two threads ran a 900-device round fastest: 0.84 s,
against 1.03 s with two processes and 1.38 s with one thread (``bench/bench_vectorised.py``,
BENCHMARKS.md).
``device_args.vectorised_shuffle`` chooses exact or fast shuffles; ``device_args.using_gpu`` a
CUDA GPU when one is present (then keep one worker: one process drives the GPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fediot.core.config import Config
from fediot.core.federated.batch import DeviceBatch
from fediot.core.federated.devices import load_clients
from fediot.core.federated.messages import Reply
from fediot.engines.inprocess import ProcessPool


class VectorisedPool:
    """All devices in one :class:`DeviceBatch`; nothing crosses a process boundary, so every
    :class:`Reply` records ``bytes_down`` and ``bytes_up`` as 0.

    Parameters
    ----------
    batch
        The devices.
    """

    def __init__(self, batch: DeviceBatch) -> None:
        self.batch = batch

    @property
    def client_ids(self) -> list[str]:
        return self.batch.client_ids

    def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]:
        """Each device's :class:`Reply` to its task."""
        return self.batch.call(method, tasks)

    def call(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Any]:
        """The results of :meth:`exchange` alone."""
        return {cid: reply.result for cid, reply in self.exchange(method, tasks).items()}

    def close(self) -> None:
        """Release the devices' cached rows."""
        self.batch.close()


def make_vectorised_pool(config: Config, ids: list[str]) -> VectorisedPool | ProcessPool:
    """The devices ``ids`` of ``config``'s dataset as one vectorised pool, or with
    ``device_args.worker_num`` > 1 split over that many worker processes, each training its
    share of every step together."""
    workers = config.device_args.worker_num
    if workers > 1:
        return ProcessPool(config, ids, workers)
    return VectorisedPool(DeviceBatch.from_config(config, load_clients(config, ids)))
