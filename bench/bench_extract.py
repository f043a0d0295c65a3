"""Extraction throughput: ``fediot extract`` end to end, its parts, and the compiled extractor.

Input: the real Kitsune camera capture (2,000 packets, ``shared/data/pcap``) repeated back to back
in time into a ``--packets``-packet pcap (400,000 by default), so the traffic mix is real.

Measured (all on one core: numba and the writers run single-threaded; CPU time is the process's
own, so other load on a shared machine slows the wall clock more than these figures):

* **end to end**: ``fediot extract CAPTURE -o OUT.parquet`` / ``OUT.csv`` as a subprocess,
  ``--runs`` times each; wall and CPU seconds, packets/s;
* **start-up**: the same command on a one-packet capture (imports, numba cache loading), which
  the end-to-end time also contains; ``net`` figures subtract it;
* **numba compile**: the start-up run with an empty numba cache (first run after install or a
  code change) vs with the cache filled;
* **split** (in this process, CPU seconds, best of ``--runs``): parsing (compiled, and the old
  all-dpkt path), feature extraction, Parquet and CSV writing;
* **streaming**: ``FeatureExtractor.update_packet`` per packet on the real capture, for a fresh
  extractor (every flow new once) and in steady state (every flow known);
* **extractor vs reference**: the compiled extractor against the plain-Python reference.

Run: ``.venv/bin/python bench/bench_extract.py`` → ``bench/results/extract.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from common import REPO, SHARED, build_repeated_capture, write_result
from fediot.core.features.extractor import FeatureExtractor, extract_features
from fediot.core.features.pcap import read_capture
from fediot.core.features.reference import reference_features
from fediot.core.io import write_features

SOURCE = SHARED / "data/pcap/kitsune_mirai_first2000.pcap"
TARGETS = {"parquet": 150_000, "csv": 50_000}  # end-to-end packets/s on one core (issue 11)


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Run ``fediot ARGS`` in a fresh interpreter; return (wall s, CPU s, peak RSS in MiB) of
    that child alone."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "fediot", *args], env=env,
                             stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if child.returncode:
        sys.exit(f"fediot {' '.join(args)} failed with exit code {child.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss // 1024


def cli_runs(args: list[str], env: dict[str, str], runs: int) -> dict[str, list[float]]:
    walls: list[float] = []
    cpus: list[float] = []
    peaks: list[float] = []
    for _ in range(runs):
        wall, cpu, peak = run_cli(args, env)
        walls.append(round(wall, 3))
        cpus.append(round(cpu, 3))
        peaks.append(peak)
    return {"wall_s": walls, "cpu_s": cpus, "peak_rss_mib": peaks}


def best_cpu(run: Callable[[], Any], runs: int) -> tuple[float, Any]:
    """Best CPU seconds of ``runs`` calls, and the last call's result."""
    best, result = float("inf"), None
    for _ in range(runs):
        start = time.process_time()
        result = run()
        best = min(best, time.process_time() - start)
    return best, result


