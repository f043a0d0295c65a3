"""tests/ports.py: the loopback ports of parallel test workers never overlap."""

from __future__ import annotations

import socket

import ports


def test_every_worker_has_its_own_block_below_the_ephemeral_range() -> None:
    blocks = [ports.worker_block(f"gw{i}", "8") for i in range(8)]
    taken = [port for block in blocks for port in block]
    assert len(taken) == len(set(taken)) > 8 * 64
    low = ports.ephemeral_low()
    assert min(taken) >= ports.RESERVED_LOW and max(taken) < low
    assert ports.worker_block("", "1") == range(ports.RESERVED_LOW, low)  # no xdist


def test_free_ports_are_this_workers_distinct_and_bindable() -> None:
    block = ports.worker_block()
    handed = [ports.free_port() for _ in range(20)]
    assert len(set(handed)) == 20 and all(port in block for port in handed)
    for port in handed:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
            server.listen()
