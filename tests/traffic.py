"""Random traffic for tests: packet tables for the extractor tests, raw frames for the capture
parser tests."""

from __future__ import annotations

import dataclasses
import struct

import numpy as np

from fediot.core.features import fastparse
from fediot.core.features.packets import (
    KIND_ARP,
    KIND_IPV4,
    KIND_OTHER,
    PORT_ARP,
    PORT_NONE,
    PacketTable,
)
from fediot.core.features.pcap import (
    CaptureReadResult,
    FrameDissector,
    FrameRow,
    MalformedFrameError,
)


def random_traffic(n: int, seed: int, *, ports: int = 5) -> PacketTable:
    """Mixed IPv4/ARP/non-IP traffic among few hosts, with equal-endpoint and silent cases;
    ``ports`` > 5 draws random ports, so most packets open a new socket pair (a scan or
    flood)."""
    rng = np.random.default_rng(seed)
    hosts = np.array([f"192.168.1.{i}" for i in range(6)], dtype=object)
    kind = rng.choice([KIND_IPV4] * 6 + [KIND_ARP, KIND_OTHER], n).astype(np.uint8)
    if ports > 5:
        src_port = rng.integers(1024, 1024 + ports, n).astype(np.int32)
        dst_port = rng.integers(1, ports, n).astype(np.int32)
    else:
        src_port = rng.choice([80, 443, 5353, 40000, PORT_NONE], n).astype(np.int32)
        dst_port = rng.choice([80, 443, 5353, 40001], n).astype(np.int32)
    src_port[kind == KIND_ARP] = PORT_ARP
    dst_port[kind == KIND_ARP] = PORT_ARP
    gaps = rng.choice([0.0, 1e-5, 0.01, 0.3, 5.0, 400.0], n)  # 400 s: start weights underflow
    return PacketTable(
        timestamp=1.5e9 + np.cumsum(gaps),
        frame_len=rng.integers(60, 1515, n),
        src_mac=rng.integers(1, 5, n).astype(np.uint64),
        dst_mac=rng.integers(1, 5, n).astype(np.uint64),
        src_ip=hosts[rng.integers(0, 6, n)],
        dst_ip=hosts[rng.integers(0, 6, n)],
        src_port=src_port,
        dst_port=dst_port,
        kind=kind,
        ip_proto=np.full(n, 17, dtype=np.uint8),
    )


# --- raw frames, for the capture parsers ------------------------------------------------------

LINK_TYPES_FOR_FRAMES = (1, 1, 1, 1, 113, 276, 101, 228, 229)
"""Ethernet most often; Linux cooked SLL / SLL2 and the three raw-IP link types too."""
_HOSTS_V4 = [bytes([192, 168, 1, i]) for i in range(1, 5)] + [bytes([10, 0, 0, 1])]
_HOSTS_V6 = [bytes.fromhex("fe80" + "00" * 12 + f"{i:04x}") for i in range(1, 4)] + [
    bytes.fromhex("20010db8" + "00" * 10 + "0001"), bytes(16)]
_VLAN_TPIDS = (0x8100, 0x88A8, 0x9100, 0x9200)
_IP_PROTOCOLS = (6, 6, 17, 17, 1, 1, 2, 47, 50, 51, 4, 41, 0, 89, 132, 255, 58, 103)
_ICMP_TYPES = (0, 8, 3, 3, 11, 5, 4, 12, 13, 255)


def _ipv4_header(rng: np.random.Generator, proto: int, payload: bytes, *,
                 fragment: int = 0) -> bytes:
    ihl = int(rng.choice([5] * 12 + [6, 15, 4, 0]))
    options = bytes(rng.integers(0, 256, max(0, ihl * 4 - 20), dtype=np.uint8))
    total = 4 * max(ihl, 5) + len(payload)
    total = int(rng.choice([total] * 8 + [0, total + 40, max(0, total - 10), 12]))
    src, dst = (_HOSTS_V4[int(i)] for i in rng.integers(0, len(_HOSTS_V4), 2))
    header = struct.pack(">BBHHHBB2s4s4s", 0x40 | ihl, 0, total & 0xFFFF, 7, fragment, 64,
                         proto, b"\0\0", src, dst)
    return header + options + payload


