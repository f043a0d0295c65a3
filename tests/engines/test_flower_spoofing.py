"""A device that writes another device's id into its replies, over a real loopback deployment
(SuperLink, SuperNodes and ClientApp processes of Flower; ``fediot server --insecure``).

The adversary is the honest ClientApp with one change, made only in the spoofing node's
processes: a ``sitecustomize`` module on that node's ``PYTHONPATH`` wraps
:func:`fediot.engines.flower.records.encode_reply` so that every reply but the node's identity
names the victim's device. Nothing in FedIoT's own code knows about it.

What the README promises: over Flower a reply belongs to the node that was sent the task,
never to the id written inside it. So the server binds each spoofed reply to the spoofer's
device, rejects and counts it there (never under the claimed device), the claimed device's
own results stay its own, and the run finishes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_flower_faults import rounds_done, start_server, stop_all, write_config

from fediot.core.catalog import DEVICES
from fediot.engines.flower import deployment
from ports import free_port

SPOOFER, CLAIMED, HONEST = DEVICES[1].name, DEVICES[0].name, DEVICES[2].name

HOOK = '''\
"""Test adversary: this node's replies name another device (FEDIOT_TEST_CLAIMED_DEVICE)."""
import os

_claimed = os.environ.get("FEDIOT_TEST_CLAIMED_DEVICE")
if _claimed:
    from fediot.engines.flower import records as _records

    _honest = _records.encode_reply

    def _spoofed(method, client_id, result, logs=()):
        # the node still identifies as itself; every answer claims the other device
        return _honest(method, client_id if method == "identify" else _claimed, result, logs)

    _records.encode_reply = _spoofed
'''


@pytest.mark.slow
def test_a_reply_naming_another_device_is_bound_to_its_node(tmp_path: Path) -> None:
    config = write_config(tmp_path, comm_round=1, client_num_min_replies=2)
    hook = tmp_path / "adversary"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    port = free_port()
    nodes = {}
    for device in DEVICES[:3]:
        node = deployment.supernode(tmp_path / f"node{device.uci_id}", f"127.0.0.1:{port}",
                                    device.name, free_port())
        if device.name == SPOOFER:
            path = [str(hook), node.env.get("PYTHONPATH", "")]
            node.env = {**node.env, "FEDIOT_TEST_CLAIMED_DEVICE": CLAIMED,
                        "PYTHONPATH": os.pathsep.join(p for p in path if p)}
        nodes[device.name] = node.start()
    server = start_server(config, port, tmp_path / "server")
    try:
        output, _ = server.communicate(timeout=900)
        assert server.returncode == 0, output  # the run finished
    finally:
        stop_all(server, nodes.values())

    run = next((tmp_path / "runs").iterdir())
    results = json.loads((run / "results.json").read_text())
    # every spoofed reply was rejected under the node's own device, none under the claimed one
    assert set(results["rejected"]) == {SPOOFER}, results["rejected"]
    steps = {r["step"] for r in results["rejections"]}
    assert {"scaler_stats", "fit", "threshold_stats"} <= steps, results["rejections"]
    assert results["rejected"][SPOOFER] == len(results["rejections"])
    for rejection in results["rejections"]:
        assert rejection["device"] == SPOOFER
        assert f"names device '{CLAIMED}'" in rejection["reason"], rejection
        assert f"serves {SPOOFER}" in rejection["reason"], rejection
    # the claimed device's results are its own: counted once, trained, evaluated
    assert sorted(results["devices_data"]) == sorted([CLAIMED, HONEST])
    rounds = rounds_done(tmp_path / "runs")
    assert [r["round"] for r in rounds] == [1]
    assert sorted(rounds[0]["answered"]) == sorted([CLAIMED, HONEST])  # type: ignore[arg-type]
    assert set(rounds[0]["rejected"]) == {SPOOFER}  # type: ignore[arg-type]
    assert sorted(results["evaluation"]["devices"]) == sorted([CLAIMED, HONEST])
    assert SPOOFER not in results["thresholds"]["per_device"]
