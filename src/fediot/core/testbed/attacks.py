"""The ten N-BaIoT attacks, launched from an infected device, and their botnets' C&C traffic.

Modelled on the public sources of the two botnets (BASHLITE/Gafgyt ``client.c``, Mirai
``bot/attack_*.c`` and ``scanner.c``) and on the real N-BaIoT rows in ``shared/data/nbaiot``:

Gafgyt (BASHLITE)
    ``combo``  TCP connection flood on the victim's open port: connections held open, others
    pushing junk strings (1,024 bytes per send).
    ``junk``   junk-string sending over many parallel TCP connections, plus UDP junk datagrams.
    ``scan``   the telnet scanner: ``connect()`` to random internet hosts on port 23 (one SYN
    each, no retransmission), brute-force logins where a host answers.
    ``tcp``    raw TCP flood with all flags set, small frames, forged random source addresses,
    about 1,700 frames/s (the real Ennio file: 101,536 rows in 61 s; every device's file has
    about as many rows, the floods having been recorded once and replayed).
    ``udp``    raw UDP flood, small frames, forged random source addresses and ports (as the real
    N-BaIoT rows show: each frame opens new ``MI_dir``/``H``/``HH``/``HpHp`` streams).

Mirai (every Mirai capture also holds its always-on SYN scanner)
    ``ack``      ACK flood, random ports, random payload of 512–1,400 bytes; the victim resets.
    ``scan``     raw SYN scan of random hosts on port 23 (90 %) or 2323 (10 %) from one fixed
    source port; answering hosts get a telnet brute force, successes are reported on 48101.
    ``syn``      SYN flood (with TCP options) from random source ports; the victim resets.
    ``udp``      generic UDP flood through a raw socket: 512-byte payload, random ports.
    ``udpplain`` UDP flood through a connected socket: fixed ports, fewer header options,
    higher packet rate.

Flood rates scale with the device's CPU (:attr:`DeviceProfile.flood_pps`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import ATTACK_CLASSES
from fediot.core.features.packets import IP_PROTO_ICMP, IP_PROTO_TCP, IP_PROTO_UDP
from fediot.core.testbed.devices import DeviceProfile
from fediot.core.testbed.frames import (
    ACK,
    ETH_IP_UDP,
    FIN,
    ICMP_UNREACHABLE,
    PSH,
    RST,
    SYN,
    Behaviour,
    Frames,
    Step,
    TcpStyle,
    Window,
    between,
    bulk,
    ephemeral_ports,
    expand,
    gaps,
    inb,
    out,
    periodic_times,
    spread,
    tcp_close,
    tcp_frames,
    tcp_open,
)
from fediot.core.testbed.network import (
    CNC_SERVER,
    REPORT_SERVER,
    VICTIM_SERVER,
    macs_of,
    random_public_ips,
    random_spoofed_ips,
)

URG: Final[int] = 0x20
ALL_FLAGS: Final[int] = FIN | SYN | RST | PSH | ACK | URG
VICTIM_RTT: Final[float] = 0.02
INTERNET_RTT: Final[float] = 0.12
CNC_RTT: Final[float] = 0.03
MIRAI_CNC_PORT: Final[int] = 23
MIRAI_REPORT_PORT: Final[int] = 48101
GAFGYT_CNC_PORT: Final[int] = 6667
GAFGYT_RAW_FLOOD_PPS: Final[float] = 1_700.0
"""Frames per second of BASHLITE's raw floods (real Ennio TCP/UDP files: 1,675 and 1,707
rows/s, from the epoch times of their new-channel rows)."""


def _stream_times(rng: np.random.Generator, t0: float, t1: float, pps: float,
                  shape: float = 4.0) -> npt.NDArray[np.float64]:
    """Times of a sender pushing ``pps`` packets per second from ``t0`` until ``t1``."""
    if t1 <= t0 or pps <= 0:
        return np.empty(0)
    expected = (t1 - t0) * pps
    parts = []
    clock = t0
    while clock < t1:
        step = gaps(rng, int(expected * 1.1) + 16, 1.0 / pps, shape)
        times = clock + np.cumsum(step)
        parts.append(times)
        clock = float(times[-1])
    times = np.concatenate(parts)
    return times[times < t1]


def _burst_times(rng: np.random.Generator, t0: float, t1: float,
                 per_second: float) -> npt.NDArray[np.float64]:
    """Times of a sender that, once a second, sends ``per_second`` packets back to back (about
    25 µs apart): Mirai's ``scanner.c`` sends ``SCANNER_RAW_PPS`` SYNs whenever its clock
    ticks. The real Mirai rows show it: the scan SYNs come in runs whose λ = 5 weight grows by
    one per row, between floods of other rows."""
    first, last = int(np.ceil(t0)), int(np.ceil(t1))
    ticks = np.arange(first, last, dtype=np.float64) + rng.uniform(0.0, 0.01)
    count = rng.poisson(per_second, len(ticks))
    start = np.repeat(ticks, count)
    offset = np.concatenate([np.cumsum(rng.gamma(4.0, 25e-6 / 4.0, c)) for c in count]) \
        if len(ticks) else np.empty(0)
    return np.asarray(start + offset, dtype=np.float64)


def _active(window: Window, start_offset: float) -> tuple[float, float]:
    """The part of the window after the attack started."""
    return max(window.t0, window.capture_start + start_offset), window.t1


def _telnet_login(style: TcpStyle, rtt: float) -> list[Step]:
    """A bot's telnet brute-force session: negotiation, user, password, probe command."""
    return [
        *tcp_open(style, rtt),
        inb((75, 90), rtt), out((72, 80), 5e-3), inb((70, 92), rtt),
        out((67, 74), 5e-3), inb((67, 74), rtt), inb((76, 84), 0.02),
        out((68, 76), 5e-3), inb((70, 200), rtt * 2),
        out((76, 96), 0.01), inb((80, 160), rtt),
        *tcp_close(style, rtt),
    ]


