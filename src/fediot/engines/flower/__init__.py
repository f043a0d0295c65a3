"""Flower engines: FedDetect's messages as Flower records, over Flower's simulation runtime
(Ray) and, later, real SuperLink/SuperNode deployments.

The ServerApp runs :class:`~fediot.core.federated.server.FedDetectServer` over a
:class:`~fediot.engines.flower.pool.FlowerPool`; the ClientApp calls
:class:`~fediot.core.federated.client.DeviceClient`: the same code as the in-process engine.
"""

import os

FLOWER_ENVIRONMENT = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}
"""Switched off for everything FedIoT starts: telemetry, the update check and Flower's runtime
dependency installation (which fails offline while the run still reports success)."""

TASK_POLL_SECONDS = 0.1
"""How often an idle task runner asks its SuperNode for a task: the warm worker's poll and
Flower's ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` (default 1 s) for a SuperExec the SuperNode
spawns. A loopback call of about a millisecond; the SuperNode's own poll of the SuperLink (3 s)
and the ServerApp's wait for replies (3 s) are hard-coded in Flower 1.42."""

os.environ.update(FLOWER_ENVIRONMENT)  # before any flwr import below this package
