"""The live (one packet at a time) extractor path and the shared frame parser, held to the
batch extractor, the plain-Python reference and the capture reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fediot.core.errors import FediotError
from fediot.core.features.extractor import ExtractorOptions, FeatureExtractor, extract_features
from fediot.core.features.packets import (
    KIND_ARP,
    KIND_IPV4,
    KIND_OTHER,
    PORT_ARP,
    PORT_NONE,
    Packet,
    PacketTable,
)
from fediot.core.features.pcap import FrameDissector, MalformedFrameError, read_capture
from fediot.core.features.reference import reference_features


def random_traffic(n: int, seed: int, *, ports: int = 5) -> PacketTable:
    """Mixed IPv4/ARP/non-IP traffic among few hosts; ``ports`` > 5 draws random ports, so
    most packets open a new socket pair (a scan or flood)."""
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
    gaps = rng.choice([0.0, 1e-5, 0.01, 0.3, 5.0, 400.0], n)
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


def one_by_one(table: PacketTable, extractor: FeatureExtractor | None = None) -> np.ndarray:
    live = extractor or FeatureExtractor()
    return np.array([live.update_packet(packet) for packet in table.rows()])


@pytest.mark.parametrize("first_jitter", ["epoch", "zero"])
def test_fast_path_equals_batch_and_reference_bit_for_bit(first_jitter: str) -> None:
    table = random_traffic(3000, seed=11)
    options = ExtractorOptions(first_jitter=first_jitter)
    live = one_by_one(table, FeatureExtractor(options))
    np.testing.assert_array_equal(live, extract_features(table, options=options))
    np.testing.assert_array_equal(live, reference_features(table, first_jitter=first_jitter))


def test_fast_path_on_a_flood_of_new_sockets() -> None:
    """More new keys than the key index buffers before merging (4,096), and pair tables that
    must grow many times: ids and openers stay consistent with the batch path."""
    table = random_traffic(9000, seed=12, ports=60_000)
    live = one_by_one(table)
    np.testing.assert_array_equal(live, extract_features(table))


def test_fast_path_on_the_real_capture(real_pcap: Path) -> None:
    packets = read_capture(real_pcap).packets
    live = one_by_one(packets)
    np.testing.assert_array_equal(live, extract_features(packets))
    np.testing.assert_array_equal(live, reference_features(packets))


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(1, 300), min_size=1, max_size=12), seed=st.integers(0, 50))
def test_any_mix_of_batches_and_single_packets_gives_the_same_rows(
    cuts: list[int], seed: int
) -> None:
    table = random_traffic(1200, seed=seed, ports=200)
    whole = extract_features(table)
    extractor = FeatureExtractor()
    rows: list[np.ndarray] = []
    start = 0
    for step, cut in enumerate(cuts):
        stop = min(start + cut, len(table))
        part = table.take(slice(start, stop))
        if step % 2:
            rows.extend(extractor.process(part))
        else:
            rows.extend(extractor.update_packet(packet) for packet in part.rows())
        start = stop
    rows.extend(extractor.update_packet(packet) for packet in table.take(slice(start, None)).rows())
    np.testing.assert_array_equal(np.array(rows), whole)
    assert extractor.packets_seen == len(table)


def test_update_keyword_form_and_bad_packets_are_named() -> None:
    extractor = FeatureExtractor()
    row = extractor.update(timestamp=10.0, frame_len=60, src_mac=1, dst_mac=2, src_ip="10.0.0.1",
                           dst_ip="10.0.0.2", src_port=1000, dst_port=80, kind=KIND_IPV4)
    assert row.shape == (115,) and row[0] == 1.0  # MI_dir weight of a fresh stream
    with pytest.raises(FediotError, match="packet #1 has a non-finite timestamp"):
        extractor.update(timestamp=float("nan"), frame_len=60, src_mac=1, dst_mac=2,
                         src_ip="10.0.0.1", dst_ip="10.0.0.2", src_port=1000, dst_port=80,
                         kind=KIND_IPV4)
    with pytest.raises(FediotError, match="packet #1 has a negative frame length"):
        extractor.update(timestamp=11.0, frame_len=-1, src_mac=1, dst_mac=2,
                         src_ip="10.0.0.1", dst_ip="10.0.0.2", src_port=1000, dst_port=80,
                         kind=KIND_IPV4)
    assert extractor.packets_seen == 1


def test_rows_and_from_packets_round_trip() -> None:
    table = random_traffic(50, seed=3)
    packets = list(table.rows())
    assert isinstance(packets[0], Packet)
    assert type(packets[0].src_ip) is str and type(packets[0].src_mac) is int
    back = PacketTable.from_packets(packets)
    for name in Packet._fields:
        np.testing.assert_array_equal(getattr(back, name), getattr(table, name))
    assert len(PacketTable.from_packets([])) == 0


def test_frame_dissector_gives_the_readers_packets(real_pcap: Path) -> None:
    """One frame at a time (as live capture parses) equals the reader's table."""
    import dpkt

    table = read_capture(real_pcap).packets
    dissector = FrameDissector()
    with real_pcap.open("rb") as handle:
        reader = dpkt.pcap.Reader(handle)
        link_type = reader.datalink()
        # dpkt's reader drops the wire length; the reader's own column has it
        frames = [(ts, buf) for ts, buf in reader]
    parsed = [dissector.packet(link_type, buf, float(table.timestamp[i]),
                               int(table.frame_len[i]))
              for i, (_, buf) in enumerate(frames)]
    assert parsed == list(table.rows())
    with pytest.raises(MalformedFrameError, match="shorter than an Ethernet header"):
        dissector.packet(link_type, b"\x00" * 10, 0.0, 10)
