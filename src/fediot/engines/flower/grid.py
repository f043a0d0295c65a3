"""A ``Grid`` that sends a step's messages and polls for the replies at our own pace.

Flower 1.42's ``Grid.send_and_receive`` polls for replies every 3 s (hard-coded in the
deployment's ``http_grid``), so a step that the devices answer in 0.2 s still takes 3 s, and a
round of several devices often 6 s. On Flower's simulation runtime it pushes every message at
once, and each node's message look-up then scans all of them (O(N²) per sweep at 900 devices).
:class:`InFlightLimit` does the same exchange with Flower's public ``push_messages`` /
``pull_messages``: at most ``limit`` messages outstanding, replies polled every
``pull_interval`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from flwr.app import Message, RecordDict
from flwr.proto.node_pb2 import NodeInfo
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from fediot.core.errors import FediotError

DEPLOYMENT_PULL_SECONDS = 0.1
"""Reply poll of a deployment's ServerApp (Flower's own: 3 s); one small request to the
SuperLink per poll."""


class InFlightLimit(Grid):
    """A ``Grid`` whose ``send_and_receive`` keeps at most ``limit`` messages outstanding.

    Parameters
    ----------
    grid
        The simulation's grid; everything else is delegated to it.
    limit
        Messages pushed but not yet answered, at most (≥ 1).
    pull_interval
        Seconds between polls for replies (default 0.02).
    """

    def __init__(self, grid: Grid, limit: int, pull_interval: float = 0.02) -> None:
        if limit < 1:
            raise FediotError(f"in-flight limit must be at least 1, got {limit}")
        self.grid = grid
        self.limit = limit
        self.pull_interval = pull_interval

    def set_run(self, run: Run) -> None:
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        return self.grid.run

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int,
                       group_id: str, ttl: float | None = None) -> Message:
        return self.grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self.grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *,
                         timeout: float | None = None) -> Iterable[Message]:
        """Like ``Grid.send_and_receive`` (the same overall ``timeout``), ``limit`` at a time."""
        waiting = list(messages)
        waiting.reverse()  # pop() from the end sends in the caller's order
        deadline = None if timeout is None else time.monotonic() + timeout
        outstanding: set[str] = set()
        replies: list[Message] = []
        while waiting or outstanding:
            free = self.limit - len(outstanding)
            if waiting and free > 0:
                batch = [waiting.pop() for _ in range(min(free, len(waiting)))]
                outstanding.update(self.grid.push_messages(batch))
            for reply in self.grid.pull_messages(outstanding):
                outstanding.discard(reply.metadata.reply_to_message_id)
                replies.append(reply)
            if deadline is not None and time.monotonic() >= deadline:
                break
            if len(outstanding) >= self.limit or (outstanding and not waiting):
                time.sleep(self.pull_interval)
        return replies
