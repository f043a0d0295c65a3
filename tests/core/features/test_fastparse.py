"""The compiled capture parser (``read_capture(parser="compiled")``, the default) held to the
dpkt path it replaced (``parser="dpkt"``): identical columns, skips, errors and features, on the
real capture and on synthesised traffic of every supported link type."""

from __future__ import annotations

import hashlib
import struct
from collections import Counter
from pathlib import Path

import dpkt
import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from fediot.core.catalog import FEATURE_NAMES
from fediot.core.errors import FediotError
from fediot.core.features import extractor as extractor_module
from fediot.core.features import fastparse
from fediot.core.features.extractor import ExtractorOptions, FeatureExtractor, extract_features
from fediot.core.features.packets import KIND_ARP, KIND_IPV4, KIND_IPV6, KIND_OTHER
from fediot.core.features.pcap import CaptureError, read_capture
from fediot.core.io import features_to_arrow, write_features
from traffic import (
    assert_same_result,
    compiled_rows,
    dpkt_rows,
    random_frames,
    random_traffic,
)

# sha256 of the feature matrix (float64, C order) of the real capture, computed by main at
# 84ad4ac (dpkt parser, 37-argument kernel), before the compiled parser existed
MAIN_FEATURES_SHA256 = {
    "epoch": "8e6c7099ca15e47a6a1b605c2c05c0c304cb6b1585cf870f03c2216cbe46d770",
    "zero": "9209d553f0660299811516dcf9ab72f4ec42e3958855feabc9692e352dd8c066",
}


def pcap_file(path: Path, frames: list[bytes], link_type: int, *, endian: str = "<",
              nanoseconds: bool = False) -> Path:
    magic = 0xA1B23C4D if nanoseconds else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 262_144, link_type)]
    for i, frame in enumerate(frames):
        # second 1.6e9 + i, fraction up to the largest legal value (and one beyond)
        fraction = (i * 7_919_777) % (1_000_000_001 if nanoseconds else 1_000_001)
        out.append(struct.pack(endian + "IIII", 1_600_000_000 + i, fraction, len(frame),
                               len(frame) + i % 3) + frame)
    path.write_bytes(b"".join(out))
    return path


def pcapng_file(path: Path, frames: list[tuple[int, bytes]], endian: str = "<") -> Path:
    """One section, one interface per link type (nanosecond clock on the second), one EPB per
    frame and a simple packet block (skipped) every 50 frames."""
    def block(block_type: int, body: bytes) -> bytes:
        body += b"\0" * (-len(body) % 4)
        return (struct.pack(endian + "II", block_type, 12 + len(body)) + body
                + struct.pack(endian + "I", 12 + len(body)))

    links = sorted({link for link, _ in frames})
    out = [block(0x0A0D0D0A, struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    for n, link in enumerate(links):
        options = struct.pack(endian + "HH", 9, 1) + bytes([9, 0, 0, 0]) if n == 1 else b""
        out.append(block(1, struct.pack(endian + "HHI", link, 0, 0) + options))
    for i, (link, frame) in enumerate(frames):
        interface = links.index(link)
        ticks = (1_600_000_000 + i) * (10**9 if interface == 1 else 10**6) + i * 977
        out.append(block(6, struct.pack(endian + "IIIII", interface, ticks >> 32,
                                        ticks & 0xFFFF_FFFF, len(frame), len(frame)) + frame))
        if i % 50 == 49:
            out.append(block(3, struct.pack(endian + "I", len(frame)) + frame))
    path.write_bytes(b"".join(out))
    return path


# --- the kernel against dpkt, frame by frame ---------------------------------------------------


def test_the_protocol_tables_are_the_installed_dpkts() -> None:
    assert set(dpkt.ip.IP._protosw) == fastparse.DPKT_PARSED_PROTOCOLS
    assert set(dpkt.ip6.IP6._protosw) == fastparse.DPKT_PARSED_PROTOCOLS
    assert set(dpkt.ip6.EXT_HDRS) == fastparse.DPKT_IPV6_EXTENSION_HEADERS
    quotes = {t for t, parser in dpkt.icmp.ICMP._typesw.items()
              if issubclass(parser, dpkt.icmp.ICMP.Quote)}
    assert quotes == set(fastparse.DPKT_ICMP_QUOTE_TYPES)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_rows_equal_dpkt_rows_on_synthesised_frames(seed: int) -> None:
    frames = random_frames(4000, seed)
    ours, theirs = compiled_rows(frames), dpkt_rows(frames)
    handled = [i for i, row in enumerate(ours) if row is not None]
    for i in handled:
        assert ours[i] == theirs[i], (frames[i], ours[i], theirs[i])
    # the kernel takes on most well-formed frames, of every kind and link type
    well_formed = [i for i, row in enumerate(theirs) if not isinstance(row, str)]
    assert len(handled) >= 0.6 * len(well_formed)
    kinds = Counter(ours[i][6] for i in handled)  # type: ignore[index]
    assert all(kinds[kind] > 50 for kind in (KIND_IPV4, KIND_IPV6, KIND_ARP, KIND_OTHER))
    assert {frames[i][0] for i in handled} == {1, 113, 276, 101, 228, 229}
    ports = Counter(ours[i][4] for i in handled)  # type: ignore[index]
    assert ports[-3] > 50 and ports[-2] > 50 and ports[-1] > 50  # ICMP, ARP, none


def test_icmp_errors_vlan_and_fragments_are_compiled() -> None:
    """The cases that tempt a fast parser to cut corners are handled by the kernel itself."""
    ether = bytes(12)
    quoted_udp = (struct.pack(">BBHHHBB2s4s4s", 0x45, 0, 40, 1, 0, 64, 17, b"\0\0",
                              bytes(4), bytes(4)) + struct.pack(">HHHH", 5353, 53, 8, 0))
    icmp_error = bytes([3, 3, 0, 0]) + bytes(4) + quoted_udp

    def ipv4(proto: int, payload: bytes, fragment: int = 0) -> bytes:
        return struct.pack(">BBHHHBB2s4s4s", 0x45, 0, 20 + len(payload), 1, fragment, 64,
                           proto, b"\0\0", bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])) + payload

    frames = [
        (1, ether + b"\x08\x00" + ipv4(1, icmp_error)),
        (1, ether + b"\x81\x00\x00\x05\x88\xa8\x00\x06\x08\x00" + ipv4(17, bytes(12))),
        (1, ether + b"\x08\x00" + ipv4(17, bytes(12), fragment=0x2000)),
        (1, ether + b"\x08\x00" + ipv4(17, bytes(12), fragment=185)),
    ]
    ours, theirs = compiled_rows(frames), dpkt_rows(frames)
    assert ours == theirs
    assert [row[4:6] for row in ours] == [  # type: ignore[index]
        (5353, 53), (0, 0), (0, 0), (-1, -1)]


