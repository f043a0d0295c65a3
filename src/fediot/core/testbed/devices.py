"""Benign behaviour of each of the nine N-BaIoT devices, one :class:`DeviceProfile` per device.

Devices differ the way real ones do: their TCP stacks (embedded stacks without TCP timestamps
frame bare ACKs at 60 bytes, Linux at 66), their clouds (P2P relays over UDP, TLS keep-alives,
MQTT-like telemetry, XMPP), their discovery protocols (UPnP, mDNS/HomeKit, ONVIF), their video
(frame rates, resolutions, packet sizes, UDP or TCP) and their daily rhythm. The two Provision
cameras share a firmware family, as do the two SimpleHome cameras; within each pair the
parameters differ a little (model, resolution, placement, firmware build).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final

from fediot.core.catalog import DEVICES, Device
from fediot.core.testbed.behaviours import (
    ArpChatter,
    CloudChannel,
    DhcpRenewal,
    DnsLookups,
    EventUploads,
    HttpsRequests,
    IgmpMembership,
    Ipv6Chatter,
    LanSession,
    MdnsAnnounce,
    MediaStream,
    NtpSync,
    PeriodicConnect,
    PingCheck,
    SsdpAnnounce,
    SsdpSearchReplies,
    UdpHeartbeat,
    WsDiscovery,
)
from fediot.core.testbed.frames import Behaviour, Diurnal, TcpStyle
from fediot.core.testbed.network import (
    CHINA_DNS,
    DEVICE_HOSTS,
    GATEWAY,
    LAPTOP,
    NTP_POOL,
    PHONE,
    PUBLIC_DNS,
    Host,
    ip,
)

BENIGN_CAPTURE_DAYS: Final[float] = 3.0
"""Days a benign capture spans at scale 1 (N-BaIoT's official row count): the real Danmini
capture runs at 0.2 rows/s, so its 49,548 rows span 2.9 days. Each profile's rate of sent
frames is set so that its official count spans about this long, and N-BaIoT's thirds (train,
opt, test) then each hold about one day: the same daily rhythm, the capture's start (new
channels, the epoch-time first jitter) confined to the first hours of the train third."""

SSDP = ip("239.255.255.250")
MDNS = ip("224.0.0.251")
LINUX = TcpStyle(timestamps=True)
EMBEDDED = TcpStyle(timestamps=False)


@dataclass(frozen=True)
class DeviceProfile:
    """Everything the simulator knows about one device.

    Parameters
    ----------
    device
        The catalogue entry.
    host
        Its MAC and IPv4 address on the lab LAN.
    behaviours
        Its benign traffic sources.
    style
        Its TCP framing (also used by the botnets' TCP connections from it).
    flood_pps
        Packets per second its CPU pushes in a raw-socket flood (a thermostat is slower than
        a camera SoC).
    benign_start
        Epoch time its benign capture starts.
    """

    device: Device
    host: Host
    behaviours: tuple[Behaviour, ...]
    style: TcpStyle
    flood_pps: float
    benign_start: float

    def rate(self) -> float:
        """Mean benign frames per second over a day."""
        return float(sum(b.rate() for b in self.behaviours))


def _epoch(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    return datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()


def _lan_background(ssdp_answers: int = 0, groups: tuple[int, ...] = (),
                    style: TcpStyle = LINUX) -> tuple[Behaviour, ...]:
    """What every port of the lab LAN sees: M-SEARCHes and the router's IGMP queries. A device
    that answers the phone's and the laptop's searches (UPnP) also keeps a session with each:
    the vendor app's status poll and the laptop's event subscription (see
    :class:`~fediot.core.testbed.behaviours.LanSession`)."""
    background: tuple[Behaviour, ...] = (SsdpSearchReplies(answers=ssdp_answers, style=style),
                                         IgmpMembership(groups=groups))
    if ssdp_answers:
        background += (LanSession(PHONE.ip, 49152, 120.0, style),
                       LanSession(LAPTOP.ip, 49153, 170.0, style))
    return background


def _danmini() -> tuple[Behaviour, ...]:
    # Calibrated on the 3,050 real benign rows (the first 4.2 h of the capture): 0.2 rows/s,
    # almost all of them clockwork. Every 39.03 s a 102-byte UDP hello to each of five P2P
    # relays, milliseconds apart (64 % of rows); a 98-byte ping to the router every 30.1 s
    # (16 %), each followed 5 s later by the (Linux) router's ARP probe, which the doorbell
    # answers (with its answers to the router's broadcast requests: 21 % of rows are 60
    # bytes); every 1,814 s two 78-byte DNS queries and a TCP check (74-byte SYN, 66-byte
    # ACKs: a Linux stack). No NTP, no media in those hours: a doorbell press (a snapshot
    # upload) is rare.
    relays = (ip("47.88.35.149"), ip("120.24.59.150"), ip("54.169.38.225"),
              ip("47.90.52.12"), ip("119.29.41.176"))
    cloud = ip("47.254.18.66")
    rhythm = Diurnal(0.7, 18.0)
    return (
        ArpChatter(97.0, 3600.0),
        DhcpRenewal(86400.0, 342),
        DnsLookups(GATEWAY.ip, (14400.0,), query_length=(78, 78)),
        PingCheck(GATEWAY.ip, 30.1, rtt=0.003, jitter=1e-3, arp_probe=0.95),
        UdpHeartbeat(relays, 51880, 39.03, (60, 60), answer_probability=1.0, rtt=0.23,
                     jitter=4e-4, stagger=0.004, miss_probability=0.01),
        PeriodicConnect(cloud, 80, GATEWAY.ip, period=1814.3, rtt=0.25, style=LINUX),
        EventUploads(cloud, GATEWAY.ip, per_hour=0.15, upload_bytes=20_000, rtt=0.25,
                     style=LINUX, diurnal=rhythm),
        *_lan_background(),
    )


# The other eight devices follow the Danmini's style: clockwork firmware timers (jitter a few
# 1e-4 of the period), fixed peers (so new channels, and with them the epoch-time first
# jitter, come only at a capture's start), frequent small events rather than rare big ones, and
# a rate of sent frames that spreads N-BaIoT's official benign row count over about
# BENIGN_CAPTURE_DAYS days (the rates in the comments are rows per hour).
TIMER: Final[float] = 5e-4
"""Jitter of firmware timers, as a fraction of their period (the real doorbell: 4e-4)."""


def _ecobee() -> tuple[Behaviour, ...]:
    # 13,113 rows over 3 days: 182 rows/h, a quiet thermostat on two TLS channels.
    home = ip("52.22.183.71")
    telemetry = ip("34.206.79.24")
    weather = ip("52.5.117.230")
    rhythm = Diurnal(0.5, 7.5)  # heating/cooling schedules: busy mornings
    return (
        ArpChatter(300.0, 1800.0),
        DhcpRenewal(86400.0, 352),
        NtpSync(NTP_POOL, 1024.0, rtt=0.15, fixed_port=True),
        DnsLookups(GATEWAY.ip, (300.0, 600.0)),
        CloudChannel(home, 443, keepalive=120.0, keepalive_payload=(60, 90),
                     reply_payload=(40, 60), publish_per_hour=6.0,
                     publish_payload=(250, 650), push_per_hour=2.0, reconnect=3600.0,
                     rtt=0.15, style=LINUX, diurnal=rhythm, jitter=TIMER),
        CloudChannel(telemetry, 8883, keepalive=600.0, keepalive_payload=(2, 2),
                     reply_payload=(2, 2), publish_per_hour=4.0, publish_payload=(900, 1400),
                     reconnect=8 * 3600.0, rtt=0.15, style=LINUX, diurnal=rhythm, jitter=TIMER),
        HttpsRequests(weather, GATEWAY.ip, per_hour=1.0, response_bytes=6000, rtt=0.15,
                      style=LINUX, diurnal=rhythm),
        MdnsAnnounce(1200.0, (180, 380), query_rate_per_hour=4.0),
        Ipv6Chatter(1800.0, 3600.0),
        *_lan_background(groups=(MDNS,)),
    )


def _ennio() -> tuple[Behaviour, ...]:
    # 39,100 rows over 3 days: 543 rows/h, mostly PPCS hellos and HTTP keep-alives.
    relays = (ip("47.91.154.20"), ip("118.190.21.204"))
    cloud = ip("47.91.92.117")
    rhythm = Diurnal(0.7, 17.0)
    return (
        ArpChatter(120.0, 600.0),
        DhcpRenewal(86400.0, 348),
        NtpSync((ip("202.112.29.82"), ip("120.25.115.20")), 1800.0, rtt=0.26),
        DnsLookups(PUBLIC_DNS, (300.0, 1200.0), rtt=0.06),
        UdpHeartbeat(relays, 32100, 20.0, (8, 36), rtt=0.26, jitter=TIMER, stagger=0.01),
        CloudChannel(cloud, 80, keepalive=60.0, keepalive_payload=(60, 90),
                     reply_payload=(40, 60), push_per_hour=0.5, reconnect=2 * 3600.0,
                     rtt=0.26, style=LINUX, diurnal=rhythm, jitter=TIMER),
        EventUploads(cloud, PUBLIC_DNS, per_hour=0.75, upload_bytes=40_000, port=80, rtt=0.26,
                     style=LINUX, diurnal=rhythm),
        *_lan_background(),
    )


def _philips() -> tuple[Behaviour, ...]:
    # 175,240 rows over 3 days: 2,434 rows/h; about half of them video, watched in short
    # looks (one or two an hour, busiest in the evening and at night).
    relay = ip("52.28.243.190")
    rendezvous = (ip("52.29.111.7"), ip("35.156.32.74"))
    night = Diurnal(0.6, 23.0)  # a baby monitor is watched in the evening and at night
    return (
        ArpChatter(60.0, 300.0),
        DhcpRenewal(3600.0, 370),
        NtpSync(NTP_POOL[1:3], 600.0, rtt=0.06),
        DnsLookups(GATEWAY.ip, (300.0, 300.0, 3600.0)),
        CloudChannel(relay, 443, keepalive=20.0, keepalive_payload=(20, 28),
                     reply_payload=(20, 28), push_per_hour=2.0, reconnect=2 * 3600.0,
                     rtt=0.06, style=LINUX, diurnal=night, jitter=TIMER),
        UdpHeartbeat(rendezvous, 5959, 10.0, (24, 48), rtt=0.06, jitter=TIMER, stagger=0.002),
        # A reliable-UDP P2P stream: the viewer acknowledges every packet, and the sender paces
        # a frame's packets at ~1 Mbit/s instead of bursting them (without either, a
        # 12-packet I-frame burst against the viewer's last, stale residual pushes Kitsune's
        # pcc past 1, which real streams never show).
        MediaStream(relay, per_hour=1.0, duration=15.0, fps=10.0, i_frame_bytes=15_000,
                    p_frame_bytes=1_500, max_payload=1316, header=54, local_port=5004,
                    ack_every=1, audio_pps=12.5, audio_bytes=214, rtt=0.06, diurnal=night,
                    send_bps=1e6),
        MediaStream(PHONE.ip, per_hour=1.0, duration=15.0, fps=10.0, i_frame_bytes=15_000,
                    p_frame_bytes=1_500, max_payload=1316, header=54, local_port=5008,
                    ack_every=1, audio_pps=12.5, audio_bytes=214, diurnal=night,
                    send_bps=1e6),
        SsdpAnnounce(900.0, 4, (310, 400)),
        MdnsAnnounce(3600.0, (160, 300), query_rate_per_hour=4.0),
        Ipv6Chatter(600.0, 3600.0),
        *_lan_background(ssdp_answers=3, groups=(SSDP, MDNS)),
    )


def _provision(outdoor: bool) -> tuple[Behaviour, ...]:
    # PT-737E (indoor) and PT-838 (outdoor bullet): one TVT firmware family. 62,154 and
    # 98,514 rows over 3 days: 863 and 1,368 rows/h; the outdoor camera sees more motion
    # (more, larger alarm clips) and is watched more.
    cloud = ip("52.57.98.140") if outdoor else ip("52.57.101.12")
    relays = (ip("52.58.77.51"), ip("18.194.20.16"))
    rhythm = Diurnal(0.5, 14.0 if outdoor else 19.0)
    return (
        ArpChatter(120.0, 250.0 if outdoor else 240.0),
        DhcpRenewal(86400.0, 342),
        NtpSync(NTP_POOL[:1], 3600.0, rtt=0.07),
        DnsLookups(PUBLIC_DNS, (300.0, 600.0), rtt=0.06),
        CloudChannel(cloud, 8000, keepalive=60.0, keepalive_payload=(52, 52),
                     reply_payload=(36, 36), push_per_hour=1.0, reconnect=6 * 3600.0,
                     rtt=0.06, style=LINUX, diurnal=rhythm, jitter=TIMER),
        UdpHeartbeat(relays, 6000, 60.0 if outdoor else 50.0, (40, 64), rtt=0.06,
                     jitter=TIMER, stagger=0.002),
        WsDiscovery(300.0, 8.0),
        SsdpAnnounce(1800.0, 3, (300, 360)),
        EventUploads(cloud, PUBLIC_DNS, per_hour=1.2 if outdoor else 1.0,
                     upload_bytes=150_000 if outdoor else 100_000, port=8000, rtt=0.06,
                     style=LINUX, diurnal=rhythm),
        # The phone app's live view uses the camera's substream (low resolution, 10–12 fps).
        MediaStream(PHONE.ip, per_hour=1.0 if outdoor else 0.7, duration=25.0,
                    fps=12.0 if outdoor else 10.0,
                    i_frame_bytes=18_000 if outdoor else 15_000,
                    p_frame_bytes=2_000 if outdoor else 1_500, max_payload=1448, header=66,
                    transport="tcp", local_port=6036, rtt=0.003, diurnal=rhythm),
        *_lan_background(ssdp_answers=2, groups=(SSDP,)),
    )


def _samsung() -> tuple[Behaviour, ...]:
    # 52,150 rows over 3 days: 724 rows/h; XMPP keep-alives, short relayed views.
    xmpp = ip("54.72.168.37")
    relay = ip("54.77.246.5")
    rhythm = Diurnal(0.6, 20.0)
    return (
        ArpChatter(60.0, 180.0),
        DhcpRenewal(86400.0, 360),
        NtpSync((ip("211.233.84.186"), NTP_POOL[0]), 3600.0, rtt=0.12),
        DnsLookups(GATEWAY.ip, (60.0, 300.0, 300.0)),
        CloudChannel(xmpp, 5222, keepalive=90.0, keepalive_payload=(1, 1),
                     reply_payload=(1, 1), push_per_hour=4.0, reconnect=6 * 3600.0, rtt=0.07,
                     style=LINUX, diurnal=rhythm, jitter=TIMER),
        CloudChannel(relay, 443, keepalive=300.0, keepalive_payload=(120, 160),
                     reply_payload=(90, 110), reconnect=12 * 3600.0, rtt=0.07, style=LINUX,
                     diurnal=rhythm, jitter=TIMER),
        MediaStream(relay, per_hour=0.6, duration=15.0, fps=10.0, i_frame_bytes=20_000,
                    p_frame_bytes=2_000, max_payload=1200, header=70, local_port=51000,
                    ack_every=10, audio_pps=8.0, audio_bytes=294, rtt=0.07, diurnal=rhythm),
        EventUploads(relay, GATEWAY.ip, per_hour=1.0, upload_bytes=100_000, rtt=0.07,
                     style=LINUX, diurnal=rhythm),
        SsdpAnnounce(1800.0, 5, (340, 430)),
        MdnsAnnounce(1800.0, (200, 380), query_rate_per_hour=6.0),
        Ipv6Chatter(300.0, 1800.0),
        *_lan_background(ssdp_answers=4, groups=(SSDP, MDNS)),
    )


def _simplehome(newer: bool) -> tuple[Behaviour, ...]:
    # XCS7-1002 and XCS7-1003: one PPCS P2P firmware; the 1003 has a newer build that
    # resolves through 114DNS, pings for connectivity, registers less often and uses a
    # slightly larger stream. 46,585 and 19,528 rows over 3 days: 647 and 271 rows/h.
    relays = (ip("47.89.19.66"), ip("120.76.101.37"), ip("52.74.33.210"))
    alarm = ip("47.90.36.199")
    rhythm = Diurnal(0.6, 16.0 if newer else 18.0)
    behaviours: list[Behaviour] = [
        ArpChatter(150.0 if newer else 120.0, 600.0 if newer else 200.0),
        DhcpRenewal(86400.0, 342),
        NtpSync(NTP_POOL[3:], 1800.0, rtt=0.09),
        DnsLookups(CHINA_DNS if newer else PUBLIC_DNS, (1200.0, 1200.0) if newer
                   else (600.0, 600.0), rtt=0.28 if newer else 0.06),
        UdpHeartbeat(relays, 32100, 90.0 if newer else 40.0, (4, 20), rtt=0.25, jitter=TIMER,
                     stagger=0.02),
        CloudChannel(alarm, 8443, keepalive=180.0 if newer else 60.0,
                     keepalive_payload=(44, 44) if newer else (40, 40),
                     reply_payload=(32, 32), push_per_hour=0.5, reconnect=3 * 3600.0,
                     rtt=0.25, style=EMBEDDED, diurnal=rhythm, jitter=TIMER),
        EventUploads(alarm, CHINA_DNS if newer else PUBLIC_DNS,
                     per_hour=0.3 if newer else 1.0,
                     upload_bytes=95_000 if newer else 80_000, port=8443, rtt=0.25,
                     style=EMBEDDED, diurnal=rhythm),
        MediaStream(PHONE.ip, per_hour=0.25 if newer else 0.5, duration=10.0, fps=10.0,
                    i_frame_bytes=18_000 if newer else 15_000,
                    p_frame_bytes=1_800 if newer else 1_500, max_payload=1024, header=58,
                    local_port=32101, ack_every=5 if newer else 4, diurnal=rhythm),
        *_lan_background(),
    ]
    if newer:
        behaviours.append(PingCheck(PUBLIC_DNS, 600.0, count=2, rtt=0.06, jitter=TIMER))
    return tuple(behaviours)


_BEHAVIOURS: Final = {
    1: (_danmini(), LINUX, 900.0, _epoch(2017, 9, 14, 6, 12)),
    2: (_ecobee(), LINUX, 420.0, _epoch(2017, 9, 15, 5, 40)),
    3: (_ennio(), LINUX, 800.0, _epoch(2017, 9, 16, 7, 3)),
    4: (_philips(), LINUX, 1100.0, _epoch(2017, 9, 17, 15, 21)),
    5: (_provision(outdoor=False), LINUX, 1500.0, _epoch(2017, 9, 18, 8, 30)),
    6: (_provision(outdoor=True), LINUX, 1400.0, _epoch(2017, 9, 18, 9, 10)),
    7: (_samsung(), LINUX, 1200.0, _epoch(2017, 9, 19, 10, 45)),
    8: (_simplehome(newer=False), EMBEDDED, 700.0, _epoch(2017, 9, 21, 6, 55)),
    9: (_simplehome(newer=True), EMBEDDED, 750.0, _epoch(2017, 9, 21, 7, 20)),
}

PROFILES: Final[Mapping[int, DeviceProfile]] = MappingProxyType({
    device.uci_id: DeviceProfile(
        device=device,
        host=DEVICE_HOSTS[device.uci_id],
        behaviours=_BEHAVIOURS[device.uci_id][0],
        style=_BEHAVIOURS[device.uci_id][1],
        flood_pps=_BEHAVIOURS[device.uci_id][2],
        benign_start=_BEHAVIOURS[device.uci_id][3],
    )
    for device in DEVICES
})
"""Profile of each device, keyed by UCI id."""


def profile(uci_id: int) -> DeviceProfile:
    """The profile of one device; ``KeyError`` naming the valid ids otherwise."""
    try:
        return PROFILES[uci_id]
    except KeyError:
        raise KeyError(f"no testbed profile for device {uci_id}; valid ids are 1–9") from None
