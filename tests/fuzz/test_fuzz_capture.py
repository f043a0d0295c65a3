"""Fuzzing the capture reader (:func:`fediot.core.features.pcap.read_capture`).

Inputs: random bytes (bare, or behind each of the five magic numbers), and valid captures —
classic pcap in both byte orders with µs or ns timestamps, pcapng in both byte orders with
several interfaces and timestamp options, every supported link type and a few unsupported
ones — built here with :mod:`struct`, then mutated (bytes overwritten, cut short, bytes
inserted). Frames are random bytes behind well-formed or broken Ethernet / VLAN / SLL / SLL2 /
raw-IP headers and IPv4 / IPv6 / ARP / TCP / UDP / ICMP headers with random fields.

Property: reading succeeds with every complete record counted as kept or skipped (reasons
tallied), or raises :class:`CaptureError` — one line naming the file — and nothing else; the
compiled parser and ``parser="dpkt"`` agree on every column, count and error message. Frame by
frame, the compiled dissector never crashes and, where it takes a frame on, gives dpkt's row.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from fuzz_settings import fuzz
from hypothesis import given
from hypothesis import strategies as st

from fediot.core.features.packets import PORT_ARP, PORT_ICMP, PORT_NONE
from fediot.core.features.pcap import (
    PARSERS,
    SUPPORTED_LINK_TYPES,
    CaptureError,
    CaptureReadResult,
    FrameDissector,
    MalformedFrameError,
    read_capture,
)
from traffic import assert_same_result, compiled_rows, dpkt_rows

PCAP_MAGICS = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
PCAPNG_MAGIC = b"\x0a\x0d\x0d\x0a"
LINK_TYPES = sorted(SUPPORTED_LINK_TYPES)
OTHER_LINK_TYPES = (0, 105, 127, 0xFFFF)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_capture")


def check_read(path: Path, allow_truncated: bool) -> None:
    """The property: a consistent result, or one CaptureError line naming the file; the
    compiled parser and the dpkt one give the same result or the same error."""
    outcomes: list[CaptureReadResult | str] = []
    for parser in PARSERS:
        try:
            outcomes.append(read_capture(path, allow_truncated=allow_truncated, parser=parser))
        except CaptureError as error:
            outcomes.append(str(error))
    result, reference = outcomes
    if isinstance(result, str):
        assert result == reference
        assert str(path) in result, result
        assert "\n" not in result and "\r" not in result, result
        return
    assert not isinstance(reference, str), reference
    assert_same_result(result, reference)
    packets = result.packets
    assert len(packets) + result.skipped == result.n_records
    assert sum(result.skip_reasons.values()) == result.skipped
    assert (result.first_skip is None) == (result.skipped == 0)
    if result.first_skip is not None:
        assert 0 <= result.first_skip[0] < result.n_records + 1
    if not allow_truncated:
        assert result.truncated_at is None
    assert packets.timestamp.dtype == np.float64
    assert "\n" not in result.summary()


# --- frames -----------------------------------------------------------------------------------

ETHER_TYPES = st.sampled_from([0x0800, 0x86DD, 0x0806, 0x8035, 0x8100, 0x88A8, 0x9100, 0x88CC])
IP_PROTOS = st.sampled_from([1, 6, 17, 58, 0, 43, 44, 60, 51, 50, 47, 255])


@st.composite
def ipv4_packets(draw: st.DrawFn) -> bytes:
    ihl = draw(st.sampled_from([5, 5, 5, 6, 15, 0, 4]))
    options = draw(st.binary(min_size=max(0, ihl * 4 - 20), max_size=max(0, ihl * 4 - 20)))
    body = draw(transport(draw(IP_PROTOS)))
    total = draw(st.one_of(st.just(ihl * 4 + len(body)), st.integers(0, 0xFFFF)))
    flags_fragment = draw(st.sampled_from([0, 0x4000, 0x2000, 0x0001, 0x1FFF, 0xFFFF]))
    header = struct.pack(
        ">BBHHHBB2s4s4s", (4 << 4) | ihl, 0, total, 1, flags_fragment, 64,
        draw(IP_PROTOS), b"\x00\x00", draw(st.binary(min_size=4, max_size=4)),
        draw(st.binary(min_size=4, max_size=4)),
    )
    return header + options + body


@st.composite
def ipv6_packets(draw: st.DrawFn) -> bytes:
    extensions = b""
    next_header = draw(IP_PROTOS)
    for ext in draw(st.lists(st.sampled_from([0, 43, 44, 60, 51]), max_size=3)):
        length = draw(st.integers(0, 3))
        size = 8 if ext == 44 else ((length + 2) * 4 if ext == 51 else (length + 1) * 8)
        extensions = bytes([next_header, length]) + draw(
            st.binary(min_size=size - 2, max_size=size - 2)) + extensions
        next_header = ext
    body = extensions + draw(transport(draw(IP_PROTOS)))
    payload_len = draw(st.one_of(st.just(len(body)), st.integers(0, 0xFFFF)))
    header = struct.pack(">IHBB16s16s", 0x6000_0000, payload_len, next_header, 64,
                         draw(st.binary(min_size=16, max_size=16)),
                         draw(st.binary(min_size=16, max_size=16)))
    return header + body


@st.composite
def transport(draw: st.DrawFn, proto: int) -> bytes:
    if proto in (6, 17):
        ports = struct.pack(">HH", draw(st.integers(0, 0xFFFF)), draw(st.integers(0, 0xFFFF)))
        return ports + draw(st.binary(max_size=40))
    if proto in (1, 58):
        icmp_type = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 8, 11, 12, 128, 255]))
        quoted = draw(st.one_of(st.binary(max_size=60), ipv4_quote(), ipv6_quote()))
        return bytes([icmp_type, 0, 0, 0]) + b"\x00" * 4 + quoted
    return draw(st.binary(max_size=40))


@st.composite
def ipv4_quote(draw: st.DrawFn) -> bytes:
    ihl = draw(st.sampled_from([5, 6, 15, 1]))
    return (bytes([(4 << 4) | ihl]) + b"\x00" * 5 + draw(st.binary(min_size=2, max_size=2))
            + b"\x40" + bytes([draw(st.sampled_from([6, 17, 1]))])
            + draw(st.binary(max_size=60)))


@st.composite
def ipv6_quote(draw: st.DrawFn) -> bytes:
    return (b"\x60" + b"\x00" * 5 + bytes([draw(st.sampled_from([6, 17, 0, 43, 44, 60, 51]))])
            + draw(st.binary(max_size=100)))


@st.composite
def arp_packets(draw: st.DrawFn) -> bytes:
    hln = draw(st.sampled_from([6, 6, 0, 8, 255]))
    pln = draw(st.sampled_from([4, 4, 16, 0, 255]))
    pro = draw(st.sampled_from([0x0800, 0x86DD, 0]))
    header = struct.pack(">HHBBH", 1, pro, hln, pln, draw(st.integers(0, 3)))
    return header + draw(st.binary(max_size=2 * (hln + pln) + 4))


def network(ether_type: int) -> st.SearchStrategy[bytes]:
    if ether_type == 0x0800:
        return ipv4_packets()
    if ether_type == 0x86DD:
        return ipv6_packets()
    if ether_type in (0x0806, 0x8035):
        return arp_packets()
    return st.binary(max_size=60)


@st.composite
def frames(draw: st.DrawFn, link_type: int) -> bytes:
    """A frame of ``link_type``: a real-looking header stack, sometimes cut or random."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=80))
    ether_type = draw(ETHER_TYPES)
    tags = b"".join(
        struct.pack(">HH", tpid, 1) for tpid in draw(
            st.lists(st.sampled_from([0x8100, 0x88A8, 0x9100]), max_size=3))
    )
    inner = struct.pack(">H", ether_type) + draw(network(ether_type))
    if link_type == 1:
        frame = draw(st.binary(min_size=12, max_size=12)) + tags + inner
    elif link_type == 113:
        frame = struct.pack(">HHH8s", 0, 1, draw(st.sampled_from([6, 0, 8])),
                            draw(st.binary(min_size=8, max_size=8))) + tags + inner
    elif link_type == 276:
        frame = (inner[:2] + struct.pack(">HiHBB8s", 0, 3, 1, 0, draw(st.sampled_from([6, 0])),
                                         draw(st.binary(min_size=8, max_size=8)))
                 + tags + inner[2:])
    else:
        frame = draw(st.one_of(ipv4_packets(), ipv6_packets(), st.binary(max_size=40)))
    cut = draw(st.one_of(st.none(), st.integers(0, len(frame))))
    return frame if cut is None else frame[:cut]


