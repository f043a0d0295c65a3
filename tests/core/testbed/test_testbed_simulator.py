"""The packet simulator: determinism, well-formed captures, and the traits of each attack."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from fediot.core.catalog import (
    ATTACK_CLASSES,
    DEVICES,
    FEATURE_NAMES,
    OFFICIAL_ROW_COUNTS,
    device_by_id,
)
from fediot.core.features.extractor import extract_features
from fediot.core.features.packets import (
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    KIND_ARP,
    KIND_IPV4,
    PacketTable,
)
from fediot.core.features.pcap import read_capture
from fediot.core.testbed.devices import BENIGN_CAPTURE_DAYS, PROFILES
from fediot.core.testbed.frames import ACK, SYN, Diurnal, poisson_times
from fediot.core.testbed.network import DEVICE_HOSTS, GATEWAY
from fediot.core.testbed.pcap_writer import write_pcap
from fediot.core.testbed.simulator import (
    MAX_ATTACK_ROWS,
    MIN_ATTACK_ROWS,
    SimulationError,
    packet_count,
    simulate_capture,
)

EPOCH_2017 = 1483228800.0
EPOCH_2019 = 1546300800.0


def same_table(a: PacketTable, b: PacketTable) -> bool:
    return all(np.array_equal(getattr(a, f.name), getattr(b, f.name)) for f in fields(a))


def device_ip(uci_id: int) -> str:
    code = DEVICE_HOSTS[uci_id].ip
    return f"{code >> 24}.{(code >> 16) & 255}.{(code >> 8) & 255}.{code & 255}"


@pytest.mark.parametrize("traffic_class", ["benign", "mirai.syn", "gafgyt.combo"])
def test_same_seed_gives_the_same_capture_and_another_seed_another(traffic_class: str) -> None:
    first = simulate_capture(1, traffic_class, 400, seed=3)
    again = simulate_capture(1, traffic_class, 400, seed=3)
    other = simulate_capture(1, traffic_class, 400, seed=4)
    assert same_table(first.packets, again.packets)
    assert np.array_equal(first.flags, again.flags)
    assert not np.array_equal(first.packets.timestamp, other.packets.timestamp)


def test_a_small_capture_is_the_beginning_of_a_larger_one() -> None:
    small = simulate_capture(4, "benign", 700, seed=0)
    large = simulate_capture(4, "benign", 3000, seed=0)
    assert same_table(small.packets, large.packets.take(slice(0, len(small))))
    assert np.array_equal(small.sent, large.sent[: len(small)])


@pytest.mark.parametrize(
    ("uci_id", "traffic_class"),
    [(d.uci_id, c) for d in DEVICES for c in d.traffic_classes],
)
def test_every_capture_is_well_formed(uci_id: int, traffic_class: str) -> None:
    capture = simulate_capture(uci_id, traffic_class, 300, seed=0)
    packets = capture.packets
    assert capture.n_rows == 300
    own_mac = DEVICE_HOSTS[uci_id].mac
    assert np.array_equal(capture.sent, packets.src_mac == own_mac)
    assert capture.sent[0] and capture.sent[-1], "a capture runs from a sent frame to a sent one"
    t = packets.timestamp
    assert np.all(np.diff(t) > 0), "timestamps must be strictly increasing"
    assert EPOCH_2017 < t[0] < EPOCH_2019
    assert np.array_equal(np.round(t * 1e6) / 1e6, t), "whole microseconds, as in a pcap"
    assert packets.frame_len.min() >= 60 and packets.frame_len.max() <= 1514
    assert np.all((packets.src_mac == own_mac) | (packets.dst_mac == own_mac)
                  | (packets.dst_mac >= 0x0100_0000_0000)), "only frames the port sees"
    assert len(capture.flags) == len(capture.sent) == len(packets)


@pytest.mark.parametrize("uci_id", [d.uci_id for d in DEVICES])
def test_benign_traffic_flows_both_ways_with_lan_housekeeping(uci_id: int) -> None:
    packets = simulate_capture(uci_id, "benign", 4000, seed=0).packets
    own = device_ip(uci_id)
    assert np.count_nonzero(packets.src_ip == own) > 400
    assert np.count_nonzero(packets.dst_ip == own) > 200
    assert np.any(packets.kind == KIND_ARP)
    # Mostly TCP/UDP; not "almost only": 37 % of the real Danmini doorbell's rows are its pings
    # to the router and ARP.
    tcp_or_udp = np.isin(packets.ip_proto, [IP_PROTO_TCP, IP_PROTO_UDP])
    assert tcp_or_udp.mean() > 0.5
    # Every IP address travels under a single MAC (so N-BaIoT's H equals MI_dir).
    pairs = {(ip, int(mac)) for ip, mac in zip(packets.src_ip, packets.src_mac, strict=True)}
    assert len(pairs) == len({ip for ip, _ in pairs})


def test_devices_are_not_alike() -> None:
    sizes = {}
    for device in DEVICES:
        lengths = simulate_capture(device.uci_id, "benign", 3000, seed=0).packets.frame_len
        sizes[device.uci_id] = np.bincount(np.minimum(lengths, 1514) // 100, minlength=16) / 3000
    for a in sizes:
        for b in sizes:
            if a < b:
                assert np.abs(sizes[a] - sizes[b]).sum() > 0.05, (a, b)


def test_ennio_and_samsung_have_no_mirai() -> None:
    for uci_id in (3, 7):
        assert not device_by_id(uci_id).has_mirai
        with pytest.raises(SimulationError, match=r"no 'mirai\.syn' traffic"):
            simulate_capture(uci_id, "mirai.syn", 100)


def test_bad_requests_raise_one_clear_error() -> None:
    with pytest.raises(SimulationError, match="valid ids are 1–9"):
        simulate_capture(10, "benign", 10)
    with pytest.raises(SimulationError, match="n_rows"):
        simulate_capture(1, "benign", 0)
    with pytest.raises(SimulationError, match="scale"):
        packet_count(1, "benign", 0.0)


def test_row_counts_are_n_baiot_benign_counts_and_bounded_attack_samples() -> None:
    total = 0
    for device in DEVICES:
        for traffic_class in device.traffic_classes:
            n = packet_count(device.uci_id, traffic_class)
            if traffic_class == "benign":
                assert n == OFFICIAL_ROW_COUNTS[(device.uci_id, traffic_class)]
            else:
                assert MIN_ATTACK_ROWS <= n <= MAX_ATTACK_ROWS
            total += n
    assert 700_000 <= total <= 900_000
    assert packet_count(4, "benign", 0.1) == round(0.1 * 175_240)


@pytest.mark.parametrize("uci_id", [d.uci_id for d in DEVICES])
def test_benign_captures_span_days_at_scale_one(uci_id: int) -> None:
    # Long enough for N-BaIoT's thirds to each hold about a day, the epoch-time first jitter of
    # the capture's new channels (about two hours at λ = 0.01) only its start.
    capture = simulate_capture(uci_id, "benign", packet_count(uci_id, "benign"), seed=0)
    t = capture.packets.timestamp
    hours = (t[-1] - t[0]) / 3600.0
    assert hours >= 48.0 and 0.75 < hours / 24.0 / BENIGN_CAPTURE_DAYS < 1.3, hours
    third = np.searchsorted(t, t[0] + hours * 3600.0 / 3)
    assert 0.2 < np.count_nonzero(capture.sent[:third]) / capture.n_rows < 0.5


def test_diurnal_rhythm_modulates_event_rates() -> None:
    rng = np.random.default_rng(0)
    rhythm = Diurnal(amplitude=0.8, peak_hour=20.0, utc_offset_hours=0.0)
    day = 1505606400.0  # a midnight, UTC
    busy = poisson_times(rng, day + 19 * 3600, day + 21 * 3600, 1.0, rhythm)
    quiet = poisson_times(rng, day + 7 * 3600, day + 9 * 3600, 1.0, rhythm)
    assert len(busy) > 4 * len(quiet)


# --- attacks -----------------------------------------------------------------------------------


def attack_packets(uci_id: int, traffic_class: str, n: int = 2000) -> PacketTable:
    return simulate_capture(uci_id, traffic_class, n, seed=0).packets


def packet_rate(packets: PacketTable, mask: np.ndarray) -> float:
    t = packets.timestamp[mask]
    return float((len(t) - 1) / (t[-1] - t[0]))


@pytest.mark.parametrize("traffic_class", ATTACK_CLASSES)
def test_attack_captures_start_with_the_cnc_command(traffic_class: str) -> None:
    # As N-BaIoT's attack files do: the bot is already registered, the command (and with it the
    # attack) comes at once.
    # (The command itself may precede the capture's first sent frame, its ACK cannot.)
    packets = attack_packets(8, traffic_class)
    cnc_port = 23 if traffic_class.startswith("mirai") else 6667
    ack = (packets.dst_ip == "203.0.113.66") & (packets.dst_port == cnc_port)
    assert ack.any()
    t = packets.timestamp
    assert t[np.flatnonzero(ack)[0]] - t[0] < 0.1


def test_mirai_scan_probes_random_hosts_on_telnet_ports() -> None:
    packets = attack_packets(1, "mirai.scan", 3000)
    own = device_ip(1)
    probes = (packets.src_ip == own) & (packets.frame_len == 60) & np.isin(
        packets.dst_port, [23, 2323])
    assert probes.sum() > 2000
    share_2323 = np.mean(packets.dst_port[probes] == 2323)
    assert 0.05 < share_2323 < 0.15
    assert len(set(packets.dst_ip[probes])) > 0.97 * probes.sum()  # (plus a few resets)
    # One raw socket, one source port (the rest: bare ACKs of brute-force telnet sessions).
    assert np.bincount(packets.src_port[probes]).max() > 0.95 * probes.sum()
    assert 100 < packet_rate(packets, probes) < 1000


@pytest.mark.parametrize("attack", ["ack", "syn", "udp", "udpplain"])
def test_mirai_floods_hit_one_victim_at_hundreds_of_packets_per_second(attack: str) -> None:
    packets = attack_packets(5, f"mirai.{attack}", 4000)
    flood = packets.dst_ip == "203.0.113.90"
    assert flood.sum() > 1000
    assert packet_rate(packets, flood) > 300
    ports = packets.src_port[flood]
    if attack == "udpplain":
        assert len(set(ports)) == 1 and len(set(packets.dst_port[flood])) == 1
    else:
        assert len(set(ports)) > 0.9 * flood.sum()
    lengths = packets.frame_len[flood]
    if attack == "ack":
        assert lengths.min() >= 566 and lengths.max() <= 1454
    elif attack == "syn":
        assert np.all(lengths == 74)
    else:
        assert np.all(lengths == 554)


def test_mirai_attacks_keep_scanning_in_the_background() -> None:
    packets = attack_packets(2, "mirai.udp", 3000)
    scan = np.isin(packets.dst_port, [23, 2323]) & (packets.frame_len == 60)
    assert 0.05 < scan.mean() < 0.5


@pytest.mark.parametrize("attack", ["tcp", "udp"])
def test_gafgyt_raw_floods_forge_their_source(attack: str) -> None:
    packets = attack_packets(9, f"gafgyt.{attack}")
    own_mac = DEVICE_HOSTS[9].mac
    forged = (packets.src_mac == own_mac) & (packets.src_ip != device_ip(9))
    assert forged.mean() > 0.9
    assert len(set(packets.src_ip[forged])) > 0.99 * forged.sum()
    assert np.all(packets.dst_ip[forged] == "203.0.113.90")
    assert np.all(packets.frame_len[forged] == 60)
    proto = IP_PROTO_TCP if attack == "tcp" else IP_PROTO_UDP
    assert np.all(packets.ip_proto[forged] == proto)


@pytest.mark.parametrize("uci_id", [1, 7])
def test_gafgyt_scan_tries_each_random_host_once(uci_id: int) -> None:
    capture = simulate_capture(uci_id, "gafgyt.scan", 3000, seed=0)
    packets = capture.packets
    syn = (capture.flags == SYN) & (packets.dst_port == 23) & (packets.src_ip == device_ip(
        uci_id))
    assert syn.sum() > 2500
    targets = packets.dst_ip[syn]
    assert len(set(targets)) > 0.99 * syn.sum()  # no retransmitted SYNs
    # So nearly every row opens a new HH_jit channel (real N-BaIoT scan files: 97.7 %).
    rows = extract_features(packets)[capture.sent]
    jitter_weight = rows[:, FEATURE_NAMES.index("HH_jit_L0.01_weight")]
    jitter_mean = rows[:, FEATURE_NAMES.index("HH_jit_L5_mean")]
    assert np.mean((jitter_weight < 1 + 1e-6) & (jitter_mean > 1e9)) >= 0.95


@pytest.mark.parametrize("attack", ["combo", "junk"])
def test_gafgyt_socket_floods_open_connections_and_push_junk(attack: str) -> None:
    capture = simulate_capture(6, f"gafgyt.{attack}", 3000, seed=0)
    packets = capture.packets
    to_victim = (packets.dst_ip == "203.0.113.90") & (packets.ip_proto == IP_PROTO_TCP)
    acks_back = (packets.src_ip == "203.0.113.90") & (capture.flags == ACK)
    handshakes = to_victim & (capture.flags == SYN)
    assert handshakes.sum() > 20 and acks_back.sum() > 100
    big = to_victim & (packets.frame_len > 1000)
    assert big.sum() > 200


def test_pcap_round_trip_gives_back_the_same_packets(tmp_path: Path) -> None:
    for uci_id, traffic_class in [(7, "benign"), (2, "mirai.udp"), (3, "gafgyt.scan")]:
        capture = simulate_capture(uci_id, traffic_class, 1500, seed=1)
        path = tmp_path / f"{uci_id}-{traffic_class}.pcap"
        write_pcap(capture, path)
        result = read_capture(path)
        assert same_table(result.packets, capture.packets), (uci_id, traffic_class)
    ipv4 = capture.packets.kind == KIND_IPV4
    assert ipv4.any()


def test_profiles_cover_every_device() -> None:
    assert set(PROFILES) == {d.uci_id for d in DEVICES}
    assert all(p.host.ip != GATEWAY.ip for p in PROFILES.values())
    assert len({p.host.mac for p in PROFILES.values()}) == len(DEVICES)
