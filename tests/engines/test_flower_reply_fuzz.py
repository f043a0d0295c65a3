"""Randomly mutated Flower reply records: the decoder raises only ReplyError; the pool binds a
reply to the node that sent it and turns a spoofed or unreadable reply into a rejection."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from federated_data import synthetic_clients
from fediot.core.federated.client import DeviceClient
from fediot.core.federated.messages import EvaluateTask, FitTask, ModelState, Refusal, ScoreTask
from fediot.core.model import ScalerStats, build_autoencoder, get_weights
from fediot.engines.flower.pool import FlowerPool
from fediot.engines.flower.records import ReplyError, decode_logs, decode_reply, encode_reply

METHODS = ("scaler_stats", "fit", "threshold_stats", "evaluate")


def _replies() -> dict[str, RecordDict]:
    data = synthetic_clients(n_devices=1)[0]
    client = DeviceClient(data)
    model = ModelState(get_weights(build_autoencoder(115, seed=3)),
                       ScalerStats.from_data(data.train))
    tasks: dict[str, Any] = {"scaler_stats": None, "fit": FitTask(model, 1, 0.003, 1, 64),
                             "threshold_stats": ScoreTask(model),
                             "evaluate": EvaluateTask(model, 1.0, 5)}
    out = {}
    SCORE.append(ScoreTask(model))
    for method in METHODS:
        reply = client.call(method, tasks[method])
        out[method] = encode_reply(method, client.client_id, reply.result, reply.logs)
    return out


SCORE: list[ScoreTask] = []
REPLIES = _replies()
TRIED = {"count": 0}

values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8),
    st.lists(st.integers(min_value=-(2**40), max_value=2**40), max_size=4),
    st.lists(st.floats(allow_nan=True), max_size=4), st.binary(max_size=4))


@dataclass
class Mutation:
    kind: str
    record: int
    key: int
    value: Any


mutations = st.builds(Mutation, st.sampled_from(["drop-record", "drop-key", "set-key",
                                                 "add-key", "array", "record-type"]),
                      st.integers(0, 50), st.integers(0, 500), values)


def _copy(content: RecordDict) -> RecordDict:
    out = RecordDict()
    for name, record in content.items():
        if isinstance(record, ArrayRecord):
            out[name] = ArrayRecord(numpy_ndarrays=[a.copy() for a in
                                                    record.to_numpy_ndarrays()])
        elif isinstance(record, MetricRecord):
            out[name] = MetricRecord(dict(record))
        else:
            out[name] = ConfigRecord(dict(record))
    return out


def _mutate(content: RecordDict, mutation: Mutation) -> None:
    names = sorted(content)
    name = names[mutation.record % len(names)]
    record = content[name]
    if mutation.kind == "drop-record":
        del content[name]
    elif mutation.kind == "record-type":
        content[name] = (MetricRecord({"x": 1}) if not isinstance(record, MetricRecord)
                         else ConfigRecord({"x": "y"}))
    elif mutation.kind == "array":
        if isinstance(record, ArrayRecord):
            flat = record.to_numpy_ndarrays()[0]
            choices = [flat[: mutation.key], np.full(3, np.nan), flat.astype(np.int64),
                       np.zeros((2, 2)), flat * 1e30]
            content[name] = ArrayRecord(numpy_ndarrays=[choices[mutation.key % 5]])
    else:
        keys = sorted(record) if not isinstance(record, ArrayRecord) else []
        if not keys:
            return
        key = keys[mutation.key % len(keys)] if mutation.kind != "add-key" else "extra"
        if mutation.kind == "drop-key":
            del record[key]
        else:
            try:
                record[key] = mutation.value
            except Exception:  # Flower refuses the type outright: nothing to decode
                return


# derandomised like tests/fuzz (FEDIOT_FUZZ_RANDOM=1 draws fresh examples)
@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=os.environ.get("FEDIOT_FUZZ_RANDOM") != "1")
@given(st.sampled_from(METHODS), st.lists(mutations, min_size=1, max_size=4))
def test_the_decoder_only_raises_reply_error(method: str, changes: list[Mutation]) -> None:
    TRIED["count"] += 1
    content = _copy(REPLIES[method])
    for change in changes:
        if not content:
            break
        _mutate(content, change)
    for decode in (lambda: decode_reply(method, content, "device"),
                   lambda: decode_logs(content, "device")):
        with contextlib.suppress(ReplyError):  # anything else fails the test
            decode()


def test_the_number_of_mutated_replies_tried() -> None:
    print(f"mutated Flower replies tried: {TRIED['count']}")
    assert TRIED["count"] >= 1000


# --- the pool binds replies to nodes ---------------------------------------------------------

@dataclass
class _Meta:
    src_node_id: int


class _Reply:
    def __init__(self, node: int, content: RecordDict) -> None:
        self.metadata, self.content = _Meta(node), content

    def has_error(self) -> bool:
        return False


class FakeGrid:
    """Nodes 1, 2 and 3 serving devices a, b and c; node 2 writes ``claim`` into its replies."""

    def __init__(self, claim: str = "b", broken: bool = False) -> None:
        self.devices = {1: "a", 2: "b", 3: "c"}
        self.claim, self.broken = claim, broken
        self.identified = False

    def get_node_ids(self) -> list[int]:
        return list(self.devices)

    def send_and_receive(self, messages: Iterable[Message], timeout: float) -> list[_Reply]:
        out = []
        for message in messages:
            node = message.metadata.dst_node_id
            device = self.devices[node]
            if message.metadata.message_type == "query.identify":
                out.append(_Reply(node, encode_reply("identify", device, device)))
                continue
            name = self.claim if node == 2 else device
            content = _copy(REPLIES["threshold_stats"])
            content["device"] = ConfigRecord({"client-id": name})
            if node == 2 and self.broken:
                del content["errors"]
            out.append(_Reply(node, content))
        return out


@pytest.fixture
def run_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """Messages need a run id, which a ServerApp sets."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