# --- captures ---------------------------------------------------------------------------------


def pcapng_block(endian: str, block_type: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = 12 + len(body)
    return struct.pack(endian + "II", block_type, length) + body + struct.pack(endian + "I", length)


def pcapng_option(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


@st.composite
def pcap_files(draw: st.DrawFn) -> tuple[bytes, int]:
    """A valid classic pcap (either byte order, µs or ns) and its record count."""
    endian = draw(st.sampled_from("<>"))
    nanoseconds = draw(st.booleans())
    link_type = draw(st.sampled_from(LINK_TYPES + list(OTHER_LINK_TYPES)))
    snaplen = draw(st.sampled_from([65535, 262144, 0, 10, 0xFFFF_FFFF]))
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    fcs_bits = draw(st.sampled_from([0, 0x1000_0000]))
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, link_type | fcs_bits)
    frame_link = link_type if link_type in SUPPORTED_LINK_TYPES else 1
    records = draw(st.lists(frames(frame_link), max_size=6))
    for frame in records:
        seconds = draw(st.integers(0, 0xFFFF_FFFF))
        fraction = draw(st.integers(0, 0xFFFF_FFFF))
        wire = draw(st.one_of(st.just(len(frame)), st.integers(0, 0xFFFF_FFFF)))
        out += struct.pack(endian + "IIII", seconds, fraction, len(frame), wire) + frame
    return out, len(records)


@st.composite
def pcapng_files(draw: st.DrawFn) -> tuple[bytes, int]:
    """A valid pcapng file (one or two sections, several interfaces) and its packet count."""
    out = b""
    count = 0
    for _section in range(draw(st.integers(1, 2))):
        endian = draw(st.sampled_from("<>"))
        out += pcapng_block(endian, 0x0A0D0D0A,
                            struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1)
                            + draw(st.sampled_from([b"", pcapng_option(endian, 0, b"")])))
        links = draw(st.lists(st.sampled_from(LINK_TYPES), min_size=1, max_size=3))
        for link_type in links:
            options = b""
            if draw(st.booleans()):
                options += pcapng_option(endian, 9, bytes([draw(st.integers(0, 255))]))
            if draw(st.booleans()):
                options += pcapng_option(endian, 14, struct.pack(
                    endian + "q", draw(st.integers(-(2**63), 2**63 - 1))))
            if draw(st.booleans()):
                options += pcapng_option(endian, 2, draw(st.binary(max_size=12)))
            if options:
                options += pcapng_option(endian, 0, b"")
            out += pcapng_block(endian, 1, struct.pack(endian + "HHI", link_type, 0, 0) + options)
        for _ in range(draw(st.integers(0, 5))):
            kind = draw(st.sampled_from(["epb", "epb", "pb", "spb", "nrb", "isb"]))
            interface = draw(st.integers(0, len(links) - 1))
            frame = draw(frames(links[interface]))
            if kind in ("epb", "pb"):
                ticks = draw(st.integers(0, 2**64 - 1))
                wire = draw(st.one_of(st.just(len(frame)), st.integers(0, 0xFFFF_FFFF)))
                if kind == "epb":
                    head = struct.pack(endian + "IIIII", interface, ticks >> 32,
                                       ticks & 0xFFFF_FFFF, len(frame), wire)
                else:
                    head = struct.pack(endian + "HHIIII", interface, 0, ticks >> 32,
                                       ticks & 0xFFFF_FFFF, len(frame), wire)
                out += pcapng_block(endian, 6 if kind == "epb" else 2, head + frame)
                count += 1
            elif kind == "spb":
                out += pcapng_block(endian, 3, struct.pack(endian + "I", len(frame)) + frame)
                count += 1
            else:
                out += pcapng_block(endian, 4 if kind == "nrb" else 5, draw(st.binary(max_size=16)))
    return out, count


