"""Tests for the capture reader: a real pcap, and small captures written by hand with struct.

The hand-built frames use no dpkt, so they check the reader against the wire formats rather
than against the library it uses.
"""

from __future__ import annotations

import socket
import struct
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fediot.core.errors import FediotError
from fediot.core.features.packets import (
    KIND_ARP,
    KIND_IPV4,
    KIND_IPV6,
    KIND_OTHER,
    PORT_ARP,
    PORT_ICMP,
    PORT_NONE,
    mac_to_int,
)
from fediot.core.features.pcap import CaptureError, CaptureReadResult, read_capture

SRC_MAC = "02:00:00:00:00:01"
DST_MAC = "02:00:00:00:00:02"
SECONDS = 1_600_000_000

# --- frame builders ---------------------------------------------------------------------------


def ethernet(
    payload: bytes,
    ether_type: int,
    *,
    vlans: tuple[int, ...] = (),
    src: str = SRC_MAC,
    dst: str = DST_MAC,
) -> bytes:
    """An Ethernet II frame; ``vlans`` are the tag protocol ids of stacked VLAN tags."""
    header = bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", ""))
    for vlan_id, tpid in enumerate(vlans, start=10):
        header += struct.pack(">H", tpid)
        header += struct.pack(">H", vlan_id)
    return header + struct.pack(">H", ether_type) + payload


def ipv4(
    src: str,
    dst: str,
    proto: int,
    payload: bytes,
    *,
    fragment_offset: int = 0,
    more_fragments: bool = False,
    ihl: int = 5,
) -> bytes:
    flags = (0x2000 if more_fragments else 0) | fragment_offset
    header = struct.pack(
        ">BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(payload), 0x1234, flags, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )
    return header + payload


def ipv6(src: str, dst: str, next_header: int, payload: bytes) -> bytes:
    return struct.pack(
        ">IHBB16s16s", 0x6000_0000, len(payload), next_header, 64,
        socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst),
    ) + payload


def udp(src_port: int, dst_port: int, payload: bytes = b"") -> bytes:
    return struct.pack(">HHHH", src_port, dst_port, 8 + len(payload), 0) + payload


def tcp(src_port: int, dst_port: int) -> bytes:
    return struct.pack(">HHIIBBHHH", src_port, dst_port, 1, 0, 5 << 4, 0x02, 65535, 0, 0)


def icmp(icmp_type: int, code: int, body: bytes = b"") -> bytes:
    """ICMP (v4 or v6): type, code, checksum, 4 bytes of rest-of-header, then ``body``."""
    return struct.pack(">BBHI", icmp_type, code, 0, 0) + body


def arp(sender_ip: str, target_ip: str, *, op: int = 1) -> bytes:
    return struct.pack(
        ">HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op,
        bytes.fromhex(SRC_MAC.replace(":", "")), socket.inet_aton(sender_ip),
        b"\x00" * 6, socket.inet_aton(target_ip),
    )


def sll(payload: bytes, protocol: int, *, address: str = SRC_MAC) -> bytes:
    raw = bytes.fromhex(address.replace(":", ""))
    return struct.pack(">HHH8sH", 0, 1, len(raw), raw.ljust(8, b"\x00"), protocol) + payload


def sll2(payload: bytes, protocol: int, *, address: str = SRC_MAC) -> bytes:
    raw = bytes.fromhex(address.replace(":", ""))
    return struct.pack(
        ">HHiHBB8s", protocol, 0, 3, 1, 0, len(raw), raw.ljust(8, b"\x00")
    ) + payload


def udp_frame(src_port: int = 5000, dst_port: int = 53) -> bytes:
    return ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(src_port, dst_port, b"x" * 10)), 0x0800)


# --- capture writers --------------------------------------------------------------------------


class Rec(NamedTuple):
    """One record to write: the captured bytes, its time and (if not its length) wire length."""

    frame: bytes
    seconds: int = SECONDS
    fraction: int = 0
    wire_len: int | None = None