def streaming(packets: list[Any]) -> dict[str, float]:
    """µs per ``update_packet`` call: fresh extractor (each flow new once), steady state."""
    def per_packet(extractor: FeatureExtractor) -> list[float]:
        out = np.empty(115)
        times = []
        for packet in packets:
            start = time.perf_counter()
            extractor.update_packet(packet, out)
            times.append((time.perf_counter() - start) * 1e6)
        return times

    fresh: list[float] = []
    for _ in range(3):
        fresh += per_packet(FeatureExtractor())
    warm = FeatureExtractor()
    per_packet(warm)
    steady: list[float] = []
    for _ in range(3):
        steady += per_packet(warm)
    return {
        "fresh_median_us": round(statistics.median(fresh), 2),
        "fresh_mean_us": round(statistics.fmean(fresh), 2),
        "steady_median_us": round(statistics.median(steady), 2),
        "steady_mean_us": round(statistics.fmean(steady), 2),
        "steady_p99_us": round(float(np.percentile(steady, 99)), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packets", type=int, default=400_000, help="a multiple of 2,000")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement")
    parser.add_argument("--reference-packets", type=int, default=20_000)
    parser.add_argument("--src", type=Path, default=REPO / "src",
                        help="the src folder whose `fediot extract` runs end to end (e.g. "
                             "another checkout's, for a before/after comparison)")
    args = parser.parse_args()
    if not SOURCE.exists():
        sys.exit(f"shared capture not found: {SOURCE} (set FEDIOT_SHARED)")
    env = {**os.environ, "PYTHONPATH": str(args.src.resolve())}
    load_at_start = list(os.getloadavg())

    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        capture = folder / "big.pcap"
        n = build_repeated_capture(SOURCE, capture, args.packets // 2000)
        one = folder / "one.pcap"
        raw = SOURCE.read_bytes()
        first_len = int.from_bytes(raw[24 + 8:24 + 12], "little")
        one.write_bytes(raw[:24 + 16 + first_len])

        # numba: an empty cache (compile everything), then the filled cache
        cold_env = {**env, "NUMBA_CACHE_DIR": str(folder / "numba-cache")}
        cold = run_cli(["extract", str(one), "-o", str(folder / "one.parquet")], cold_env)
        warm = run_cli(["extract", str(one), "-o", str(folder / "one.parquet")], cold_env)
        startup = cli_runs(["extract", str(one), "-o", str(folder / "one.parquet")], env,
                           args.runs)
        end_to_end = {
            fmt: cli_runs(["extract", str(capture), "-o", str(folder / f"big.{fmt}")], env,
                          args.runs)
            for fmt in ("parquet", "csv")
        }

        # in-process split (CPU seconds)
        read_capture(one)  # numba cache loaded outside the timing
        parse_s, result = best_cpu(lambda: read_capture(capture), args.runs)
        parse_dpkt_s, _ = best_cpu(lambda: read_capture(capture, parser="dpkt"), 1)
        packets = result.packets
        extract_features(packets.take(slice(0, 2000)))  # numba cache loaded outside timing
        extract_s, rows = best_cpu(lambda: extract_features(packets), args.runs)
        parquet_s, _ = best_cpu(lambda: write_features(folder / "split.parquet", rows),
                                args.runs)
        csv_s, _ = best_cpu(lambda: write_features(folder / "split.csv", rows), args.runs)

    # the compiled extractor vs the plain-Python reference (as before)
    small = packets.take(slice(0, args.reference_packets))
    reference_s, _ = best_cpu(lambda: reference_features(small), 1)
    stream = streaming(list(read_capture(SOURCE).packets.rows()))

    split_cpu = {"parse": parse_s, "parse_dpkt": parse_dpkt_s, "extract": extract_s,
                 "write_parquet": parquet_s, "write_csv": csv_s}
    split_rate = {name: round(n / seconds) for name, seconds in split_cpu.items()}
    start_cpu = min(startup["cpu_s"])
    summary: dict[str, Any] = {}
    for fmt, figures in end_to_end.items():
        cpu = min(figures["cpu_s"])
        worst = max(figures["cpu_s"])
        summary[fmt] = {
            "packets_per_s_cpu": [round(n / c) for c in figures["cpu_s"]],
            "packets_per_s_wall": [round(n / w) for w in figures["wall_s"]],
            "packets_per_s_cpu_net_of_startup": round(n / (cpu - start_cpu)),
            "target_packets_per_s": TARGETS[fmt],
            "meets_target_every_run": bool(n / worst >= TARGETS[fmt]),
        }
    payload = {
        "input": f"{SOURCE.name} repeated to {n} packets ({capture.name})",
        "packets": n,
        "src": str(args.src.resolve()),
        "load_average_at_start": load_at_start,
        "load_average_at_end": list(os.getloadavg()),
        "end_to_end": end_to_end,
        "end_to_end_summary": summary,
        "startup": startup,
        "numba_first_run": {"cold_cache_wall_s": round(cold[0], 3),
                            "cold_cache_cpu_s": round(cold[1], 3),
                            "warm_cache_wall_s": round(warm[0], 3),
                            "warm_cache_cpu_s": round(warm[1], 3)},
        "split_cpu_s": {name: round(seconds, 3) for name, seconds in split_cpu.items()},
        "split_packets_per_s": split_rate,
        "streaming_update_packet": stream,
        "reference_packets_per_s": round(len(small) / reference_s),
        "reference_packets": len(small),
        "extractor_vs_reference": round((n / extract_s) / (len(small) / reference_s), 1),
        "cpu_threads": 1,
        "numpy": np.__version__,
    }
    path = write_result("extract", payload)
    for fmt, figures in summary.items():
        print(f"end to end {fmt:8s} {figures['packets_per_s_cpu']} packets/s (CPU), "
              f"{figures['packets_per_s_wall']} (wall), peak RSS "
              f"{end_to_end[fmt]['peak_rss_mib']} MiB; net of start-up "
              f"{figures['packets_per_s_cpu_net_of_startup']:,}; target {TARGETS[fmt]:,}")
    print(f"start-up   CPU {startup['cpu_s']} s, wall {startup['wall_s']} s; numba cold cache "
          f"{cold[1]:.2f} s CPU vs warm {warm[1]:.2f} s")
    print("split      " + ", ".join(f"{k} {v:,}/s" for k, v in split_rate.items()))
    print(f"streaming  {stream}")
    print(f"written {path}")


if __name__ == "__main__":
    main()
