"""A device without torch (issue 12, item 5): its import path, its tasks through Flower's
ClientApp in a process where torch cannot be imported, and the backend choice."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from federated_data import (
    small_run_config,
    synthetic_clients,
    write_cross_silo_config,
    write_uci_dataset,
)
from fediot.core.catalog import DEVICES
from fediot.core.config import ConfigError, dump_config, load_config
from fediot.core.errors import FediotError
from fediot.core.federated.client import DeviceClient, DeviceGuards
from fediot.core.federated.privacy import PrivacyPlan
from fediot.core.model import backend as backend_module
from fediot.core.model.backend import resolve_backend
from fediot.core.model.numpy_backend import NumpyAutoencoder
from fediot.engines.flower import deployment
from fediot.engines.flower.apps import _config_from
from fediot.engines.simulation import run_federated
from ports import free_port

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from bench_device_memory import initial_weights, run_child  # noqa: E402


@pytest.fixture(scope="module")
def run_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small N-BaIoT-layout data set, a run configuration over it, the initial model."""
    root = tmp_path_factory.mktemp("light")
    dataset = write_uci_dataset(root / "nbaiot", n_devices=1, rows=900)
    config = small_run_config(dataset, **{"train_args.client_num_in_total": 1,
                                          "train_args.client_num_per_round": 1})
    config_path = root / "config.yaml"
    config_path.write_text(dump_config(config))
    weights = root / "initial.npz"
    initial_weights(weights, config.common_args.random_seed)
    return config_path, weights


def test_a_device_without_torch_answers_every_task(run_files: tuple[Path, Path]) -> None:
    """Fresh processes run scaler, 3 training rounds, threshold and evaluation through the
    ClientApp: with torch unimportable (NumPy), and with torch; the answers agree."""
    config, weights = run_files
    light = run_child("numpy", weights, rounds=3, config=config, timeout=600)
    heavy = run_child("torch", weights, rounds=3, config=config, timeout=600)
    assert light["backend"] == "numpy" and not light["torch_imported"]
    assert heavy["torch_imported"]
    assert light["train_rows"] == heavy["train_rows"] > 0
    assert light["losses"][-1] < light["losses"][0]
    # float32 rounding apart (see tests/core/model/test_numpy_backend.py)
    np.testing.assert_allclose(light["losses"], heavy["losses"], rtol=1e-4)
    assert light["threshold"] == pytest.approx(heavy["threshold"], rel=1e-4)
    assert light["final_weights_sum"] == pytest.approx(heavy["final_weights_sum"], rel=1e-5)
    assert light["flagged_attack_rows"] > 0
    for key in ("flagged_attack_rows", "flagged_benign_rows", "window"):
        assert abs(light[key] - heavy[key]) <= 1, key  # at most a row on the threshold's edge


def test_the_numpy_backend_leaves_an_installed_torch_alone(
        run_files: tuple[Path, Path]) -> None:
    config, weights = run_files
    result = run_child("numpy", weights, rounds=1, config=config, timeout=600, block=False)
    assert result["backend"] == "numpy" and not result["torch_imported"]


def test_privacy_needs_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    data = synthetic_clients(n_devices=1)[0]
    plan = PrivacyPlan(clip_norm=1.0, noise_multiplier=1.0, statistics_multiplier=1.0,
                       target_epsilon=0.0, statistics_epsilon_share=0.1, feature_bound=10.0,
                       rounds=2, epochs=1, batch_size=64, threshold_releases=1,
                       target_delta=1e-5)
    with pytest.raises(FediotError, match=r"DP-SGD, which needs torch; set device_args\.backend"):
        DeviceClient(data, guards=DeviceGuards(privacy=plan), backend="numpy")
    monkeypatch.setattr(backend_module, "torch_importable", lambda: False)
    with pytest.raises(FediotError, match="this device has no torch: install it"):
        DeviceClient(data, guards=DeviceGuards(privacy=plan))
    with pytest.raises(FediotError, match="backend 'torch' asked for, but torch is not "
                                          "installed"):
        resolve_backend("torch")


def test_auto_takes_torch_when_present_else_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    data = synthetic_clients(n_devices=1)[0]
    assert DeviceClient(data).backend == "torch"
    assert isinstance(DeviceClient(data, backend="numpy").model, NumpyAutoencoder)
    monkeypatch.setattr(backend_module, "torch_importable", lambda: False)
    client = DeviceClient(data)
    assert client.backend == "numpy" and isinstance(client.model, NumpyAutoencoder)
    with pytest.raises(FediotError, match="must be one of"):
        resolve_backend("jax")


def test_the_backend_is_a_checked_key_and_a_device_may_choose(tmp_path: Path) -> None:
    config = small_run_config(tmp_path)
    assert config.device_args.backend == "auto"
    with pytest.raises(ConfigError, match=r"device_args.backend.*must be one of"):
        config.with_overrides({"device_args.backend": "gpu"})
    context = Context(run_id=1, node_id=1, node_config={"device": "x", "backend": "numpy"},
                      state=RecordDict(), run_config={"config-json": dump_config(config)})
    assert _config_from(context, None).device_args.backend == "numpy"


@pytest.mark.slow
def test_a_deployment_of_numpy_devices_matches_the_in_process_numpy_run(
        tmp_path: Path) -> None:
    """Real SuperNodes told ``backend="numpy"`` (``fediot client --backend numpy``) train with
    NumPy although the run says torch; the in-process engine with NumPy devices reaches the
    same global model bit for bit, and the torch run the same verdicts."""
    config_path = write_cross_silo_config(tmp_path, 2, train={"comm_round": 2},
                                          device={"backend": "torch"})
    port = free_port()
    nodes = [deployment.supernode(tmp_path / f"node{d.uci_id}", f"127.0.0.1:{port}", d.name,
                                  free_port(), max_wait_seconds=300, backend="numpy").start()
             for d in DEVICES[:2]]
    try:
        server = subprocess.run(
            [str(Path(sys.executable).with_name("fediot")), "server", "--config",
             str(config_path), "--port", str(port), "--insecure", "--flwr-home",
             str(tmp_path / "server"), "--wait", "120", "--timeout", "600"],
            capture_output=True, text=True, timeout=700, check=False,
            env={**deployment.flower_env(tmp_path / "server"), "COLUMNS": "160"})
        assert server.returncode == 0, server.stdout + server.stderr
    finally:
        for node in nodes:
            node.stop()
    deployed = np.load(next((tmp_path / "runs").glob("*/model/weights.npz")))
    base = load_config(config_path).with_overrides({
        "common_args.training_type": "simulation",
        "tracking_args.log_file_dir": str(tmp_path / "runs-inprocess")})
    light = run_federated(base.with_overrides({"device_args.backend": "numpy"}))
    for i, weights in enumerate(light.model.weights):
        np.testing.assert_array_equal(deployed[f"w{i}"], weights)
    heavy = run_federated(base)  # torch devices: float32 rounding apart, the same verdicts
    assert any(not np.array_equal(a, b)
               for a, b in zip(light.model.weights, heavy.model.weights, strict=True))
    pooled = light.evaluation.to_dict()["pooled"]["window_vote"]
    assert pooled["f1"] == pytest.approx(heavy.evaluation.to_dict()["pooled"]["window_vote"]["f1"],
                                         abs=0.01)