def pcap_bytes(
    records: list[Rec],
    *,
    link_type: int = 1,
    endian: str = "<",
    nanoseconds: bool = False,
    snaplen: int = 262_144,
) -> bytes:
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, link_type)
    for rec in records:
        wire = len(rec.frame) if rec.wire_len is None else rec.wire_len
        out += struct.pack(endian + "IIII", rec.seconds, rec.fraction, len(rec.frame), wire)
        out += rec.frame
    return out


def write_pcap(
    path: Path,
    records: list[Rec],
    *,
    link_type: int = 1,
    endian: str = "<",
    nanoseconds: bool = False,
    snaplen: int = 262_144,
) -> Path:
    path.write_bytes(
        pcap_bytes(
            records, link_type=link_type, endian=endian, nanoseconds=nanoseconds, snaplen=snaplen
        )
    )
    return path


def pcapng_block(endian: str, block_type: int, body: bytes) -> bytes:
    body = body + b"\x00" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(endian + "II", block_type, length) + body + struct.pack(endian + "I", length)


def pcapng_bytes(
    records: list[tuple[int, Rec]],
    *,
    link_types: tuple[int, ...] = (1,),
    endian: str = "<",
    tsresol: int | None = None,
) -> bytes:
    """A pcapng section: SHB, one IDB per link type, then (interface, record) EPBs."""
    out = pcapng_block(endian, 0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))
    options = b""
    if tsresol is not None:
        options = struct.pack(endian + "HH", 9, 1) + bytes([tsresol, 0, 0, 0])
        options += struct.pack(endian + "HH", 0, 0)
    for link_type in link_types:
        out += pcapng_block(endian, 1, struct.pack(endian + "HHI", link_type, 0, 0) + options)
    ticks_per_second = 10 ** (6 if tsresol is None else tsresol)
    for interface, rec in records:
        ticks = rec.seconds * ticks_per_second + rec.fraction
        wire = len(rec.frame) if rec.wire_len is None else rec.wire_len
        body = struct.pack(
            endian + "IIIII", interface, ticks >> 32, ticks & 0xFFFF_FFFF, len(rec.frame), wire
        )
        out += pcapng_block(endian, 6, body + rec.frame)
    return out


def read_one(tmp_path: Path, frame: bytes, *, link_type: int = 1) -> CaptureReadResult:
    result = read_capture(write_pcap(tmp_path / "one.pcap", [Rec(frame)], link_type=link_type))
    assert result.skipped == 0, result.summary()
    assert len(result.packets) == 1
    return result


def row(result: CaptureReadResult, index: int = 0) -> dict[str, object]:
    """One packet as plain Python values, for readable assertions."""
    p = result.packets
    return {
        "src_mac": int(p.src_mac[index]),
        "dst_mac": int(p.dst_mac[index]),
        "src_ip": p.src_ip[index],
        "dst_ip": p.dst_ip[index],
        "src_port": int(p.src_port[index]),
        "dst_port": int(p.dst_port[index]),
        "kind": int(p.kind[index]),
        "ip_proto": int(p.ip_proto[index]),
    }


# --- the real capture -------------------------------------------------------------------------


def test_real_capture_matches_its_provenance(real_pcap: Path) -> None:
    result = read_capture(real_pcap)
    packets = result.packets

    assert (result.file_format, result.link_type) == ("pcap", 1)
    assert (result.n_records, result.skipped, result.truncated_at) == (2000, 0, None)
    assert len(packets) == 2000
    assert np.all(np.diff(packets.timestamp) >= 0)
    assert packets.timestamp[0] == pytest.approx(1540446382.933899, abs=1e-6)
    assert packets.timestamp[-1] == pytest.approx(1540446454.134753, abs=1e-6)

    kinds = Counter(packets.kind.tolist())
    assert kinds[KIND_IPV4] == 1799
    assert kinds[KIND_ARP] == 148
    assert kinds[KIND_IPV6] == 10
    assert kinds[KIND_OTHER] == 2000 - 1799 - 148 - 10
    protocols = Counter(packets.ip_proto[packets.kind == KIND_IPV4].tolist())
    assert (protocols[17], protocols[1], protocols[6]) == (1012, 444, 343)

    # The provenance file's busiest destination ports.
    udp_ports = Counter(packets.dst_port[packets.ip_proto == 17].tolist())
    tcp_ports = Counter(packets.dst_port[packets.ip_proto == 6].tolist())
    assert (udp_ports[10240], udp_ports[53]) == (626, 328)
    assert (tcp_ports[80], tcp_ports[8280], tcp_ports[443], tcp_ports[8000]) == (176, 67, 34, 31)
    assert set(packets.src_ip[packets.kind == KIND_ARP]) <= {
        f"192.168.2.{i}" for i in range(256)
    } | {"0.0.0.0"}
    other = packets.kind == KIND_OTHER
    assert set(packets.src_ip[other]) == {""}
    assert set(packets.src_port[other].tolist()) == {PORT_NONE}


