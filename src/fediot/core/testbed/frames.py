"""Vectorised building blocks of simulated traffic: frame columns, timing, TCP exchanges, bulk
transfers and media packetisation.

Everything here works on whole arrays of sessions or packets at once; behaviours (benign and
attack) compose these blocks and never loop over packets in Python.

Frame lengths are Ethernet wire lengths without FCS, as tshark's ``frame.len`` reports them:
at least 60 bytes (padding) and at most 1514.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Final, Protocol

import numpy as np
import numpy.typing as npt

from fediot.core.features.packets import IP_PROTO_TCP, KIND_IPV4
from fediot.core.testbed.network import Host, IntArray, macs_of

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MIN_FRAME: Final[int] = 60
MAX_FRAME: Final[int] = 1514
ETH_IP_UDP: Final[int] = 14 + 20 + 8
"""Ethernet + IPv4 + UDP header bytes before a UDP payload."""

FIN: Final[int] = 0x01
SYN: Final[int] = 0x02
RST: Final[int] = 0x04
PSH: Final[int] = 0x08
ACK: Final[int] = 0x10
PSH_ACK: Final[int] = PSH | ACK
ARP_REQUEST: Final[int] = 1
ARP_REPLY: Final[int] = 2
ICMP_ECHO_REPLY: Final[int] = 0
ICMP_UNREACHABLE: Final[int] = 3
ICMP_ECHO_REQUEST: Final[int] = 8
ICMPV6_ROUTER_SOLICIT: Final[int] = 133
ICMPV6_NEIGHBOR_SOLICIT: Final[int] = 135
ICMPV6_NEIGHBOR_ADVERT: Final[int] = 136


@dataclass(frozen=True)
class Frames:
    """Simulated frames as columns (unsorted; one row per frame).

    Parameters
    ----------
    t
        float64 epoch seconds.
    length
        int64 wire length in bytes.
    src_mac, dst_mac
        uint64 MAC addresses.
    src_ip, dst_ip
        int64 IP codes (see :mod:`fediot.core.testbed.network`).
    sport, dport
        int32 ports, or the ``PORT_*`` placeholders of
        :mod:`fediot.core.features.packets`.
    kind, proto
        uint8 ``KIND_*`` and IP protocol number.
    flags
        uint8 detail the features never see but a pcap needs: TCP flags, ARP opcode or ICMP
        type.
    """

    t: FloatArray
    length: npt.NDArray[np.int64]
    src_mac: npt.NDArray[np.uint64]
    dst_mac: npt.NDArray[np.uint64]
    src_ip: IntArray
    dst_ip: IntArray
    sport: npt.NDArray[np.int32]
    dport: npt.NDArray[np.int32]
    kind: npt.NDArray[np.uint8]
    proto: npt.NDArray[np.uint8]
    flags: npt.NDArray[np.uint8]

    def __len__(self) -> int:
        return len(self.t)

    @classmethod
    def build(
        cls,
        t: FloatArray,
        length: npt.ArrayLike,
        *,
        src_mac: npt.ArrayLike,
        dst_mac: npt.ArrayLike,
        src_ip: npt.ArrayLike,
        dst_ip: npt.ArrayLike,
        sport: npt.ArrayLike,
        dport: npt.ArrayLike,
        kind: npt.ArrayLike = KIND_IPV4,
        proto: npt.ArrayLike = IP_PROTO_TCP,
        flags: npt.ArrayLike = 0,
    ) -> Frames:
        """Columns from arrays or scalars (scalars are repeated to ``len(t)``)."""
        n = len(t)

        def column(values: npt.ArrayLike, dtype: type[np.generic]) -> npt.NDArray[np.generic]:
            array = np.asarray(values)
            if array.ndim == 0:
                return np.full(n, array, dtype=dtype)
            return array.astype(dtype, copy=False)

        length_column = np.clip(column(length, np.int64), MIN_FRAME, None)
        return cls(
            t=np.asarray(t, dtype=np.float64),
            length=length_column.astype(np.int64),
            src_mac=column(src_mac, np.uint64).astype(np.uint64),
            dst_mac=column(dst_mac, np.uint64).astype(np.uint64),
            src_ip=column(src_ip, np.int64).astype(np.int64),
            dst_ip=column(dst_ip, np.int64).astype(np.int64),
            sport=column(sport, np.int32).astype(np.int32),
            dport=column(dport, np.int32).astype(np.int32),
            kind=column(kind, np.uint8).astype(np.uint8),
            proto=column(proto, np.uint8).astype(np.uint8),
            flags=column(flags, np.uint8).astype(np.uint8),
        )

    @classmethod
    def empty(cls) -> Frames:
        return cls.build(np.empty(0), 0, src_mac=0, dst_mac=0, src_ip=0, dst_ip=0, sport=0, dport=0)

    @classmethod
    def concat(cls, parts: Sequence[Frames]) -> Frames:
        parts = [p for p in parts if len(p)]
        if not parts:
            return cls.empty()
        return cls(
            **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)}
        )

    def take(self, index: npt.NDArray[np.intp] | npt.NDArray[np.bool_]) -> Frames:
        return Frames(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


def between(
    local: Host,
    peer_ip: int | IntArray,
    t: FloatArray,
    length: npt.ArrayLike,
    outbound: BoolArray | bool,
    *,
    local_port: npt.ArrayLike,
    peer_port: npt.ArrayLike,
    proto: int = IP_PROTO_TCP,
    flags: npt.ArrayLike = 0,
    kind: int = KIND_IPV4,
    local_ip: int | None = None,
) -> Frames:
    """Frames of a conversation between ``local`` and peers, each in its own direction.

    ``outbound`` frames go local → peer, the others peer → local. Scalars are broadcast.
    ``local_ip`` overrides the local host's address (IPv6 link-local codes).
    """
    n = len(t)
    out = np.broadcast_to(np.asarray(outbound, dtype=bool), (n,))
    peer = np.broadcast_to(np.asarray(peer_ip, dtype=np.int64), (n,))
    peer_mac = macs_of(peer) if n else np.empty(0, dtype=np.uint64)
    own_ip = local.ip if local_ip is None else local_ip
    lport = np.broadcast_to(np.asarray(local_port, dtype=np.int64), (n,))
    pport = np.broadcast_to(np.asarray(peer_port, dtype=np.int64), (n,))
    return Frames.build(
        t,
        length,
        src_mac=np.where(out, np.uint64(local.mac), peer_mac),
        dst_mac=np.where(out, peer_mac, np.uint64(local.mac)),
        src_ip=np.where(out, own_ip, peer),
        dst_ip=np.where(out, peer, own_ip),
        sport=np.where(out, lport, pport),
        dport=np.where(out, pport, lport),
        kind=kind,
        proto=proto,
        flags=flags,
    )


# --- timing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Diurnal:
    """Time-of-day modulation of an activity rate: ``1 + amplitude·cos(2π(hour − peak)/24)``.

    Parameters
    ----------
    amplitude
        0 (flat) to 1 (silent at the trough); default 0.6.
    peak_hour
        Local hour of the busiest time; default 19 (evening at home).
    utc_offset_hours
        Local time zone; default 3 (Israel summer time, where and when N-BaIoT was recorded).
    """

    amplitude: float = 0.6
    peak_hour: float = 19.0
    utc_offset_hours: float = 3.0

    def factor(self, t: FloatArray) -> FloatArray:
        hour = np.mod(t / 3600.0 + self.utc_offset_hours, 24.0)
        return 1.0 + self.amplitude * np.cos(2.0 * np.pi * (hour - self.peak_hour) / 24.0)

    @property
    def max_factor(self) -> float:
        return 1.0 + self.amplitude


FLAT: Final[Diurnal] = Diurnal(amplitude=0.0)


def poisson_times(
    rng: np.random.Generator, t0: float, t1: float, rate: float, diurnal: Diurnal = FLAT
) -> FloatArray:
    """Sorted event times of a Poisson process on [t0, t1) whose rate follows ``diurnal``."""
    peak = rate * diurnal.max_factor
    n = int(rng.poisson(peak * max(t1 - t0, 0.0)))
    times = np.sort(rng.uniform(t0, t1, n))
    keep = rng.random(n) * diurnal.max_factor < diurnal.factor(times)
    return times[keep]


def periodic_times(
    rng: np.random.Generator,
    t0: float,
    t1: float,
    period: float,
    *,
    phase: float = 0.0,
    jitter: float = 0.02,
) -> FloatArray:
    """Ticks ``phase + k·period`` in [t0, t1), each delayed by a half-normal jitter (``jitter``
    is its scale as a fraction of the period).

    The grid is absolute, so consecutive windows of one capture continue the same clock.
    """
    first = int(np.ceil((t0 - phase) / period))
    last = int(np.ceil((t1 - phase) / period))
    ticks = phase + period * np.arange(first, last, dtype=np.float64)
    # One-sided jitter: a tick never moves before its grid point, so no frame of a later
    # window can land in an earlier one (which keeps small captures prefixes of large ones).
    return np.sort(ticks + np.abs(rng.normal(0.0, jitter * period, len(ticks))))


def spread(rng: np.random.Generator, mean: npt.ArrayLike, sigma: float = 0.35) -> FloatArray:
    """Positive delays around ``mean`` (lognormal with median ``mean``)."""
    mean_array = np.asarray(mean, dtype=np.float64)
    return mean_array * np.exp(rng.normal(0.0, sigma, mean_array.shape))


def gaps(rng: np.random.Generator, n: int, mean: float, shape: float = 4.0) -> FloatArray:
    """``n`` inter-packet gaps with this mean (gamma: regular but not clockwork)."""
    return rng.gamma(shape, mean / shape, n)


# --- TCP ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TcpStyle:
    """How one device's TCP stack frames segments.

    Parameters
    ----------
    timestamps
        True for Linux stacks (12-byte timestamp option in every segment: a bare ACK is 66
        bytes, a SYN 74); False for embedded stacks (lwIP-like: ACK 60 bytes padded, SYN 62).
    mss
        Maximum segment size announced (default 1460).
    """

    timestamps: bool = True
    mss: int = 1460

    @property
    def header(self) -> int:
        return 14 + 20 + (32 if self.timestamps else 20)

    @property
    def ack(self) -> int:
        return max(MIN_FRAME, self.header)

    @property
    def syn(self) -> int:
        return 74 if self.timestamps else 62

    @property
    def max_payload(self) -> int:
        return min(self.mss, MAX_FRAME - self.header)

    def data(self, payload: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Frame lengths of segments carrying ``payload`` bytes."""
        return np.maximum(MIN_FRAME, self.header + np.asarray(payload, dtype=np.int64))


