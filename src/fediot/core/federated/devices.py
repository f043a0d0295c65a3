"""Which devices take part in a run and what data each holds.

A client is a device: ``Danmini_Doorbell``, ``Ecobee_Thermostat``, …; with
``virtual_devices_per_device = k`` each device type's rows are cut into k consecutive blocks,
``Danmini_Doorbell#1`` … ``#k``, each a device of its own (every split cut the same way), so a
federation of thousands of devices can be simulated from N-BaIoT's nine.

A :class:`DeviceStore` splits each real device type once per process and hands its virtual
devices views of the shared rows: 9,000 or 90,000 virtual devices keep the ~90 feature files
mapped once each, not once per device (which ran out of file descriptors at 9,000).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import DEVICES, device_by_name
from fediot.core.config import Config
from fediot.core.data.layouts import NBaIoTSource, open_dataset
from fediot.core.data.reader import FeatureMatrix
from fediot.core.data.splits import split_device
from fediot.core.errors import FediotError
from fediot.core.features.warmup import WarmupRule

if TYPE_CHECKING:  # the client imports torch; dataset_root and client_ids must stay light
    from collections.abc import Iterable

    from fediot.core.federated.client import ClientData

RowBounds = npt.NDArray[np.int64]
"""Ascending row numbers ``b``: virtual device ``p`` (1-based) holds rows ``[b[p-1], b[p])``."""


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


def part_bounds(n_rows: int, parts: int) -> RowBounds:
    """Where ``n_rows`` consecutive rows are cut into ``parts`` virtual devices' blocks
    (``parts + 1`` bounds, from 0 to ``n_rows``; block sizes differ by at most one row)."""
    bounds: RowBounds = np.linspace(0, n_rows, parts + 1).round().astype(np.int64)
    return bounds


def is_mapped(rows: npt.NDArray[np.generic]) -> bool:
    """Whether ``rows`` is (a view of) a memory-mapped file rather than process memory."""
    base: object = rows
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap):
            return True
        base = base.base
    return isinstance(base, mmap.mmap)


@dataclass(frozen=True)
class SharedBlock:
    """One block of a device type's rows (a split or an attack class), shared by its virtual
    devices: device ``p`` (1-based) holds ``rows[starts[p-1]:starts[p]]``, a view.

    Parameters
    ----------
    rows
        The block's read-only rows: a view of the memory-mapped feature file, or (for the
        fitting splits, when warm-up rows were dropped; for capped attack classes) one
        in-memory copy made once for every virtual device.
    starts
        ``parts + 1`` ascending row numbers into ``rows``.
    dropped
        Warm-up rows each virtual device lost from this block (``parts`` counts; all zero for
        the test blocks, whose rows are scored as they come).
    """

    rows: FeatureMatrix
    starts: RowBounds
    dropped: npt.NDArray[np.int64]

    def part(self, part: int) -> FeatureMatrix:
        """Virtual device ``part``'s rows (1-based), a view of :attr:`rows`."""
        return self.rows[self.starts[part - 1]: self.starts[part]]

    @classmethod
    def cut(cls, rows: FeatureMatrix, parts: int) -> SharedBlock:
        """``rows`` cut into ``parts`` consecutive blocks, nothing dropped."""
        return cls(rows, part_bounds(len(rows), parts), np.zeros(parts, dtype=np.int64))

    @classmethod
    def cut_steady(cls, rows: FeatureMatrix, parts: int, rule: WarmupRule) -> SharedBlock:
        """``rows`` cut into ``parts`` consecutive blocks, then each block's warm-up rows
        (``rule``) dropped: the rows ``rule.steady`` leaves of each block, in order. The rule
        looks at each row alone, so it runs once over all rows, and a block's steady rows are
        a range of the steady rows of the whole."""
        bounds = part_bounds(len(rows), parts)
        warmup = rule.no_history(rows)
        if not warmup.any():
            return cls(rows, bounds, np.zeros(parts, dtype=np.int64))
        steady = rows[~warmup]
        steady.flags.writeable = False  # shared by every virtual device: none may change it
        kept_before = np.concatenate(([0], np.cumsum(~warmup, dtype=np.int64)))
        starts: RowBounds = kept_before[bounds]
        return cls(steady, starts, np.diff(bounds) - np.diff(starts))


@dataclass(frozen=True)
class DeviceTypeBlocks:
    """A real device type's split (:func:`~fediot.core.data.splits.split_device`), each block
    cut into the run's virtual devices.

    Parameters
    ----------
    uci_id
        The device type.
    train, opt
        Fitting splits, warm-up rows dropped.
    test_benign
        Benign test rows.
    test_attacks
        Attack class → its test rows.
    """

    uci_id: int
    train: SharedBlock
    opt: SharedBlock
    test_benign: SharedBlock
    test_attacks: dict[str, SharedBlock]


