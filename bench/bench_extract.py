"""Extractor throughput: packets/s of the compiled extractor vs the plain-Python reference.

Input: the real Kitsune camera capture (2,000 packets, ``shared/data/pcap``) tiled in time to
``--packets`` packets, so the key mix is real traffic's. Parsing is not timed here (see
``bench_parse.py``). One core: numba runs this kernel single-threaded.

Run: ``.venv/bin/python bench/bench_extract.py`` → ``bench/results/extract.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time

import numpy as np

from common import SHARED, write_result
from fediot.core.features.extractor import extract_features
from fediot.core.features.packets import PacketTable
from fediot.core.features.pcap import read_capture
from fediot.core.features.reference import reference_features


def tiled(base: PacketTable, n: int) -> PacketTable:
    """``base`` repeated back to back in time until it holds ``n`` packets."""
    span = float(base.timestamp[-1] - base.timestamp[0]) + 1.0
    copies = -(-n // len(base))
    tables = []
    for k in range(copies):
        tables.append(dataclasses.replace(base, timestamp=base.timestamp + k * span))
    return PacketTable.concat(tables).take(slice(0, n))


def best_rate(n: int, run: object, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=400_000)
    parser.add_argument("--reference-packets", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    pcap = SHARED / "data/pcap/kitsune_mirai_first2000.pcap"
    if not pcap.exists():
        sys.exit(f"shared capture not found: {pcap} (set FEDIOT_SHARED)")
    base = read_capture(pcap).packets
    big = tiled(base, args.packets)
    small = big.take(slice(0, args.reference_packets))
    extract_features(small)  # compile (or load the numba cache) outside the timing

    fast = best_rate(len(big), lambda: extract_features(big), args.repeats)
    fast_small = best_rate(len(small), lambda: extract_features(small), args.repeats)
    slow = best_rate(len(small), lambda: reference_features(small), 1)
    ratio = fast / slow
    print(f"extractor  {fast:>12,.0f} packets/s  ({len(big):,} packets)")
    print(f"extractor  {fast_small:>12,.0f} packets/s  ({len(small):,} packets)")
    print(f"reference  {slow:>12,.0f} packets/s  ({len(small):,} packets)")
    print(f"ratio      {ratio:>12.1f}×   (target ≥ 100,000 packets/s for the extractor)")
    path = write_result("extract", {
        "input": f"{pcap.name} tiled to {len(big)} packets",
        "extractor_packets_per_s": round(fast),
        "extractor_packets_per_s_small": round(fast_small),
        "reference_packets_per_s": round(slow),
        "reference_packets": len(small),
        "ratio": round(ratio, 1),
        "target_packets_per_s": 100_000,
        "meets_target": bool(fast >= 100_000),
        "cpu_threads": 1,
        "numpy": np.__version__,
    })
    print(f"written {path}")


if __name__ == "__main__":
    main()
