"""Compiled framing and dissection of the common frames, for :mod:`fediot.core.features.pcap`.

Two numba kernels read the capture's bytes in place (a NumPy view of the memory-mapped file):

* :func:`frame_pcap_records` walks classic pcap record headers and returns each record's
  offset, lengths and raw timestamp; it stops at the first record it cannot frame, so that
  the Python framer (which owns every error message) takes over from there;
* :func:`dissect_frames` dissects Ethernet II (with any 802.1Q / QinQ tags), Linux cooked SLL
  and SLL2, and raw IP frames carrying IPv4 (options and fragments included), IPv6 without
  extension headers, TCP, UDP, ICMP, ICMPv6, IGMP and ARP / RARP, into the same columns as
  :class:`~fediot.core.features.pcap.FrameDissector`.

A frame the kernel does not fully understand is not guessed at: it is marked *not handled* and
goes through ``FrameDissector`` (dpkt) alone, which also owns every skip reason. "Not handled"
covers malformed headers, ICMPv6 error messages and ICMP errors quoting a protocol dpkt could
fail on (dpkt parses quoted headers recursively), IPv6 extension headers, and IP protocols
whose dpkt parser could raise (tunnels, IPsec, SCTP, …). The tests hold the two paths to
identical columns on real, synthesised and fuzzed traffic.
"""

from __future__ import annotations

import socket
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd
from numba import njit

from fediot.core.features.packets import (
    ETH_TYPE_ARP,
    ETH_TYPE_IPV4,
    ETH_TYPE_IPV6,
    ETH_TYPE_RARP,
    ICMP_ERROR_TYPES,
    ICMPV6_ERROR_TYPES,
    IP_PROTO_ICMP,
    IP_PROTO_ICMPV6,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    KIND_ARP,
    KIND_IPV4,
    KIND_IPV6,
    KIND_OTHER,
    LINKTYPE_ETHERNET,
    LINKTYPE_IPV4,
    LINKTYPE_IPV6,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_RAW,
    PORT_ARP,
    PORT_ICMP,
    PORT_NONE,
    VLAN_TPIDS,
)

__all__ = [
    "DPKT_ICMP_QUOTE_TYPES",
    "DPKT_IPV6_EXTENSION_HEADERS",
    "DPKT_PARSED_PROTOCOLS",
    "FAMILY_IPV4",
    "FAMILY_IPV6",
    "FAMILY_NONE",
    "DissectedFrames",
    "address_strings",
    "dissect_frames",
    "frame_pcap_records",
]

FAMILY_NONE: Final[int] = 0
"""No address: the IP columns hold ``""``."""
FAMILY_IPV4: Final[int] = 4
FAMILY_IPV6: Final[int] = 6

_IP_PROTO_IGMP: Final[int] = 2
DPKT_PARSED_PROTOCOLS: Final[frozenset[int]] = frozenset(
    {0, 1, 2, 4, 6, 17, 41, 47, 50, 51, 58, 89, 103, 112, 118, 132}
)
"""IP protocols dpkt 1.9.8 parses further (``dpkt.ip.IP._protosw``, the same for IPv6); written
out so that this module need not import dpkt (a test checks it against the installed dpkt)."""
DPKT_IPV6_EXTENSION_HEADERS: Final[frozenset[int]] = frozenset({0, 43, 44, 50, 51, 60})
"""``dpkt.ip6.EXT_HDRS``, likewise."""
DPKT_ICMP_QUOTE_TYPES: Final[tuple[int, ...]] = (3, 4, 5, 11)
"""ICMP types whose message dpkt parses as a quoted IPv4 datagram (``dpkt.icmp.ICMP.Quote``)."""
# Protocols dpkt parses with a parser that could raise something the dissector would count as
# a malformed frame: those frames go to dpkt itself. TCP, UDP and IGMP parsers are header-only
# and fail only with dpkt.UnpackError, which dpkt itself swallows; ICMP and ICMPv6 are decided
# by the kernel (below).
_SAFE_DPKT_PROTOCOLS: Final[frozenset[int]] = frozenset(
    {_IP_PROTO_IGMP, IP_PROTO_TCP, IP_PROTO_UDP}
)
_DEFERRED_V4: Final[npt.NDArray[np.bool_]] = np.zeros(256, dtype=np.bool_)
_DEFERRED_V4[sorted(DPKT_PARSED_PROTOCOLS - _SAFE_DPKT_PROTOCOLS - {IP_PROTO_ICMP})] = True
_DEFERRED_V6: Final[npt.NDArray[np.bool_]] = np.zeros(256, dtype=np.bool_)
_DEFERRED_V6[sorted(
    (DPKT_PARSED_PROTOCOLS | DPKT_IPV6_EXTENSION_HEADERS) - _SAFE_DPKT_PROTOCOLS
    - {IP_PROTO_ICMPV6}
)] = True

