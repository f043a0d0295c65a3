"""The devices of a Flower run as a :class:`~fediot.core.federated.server.ClientPool`.

The ServerApp hands a ``FlowerPool`` to :class:`FedDetectServer`; each ``call`` becomes one
Flower message per device and waits, bounded, for the replies. A device that does not answer
in time is left out of that step (and logged); the server never waits forever.

Each :class:`~fediot.core.federated.messages.Reply` records the exact size of the content the
server sent to the node and received from it (:func:`~.records.content_bytes`), and the log
lines the device sent back.

Every log line about a device names it (with its node id). A failure reply names the task it
answers (``reply_to_message_id``): the SuperLink sends it from its own node id when a node
is unavailable.

A reply belongs to the device of the node that sent it (the message's ``src_node_id``, bound
to a device when the node identified itself), never to the client id written inside it: a
reply naming another device, or one that cannot be read (:class:`~.records.ReplyError`),
reaches the server as a :class:`~fediot.core.federated.messages.Refusal` of the node's device,
which the server rejects and counts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid

from fediot.core.errors import FediotError
from fediot.core.federated.messages import Refusal, Reply
from fediot.engines.flower.records import (
    MESSAGE_TYPES,
    ReplyError,
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
        arrived = self.grid.send_and_receive(messages, timeout=self.reply_seconds)
        asked = {message.metadata.message_id: node for message, node in zip(
            messages, fresh, strict=True)}
        for reply in arrived:
            if reply.has_error():  # possibly from the SuperLink: the task names the node
                node = asked.get(reply.metadata.reply_to_message_id,
                                 reply.metadata.src_node_id)
                log.warning("node %s could not identify: %s", node, reply.error.reason)
                continue
            node = reply.metadata.src_node_id
            try:
                cid = reply_client_id(reply.content)
            except ReplyError as error:
                log.warning("node %s sent an unreadable identity: %s", node, error)
                continue
            bound = self._node_of.get(cid)
            if bound is not None and bound != node and bound in online:
                log.warning("node %s claims device %s, which node %s (still online) serves; "
                            "ignored", node, cid, bound)
                continue
            if bound is not None and bound != node:
                log.info("device %s is back as node %s (was node %s)", cid, node, bound)
            self._node_of[cid] = node

    def _named(self, node: int) -> str:
        """`` (device NAME)`` for a node bound to a device, else nothing."""
        names = [cid for cid, bound in self._node_of.items() if bound == node]
        return f" (device {names[0]})" if names else ""

    def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]:
        """Send each device its task; decode the replies that arrive in time.

        Nodes that connected since the last step identify themselves first, so a device that
        restarted rejoins at the next step: under a new node id (without device keys), or under
        its own (a device key fixes the node id) once Flower has found the old one gone.
        """
        self._identify()
        messages: list[Message] = []
        sizes: dict[int, int] = {}  # a task shared by devices is measured once
        sent: dict[str, int] = {}
        device_of: dict[int, str] = {}  # node → the device it was sent a task for
        for cid, task in tasks.items():
            content = encode_task(method, task)
            if id(task) not in sizes:
                sizes[id(task)] = content_bytes(content)
            sent[cid] = sizes[id(task)]
            node = self._node_of[cid]
            device_of[node] = cid
            messages.append(Message(content=content, dst_node_id=node,
                                    message_type=MESSAGE_TYPES[method]))
        replies: dict[str, Reply] = {}
        arrived = self.grid.send_and_receive(messages, timeout=self.reply_seconds)
        # the grid gave each message its id when it pushed it
        task_of = {message.metadata.message_id: cid for message, cid in zip(
            messages, tasks, strict=True)}
        for reply in arrived:
            if reply.has_error():
                # the SuperLink answers for a node it finds unavailable (the error comes from
                # the SuperLink's own node id): the task it answers names the device
                failed = task_of.get(reply.metadata.reply_to_message_id)
                where = (f"device {failed} (node {self._node_of[failed]})" if failed
                         else f"node {reply.metadata.src_node_id}")
                log.warning("%s failed on %s: %s", method, where, reply.error.reason)
                continue
            node = reply.metadata.src_node_id
            bound = device_of.get(node)
            if bound is None or bound in replies:
                log.warning("%s: ignored a reply from node %s%s, which was sent no task or "
                            "answered already", method, node, self._named(node))
                continue
            replies[bound] = self._decode(method, bound, node, reply, sent.get(bound, 0))
        lost = [cid for cid in tasks if cid not in replies]
        if lost:
            log.warning("%s: no reply from %s", method, ", ".join(
                f"{cid} (node {self._node_of[cid]})" for cid in lost))
        return {cid: replies[cid] for cid in tasks if cid in replies}

    def _decode(self, method: str, cid: str, node: int, reply: Message,
                bytes_down: int) -> Reply:
        """The :class:`Reply` of device ``cid`` (node ``node``): its result, or a
        :class:`Refusal` when it names another device or cannot be read."""
        bytes_up = content_bytes(reply.content)
        try:
            named = reply_client_id(reply.content)
            if named != cid:
                raise ReplyError(f"the reply of node {node} names device {named[:60]!r}, but "
                                 f"the node serves {cid}")
            result = decode_reply(method, reply.content, cid)
            logs = decode_logs(reply.content, cid)
        except ReplyError as error:
            log.warning("%s: unusable reply from %s (node %s): %s", method, cid, node, error)
            return Reply(Refusal(f"unreadable reply: {error}"), (),
                         bytes_down=bytes_down, bytes_up=bytes_up)
        return Reply(result, logs, bytes_down=bytes_down, bytes_up=bytes_up)

    def call(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Any]:
        """The results of :meth:`exchange` alone."""
        return {cid: reply.result for cid, reply in self.exchange(method, tasks).items()}
