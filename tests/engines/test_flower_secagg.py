"""Secure aggregation over Flower: the records round-trip, and a loopback deployment where a
device is killed mid-round (after sharing its keys, while the others train and mask)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from fediot.core.catalog import DEVICES
from fediot.core.federated.messages import FitReport, FitTask, ModelState, SystemStats
from fediot.core.federated.secure_aggregation import SecAggReply, SecAggTask
from fediot.core.model import ScalerStats
from fediot.engines.flower.records import decode_reply, decode_task, encode_reply, encode_task
from ports import free_port


def test_secagg_messages_round_trip() -> None:
    model = ModelState([np.ones((2, 3), np.float32)], ScalerStats.from_data(np.ones((4, 115))))
    fit = FitTask(model=model, server_round=2, learning_rate=0.01, epochs=1, batch_size=8,
                  optimizer="adam", weight_decay=0.0, proximal_mu=0.0, seed=0)
    task = SecAggTask("mask", 2, {"shares": {"a": b"\x00\x01"}, "clipping_range": 8.0,
                                  "levels": 16}, fit)
    back = decode_task("secagg", encode_task("secagg", task))
    assert back.stage == "mask" and back.payload == task.payload
    assert back.inner.server_round == 2
    report = FitReport("d", [], 10, 0.5, SystemStats(1.0, 1.0, 1), 0.1, 3)
    reply = SecAggReply("mask", {}, np.arange(5, dtype=np.uint64) * np.uint64(2**61), report)
    got = decode_reply("secagg", encode_reply("secagg", "d", reply), "d")
    np.testing.assert_array_equal(got.masked, reply.masked)
    assert got.report == report
    keys = SecAggReply("setup", {"pk1": b"k" * 32, "pk2": b"l" * 32})
    assert decode_reply("secagg", encode_reply("secagg", "d", keys), "d").payload == keys.payload


@pytest.mark.slow
def test_secagg_deployment_survives_a_device_killed_mid_round(tmp_path: Path) -> None:
    from test_flower_faults import (
        rounds_done,
        start_nodes,
        start_server,
        stop_all,
        wait_until,
        write_config,
    )

    config = write_config(tmp_path, comm_round=2, client_num_min_replies=2)
    text = config.read_text() + "comm_args:\n  secure_aggregation: true\n"
    config.write_text(text)
    port = free_port()
    node = start_nodes(tmp_path, port)
    victim = DEVICES[2].name
    server = start_server(config, port, tmp_path / "server")

    def stage_seen(stage: str) -> bool:
        for logs in (tmp_path / "runs").glob("*/logs.jsonl"):
            for line in logs.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry["device"] == victim and f"stage {stage}" in entry["message"]:
                    return True
        return False

    try:
        wait_until(lambda: stage_seen("share_keys"), 600, "the victim sharing its keys")
        time.sleep(0.5)
        node[victim].stop()  # killed mid-round, by its PID, before it sends a masked vector
        output, _ = server.communicate(timeout=900)
        assert server.returncode == 0, output
    finally:
        stop_all(server, node.values())
    rounds = rounds_done(tmp_path / "runs")
    assert [r["round"] for r in rounds] == [1, 2]
    assert victim not in rounds[0]["answered"], rounds[0]  # type: ignore[operator]
    assert len(rounds[0]["answered"]) == 2  # type: ignore[arg-type]
    # the survivors' sum was unmasked (the victim's pairwise masks rebuilt from its shares):
    # garbage weights would not detect anything
    results = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())
    assert results["evaluation"]["pooled"]["window_vote"]["f1"] >= 0.9, results["evaluation"]
