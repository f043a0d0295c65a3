"""The devices of a Flower run as a :class:`~fediot.core.federated.server.ClientPool`.

The ServerApp hands a ``FlowerPool`` to :class:`FedDetectServer`; each ``call`` becomes one
Flower message per device and waits, bounded, for the replies. A device that does not answer
in time is left out of that step (and logged); the server never waits forever.

Each :class:`~fediot.core.federated.messages.Reply` records the exact size of the content the
server sent to the node and received from it (:func:`~.records.content_bytes`), and the log
lines the device sent back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from fediot.core.errors import FediotError
from fediot.core.federated.messages import Reply
from fediot.engines.flower.records import (
    MESSAGE_TYPES,
    content_bytes,
    decode_logs,
    decode_reply,
    encode_task,
    reply_client_id,
)

log = logging.getLogger("fediot.flower")


class FlowerPool:
    """Devices reachable through a Flower ``Grid``.

    Parameters
    ----------
    grid
        The ServerApp's grid.
    expected
        Client ids the run needs.
    wait_seconds
        How long to wait for all expected devices to connect (default 120 s).
    reply_seconds
        How long one step waits for replies (default 600 s).
    """

    def __init__(self, grid: Grid, expected: list[str], *, wait_seconds: float = 120.0,
                 reply_seconds: float = 600.0) -> None:
        self.grid = grid
        self.reply_seconds = reply_seconds
        self._node_of: dict[str, int] = {}
        deadline = time.monotonic() + wait_seconds
        while True:
            self._identify()
            missing = [cid for cid in expected if cid not in self._node_of]
            if not missing:
                break
            if time.monotonic() > deadline:
                raise FediotError(
                    f"{len(missing)} of {len(expected)} devices did not connect within "
                    f"{wait_seconds:.0f} s: {', '.join(missing)}"
                )
            log.info("waiting for %d devices: %s", len(missing), ", ".join(missing))
            time.sleep(1.0)
        self._ids = [cid for cid in expected if cid in self._node_of]

    @property
    def client_ids(self) -> list[str]:
        return list(self._ids)

    def _identify(self) -> None:
        online = set(self.grid.get_node_ids())
        known = set(self._node_of.values())
        fresh = [n for n in online if n not in known]
        if not fresh:
            return
        messages = [Message(content=encode_task("identify", None), dst_node_id=node,
                            message_type=MESSAGE_TYPES["identify"]) for node in fresh]
        for reply in self.grid.send_and_receive(messages, timeout=self.reply_seconds):
            if reply.has_error():
                log.warning("node %s could not identify: %s", reply.metadata.src_node_id,
                            reply.error.reason)
                continue
            self._node_of[reply_client_id(reply.content)] = reply.metadata.src_node_id

    def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]:
        """Send each device its task; decode the replies that arrive in time.

        Nodes that connected since the last step identify themselves first, so a device that
        restarted (under a new node id) rejoins at the next step.
        """
        self._identify()
        messages: list[Message] = []
        sizes: dict[int, int] = {}  # a task shared by devices is measured once
        sent: dict[str, int] = {}
        for cid, task in tasks.items():
            content = encode_task(method, task)
            if id(task) not in sizes:
                sizes[id(task)] = content_bytes(content)
            sent[cid] = sizes[id(task)]
            messages.append(Message(content=content, dst_node_id=self._node_of[cid],
                                    message_type=MESSAGE_TYPES[method]))
        replies: dict[str, Reply] = {}
        for reply in self.grid.send_and_receive(messages, timeout=self.reply_seconds):
            if reply.has_error():
                log.warning("%s failed on node %s: %s", method, reply.metadata.src_node_id,
                            reply.error.reason)
                continue
            cid = reply_client_id(reply.content)
            replies[cid] = Reply(decode_reply(method, reply.content), decode_logs(reply.content),
                                 bytes_down=sent.get(cid, 0),
                                 bytes_up=content_bytes(reply.content))
        lost = [cid for cid in tasks if cid not in replies]
        if lost:
            log.warning("%s: no reply from %s", method, ", ".join(lost))
        return {cid: replies[cid] for cid in tasks if cid in replies}

    def call(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Any]:
        """The results of :meth:`exchange` alone."""
        return {cid: reply.result for cid, reply in self.exchange(method, tasks).items()}