# --- C&C ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CncSession:
    """The bot's C&C connection, registered before the capture starts: the attack command at
    ``command_at`` seconds into the capture (and the device's ACK), then the keep-alives.

    N-BaIoT's attack captures begin with the attack: the real Gafgyt TCP and UDP files open on
    flood rows, the real Mirai UDP file on the scanner's SYNs with the flood from its 13th row
    and no C&C row before it. So the bot has resolved its server, connected and registered
    before the recording, and the command comes in its first tens of milliseconds.

    Parameters
    ----------
    botnet
        ``"mirai"`` (binary protocol on port 23, 2-byte pings every 60 s) or ``"gafgyt"``
        (IRC-like text on port 6667, ``PING``/``PONG``).
    command_at
        Seconds after the capture start when the command arrives.
    style
        The device's TCP framing.
    """

    botnet: str
    command_at: float
    style: TcpStyle

    def rate(self) -> float:
        return 3.0 / 60.0

    def emit(self, window: Window) -> Frames:
        rng, style = window.rng, self.style
        start = window.capture_start + 0.01
        port = int(window.constant_rng().integers(32768, 61000))
        mirai = self.botnet == "mirai"
        server_port = MIRAI_CNC_PORT if mirai else GAFGYT_CNC_PORT
        parts = []
        command = window.capture_start + self.command_at
        if window.t0 <= command < window.t1:
            length = (int(style.data(24)), int(style.data(48))) if mirai else (
                int(style.data(30)), int(style.data(52)))
            flat = expand(rng, np.array([command]), [inb(length, 0.0), out(style.ack, 0.01, ACK)])
            parts.append(tcp_frames(window, CNC_SERVER, flat, np.array([port]), server_port))
        pings = periodic_times(rng, window.t0, window.t1, 60.0, phase=start + 60.0, jitter=0.01)
        pings = pings[pings > start + 1.0]
        if len(pings):
            if mirai:  # the bot pings, the server echoes
                steps = [out(int(style.data(2)), 0.0), inb(int(style.data(2)), CNC_RTT),
                         out(style.ack, 0.04, ACK)]
            else:  # the server pings, the bot answers
                steps = [inb(int(style.data(5)), 0.0), out(int(style.data(5)), 0.01),
                         inb(style.ack, CNC_RTT, ACK)]
            flat = expand(rng, pings, steps)
            parts.append(tcp_frames(window, CNC_SERVER, flat, np.full(len(pings), port),
                                    server_port))
        return Frames.concat(parts)


