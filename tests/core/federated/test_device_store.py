"""Thousands of virtual devices from one :class:`DeviceStore`: the same rows as one split per
device (the previous code path, kept here as the oracle), each feature file mapped once, a few
kilobytes per device."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import numpy as np
import pytest

from federated_data import device_rows
from fediot.core.catalog import DEVICES, device_by_name
from fediot.core.config import Config
from fediot.core.data.layouts import TESTBED_MANIFEST, NBaIoTSource, open_dataset
from fediot.core.data.reader import FeatureMatrix
from fediot.core.data.splits import split_device
from fediot.core.errors import FediotError
from fediot.core.federated.client import ClientData
from fediot.core.federated.devices import (
    DeviceStore,
    client_ids,
    dataset_root,
    is_mapped,
    load_client_data,
    load_clients,
)
from fediot.core.federated.meter import anonymous_rss_bytes, files_held_under
from fediot.core.io import write_features
from fediot.engines.simulation import run_federated

PER_DEVICE_BYTES = 16 * 1024
"""Bound on a virtual device's own memory (its ClientData and views; ~6 kB measured)."""


def config_for(per_device: int, **overrides: object) -> Config:
    """The scale-1 testbed (N-BaIoT's row counts) cut into ``per_device`` virtual devices
    per device type, every device in the run."""
    return Config().with_overrides({
        "data_args.testbed_scale": 1.0, "data_args.virtual_devices_per_device": per_device,
        "train_args.client_num_in_total": len(DEVICES) * per_device,
        "train_args.client_num_per_round": len(DEVICES) * per_device, **overrides})


def _old_part(rows: FeatureMatrix, part: int, parts: int) -> FeatureMatrix:
    bounds = np.linspace(0, len(rows), parts + 1).round().astype(int)
    return rows[bounds[part - 1]: bounds[part]]


def old_client_data(config: Config, client_id: str, source: NBaIoTSource) -> ClientData:
    """The oracle: ``load_client_data`` before the store (one split per virtual device, its
    own memory maps, warm-up rows dropped from its own block)."""
    name, _, part_text = client_id.partition("#")
    device = device_by_name(name)
    d = config.data_args
    split = split_device(source, device.uci_id, fractions=d.split,
                         attack_cap=d.attack_cap or None, seed=config.common_args.random_seed)
    parts = d.virtual_devices_per_device
    part = int(part_text) if part_text else 1
    rule = d.warmup_rule()
    train, train_dropped = rule.steady(_old_part(split.train, part, parts))
    opt, opt_dropped = rule.steady(_old_part(split.opt, part, parts))
    return ClientData(
        client_id=client_id, uci_id=device.uci_id, train=train, opt=opt,
        test_benign=_old_part(split.test_benign, part, parts),
        test_attacks={c: _old_part(rows, part, parts) for c, rows in split.test_attacks.items()},
        warmup_dropped={"train": train_dropped, "opt": opt_dropped})


def assert_same_data(new: ClientData, old: ClientData) -> None:
    assert (new.client_id, new.uci_id) == (old.client_id, old.uci_id)
    assert dict(new.warmup_dropped) == dict(old.warmup_dropped)
    for field in ("train", "opt", "test_benign"):
        np.testing.assert_array_equal(getattr(new, field), getattr(old, field), err_msg=field)
    assert list(new.test_attacks) == list(old.test_attacks)
    for traffic_class, rows in old.test_attacks.items():
        np.testing.assert_array_equal(new.test_attacks[traffic_class], rows,
                                      err_msg=traffic_class)


@pytest.fixture(scope="module")
def testbed() -> NBaIoTSource:
    return open_dataset(dataset_root(config_for(1)))


@pytest.mark.parametrize(("per_device", "attack_cap"), [(1, 0), (10, 0), (100, 0), (10, 50)])
def test_virtual_devices_hold_the_rows_of_the_previous_code_path(
        testbed: NBaIoTSource, per_device: int, attack_cap: int) -> None:
    config = config_for(per_device, **{"data_args.attack_cap": attack_cap})
    clients = load_clients(config, source=testbed)
    assert len(clients) == len(DEVICES) * per_device
    dropped = 0
    for client in clients:
        old = old_client_data(config, client.client_id, testbed)
        assert_same_data(client, old)
        dropped += old.warmup_dropped["train"] + old.warmup_dropped["opt"]
    assert dropped > 0  # the testbed has warm-up rows: the dropping path is compared too
    # one device alone, from a store of its own, is the same too
    assert_same_data(load_client_data(config, clients[-1].client_id, testbed),
                     old_client_data(config, clients[-1].client_id, testbed))