def _transport(rng: np.random.Generator, proto: int, depth: int = 0) -> bytes:
    body = bytes(rng.integers(0, 256, int(rng.integers(0, 24)), dtype=np.uint8))
    if proto in (6, 17):
        ports = struct.pack(">HH", int(rng.choice([80, 443, 53, 23, 2323])),
                            int(rng.integers(1024, 65536)))
        return ports + body
    if proto in (1, 58):
        icmp_type = int(rng.choice(_ICMP_TYPES if proto == 1 else (1, 2, 3, 4, 128, 129, 135)))
        head = bytes([icmp_type, 0, 0, 0]) + bytes(4)
        if icmp_type in (3, 4, 5, 11, 12, 1, 2) and depth < 2:
            # an error quoting the start of a datagram (sometimes itself an ICMP error)
            inner = int(rng.choice([6, 17, 1, 47, 41, 2]))
            quoted = _ipv4_header(rng, inner, _transport(rng, inner, depth + 1)[:8])
            return head + quoted[: int(rng.choice([len(quoted), 28, 24, 20, 10]))]
        return head + body
    return body


def _network(rng: np.random.Generator, kind: str) -> tuple[int, bytes]:
    """(EtherType, packet) of one network-layer packet."""
    if kind == "ipv4":
        proto = int(rng.choice(_IP_PROTOCOLS))
        fragment = int(rng.choice([0, 0, 0, 0, 0x4000, 0x2000, 0x2000 | 185, 185, 0x1FFF]))
        return 0x0800, _ipv4_header(rng, proto, _transport(rng, proto), fragment=fragment)
    if kind == "ipv6":
        nxt = int(rng.choice([6, 17, 58, 58, 0, 44, 43, 60, 1, 47, 59]))
        payload = _transport(rng, nxt)
        if nxt in (0, 43, 60, 44):  # one extension header before UDP
            payload = bytes([17, 0]) + bytes(6) + _transport(rng, 17)
        plen = int(rng.choice([len(payload), len(payload), 0, 3, len(payload) + 20]))
        src, dst = (_HOSTS_V6[int(i)] for i in rng.integers(0, len(_HOSTS_V6), 2))
        return 0x86DD, struct.pack(">IHBB16s16s", 0x6000_0000, plen, nxt, 64, src, dst) + payload
    if kind in ("arp", "rarp"):
        hln = int(rng.choice([6, 6, 6, 8, 0, 20]))
        pln = int(rng.choice([4, 4, 4, 16]))
        pro = int(rng.choice([0x0800, 0x0800, 0x86DD]))
        body = bytes(rng.integers(0, 256, 2 * (hln + pln) + int(rng.integers(0, 3)),
                                  dtype=np.uint8))
        return (0x0806 if kind == "arp" else 0x8035), struct.pack(
            ">HHBBH", 1, pro, hln, pln, 1) + body
    return int(rng.choice([0x88CC, 0x888E, 0x0842, 0x0000])), bytes(
        rng.integers(0, 256, int(rng.integers(0, 50)), dtype=np.uint8))


