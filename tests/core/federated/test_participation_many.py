"""The participation record at thousands of virtual devices: the same outcomes as the
straightforward reading of each round's lists."""

from __future__ import annotations

import numpy as np

from fediot.core.federated.participation import missed_rounds, stale_devices
from fediot.core.federated.server import RoundRecord


def naive_missed_rounds(history: list[RoundRecord]) -> dict[str, list[tuple[int, bool]]]:
    """The reading before issue 13: membership tests on the round's lists."""
    sampled: dict[str, list[tuple[int, bool]]] = {}
    for record in history:
        for device in record.clients:
            missed = device not in list(record.answered) and device not in list(record.rejected)
            sampled.setdefault(device, []).append((record.server_round, missed))
    return sampled


def test_missed_rounds_of_thousands_of_devices_match_the_naive_reading() -> None:
    rng = np.random.default_rng(13)
    devices = [f"device-{i:05d}" for i in range(2_500)]
    history = []
    for server_round in range(1, 5):
        clients = [d for d in devices if rng.random() < 0.8]
        fate = rng.choice(3, size=len(clients), p=[0.8, 0.1, 0.1])  # answered, rejected, lost
        answered = [d for d, f in zip(clients, fate, strict=True) if f == 0]
        rejected = {d: "update norm" for d, f in zip(clients, fate, strict=True) if f == 1}
        history.append(RoundRecord(server_round, 0.01, clients, answered, 1.0, 10, 0.1, {},
                                   rejected=rejected))
    got = missed_rounds(history)
    assert got == naive_missed_rounds(history)
    assert list(got) == list(naive_missed_rounds(history))  # first-sampled order kept
    assert any(missed for outcomes in got.values() for _, missed in outcomes)
    stale = stale_devices(history, 1)
    assert stale and all(got[device][-1][1] for device in stale)