# --- whole captures -----------------------------------------------------------------------------


def test_real_capture_compiled_equals_dpkt_and_main(real_pcap: Path) -> None:
    compiled = read_capture(real_pcap)
    assert_same_result(compiled, read_capture(real_pcap, parser="dpkt"))
    for first_jitter, digest in MAIN_FEATURES_SHA256.items():
        rows = extract_features(compiled.packets,
                                options=ExtractorOptions(first_jitter=first_jitter))
        assert hashlib.sha256(rows.tobytes()).hexdigest() == digest, first_jitter


def test_real_capture_as_pcapng_and_in_both_byte_orders(real_pcap: Path, tmp_path: Path
                                                        ) -> None:
    raw = real_pcap.read_bytes()
    frames, offset = [], 24
    while offset < len(raw):
        caplen = struct.unpack_from("<I", raw, offset + 8)[0]
        frames.append(raw[offset + 16:offset + 16 + caplen])
        offset += 16 + caplen
    for path in (pcap_file(tmp_path / "big.pcap", frames, 1, endian=">"),
                 pcap_file(tmp_path / "ns.pcap", frames, 1, nanoseconds=True),
                 pcapng_file(tmp_path / "le.pcapng", [(1, f) for f in frames]),
                 pcapng_file(tmp_path / "be.pcapng", [(1, f) for f in frames], endian=">")):
        compiled = read_capture(path)
        assert len(compiled.packets) == 2000, path
        assert_same_result(compiled, read_capture(path, parser="dpkt"))


@pytest.mark.parametrize("seed", [4, 5])
def test_synthesised_captures_of_every_link_type(tmp_path: Path, seed: int) -> None:
    frames = random_frames(3000, seed)
    skipped = 0
    for link in sorted({link for link, _ in frames}):
        path = pcap_file(tmp_path / f"{link}.pcap", [f for k, f in frames if k == link], link,
                         nanoseconds=link == 113)
        compiled = read_capture(path)
        assert len(compiled.packets) > 0
        skipped += compiled.skipped
        assert_same_result(compiled, read_capture(path, parser="dpkt"))
    assert skipped > 0
    mixed = pcapng_file(tmp_path / "mixed.pcapng", frames)
    compiled = read_capture(mixed)
    assert len(compiled.skip_reasons) > 3
    assert_same_result(compiled, read_capture(mixed, parser="dpkt"))


def test_more_than_one_chunk_of_records(tmp_path: Path) -> None:
    """Chunks of 65,536 records are framed and dissected separately; a malformed frame on
    either side of a chunk boundary is skipped in place."""
    frames = [f for _, f in random_frames(3000, 6) if len(f) >= 14] * 30
    path = pcap_file(tmp_path / "many.pcap", frames[:70_000], 1)
    compiled = read_capture(path)
    assert compiled.n_records == 70_000
    assert_same_result(compiled, read_capture(path, parser="dpkt"))


# --- corrupt captures: the same errors either way ----------------------------------------------