def test_real_capture_frame_len_is_the_wire_length(real_pcap: Path) -> None:
    raw = real_pcap.read_bytes()
    wire_lengths = []
    offset = 24
    while offset < len(raw):
        _sec, _frac, caplen, wire = struct.unpack_from("<IIII", raw, offset)
        wire_lengths.append(wire)
        offset += 16 + caplen
    assert read_capture(real_pcap).packets.frame_len.tolist() == wire_lengths


# --- formats ----------------------------------------------------------------------------------


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nanoseconds", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path: Path, endian: str, nanoseconds: bool) -> None:
    ticks = 10**9 if nanoseconds else 10**6
    fractions = [0, 123_457, ticks - 1]
    records = [Rec(udp_frame(5000 + i), SECONDS + i, f) for i, f in enumerate(fractions)]
    path = write_pcap(tmp_path / "x.cap", records, endian=endian, nanoseconds=nanoseconds)

    result = read_capture(path)

    expected = [float(SECONDS + i + Fraction(f, ticks)) for i, f in enumerate(fractions)]
    assert result.packets.timestamp.tolist() == expected
    assert result.packets.src_port.tolist() == [5000, 5001, 5002]
    assert result.packets.dst_port.tolist() == [53, 53, 53]
    assert result.file_format == "pcap"


@pytest.mark.parametrize("endian", ["<", ">"])
def test_pcapng_interfaces_resolution_and_wire_length(tmp_path: Path, endian: str) -> None:
    ip_packet = ipv4("10.0.0.1", "10.0.0.2", 17, udp(1234, 80))
    records = [
        (0, Rec(ethernet(ip_packet, 0x0800), SECONDS, 5, wire_len=1514)),
        (1, Rec(sll(ip_packet, 0x0800), SECONDS + 1, 999_999_999)),
    ]
    path = tmp_path / "capture.bin"  # the extension says nothing; the magic bytes decide
    path.write_bytes(pcapng_bytes(records, link_types=(1, 113), endian=endian, tsresol=9))

    result = read_capture(path)

    assert (result.file_format, result.link_type, result.n_records) == ("pcapng", 1, 2)
    packets = result.packets
    assert packets.timestamp.tolist() == [
        float(SECONDS + Fraction(5, 10**9)),
        float(SECONDS + 1 + Fraction(999_999_999, 10**9)),
    ]
    assert packets.frame_len.tolist() == [1514, len(records[1][1].frame)]
    assert packets.src_mac.tolist() == [mac_to_int(SRC_MAC), mac_to_int(SRC_MAC)]
    assert packets.dst_mac.tolist() == [mac_to_int(DST_MAC), 0]
    assert packets.dst_port.tolist() == [80, 80]


