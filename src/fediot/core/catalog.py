"""The N-BaIoT catalogue: the one source of truth for feature names, devices and traffic classes.

Everything else in FedIoT (extractor, testbed, readers, CLI) imports these constants; nothing
re-declares them.

Feature layout (Meidan et al. 2018, Kitsune's AfterImage): five stream kinds, each tracked at
five decay factors λ (decay 2^(−λ·Δt)), in this order:

- ``MI_dir``  source MAC + IP, 1-D: weight, mean, variance
- ``H``       source IP, 1-D: weight, mean, variance
- ``HH``      channel src IP → dst IP, 2-D: weight, mean, std, magnitude, radius, covariance, pcc
- ``HH_jit``  channel inter-arrival time, 1-D: weight, mean, variance
- ``HpHp``    socket src IP:port → dst IP:port, 2-D: as ``HH``

3·5 + 3·5 + 7·5 + 3·5 + 7·5 = 115 columns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

LAMBDAS: Final[tuple[float, ...]] = (5.0, 3.0, 1.0, 0.1, 0.01)
"""Decay factors, in N-BaIoT column order."""

LAMBDA_LABELS: Final[tuple[str, ...]] = ("5", "3", "1", "0.1", "0.01")

STATS_1D: Final[tuple[str, ...]] = ("weight", "mean", "variance")
STATS_2D: Final[tuple[str, ...]] = (
    "weight", "mean", "std", "magnitude", "radius", "covariance", "pcc"
)

STREAMS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("MI_dir", STATS_1D),
    ("H", STATS_1D),
    ("HH", STATS_2D),
    ("HH_jit", STATS_1D),
    ("HpHp", STATS_2D),
)
"""Stream kinds with the statistics each reports, in column order."""


def _feature_names() -> tuple[str, ...]:
    return tuple(
        f"{stream}_L{label}_{stat}"
        for stream, stats in STREAMS
        for label in LAMBDA_LABELS
        for stat in stats
    )


FEATURE_NAMES: Final[tuple[str, ...]] = _feature_names()
N_FEATURES: Final[int] = len(FEATURE_NAMES)
assert N_FEATURES == 115


def feature_block(stream: str) -> slice:
    """Column slice of one stream kind, e.g. ``feature_block("HH") == slice(30, 65)``."""
    start = 0
    for name, stats in STREAMS:
        width = len(stats) * len(LAMBDAS)
        if name == stream:
            return slice(start, start + width)
        start += width
    raise KeyError(f"unknown stream kind {stream!r}; expected one of {[s for s, _ in STREAMS]}")


BENIGN: Final[str] = "benign"
GAFGYT_ATTACKS: Final[tuple[str, ...]] = ("combo", "junk", "scan", "tcp", "udp")
MIRAI_ATTACKS: Final[tuple[str, ...]] = ("ack", "scan", "syn", "udp", "udpplain")
BOTNETS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {"gafgyt": GAFGYT_ATTACKS, "mirai": MIRAI_ATTACKS}
)
ATTACK_CLASSES: Final[tuple[str, ...]] = tuple(
    f"{botnet}.{attack}" for botnet, attacks in BOTNETS.items() for attack in attacks
)
"""The ten attack classes, named as in the Kaggle layout (``gafgyt.combo`` … ``mirai.udpplain``)."""

TRAFFIC_CLASSES: Final[tuple[str, ...]] = (BENIGN, *ATTACK_CLASSES)


@dataclass(frozen=True)
class Device:
    """One N-BaIoT device.

    Parameters
    ----------
    uci_id
        The device number in UCI dataset 442 and the Kaggle mirror (1–9).
    name
        Folder name in the UCI layout, e.g. ``Danmini_Doorbell``.
    kind
        ``doorbell``, ``thermostat``, ``baby_monitor``, ``camera`` or ``webcam``.
    label
        A short human name for tables, e.g. ``Danmini doorbell``.
    has_mirai
        False for the two devices N-BaIoT could not infect with Mirai (Ennio, Samsung).
    """

    uci_id: int
    name: str
    kind: str
    label: str
    has_mirai: bool = True

    @property
    def traffic_classes(self) -> tuple[str, ...]:
        """Benign plus every attack class recorded for this device."""
        if self.has_mirai:
            return TRAFFIC_CLASSES
        return (BENIGN, *(c for c in ATTACK_CLASSES if c.startswith("gafgyt.")))


DEVICES: Final[tuple[Device, ...]] = (
    Device(1, "Danmini_Doorbell", "doorbell", "Danmini doorbell"),
    Device(2, "Ecobee_Thermostat", "thermostat", "Ecobee thermostat"),
    Device(3, "Ennio_Doorbell", "doorbell", "Ennio doorbell", has_mirai=False),
    Device(4, "Philips_B120N10_Baby_Monitor", "baby_monitor", "Philips baby monitor"),
    Device(5, "Provision_PT_737E_Security_Camera", "camera", "Provision 737E camera"),
    Device(6, "Provision_PT_838_Security_Camera", "camera", "Provision 838 camera"),
    Device(7, "Samsung_SNH_1011_N_Webcam", "webcam", "Samsung webcam", has_mirai=False),
    Device(8, "SimpleHome_XCS7_1002_WHT_Security_Camera", "camera", "SimpleHome 1002 camera"),
    Device(9, "SimpleHome_XCS7_1003_WHT_Security_Camera", "camera", "SimpleHome 1003 camera"),
)


def device_by_id(uci_id: int) -> Device:
    """The device with this UCI id; a ``KeyError`` naming the valid ids otherwise."""
    for device in DEVICES:
        if device.uci_id == uci_id:
            return device
    raise KeyError(f"no N-BaIoT device {uci_id}; valid ids are 1–{len(DEVICES)}")


def client_label(client_id: str) -> str:
    """A table label for a client id: ``Danmini_Doorbell#2`` → ``Danmini doorbell #2``."""
    name, sep, part = client_id.partition("#")
    try:
        label = device_by_name(name).label
    except KeyError:
        return client_id
    return f"{label} #{part}" if sep else label