# --- Mirai -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MiraiScanner:
    """Mirai's raw SYN scanner (``scanner.c``), with the answers it provokes.

    Parameters
    ----------
    pps
        SYN probes per second, sent in one burst each second.
    start_offset
        Seconds after the capture start when scanning begins (0: already running).
    style
        The device's TCP framing (for the brute-force connections).
    rst_fraction, open_fraction
        Fractions of probed hosts answering with a reset, or with SYN-ACK (telnet open).
    """

    pps: float
    start_offset: float = 0.0
    style: TcpStyle = field(default_factory=TcpStyle)
    rst_fraction: float = 0.025
    open_fraction: float = 0.006

    def rate(self) -> float:
        return self.pps * (1.0 + self.rst_fraction + self.open_fraction * 12.0)

    def emit(self, window: Window) -> Frames:
        rng, host = window.rng, window.host
        t0, t1 = _active(window, self.start_offset)
        times = _burst_times(rng, t0, t1, self.pps)
        n = len(times)
        if n == 0:
            return Frames.empty()
        source_port = int(window.constant_rng().integers(1024, 65536))
        target = random_public_ips(rng, n)
        dport = np.where(rng.random(n) < 0.1, 2323, 23)
        probes = between(host, target, times, 60, True, local_port=source_port, peer_port=dport,
                         flags=SYN)
        answer = rng.random(n)
        rst = answer < self.rst_fraction
        opened = (answer >= self.rst_fraction) & (answer < self.rst_fraction + self.open_fraction)
        back = rst | opened
        reply_t = times[back] + spread(rng, np.full(int(back.sum()), INTERNET_RTT), 0.6)
        replies = between(host, target[back], reply_t, 60, False, local_port=source_port,
                          peer_port=dport[back], flags=np.where(rst[back], RST | ACK, SYN | ACK))
        # The kernel resets the SYN-ACKs of probes it never sent.
        open_t = reply_t[opened[back]]
        resets = between(host, target[opened], open_t + 1e-4, 60, True, local_port=source_port,
                         peer_port=dport[opened], flags=RST)
        logins = expand(rng, open_t + rng.uniform(0.2, 1.5, len(open_t)),
                        _telnet_login(self.style, INTERNET_RTT))
        login_port = ephemeral_ports(rng, len(open_t))
        brute = tcp_frames(window, target[opened], logins, login_port, dport[opened])
        parts = [probes, replies, resets, brute]
        success = rng.random(len(open_t)) < 0.3
        if success.any():
            finished = logins.t.reshape(len(open_t), -1)[success, -1] + 0.05
            report = expand(rng, finished, [*tcp_open(self.style, INTERNET_RTT),
                                            out(int(self.style.data(20)), 1e-3),
                                            *tcp_close(self.style, INTERNET_RTT)])
            parts.append(tcp_frames(window, REPORT_SERVER, report,
                              ephemeral_ports(rng, int(success.sum())), MIRAI_REPORT_PORT))
        return Frames.concat(parts)