@dataclass(frozen=True)
class Step:
    """One frame of a fixed-shape exchange.

    Parameters
    ----------
    outbound
        True: local host → peer.
    length
        Frame length range (inclusive); equal bounds for a fixed size.
    delay
        Median seconds after the previous step (lognormal spread).
    flags
        TCP flags (or ICMP type / ARP opcode for those protocols).
    """

    outbound: bool
    length: tuple[int, int]
    delay: float
    flags: int = PSH_ACK


def out(length: int | tuple[int, int], delay: float, flags: int = PSH_ACK) -> Step:
    """An outbound :class:`Step`."""
    bounds = (length, length) if isinstance(length, int) else length
    return Step(True, bounds, delay, flags)


def inb(length: int | tuple[int, int], delay: float, flags: int = PSH_ACK) -> Step:
    """An inbound :class:`Step`."""
    bounds = (length, length) if isinstance(length, int) else length
    return Step(False, bounds, delay, flags)


def tcp_open(style: TcpStyle, rtt: float) -> list[Step]:
    """Three-way handshake opened by the local host."""
    return [out(style.syn, 0.0, SYN), inb(style.syn, rtt, SYN | ACK), out(style.ack, 2e-4, ACK)]


def tcp_close(style: TcpStyle, rtt: float) -> list[Step]:
    """Orderly close started by the local host."""
    return [
        out(style.ack, 1e-3, FIN | ACK),
        inb(style.ack, rtt, FIN | ACK),
        out(style.ack, 2e-4, ACK),
    ]