def random_frames(n: int, seed: int) -> list[tuple[int, bytes]]:
    """``n`` (link type, frame) pairs of mixed traffic: Ethernet with 0–3 VLAN tags, SLL,
    SLL2 and raw IP; IPv4 with options, fragments, TCP/UDP, ICMP echoes and errors quoting
    TCP/UDP/ICMP/tunnels, IGMP, tunnels and IPsec; IPv6 with and without extension headers;
    ARP/RARP of several address sizes; other EtherTypes. About one frame in eight is cut
    short and one in twenty has a random byte overwritten."""
    rng = np.random.default_rng(seed)
    kinds = ["ipv4"] * 6 + ["ipv6", "arp", "rarp", "other"]
    out: list[tuple[int, bytes]] = []
    for _ in range(n):
        link = int(rng.choice(LINK_TYPES_FOR_FRAMES))
        raw_ip = link in (101, 228, 229)
        kind = str(rng.choice(["ipv4"] * 5 + ["ipv6", "other"] if raw_ip else kinds))
        ether_type, packet = _network(rng, kind)
        n_tags = int(rng.choice([0, 0, 0, 1, 1, 2, 3]))
        tpids = [int(rng.choice(_VLAN_TPIDS)) for _ in range(n_tags)]
        tags = b"".join(struct.pack(">HH", tpid, 5) for tpid in tpids)
        macs = bytes(rng.integers(0, 4, 12, dtype=np.uint8))
        if link == 1:
            frame = macs + tags + struct.pack(">H", ether_type) + packet
        elif link == 113:
            address_len = int(rng.choice([6, 6, 0, 8]))
            frame = struct.pack(">HHH8s", 0, 1, address_len, macs[:8]) + tags + struct.pack(
                ">H", ether_type) + packet
        elif link == 276:  # the protocol leads the header; a tag is then TCI + next type
            chain = [*tpids, ether_type]
            frame = struct.pack(">HHiHBB8s", chain[0], 0, 3, 1, 0, int(rng.choice([6, 0])),
                                macs[:8])
            frame += b"".join(struct.pack(">HH", 5, t) for t in chain[1:]) + packet
        else:
            frame = packet if ether_type in (0x0800, 0x86DD) else packet[:3]
        if rng.random() < 0.125:
            frame = frame[: int(rng.integers(0, len(frame) + 1))]
        if frame and rng.random() < 0.05:
            mutable = bytearray(frame)
            mutable[int(rng.integers(0, len(frame)))] = int(rng.integers(0, 256))
            frame = bytes(mutable)
        out.append((link, frame))
    return out


def compiled_rows(frames: list[tuple[int, bytes]]) -> list[FrameRow | None]:
    """Each (link type, frame) through the compiled dissector alone: its row as
    :class:`~fediot.core.features.pcap.FrameDissector` would give it, or ``None`` where the
    kernel leaves the frame to dpkt."""
    buffer = np.frombuffer(b"".join(frame for _, frame in frames), dtype=np.uint8)
    caplens = np.array([len(frame) for _, frame in frames], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(caplens)[:-1]]).astype(np.int64)
    links = np.array([link for link, _ in frames], dtype=np.int64)
    out = fastparse.DissectedFrames(len(frames))
    out.dissect(buffer, starts, caplens, links)
    cache: dict[tuple[int, int, int], str] = {}
    src_ip = fastparse.address_strings(out.family, out.src_hi, out.src_lo, cache)
    dst_ip = fastparse.address_strings(out.family, out.dst_hi, out.dst_lo, cache)
    return [
        (int(out.src_mac[i]), int(out.dst_mac[i]), src_ip[i], dst_ip[i], int(out.src_port[i]),
         int(out.dst_port[i]), int(out.kind[i]), int(out.ip_proto[i]))
        if out.handled[i] else None
        for i in range(len(frames))
    ]


def dpkt_rows(frames: list[tuple[int, bytes]]) -> list[FrameRow | str]:
    """Each frame through :class:`~fediot.core.features.pcap.FrameDissector` (dpkt): its row,
    or its skip reason."""
    dissector = FrameDissector()
    rows: list[FrameRow | str] = []
    for link, frame in frames:
        try:
            rows.append(dissector.dissect(link, frame))
        except MalformedFrameError as error:
            rows.append(str(error))
    return rows


def assert_same_result(compiled: CaptureReadResult, reference: CaptureReadResult) -> None:
    """Every column (values and dtypes) and every count of two reads are equal."""
    for field in dataclasses.fields(compiled.packets):
        ours = getattr(compiled.packets, field.name)
        theirs = getattr(reference.packets, field.name)
        assert ours.dtype == theirs.dtype, field.name
        np.testing.assert_array_equal(ours, theirs, err_msg=field.name)
    for field in dataclasses.fields(compiled):
        if field.name != "packets":
            assert getattr(compiled, field.name) == getattr(reference, field.name), field.name
    assert compiled.summary() == reference.summary()
