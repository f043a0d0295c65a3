"""The vectorised engine: every device of the federation in this process, trained together.

Each step's sampled devices run as one :class:`~fediot.core.federated.batch.DeviceBatch`
call: local training as stacked models in memory-bounded chunks
(:mod:`fediot.core.model.stacked`), threshold and evaluation errors over many devices' rows in
large batches. The replies are the devices' own :class:`Reply` objects, so the same
:class:`~fediot.core.federated.server.FedDetectServer` drives it (run folder, status,
checkpoints, resume, dashboard) and every aggregation strategy works unchanged.

``device_args.worker_num`` sets torch's intra-op threads: on this 2-core machine threads beat
worker processes (``bench/bench_vectorised.py``, BENCHMARKS.md), and they keep the stacked
tensors in one place. ``device_args.vectorised_shuffle`` chooses exact or fast shuffles;
``device_args.using_gpu`` a CUDA GPU when one is present.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from fediot.core.config import Config
from fediot.core.federated.batch import DeviceBatch
from fediot.core.federated.client import DeviceGuards
from fediot.core.federated.devices import load_clients
from fediot.core.federated.messages import Reply
from fediot.core.model.stacked import ShuffleMode


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


def make_vectorised_pool(config: Config, ids: list[str]) -> VectorisedPool:
    """The devices ``ids`` of ``config``'s dataset as one vectorised pool."""
    d = config.device_args
    return VectorisedPool(DeviceBatch(
        load_clients(config, ids), d.using_gpu,
        DeviceGuards.from_config(config), shuffle=cast(ShuffleMode, d.vectorised_shuffle),
        chunk_devices=d.vectorised_chunk_devices, threads=d.worker_num))
