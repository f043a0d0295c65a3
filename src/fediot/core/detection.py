"""Live detection: packets → features → anomaly scores → per-device window votes → verdicts.

:class:`StreamingDetector` chains the streaming feature extractor, a fitted detector per device
(anything with ``score_samples`` and ``threshold_``, e.g. a run's
:class:`~fediot.core.model.detector.AutoencoderDetector`) and N-BaIoT's majority vote over the
trailing ``window`` packets of each device (:func:`fediot.core.metrics.window.window_vote`, fed
each device's last ``window − 1`` flags so a stream cut into batches votes as one array would).

Which device a packet belongs to is the caller's ``device_of(packet)``:

- N-BaIoT's setting is one device per capture (features were computed on each device's port
  mirror), so ``lambda packet: "Danmini_Doorbell"`` is the usual choice (``--device``);
- a :class:`DeviceMap` maps MAC and IP addresses to devices (source first, then destination),
  for a capture of a whole network (``--devices``);
- a packet of no known device is scored against :data:`UNKNOWN_DEVICE`'s detector (the CLI
  gives it the run's global threshold) and voted on as one more stream.

:func:`eve_record` turns a verdict into a Suricata-EVE-style JSON object for a SIEM.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import N_FEATURES, device_by_name
from fediot.core.errors import FediotError
from fediot.core.features.extractor import FeatureExtractor
from fediot.core.features.packets import (
    IP_PROTO_ICMP,
    IP_PROTO_ICMPV6,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    KIND_ARP,
    KIND_OTHER,
    Packet,
    PacketTable,
    int_to_mac,
    mac_to_int,
)
from fediot.core.features.warmup import WarmupRule
from fediot.core.metrics.window import window_vote
from fediot.core.safe_yaml import (
    InvalidDocumentError,
    UnsafeInputError,
    load_json,
    load_yaml,
    read_text,
)

UNKNOWN_DEVICE = "unknown"
"""The device of a packet ``device_of`` does not attribute."""

_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-])[0-9A-Fa-f]{2}(\1[0-9A-Fa-f]{2}){4}$")
_PROTO_NAMES = {IP_PROTO_TCP: "TCP", IP_PROTO_UDP: "UDP", IP_PROTO_ICMP: "ICMP",
                IP_PROTO_ICMPV6: "IPv6-ICMP"}


class DetectionError(FediotError):
    """A detection input that cannot be used: a bad device map, an unknown device, a detector
    without a threshold."""


class Scorer(Protocol):
    """What :class:`StreamingDetector` needs of a detector: per-row anomaly scores and the
    threshold above which a row is anomalous."""

    threshold_: float

    def score_samples(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]: ...


def resolve_device(name: str, known: Collection[str]) -> str:
    """``name`` as one of ``known`` (a run's client ids, e.g. ``Danmini_Doorbell`` or
    ``Danmini_Doorbell#2``): exact, or a catalog device name in any case.

    Raises :class:`DetectionError` naming the problem: not an N-BaIoT device at all, or a
    device the run has no threshold for.
    """
    if name in known:
        return name
    base, sep, part = name.partition("#")
    try:
        canonical = device_by_name(base).name + sep + part
    except KeyError:
        raise DetectionError(
            f"unknown device {name!r}: not an N-BaIoT device name or client id "
            f"(the run has {sorted(known)})"
        ) from None
    if canonical in known:
        return canonical
    raise DetectionError(
        f"device {name!r}: the run has no threshold for it (it has {sorted(known)})"
    )


class DeviceMap:
    """Which device a packet belongs to, by its MAC or IP addresses.

    A packet belongs to the device of its source MAC, else its source IP, else its
    destination MAC, else its destination IP (traffic *to* a device is part of its port
    mirror too); ``None`` if no address is mapped.

    Parameters
    ----------
    addresses
        Address → device name. Addresses are MACs (``aa:bb:cc:dd:ee:ff`` or with ``-``) or
        IPv4/IPv6 addresses (any spelling; compared in canonical form).
    source
        Where the mapping came from, to name it in errors (default ``"device map"``).
    """

    def __init__(self, addresses: Mapping[str, str], source: str = "device map") -> None:
        self.source = source
        self._macs: dict[int, str] = {}
        self._ips: dict[str, str] = {}
        if not addresses:
            raise DetectionError(f"{source}: no addresses")
        for address, device in addresses.items():
            if not isinstance(address, str) or not isinstance(device, str) or not device:
                raise DetectionError(
                    f"{source}: key {address!r}: expected 'address: device name' strings, "
                    f"got {device!r}"
                )
            text = address.strip()
            if _MAC.match(text):
                self._macs[mac_to_int(text.replace("-", ":"))] = device
                continue
            try:
                self._ips[ipaddress.ip_address(text).compressed] = device
            except ValueError:
                raise DetectionError(
                    f"{source}: key {address!r} is neither a MAC nor an IP address"
                ) from None

    @classmethod
    def load(cls, path: str | Path) -> DeviceMap:
        """Read a JSON or YAML file holding one mapping ``address: device name``."""
        path = Path(path)
        load = load_json if path.suffix.lower() == ".json" else load_yaml
        try:  # size, encoding, nesting and alias limits: the file may come from anywhere
            data = load(read_text(path), str(path))
        except InvalidDocumentError as error:
            raise DetectionError(f"{path}: not valid JSON/YAML ({error.problem})") from None
        except UnsafeInputError as error:
            raise DetectionError(str(error)) from None
        if not isinstance(data, dict):
            raise DetectionError(
                f"{path}: expected a mapping 'address: device name', got {type(data).__name__}"
            )
        return cls(data, source=str(path))

    @property
    def devices(self) -> set[str]:
        """The device names the map uses."""
        return set(self._macs.values()) | set(self._ips.values())

    def resolved(self, known: Collection[str]) -> DeviceMap:
        """This map with every device name resolved by :func:`resolve_device` against
        ``known``; an error names the map and the address."""
        renamed: dict[str, str] = {}
        entries = [(int_to_mac(mac), device) for mac, device in self._macs.items()]
        entries += list(self._ips.items())
        for address, device in entries:
            try:
                renamed[address] = resolve_device(device, known)
            except DetectionError as error:
                raise DetectionError(f"{self.source}: {address}: {error}") from None
        return DeviceMap(renamed, source=self.source)

    def __call__(self, packet: Packet) -> str | None:
        macs, ips = self._macs, self._ips
        return (macs.get(packet.src_mac) or ips.get(packet.src_ip)
                or macs.get(packet.dst_mac) or ips.get(packet.dst_ip))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the detector concluded about one packet.

    Parameters
    ----------
    index
        0-based number of the packet among those the detector has seen.
    packet
        The packet.
    device
        Its device (:data:`UNKNOWN_DEVICE` if unattributed).
    score, threshold
        Its anomaly score and its device's threshold.
    anomalous
        ``score > threshold``.
    attack
        The window vote: more than half of the device's last ``voters`` packets (this one
        included) were anomalous.
    votes, voters
        Anomalous packets among the device's last ``voters = min(seen, window)`` packets.
    window
        Packets per vote.
    settling
        The packet came while the detector's extractor was still settling (within the warm-up
        rule's ``settle_seconds`` of its first packet): every source was new to it, so its
        alert, if any, was held back (``attack`` is then False).
    """

    index: int
    packet: Packet
    device: str
    score: float
    threshold: float
    anomalous: bool
    attack: bool
    votes: int
    voters: int
    window: int
    settling: bool = False


class _DeviceVote:
    """One device's window vote across batches: its last ``window − 1`` flags are prepended
    to each batch, so :func:`window_vote` sees the stream as one array would show it."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.tail = np.zeros(0, dtype=np.bool_)
        self.seen = 0

    def vote(
        self, flags: npt.NDArray[np.bool_]
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Verdicts, votes and voters of the next ``flags`` of this device."""
        window = self.window
        joined = np.concatenate([self.tail, flags])
        skip = len(self.tail)
        verdicts = window_vote(joined, window)[skip:]
        running = np.cumsum(joined, dtype=np.int64)
        votes = running.copy()
        votes[window:] -= running[:-window]
        voters = np.minimum(np.arange(self.seen + 1, self.seen + len(flags) + 1), window)
        self.tail = joined[max(0, len(joined) - (window - 1)):] if window > 1 else self.tail
        self.seen += len(flags)
        return verdicts, votes[skip:], voters


class StreamingDetector:
    """Anomaly verdicts for a stream of packets, batch by batch (:meth:`process`) or one packet
    at a time (:meth:`update`); the state carries over, so any split gives the same verdicts.

    Parameters
    ----------
    detector_for_device
        Device name → its :class:`Scorer` (a callable or a mapping), asked once per device;
        :data:`UNKNOWN_DEVICE` is asked for the packets ``device_of`` does not attribute.
    window
        Packets per majority vote, per device (≥ 1; 1 = no vote).
    windows
        Device → its own window, overriding ``window`` for that device (a run that chose
        each device's ws* on its threshold rows).
    device_of
        Packet → device name or ``None`` (default: every packet is :data:`UNKNOWN_DEVICE`).
    extractor
        The feature extractor to feed (default: a fresh :class:`FeatureExtractor`).
    warmup
        The :class:`~fediot.core.features.warmup.WarmupRule` whose ``settle_seconds`` hold back
        alerts after the first packet of a fresh extractor (default ``WarmupRule()``: 100 s;
        ``None``: none). Every packet is still scored and voted on.

    Attributes
    ----------
    packets_seen
        Packets processed so far.
    packets_per_device, anomalous_per_device, alerts_per_device
        :class:`collections.Counter` per device: packets, packets above the threshold,
        packets the window vote calls an attack (held-back alerts not counted).
    settling_per_device
        :class:`collections.Counter` per device of packets seen while settling.
    """

    def __init__(
        self,
        detector_for_device: Callable[[str], Scorer] | Mapping[str, Scorer],
        window: int,
        device_of: Callable[[Packet], str | None] | None = None,
        *,
        extractor: FeatureExtractor | None = None,
        warmup: WarmupRule | None = WarmupRule(),  # noqa: B008 (frozen, so sharing is safe)
        windows: Mapping[str, int] | None = None,
    ) -> None:
        self.windows = dict(windows or {})
        for name, size in [("window", window), *self.windows.items()]:
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise DetectionError(f"window of {name!r} must be a positive integer; "
                                     f"got {size!r}")
        self.warmup = warmup or WarmupRule.off()
        self._first_time: float | None = None
        self.window = window
        self._detector_for_device = detector_for_device
        self._device_of = device_of
        self.extractor = extractor or FeatureExtractor()
        if self.extractor.packets_seen:  # an extractor with history has nothing to settle
            self._first_time = -np.inf
        self._scorers: dict[str, Scorer] = {}
        self._votes: dict[str, _DeviceVote] = {}
        self.packets_seen = 0
        self.packets_per_device: Counter[str] = Counter()
        self.anomalous_per_device: Counter[str] = Counter()
        self.alerts_per_device: Counter[str] = Counter()
        self.settling_per_device: Counter[str] = Counter()

    def scorer(self, device: str) -> Scorer:
        """The detector ``device``'s packets are scored with (asked for once, then kept)."""
        scorer = self._scorers.get(device)
        if scorer is None:
            source = self._detector_for_device
            if isinstance(source, Mapping):
                if device not in source:
                    raise DetectionError(
                        f"no detector for device {device!r} (have {sorted(source)})"
                    )
                scorer = source[device]
            else:
                scorer = source(device)
            threshold = getattr(scorer, "threshold_", None)
            if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.number):
                raise DetectionError(f"the detector of device {device!r} has no threshold_")
            if not np.isfinite(threshold):
                raise DetectionError(
                    f"the detector of device {device!r} has a non-finite threshold {threshold}"
                )
            self._scorers[device] = scorer
        return scorer

    @property
    def devices(self) -> list[str]:
        """The devices whose detector has been asked for so far."""
        return list(self._scorers)

    def _device(self, packet: Packet) -> str:
        if self._device_of is None:
            return UNKNOWN_DEVICE
        return self._device_of(packet) or UNKNOWN_DEVICE

    def process(self, packets: PacketTable, *, alerts_only: bool = False) -> list[Verdict]:
        """Verdicts for ``packets`` (the next ones, in capture order), scored per device in
        one batch each; with ``alerts_only`` just those whose window vote says attack."""
        features = self.extractor.process(packets)
        return self.judge(features, list(packets.rows()), alerts_only=alerts_only)

    def update(self, packet: Packet) -> Verdict:
        """The verdict for the next single packet (live traffic: the scalar extractor path)."""
        features = self.extractor.update_packet(packet)
        return self.judge(features[np.newaxis], [packet])[0]

    def judge(
        self,
        features: npt.NDArray[np.float64],
        packets: Sequence[Packet],
        *,
        alerts_only: bool = False,
    ) -> list[Verdict]:
        """Verdicts for packets whose features were already extracted (rows of ``features``,
        in the order of ``packets``, continuing this detector's stream)."""
        n = len(packets)
        if features.shape != (n, N_FEATURES):
            raise DetectionError(
                f"features must have shape ({n}, {N_FEATURES}) for {n} packets; "
                f"got {features.shape}"
            )
        devices = [self._device(packet) for packet in packets]
        if n and self._first_time is None:
            self._first_time = float(packets[0].timestamp)
        settling = self.warmup.settling(
            np.fromiter((p.timestamp for p in packets), dtype=np.float64, count=n),
            self._first_time if self._first_time is not None else 0.0)
        scores = np.empty(n, dtype=np.float64)
        thresholds = np.empty(n, dtype=np.float64)
        anomalous = np.empty(n, dtype=np.bool_)
        attack = np.empty(n, dtype=np.bool_)
        votes = np.empty(n, dtype=np.int64)
        voters = np.empty(n, dtype=np.int64)
        for device, rows in _group_rows(devices).items():
            scorer = self.scorer(device)
            threshold = float(scorer.threshold_)
            device_scores = np.asarray(scorer.score_samples(features[rows]), dtype=np.float64)
            flags = device_scores > threshold
            vote = self._votes.get(device)
            if vote is None:
                vote = self._votes[device] = _DeviceVote(self.windows.get(device,
                                                                          self.window))
            attack[rows], votes[rows], voters[rows] = vote.vote(flags)
            attack[rows] &= ~settling[rows]  # alerts held back while the extractor settles
            self.settling_per_device[device] += int(settling[rows].sum())
            scores[rows] = device_scores
            thresholds[rows] = threshold
            anomalous[rows] = flags
            self.packets_per_device[device] += len(rows)
            self.anomalous_per_device[device] += int(flags.sum())
            self.alerts_per_device[device] += int(attack[rows].sum())
        start = self.packets_seen
        self.packets_seen += n
        chosen: Iterable[int] = np.flatnonzero(attack).tolist() if alerts_only else range(n)
        return [
            Verdict(start + i, packets[i], devices[i], float(scores[i]), float(thresholds[i]),
                    bool(anomalous[i]), bool(attack[i]), int(votes[i]), int(voters[i]),
                    self._votes[devices[i]].window, bool(settling[i]))
            for i in chosen
        ]


