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
    KIND_IPV4,
    Packet,
    PacketTable,
)
from fediot.core.features.pcap import FrameDissector, MalformedFrameError, read_capture
from fediot.core.features.reference import reference_features
from traffic import random_traffic


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
