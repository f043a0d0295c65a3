"""Benign traffic sources of the simulated IoT devices, one small class per idea.

Each behaviour is a frozen dataclass implementing :class:`~fediot.core.testbed.frames.Behaviour`:
``emit(window)`` returns its frames for one slice of a capture, vectorised over its periodic
ticks or Poisson events, and ``rate()`` its mean frames per second. Device profiles
(:mod:`fediot.core.testbed.devices`) compose them with device-specific parameters.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fediot.core.features.packets import (
    IP_PROTO_ICMP,
    IP_PROTO_ICMPV6,
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    KIND_ARP,
    KIND_IPV6,
    PORT_ARP,
    PORT_ICMP,
    PORT_NONE,
)
from fediot.core.testbed.frames import (
    ACK,
    ARP_REPLY,
    ARP_REQUEST,
    ETH_IP_UDP,
    FIN,
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    ICMPV6_NEIGHBOR_ADVERT,
    ICMPV6_NEIGHBOR_SOLICIT,
    ICMPV6_ROUTER_SOLICIT,
    MAX_FRAME,
    PSH_ACK,
    RST,
    SYN,
    Diurnal,
    Frames,
    TcpStyle,
    Window,
    between,
    bulk,
    ephemeral_ports,
    expand,
    gaps,
    inb,
    out,
    packetise,
    periodic_times,
    poisson_times,
    spread,
    tcp_close,
    tcp_frames,
    tls_open,
)
from fediot.core.testbed.network import (
    BROADCAST_MAC,
    GATEWAY,
    LAPTOP,
    PHONE,
    IntArray,
    ip,
    ipv6_link_local,
    macs_of,
)

IGMP_PROTO = 2
_PORT_SPAN = 61000 - 32768
SSDP_GROUP = ip("239.255.255.250")
MDNS_GROUP = ip("224.0.0.251")
ALL_HOSTS_GROUP = ip("224.0.0.1")
IGMPV3_REPORTS = ip("224.0.0.22")


# --- link-layer and LAN housekeeping -----------------------------------------------------------


@dataclass(frozen=True)
class ArpChatter:
    """ARP on the LAN: the router re-resolves the device, the device re-resolves the router.

    Parameters
    ----------
    router_period
        Seconds between the router's who-has requests for the device (broadcast), each
        answered by the device. Default 120.
    device_period
        Seconds between the device's who-has requests for the router. Default 300.
    """

    router_period: float = 120.0
    device_period: float = 300.0

    def rate(self) -> float:
        return 2.0 / self.router_period + 2.0 / self.device_period

    def emit(self, window: Window) -> Frames:
        rng, host = window.rng, window.host
        phase = window.constant_rng().uniform(0.0, 1.0, 2)
        parts = []
        for period, asker_is_router, p in (
            (self.router_period, True, phase[0]), (self.device_period, False, phase[1])
        ):
            ticks = periodic_times(rng, window.t0, window.t1, period, phase=p * period, jitter=0.05)
            asker, target = (GATEWAY, host) if asker_is_router else (host, GATEWAY)
            reply_at = ticks + spread(rng, np.full(len(ticks), 1.5e-3))
            n = len(ticks)
            parts.append(
                Frames.build(
                    np.concatenate([ticks, reply_at]),
                    60,
                    src_mac=np.repeat(np.array([asker.mac, target.mac], np.uint64), n),
                    dst_mac=np.repeat(np.array([BROADCAST_MAC, asker.mac], np.uint64), n),
                    src_ip=np.repeat([asker.ip, target.ip], n),
                    dst_ip=np.repeat([target.ip, asker.ip], n),
                    sport=PORT_ARP,
                    dport=PORT_ARP,
                    kind=KIND_ARP,
                    proto=0,
                    flags=np.repeat(np.array([ARP_REQUEST, ARP_REPLY], np.uint8), n),
                )
            )
        return Frames.concat(parts)


@dataclass(frozen=True)
class DhcpRenewal:
    """DHCP lease renewals (unicast REQUEST 68→67, ACK back) every half lease.

    Parameters
    ----------
    lease
        Lease time in seconds (default 7200, a TP-Link default).
    request_length
        Frame length of the device's REQUEST (its option list makes it device-specific).
    """

    lease: float = 7200.0
    request_length: int = 342

    def rate(self) -> float:
        return 2.0 / (self.lease / 2.0)

    def emit(self, window: Window) -> Frames:
        rng = window.rng
        phase = window.constant_rng().uniform(0.0, self.lease / 2.0)
        ticks = periodic_times(rng, window.t0, window.t1, self.lease / 2.0, phase=phase, jitter=0.0)
        flat = expand(rng, ticks, [out(self.request_length, 0.0, 0), inb(590, 4e-3, 0)])
        return between(window.host, GATEWAY.ip, flat.t, flat.length, flat.outbound,
                       local_port=68, peer_port=67, proto=IP_PROTO_UDP)


@dataclass(frozen=True)
class NtpSync:
    """SNTP polls (90-byte request and answer) round-robin over a few servers.

    Parameters
    ----------
    servers
        Server IP codes.
    period
        Seconds between polls.
    rtt
        Median round trip to the servers.
    fixed_port
        True: the client binds port 123 (ntpd); False: a fresh ephemeral port (sntp).
    """

    servers: tuple[int, ...]
    period: float = 1024.0
    rtt: float = 0.06
    fixed_port: bool = False

    def rate(self) -> float:
        return 2.0 / self.period

    def emit(self, window: Window) -> Frames:
        rng = window.rng
        phase = window.constant_rng().uniform(0.0, self.period)
        ticks = periodic_times(rng, window.t0, window.t1, self.period, phase=phase, jitter=0.01)
        tick_index = np.round((ticks - phase) / self.period).astype(np.int64)
        server = np.asarray(self.servers, dtype=np.int64)[tick_index % len(self.servers)]
        flat = expand(rng, ticks, [out(90, 0.0, 0), inb(90, self.rtt, 0)])
        local = (np.full(len(ticks), 123) if self.fixed_port else ephemeral_ports(rng, len(ticks)))
        return between(window.host, server[flat.session], flat.t, flat.length, flat.outbound,
                       local_port=local[flat.session], peer_port=123, proto=IP_PROTO_UDP)


@dataclass(frozen=True)
class DnsLookups:
    """A resolver re-asking for the device's cloud hostnames when their TTLs run out.

    Parameters
    ----------
    server
        DNS server IP code (the router, or a hard-coded public resolver).
    ttls
        One TTL (seconds) per hostname the firmware uses.
    query_length, answer_length
        Frame length ranges of queries and answers.
    rtt
        Median resolver round trip.
    """

    server: int
    ttls: tuple[float, ...]
    query_length: tuple[int, int] = (72, 90)
    answer_length: tuple[int, int] = (88, 240)
    rtt: float = 0.025

    def rate(self) -> float:
        return float(sum(2.0 / ttl for ttl in self.ttls))

    def emit(self, window: Window) -> Frames:
        rng = window.rng
        phases = window.constant_rng().uniform(0.0, 1.0, len(self.ttls))
        ticks = np.concatenate([
            periodic_times(rng, window.t0, window.t1, ttl, phase=p * ttl, jitter=0.01)
            for ttl, p in zip(self.ttls, phases, strict=True)
        ])
        return dns_exchanges(window, ticks, self.server, self.query_length, self.answer_length,
                             self.rtt)


def dns_exchanges(window: Window, starts: npt.NDArray[np.float64], server: int,
                  query_length: tuple[int, int] = (72, 90),
                  answer_length: tuple[int, int] = (88, 240), rtt: float = 0.025) -> Frames:
    """One query/answer pair per start time, each from a fresh source port."""
    rng = window.rng
    flat = expand(rng, np.sort(starts), [out(query_length, 0.0, 0), inb(answer_length, rtt, 0)])
    local = ephemeral_ports(rng, len(starts))
    return between(window.host, server, flat.t, flat.length, flat.outbound,
                   local_port=local[flat.session], peer_port=53, proto=IP_PROTO_UDP)


@dataclass(frozen=True)
class PingCheck:
    """Connectivity checks: ICMP echo (98-byte frames) to a target, answered after ``rtt``;
    optionally the neighbour probe of a Linux target on the LAN.

    Linux marks a neighbour entry STALE some 15–45 s after its last confirmation; sending the
    echo reply through a STALE entry moves it to DELAY and, 5 s later, the target probes the
    device with a unicast ARP request, which the device answers. That is the real Danmini
    doorbell's pattern: each 98-byte ping to the (Linux) router is followed, 5.00–5.12 s later,
    by a 60-byte row on the same channel whose reverse direction's last frame is 60 bytes too
    (``HH_L5_magnitude`` = √2·60).

    Parameters
    ----------
    target
        IP code pinged.
    period
        Seconds between pings (default 60).
    count
        Echo requests per check, one per second (default 1).
    rtt
        Median round trip (default 2 ms).
    jitter
        Scale of each ping's half-normal delay behind its grid point, as a fraction of the
        period (default 0.02).
    arp_probe
        Probability that a check is followed by the target's neighbour probe (default 0: the
        target is not on the LAN, or its stack does not probe).
    arp_probe_delay
        Seconds from the ping to the probe (default 5, Linux's ``delay_first_probe_time``).
    """

    target: int
    period: float = 60.0
    count: int = 1
    rtt: float = 0.002
    jitter: float = 0.02
    arp_probe: float = 0.0
    arp_probe_delay: float = 5.0

    def rate(self) -> float:
        return 2.0 * (self.count + self.arp_probe) / self.period

    def emit(self, window: Window) -> Frames:
        rng = window.rng
        phase = window.constant_rng().uniform(0.0, self.period)
        ticks = periodic_times(rng, window.t0, window.t1, self.period, phase=phase,
                               jitter=self.jitter)
        starts = (ticks[:, None] + np.arange(self.count)[None, :] * 1.0).ravel()
        flat = expand(rng, starts, [out(98, 0.0, ICMP_ECHO_REQUEST), inb(98, self.rtt,
                                                                        ICMP_ECHO_REPLY)])
        pings = between(window.host, self.target, flat.t, flat.length, flat.outbound,
                        local_port=PORT_ICMP, peer_port=PORT_ICMP, proto=IP_PROTO_ICMP,
                        flags=flat.flags)
        if self.arp_probe <= 0:
            return pings
        probed = ticks[rng.random(len(ticks)) < self.arp_probe]
        asked = probed + self.arp_probe_delay + np.abs(rng.normal(0.0, 0.03, len(probed)))
        return Frames.concat([pings, arp_exchange(window, asked, self.target, unicast=True,
                                                  device_asks=False)])


def arp_exchange(window: Window, times: npt.NDArray[np.float64], peer: int,
                 unicast: bool = False, device_asks: bool = True) -> Frames:
    """ARP who-has/is-at pairs between the window's host and a LAN ``peer`` (60-byte frames).

    ``device_asks``: the host asks (broadcast, or ``unicast`` to the peer's MAC, as a
    neighbour probe does) and the peer answers 1.5 ms later; otherwise the peer asks and the
    host answers.
    """
    rng, host = window.rng, window.host
    n = len(times)
    peer_mac = int(macs_of(peer)[0])
    asker_mac, answer_mac = (host.mac, peer_mac) if device_asks else (peer_mac, host.mac)
    asker_ip, answer_ip = (host.ip, peer) if device_asks else (peer, host.ip)
    request_to = answer_mac if unicast else BROADCAST_MAC
    reply_at = times + spread(rng, np.full(n, 1.5e-3))
    return Frames.build(
        np.concatenate([times, reply_at]), 60,
        src_mac=np.repeat(np.array([asker_mac, answer_mac], np.uint64), n),
        dst_mac=np.repeat(np.array([request_to, asker_mac], np.uint64), n),
        src_ip=np.repeat([asker_ip, answer_ip], n), dst_ip=np.repeat([answer_ip, asker_ip], n),
        sport=PORT_ARP, dport=PORT_ARP, kind=KIND_ARP, proto=0,
        flags=np.repeat(np.array([ARP_REQUEST, ARP_REPLY], np.uint8), n),
    )


@dataclass(frozen=True)
class PeriodicConnect:
    """A status check on a fresh TCP connection every ``period`` seconds: DNS lookup (with a
    retry), three-way handshake, the server's short message, the device's ACK, the server's
    reset.

    The real Danmini doorbell does this every 1,814 s: two 78-byte queries to the router, then
    a 74-byte SYN and 66-byte ACKs to its cloud.

    Parameters
    ----------
    server, port
        Cloud endpoint.
    dns_server
        Resolver asked first.
    period
        Seconds between checks (default 1800).
    query_length
        Frame length of the DNS query (default 78).
    retry_probability
        Probability that a second query follows 1–3 s later (default 0.9).
    message_payload
        TCP payload range of the server's message (default 40–200 bytes).
    rtt
        Median round trip to the server (default 0.12 s).
    style
        The device's TCP framing.
    """

    server: int
    port: int
    dns_server: int
    period: float = 1800.0
    query_length: int = 78
    retry_probability: float = 0.9
    message_payload: tuple[int, int] = (40, 200)
    rtt: float = 0.12
    style: TcpStyle = field(default_factory=TcpStyle)

    def rate(self) -> float:
        return 11.0 / self.period

    def emit(self, window: Window) -> Frames:
        rng, style = window.rng, self.style
        phase = window.constant_rng().uniform(0.0, self.period)
        ticks = periodic_times(rng, window.t0, window.t1, self.period, phase=phase,
                               jitter=2e-4)
        n = len(ticks)
        if n == 0:
            return Frames.empty()
        retry = ticks[rng.random(n) < self.retry_probability] + rng.uniform(0.9, 3.2)
        dns = dns_exchanges(window, np.concatenate([ticks, retry]), self.dns_server,
                            (self.query_length, self.query_length), rtt=0.02)
        low, high = (int(v) for v in style.data(np.asarray(self.message_payload)))
        flat = expand(rng, ticks + 3.5, [
            out(style.syn, 0.0, SYN), inb(style.syn, self.rtt, SYN | ACK),
            out(style.ack, 2e-4, ACK), inb((low, high), self.rtt, PSH_ACK),
            out(style.ack, 0.04, ACK), inb(style.ack, self.rtt, RST | ACK),
        ])
        return Frames.concat([dns, tcp_frames(window, self.server, flat,
                                              ephemeral_ports(rng, n), self.port)])


# --- multicast discovery -----------------------------------------------------------------------


@dataclass(frozen=True)
class SsdpAnnounce:
    """UPnP ``NOTIFY ssdp:alive`` bursts to 239.255.255.250:1900.

    Parameters
    ----------
    period
        Seconds between bursts (half the advertised max-age, typically).
    burst
        NOTIFY messages per burst (one per advertised device/service type).
    length
        Frame length range of one NOTIFY.
    """

    period: float = 900.0
    burst: int = 6
    length: tuple[int, int] = (330, 420)

    def rate(self) -> float:
        return 2.0 * self.burst / self.period

    def emit(self, window: Window) -> Frames:
        rng = window.rng
        phase = window.constant_rng().uniform(0.0, self.period)
        ticks = periodic_times(rng, window.t0, window.t1, self.period, phase=phase, jitter=0.02)
        # Each burst is sent twice, as UPnP recommends for unreliable UDP.
        starts = np.concatenate([ticks, ticks + spread(rng, np.full(len(ticks), 0.3))])
        flat = expand(rng, starts, [out(self.length, 0.02, 0)] * self.burst)
        return between(window.host, SSDP_GROUP, flat.t, flat.length, True,
                       local_port=1900, peer_port=1900, proto=IP_PROTO_UDP)


@dataclass(frozen=True)
class SsdpSearchReplies:
    """The laptop's and phone's ``M-SEARCH`` (seen by every port) and the device's unicast
    answers, when it speaks UPnP.

    Parameters
    ----------
    rate_per_hour
        Searches per hour (diurnal).
    answers
        Unicast ``200 OK`` answers the device sends per search (0 for devices without UPnP).
    diurnal
        Daily rhythm of the searches.
    fetch_probability
        Share of searches after which the searcher fetches the device description over HTTP
        (default 0.3). Besides being what UPnP control points do, it keeps the channel to the
        searcher two-way: answers alone, long after the last frame from the phone, would leave
        the reverse direction's weight decayed to nothing while the pair's covariance sum is
        not, a row no real capture has.
    style
        The device's TCP framing (for the description fetch).
    """

    rate_per_hour: float = 20.0
    answers: int = 3
    diurnal: Diurnal = field(default_factory=Diurnal)
    fetch_probability: float = 0.3
    style: TcpStyle = field(default_factory=TcpStyle)

    def rate(self) -> float:
        return self.rate_per_hour / 3600.0 * (3 + self.answers)

    def emit(self, window: Window) -> Frames:
        rng = window.rng
        starts = poisson_times(rng, window.t0, window.t1, self.rate_per_hour / 3600.0,
                               self.diurnal)
        n = len(starts)
        searcher = np.where(rng.random(n) < 0.6, LAPTOP.ip, PHONE.ip)
        search_port = ephemeral_ports(rng, n)
        # The searcher repeats M-SEARCH three times; these are multicast from another host.
        times = (starts[:, None] + np.array([0.0, 0.1, 0.2])[None, :]).ravel()
        who = np.repeat(searcher, 3)
        searches = Frames.build(
            times, rng.integers(165, 215, len(times)),
            src_mac=macs_of(who), dst_mac=macs_of(np.full(len(times), SSDP_GROUP)),
            src_ip=who, dst_ip=SSDP_GROUP, sport=np.repeat(search_port, 3), dport=1900,
            proto=IP_PROTO_UDP,
        )
        if self.answers == 0 or n == 0:
            return searches
        flat = expand(rng, starts + rng.uniform(0.05, 1.0, n), [out((300, 380), 0.01, 0)]
                      * self.answers)
        answers = between(window.host, searcher[flat.session], flat.t, flat.length, True,
                          local_port=ephemeral_ports(rng, n)[flat.session],
                          peer_port=search_port[flat.session], proto=IP_PROTO_UDP)
        # A control point then fetches the description the answer's LOCATION names (when its
        # cached copy has expired).
        fetched = rng.random(n) < self.fetch_probability
        fetch = lan_fetch(window, searcher[fetched], starts[fetched] + 1.2, 49152,
                          (2000, 4500), self.style)
        return Frames.concat([searches, answers, fetch])


@dataclass(frozen=True)
class MdnsAnnounce:
    """mDNS (224.0.0.251:5353): the device's announcements and the phone app's queries.

    Parameters
    ----------
    period
        Seconds between the device's announcements (answers re-sent before the TTL expires).
    length
        Frame length range of an announcement.
    query_rate_per_hour
        The phone's service-browsing queries per hour (diurnal), answered by the device.
    """

    period: float = 1800.0
    length: tuple[int, int] = (150, 420)
    query_rate_per_hour: float = 6.0

    def rate(self) -> float:
        return 2.0 / self.period + 2.0 * self.query_rate_per_hour / 3600.0

    def emit(self, window: Window) -> Frames:
        rng = window.rng
        phase = window.constant_rng().uniform(0.0, self.period)
        ticks = periodic_times(rng, window.t0, window.t1, self.period, phase=phase, jitter=0.05)
        starts = np.concatenate([ticks, ticks + 1.0])
        announce = between(window.host, MDNS_GROUP, starts, rng.integers(*self.length,
                                                                          len(starts)),
                           True, local_port=5353, peer_port=5353, proto=IP_PROTO_UDP)
        queries = poisson_times(rng, window.t0, window.t1, self.query_rate_per_hour / 3600.0,
                                Diurnal())
        n = len(queries)
        asked = Frames.build(
            queries, rng.integers(70, 110, n), src_mac=PHONE.mac,
            dst_mac=macs_of(np.full(n, MDNS_GROUP)), src_ip=PHONE.ip, dst_ip=MDNS_GROUP,
            sport=5353, dport=5353, proto=IP_PROTO_UDP,
        )
        answered = between(window.host, MDNS_GROUP, queries + rng.uniform(0.02, 0.12, n),
                           rng.integers(*self.length, n), True, local_port=5353,
                           peer_port=5353, proto=IP_PROTO_UDP)
        return Frames.concat([announce, asked, answered])


@dataclass(frozen=True)
class IgmpMembership:
    """The router's IGMP general queries (every 125 s) and the device's membership reports.

    Parameters
    ----------
    groups
        Multicast groups the device has joined (one report each).
    query_interval
        Seconds between the router's queries.
    """

    groups: tuple[int, ...] = (SSDP_GROUP,)
    query_interval: float = 125.0

    def rate(self) -> float:
        return (1.0 + len(self.groups)) / self.query_interval

    def emit(self, window: Window) -> Frames:
        rng = window.rng
        phase = window.constant_rng().uniform(0.0, self.query_interval)
        queries = periodic_times(rng, window.t0, window.t1, self.query_interval, phase=phase,
                                 jitter=0.001)
        n = len(queries)
        query = Frames.build(
            queries, 60, src_mac=GATEWAY.mac, dst_mac=macs_of(np.full(n, ALL_HOSTS_GROUP)),
            src_ip=GATEWAY.ip, dst_ip=ALL_HOSTS_GROUP, sport=PORT_NONE, dport=PORT_NONE,
            proto=IGMP_PROTO,
        )
        groups = np.asarray(self.groups, dtype=np.int64)
        report_t = (queries[:, None] + rng.uniform(0.1, 10.0, (n, len(groups)))).ravel()
        group = np.tile(groups, n)
        report = Frames.build(
            report_t, 60, src_mac=window.host.mac, dst_mac=macs_of(group),
            src_ip=window.host.ip, dst_ip=group, sport=PORT_NONE, dport=PORT_NONE,
            proto=IGMP_PROTO,
        )
        return Frames.concat([query, report])


@dataclass(frozen=True)
class WsDiscovery:
    """ONVIF WS-Discovery: ``Hello`` multicasts to 239.255.255.250:3702 and ``ProbeMatches``
    answers to the NVR app's probes (large SOAP datagrams).

    Parameters
    ----------
    hello_period
        Seconds between Hello messages.
    probe_rate_per_hour
        Probes per hour from the phone app (diurnal), each answered by the camera.
    """

    hello_period: float = 600.0
    probe_rate_per_hour: float = 10.0

    def rate(self) -> float:
        return 1.0 / self.hello_period + 2.0 * self.probe_rate_per_hour / 3600.0

    def emit(self, window: Window) -> Frames:
        rng = window.rng
        phase = window.constant_rng().uniform(0.0, self.hello_period)
        hello = periodic_times(rng, window.t0, window.t1, self.hello_period, phase=phase)
        hellos = between(window.host, SSDP_GROUP, hello, rng.integers(900, 1000, len(hello)),
                         True, local_port=3702, peer_port=3702, proto=IP_PROTO_UDP)
        probes = poisson_times(rng, window.t0, window.t1, self.probe_rate_per_hour / 3600.0,
                               Diurnal())
        n = len(probes)
        port = ephemeral_ports(rng, n)
        probe = Frames.build(
            probes, rng.integers(620, 700, n), src_mac=PHONE.mac,
            dst_mac=macs_of(np.full(n, SSDP_GROUP)), src_ip=PHONE.ip, dst_ip=SSDP_GROUP,
            sport=port, dport=3702, proto=IP_PROTO_UDP,
        )
        match = between(window.host, PHONE.ip, probes + rng.uniform(0.01, 0.3, n),
                        rng.integers(1180, 1300, n), True, local_port=3702, peer_port=port,
                        proto=IP_PROTO_UDP)
        # The app follows a match with an ONVIF GetDeviceInformation request over HTTP.
        asked = probes + rng.uniform(0.5, 1.5, n)
        info = lan_fetch(window, np.full(n, PHONE.ip), asked, 8080, (600, 900),
                         TcpStyle(timestamps=True))
        return Frames.concat([hellos, probe, match, info])


@dataclass(frozen=True)
class LanSession:
    """A LAN client's persistent session with the device: the vendor app's status poll, or a
    UPnP control point renewing its event subscription, over a kept-alive TCP connection (the
    client's request, the device's answer, the client's ACK).

    It also keeps the channel to that client two-way. A device that answers a client's
    multicast searches unicast, long after the client last sent it anything, meets a numerical
    corner of the extractor: once the silent direction's weight has decayed past the smallest
    float (λ·Δt ≈ 1,075: 215 s at λ = 5, 18 min at λ = 1) it reads as zero while the pair's
    covariance sum, which starts larger, is still a subnormal number, so the row is "one-way
    with non-zero covariance". A poll more often than every 215 s avoids that, as real home
    networks' chatter does.

    Parameters
    ----------
    client
        IP code of the LAN client (phone or laptop).
    port
        Device TCP port of the session.
    period
        Seconds between polls (default 120; keep it below 215).
    style
        The device's TCP framing.
    """

    client: int
    port: int = 80
    period: float = 120.0
    style: TcpStyle = field(default_factory=TcpStyle)

    def rate(self) -> float:
        return 3.0 / self.period

    def emit(self, window: Window) -> Frames:
        rng, style = window.rng, self.style
        const = window.constant_rng()
        phase = const.uniform(0.0, self.period)
        client_port = int(const.integers(32768, 61000))
        ticks = periodic_times(rng, window.t0, window.t1, self.period, phase=phase,
                               jitter=5e-3)
        client = TcpStyle(timestamps=True)
        flat = expand(rng, ticks, [
            inb((int(client.data(120)), int(client.data(220))), 0.0),
            out((int(style.data(90)), int(style.data(240))), 4e-3),
            inb(client.ack, 0.04, ACK),
        ])
        return between(window.host, self.client, flat.t, flat.length, flat.outbound,
                       local_port=self.port, peer_port=client_port, flags=flat.flags)


def lan_fetch(window: Window, clients: IntArray, times: npt.NDArray[np.float64],
              server_port: int, response_payload: tuple[int, int], style: TcpStyle) -> Frames:
    """A LAN client's HTTP GET to the window's host (its handshake, request, the host's response
    of ``response_payload`` bytes in one or two segments, the client's close), one per time.

    ``style`` frames the host's segments; the client (a phone or laptop) is a Linux stack.
    """
    rng = window.rng
    n = len(times)
    if n == 0:
        return Frames.empty()
    client = TcpStyle(timestamps=True)
    size = rng.integers(response_payload[0], response_payload[1] + 1, n)
    first = np.minimum(size, style.max_payload)
    rest = np.minimum(size - first, style.max_payload)  # at most two segments
    flat = expand(rng, times, [
        inb(client.syn, 0.0, SYN), out(style.syn, 2e-4, SYN | ACK), inb(client.ack, 3e-3, ACK),
        inb((int(client.data(150)), int(client.data(260))), 2e-4), out(style.ack, 1e-3, ACK),
        out(style.max_payload + style.header, 5e-3, ACK),
        out((int(style.data(1)), int(style.data(style.max_payload))), 2e-4),
        inb(client.ack, 3e-3, ACK), inb(client.ack, 2e-3, FIN | ACK),
        out(style.ack, 1e-3, FIN | ACK), inb(client.ack, 3e-3, ACK),
    ])
    # The two response segments: a full one and the rest (dropped when the response fits one).
    length = flat.length.reshape(n, -1).copy()
    length[:, 5] = style.data(first)
    length[:, 6] = style.data(np.maximum(rest, 1))
    keep = np.ones_like(length, dtype=bool)
    keep[:, 6] = rest > 0
    frames = between(window.host, clients[flat.session], flat.t, length.ravel(), flat.outbound,
                     local_port=server_port, peer_port=ephemeral_ports(rng, n)[flat.session],
                     flags=flat.flags)
    return frames.take(keep.ravel())


@dataclass(frozen=True)
class Ipv6Chatter:
    """IPv6 link-local housekeeping: router solicitations and adverts, neighbour solicitations
    and adverts, and mDNS over IPv6 (ff02::fb).

    Parameters
    ----------
    period
        Seconds between the device's neighbour-discovery exchanges.
    mdns_period
        Seconds between its IPv6 mDNS announcements.
    """

    period: float = 600.0
    mdns_period: float = 1800.0

    def rate(self) -> float:
        return 3.0 / self.period + 1.0 / self.mdns_period

    def emit(self, window: Window) -> Frames:
        rng, host = window.rng, window.host
        own = ip(ipv6_link_local(host.mac))
        router = ip(ipv6_link_local(GATEWAY.mac))
        phase = window.constant_rng().uniform(0.0, 1.0, 2)
        ticks = periodic_times(rng, window.t0, window.t1, self.period,
                               phase=phase[0] * self.period, jitter=0.1)
        solicit = expand(rng, ticks, [
            out(70, 0.0, ICMPV6_ROUTER_SOLICIT),
            inb(86, 0.5, ICMPV6_NEIGHBOR_SOLICIT),
            out(86, 1e-3, ICMPV6_NEIGHBOR_ADVERT),
        ])
        peer = np.where(solicit.outbound, ip("ff02::2"), router)
        peer[2::3] = router
        nd = between(host, peer, solicit.t, solicit.length, solicit.outbound,
                     local_port=PORT_NONE, peer_port=PORT_NONE, proto=IP_PROTO_ICMPV6,
                     flags=solicit.flags, kind=KIND_IPV6, local_ip=own)
        mdns_t = periodic_times(rng, window.t0, window.t1, self.mdns_period,
                                phase=phase[1] * self.mdns_period, jitter=0.05)
        mdns = between(host, ip("ff02::fb"), mdns_t, rng.integers(170, 440, len(mdns_t)), True,
                       local_port=5353, peer_port=5353, proto=IP_PROTO_UDP, kind=KIND_IPV6,
                       local_ip=own)
        return Frames.concat([nd, mdns])


# --- cloud -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CloudChannel:
    """A long-lived TLS connection to the vendor cloud: keep-alives, telemetry publishes,
    server pushes; re-established every ``reconnect`` seconds (TCP + TLS handshake).

    Parameters
    ----------
    server, port
        Cloud endpoint (IP code, TCP port: 443 HTTPS, 8883 MQTT over TLS, 5222 XMPP, …).
    keepalive
        Seconds between keep-alives (request, response, the device's delayed ACK).
    keepalive_payload, reply_payload
        TLS record payload sizes (bytes, inclusive ranges) of the keep-alive and its reply.
    publish_per_hour
        Telemetry messages per hour (diurnal), each answered by a small ACK record.
    publish_payload
        Payload size range of a telemetry message.
    push_per_hour
        Server-initiated messages per hour (config, commands; diurnal), ACKed and answered.
    reconnect
        Seconds a connection lives before the device reconnects.
    rtt
        Median round trip to the server.
    style
        The device's TCP framing.
    diurnal
        Daily rhythm of publishes and pushes.
    jitter
        Scale of each keep-alive's half-normal delay, as a fraction of its period (default
        0.01; firmware timers are tighter, a few 1e-4).
    """

    server: int
    port: int = 443
    keepalive: float = 60.0
    keepalive_payload: tuple[int, int] = (37, 37)
    reply_payload: tuple[int, int] = (37, 37)
    publish_per_hour: float = 0.0
    publish_payload: tuple[int, int] = (180, 420)
    push_per_hour: float = 0.0
    reconnect: float = 4 * 3600.0
    rtt: float = 0.12
    style: TcpStyle = field(default_factory=TcpStyle)
    diurnal: Diurnal = field(default_factory=Diurnal)
    jitter: float = 0.01

    def rate(self) -> float:
        return (3.0 / self.keepalive + 3.0 * self.publish_per_hour / 3600.0
                + 4.0 * self.push_per_hour / 3600.0 + 16.0 / self.reconnect)

    def _clock(self, window: Window) -> tuple[int, int, float, float]:
        """Capture constants: port-hop multiplier and offset, reconnect and keep-alive phases."""
        const = window.constant_rng()
        a, b = (int(v) for v in const.integers(1, _PORT_SPAN, 2))
        phases = const.uniform(0.0, 1.0, 2)
        return 2 * a + 1, b, float(phases[0]) * self.reconnect, float(phases[1]) * self.keepalive

    def _ports(self, window: Window, t: npt.NDArray[np.float64]) -> IntArray:
        """The local port of the connection alive at each time (one per reconnect epoch)."""
        a, b, phase, _ = self._clock(window)
        epoch = np.floor((t - phase) / self.reconnect).astype(np.int64)
        return 32768 + (a * epoch + b) % _PORT_SPAN

    def emit(self, window: Window) -> Frames:
        rng, style, rtt = window.rng, self.style, self.rtt
        _, _, phase, keep_phase = self._clock(window)
        reconnects = periodic_times(rng, window.t0, window.t1, self.reconnect, phase=phase,
                                    jitter=0.0) + 1e-3
        parts = [expand(rng, reconnects, tls_open(style, rtt))]
        starts = [reconnects]
        keepalives = periodic_times(rng, window.t0, window.t1, self.keepalive, phase=keep_phase,
                                    jitter=self.jitter)
        parts.append(expand(rng, keepalives, [
            out(_data(style, self.keepalive_payload), 0.0),
            inb(_data(style, self.reply_payload), rtt),
            out(style.ack, 0.04, ACK),
        ]))
        starts.append(keepalives)
        publishes = poisson_times(rng, window.t0, window.t1, self.publish_per_hour / 3600.0,
                                  self.diurnal)
        parts.append(expand(rng, publishes, [
            out(_data(style, self.publish_payload), 0.0),
            inb(_data(style, (33, 45)), rtt),
            out(style.ack, 0.04, ACK),
        ]))
        starts.append(publishes)
        pushes = poisson_times(rng, window.t0, window.t1, self.push_per_hour / 3600.0,
                               self.diurnal)
        parts.append(expand(rng, pushes, [
            inb(_data(style, (80, 700)), 0.0),
            out(style.ack, 0.03, ACK),
            out(_data(style, (60, 300)), 0.05),
            inb(style.ack, rtt, ACK),
        ]))
        starts.append(pushes)
        frames = []
        for flat, start in zip(parts, starts, strict=True):
            if len(flat.t):
                ports = self._ports(window, start)
                frames.append(tcp_frames(window, self.server, flat, ports, self.port))
        return Frames.concat(frames)


def _data(style: TcpStyle, payload: tuple[int, int]) -> tuple[int, int]:
    """Frame-length range of TLS records with this payload range (29 bytes of record overhead)."""
    return int(style.data(payload[0] + 29)), int(style.data(payload[1] + 29))


@dataclass(frozen=True)
class UdpHeartbeat:
    """P2P-relay registration (CS2/PPCS-style) over UDP: a small hello to each server, answered.

    Firmware timers are clockwork: the real Danmini doorbell's hellos to its five relays recur
    every 39.02–39.05 s (interquartile range of their jitter), a few milliseconds apart.

    Parameters
    ----------
    servers
        Relay server IP codes (hellos go to all of them each period, staggered).
    port
        Server UDP port (32100 for PPCS).
    period
        Seconds between rounds (default 30).
    payload
        UDP payload size range of hello and answer (default 4–20).
    answer_probability
        Fraction of hellos answered (relays drop some; default 0.95).
    rtt
        Median round trip (default 0.2 s).
    jitter
        Scale of each round's half-normal delay, as a fraction of the period (default 0.01).
    stagger
        Seconds between the hellos of one round (default 0.05).
    miss_probability
        Probability that a hello is not sent at all in a round (a busy firmware loop skips
        one; the real doorbell shows jitters of two periods now and then). Default 0.
    """

    servers: tuple[int, ...]
    port: int = 32100
    period: float = 30.0
    payload: tuple[int, int] = (4, 20)
    answer_probability: float = 0.95
    rtt: float = 0.2
    jitter: float = 0.01
    stagger: float = 0.05
    miss_probability: float = 0.0

    def rate(self) -> float:
        return len(self.servers) * (1.0 + self.answer_probability) / self.period

    def emit(self, window: Window) -> Frames:
        rng = window.rng
        const = window.constant_rng()
        local_port = int(const.integers(10000, 60000))
        phase = const.uniform(0.0, self.period)
        ticks = periodic_times(rng, window.t0, window.t1, self.period, phase=phase,
                               jitter=self.jitter)
        k = len(self.servers)
        starts = (ticks[:, None] + self.stagger * np.arange(k)[None, :]
                  * rng.uniform(0.5, 1.5, (len(ticks), k))).ravel()
        server = np.tile(np.asarray(self.servers, dtype=np.int64), len(ticks))
        sent = rng.random(len(starts)) >= self.miss_probability
        starts, server = starts[sent], server[sent]
        lo, hi = ETH_IP_UDP + self.payload[0], ETH_IP_UDP + self.payload[1]
        flat = expand(rng, starts, [out((lo, hi), 0.0, 0), inb((lo, hi), self.rtt, 0)])
        answered = flat.outbound | (rng.random(len(flat.t)) < self.answer_probability)
        frames = between(window.host, server[flat.session], flat.t, flat.length, flat.outbound,
                         local_port=local_port, peer_port=self.port, proto=IP_PROTO_UDP)
        return frames.take(answered)


@dataclass(frozen=True)
class HttpsRequests:
    """Short HTTPS exchanges on fresh connections (firmware checks, weather, push
    registration): DNS lookup, TCP + TLS handshake, request, response download, close.

    Parameters
    ----------
    server
        Cloud IP code.
    dns_server
        Resolver asked before each connection.
    per_hour
        Requests per hour (diurnal).
    request_payload
        Request size range (bytes).
    response_bytes
        Median response size (bytes; lognormal spread).
    rtt
        Median round trip.
    style
        The device's TCP framing.
    diurnal
        Daily rhythm.
    """

    server: int
    dns_server: int
    per_hour: float = 4.0
    request_payload: tuple[int, int] = (250, 600)
    response_bytes: float = 3000.0
    rtt: float = 0.12
    style: TcpStyle = field(default_factory=TcpStyle)
    diurnal: Diurnal = field(default_factory=Diurnal)

    def rate(self) -> float:
        segments = self.response_bytes / self.style.max_payload
        return self.per_hour / 3600.0 * (22.0 + 1.5 * segments)

    def emit(self, window: Window) -> Frames:
        rng, style = window.rng, self.style
        starts = poisson_times(rng, window.t0, window.t1, self.per_hour / 3600.0, self.diurnal)
        n = len(starts)
        if n == 0:
            return Frames.empty()
        dns = dns_exchanges(window, starts, self.dns_server)
        connect = starts + 0.06
        handshake = expand(rng, connect, [
            *tls_open(style, self.rtt),
            out(_data(style, self.request_payload), 1e-3),
        ])
        end_of_handshake = handshake.t.reshape(n, -1)[:, -1]
        size = np.maximum(200, spread(rng, np.full(n, self.response_bytes), 0.6)).astype(np.int64)
        download = bulk(rng, end_of_handshake + self.rtt, size, outbound=False, style=style,
                        rtt=self.rtt, pace=4e-4)
        finish = np.zeros(n)
        np.maximum.at(finish, download.session, download.t)
        close = expand(rng, finish + 0.01, tcp_close(style, self.rtt))
        port = ephemeral_ports(rng, n)
        return Frames.concat([
            dns,
            tcp_frames(window, self.server, handshake, port, 443),
            tcp_frames(window, self.server, download, port, 443),
            tcp_frames(window, self.server, close, port, 443),
        ])


@dataclass(frozen=True)
class EventUploads:
    """Doorbell presses or motion alarms: a snapshot/clip uploaded to the cloud over TLS, then
    a push-notification request.

    Parameters
    ----------
    server
        Upload endpoint IP code.
    dns_server
        Resolver asked before each upload.
    per_hour
        Events per hour (diurnal).
    upload_bytes
        Median upload size (bytes; lognormal spread).
    port
        Upload TCP port.
    rtt
        Median round trip.
    style
        The device's TCP framing.
    diurnal
        Daily rhythm.
    """

    server: int
    dns_server: int
    per_hour: float = 2.0
    upload_bytes: float = 250_000.0
    port: int = 443
    rtt: float = 0.12
    style: TcpStyle = field(default_factory=TcpStyle)
    diurnal: Diurnal = field(default_factory=Diurnal)

    def rate(self) -> float:
        segments = self.upload_bytes / self.style.max_payload
        return self.per_hour / 3600.0 * (26.0 + 1.5 * segments)

    def emit(self, window: Window) -> Frames:
        rng, style = window.rng, self.style
        starts = poisson_times(rng, window.t0, window.t1, self.per_hour / 3600.0, self.diurnal)
        n = len(starts)
        if n == 0:
            return Frames.empty()
        dns = dns_exchanges(window, starts, self.dns_server)
        handshake = expand(rng, starts + 0.05, [
            *tls_open(style, self.rtt), out(_data(style, (380, 520)), 2e-3),
        ])
        begin = handshake.t.reshape(n, -1)[:, -1] + 2e-3
        size = np.maximum(2000, spread(rng, np.full(n, self.upload_bytes), 0.5)).astype(np.int64)
        upload = bulk(rng, begin, size, outbound=True, style=style, rtt=self.rtt, pace=8e-4)
        finish = np.zeros(n)
        np.maximum.at(finish, upload.session, upload.t)
        tail = expand(rng, finish + self.rtt, [
            inb(_data(style, (120, 260)), 0.0), out(style.ack, 0.04, ACK),
            *tcp_close(style, self.rtt),
        ])
        port = ephemeral_ports(rng, n)
        return Frames.concat([
            dns,
            tcp_frames(window, self.server, handshake, port, self.port),
            tcp_frames(window, self.server, upload, port, self.port),
            tcp_frames(window, self.server, tail, port, self.port),
        ])


# --- media -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MediaStream:
    """Live video (and audio) sessions to a viewer: the phone app on the LAN or a cloud relay.

    Video is H.264 at ``fps`` with an I-frame every ``gop`` frames; each frame is cut into
    packets of at most ``max_payload`` bytes sent back to back. Over UDP (RTP/P2P) the viewer
    acknowledges every ``ack_every`` packets with a small datagram (plain RTP, ``ack_every=0``,
    exchanges RTCP reports every 5 s instead); over TCP it ACKs every second segment.

    Parameters
    ----------
    viewer
        IP code of the viewer (LAN phone or relay).
    per_hour
        Sessions per hour (diurnal).
    duration
        Median session length in seconds (lognormal spread).
    fps
        Video frame rate.
    i_frame_bytes, p_frame_bytes
        Median sizes of key and delta frames.
    gop
        Frames per group of pictures.
    max_payload
        Media bytes per packet.
    header
        Frame bytes around the media payload (Ethernet + IP + UDP + RTP/P2P header, or TCP).
    transport
        ``"udp"`` or ``"tcp"``.
    local_port
        Device port of the stream (RTSP/RTP or P2P socket).
    ack_every
        UDP: media packets per viewer acknowledgement (0: none).
    audio_pps, audio_bytes
        Audio packets per second (0: no audio) and their frame length.
    rtt
        Median round trip to the viewer.
    diurnal
        Daily rhythm of sessions.
    duration_spread
        Sigma of the sessions' lognormal length (default 0.35): frequent looks of similar
        length, rather than a few long ones, keep a capture's thirds alike.
    send_bps
        Bits per second at which a video frame's packets leave (default 20e6: back to back
        on Wi-Fi; a sender that paces its packets over the frame interval is slower).
    """

    viewer: int
    per_hour: float = 2.0
    duration: float = 60.0
    fps: float = 15.0
    i_frame_bytes: float = 28_000.0
    p_frame_bytes: float = 3_500.0
    gop: int = 30
    max_payload: int = 1400
    header: int = 54
    transport: str = "udp"
    local_port: int = 10240
    ack_every: int = 8
    audio_pps: float = 0.0
    audio_bytes: int = 214
    rtt: float = 0.004
    diurnal: Diurnal = field(default_factory=Diurnal)
    duration_spread: float = 0.35
    send_bps: float = 20e6

    def rate(self) -> float:
        frame_bytes = (self.i_frame_bytes + (self.gop - 1) * self.p_frame_bytes) / self.gop
        per_frame = frame_bytes / self.max_payload + 0.5
        feedback = 1.0 / max(self.ack_every, 1) if self.transport == "udp" else 0.5
        pps = self.fps * per_frame * (1.0 + feedback) + self.audio_pps
        return pps * self.duration * self.per_hour / 3600.0

    def emit(self, window: Window) -> Frames:
        rng = window.rng
        starts = poisson_times(rng, window.t0, window.t1, self.per_hour / 3600.0, self.diurnal)
        if len(starts) == 0:
            return Frames.empty()
        lengths = np.maximum(3.0, spread(rng, np.full(len(starts), self.duration),
                                         self.duration_spread))
        parts = [self._session(window, s, d) for s, d in zip(starts, lengths, strict=True)]
        return Frames.concat(parts)

    def _session(self, window: Window, start: float, duration: float) -> Frames:
        rng, host = window.rng, window.host
        n_frames = max(1, int(duration * self.fps))
        frame_t = start + 0.3 + np.cumsum(gaps(rng, n_frames, 1.0 / self.fps, shape=30.0))
        key = np.arange(n_frames) % self.gop == 0
        median = np.where(key, self.i_frame_bytes, self.p_frame_bytes)
        frame_bytes = np.maximum(200, spread(rng, median, 0.35)).astype(np.int64)
        pace = 8.0 * (self.max_payload + self.header) / self.send_bps
        t, length, _ = packetise(rng, frame_t, frame_bytes, max_payload=self.max_payload,
                                 header=self.header, pace=pace)
        viewer_port = int(rng.integers(20000, 60000))
        proto = IP_PROTO_UDP if self.transport == "udp" else IP_PROTO_TCP
        flags: int = 0 if self.transport == "udp" else PSH_ACK
        # Session setup: the viewer's request, the device's answer, the viewer's
        # acknowledgement (a small datagram or a bare ACK, like the stream's feedback). Ending
        # on a typical reverse packet matters: Kitsune's covariance multiplies each of the
        # device's residuals by the other direction's *last* residual, so an unusual last
        # packet (the request) followed by a burst of identical video packets drives |pcc|
        # above 1, which no real stream shows.
        setup = expand(rng, np.array([start]), [inb((120, 300), 0.0, flags),
                                                out((100, 260), 0.01, flags),
                                                inb((60, 80), self.rtt, ACK if flags else 0)])
        parts = [
            between(host, self.viewer, setup.t, setup.length, setup.outbound,
                    local_port=self.local_port, peer_port=viewer_port, proto=proto,
                    flags=setup.flags),
            between(host, self.viewer, t, length, True, local_port=self.local_port,
                    peer_port=viewer_port, proto=proto, flags=flags),
        ]
        if self.transport == "udp" and self.ack_every:
            acked = t[self.ack_every - 1 :: self.ack_every]
            parts.append(between(host, self.viewer, acked + spread(rng, np.full(len(acked),
                                                                                 self.rtt)),
                                 rng.integers(60, 80, len(acked)), False,
                                 local_port=self.local_port, peer_port=viewer_port,
                                 proto=IP_PROTO_UDP))
        elif self.transport == "udp":
            # Plain RTP: sender and receiver reports on the RTCP ports every ~5 s.
            reports = start + 0.3 + np.arange(0.0, duration, 5.0) + rng.uniform(0, 1.0)
            parts.append(between(host, self.viewer, np.concatenate([reports, reports + 0.4]),
                                 np.repeat([94, 110], len(reports)),
                                 np.repeat([True, False], len(reports)),
                                 local_port=self.local_port + 1, peer_port=viewer_port + 1,
                                 proto=IP_PROTO_UDP))
        if self.transport == "tcp":
            acked = t[1::2]
            parts.append(between(host, self.viewer, acked + spread(rng, np.full(len(acked),
                                                                                 self.rtt)),
                                 66, False, local_port=self.local_port, peer_port=viewer_port,
                                 proto=IP_PROTO_TCP, flags=ACK))
        if self.audio_pps > 0:
            n_audio = int(duration * self.audio_pps)
            audio_t = start + 0.3 + np.cumsum(gaps(rng, n_audio, 1.0 / self.audio_pps, 20.0))
            parts.append(between(host, self.viewer, audio_t,
                                 np.minimum(MAX_FRAME, self.audio_bytes), True,
                                 local_port=self.local_port + 2, peer_port=viewer_port + 2,
                                 proto=proto, flags=flags))
        return Frames.concat(parts)


__all__ = [
    "ArpChatter",
    "CloudChannel",
    "DhcpRenewal",
    "DnsLookups",
    "EventUploads",
    "HttpsRequests",
    "IgmpMembership",
    "Ipv6Chatter",
    "LanSession",
    "MdnsAnnounce",
    "MediaStream",
    "NtpSync",
    "PeriodicConnect",
    "PingCheck",
    "SsdpAnnounce",
    "SsdpSearchReplies",
    "UdpHeartbeat",
    "WsDiscovery",
    "arp_exchange",
    "dns_exchanges",
    "lan_fetch",
]