_ADDRESS_CACHE_LIMIT: Final[int] = 1 << 20


@njit(cache=True, nogil=True, inline="always")
def _u16(data: npt.NDArray[np.uint8], i: int) -> int:
    return (int(data[i]) << 8) | int(data[i + 1])


@njit(cache=True, nogil=True, inline="always")
def _u32(data: npt.NDArray[np.uint8], i: int) -> int:
    return (_u16(data, i) << 16) | _u16(data, i + 2)


@njit(cache=True, nogil=True, inline="always")
def _u48(data: npt.NDArray[np.uint8], i: int) -> int:
    return (_u16(data, i) << 32) | _u32(data, i + 2)


@njit(cache=True, nogil=True, inline="always")
def _u64(data: npt.NDArray[np.uint8], i: int) -> np.uint64:
    return (np.uint64(_u32(data, i)) << np.uint64(32)) | np.uint64(_u32(data, i + 4))


@njit(cache=True, nogil=True, inline="always")
def _u32_le(data: npt.NDArray[np.uint8], i: int) -> int:
    return (int(data[i]) | (int(data[i + 1]) << 8) | (int(data[i + 2]) << 16)
            | (int(data[i + 3]) << 24))


@njit(cache=True, nogil=True)
def frame_pcap_records(
    data: npt.NDArray[np.uint8], offset: int, big_endian: bool, caplen_limit: int,
    starts: npt.NDArray[np.int64], caplens: npt.NDArray[np.int64],
    wire_lens: npt.NDArray[np.int64], seconds: npt.NDArray[np.int64],
    fractions: npt.NDArray[np.int64],
) -> tuple[int, int, bool]:
    """Frame classic pcap records from byte ``offset`` until the arrays are full or the file
    ends; return ``(records framed, next offset, clean)``.

    ``clean`` is ``False`` when framing stopped at a record it cannot frame (cut short, or a
    captured length above ``caplen_limit``): the caller hands that offset to the Python framer,
    which raises or records the truncation with its usual message.
    """
    size = data.shape[0]
    capacity = starts.shape[0]
    count = 0
    while offset < size and count < capacity:
        if offset + 16 > size:
            return count, offset, False
        if big_endian:
            sec, frac = _u32(data, offset), _u32(data, offset + 4)
            caplen, wire = _u32(data, offset + 8), _u32(data, offset + 12)
        else:
            sec, frac = _u32_le(data, offset), _u32_le(data, offset + 4)
            caplen, wire = _u32_le(data, offset + 8), _u32_le(data, offset + 12)
        start = offset + 16
        if caplen > caplen_limit or start + caplen > size:
            return count, offset, False
        starts[count] = start
        caplens[count] = caplen
        wire_lens[count] = wire
        seconds[count] = sec
        fractions[count] = frac
        count += 1
        offset = start + caplen
    return count, offset, True


@njit(cache=True, nogil=True)
def _dpkt_parses_icmp_safely(data: npt.NDArray[np.uint8], q: int, length: int,
                             deferred: npt.NDArray[np.bool_]) -> bool:
    """Whether dpkt's parse of the ``length``-byte ICMP message at ``q`` ends without an
    exception other than ``dpkt.UnpackError`` (which dpkt swallows). dpkt parses the IPv4 header
    an error message quotes, and that header's payload by its protocol, down any chain of
    quoted ICMP errors; only a protocol in ``deferred`` can fail otherwise."""
    while True:
        if length < 8:  # the ICMP header or the quote's 4 bytes are cut: UnpackError
            return True
        icmp_type = data[q]
        if icmp_type not in DPKT_ICMP_QUOTE_TYPES:
            return True  # echo (header only) or a type dpkt does not parse further
        ip = q + 8
        ip_length = length - 8
        header_len = int(data[ip] & 0x0F) * 4
        if ip_length < 20 or header_len < 20:
            return True  # dpkt.IP raises UnpackError
        total_len = _u16(data, ip + 2)
        end = min(total_len, ip_length) if total_len != 0 else ip_length
        if _u16(data, ip + 6) & 0x1FFF != 0:
            return True  # a later fragment: dpkt keeps its payload as bytes
        proto = int(data[ip + 9])
        if proto != IP_PROTO_ICMP:
            return not deferred[proto]
        q = ip + header_len
        length = max(end - header_len, 0)


