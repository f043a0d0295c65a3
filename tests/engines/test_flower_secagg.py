"""Secure aggregation over Flower: the records round-trip, and a loopback deployment where a
device is killed mid-step (after sharing its keys in the scaler step, while the others mask
their statistics)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from fediot.core.catalog import DEVICES
from fediot.core.config import load_config
from fediot.core.federated.devices import load_client_data
from fediot.core.federated.messages import (
    DataReport,
    FitReport,
    FitTask,
    ModelState,
    ScoreTask,
    SystemStats,
)
from fediot.core.federated.secure_aggregation import SUM_ID, SecAggReply, SecAggTask
from fediot.core.federated.secure_statistics import sum_error_bound
from fediot.core.model import ScalerStats
from fediot.engines.flower.records import (
    RecordError,
    decode_reply,
    decode_task,
    encode_reply,
    encode_task,
)
from fediot.engines.run_folder import RunView
from ports import free_port


def test_secagg_messages_round_trip() -> None:
    model = ModelState([np.ones((2, 3), np.float32)], ScalerStats.from_data(np.ones((4, 115))))
    fit = FitTask(model=model, server_round=2, learning_rate=0.01, epochs=1, batch_size=8,
                  optimizer="adam", weight_decay=0.0, proximal_mu=0.0, seed=0)
    task = SecAggTask("mask", 2, {"shares": {"a": b"\x00\x01"}, "step": "fit",
                                  "clipping_range": 8.0, "levels": 16}, fit)
    back = decode_task("secagg", encode_task("secagg", task))
    assert back.stage == "mask" and back.payload == task.payload
    assert back.inner.server_round == 2
    report = FitReport("d", [], 10, 0.5, SystemStats(1.0, 1.0, 1, 1), 0.1, 3)
    reply = SecAggReply("mask", {}, np.arange(5, dtype=np.uint64) * np.uint64(2**61), report)
    got = decode_reply("secagg", encode_reply("secagg", "d", reply), "d")
    np.testing.assert_array_equal(got.masked, reply.masked)
    assert got.report == report
    keys = SecAggReply("setup", {"pk1": b"k" * 32, "pk2": b"l" * 32})
    assert decode_reply("secagg", encode_reply("secagg", "d", keys), "d").payload == keys.payload


def test_secagg_statistics_messages_round_trip() -> None:
    model = ModelState([np.ones((2, 3), np.float32)], ScalerStats.from_data(np.ones((4, 115))))
    scaler = decode_task("secagg", encode_task("secagg", SecAggTask(
        "mask", 0, {"shares": {}, "step": "scaler_stats"})))
    assert scaler.inner is None and scaler.payload["step"] == "scaler_stats"
    score = decode_task("secagg", encode_task("secagg", SecAggTask(
        "mask", 3, {"shares": {}, "step": "threshold_stats"}, ScoreTask(model))))
    assert isinstance(score.inner, ScoreTask)
    np.testing.assert_array_equal(score.inner.model.weights[0], model.weights[0])
    with pytest.raises(RecordError, match="unknown step"):
        decode_task("secagg", encode_task("secagg", SecAggTask(
            "mask", 0, {"shares": {}, "step": "evaluate"})))
    data = DataReport(train=50, opt=20, warmup_train=1, warmup_opt=0)
    reply = SecAggReply("mask", {}, np.arange(3, dtype=np.uint64), data)
    assert decode_reply("secagg", encode_reply("secagg", "d", reply), "d").report == data
    bare = SecAggReply("mask", {}, np.arange(3, dtype=np.uint64))
    assert decode_reply("secagg", encode_reply("secagg", "d", bare), "d").report is None


@pytest.mark.slow
def test_secagg_deployment_survives_a_device_killed_mid_round(tmp_path: Path) -> None:
    """Every step goes through secure aggregation (the scaler, the rounds, the global
    threshold); the victim is killed in the first one, the scaler step, after sharing its keys:
    the survivors' sums are unmasked and the run goes on without it."""
    from test_flower_faults import (
        rounds_done,
        start_nodes,
        start_server,
        stop_all,
        wait_until,
        write_config,
    )

    config = write_config(tmp_path, comm_round=2, client_num_min_replies=2)
    text = config.read_text().replace("detection_args:\n",
                                      "detection_args:\n  threshold_mode: global\n")
    config.write_text(text + "comm_args:\n  secure_aggregation: true\n")
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
        node[victim].stop()  # killed mid-step, by its PID, before it sends a masked vector
        output, _ = server.communicate(timeout=900)
        assert server.returncode == 0, output
    finally:
        stop_all(server, node.values())
    rounds = rounds_done(tmp_path / "runs")
    assert [r["round"] for r in rounds] == [1, 2]
    assert victim not in rounds[0]["answered"], rounds[0]  # type: ignore[operator]
    assert len(rounds[0]["answered"]) == 2  # type: ignore[arg-type]
    run = next((tmp_path / "runs").iterdir())
    results = json.loads((run / "results.json").read_text())
    # it dropped in the scaler step: its data counts never arrived
    survivors = [d.name for d in DEVICES[:3] if d.name != victim]
    assert sorted(results["devices_data"]) == sorted(survivors)
    # the scaler is the survivors' sum (the victim's pairwise masks rebuilt from its shares)
    cfg = load_config(config)
    data = {cid: load_client_data(cfg, cid) for cid in survivors}
    expected = ScalerStats.pool(ScalerStats.from_data(d.train) for d in data.values())
    model, thresholds = RunView(run).load_model()
    assert model.scaler.n == expected.n
    np.testing.assert_allclose(model.scaler.sumsq, expected.sumsq, rtol=1e-12,
                               atol=sum_error_bound(2))
    # the server kept the survivors' summed error statistics only, and one global threshold
    assert list(results["threshold_stats"]) == [SUM_ID]
    assert results["threshold_stats"][SUM_ID]["n"] == sum(len(d.opt) for d in data.values())
    assert sorted(thresholds.per_device) == sorted(survivors)
    assert len(set(thresholds.per_device.values())) == 1
    # garbage sums would not detect anything
    assert results["evaluation"]["pooled"]["window_vote"]["f1"] >= 0.9, results["evaluation"]
