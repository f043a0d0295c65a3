"""Random packet traffic for extractor tests (shared by the extractor and fast-path tests)."""

from __future__ import annotations

import numpy as np

from fediot.core.features.packets import (
    KIND_ARP,
    KIND_IPV4,
    KIND_OTHER,
    PORT_ARP,
    PORT_NONE,
    PacketTable,
)


def random_traffic(n: int, seed: int, *, ports: int = 5) -> PacketTable:
    """Mixed IPv4/ARP/non-IP traffic among few hosts, with equal-endpoint and silent cases;
    ``ports`` > 5 draws random ports, so most packets open a new socket pair (a scan or
    flood)."""
    rng = np.random.default_rng(seed)
    hosts = np.array([f"192.168.1.{i}" for i in range(6)], dtype=object)
    kind = rng.choice([KIND_IPV4] * 6 + [KIND_ARP, KIND_OTHER], n).astype(np.uint8)
    if ports > 5:
        src_port = rng.integers(1024, 1024 + ports, n).astype(np.int32)
        dst_port = rng.integers(1, ports, n).astype(np.int32)
    else:
        src_port = rng.choice([80, 443, 5353, 40000, PORT_NONE], n).astype(np.int32)
        dst_port = rng.choice([80, 443, 5353, 40001], n).astype(np.int32)
    src_port[kind == KIND_ARP] = PORT_ARP
    dst_port[kind == KIND_ARP] = PORT_ARP
    gaps = rng.choice([0.0, 1e-5, 0.01, 0.3, 5.0, 400.0], n)  # 400 s: start weights underflow
    return PacketTable(
        timestamp=1.5e9 + np.cumsum(gaps),
        frame_len=rng.integers(60, 1515, n),
        src_mac=rng.integers(1, 5, n).astype(np.uint64),
        dst_mac=rng.integers(1, 5, n).astype(np.uint64),
        src_ip=hosts[rng.integers(0, 6, n)],
        dst_ip=hosts[rng.integers(0, 6, n)],
        src_port=src_port,
        dst_port=dst_port,
        kind=kind,
        ip_proto=np.full(n, 17, dtype=np.uint8),
    )