def test_pcapng_default_microsecond_resolution(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    path.write_bytes(pcapng_bytes([(0, Rec(udp_frame(), SECONDS, 250_000))]))
    assert read_capture(path).packets.timestamp.tolist() == [SECONDS + 0.25]


def test_pcapng_unsupported_interface_names_packet(tmp_path: Path) -> None:
    path = tmp_path / "x.pcapng"
    records = [(0, Rec(udp_frame())), (1, Rec(b"\x00" * 30))]
    path.write_bytes(pcapng_bytes(records, link_types=(1, 105)))
    with pytest.raises(CaptureError, match=r"packet #1 \(0-based\).*link type IEEE 802.11 \(105\)"):
        read_capture(path)


# --- link layers ------------------------------------------------------------------------------


def test_sll_takes_the_source_mac_from_its_address(tmp_path: Path) -> None:
    frame = sll(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(40000, 443)), 0x0800)
    assert row(read_one(tmp_path, frame, link_type=113)) == {
        "src_mac": mac_to_int(SRC_MAC), "dst_mac": 0, "src_ip": "10.0.0.1",
        "dst_ip": "10.0.0.2", "src_port": 40000, "dst_port": 443, "kind": KIND_IPV4,
        "ip_proto": 6,
    }


def test_sll_without_a_mac_address(tmp_path: Path) -> None:
    frame = sll(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2)), 0x0800, address="")
    assert row(read_one(tmp_path, frame, link_type=113))["src_mac"] == 0


def test_sll2(tmp_path: Path) -> None:
    frame = sll2(arp("10.0.0.1", "10.0.0.9"), 0x0806)
    assert row(read_one(tmp_path, frame, link_type=276)) == {
        "src_mac": mac_to_int(SRC_MAC), "dst_mac": 0, "src_ip": "10.0.0.1",
        "dst_ip": "10.0.0.9", "src_port": PORT_ARP, "dst_port": PORT_ARP, "kind": KIND_ARP,
        "ip_proto": 0,
    }


@pytest.mark.parametrize("vlans", [(0x8100,), (0x88A8, 0x8100), (0x9100, 0x8100)])
def test_vlan_tagged_ethernet(tmp_path: Path, vlans: tuple[int, ...]) -> None:
    frame = ethernet(ipv4("10.1.1.1", "10.1.1.2", 17, udp(68, 67)), 0x0800, vlans=vlans)
    assert row(read_one(tmp_path, frame)) == {
        "src_mac": mac_to_int(SRC_MAC), "dst_mac": mac_to_int(DST_MAC), "src_ip": "10.1.1.1",
        "dst_ip": "10.1.1.2", "src_port": 68, "dst_port": 67, "kind": KIND_IPV4, "ip_proto": 17,
    }


@pytest.mark.parametrize("link_type", [101, 228, 229])
def test_raw_ip_link_types(tmp_path: Path, link_type: int) -> None:
    if link_type == 229:
        frame = ipv6("2001:db8::1", "2001:db8::2", 17, udp(7, 9))
    else:
        frame = ipv4("192.0.2.1", "192.0.2.2", 17, udp(7, 9))
    values = row(read_one(tmp_path, frame, link_type=link_type))
    assert (values["src_mac"], values["dst_mac"]) == (0, 0)
    assert (values["src_port"], values["dst_port"], values["ip_proto"]) == (7, 9, 17)


# --- network and transport conventions -------------------------------------------------------


def test_arp_uses_protocol_addresses_and_arp_ports(tmp_path: Path) -> None:
    values = row(read_one(tmp_path, ethernet(arp("192.168.2.1", "192.168.2.108", op=2), 0x0806)))
    assert values == {
        "src_mac": mac_to_int(SRC_MAC), "dst_mac": mac_to_int(DST_MAC),
        "src_ip": "192.168.2.1", "dst_ip": "192.168.2.108", "src_port": PORT_ARP,
        "dst_port": PORT_ARP, "kind": KIND_ARP, "ip_proto": 0,
    }


def test_icmp_echo_gets_icmp_ports(tmp_path: Path) -> None:
    frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 1, icmp(8, 0, b"ping")), 0x0800)
    values = row(read_one(tmp_path, frame))
    assert (values["src_port"], values["dst_port"], values["ip_proto"]) == (PORT_ICMP, PORT_ICMP, 1)


def test_icmp_port_unreachable_carries_the_quoted_udp_ports(tmp_path: Path) -> None:
    quoted = ipv4("10.0.0.2", "10.0.0.1", 17, udp(33000, 10240, b"payload"))
    frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 1, icmp(3, 3, quoted)), 0x0800)
    values = row(read_one(tmp_path, frame))
    assert (values["src_port"], values["dst_port"]) == (33000, 10240)
    assert (values["src_ip"], values["dst_ip"], values["ip_proto"]) == ("10.0.0.1", "10.0.0.2", 1)


