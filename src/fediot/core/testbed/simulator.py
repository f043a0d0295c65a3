"""Capture generation: one seeded, deterministic packet capture per (device, traffic class).

What a file holds, as in N-BaIoT: the extractor sees every frame of the device's switch port
(what it sends and what it receives, broadcasts included), but a feature row is kept only for a
frame the device *sends* (source MAC = the device's, forged source addresses included). The real
rows show it: in the 3,050 real Danmini benign rows, 99.9 % of consecutive rows continue one
source's ``MI_dir`` history (their λ = 0.01 and λ = 0.1 weights decay by the same time step),
median ``MI_dir_L0.01_weight`` ≈ 30 is the decayed count of that one source's packets, yet the
``HH``/``HpHp`` magnitudes and pcc carry the answers of the device's peers (ping replies of
98 bytes, for instance), which never appear as rows. So ``n_rows`` counts sent frames; the
capture holds every frame up to the ``n_rows``-th sent one, starting at the first sent one.

A capture is simulated window by window. Window ``k`` runs every behaviour of the capture
(the device's benign behaviours, plus the bot's for an attack class) on [t_k, t_k+1) with its
own random stream, ``SeedSequence(seed, spawn_key=(device, class, 1, k, behaviour))``; values
that stay fixed for the whole capture (bound ports, phases, the command time) come from
``spawn_key=(device, class, 2, behaviour)``. Windows are added until ``n_rows`` sent frames lie
before the next window's start; the frames are then sorted and cut after the ``n_rows``-th sent
frame.

Because no behaviour puts a frame before its window's start and window length does not depend
on ``n_rows``, a smaller capture is exactly the beginning of a larger one of the same seed.

Timestamps are whole microseconds (as a classic pcap stores them) and strictly increasing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import BENIGN, OFFICIAL_ROW_COUNTS, TRAFFIC_CLASSES, Device
from fediot.core.errors import FediotError
from fediot.core.features.packets import PacketTable
from fediot.core.testbed.attacks import plan_attack
from fediot.core.testbed.devices import PROFILES, DeviceProfile
from fediot.core.testbed.frames import Behaviour, Frames, Window
from fediot.core.testbed.network import format_ips

GENERATOR_VERSION: Final[str] = "3"
"""Bumped whenever a change alters generated packets (it is part of the cache key)."""

WINDOW_PACKETS: Final[float] = 4000.0
"""Frames a simulation window should hold on average (sets the window length)."""

BENIGN_SHARE: Final[float] = 1.0
"""Benign rows at scale 1 as a share of N-BaIoT's official count: all of them, so that each
benign capture spans what the real one did (about three days, see
:data:`~fediot.core.testbed.devices.BENIGN_CAPTURE_DAYS`)."""
MIN_ATTACK_ROWS: Final[int] = 2_000
MAX_ATTACK_ROWS: Final[int] = 6_000
ATTACK_SHARE: Final[float] = 0.03
"""Attack rows at scale 1: 3 % of the official count, clipped to 2,000–6,000 (a real flood file
holds about a minute of traffic; a few seconds of it are as telling)."""
MIN_ROWS_AT_ANY_SCALE: Final[int] = 50
_MAX_WINDOWS: Final[int] = 100_000


class SimulationError(FediotError):
    """An impossible simulation request (unknown device or class, bad packet count)."""


def packet_count(uci_id: int, traffic_class: str, scale: float = 1.0) -> int:
    """Feature rows (= frames the device sends) of one file at this dataset scale.

    At scale 1: N-BaIoT's benign row count (13,113–175,240 per device), and 3 % of its attack
    row count clipped to 2,000–6,000 (about 800,000 rows in all); other scales multiply that,
    with at least 50 rows per file.
    """
    if not scale > 0:
        raise SimulationError(f"scale must be > 0, got {scale}")
    key = (uci_id, traffic_class)
    if key not in OFFICIAL_ROW_COUNTS:
        raise SimulationError(f"N-BaIoT has no {traffic_class!r} file for device {uci_id}")
    official = OFFICIAL_ROW_COUNTS[key]
    if traffic_class == BENIGN:
        base = round(BENIGN_SHARE * official)
    else:
        base = min(max(round(ATTACK_SHARE * official), MIN_ATTACK_ROWS), MAX_ATTACK_ROWS)
    return max(MIN_ROWS_AT_ANY_SCALE, round(base * scale))


@dataclass(frozen=True)
class Capture:
    """One simulated capture file.

    Parameters
    ----------
    device
        The device it was recorded at.
    traffic_class
        ``"benign"`` or an attack class such as ``"mirai.syn"``.
    packets
        Every frame of the device's port, in time order, as the extractor reads them.
    flags
        Per frame: TCP flags, ARP opcode or ICMP type (what a pcap writer needs besides the
        table's columns).
    sent
        Per frame: True where the device sent it (its source MAC is the device's); the feature
        file keeps the rows of these frames only. The first and the last frame are sent ones.
    """

    device: Device
    traffic_class: str
    packets: PacketTable
    flags: npt.NDArray[np.uint8]
    sent: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.packets)

    @property
    def n_rows(self) -> int:
        """Feature rows of the capture: frames the device sent."""
        return int(np.count_nonzero(self.sent))


def capture_start(profile: DeviceProfile, traffic_class: str, rng: np.random.Generator) -> float:
    """Epoch time a capture starts: benign in mid-September 2017, Gafgyt attacks late
    September, Mirai attacks in October (as N-BaIoT's first packets show)."""
    jitter = float(rng.uniform(0.0, 600.0))
    if traffic_class == BENIGN:
        return profile.benign_start + jitter
    botnet = traffic_class.split(".")[0]
    index = TRAFFIC_CLASSES.index(traffic_class)
    first_day = datetime(2017, 9, 22, tzinfo=UTC) if botnet == "gafgyt" else datetime(
        2017, 10, 3, tzinfo=UTC)
    day = first_day.timestamp() + 86400.0 * profile.device.uci_id
    return day + 3600.0 * (6 + index) + jitter


def simulate_capture(uci_id: int, traffic_class: str, n_rows: int, *, seed: int = 0) -> Capture:
    """The capture of ``traffic_class`` at device ``uci_id`` up to the ``n_rows``-th frame the
    device sends (every frame its port sees before that included)."""
    profile = PROFILES.get(uci_id)
    if profile is None:
        raise SimulationError(f"no N-BaIoT device {uci_id}; valid ids are 1–9")
    if traffic_class not in profile.device.traffic_classes:
        raise SimulationError(
            f"N-BaIoT has no {traffic_class!r} traffic for device {uci_id} "
            f"({profile.device.name}); its classes are {', '.join(profile.device.traffic_classes)}"
        )
    if n_rows < 1:
        raise SimulationError(f"n_rows must be ≥ 1, got {n_rows}")
    class_index = TRAFFIC_CLASSES.index(traffic_class)
    key = (int(seed), uci_id, class_index)
    constants = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(uci_id,
                                                                              class_index, 0)))
    start = capture_start(profile, traffic_class, constants)
    behaviours: tuple[Behaviour, ...] = profile.behaviours
    if traffic_class != BENIGN:
        behaviours = behaviours + plan_attack(profile, traffic_class, constants).behaviours
    frames = _simulate(profile, behaviours, start, n_rows, key)
    return _to_capture(profile, traffic_class, frames, n_rows)


def _simulate(profile: DeviceProfile, behaviours: tuple[Behaviour, ...], start: float,
              n_rows: int, key: tuple[int, int, int]) -> Frames:
    seed, uci_id, class_index = key
    rate = sum(b.rate() for b in behaviours)
    length = float(np.clip(WINDOW_PACKETS / rate, 0.25, 6 * 3600.0))
    seeds = [np.random.SeedSequence(seed, spawn_key=(uci_id, class_index, 2, b))
             for b in range(len(behaviours))]
    own_mac = np.uint64(profile.host.mac)
    parts: list[Frames] = []
    sent_before = 0  # sent frames before the current window's end (final: later windows
    pending = np.empty(0)  # only add frames after it); sent frames at or after that end
    for k in range(_MAX_WINDOWS):
        t0 = start + k * length
        t1 = t0 + length
        window_parts = []
        for b, behaviour in enumerate(behaviours):
            rng = np.random.default_rng(
                np.random.SeedSequence(seed, spawn_key=(uci_id, class_index, 1, k, b))
            )
            window = Window(t0, t1, profile.host, rng, seeds[b], start)
            window_parts.append(behaviour.emit(window))
        parts.extend(window_parts)
        sent = np.concatenate([pending, *(p.t[p.src_mac == own_mac] for p in window_parts)])
        done = (sent < t1) & (sent >= start)
        sent_before += int(np.count_nonzero(done))
        pending = sent[sent >= t1]
        if sent_before >= n_rows:
            frames = Frames.concat(parts)
            return frames.take(frames.t >= start)
    raise SimulationError(
        f"{profile.device.name}: {n_rows} rows need more than {_MAX_WINDOWS} windows"
    )


def _to_capture(profile: DeviceProfile, traffic_class: str, frames: Frames,
                n_rows: int) -> Capture:
    micros = np.round(frames.t * 1e6).astype(np.int64)
    order = np.argsort(micros, kind="stable")
    sent_in_order = frames.src_mac[order] == np.uint64(profile.host.mac)
    sent_index = np.flatnonzero(sent_in_order)
    # From the first frame the device sends to its n_rows-th (see the module docstring).
    order = order[sent_index[0]: sent_index[n_rows - 1] + 1]
    micros = micros[order]
    # Frames sharing a microsecond are spread 1 µs apart, keeping time strictly increasing.
    steps = np.arange(len(micros), dtype=np.int64)
    micros = np.maximum.accumulate(micros - steps) + steps
    chosen = frames.take(order)
    packets = PacketTable(
        timestamp=micros / 1e6,
        frame_len=chosen.length.astype(np.int64),
        src_mac=chosen.src_mac,
        dst_mac=chosen.dst_mac,
        src_ip=format_ips(chosen.src_ip),
        dst_ip=format_ips(chosen.dst_ip),
        src_port=chosen.sport.astype(np.int32),
        dst_port=chosen.dport.astype(np.int32),
        kind=chosen.kind,
        ip_proto=chosen.proto,
    )
    return Capture(profile.device, traffic_class, packets, chosen.flags,
                   chosen.src_mac == np.uint64(profile.host.mac))