@njit(cache=True, nogil=True)
def _ipv4(data: npt.NDArray[np.uint8], p: int, m: int, row: int, deferred: npt.NDArray[np.bool_],
          src_hi: npt.NDArray[np.uint64], src_lo: npt.NDArray[np.uint64],
          dst_hi: npt.NDArray[np.uint64], dst_lo: npt.NDArray[np.uint64],
          family: npt.NDArray[np.uint8], src_port: npt.NDArray[np.int32],
          dst_port: npt.NDArray[np.int32], kind: npt.NDArray[np.uint8],
          ip_proto: npt.NDArray[np.uint8]) -> bool:
    """An IPv4 packet of ``m`` bytes at ``p``; ``False`` if dpkt must decide."""
    if m < 20 or data[p] >> 4 != 4:
        return False
    header_len = int(data[p] & 0x0F) * 4
    total_len = _u16(data, p + 2)
    if header_len < 20 or (total_len != 0 and total_len < header_len):
        return False
    proto = int(data[p + 9])
    # dpkt slices the payload as packet[header_len:total_len] (or to the end if 0)
    end = min(total_len, m) if total_len != 0 else m
    payload = max(end - header_len, 0)
    sport = dport = PORT_NONE
    if _u16(data, p + 6) & 0x1FFF == 0:  # later fragments carry no transport header
        if proto in (IP_PROTO_TCP, IP_PROTO_UDP):
            if payload >= 4:
                sport = _u16(data, p + header_len)
                dport = _u16(data, p + header_len + 2)
        elif proto == IP_PROTO_ICMP:
            if payload > 0:
                if not _dpkt_parses_icmp_safely(data, p + header_len, payload, deferred):
                    return False
                sport = dport = PORT_ICMP
                icmp_type = data[p + header_len]
                if icmp_type in ICMP_ERROR_TYPES:
                    # an error quoting a header: the quoted TCP/UDP ports, if it has them
                    q = p + header_len + 8
                    quoted = payload - 8
                    if quoted >= 20 and data[q] >> 4 == 4:
                        quoted_header = int(data[q] & 0x0F) * 4
                        quoted_proto = data[q + 9]
                        if quoted_header >= 20 and _u16(data, q + 6) & 0x1FFF == 0 and (
                            quoted_proto in (IP_PROTO_TCP, IP_PROTO_UDP)
                        ) and quoted >= quoted_header + 4:
                            sport = _u16(data, q + quoted_header)
                            dport = _u16(data, q + quoted_header + 2)
        elif deferred[proto]:
            return False
    src_hi[row] = 0
    dst_hi[row] = 0
    src_lo[row] = _u32(data, p + 12)
    dst_lo[row] = _u32(data, p + 16)
    family[row] = FAMILY_IPV4
    src_port[row] = sport
    dst_port[row] = dport
    kind[row] = KIND_IPV4
    ip_proto[row] = proto
    return True


@njit(cache=True, nogil=True)
def _ipv6(data: npt.NDArray[np.uint8], p: int, m: int, row: int, deferred: npt.NDArray[np.bool_],
          src_hi: npt.NDArray[np.uint64], src_lo: npt.NDArray[np.uint64],
          dst_hi: npt.NDArray[np.uint64], dst_lo: npt.NDArray[np.uint64],
          family: npt.NDArray[np.uint8], src_port: npt.NDArray[np.int32],
          dst_port: npt.NDArray[np.int32], kind: npt.NDArray[np.uint8],
          ip_proto: npt.NDArray[np.uint8]) -> bool:
    """An IPv6 packet of ``m`` bytes at ``p`` without extension headers; ``False`` otherwise
    (and whenever dpkt must decide)."""
    if m < 40 or data[p] >> 4 != 6:
        return False
    next_header = int(data[p + 6])
    if deferred[next_header]:
        return False
    payload_len = _u16(data, p + 4)
    payload = min(payload_len, m - 40) if payload_len != 0 else m - 40
    sport = dport = PORT_NONE
    if next_header in (IP_PROTO_TCP, IP_PROTO_UDP):
        if payload >= 4:
            sport = _u16(data, p + 40)
            dport = _u16(data, p + 42)
    elif next_header == IP_PROTO_ICMPV6 and payload > 0 and data[p + 40] in ICMPV6_ERROR_TYPES:
        return False  # an error quoting a header
    src_hi[row] = _u64(data, p + 8)
    src_lo[row] = _u64(data, p + 16)
    dst_hi[row] = _u64(data, p + 24)
    dst_lo[row] = _u64(data, p + 32)
    family[row] = FAMILY_IPV6
    src_port[row] = sport
    dst_port[row] = dport
    kind[row] = KIND_IPV6
    ip_proto[row] = next_header
    return True


