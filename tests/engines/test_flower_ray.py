"""FedDetect on Flower's simulation runtime (a real Ray runtime), against the in-process engine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from federated_data import small_run_config, write_uci_dataset
from fediot.core.config import Config
from fediot.core.liveness import pid_alive
from fediot.engines.flower import deployment
from fediot.engines.run_folder import RunView
from fediot.engines.simulation import run_federated, simulate
from ports import free_port

RAY = Path(sys.executable).with_name("ray")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_uci_dataset(tmp_path_factory.mktemp("nbaiot"), n_devices=3)


def config(dataset: Path, **overrides: object) -> Config:
    return small_run_config(dataset, **{
        "train_args.client_num_per_round": 2, "device_args.worker_num": 2, **overrides})


def assert_same(a: object, b: object) -> None:
    for x, y in zip(a.model.weights, b.model.weights, strict=True):  # type: ignore[attr-defined]
        np.testing.assert_array_equal(x, y)
    assert a.evaluation.to_dict() == b.evaluation.to_dict()  # type: ignore[attr-defined]


@pytest.mark.slow
def test_ray_simulation_reaches_the_in_process_model(dataset: Path, tmp_path: Path) -> None:
    on_ray, folder = simulate(config(dataset, **{
        "comm_args.backend": "ray", "tracking_args.log_file_dir": str(tmp_path / "runs")}))
    in_process = run_federated(config(dataset, **{"device_args.worker_num": 1}))
    assert_same(on_ray, in_process)
    assert [r.clients for r in on_ray.history] == [r.clients for r in in_process.history]
    # the devices' log lines came back from the Ray actors into the run folder
    view = RunView(folder.root)
    seen = {(line["device"], line["step"], line["round"]) for line in view.logs()}
    devices = set(on_ray.evaluation.devices)
    assert {(d, "scaler_stats", None) for d in devices} <= seen
    assert {(d, "fit", r.server_round) for r in on_ray.history for d in r.clients} <= seen
    assert {(d, "evaluate", None) for d in devices} <= seen
    # every training message carried a whole model each way
    model_bytes = sum(w.nbytes for w in on_ray.model.weights)
    for record in view.rounds():
        assert set(record["system"]) == set(record["answered"])
        for figures in record["system"].values():
            assert model_bytes <= figures["bytes_down"] < 2 * model_bytes
            assert model_bytes <= figures["bytes_up"] < 2 * model_bytes


@pytest.mark.slow
def test_attaches_to_a_running_ray_cluster(dataset: Path, tmp_path: Path) -> None:
    port = free_port()
    # a short temp dir: Ray's socket paths must stay under the 107-byte limit
    temp = Path(tempfile.mkdtemp(prefix="fediot-ray-", dir="/tmp"))
    # --block keeps `ray start` as the parent of the cluster's processes, so the cluster is
    # stopped by its PID (never `ray stop`, which ends every Ray runtime of the machine,
    # other test workers' included)
    head = deployment.FlowerProcess(
        "ray head",
        [str(RAY), "start", "--head", "--block", "--port", str(port), "--temp-dir", str(temp),
         "--num-cpus", "2", "--include-dashboard=false", "--disable-usage-stats",
         # the fixed defaults (10001, 52365) would clash with another worker's Ray
         "--ray-client-server-port", str(free_port()),
         "--dashboard-agent-listen-port", str(free_port())],
        {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}, tmp_path / "ray-head.log").start()
    try:
        deployment.wait_for_port("127.0.0.1", port, 120, "the Ray head")
        result = run_federated(config(dataset, **{
            "comm_args.backend": "ray", "comm_args.ray_address": f"127.0.0.1:{port}"}))
        status = subprocess.run([str(RAY), "status", "--address", f"127.0.0.1:{port}"],
                                env=head.env, capture_output=True, text=True, timeout=60,
                                check=False)
        assert status.returncode == 0, "the cluster must outlive the run that attached to it"
        cluster = deployment.descendants(head.pid)
    finally:
        head.stop(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
    assert cluster and not [pid for pid in cluster if pid_alive(pid)]
    in_process = run_federated(config(dataset, **{"device_args.worker_num": 1}))
    assert_same(result, in_process)


def test_a_private_run_on_ray_trains_with_dp_sgd_on_every_device(dataset: Path,
                                                                  tmp_path: Path) -> None:
    result, folder = simulate(config(dataset, **{
        "comm_args.backend": "ray", "tracking_args.log_file_dir": str(tmp_path / "runs"),
        "privacy_args.enabled": True, "privacy_args.target_epsilon": 10.0}))
    assert result.privacy is not None and 0 < result.privacy["epsilon"] <= 10.0 * 1.001
    trained = [line["message"] for line in RunView(folder.root).logs()
               if line["step"] == "fit" and "trained" in line["message"]]
    assert len(trained) == sum(len(r.clients) for r in result.history)
    assert all("DP-SGD σ = " in message and "loss" not in message for message in trained)
    assert all(record.train_loss == 0.0 for record in result.history)