def test_icmp_error_quoting_only_8_bytes_of_tcp(tmp_path: Path) -> None:
    quoted = ipv4("10.0.0.2", "10.0.0.1", 6, tcp(51000, 80))[: 20 + 8]
    frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 1, icmp(11, 0, quoted)), 0x0800)
    values = row(read_one(tmp_path, frame))
    assert (values["src_port"], values["dst_port"]) == (51000, 80)


def test_icmp_error_quoting_icmp_keeps_icmp_ports(tmp_path: Path) -> None:
    quoted = ipv4("10.0.0.2", "10.0.0.1", 1, icmp(8, 0))
    frame = ethernet(ipv4("10.0.0.1", "10.0.0.2", 1, icmp(3, 1, quoted)), 0x0800)
    values = row(read_one(tmp_path, frame))
    assert (values["src_port"], values["dst_port"]) == (PORT_ICMP, PORT_ICMP)


def test_ipv6_udp_compressed_addresses(tmp_path: Path) -> None:
    frame = ethernet(ipv6("2001:db8:0:0::1", "fe80::0:2", 17, udp(546, 547)), 0x86DD)
    assert row(read_one(tmp_path, frame)) == {
        "src_mac": mac_to_int(SRC_MAC), "dst_mac": mac_to_int(DST_MAC),
        "src_ip": "2001:db8::1", "dst_ip": "fe80::2", "src_port": 546, "dst_port": 547,
        "kind": KIND_IPV6, "ip_proto": 17,
    }


def test_ipv6_protocol_is_the_one_after_extension_headers(tmp_path: Path) -> None:
    hop_by_hop = bytes([17, 0]) + b"\x01\x04\x00\x00\x00\x00"  # next header UDP, 8 bytes
    frame = ethernet(ipv6("2001:db8::1", "2001:db8::2", 0, hop_by_hop + udp(1000, 2000)), 0x86DD)
    values = row(read_one(tmp_path, frame))
    assert (values["ip_proto"], values["src_port"], values["dst_port"]) == (17, 1000, 2000)


def test_icmpv6_gets_no_ports_unless_it_quotes_udp(tmp_path: Path) -> None:
    echo = ethernet(ipv6("fe80::1", "ff02::1", 58, icmp(128, 0, b"ping")), 0x86DD)
    quoted = ipv6("2001:db8::2", "2001:db8::1", 17, udp(4444, 5555))
    error = ethernet(ipv6("2001:db8::1", "2001:db8::2", 58, icmp(1, 4, quoted)), 0x86DD)
    path = write_pcap(tmp_path / "v6.pcap", [Rec(echo), Rec(error)])
    result = read_capture(path)
    assert result.packets.ip_proto.tolist() == [58, 58]
    assert result.packets.src_port.tolist() == [PORT_NONE, 4444]
    assert result.packets.dst_port.tolist() == [PORT_NONE, 5555]


def test_only_the_first_ipv4_fragment_has_ports(tmp_path: Path) -> None:
    first = ipv4("10.0.0.1", "10.0.0.2", 17, udp(9999, 53, b"a" * 32), more_fragments=True)
    later = ipv4("10.0.0.1", "10.0.0.2", 17, b"b" * 32, fragment_offset=5)
    path = write_pcap(tmp_path / "f.pcap", [Rec(ethernet(first, 0x0800)),
                                             Rec(ethernet(later, 0x0800))])
    packets = read_capture(path).packets
    assert packets.src_port.tolist() == [9999, PORT_NONE]
    assert packets.dst_port.tolist() == [53, PORT_NONE]
    assert packets.ip_proto.tolist() == [17, 17]