@st.composite
def mutations(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes overwritten, a slice inserted, and/or cut short."""
    out = bytearray(data)
    for _ in range(draw(st.integers(0, 4))):
        if not out:
            break
        position = draw(st.integers(0, len(out) - 1))
        out[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x0A, 0x0D])
                             | st.integers(0, 255))
    if draw(st.integers(0, 4)) == 0:
        position = draw(st.integers(0, len(out)))
        out[position:position] = draw(st.binary(min_size=1, max_size=16))
    if draw(st.integers(0, 2)) == 0:
        del out[draw(st.integers(0, len(out))):]
    return bytes(out)


# --- properties -------------------------------------------------------------------------------


@fuzz(1200)
@given(
    head=st.sampled_from((b"", *PCAP_MAGICS, PCAPNG_MAGIC, b"\x1f\x8b")),
    body=st.binary(max_size=400),
    allow_truncated=st.booleans(),
)
def test_random_bytes(folder: Path, head: bytes, body: bytes, allow_truncated: bool) -> None:
    path = folder / "random.pcap"
    path.write_bytes(head + body)
    check_read(path, allow_truncated)


@fuzz(400)
@given(capture=pcap_files(), allow_truncated=st.booleans())
def test_valid_pcap_reads_completely(
    folder: Path, capture: tuple[bytes, int], allow_truncated: bool
) -> None:
    data, n_records = capture
    path = folder / "valid.pcap"
    path.write_bytes(data)
    link_type = struct.unpack_from("<I" if data[:1] == b"\xd4" or data[:1] == b"\x4d" else ">I",
                                   data, 20)[0] & 0xFFFF
    if link_type not in SUPPORTED_LINK_TYPES:
        with pytest.raises(CaptureError, match="unsupported link type"):
            read_capture(path)
        return
    result = read_capture(path, allow_truncated=allow_truncated)
    assert result.n_records == n_records and result.truncated_at is None
    check_read(path, allow_truncated)


@fuzz(350)
@given(capture=pcapng_files(), allow_truncated=st.booleans())
def test_valid_pcapng_reads_completely(
    folder: Path, capture: tuple[bytes, int], allow_truncated: bool
) -> None:
    data, n_records = capture
    path = folder / "valid.pcapng"
    path.write_bytes(data)
    result = read_capture(path, allow_truncated=allow_truncated)
    assert result.n_records == n_records and result.truncated_at is None
    assert np.isfinite(result.packets.timestamp).all()
    check_read(path, allow_truncated)


@pytest.mark.slow
@fuzz(700)
@given(data=st.data(), pcapng=st.booleans(), allow_truncated=st.booleans())
def test_mutated_captures(
    folder: Path, data: st.DataObject, pcapng: bool, allow_truncated: bool
) -> None:
    good, _ = data.draw(pcapng_files() if pcapng else pcap_files(), label="capture")
    path = folder / "mutated.cap"
    path.write_bytes(data.draw(mutations(good), label="mutated"))
    check_read(path, allow_truncated)


@pytest.mark.slow
@fuzz(2200)
@given(data=st.data(), link_type=st.sampled_from(LINK_TYPES))
def test_frame_dissector(data: st.DataObject, link_type: int) -> None:
    """Any frame of a supported link type dissects into a row of the right types, or raises
    MalformedFrameError (which the reader counts as a skip) — never anything else."""
    frame = data.draw(st.one_of(frames(link_type), st.binary(max_size=100)), label="frame")
    try:
        row = FrameDissector().dissect(link_type, frame)
    except MalformedFrameError as error:
        assert error.args and isinstance(error.args[0], str)
        return
    src_mac, dst_mac, src_ip, dst_ip, src_port, dst_port, kind, ip_proto = row
    assert 0 <= src_mac < 2**48 and 0 <= dst_mac < 2**48
    assert isinstance(src_ip, str) and isinstance(dst_ip, str)
    lowest = min(PORT_NONE, PORT_ARP, PORT_ICMP)
    assert all(isinstance(p, int) and p >= lowest for p in (src_port, dst_port))
    assert isinstance(kind, int) and 0 <= ip_proto <= 255


@fuzz(2500)
@given(data=st.data(), link_type=st.sampled_from(LINK_TYPES))
def test_compiled_dissector_equals_dpkt(data: st.DataObject, link_type: int) -> None:
    """A batch of frames through the compiled kernel: no crash, and every frame it handles
    has exactly the row FrameDissector (dpkt) gives it."""
    batch = data.draw(st.lists(st.one_of(frames(link_type), st.binary(max_size=100)),
                               min_size=1, max_size=4), label="frames")
    pairs = [(link_type, frame) for frame in batch]
    for ours, theirs in zip(compiled_rows(pairs), dpkt_rows(pairs), strict=True):
        if ours is not None:
            assert ours == theirs
