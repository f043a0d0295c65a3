"""A real Flower deployment on loopback: a SuperLink and three SuperNodes run two rounds.

The SuperNodes start first (they must wait and retry), then ``fediot server`` starts the
SuperLink and the run; success is read from the run's status. Every process is ours and
stopped by its PID.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from federated_data import write_cross_silo_config
from fediot.core.catalog import DEVICES
from fediot.core.config import load_config
from fediot.engines.flower import deployment
from fediot.engines.run_folder import RunView
from fediot.engines.simulation import run_federated
from ports import free_port

FEDIOT = Path(sys.executable).with_name("fediot")


@pytest.fixture
def cross_silo_config(tmp_path: Path) -> Path:
    return write_cross_silo_config(tmp_path, 3, train={"comm_round": 2})


@pytest.mark.slow
def test_superlink_and_three_supernodes_complete_two_rounds(
    cross_silo_config: Path, tmp_path: Path
) -> None:
    port = free_port()
    nodes = [
        deployment.supernode(tmp_path / f"node{d.uci_id}", f"127.0.0.1:{port}", d.name,
                             free_port(), max_wait_seconds=300).start()
        for d in DEVICES[:3]
    ]
    try:
        server = subprocess.run(
            [str(FEDIOT), "server", "--config", str(cross_silo_config), "--port", str(port),
             "--insecure",
             "--flwr-home", str(tmp_path / "server"), "--wait", "120", "--timeout", "600"],
            capture_output=True, text=True, timeout=700, check=False,
            env={**deployment.flower_env(tmp_path / "server"), "COLUMNS": "160"},
        )
        assert server.returncode == 0, server.stdout + server.stderr
        assert "Danmini doorbell" in server.stdout and "all devices" in server.stdout
        assert "finished:completed" in server.stdout
        assert all(node.alive() for node in nodes)  # devices outlive the run
        family = [pid for node in nodes for pid in deployment.descendants(node.pid)]
    finally:
        for node in nodes:
            node.stop()
    assert not any(node.alive() for node in nodes)
    leftover = [pid for pid in family if Path(f"/proc/{pid}").exists()
                and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not leftover, f"processes left behind: {leftover}"
    results = json.loads(next((tmp_path / "runs").glob("*/results.json")).read_text())
    assert set(results["evaluation"]["devices"]) == {d.name for d in DEVICES[:3]}
    metrics = (next((tmp_path / "runs").glob("*/metrics.jsonl"))).read_text().splitlines()
    assert len(metrics) == 2
    # the ServerApp recorded the devices' log lines and the bytes of every training message
    view = RunView(next((tmp_path / "runs").glob("*/config.yaml")).parent)
    assert view.status()["engine"] == "flower"  # type: ignore[index]
    names = {d.name for d in DEVICES[:3]}
    seen = {(line["device"], line["step"], line["round"]) for line in view.logs()}
    assert {(name, "fit", r) for name in names for r in (1, 2)} <= seen
    assert {(name, step, None) for name in names
            for step in ("scaler_stats", "threshold_stats", "evaluate")} <= seen
    # the same configuration in-process reaches the same global model, bit for bit
    deployed = np.load(next((tmp_path / "runs").glob("*/model/weights.npz")))
    config = load_config(cross_silo_config).with_overrides({
        "common_args.training_type": "simulation",
        "tracking_args.log_file_dir": str(tmp_path / "runs-inprocess")})
    in_process = run_federated(config)
    for i, weights in enumerate(in_process.model.weights):
        np.testing.assert_array_equal(deployed[f"w{i}"], weights)
    model_bytes = sum(w.nbytes for w in in_process.model.weights)
    for record in view.rounds():
        assert set(record["system"]) == names
        for figures in record["system"].values():
            assert model_bytes <= figures["bytes_down"] < 2 * model_bytes
            assert model_bytes <= figures["bytes_up"] < 2 * model_bytes
    assert results["evaluation"] == json.loads(json.dumps(in_process.evaluation.to_dict()))


@pytest.mark.slow
def test_server_refuses_a_non_loopback_address_without_tls(cross_silo_config: Path) -> None:
    refused = subprocess.run(
        [str(FEDIOT), "server", "--config", str(cross_silo_config), "--host", "0.0.0.0",
         "--certificates", str(cross_silo_config.parent / "no-certs")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert refused.returncode == 2
    assert "not a loopback address" in refused.stderr
