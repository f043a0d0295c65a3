"""FedIoT's embedded default data: a seeded packet-level simulator of the nine N-BaIoT devices
and the ten botnet attacks, whose packets the project's extractor turns into the 115 features.

- :mod:`~fediot.core.testbed.network`: the lab LAN, its router, the internet behind it;
- :mod:`~fediot.core.testbed.frames`: vectorised building blocks (timing, TCP, media);
- :mod:`~fediot.core.testbed.behaviours`: benign traffic sources;
- :mod:`~fediot.core.testbed.devices`: one profile per device;
- :mod:`~fediot.core.testbed.attacks`: Gafgyt and Mirai, C&C included;
- :mod:`~fediot.core.testbed.simulator`: one deterministic capture per (device, class);
- :mod:`~fediot.core.testbed.pcap_writer`: captures as classic pcap files;
- :mod:`~fediot.core.testbed.dataset`: the feature files on disk, cached.
"""

from fediot.core.testbed.dataset import (
    MANIFEST_NAME,
    TestbedDataset,
    TestbedError,
    build_testbed,
    cache_key,
    default_cache_dir,
    open_testbed,
    planned_files,
)
from fediot.core.testbed.simulator import (
    GENERATOR_VERSION,
    Capture,
    SimulationError,
    packet_count,
    simulate_capture,
)

__all__ = [
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "Capture",
    "SimulationError",
    "TestbedDataset",
    "TestbedError",
    "build_testbed",
    "cache_key",
    "default_cache_dir",
    "open_testbed",
    "packet_count",
    "planned_files",
    "simulate_capture",
]
