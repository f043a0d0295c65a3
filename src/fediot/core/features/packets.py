"""Packets as columns: the one record type shared by the pcap reader, the testbed and the extractor.

A :class:`PacketTable` holds what N-BaIoT's feature extractor read from each packet (through
tshark fields, first occurrence of each), as NumPy columns so that a capture of millions of
packets costs a few bytes per packet and the extractor never loops in Python per packet.

Port conventions (N-BaIoT/Kitsune): TCP and UDP carry their port numbers; ARP packets carry
:data:`PORT_ARP` on both sides and the ARP sender/target protocol addresses as IPs; ICMP packets
carry :data:`PORT_ICMP`, except ICMP error messages, which carry the ports of the TCP/UDP header
they quote; anything else carries :data:`PORT_NONE`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Final, NamedTuple

import numpy as np
import numpy.typing as npt

PORT_NONE: Final[int] = -1
"""No transport port (N-BaIoT's placeholder, e.g. IGMP or ICMPv6 that quotes nothing)."""
PORT_ARP: Final[int] = -2
"""ARP: N-BaIoT uses the string ``"arp"`` as both ports."""
PORT_ICMP: Final[int] = -3
"""ICMP: N-BaIoT uses the string ``"icmp"`` as both ports."""

KIND_OTHER: Final[int] = 0
"""A frame with neither IP nor ARP (its MAC addresses stand in for IPs)."""
KIND_ARP: Final[int] = 1
KIND_IPV4: Final[int] = 4
KIND_IPV6: Final[int] = 6

IP_PROTO_ICMP: Final[int] = 1
IP_PROTO_TCP: Final[int] = 6
IP_PROTO_UDP: Final[int] = 17
IP_PROTO_ICMPV6: Final[int] = 58

# Wire numbers the capture parsers share (pcap.py's dissector, fastparse.py's kernels).
LINKTYPE_ETHERNET: Final[int] = 1
LINKTYPE_RAW: Final[int] = 101
LINKTYPE_LINUX_SLL: Final[int] = 113
LINKTYPE_IPV4: Final[int] = 228
LINKTYPE_IPV6: Final[int] = 229
LINKTYPE_LINUX_SLL2: Final[int] = 276
ETH_TYPE_IPV4: Final[int] = 0x0800
ETH_TYPE_ARP: Final[int] = 0x0806
ETH_TYPE_RARP: Final[int] = 0x8035  # tshark dissects RARP with its ARP dissector
ETH_TYPE_IPV6: Final[int] = 0x86DD
VLAN_TPIDS: Final[tuple[int, ...]] = (0x8100, 0x88A8, 0x9100, 0x9200)
"""EtherTypes of a VLAN tag (802.1Q, 802.1ad and two pre-standard QinQ values)."""
ICMP_ERROR_TYPES: Final[tuple[int, ...]] = (3, 4, 5, 11, 12)
"""ICMP messages that quote the start of the datagram they report on."""
ICMPV6_ERROR_TYPES: Final[tuple[int, ...]] = (1, 2, 3, 4)


def mac_to_int(mac: str | bytes) -> int:
    """``"aa:bb:cc:dd:ee:ff"`` or 6 raw bytes → a 48-bit integer."""
    if isinstance(mac, bytes):
        if len(mac) != 6:
            raise ValueError(f"a MAC address has 6 bytes, got {len(mac)}")
        return int.from_bytes(mac, "big")
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"not a MAC address: {mac!r}")
    return int("".join(parts), 16)


def int_to_mac(value: int) -> str:
    """A 48-bit integer → ``"aa:bb:cc:dd:ee:ff"``."""
    raw = int(value).to_bytes(6, "big")
    return ":".join(f"{b:02x}" for b in raw)


class Packet(NamedTuple):
    """One packet as plain Python values: a :class:`PacketTable` row (same fields, same
    conventions), for live traffic that arrives one packet at a time."""

    timestamp: float
    frame_len: int
    src_mac: int
    dst_mac: int
    src_ip: str
    dst_ip: str
    src_port: int
    dst_port: int
    kind: int
    ip_proto: int