def tls_open(style: TcpStyle, rtt: float, certificate_segments: int = 3) -> list[Step]:
    """TCP handshake plus a TLS 1.2 full handshake (client side)."""
    full = style.data(style.max_payload)
    full_len = int(full)
    steps = [*tcp_open(style, rtt), out(int(style.data(220)), 1e-3), inb(style.ack, rtt, ACK)]
    steps += [inb(full_len, 5e-4) for _ in range(certificate_segments)]
    steps += [
        inb((int(style.data(300)), int(style.data(900))), 3e-4),
        out(style.ack, 2e-4, ACK),
        out((int(style.data(126)), int(style.data(190))), 0.02),
        inb(int(style.data(51)), rtt),
    ]
    return steps


@dataclass(frozen=True)
class Expanded:
    """Flat packets of many sessions of one script, in session-major order."""

    t: FloatArray
    length: npt.NDArray[np.int64]
    outbound: BoolArray
    flags: npt.NDArray[np.uint8]
    session: npt.NDArray[np.intp]


def expand(rng: np.random.Generator, starts: FloatArray, steps: Sequence[Step]) -> Expanded:
    """Every session of ``steps``, one starting at each of ``starts``."""
    n, k = len(starts), len(steps)
    if n == 0 or k == 0:
        return Expanded(
            np.empty(0), np.empty(0, np.int64), np.empty(0, bool), np.empty(0, np.uint8),
            np.empty(0, np.intp),
        )
    delay = np.array([s.delay for s in steps], dtype=np.float64)
    offsets = np.cumsum(spread(rng, np.broadcast_to(delay, (n, k))), axis=1)
    low = np.array([s.length[0] for s in steps], dtype=np.int64)
    high = np.array([s.length[1] for s in steps], dtype=np.int64)
    length = rng.integers(low, high + 1, size=(n, k))
    return Expanded(
        t=(starts[:, None] + offsets).ravel(),
        length=length.ravel(),
        outbound=np.tile(np.array([s.outbound for s in steps]), n),
        flags=np.tile(np.array([s.flags for s in steps], dtype=np.uint8), n),
        session=np.repeat(np.arange(n), k),
    )