@dataclass(frozen=True)
class MiraiFlood:
    """Mirai's ``ack``, ``syn``, ``udp`` and ``udpplain`` floods against one victim.

    Parameters
    ----------
    attack
        ``"ack"``, ``"syn"``, ``"udp"`` or ``"udpplain"``.
    pps
        Packets per second.
    start_offset
        Seconds after the capture start when the flood begins.
    victim
        Victim IP code.
    """

    attack: str
    pps: float
    start_offset: float
    victim: int = VICTIM_SERVER

    def rate(self) -> float:
        return self.pps * (1.85 if self.attack in ("ack", "syn") else 1.0)

    def emit(self, window: Window) -> Frames:
        rng, host = window.rng, window.host
        t0, t1 = _active(window, self.start_offset)
        times = _stream_times(rng, t0, t1, self.pps)
        n = len(times)
        if n == 0:
            return Frames.empty()
        if self.attack == "udpplain":
            const = window.constant_rng()
            sport = np.full(n, int(const.integers(1024, 65536)))
            dport = np.full(n, int(const.integers(1, 65536)))
        else:
            sport = rng.integers(0, 65536, n)
            dport = rng.integers(0, 65536, n)
        if self.attack in ("udp", "udpplain"):
            flood = between(host, self.victim, times, ETH_IP_UDP + 512, True, local_port=sport,
                            peer_port=dport, proto=IP_PROTO_UDP)
            # The victim's port-unreachable errors, rate-limited to about one per second;
            # they quote the flood datagram's ports.
            errors = periodic_times(rng, t0, t1, 1.0, phase=t0 + 0.02, jitter=0.05)
            quoted = (np.searchsorted(times, errors, side="right") - 1).clip(0, n - 1)
            icmp = Frames.build(
                errors + VICTIM_RTT, 590,
                src_mac=flood.dst_mac[:1].repeat(len(errors)),
                dst_mac=np.full(len(errors), host.mac, np.uint64),
                src_ip=self.victim, dst_ip=host.ip, sport=sport[quoted], dport=dport[quoted],
                proto=IP_PROTO_ICMP, flags=ICMP_UNREACHABLE,
            )
            return Frames.concat([flood, icmp])
        if self.attack == "ack":
            length = 14 + 20 + 20 + rng.integers(512, 1401, n)
            flags = ACK
        elif self.attack == "syn":
            length = np.full(n, 74)
            flags = SYN
        else:
            raise ValueError(f"unknown Mirai flood {self.attack!r}")
        flood = between(host, self.victim, times, length, True, local_port=sport,
                        peer_port=dport, flags=flags)
        reset = rng.random(n) < 0.85
        resets = between(host, self.victim, times[reset] + spread(rng, np.full(int(reset.sum()),
                                                                              VICTIM_RTT), 0.3),
                         60, False, local_port=sport[reset], peer_port=dport[reset],
                         flags=RST | ACK if self.attack == "syn" else RST)
        return Frames.concat([flood, resets])


# --- Gafgyt ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GafgytRawFlood:
    """BASHLITE's raw ``tcp`` and ``udp`` floods: forged random source addresses and ports,
    no payload (60-byte frames), so the victim's answers never come back to the device.

    Parameters
    ----------
    attack
        ``"tcp"`` (all TCP flags set) or ``"udp"``.
    pps
        Packets per second.
    start_offset
        Seconds after the capture start when the flood begins.
    victim
        Victim IP code.
    victim_port
        Destination port (0: random per packet, as with BASHLITE's port 0).
    """

    attack: str
    pps: float
    start_offset: float
    victim: int = VICTIM_SERVER
    victim_port: int = 0

    def rate(self) -> float:
        return self.pps

    def emit(self, window: Window) -> Frames:
        rng, host = window.rng, window.host
        t0, t1 = _active(window, self.start_offset)
        times = _stream_times(rng, t0, t1, self.pps)
        n = len(times)
        if n == 0:
            return Frames.empty()
        victim_mac = macs_of(self.victim)[0]
        dport = rng.integers(0, 65536, n) if self.victim_port == 0 else self.victim_port
        tcp = self.attack == "tcp"
        return Frames.build(
            times, 60 if tcp else ETH_IP_UDP + rng.integers(0, 19, n),
            src_mac=host.mac, dst_mac=victim_mac, src_ip=random_spoofed_ips(rng, n),
            dst_ip=self.victim, sport=rng.integers(0, 65536, n), dport=dport,
            proto=IP_PROTO_TCP if tcp else IP_PROTO_UDP, flags=ALL_FLAGS if tcp else 0,
        )


