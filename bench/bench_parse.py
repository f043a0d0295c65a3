"""Benchmark: how fast :func:`fediot.core.features.pcap.read_capture` turns a pcap into columns.

The real 2,000-packet capture ``shared/data/pcap/kitsune_mirai_first2000.pcap`` is repeated
(records concatenated, timestamps shifted so that time keeps increasing) into a temporary
capture of about 200,000 packets, which is read several times with the compiled parser and with
``parser="dpkt"`` (every frame through dpkt, as before the compiled parser); the best run of
each is reported. For
context, the same file is also walked with dpkt alone (``dpkt.pcap.Reader`` + Ethernet parse,
no columns), which bounds what a dpkt-based reader can reach.

Run: ``.venv/bin/python bench/bench_parse.py [--repeat-file N] [--runs N]``.
Writes ``bench/results/parse.json``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import dpkt

from common import REPO, SHARED, build_repeated_capture, write_result
from fediot.core.features.pcap import read_capture

SOURCE = SHARED / "data" / "pcap" / "kitsune_mirai_first2000.pcap"


def time_read_capture(path: Path, runs: int, parser: str = "compiled") -> tuple[float, int]:
    best = float("inf")
    n_packets = 0
    for _ in range(runs):
        start = time.perf_counter()
        result = read_capture(path, parser=parser)
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
        dpkt_path_seconds, _ = time_read_capture(capture, args.runs, parser="dpkt")
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
        "dpkt_parser_best_seconds": round(dpkt_path_seconds, 4),
        "dpkt_parser_packets_per_second": round(n_packets / dpkt_path_seconds),
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
        f"parser='dpkt': {n_packets / dpkt_path_seconds:,.0f} packets/s; "
        f"dpkt alone (Reader + Ethernet): {n_packets / dpkt_seconds:,.0f} packets/s"
    )
    print(f"wrote {path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