def test_virtual_devices_share_read_only_rows(testbed: NBaIoTSource) -> None:
    store = DeviceStore(config_for(10), testbed)
    clients = store.clients([f"Danmini_Doorbell#{part}" for part in range(1, 11)])
    blocks = store.device_type(1)
    for client in clients:
        for rows, block in [(client.train, blocks.train), (client.opt, blocks.opt),
                            (client.test_benign, blocks.test_benign),
                            *((client.test_attacks[c], b) for c, b in blocks.test_attacks.items())]:
            assert np.shares_memory(rows, block.rows)  # a view, not a copy
            assert not rows.flags.writeable  # no device can change another's rows
    assert is_mapped(blocks.test_benign.rows)  # the test blocks stay on disk
    assert blocks.train.dropped.sum() == sum(c.warmup_dropped["train"] for c in clients)


def test_a_missing_part_is_one_clear_error(testbed: NBaIoTSource) -> None:
    store = DeviceStore(config_for(10), testbed)
    for bad in ("Danmini_Doorbell#11", "Danmini_Doorbell#0", "Danmini_Doorbell#x"):
        with pytest.raises(FediotError, match=f"device '{bad}': part .* of 10 does not exist"):
            store.client_data(bad)
    with pytest.raises(FediotError, match="unknown device 'Toaster#1'"):
        store.client_data("Toaster#1")


def check_many_devices(config: Config, source: NBaIoTSource) -> None:
    """Build every device of ``config`` in this process: the feature files stay mapped once
    each (file descriptors and mappings bounded by the dataset's file count, not the device
    count), and each device costs at most :data:`PER_DEVICE_BYTES` of its own."""
    gc.collect()
    held_before, anonymous_before = files_held_under(source.cache.root), anonymous_rss_bytes()
    assert held_before is not None and anonymous_before is not None, "no /proc here"
    store = DeviceStore(config, source)
    clients = store.clients(client_ids(config))
    assert len(clients) == len(DEVICES) * config.data_args.virtual_devices_per_device
    (fds, mappings), files = files_held_under(source.cache.root) or (0, 0), len(source.files)
    assert fds - held_before[0] <= files, (fds, held_before, files)
    assert 0 < mappings - held_before[1] <= files, (mappings, held_before, files)
    grown = (anonymous_rss_bytes() or 0) - anonymous_before
    shared = store.copied_bytes()
    assert grown <= shared + PER_DEVICE_BYTES * len(clients), (grown, shared, len(clients))


def test_9000_virtual_devices_map_each_file_once(testbed: NBaIoTSource) -> None:
    check_many_devices(config_for(1000), testbed)


ROWS_FOR_90000 = 31_000
"""Benign rows per device type: a third of them, ≥ 10,000, train 10,000 virtual devices."""


@pytest.fixture(scope="module")
def large_dataset(tmp_path_factory: pytest.TempPathFactory) -> NBaIoTSource:
    """A testbed-layout data set with enough benign rows per device type for 10,000 virtual
    devices each (the scale-1 testbed's smallest device has 13,113)."""
    root = tmp_path_factory.mktemp("large")
    for device in DEVICES:
        folder = root / device.name
        write_features(folder / "benign_traffic.parquet",
                       device_rows(device.uci_id, ROWS_FOR_90000, None, seed=3))
        write_features(folder / "gafgyt_attacks" / "udp.parquet",
                       device_rows(device.uci_id, 2_000, "gafgyt.udp", seed=3))
    (root / TESTBED_MANIFEST).write_text(json.dumps({"generator": "test"}), encoding="utf-8")
    return open_dataset(root)


@pytest.mark.slow
def test_90000_virtual_devices_map_each_file_once(large_dataset: NBaIoTSource) -> None:
    config = Config().with_overrides({
        "data_args.dataset": "N-BaIoT", "data_args.data_cache_dir": str(large_dataset.root),
        "data_args.virtual_devices_per_device": 10_000, "data_args.warmup_min_history": 0,
        "train_args.client_num_in_total": 90_000, "train_args.client_num_per_round": 90_000})
    check_many_devices(config, large_dataset)


@pytest.mark.slow
def test_the_in_process_engine_runs_a_round_of_9000_virtual_devices(tmp_path: Path) -> None:
    config = config_for(1000, **{
        "train_args.comm_round": 1, "train_args.client_num_per_round": 90,
        "detection_args.window": 0, "tracking_args.log_file_dir": str(tmp_path),
        "device_args.min_rows_for_statistics": 1})  # devices of 2 to 175 rows: all report
    result = run_federated(config)
    assert len(result.history) == 1 and len(result.history[0].clients) == 90
    assert len(result.evaluation.devices) == 9000