@dataclass(frozen=True)
class GafgytConnections:
    """BASHLITE's socket floods on the victim's web port: ``combo`` (connection flood, half
    the connections held open, half pushing junk) and ``junk`` (junk-string senders over TCP
    plus UDP junk datagrams).

    Parameters
    ----------
    attack
        ``"combo"`` or ``"junk"``.
    pps
        Approximate packets per second the device manages.
    start_offset
        Seconds after the capture start when the attack begins.
    style
        The device's TCP framing.
    victim, victim_port
        Target server and its open port.
    """

    attack: str
    pps: float
    start_offset: float
    style: TcpStyle = field(default_factory=TcpStyle)
    victim: int = VICTIM_SERVER
    victim_port: int = 80

    def _shape(self) -> tuple[float, float, float, float]:
        """Connections per second, fraction pushing junk, mean sends per pusher, UDP pps."""
        if self.attack == "combo":
            per_connection = 5.0 + 0.5 * 12.0 * 1.5
            return self.pps / per_connection, 0.5, 12.0, 0.0
        per_connection = 5.0 + 40.0 * 1.5
        return 0.7 * self.pps / per_connection, 1.0, 40.0, 0.3 * self.pps

    def rate(self) -> float:
        return self.pps

    def emit(self, window: Window) -> Frames:
        rng, host, style = window.rng, window.host, self.style
        t0, t1 = _active(window, self.start_offset)
        connections_per_s, junk_fraction, sends, udp_pps = self._shape()
        starts = _stream_times(rng, t0, t1, connections_per_s, shape=2.0)
        n = len(starts)
        parts = []
        if n:
            port = ephemeral_ports(rng, n)
            opened = expand(rng, starts, tcp_open(style, VICTIM_RTT))
            parts.append(tcp_frames(window, self.victim, opened, port, self.victim_port))
            established = opened.t.reshape(n, -1)[:, -1]
            pushing = rng.random(n) < junk_fraction
            count = rng.geometric(1.0 / sends, n)
            payload = (count * 1024).astype(np.int64)
            junk_idx = np.flatnonzero(pushing)
            if len(junk_idx):
                data = bulk(rng, established[junk_idx] + 1e-3, payload[junk_idx], outbound=True,
                            style=style, rtt=VICTIM_RTT, pace=4.0 / self.pps)
                parts.append(tcp_frames(window, self.victim, data, port[junk_idx],
                                        self.victim_port))
                end = np.zeros(len(junk_idx))
                np.maximum.at(end, data.session, data.t)
            else:
                end = np.empty(0)
            held = np.flatnonzero(~pushing)
            # Held connections are reset by the victim's idle timeout; pushers end with RST.
            closing_t = np.concatenate([end + 1e-3, established[held] + rng.uniform(2, 6,
                                                                                      len(held))])
            closing_who = np.concatenate([np.ones(len(junk_idx), bool), np.zeros(len(held),
                                                                                  bool)])
            closing_port = np.concatenate([port[junk_idx], port[held]])
            parts.append(between(host, self.victim, closing_t, style.ack, closing_who,
                                 local_port=closing_port, peer_port=self.victim_port,
                                 flags=np.where(closing_who, RST | ACK, FIN | ACK)))
        if udp_pps > 0:
            times = _stream_times(rng, t0, t1, udp_pps)
            m = len(times)
            parts.append(between(host, self.victim, times,
                                 ETH_IP_UDP + rng.integers(32, 1025, m), True,
                                 local_port=int(window.constant_rng().integers(32768, 61000)),
                                 peer_port=rng.integers(1, 65536, m), proto=IP_PROTO_UDP))
        return Frames.concat(parts)