@njit(cache=True, nogil=True)
def dissect_frames(
    data: npt.NDArray[np.uint8], starts: npt.NDArray[np.int64], caplens: npt.NDArray[np.int64],
    link_types: npt.NDArray[np.int64],
    deferred_v4: npt.NDArray[np.bool_], deferred_v6: npt.NDArray[np.bool_],
    src_mac: npt.NDArray[np.uint64], dst_mac: npt.NDArray[np.uint64],
    src_hi: npt.NDArray[np.uint64], src_lo: npt.NDArray[np.uint64],
    dst_hi: npt.NDArray[np.uint64], dst_lo: npt.NDArray[np.uint64],
    family: npt.NDArray[np.uint8], src_port: npt.NDArray[np.int32],
    dst_port: npt.NDArray[np.int32], kind: npt.NDArray[np.uint8],
    ip_proto: npt.NDArray[np.uint8], handled: npt.NDArray[np.bool_],
) -> None:
    """Dissect frame ``i`` (``caplens[i]`` bytes at ``starts[i]``, link type
    ``link_types[i]``) into row ``i`` of the output columns; ``handled[i]`` is ``False`` for a
    frame left to :class:`~fediot.core.features.pcap.FrameDissector` (its row is then
    undefined)."""
    for row in range(starts.shape[0]):
        s = starts[row]
        n = caplens[row]
        link = link_types[row]
        handled[row] = False
        smac = 0
        dmac = 0
        if link == LINKTYPE_ETHERNET:
            if n < 14:
                continue
            dmac = _u48(data, s)
            smac = _u48(data, s + 6)
            ether_type = _u16(data, s + 12)
            offset = 14
        elif link == LINKTYPE_LINUX_SLL:
            if n < 16:
                continue
            smac = _u48(data, s + 6) if _u16(data, s + 4) == 6 else 0
            ether_type = _u16(data, s + 14)
            offset = 16
        elif link == LINKTYPE_LINUX_SLL2:
            if n < 20:
                continue
            smac = _u48(data, s + 12) if data[s + 11] == 6 else 0
            ether_type = _u16(data, s + 0)
            offset = 20
        elif link in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
            if n == 0:
                continue
            version = data[s] >> 4
            ether_type = ETH_TYPE_IPV4 if version == 4 else (ETH_TYPE_IPV6 if version == 6 else -1)
            if ether_type < 0:
                continue
            offset = 0
        else:
            continue
        if link != LINKTYPE_RAW and link != LINKTYPE_IPV4 and link != LINKTYPE_IPV6:
            truncated_tag = False
            while ether_type in VLAN_TPIDS:
                if n < offset + 4:
                    truncated_tag = True
                    break
                ether_type = _u16(data, s + offset + 2)
                offset += 4
            if truncated_tag:
                continue
        src_mac[row] = smac
        dst_mac[row] = dmac
        p = s + offset
        m = n - offset
        if ether_type == ETH_TYPE_IPV4:
            handled[row] = _ipv4(data, p, m, row, deferred_v4, src_hi, src_lo, dst_hi, dst_lo,
                                 family, src_port, dst_port, kind, ip_proto)
        elif ether_type == ETH_TYPE_IPV6:
            handled[row] = _ipv6(data, p, m, row, deferred_v6, src_hi, src_lo, dst_hi, dst_lo,
                                 family, src_port, dst_port, kind, ip_proto)
        elif ether_type in (ETH_TYPE_ARP, ETH_TYPE_RARP):
            if m < 28:  # dpkt's fixed ARP header
                continue
            hw_len = int(data[p + 4])
            src_hi[row] = 0
            dst_hi[row] = 0
            family[row] = FAMILY_NONE
            # tshark's arp.src.proto_ipv4 exists only for IPv4 protocol addresses
            if _u16(data, p + 2) == ETH_TYPE_IPV4 and data[p + 5] == 4:
                if hw_len == 6:
                    src_lo[row] = _u32(data, p + 14)
                    dst_lo[row] = _u32(data, p + 24)
                    family[row] = FAMILY_IPV4
                elif m >= 16 + 2 * hw_len:
                    src_lo[row] = _u32(data, p + 8 + hw_len)
                    dst_lo[row] = _u32(data, p + 12 + 2 * hw_len)
                    family[row] = FAMILY_IPV4
            src_port[row] = PORT_ARP
            dst_port[row] = PORT_ARP
            kind[row] = KIND_ARP
            ip_proto[row] = 0
            handled[row] = True
        else:
            family[row] = FAMILY_NONE
            src_port[row] = PORT_NONE
            dst_port[row] = PORT_NONE
            kind[row] = KIND_OTHER
            ip_proto[row] = 0
            handled[row] = True