def test_other_ip_protocols_get_no_ports(tmp_path: Path) -> None:
    igmp = ethernet(ipv4("10.0.0.1", "224.0.0.22", 2, b"\x22\x00\xfa\x02\x00\x00\x00\x00"), 0x0800)
    values = row(read_one(tmp_path, igmp))
    assert (values["src_port"], values["dst_port"], values["ip_proto"]) == (PORT_NONE, PORT_NONE, 2)


def test_frame_without_ip_or_arp_is_other(tmp_path: Path) -> None:
    lldp = ethernet(b"\x02\x07\x04" + b"\x00" * 40, 0x88CC)
    assert row(read_one(tmp_path, lldp)) == {
        "src_mac": mac_to_int(SRC_MAC), "dst_mac": mac_to_int(DST_MAC), "src_ip": "",
        "dst_ip": "", "src_port": PORT_NONE, "dst_port": PORT_NONE, "kind": KIND_OTHER,
        "ip_proto": 0,
    }


def test_wire_length_larger_than_captured_length(tmp_path: Path) -> None:
    full = ethernet(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(1, 2) + b"z" * 1000), 0x0800)
    path = write_pcap(tmp_path / "snap.pcap", [Rec(full[:64], wire_len=len(full))], snaplen=64)
    result = read_capture(path)
    assert result.packets.frame_len.tolist() == [len(full)]
    assert (int(result.packets.src_port[0]), int(result.packets.dst_port[0])) == (1, 2)


def test_tcp_header_cut_by_the_snaplen_still_has_ports(tmp_path: Path) -> None:
    full = ethernet(ipv4("10.0.0.1", "10.0.0.2", 6, tcp(4321, 8080)), 0x0800)
    path = write_pcap(tmp_path / "snap.pcap", [Rec(full[:38], wire_len=len(full))], snaplen=38)
    packets = read_capture(path).packets
    assert (int(packets.src_port[0]), int(packets.dst_port[0])) == (4321, 8080)


# --- bad input --------------------------------------------------------------------------------


def test_malformed_packets_are_skipped_and_counted(tmp_path: Path) -> None:
    bad_ihl = ethernet(ipv4("10.0.0.1", "10.0.0.2", 17, udp(1, 2), ihl=3), 0x0800)
    short_ip = ethernet(b"\x45\x00\x00\x30\x00", 0x0800)
    records = [Rec(udp_frame(1)), Rec(bad_ihl), Rec(udp_frame(2)), Rec(short_ip), Rec(b"\x01")]
    result = read_capture(write_pcap(tmp_path / "m.pcap", records))
    assert result.packets.src_port.tolist() == [1, 2]
    assert (result.n_records, result.skipped) == (5, 3)
    assert result.skip_reasons == {
        "malformed IPv4 header": 2,
        "frame shorter than an Ethernet header": 1,
    }
    assert result.first_skip == (1, "malformed IPv4 header")
    assert "3 skipped" in result.summary()
    assert "packet #1 (0-based)" in result.summary()


@pytest.mark.parametrize("cut", [10, 3])  # inside the captured bytes / inside the record header
def test_truncated_final_record(tmp_path: Path, cut: int) -> None:
    records = [Rec(udp_frame(1)), Rec(udp_frame(2)), Rec(udp_frame(3))]
    data = pcap_bytes(records)
    last_record_start = len(data) - 16 - len(records[2].frame)
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[: last_record_start + cut])

    with pytest.raises(CaptureError, match=r"packet #2 \(0-based\).*allow_truncated") as error:
        read_capture(path)
    assert str(path) in str(error.value)

    result = read_capture(path, allow_truncated=True)
    assert result.packets.src_port.tolist() == [1, 2]
    assert (result.truncated_at, result.n_records) == (2, 2)
    assert "cut short in packet #2 (0-based)" in result.summary()


def test_truncated_pcapng(tmp_path: Path) -> None:
    data = pcapng_bytes([(0, Rec(udp_frame(1))), (0, Rec(udp_frame(2)))])
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data[:-5])
    with pytest.raises(CaptureError, match=r"packet #1 \(0-based\)"):
        read_capture(path)
    result = read_capture(path, allow_truncated=True)
    assert (len(result.packets), result.truncated_at) == (1, 1)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.pcap"
    with pytest.raises(CaptureError, match="no such file") as error:
        read_capture(path)
    assert str(path) in str(error.value)
    assert isinstance(error.value, FediotError)


