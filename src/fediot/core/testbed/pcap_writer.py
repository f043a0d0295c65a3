"""Simulated captures → classic pcap files with real Ethernet, ARP, IPv4/IPv6, TCP, UDP, ICMP
and IGMP headers, so :func:`fediot.core.features.pcap.read_capture` reads back the same
:class:`~fediot.core.features.packets.PacketTable`.

Payload bytes are zeros (their content never reaches the features). Frames are stored whole
(captured length = wire length), little-endian, microsecond timestamps, link type Ethernet.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path
from typing import BinaryIO, Final

from fediot.core.features.packets import (
    IP_PROTO_ICMP,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    KIND_ARP,
    KIND_IPV4,
    KIND_IPV6,
    LINKTYPE_ETHERNET,
    PORT_ICMP,
)
from fediot.core.testbed.frames import ICMP_UNREACHABLE, MIN_FRAME, SYN
from fediot.core.testbed.simulator import Capture

PCAP_MAGIC: Final[int] = 0xA1B2C3D4
SNAPLEN: Final[int] = 65535

_ETH = struct.Struct("!6s6sH")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_RECORD = struct.Struct("<IIII")
# MSS 1460, SACK permitted, timestamps, NOP, window scale 7 (20 bytes); MSS only (4 bytes).
_SYN_OPTIONS_LONG: Final[bytes] = (
    b"\x02\x04\x05\xb4\x04\x02\x08\x0a" + b"\x00" * 8 + b"\x01\x03\x03\x07"
)
_SYN_OPTIONS_SHORT: Final[bytes] = b"\x02\x04\x05\xb4"  # then NOPs as needed


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total = int(sum(struct.unpack(f"!{len(data) // 2}H", data)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class _Addresses:
    """Packed IP addresses, each string converted once."""

    def __init__(self) -> None:
        self._cache: dict[str, bytes] = {}

    def __call__(self, text: str) -> bytes:
        packed = self._cache.get(text)
        if packed is None:
            family = socket.AF_INET6 if ":" in text else socket.AF_INET
            packed = socket.inet_pton(family, text)
            self._cache[text] = packed
        return packed


def _ipv4(src: bytes, dst: bytes, proto: int, body: bytes, ident: int, ttl: int) -> bytes:
    header = _IPV4.pack(0x45, 0, 20 + len(body), ident & 0xFFFF, 0x4000, ttl, proto, 0, src, dst)
    checksum = _checksum(header)
    return header[:10] + struct.pack("!H", checksum) + header[12:] + body


def _tcp_segment(sport: int, dport: int, flags: int, room: int, seq: int) -> bytes:
    """A TCP segment filling ``room`` bytes after its 20-byte header (SYN options, then zeros)."""
    options = b""
    if flags & SYN and room == len(_SYN_OPTIONS_LONG):
        options = _SYN_OPTIONS_LONG
    elif flags & SYN and 4 <= room <= 40 and room % 4 == 0:
        options = _SYN_OPTIONS_SHORT + b"\x01" * (room - 4)
    offset = (20 + len(options)) // 4
    header = _TCP.pack(sport, dport, seq & 0xFFFF_FFFF, 0, offset << 4, flags, 64240, 0, 0)
    return header + options + b"\x00" * (room - len(options))


def frame_bytes(capture: Capture, index: int, address: _Addresses | None = None) -> bytes:
    """The raw bytes of one frame of ``capture``."""
    packets = capture.packets
    address = address or _Addresses()
    length = int(packets.frame_len[index])
    kind = int(packets.kind[index])
    proto = int(packets.ip_proto[index])
    flags = int(capture.flags[index])
    sport, dport = int(packets.src_port[index]), int(packets.dst_port[index])
    src_mac = int(packets.src_mac[index]).to_bytes(6, "big")
    dst_mac = int(packets.dst_mac[index]).to_bytes(6, "big")
    src_ip, dst_ip = str(packets.src_ip[index]), str(packets.dst_ip[index])
    ttl = 64 if src_ip.startswith("192.168.") else 52
    if kind == KIND_ARP:
        body = _ARP.pack(1, 0x0800, 6, 4, flags, src_mac, address(src_ip),
                         dst_mac if flags == 2 else b"\x00" * 6, address(dst_ip))
        frame = _ETH.pack(dst_mac, src_mac, 0x0806) + body
    elif kind == KIND_IPV6:
        room = length - 14 - 40
        if proto == IP_PROTO_UDP:
            transport = _UDP.pack(sport, dport, room, 0) + b"\x00" * (room - 8)
        else:
            transport = bytes([flags, 0, 0, 0]) + b"\x00" * (room - 4)
        header = _IPV6.pack(6 << 28, room, proto, 255, address(src_ip), address(dst_ip))
        frame = _ETH.pack(dst_mac, src_mac, 0x86DD) + header + transport
    elif kind == KIND_IPV4:
        src, dst = address(src_ip), address(dst_ip)
        room = length - 14 - 20
        if proto == IP_PROTO_TCP:
            # A 60-byte TCP frame is a bare 54-byte segment plus Ethernet padding.
            after_header = room - 20 if length > MIN_FRAME else 0
            body = _tcp_segment(sport, dport, flags, after_header, index * 2654435761)
        elif proto == IP_PROTO_UDP:
            body = _UDP.pack(sport, dport, room, 0) + b"\x00" * (room - 8)
        elif proto == IP_PROTO_ICMP and sport != PORT_ICMP and flags == ICMP_UNREACHABLE:
            # Port unreachable quoting the offending UDP datagram (from us to the sender).
            quoted = _ipv4(dst, src, IP_PROTO_UDP, _UDP.pack(sport, dport, 520, 0), index, 64)
            rest = room - 8 - len(quoted)
            icmp = bytes([3, 3, 0, 0, 0, 0, 0, 0]) + quoted + b"\x00" * max(0, rest)
            body = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
        elif proto == IP_PROTO_ICMP:
            icmp = bytes([flags, 0, 0, 0]) + struct.pack("!HH", 0x1F2E, index & 0xFFFF)
            icmp += b"\x00" * (room - 8)
            body = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
        else:  # IGMP: a v2 query from the router, v2 reports from members
            group = dst if dst_ip != "224.0.0.1" else b"\x00" * 4
            igmp = bytes([0x11 if dst_ip == "224.0.0.1" else 0x16, 100, 0, 0]) + group
            body = igmp[:2] + struct.pack("!H", _checksum(igmp)) + igmp[4:]
        frame = _ETH.pack(dst_mac, src_mac, 0x0800) + _ipv4(src, dst, proto, body, index, ttl)
    else:
        frame = _ETH.pack(dst_mac, src_mac, 0x88B5)
    if len(frame) < length:
        frame += b"\x00" * (length - len(frame))
    return frame


def _write_records(handle: BinaryIO, capture: Capture) -> None:
    address = _Addresses()
    micros = (capture.packets.timestamp * 1e6).round().astype("int64").tolist()
    lengths = capture.packets.frame_len.tolist()
    header = struct.pack("<IHHiIII", PCAP_MAGIC, 2, 4, 0, 0, SNAPLEN, LINKTYPE_ETHERNET)
    handle.write(header)
    chunk: list[bytes] = []
    for index, (micro, wire) in enumerate(zip(micros, lengths, strict=True)):
        frame = frame_bytes(capture, index, address)
        chunk.append(_RECORD.pack(micro // 1_000_000, micro % 1_000_000, len(frame), wire))
        chunk.append(frame)
        if len(chunk) >= 8192:
            handle.write(b"".join(chunk))
            chunk.clear()
    handle.write(b"".join(chunk))


def write_pcap(capture: Capture, path: Path) -> None:
    """Write ``capture`` as a classic pcap at ``path`` (atomically: temp file, then rename)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as handle:
            _write_records(handle, capture)
        temporary.replace(path)
    finally:
        if temporary.exists():
            temporary.unlink()