def tcp_frames(window: Window, peer: int | IntArray, flat: Expanded, local_port: IntArray,
               peer_port: int | IntArray) -> Frames:
    """TCP frames of expanded sessions between the window's host and ``peer``.

    ``peer``, ``local_port`` and ``peer_port`` are per session (arrays indexed by
    ``flat.session``) or, for ``peer`` and ``peer_port``, one value for all.
    """
    peer_array = np.asarray(peer, dtype=np.int64)
    port_array = np.asarray(peer_port, dtype=np.int64)
    return between(
        window.host,
        peer_array[flat.session] if peer_array.ndim else int(peer_array),
        flat.t,
        flat.length,
        flat.outbound,
        local_port=np.asarray(local_port)[flat.session],
        peer_port=port_array[flat.session] if port_array.ndim else int(port_array),
        proto=IP_PROTO_TCP,
        flags=flat.flags,
    )


def bulk(
    rng: np.random.Generator,
    starts: FloatArray,
    payload_bytes: npt.NDArray[np.int64],
    *,
    outbound: bool,
    style: TcpStyle,
    rtt: float,
    pace: float,
) -> Expanded:
    """A TCP bulk transfer per session: full segments, a short last one, and the receiver's
    ACK of every second segment (seen ``rtt`` later for uploads, at once for downloads)."""
    mss = style.max_payload
    segments = np.maximum(1, -(-payload_bytes // mss)).astype(np.int64)
    total = int(segments.sum())
    session = np.repeat(np.arange(len(starts)), segments)
    first = np.cumsum(segments) - segments
    position = np.arange(total) - np.repeat(first, segments)
    step = gaps(rng, total, pace, shape=2.0)
    clock = np.cumsum(step)
    clock -= np.repeat(clock[first] - step[first], segments)
    t = starts[session] + clock
    last = position == segments[session] - 1
    payload = np.where(last, payload_bytes[session] - (segments[session] - 1) * mss, mss)
    data_len = style.data(payload)
    acked = (position % 2 == 1) | last
    ack_delay = spread(rng, np.full(int(acked.sum()), rtt if outbound else 2e-4), 0.2)
    t_all = np.concatenate([t, t[acked] + ack_delay])
    length = np.concatenate([data_len, np.full(int(acked.sum()), style.ack, dtype=np.int64)])
    direction = np.concatenate([np.full(total, outbound), np.full(int(acked.sum()), not outbound)])
    flags = np.concatenate(
        [np.where(last, PSH_ACK, ACK).astype(np.uint8), np.full(int(acked.sum()), ACK, np.uint8)]
    )
    return Expanded(t_all, length, direction, flags, np.concatenate([session, session[acked]]))


def packetise(
    rng: np.random.Generator,
    frame_times: FloatArray,
    frame_bytes: npt.NDArray[np.int64],
    *,
    max_payload: int,
    header: int,
    pace: float,
) -> tuple[FloatArray, npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """Media frames → packets: full-size packets and a remainder, sent ``pace`` apart.

    Returns packet times, frame lengths and each packet's media-frame index.
    """
    count = np.maximum(1, -(-frame_bytes // max_payload)).astype(np.int64)
    total = int(count.sum())
    frame = np.repeat(np.arange(len(frame_times)), count)
    first = np.cumsum(count) - count
    position = np.arange(total) - np.repeat(first, count)
    last = position == count[frame] - 1
    payload = np.where(last, frame_bytes[frame] - (count[frame] - 1) * max_payload, max_payload)
    t = frame_times[frame] + position * pace * rng.uniform(0.7, 1.3, total)
    return t, np.clip(header + payload, MIN_FRAME, MAX_FRAME), frame


def ephemeral_ports(rng: np.random.Generator, n: int) -> npt.NDArray[np.int64]:
    """Linux's default ephemeral range 32768–60999."""
    return rng.integers(32768, 61000, size=n, dtype=np.int64)


# --- behaviours --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One slice [t0, t1) of a capture, handed to every behaviour in turn.

    Parameters
    ----------
    t0, t1
        The slice, epoch seconds. Sessions starting in it may run past ``t1``.
    host
        The device the capture is recorded at.
    rng
        Random numbers for this behaviour in this slice.
    constants
        Seed of the values that stay fixed for a whole capture (bound ports, chosen servers):
        the same in every slice, so :meth:`constant_rng` replays the same draws.
    capture_start
        Epoch time of the capture's first slice.
    """

    t0: float
    t1: float
    host: Host
    rng: np.random.Generator
    constants: np.random.SeedSequence
    capture_start: float

    def constant_rng(self) -> np.random.Generator:
        return np.random.default_rng(self.constants)


class Behaviour(Protocol):
    """A source of traffic: emits its frames for one window, reports its mean rate."""

    def emit(self, window: Window) -> Frames: ...

    def rate(self) -> float:
        """Mean frames per second (used only to size simulation windows)."""
        ...
