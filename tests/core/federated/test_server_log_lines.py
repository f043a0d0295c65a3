"""The devices' log lines after an exchange: bound to the device the engine named and to the
step's round, whether the line said so already (kept as is) or not (a retagged copy)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fediot.core.config import Config
from fediot.core.federated.messages import LogLine, Refusal, Reply
from fediot.core.federated.server import FedDetectServer

TIME = "2026-01-01T00:00:00.000+00:00"


class Pool:
    """Hands back the replies it was built with (no device runs)."""

    def __init__(self, replies: dict[str, Reply]) -> None:
        self.replies = replies

    @property
    def client_ids(self) -> list[str]:
        return list(self.replies)

    def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]:
        return self.replies


class Lines:
    def __init__(self) -> None:
        self.lines: list[LogLine] = []

    def on_phase(self, phase: str, detail: str) -> None:
        pass

    def on_round(self, record: object) -> None:
        pass

    def on_logs(self, lines: Sequence[LogLine]) -> None:
        self.lines.extend(lines)


def test_lines_are_bound_to_the_engines_device_and_the_steps_round() -> None:
    right = LogLine(TIME, "a", 3, "fit", "INFO", "trained")
    no_round = LogLine(TIME, "b", None, "fit", "INFO", "trained")
    other_device = LogLine(TIME, "someone else", 2, "fit", "INFO", "trained")
    refusal = Refusal("no")  # rejected: its lines still count
    observer = Lines()
    server = FedDetectServer(Config(), observer)
    pool = Pool({"a": Reply(refusal, (right,)), "b": Reply(refusal, (no_round,)),
                 "c": Reply(refusal, (other_device,))})
    assert server._exchange(pool, "fit", dict.fromkeys(["a", "b", "c"]), 3) == {}
    assert [(line.device, line.round) for line in observer.lines] == [
        ("a", 3), ("b", 3), ("c", 2)]
    assert observer.lines[0] is right  # already right: not copied
    assert observer.lines[1:] == [LogLine(TIME, "b", 3, "fit", "INFO", "trained"),
                                  LogLine(TIME, "c", 2, "fit", "INFO", "trained")]
    observer.lines.clear()
    server._exchange(pool, "scaler_stats", dict.fromkeys(["a", "b"]))  # outside rounds
    assert [(line.device, line.round) for line in observer.lines] == [("a", 3), ("b", None)]