def device_by_name(name: str) -> Device:
    """The device with this folder name (case-insensitive)."""
    for device in DEVICES:
        if device.name.lower() == name.lower():
            return device
    raise KeyError(f"no N-BaIoT device named {name!r}; known: {[d.name for d in DEVICES]}")


OFFICIAL_ROW_COUNTS: Final[Mapping[tuple[int, str], int]] = MappingProxyType({
    (1, "benign"): 49548,
    (1, "gafgyt.combo"): 59718,
    (1, "gafgyt.junk"): 29068,
    (1, "gafgyt.scan"): 29849,
    (1, "gafgyt.tcp"): 92141,
    (1, "gafgyt.udp"): 105874,
    (1, "mirai.ack"): 102195,
    (1, "mirai.scan"): 107685,
    (1, "mirai.syn"): 122573,
    (1, "mirai.udp"): 237665,
    (1, "mirai.udpplain"): 81982,
    (2, "benign"): 13113,
    (2, "gafgyt.combo"): 53012,
    (2, "gafgyt.junk"): 30312,
    (2, "gafgyt.scan"): 27494,
    (2, "gafgyt.tcp"): 95021,
    (2, "gafgyt.udp"): 104791,
    (2, "mirai.ack"): 113285,
    (2, "mirai.scan"): 43192,
    (2, "mirai.syn"): 116807,
    (2, "mirai.udp"): 151481,
    (2, "mirai.udpplain"): 87368,
    (3, "benign"): 39100,
    (3, "gafgyt.combo"): 53014,
    (3, "gafgyt.junk"): 29797,
    (3, "gafgyt.scan"): 28120,
    (3, "gafgyt.tcp"): 101536,
    (3, "gafgyt.udp"): 103933,
    (4, "benign"): 175240,
    (4, "gafgyt.combo"): 58152,
    (4, "gafgyt.junk"): 28349,
    (4, "gafgyt.scan"): 27859,
    (4, "gafgyt.tcp"): 92581,
    (4, "gafgyt.udp"): 105782,
    (4, "mirai.ack"): 91123,
    (4, "mirai.scan"): 103621,
    (4, "mirai.syn"): 118128,
    (4, "mirai.udp"): 217034,
    (4, "mirai.udpplain"): 80808,
    (5, "benign"): 62154,
    (5, "gafgyt.combo"): 61380,
    (5, "gafgyt.junk"): 30898,
    (5, "gafgyt.scan"): 29297,
    (5, "gafgyt.tcp"): 104510,
    (5, "gafgyt.udp"): 104011,
    (5, "mirai.ack"): 60554,
    (5, "mirai.scan"): 96781,
    (5, "mirai.syn"): 65746,
    (5, "mirai.udp"): 156248,
    (5, "mirai.udpplain"): 56681,
    (6, "benign"): 98514,
    (6, "gafgyt.combo"): 57530,
    (6, "gafgyt.junk"): 29068,
    (6, "gafgyt.scan"): 28397,
    (6, "gafgyt.tcp"): 89387,
    (6, "gafgyt.udp"): 104658,
    (6, "mirai.ack"): 57997,
    (6, "mirai.scan"): 97096,
    (6, "mirai.syn"): 61851,
    (6, "mirai.udp"): 158608,
    (6, "mirai.udpplain"): 53785,
    (7, "benign"): 52150,
    (7, "gafgyt.combo"): 58669,
    (7, "gafgyt.junk"): 28305,
    (7, "gafgyt.scan"): 27698,
    (7, "gafgyt.tcp"): 97783,
    (7, "gafgyt.udp"): 110617,
    (8, "benign"): 46585,
    (8, "gafgyt.combo"): 54283,
    (8, "gafgyt.junk"): 28579,
    (8, "gafgyt.scan"): 27825,
    (8, "gafgyt.tcp"): 88816,
    (8, "gafgyt.udp"): 103720,
    (8, "mirai.ack"): 111480,
    (8, "mirai.scan"): 45930,
    (8, "mirai.syn"): 125715,
    (8, "mirai.udp"): 151879,
    (8, "mirai.udpplain"): 78244,
    (9, "benign"): 19528,
    (9, "gafgyt.combo"): 59398,
    (9, "gafgyt.junk"): 27413,
    (9, "gafgyt.scan"): 28572,
    (9, "gafgyt.tcp"): 98075,
    (9, "gafgyt.udp"): 102980,
    (9, "mirai.ack"): 107187,
    (9, "mirai.scan"): 43674,
    (9, "mirai.syn"): 122479,
    (9, "mirai.udp"): 157084,
    (9, "mirai.udpplain"): 84436,
})
"""Official row count of each of the 89 N-BaIoT files, keyed by (UCI device id, traffic class)."""
assert len(OFFICIAL_ROW_COUNTS) == 89


FIRST_JITTER_CHOICES: Final[tuple[str, ...]] = ("epoch", "zero")
"""A new channel's first jitter: ``epoch`` (the absolute time, as in N-BaIoT's rows) or
``zero`` (the quirk turned off); :class:`~fediot.core.features.extractor.ExtractorOptions`."""