@pytest.mark.usefixtures("run_id")
def test_a_reply_claiming_another_device_is_refused_for_its_node() -> None:
    pool = FlowerPool(FakeGrid(claim="c"), ["a", "b", "c"],  # type: ignore[arg-type]
                      wait_seconds=1)
    replies = pool.exchange("threshold_stats", dict.fromkeys("abc", SCORE[0]))
    assert isinstance(replies["b"].result, Refusal)
    assert "names device 'c'" in replies["b"].result.reason
    assert not isinstance(replies["c"].result, Refusal)


@pytest.mark.usefixtures("run_id")
def test_an_unreadable_reply_becomes_a_refusal_not_a_crash() -> None:
    pool = FlowerPool(FakeGrid(broken=True), ["a", "b", "c"],  # type: ignore[arg-type]
                      wait_seconds=1)
    replies = pool.exchange("threshold_stats", dict.fromkeys("abc", SCORE[0]))
    assert isinstance(replies["b"].result, Refusal)
    assert "unreadable reply" in replies["b"].result.reason


@pytest.mark.parametrize("method", METHODS)
def test_a_device_refusal_travels_as_a_refusal(method: str) -> None:
    content = encode_reply(method, "a", Refusal("refused: epochs 0 outside 1…10000"))
    assert decode_reply(method, content) == Refusal("refused: epochs 0 outside 1…10000")


class UnavailableGrid(FakeGrid):
    """Node 3 is gone after identifying: the SuperLink answers its task itself (Flower's own
    error reply, sent from the SuperLink's node id), as for a device killed mid-run. Messages
    get their ids as Flower's grids give them on push."""

    def send_and_receive(self, messages: Iterable[Message], timeout: float) -> list[Any]:
        from flwr.server.superlink.linkstate.utils import (
            create_message_error_unavailable_res_message,
        )

        messages = list(messages)
        for message in messages:
            message.metadata.__dict__["_message_id"] = message.object_id
        gone = [m for m in messages if m.metadata.dst_node_id == 3
                and m.metadata.message_type != "query.identify"]  # it identified, then died
        answered = super().send_and_receive([m for m in messages if m not in gone], timeout)
        return [*answered, *(create_message_error_unavailable_res_message(
            m.metadata, "node_unavail") for m in gone)]


@pytest.mark.usefixtures("run_id")
def test_the_superlinks_failure_reply_names_the_device_it_answers_for(
        caplog: pytest.LogCaptureFixture) -> None:
    pool = FlowerPool(UnavailableGrid(claim="b"), ["a", "b", "c"],  # type: ignore[arg-type]
                      wait_seconds=1)
    with caplog.at_level("WARNING", logger="fediot.flower"):
        replies = pool.exchange("threshold_stats", dict.fromkeys("abc", SCORE[0]))
    assert set(replies) == {"a", "b"}
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("threshold_stats failed on device c (node 3): ") for m in messages)
    assert "threshold_stats: no reply from c (node 3)" in messages
    assert not any("ignored a reply" in m for m in messages), messages