@dataclass(frozen=True)
class GafgytScanner:
    """BASHLITE's telnet scanner: non-blocking ``connect()`` to random hosts on port 23 (one SYN
    each), brute-force logins on hosts that answer.

    The scanner gives up on a silent host and closes its socket before the kernel's first
    retransmission (1 s), so every target gets exactly one SYN: in N-BaIoT's Gafgyt scan files
    97.7 % of rows open a new ``HH_jit`` channel (a SYN to a host never contacted), which
    retransmitted SYNs would lower.

    Parameters
    ----------
    targets_per_s
        New hosts tried per second.
    start_offset
        Seconds after the capture start when scanning begins.
    style
        The device's TCP framing.
    rst_fraction, open_fraction
        Fractions of hosts answering with a reset, or accepting the connection.
    """

    targets_per_s: float
    start_offset: float
    style: TcpStyle = field(default_factory=TcpStyle)
    rst_fraction: float = 0.03
    open_fraction: float = 0.002

    def rate(self) -> float:
        return self.targets_per_s * (1.0 + self.rst_fraction + 25.0 * self.open_fraction)

    def emit(self, window: Window) -> Frames:
        rng, host, style = window.rng, window.host, self.style
        t0, t1 = _active(window, self.start_offset)
        starts = _stream_times(rng, t0, t1, self.targets_per_s, shape=1.5)
        n = len(starts)
        if n == 0:
            return Frames.empty()
        target = random_public_ips(rng, n)
        port = ephemeral_ports(rng, n)
        answer = rng.random(n)
        rst = answer < self.rst_fraction
        opened = (answer >= self.rst_fraction) & (answer < self.rst_fraction + self.open_fraction)
        syn = between(host, target, starts, style.syn, True, local_port=port, peer_port=23,
                      flags=SYN)
        reset_t = starts[rst] + spread(rng, np.full(int(rst.sum()), INTERNET_RTT), 0.6)
        resets = between(host, target[rst], reset_t, 60, False, local_port=port[rst],
                         peer_port=23, flags=RST | ACK)
        open_idx = np.flatnonzero(opened)
        login = expand(rng, starts[open_idx], _telnet_login(style, INTERNET_RTT)[1:])
        brute = tcp_frames(window, target[open_idx], login, port[open_idx], 23)
        return Frames.concat([syn, resets, brute])


# --- scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackPlan:
    """How one attack capture unfolds.

    Parameters
    ----------
    traffic_class
        e.g. ``"mirai.syn"``.
    command_at
        Seconds after the capture start when the C&C command arrives (the attack starts a few
        milliseconds later).
    behaviours
        The bot's traffic sources (C&C, attack, Mirai's scanner); the device's benign
        behaviours run alongside.
    """

    traffic_class: str
    command_at: float
    behaviours: tuple[Behaviour, ...]


def plan_attack(profile: DeviceProfile, traffic_class: str,
                rng: np.random.Generator) -> AttackPlan:
    """The bot behaviours of one attack capture of one device (``rng``: capture constants)."""
    if traffic_class not in ATTACK_CLASSES:
        raise KeyError(f"unknown attack class {traffic_class!r}; expected one of "
                       + ", ".join(ATTACK_CLASSES))
    botnet, attack = traffic_class.split(".")
    if botnet == "mirai" and not profile.device.has_mirai:
        raise KeyError(f"N-BaIoT has no Mirai traffic for device {profile.device.uci_id} "
                       f"({profile.device.name})")
    command_at = float(rng.uniform(0.01, 0.05))  # see CncSession: the bot is registered
    begin = command_at + float(rng.uniform(0.003, 0.012))
    cpu = profile.flood_pps * float(rng.uniform(0.9, 1.1))
    style = profile.style
    bot: list[Behaviour] = [CncSession(botnet, command_at, style)]
    if botnet == "mirai":
        if attack == "scan":
            bot.append(MiraiScanner(0.35 * cpu, 0.0, style))
        else:
            bot.append(MiraiScanner(0.25 * cpu, 0.0, style))
            share = {"ack": 0.8, "syn": 1.1, "udp": 0.9, "udpplain": 1.4}[attack]
            bot.append(MiraiFlood(attack, share * cpu, begin))
    elif attack in ("tcp", "udp"):
        # Recorded once and replayed on every device (see GAFGYT_RAW_FLOOD_PPS): the same rate.
        bot.append(GafgytRawFlood(attack, GAFGYT_RAW_FLOOD_PPS * float(rng.uniform(0.97, 1.03)),
                                  begin))
    elif attack in ("combo", "junk"):
        bot.append(GafgytConnections(attack, (0.7 if attack == "combo" else 0.6) * cpu, begin,
                                     style))
    else:
        bot.append(GafgytScanner(0.15 * cpu, begin, style))
    return AttackPlan(traffic_class, command_at, tuple(bot))
