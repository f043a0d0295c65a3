"""Small synthetic federations for tests: separable benign/attack rows per device."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fediot.core.catalog import DEVICES, N_FEATURES
from fediot.core.config import Config
from fediot.core.federated.client import ClientData
from fediot.core.federated.messages import Reply
from fediot.core.io import write_features


class FixedReplies:
    """A pool handing back the replies it was built with, whatever it is asked (no device
    runs): the server's handling of given replies, alone."""

    def __init__(self, replies: dict[str, Reply]) -> None:
        self.replies = replies

    @property
    def client_ids(self) -> list[str]:
        return list(self.replies)

    def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]:
        return self.replies


def device_rows(uci_id: int, n: int, attack: str | None, seed: int) -> np.ndarray:
    """Heavy-tailed positive rows like N-BaIoT's; each device its own centre, attacks far off."""
    rng = np.random.default_rng([seed, uci_id, hash(attack) % 1000 if attack else 0])
    centre = np.random.default_rng(uci_id).uniform(1, 6, N_FEATURES)
    logs = centre + 0.15 * rng.standard_normal((n, N_FEATURES))
    if attack is not None:
        logs[:, : N_FEATURES // 2] += 3.0
    return np.expm1(logs).astype(np.float32)


def synthetic_clients(n_devices: int = 3, rows: int = 600, seed: int = 0) -> list[ClientData]:
    clients = []
    for device in DEVICES[:n_devices]:
        benign = device_rows(device.uci_id, rows, None, seed)
        third = rows // 3
        clients.append(ClientData(
            client_id=device.name, uci_id=device.uci_id,
            train=benign[:third], opt=benign[third: 2 * third], test_benign=benign[2 * third:],
            test_attacks={
                **({"mirai.syn": device_rows(device.uci_id, 200, "mirai.syn", seed)}
                   if device.has_mirai else {}),
                "gafgyt.udp": device_rows(device.uci_id, 150, "gafgyt.udp", seed),
            },
        ))
    return clients


def write_uci_dataset(root: Path, n_devices: int = 3, rows: int | Sequence[int] = 600,
                      seed: int = 0) -> Path:
    """The same rows as a UCI-layout folder of CSV files (what a real download gives);
    ``rows``: benign rows of every device, or of each device in turn."""
    counts = [rows] * n_devices if isinstance(rows, int) else list(rows)
    for device, benign_rows in zip(DEVICES[:n_devices], counts, strict=True):
        folder = root / device.name
        write_features(folder / "benign_traffic.csv",
                       device_rows(device.uci_id, benign_rows, None, seed))
        if device.has_mirai:
            write_features(folder / "mirai_attacks" / "syn.csv",
                           device_rows(device.uci_id, 200, "mirai.syn", seed))
        write_features(folder / "gafgyt_attacks" / "udp.csv",
                       device_rows(device.uci_id, 150, "gafgyt.udp", seed))
    return root


def small_run_config(dataset: Path, runs: Path | None = None, **overrides: object) -> Config:
    """A quick federated run over :func:`write_uci_dataset`'s devices: all three train in each
    of 2 rounds, window 5, run folders under ``runs``; any dotted key overrides
    (``**{"train_args.comm_round": 3}``)."""
    settings: dict[str, object] = {
        "data_args.dataset": "N-BaIoT", "data_args.data_cache_dir": str(dataset),
        "train_args.client_num_in_total": 3, "train_args.client_num_per_round": 3,
        "train_args.comm_round": 2, "detection_args.window": 5,
    }
    if runs is not None:
        settings["tracking_args.log_file_dir"] = str(runs)
    return Config().with_overrides({**settings, **overrides})


def write_cross_silo_config(root: Path, n_devices: int, *,
                            train: Mapping[str, object] | None = None,
                            device: Mapping[str, object] | None = None) -> Path:
    """``root/fedml_config.yaml`` for a deployment (``training_type: cross_silo``, seed 0) of
    :func:`write_uci_dataset`'s first ``n_devices`` devices (written under ``root/nbaiot``), all
    sampled every round, window 5, run folders under ``root/runs``; ``train`` adds or overrides
    ``train_args`` keys (``comm_round`` …), ``device`` gives ``device_args``."""
    data = write_uci_dataset(root / "nbaiot", n_devices=n_devices)
    document: dict[str, object] = {
        "common_args": {"training_type": "cross_silo", "random_seed": 0},
        "data_args": {"dataset": "N-BaIoT", "data_cache_dir": str(data)},
        "train_args": {"client_num_in_total": n_devices, "client_num_per_round": n_devices,
                       **(train or {})},
        "detection_args": {"window": 5},
        "tracking_args": {"log_file_dir": str(root / "runs")},
    }
    if device:
        document["device_args"] = dict(device)
    path = root / "fedml_config.yaml"
    path.write_text(yaml.safe_dump(document))
    return path