class DissectedFrames:
    """Column buffers for :func:`dissect_frames`, one row per frame.

    Parameters
    ----------
    n
        Number of frames.
    """

    def __init__(self, n: int) -> None:
        self.src_mac = np.zeros(n, dtype=np.uint64)
        self.dst_mac = np.zeros(n, dtype=np.uint64)
        self.src_hi = np.zeros(n, dtype=np.uint64)
        self.src_lo = np.zeros(n, dtype=np.uint64)
        self.dst_hi = np.zeros(n, dtype=np.uint64)
        self.dst_lo = np.zeros(n, dtype=np.uint64)
        self.family = np.zeros(n, dtype=np.uint8)
        self.src_port = np.full(n, PORT_NONE, dtype=np.int32)
        self.dst_port = np.full(n, PORT_NONE, dtype=np.int32)
        self.kind = np.zeros(n, dtype=np.uint8)
        self.ip_proto = np.zeros(n, dtype=np.uint8)
        self.handled = np.zeros(n, dtype=np.bool_)

    def dissect(
        self,
        data: npt.NDArray[np.uint8],
        starts: npt.NDArray[np.int64],
        caplens: npt.NDArray[np.int64],
        link_types: npt.NDArray[np.int64],
    ) -> None:
        """Run :func:`dissect_frames` on these buffers."""
        dissect_frames(
            data, starts, caplens, link_types, _DEFERRED_V4, _DEFERRED_V6,
            self.src_mac, self.dst_mac, self.src_hi, self.src_lo, self.dst_hi, self.dst_lo,
            self.family, self.src_port, self.dst_port, self.kind, self.ip_proto, self.handled,
        )


def address_strings(
    family: npt.NDArray[np.uint8],
    high: npt.NDArray[np.uint64],
    low: npt.NDArray[np.uint64],
    cache: dict[tuple[int, int, int], str],
) -> npt.NDArray[np.object_]:
    """Addresses as the strings ``socket.inet_ntop`` gives (``""`` for :data:`FAMILY_NONE`).

    Each distinct address is formatted once (``cache`` keeps them across calls, so a capture
    read in chunks shares one string object per address, as the per-frame dissector does).

    Parameters
    ----------
    family
        Per row :data:`FAMILY_NONE`, :data:`FAMILY_IPV4` or :data:`FAMILY_IPV6`.
    high, low
        The address as a 128-bit number (IPv4: ``low`` alone).
    cache
        ``(family, high, low)`` → string; cleared when it reaches about a million entries.
    """
    out = np.full(len(family), "", dtype=object)
    if len(cache) >= _ADDRESS_CACHE_LIMIT:
        cache.clear()
    for fam, af, width in ((FAMILY_IPV4, socket.AF_INET, 4), (FAMILY_IPV6, socket.AF_INET6, 16)):
        rows = np.flatnonzero(family == fam)
        if not len(rows):
            continue
        if fam == FAMILY_IPV4:
            codes, uniques = pd.factorize(low[rows])
            pairs = [(0, int(v)) for v in np.asarray(uniques, dtype=np.uint64).tolist()]
        else:
            both = np.column_stack([high[rows], low[rows]])
            unique_rows, codes = np.unique(both, axis=0, return_inverse=True)
            pairs = [(int(h), int(v)) for h, v in unique_rows.tolist()]
        strings = np.empty(len(pairs), dtype=object)
        for i, (h, v) in enumerate(pairs):
            key = (fam, h, v)
            text = cache.get(key)
            if text is None:
                text = socket.inet_ntop(af, ((h << 64) | v).to_bytes(width, "big"))
                cache[key] = text
            strings[i] = text
        out[rows] = strings[np.asarray(codes).reshape(-1)]
    return out