def _group_rows(devices: Sequence[str]) -> dict[str, npt.NDArray[np.intp]]:
    """Device → its rows, in order (one group, the usual case, without a Python loop)."""
    first = devices[0] if devices else UNKNOWN_DEVICE
    if all(device == first for device in devices):
        return {first: np.arange(len(devices))} if devices else {}
    groups: dict[str, list[int]] = {}
    for row, device in enumerate(devices):
        groups.setdefault(device, []).append(row)
    return {device: np.asarray(rows, dtype=np.intp) for device, rows in groups.items()}


def eve_timestamp(seconds: float) -> str:
    """Seconds since the epoch → EVE's ``2024-05-01T12:00:00.123456+0000`` (UTC)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f%z")


WINDOW_VOTE_SIGNATURE_ID: Final[int] = 1_000_001
"""The ``signature_id`` of FedIoT's one alert rule, the window vote (more than half of a
device's last ``window`` packets scored above its threshold), in Suricata's range for local
rules (1,000,000–1,999,999): stable, so a SIEM can key on it."""


def eve_record(
    verdict: Verdict,
    *,
    run_id: str,
    model_version: str | None,
    interface: str | None = None,
    suppressed: int = 0,
) -> dict[str, Any]:
    """One verdict as a Suricata-EVE-style event.

    ``event_type`` is ``"alert"`` when the window vote says attack (with an EVE ``alert``
    object), ``"verdict"`` otherwise. The standard fields (``timestamp`` of the packet,
    ``in_iface``, ``src_ip``, ``src_port``, ``dest_ip``, ``dest_port``, ``proto``, ``ether``)
    appear when the packet has them: no ports without TCP/UDP, no IPs without IP or ARP (ARP
    carries its sender and target protocol addresses). The alert names its rule, the window
    vote, by :data:`WINDOW_VOTE_SIGNATURE_ID`. Ours are under ``"fediot"``: ``device``,
    ``packet`` (its number), the per-packet rule (``score``, ``threshold``,
    ``score_above_threshold``), the window vote (``window_vote``: ``attack``, and
    ``above_threshold`` packets among the device's last ``packets``, of at most ``window``),
    ``model_version`` and ``run``; ``suppressed`` counts the alerts of this device not written
    since its previous line (rate limiting), ``settling`` marks a held-back alert.
    """
    packet = verdict.packet
    record: dict[str, Any] = {
        "timestamp": eve_timestamp(packet.timestamp),
        "event_type": "alert" if verdict.attack else "verdict",
    }
    if interface is not None:
        record["in_iface"] = interface
    if packet.src_ip:
        record["src_ip"] = packet.src_ip
    if packet.src_port >= 0:
        record["src_port"] = packet.src_port
    if packet.dst_ip:
        record["dest_ip"] = packet.dst_ip
    if packet.dst_port >= 0:
        record["dest_port"] = packet.dst_port
    if packet.kind == KIND_ARP:
        record["proto"] = "ARP"
    elif packet.kind != KIND_OTHER:
        record["proto"] = _PROTO_NAMES.get(packet.ip_proto, str(packet.ip_proto))
    if packet.src_mac or packet.dst_mac:
        record["ether"] = {"src_mac": int_to_mac(packet.src_mac),
                           "dest_mac": int_to_mac(packet.dst_mac)}
    if verdict.attack:
        record["alert"] = {
            "action": "allowed",
            "gid": 1,
            "signature_id": WINDOW_VOTE_SIGNATURE_ID,
            "rev": 1,
            "signature": f"FEDIOT window vote: most of the last {verdict.voters} packets of "
                         f"device {verdict.device} scored above its threshold",
            "category": "Anomalous IoT device traffic",
            "severity": 2,
        }
    fediot: dict[str, Any] = {
        "device": verdict.device,
        "packet": verdict.index,
        "score": verdict.score,
        "threshold": verdict.threshold,
        "score_above_threshold": verdict.anomalous,
        "window_vote": {"attack": verdict.attack, "above_threshold": verdict.votes,
                        "packets": verdict.voters, "window": verdict.window},
        "model_version": model_version,
        "run": run_id,
    }
    if suppressed:
        fediot["suppressed"] = suppressed
    if verdict.settling:
        fediot["settling"] = True
    record["fediot"] = fediot
    return record
