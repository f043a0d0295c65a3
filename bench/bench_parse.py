"""Benchmark: how fast :func:`fediot.core.features.pcap.read_capture` turns a pcap into columns.

The real 2,000-packet capture ``shared/data/pcap/kitsune_mirai_first2000.pcap`` is repeated
(records concatenated, timestamps shifted so that time keeps increasing) into a temporary
capture of about 200,000 packets, which is read several times; the best run is reported. For
context, the same file is also walked with dpkt alone (``dpkt.pcap.Reader`` + Ethernet parse,
no columns), which bounds what a dpkt-based reader can reach.

Run: ``.venv/bin/python bench/bench_parse.py [--repeat-file N] [--runs N]``.
Writes ``bench/results/parse.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import struct
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import dpkt

from common import REPO, SHARED, write_result
from fediot.core.features.pcap import read_capture

SOURCE = SHARED / "data" / "pcap" / "kitsune_mirai_first2000.pcap"


def build_repeated_capture(source: Path, target: Path, copies: int) -> int:
    """Write ``copies`` back-to-back copies of ``source``'s records; return the packet count."""
    raw = source.read_bytes()
    if raw[:4] != b"\xd4\xc3\xb2\xa1":
        raise SystemExit(f"{source}: expected a little-endian microsecond pcap")
    records: list[tuple[int, int, int, bytes]] = []
    offset = 24
    while offset < len(raw):
        seconds, micros, caplen, wire_len = struct.unpack_from("<IIII", raw, offset)
        records.append((seconds, micros, wire_len, raw[offset + 16:offset + 16 + caplen]))
        offset += 16 + caplen
    span = records[-1][0] - records[0][0] + 1
    with target.open("wb") as out:
        out.write(raw[:24])
        for copy in range(copies):
            shift = copy * span
            for seconds, micros, wire_len, frame in records:
                out.write(struct.pack("<IIII", seconds + shift, micros, len(frame), wire_len))
                out.write(frame)
    return copies * len(records)


def time_read_capture(path: Path, runs: int) -> tuple[float, int]:
    best = float("inf")
    n_packets = 0
    for _ in range(runs):
        start = time.perf_counter()
        result = read_capture(path)
        best = min(best, time.perf_counter() - start)
        n_packets = len(result.packets)
    return best, n_packets


def time_dpkt_walk(path: Path, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        with path.open("rb") as handle:
            for _ts, frame in dpkt.pcap.Reader(handle):
                dpkt.ethernet.Ethernet(frame)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat-file", type=int, default=100, help="copies of the capture")
    parser.add_argument("--runs", type=int, default=3, help="timed runs; the best is kept")
    args = parser.parse_args()
    if not SOURCE.exists():
        raise SystemExit(f"{SOURCE}: not found (set FEDIOT_SHARED to the shared folder)")

    with tempfile.TemporaryDirectory() as temp_dir:
        capture = Path(temp_dir) / "repeated.pcap"
        expected = build_repeated_capture(SOURCE, capture, args.repeat_file)
        size = capture.stat().st_size
        seconds, n_packets = time_read_capture(capture, args.runs)
        if n_packets != expected:
            raise SystemExit(f"read {n_packets} packets, wrote {expected}")
        dpkt_seconds = time_dpkt_walk(capture, args.runs)

    results: dict[str, object] = {
        "benchmark": "parse",
        "source": str(SOURCE),
        "copies": args.repeat_file,
        "packets": n_packets,
        "file_bytes": size,
        "runs": args.runs,
        "best_seconds": round(seconds, 4),
        "packets_per_second": round(n_packets / seconds),
        "megabytes_per_second": round(size / seconds / 1e6, 2),
        "dpkt_walk_best_seconds": round(dpkt_seconds, 4),
        "dpkt_walk_packets_per_second": round(n_packets / dpkt_seconds),
        "python": sys.version.split()[0],
        "dpkt": version("dpkt"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }
    path = write_result("parse", results)
    print(
        f"read_capture: {n_packets:,} packets in {seconds:.3f} s = "
        f"{n_packets / seconds:,.0f} packets/s ({size / seconds / 1e6:.1f} MB/s); "
        f"dpkt alone (Reader + Ethernet): {n_packets / dpkt_seconds:,.0f} packets/s"
    )
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
