"""The packet simulator: determinism, well-formed captures, and the traits of each attack."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from fediot.core.catalog import ATTACK_CLASSES, DEVICES, device_by_id
from fediot.core.features.packets import (
    IP_PROTO_TCP,
    IP_PROTO_UDP,
    KIND_ARP,
    KIND_IPV4,
    PacketTable,
)
from fediot.core.features.pcap import read_capture
from fediot.core.testbed.devices import PROFILES
from fediot.core.testbed.frames import ACK, SYN, Diurnal, poisson_times
from fediot.core.testbed.network import DEVICE_HOSTS, GATEWAY
from fediot.core.testbed.pcap_writer import write_pcap
from fediot.core.testbed.simulator import (
    MIN_ATTACK_ROWS,
    MIN_BENIGN_ROWS,
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
    small = simulate_capture(4, "benign", 700, seed=0).packets
    large = simulate_capture(4, "benign", 3000, seed=0).packets
    assert same_table(small, large.take(slice(0, 700)))


@pytest.mark.parametrize(
    ("uci_id", "traffic_class"),
    [(d.uci_id, c) for d in DEVICES for c in d.traffic_classes],
)
def test_every_capture_is_well_formed(uci_id: int, traffic_class: str) -> None:
    capture = simulate_capture(uci_id, traffic_class, 300, seed=0)
    packets = capture.packets
    assert len(packets) == 300
    t = packets.timestamp
    assert np.all(np.diff(t) > 0), "timestamps must be strictly increasing"
    assert EPOCH_2017 < t[0] < EPOCH_2019
    assert np.array_equal(np.round(t * 1e6) / 1e6, t), "whole microseconds, as in a pcap"
    assert packets.frame_len.min() >= 60 and packets.frame_len.max() <= 1514
    own_mac = DEVICE_HOSTS[uci_id].mac
    assert np.all((packets.src_mac == own_mac) | (packets.dst_mac == own_mac)
                  | (packets.dst_mac >= 0x0100_0000_0000)), "only frames the port sees"
    assert len(capture.flags) == 300


@pytest.mark.parametrize("uci_id", [d.uci_id for d in DEVICES])
def test_benign_traffic_flows_both_ways_with_lan_housekeeping(uci_id: int) -> None:
    packets = simulate_capture(uci_id, "benign", 4000, seed=0).packets
    own = device_ip(uci_id)
    assert np.count_nonzero(packets.src_ip == own) > 400
    assert np.count_nonzero(packets.dst_ip == own) > 200
    assert np.any(packets.kind == KIND_ARP)
    tcp_or_udp = np.isin(packets.ip_proto, [IP_PROTO_TCP, IP_PROTO_UDP])
    assert tcp_or_udp.mean() > 0.8
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
    with pytest.raises(SimulationError, match="n_packets"):
        simulate_capture(1, "benign", 0)
    with pytest.raises(SimulationError, match="scale"):
        packet_count(1, "benign", 0.0)


def test_packet_counts_meet_the_minimums_and_stay_bounded() -> None:
    total = 0
    for device in DEVICES:
        for traffic_class in device.traffic_classes:
            n = packet_count(device.uci_id, traffic_class)
            floor = MIN_BENIGN_ROWS if traffic_class == "benign" else MIN_ATTACK_ROWS
            assert n >= floor
            total += n
    assert 400_000 <= total <= 600_000
    assert packet_count(4, "benign") > packet_count(2, "benign")  # follows N-BaIoT's sizes


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
def test_attack_captures_start_with_the_cnc_session(traffic_class: str) -> None:
    packets = attack_packets(8, traffic_class)
    cnc_port = 23 if traffic_class.startswith("mirai") else 6667
    to_cnc = (packets.dst_ip == "203.0.113.66") & (packets.dst_port == cnc_port)
    assert to_cnc.any()
    assert int(np.flatnonzero(to_cnc)[0]) < 40


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


def test_gafgyt_scan_connects_to_random_hosts_with_retries() -> None:
    capture = simulate_capture(7, "gafgyt.scan", 3000, seed=0)
    packets = capture.packets
    syn = (capture.flags == SYN) & (packets.dst_port == 23) & (packets.src_ip == device_ip(7))
    assert syn.sum() > 1500
    targets = packets.dst_ip[syn]
    assert len(set(targets)) < 0.7 * syn.sum()  # retransmitted SYNs
    assert len(set(targets)) > 300


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
