"""Which devices take part in a run and what data each holds.

A client is a device: ``Danmini_Doorbell``, ``Ecobee_Thermostat``, …; with
``virtual_devices_per_device = k`` each device type's rows are cut into k consecutive blocks,
``Danmini_Doorbell#1`` … ``#k``, each a device of its own (every split cut the same way), so a
federation of hundreds of devices can be simulated from N-BaIoT's nine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from fediot.core.catalog import DEVICES, device_by_name
from fediot.core.config import Config
from fediot.core.data.layouts import NBaIoTSource, open_dataset
from fediot.core.data.reader import FeatureMatrix
from fediot.core.data.splits import split_device
from fediot.core.errors import FediotError

if TYPE_CHECKING:  # the client imports torch; dataset_root and client_ids must stay light
    from fediot.core.federated.client import ClientData


def client_ids(config: Config) -> list[str]:
    """The ``client_num_in_total`` devices of the run, in catalogue order."""
    k = config.data_args.virtual_devices_per_device
    ids = [d.name if k == 1 else f"{d.name}#{part}" for d in DEVICES for part in range(1, k + 1)]
    return ids[: config.train_args.client_num_in_total]


def dataset_root(config: Config) -> Path:
    """Folder of the run's dataset: the real N-BaIoT, or the testbed (built on first use)."""
    d = config.data_args
    if d.dataset == "N-BaIoT":
        return Path(d.data_cache_dir).expanduser()
    from fediot.core.testbed import build_testbed  # heavy import only when needed

    cache = Path(d.data_cache_dir).expanduser() if d.data_cache_dir else None
    return build_testbed(seed=d.testbed_seed, scale=d.testbed_scale, cache_dir=cache).root


def _part(rows: FeatureMatrix, part: int, parts: int) -> FeatureMatrix:
    bounds = np.linspace(0, len(rows), parts + 1).round().astype(int)
    return rows[bounds[part - 1]: bounds[part]]


def load_client_data(config: Config, client_id: str,
                     source: NBaIoTSource | None = None) -> ClientData:
    """One device's data as its client holds it (splits in time order, attacks test-only)."""
    from fediot.core.federated.client import ClientData

    name, _, part_text = client_id.partition("#")
    try:
        device = device_by_name(name)
    except KeyError as error:
        raise FediotError(f"unknown device {client_id!r}: {error.args[0]}") from None
    source = source or open_dataset(dataset_root(config))
    d = config.data_args
    split = split_device(source, device.uci_id, fractions=d.split,
                         attack_cap=d.attack_cap or None, seed=config.common_args.random_seed)
    parts = d.virtual_devices_per_device
    part = int(part_text) if part_text else 1
    if not 1 <= part <= parts:
        raise FediotError(f"device {client_id!r}: part {part} of {parts} does not exist")
    # warm-up rows leave the fitting splits only; test rows are scored as they come
    rule = d.warmup_rule()
    train, train_dropped = rule.steady(_part(split.train, part, parts))
    opt, opt_dropped = rule.steady(_part(split.opt, part, parts))
    if len(train) == 0 or len(opt) == 0:
        raise FediotError(
            f"device {client_id!r}: no {'training' if len(train) == 0 else 'threshold'} rows "
            f"left after dropping warm-up rows (data_args.warmup_min_history = "
            f"{d.warmup_min_history})")
    return ClientData(
        client_id=client_id,
        uci_id=device.uci_id,
        train=train,
        opt=opt,
        test_benign=_part(split.test_benign, part, parts),
        test_attacks={c: _part(rows, part, parts) for c, rows in split.test_attacks.items()},
        warmup_dropped={"train": train_dropped, "opt": opt_dropped},
    )


def pooled_client_data(clients: list[ClientData]) -> ClientData:
    """All devices' training and threshold rows as one client (the centralised baseline)."""
    from fediot.core.federated.client import ClientData

    return ClientData(
        client_id="centralised",
        uci_id=0,
        train=np.concatenate([c.train for c in clients]),
        opt=np.concatenate([c.opt for c in clients]),
        test_benign=np.empty((0, clients[0].train.shape[1]), dtype=np.float32),
        test_attacks={},
        warmup_dropped={split: sum(c.warmup_dropped.get(split, 0) for c in clients)
                        for split in ("train", "opt")},
    )