class DeviceStore:
    """The devices' data of one run in one process: each real device type split once, its
    feature files mapped once, and its virtual devices' :class:`ClientData` views of them.

    Parameters
    ----------
    config
        The run's configuration (``data_args``: dataset, split, attack cap, virtual devices,
        warm-up rule; ``common_args.random_seed``: the attack subsets).
    source
        The dataset; default :func:`open_dataset` of :func:`dataset_root`, opened on first use.
    """

    def __init__(self, config: Config, source: NBaIoTSource | None = None) -> None:
        self.config = config
        self._source = source
        self._types: dict[int, DeviceTypeBlocks] = {}

    @property
    def source(self) -> NBaIoTSource:
        """The dataset (opened, and the testbed built, on first use)."""
        if self._source is None:
            self._source = open_dataset(dataset_root(self.config))
        return self._source

    def device_type(self, uci_id: int) -> DeviceTypeBlocks:
        """Device type ``uci_id``'s blocks, split on first use and kept."""
        blocks = self._types.get(uci_id)
        if blocks is None:
            d = self.config.data_args
            split = split_device(self.source, uci_id, fractions=d.split,
                                 attack_cap=d.attack_cap or None,
                                 seed=self.config.common_args.random_seed)
            parts, rule = d.virtual_devices_per_device, d.warmup_rule()
            # warm-up rows leave the fitting splits only; test rows are scored as they come
            blocks = DeviceTypeBlocks(
                uci_id=uci_id,
                train=SharedBlock.cut_steady(split.train, parts, rule),
                opt=SharedBlock.cut_steady(split.opt, parts, rule),
                test_benign=SharedBlock.cut(split.test_benign, parts),
                test_attacks={c: SharedBlock.cut(rows, parts)
                              for c, rows in split.test_attacks.items()},
            )
            self._types[uci_id] = blocks
        return blocks

    def client_data(self, client_id: str) -> ClientData:
        """One device's data as its client holds it (splits in time order, attacks test-only):
        views of its device type's shared rows, no copies."""
        from fediot.core.federated.client import ClientData

        name, _, part_text = client_id.partition("#")
        try:
            device = device_by_name(name)
        except KeyError as error:
            raise FediotError(f"unknown device {client_id!r}: {error.args[0]}") from None
        d = self.config.data_args
        parts = d.virtual_devices_per_device
        part = int(part_text) if part_text.isdigit() else 0 if part_text else 1
        if not 1 <= part <= parts:
            raise FediotError(f"device {client_id!r}: part {part_text} of {parts} does not exist")
        blocks = self.device_type(device.uci_id)
        train, opt = blocks.train.part(part), blocks.opt.part(part)
        if len(train) == 0 or len(opt) == 0:
            raise FediotError(
                f"device {client_id!r}: no {'training' if len(train) == 0 else 'threshold'} "
                f"rows left after dropping warm-up rows (data_args.warmup_min_history = "
                f"{d.warmup_min_history}, data_args.virtual_devices_per_device = {parts})")
        return ClientData(
            client_id=client_id,
            uci_id=device.uci_id,
            train=train,
            opt=opt,
            test_benign=blocks.test_benign.part(part),
            test_attacks={c: block.part(part) for c, block in blocks.test_attacks.items()},
            warmup_dropped={"train": int(blocks.train.dropped[part - 1]),
                            "opt": int(blocks.opt.dropped[part - 1])},
        )

    def copied_bytes(self) -> int:
        """Bytes of the rows this store holds in memory, not mapped from the cache: the
        fitting splits of the device types that dropped warm-up rows, capped attack classes
        (once per device type, whatever the number of virtual devices)."""
        return sum(block.rows.nbytes
                   for blocks in self._types.values()
                   for block in (blocks.train, blocks.opt, blocks.test_benign,
                                 *blocks.test_attacks.values())
                   if not is_mapped(block.rows))

    def clients(self, ids: Iterable[str]) -> list[ClientData]:
        """:meth:`client_data` of each of ``ids``, in order."""
        return [self.client_data(client_id) for client_id in ids]


def load_client_data(config: Config, client_id: str,
                     source: NBaIoTSource | None = None) -> ClientData:
    """One device's data as its client holds it (splits in time order, attacks test-only).

    For many devices, :func:`load_clients` (or one :class:`DeviceStore`) shares their rows."""
    return DeviceStore(config, source).client_data(client_id)


def load_clients(config: Config, ids: Iterable[str] | None = None,
                 source: NBaIoTSource | None = None) -> list[ClientData]:
    """The data of devices ``ids`` (default: the run's :func:`client_ids`), from one
    :class:`DeviceStore`: each device type's files mapped once, whatever the device count."""
    return DeviceStore(config, source).clients(client_ids(config) if ids is None else ids)


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
