"""A device-only install, for real: ``scripts/setup.sh device`` in a fresh copy of the project
resolves FedIoT's base against the package index (network needed), and the result holds no Ray,
no torch and no CUDA package, yet answers a run's tasks through the ClientApp."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from federated_data import small_run_config, write_uci_dataset
from fediot.core.config import dump_config

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
from bench_device_memory import initial_weights  # noqa: E402

FORBIDDEN = ("ray", "torch")


def _index_reachable() -> bool:
    try:
        urllib.request.urlopen("https://pypi.org/simple/flwr/", timeout=5).read(1)
    except OSError:
        return False
    return True


def _copy_project(target: Path) -> None:
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, target / name)
    for folder in ("scripts", "src", "bench"):
        shutil.copytree(REPO / folder, target / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "results", "*.egg-info"))


@pytest.mark.slow
def test_a_device_install_has_no_ray_torch_or_cuda_and_runs_a_device(tmp_path: Path) -> None:
    if not _index_reachable():
        pytest.skip("the package index (pypi.org) is unreachable from here")
    project = tmp_path / "project"
    project.mkdir()
    _copy_project(project)
    started = time.monotonic()
    done = subprocess.run(["bash", "scripts/setup.sh", "device"], cwd=project,
                          capture_output=True, text=True, timeout=1200, check=False)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    python = project / ".venv" / "bin" / "python"
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, check=True, timeout=120)
    names = {item["name"].lower() for item in json.loads(listed.stdout)}
    assert {"flwr", "numpy", "fediot"} <= names
    assert not [n for n in names if n in FORBIDDEN or n.startswith("nvidia")], sorted(names)
    print(f"device install: {seconds:.0f} s, {len(names)} packages")

    fediot = str(project / ".venv" / "bin" / "fediot")
    client_help = subprocess.run([fediot, "client", "--help"], capture_output=True, text=True,
                                 timeout=120, check=False)
    assert client_help.returncode == 0 and "--backend" in client_help.stdout
    server_side = subprocess.run([fediot, "simulate", "--rounds", "1"], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=120, check=False)
    assert server_side.returncode == 1
    assert server_side.stderr.strip().splitlines() == [
        "error: this command needs torch, which a device-only install leaves out; install "
        "FedIoT's full extra (pip install -e '.[full]', or scripts/setup.sh)"]

    dataset = write_uci_dataset(tmp_path / "nbaiot", n_devices=1, rows=600)
    config = small_run_config(dataset, **{"train_args.client_num_in_total": 1,
                                          "train_args.client_num_per_round": 1})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(dump_config(config))
    weights = tmp_path / "initial.npz"
    initial_weights(weights, config.common_args.random_seed)
    # the copy's own code as installed there; torch is simply absent: nothing blocks it
    env = {**os.environ, "PYTHONPATH": str(project / "bench")}
    ran = subprocess.run([str(python), str(project / "bench" / "bench_device_memory.py"),
                          "--child", "numpy", "--allow-torch", "--weights", str(weights),
                          "--rounds", "2", "--config", str(config_path)],
                         env=env, capture_output=True, text=True, timeout=600, check=False)
    assert ran.returncode == 0, ran.stderr[-3000:]
    result = json.loads(ran.stdout.strip().splitlines()[-1])
    assert result["backend"] == "numpy" and not result["torch_imported"]
    assert result["threshold"] > 0 and result["flagged_attack_rows"] > 0