def corrupt_captures(tmp_path: Path) -> dict[str, bytes]:
    frames = [f for _, f in random_frames(80, 7) if len(f) >= 24][:40]
    good = pcap_file(tmp_path / "good.pcap", frames, 1)
    data = good.read_bytes()
    third = 24
    for _ in range(2):  # the third record's offset
        third += 16 + struct.unpack_from("<I", data, third + 8)[0]
    huge = bytearray(data)
    struct.pack_into("<I", huge, third + 8, 0x7FFF_FFFF)
    return {
        "cut in a record header": data[: third + 7],
        "cut in a record's bytes": data[: third + 20],
        "absurd captured length": bytes(huge),
        "header only": data[:24],
        "short global header": data[:20],
        "bad version": data[:4] + b"\x03\x00" + data[6:],
        "unsupported link type": data[:20] + b"\x69\x00\x00\x00" + data[24:],
    }


def test_corrupt_captures_give_the_same_errors_and_truncation(tmp_path: Path) -> None:
    for name, content in corrupt_captures(tmp_path).items():
        path = tmp_path / "corrupt.pcap"
        path.write_bytes(content)
        for allow_truncated in (False, True):
            outcomes = []
            for parser in ("compiled", "dpkt"):
                try:
                    outcomes.append(read_capture(path, allow_truncated=allow_truncated,
                                                 parser=parser))
                except CaptureError as error:
                    outcomes.append(str(error))
            if isinstance(outcomes[0], str):
                assert outcomes[0] == outcomes[1], name
                assert str(path) in outcomes[0]
            else:
                assert not isinstance(outcomes[1], str), (name, outcomes[1])
                assert_same_result(outcomes[0], outcomes[1])


def test_truncated_capture_names_the_packet_and_byte(tmp_path: Path) -> None:
    content = corrupt_captures(tmp_path)["cut in a record's bytes"]
    path = tmp_path / "cut.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=r"packet #2 \(0-based\) at byte \d+"):
        read_capture(path)
    assert read_capture(path, allow_truncated=True).truncated_at == 2


def test_an_error_inside_the_compiled_path_is_not_masked(
    real_pcap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failing call's frame holds a view of the mapped file; closing the mapping must not
    replace the error with a BufferError."""
    def broken(self: object, data: np.ndarray, *columns: np.ndarray) -> None:
        raise RuntimeError("kernel failed")

    monkeypatch.setattr(fastparse.DissectedFrames, "dissect", broken)
    with pytest.raises(RuntimeError, match="kernel failed"):
        read_capture(real_pcap)


def test_unknown_parser_is_refused(real_pcap: Path) -> None:
    with pytest.raises(ValueError, match="parser must be one of"):
        read_capture(real_pcap, parser="scapy")


# --- feature files ------------------------------------------------------------------------------


def test_csv_text_is_arrows_table_writer_text(tmp_path: Path) -> None:
    """The batched writer gives byte for byte what the whole-table writer gave."""
    rows = extract_features(random_traffic(70_000, seed=3, ports=40))
    rows[5, 7] = 1e-300
    rows[6, 8] = -0.0
    ours = write_features(tmp_path / "f.csv", rows)
    sink = pa.BufferOutputStream()
    pa_csv.write_csv(features_to_arrow(rows), sink, pa_csv.WriteOptions(include_header=False))
    expected = (",".join(FEATURE_NAMES) + "\n").encode() + sink.getvalue().to_pybytes()
    assert ours.read_bytes() == expected


def test_parquet_round_trips_bit_for_bit_without_dictionaries(tmp_path: Path) -> None:
    rows = extract_features(random_traffic(70_000, seed=4, ports=40))
    path = write_features(tmp_path / "f.parquet", rows)
    table = pq.read_table(path)
    assert table.column_names == list(FEATURE_NAMES)
    back = np.column_stack([column.to_numpy() for column in table.columns])
    np.testing.assert_array_equal(back.view(np.uint64), rows.view(np.uint64))
    metadata = pq.ParquetFile(path).metadata
    assert metadata.num_row_groups == 2
    for group in range(metadata.num_row_groups):
        for column in range(metadata.num_columns):
            chunk = metadata.row_group(group).column(column)
            assert chunk.compression == "ZSTD"
            assert not any("DICTIONARY" in encoding for encoding in chunk.encodings)


def test_empty_feature_files(tmp_path: Path) -> None:
    empty = np.empty((0, len(FEATURE_NAMES)))
    assert write_features(tmp_path / "e.csv", empty).read_text() == ",".join(FEATURE_NAMES) + "\n"
    assert pq.read_table(write_features(tmp_path / "e.parquet", empty)).num_rows == 0


# --- the per-packet entry point -----------------------------------------------------------------


def test_update_packet_with_a_reused_buffer_and_a_small_id_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The id cache may be cleared at any time (here every 16 keys) without changing a row,
    and ``out`` receives the row."""
    monkeypatch.setattr(extractor_module, "_ID_CACHE_LIMIT", 16)
    table = random_traffic(3000, seed=9, ports=300)
    live = FeatureExtractor()
    out = np.empty(len(FEATURE_NAMES))
    rows = []
    for packet in table.rows():
        returned = live.update_packet(packet, out)
        assert np.shares_memory(returned, out)
        rows.append(out.copy())
    np.testing.assert_array_equal(np.array(rows), extract_features(table))
    with pytest.raises(FediotError, match="float64 array of 115"):
        live.update_packet(next(table.rows()), np.empty(3))