@dataclass(frozen=True)
class PacketTable:
    """Packets in capture order, one row per packet, stored column-wise.

    Parameters
    ----------
    timestamp
        float64 seconds since the Unix epoch (``frame.time_epoch``).
    frame_len
        int64 wire length of the frame in bytes (``frame.len``, not the captured length).
    src_mac, dst_mac
        uint64 48-bit MAC addresses; 0 where the link layer has none.
    src_ip, dst_ip
        object arrays of address strings (IPv4 dotted, IPv6 compressed); for ARP the sender and
        target protocol addresses; ``""`` where the packet has no IP and is not ARP.
    src_port, dst_port
        int32 port numbers, or :data:`PORT_NONE` / :data:`PORT_ARP` / :data:`PORT_ICMP`.
    kind
        uint8 :data:`KIND_IPV4`, :data:`KIND_IPV6`, :data:`KIND_ARP` or :data:`KIND_OTHER`.
    ip_proto
        uint8 IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, …); 0 without IP.
    """

    timestamp: npt.NDArray[np.float64]
    frame_len: npt.NDArray[np.int64]
    src_mac: npt.NDArray[np.uint64]
    dst_mac: npt.NDArray[np.uint64]
    src_ip: npt.NDArray[np.object_]
    dst_ip: npt.NDArray[np.object_]
    src_port: npt.NDArray[np.int32]
    dst_port: npt.NDArray[np.int32]
    kind: npt.NDArray[np.uint8]
    ip_proto: npt.NDArray[np.uint8]

    def __post_init__(self) -> None:
        n = len(self.timestamp)
        for f in fields(self):
            column = getattr(self, f.name)
            if not isinstance(column, np.ndarray) or column.ndim != 1:
                raise TypeError(f"PacketTable.{f.name} must be a 1-D NumPy array")
            if len(column) != n:
                raise ValueError(
                    f"PacketTable.{f.name} has {len(column)} rows, timestamp has {n}"
                )

    def __len__(self) -> int:
        return len(self.timestamp)

    @classmethod
    def empty(cls) -> PacketTable:
        return cls.from_columns(
            timestamp=[], frame_len=[], src_mac=[], dst_mac=[], src_ip=[], dst_ip=[],
            src_port=[], dst_port=[], kind=[], ip_proto=[],
        )

    @classmethod
    def from_columns(
        cls,
        *,
        timestamp: Iterable[float],
        frame_len: Iterable[int],
        src_mac: Iterable[int],
        dst_mac: Iterable[int],
        src_ip: Sequence[str],
        dst_ip: Sequence[str],
        src_port: Iterable[int],
        dst_port: Iterable[int],
        kind: Iterable[int],
        ip_proto: Iterable[int],
    ) -> PacketTable:
        """Build a table from any sequences, converting each column to its dtype."""

        def strings(values: Sequence[str]) -> npt.NDArray[np.object_]:
            out = np.empty(len(values), dtype=object)
            out[:] = list(values)
            return out

        return cls(
            timestamp=np.asarray(list(timestamp), dtype=np.float64),
            frame_len=np.asarray(list(frame_len), dtype=np.int64),
            src_mac=np.asarray(list(src_mac), dtype=np.uint64),
            dst_mac=np.asarray(list(dst_mac), dtype=np.uint64),
            src_ip=strings(src_ip),
            dst_ip=strings(dst_ip),
            src_port=np.asarray(list(src_port), dtype=np.int32),
            dst_port=np.asarray(list(dst_port), dtype=np.int32),
            kind=np.asarray(list(kind), dtype=np.uint8),
            ip_proto=np.asarray(list(ip_proto), dtype=np.uint8),
        )

    @classmethod
    def from_packets(cls, packets: Sequence[Packet]) -> PacketTable:
        """A table of :class:`Packet` rows, in order."""
        if not packets:
            return cls.empty()
        columns = zip(*packets, strict=True)
        return cls.from_columns(**dict(zip(Packet._fields, columns, strict=True)))

    def rows(self) -> Iterator[Packet]:
        """The rows as :class:`Packet` values (Python ints, floats and strings)."""
        columns = [getattr(self, name).tolist() for name in Packet._fields]
        return map(Packet._make, zip(*columns, strict=True))

    def take(self, index: npt.NDArray[np.intp] | slice) -> PacketTable:
        """Rows selected by an index array or slice, as a new table."""
        return PacketTable(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @classmethod
    def concat(cls, tables: Sequence[PacketTable]) -> PacketTable:
        """Tables one after another (no re-sorting)."""
        if not tables:
            return cls.empty()
        return cls(
            **{
                f.name: np.concatenate([getattr(t, f.name) for t in tables])
                for f in fields(cls)
            }
        )

    def sorted_by_time(self) -> PacketTable:
        """Rows in timestamp order (stable, so equal times keep their order)."""
        return self.take(np.argsort(self.timestamp, kind="stable"))