def test_not_a_capture(tmp_path: Path) -> None:
    path = tmp_path / "notes.pcap"
    path.write_text("timestamp,src,dst\n1,2,3\n")
    with pytest.raises(CaptureError, match=r"notes\.pcap: not a pcap or pcapng capture"):
        read_capture(path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.pcap"
    path.write_bytes(b"")
    with pytest.raises(CaptureError, match="empty file"):
        read_capture(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00", r"corrupt pcap global header: the file has 8 bytes"),
        (struct.pack("<IHHiIII", 0xA1B2C3D4, 9, 1, 0, 0, 65535, 1), r"version 9\.1"),
    ],
)
def test_corrupt_global_header(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.pcap"
    path.write_bytes(data)
    with pytest.raises(CaptureError, match=message):
        read_capture(path)


def test_header_only_is_an_empty_table(tmp_path: Path) -> None:
    pcap = read_capture(write_pcap(tmp_path / "e.pcap", []))
    (tmp_path / "e.pcapng").write_bytes(pcapng_bytes([]))
    pcapng = read_capture(tmp_path / "e.pcapng")
    for result in (pcap, pcapng):
        assert (len(result.packets), result.n_records, result.skipped) == (0, 0, 0)
        assert result.packets.timestamp.dtype == np.float64


def test_unsupported_link_type(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "wifi.pcap", [Rec(b"\x00" * 40)], link_type=105)
    message = r"wifi\.pcap: unsupported link type IEEE 802.11 \(105\)"
    with pytest.raises(CaptureError, match=message):
        read_capture(path)


def test_absurd_captured_length(tmp_path: Path) -> None:
    data = pcap_bytes([Rec(udp_frame())]) + struct.pack("<IIII", SECONDS, 0, 0xFFFF_FFF0, 60)
    path = tmp_path / "corrupt.pcap"
    path.write_bytes(data + b"\x00" * 60)
    with pytest.raises(CaptureError, match=r"packet #1 \(0-based\).*4294967280 captured bytes"):
        read_capture(path, allow_truncated=True)


def test_progress_reports_bytes_up_to_the_file_size(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "p.pcap", [Rec(udp_frame(i)) for i in range(10)])
    seen: list[int] = []
    read_capture(path, progress=seen.append)
    assert seen == [path.stat().st_size]


# --- robustness -------------------------------------------------------------------------------

_ETHER_TYPES = st.sampled_from([0x0800, 0x86DD, 0x0806, 0x8100, 0x88A8, 0x8035, 0x88CC])


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(st.tuples(_ETHER_TYPES, st.binary(max_size=120)), max_size=8))
def test_arbitrary_frames_never_raise(tmp_path: Path, payloads: list[tuple[int, bytes]]) -> None:
    records = [Rec(ethernet(payload, ether_type)) for ether_type, payload in payloads]
    result = read_capture(write_pcap(tmp_path / "fuzz.pcap", records))
    assert len(result.packets) + result.skipped == result.n_records == len(records)
    assert sum(result.skip_reasons.values()) == result.skipped


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    head=st.sampled_from(
        [
            pcap_bytes([Rec(udp_frame())]),
            pcapng_bytes([(0, Rec(udp_frame()))]),
            pcap_bytes([Rec(udp_frame())], endian=">"),
        ]
    ),
    cut=st.integers(min_value=0, max_value=200),
    tail=st.binary(max_size=200),
    allow_truncated=st.booleans(),
)
def test_arbitrary_file_contents_raise_only_capture_errors(
    tmp_path: Path, head: bytes, cut: int, tail: bytes, allow_truncated: bool
) -> None:
    path = tmp_path / "fuzz.bin"
    path.write_bytes(head[: max(4, len(head) - cut)] + tail)
    try:
        result = read_capture(path, allow_truncated=allow_truncated)
    except CaptureError as error:
        assert str(path) in str(error)
    else:
        assert len(result.packets) + result.skipped == result.n_records
