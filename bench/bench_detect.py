"""Live detection: per-packet latency (extract + score + vote, one packet at a time) of the
scalar extractor path vs the previous one-row-table path, and ``fediot detect`` file
throughput.

Model: a 2-round federated run on a small N-BaIoT-format dataset (``tests/federated_data.py``)
whose Danmini doorbell benign rows are the real camera capture's features; the model's size is
the real one (115 → 86 → 58 → 38 → 29 and back), which is all scoring time depends on.

Latency: the real Kitsune camera capture (2,000 packets, ``shared/data/pcap``) fed one packet
at a time, each packet timed alone (``time.perf_counter``); torch on one thread, as
``fediot detect --interface`` runs it. "table path" is the previous ``FeatureExtractor.update``:
a one-row :class:`PacketTable` through ``process`` (keying and kernel on arrays).

Live under a flood: the socket queue fills, ``fediot detect --interface`` scores what is
queued in batches of up to 256 (``--live-batch``); measured on the capture in such batches.

Throughput: the capture tiled in time to ``--packets`` packets in one pcap file, through the
whole ``fediot detect FILE --device … --output /dev/null`` command (read, extract, score, vote,
write alerts), torch's default threads.

Run: ``.venv/bin/python bench/bench_detect.py`` → ``bench/results/detect.json``.
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from common import REPO, SHARED, write_result

sys.path.insert(0, str(REPO / "tests"))
from federated_data import write_uci_dataset  # type: ignore[import-not-found]
from fediot.core.config import Config
from fediot.core.detection import StreamingDetector
from fediot.core.features.extractor import FeatureExtractor, extract_features
from fediot.core.features.packets import Packet, PacketTable
from fediot.core.features.pcap import read_capture
from fediot.core.io import write_features
from fediot.engines.run_folder import RunView
from fediot.engines.simulation import simulate

DEVICE = "Danmini_Doorbell"


def make_run(pcap: Path, folder: Path) -> RunView:
    dataset = write_uci_dataset(folder / "nbaiot", n_devices=3)
    write_features(dataset / DEVICE / "benign_traffic.csv",
                   extract_features(read_capture(pcap).packets))
    simulate(Config().with_overrides({
        "data_args.dataset": "N-BaIoT", "data_args.data_cache_dir": str(dataset),
        "train_args.client_num_in_total": 3, "train_args.client_num_per_round": 3,
        "train_args.comm_round": 2, "detection_args.window": 5,
        "detection_args.threshold_mode": "per_device",
        "tracking_args.log_file_dir": str(folder / "runs"), "tracking_args.run_name": "bench",
    }))
    return RunView(folder / "runs" / "bench")


def tiled_pcap(pcap: Path, n: int, target: Path) -> int:
    """``pcap``'s records repeated back to back in time until ``n`` packets; returns n."""
    data = pcap.read_bytes()
    if data[:4] != b"\xd4\xc3\xb2\xa1":
        sys.exit(f"{pcap}: expected a little-endian microsecond pcap")
    records: list[tuple[int, int, bytes]] = []
    offset = 24
    while offset < len(data):
        seconds, micros, caplen, wire = struct.unpack_from("<IIII", data, offset)
        records.append((seconds * 1_000_000 + micros, wire,
                        data[offset + 16:offset + 16 + caplen]))
        offset += 16 + caplen
    span = records[-1][0] - records[0][0] + 1_000_000
    with target.open("wb") as out:
        out.write(data[:24])
        for k in range(n):
            micros, wire, frame = records[k % len(records)]
            micros += (k // len(records)) * span
            out.write(struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000,
                                  len(frame), wire))
            out.write(frame)
    return n


def latencies(packets: list[Packet], step: Callable[[Packet], object]) -> np.ndarray:
    times = np.empty(len(packets))
    for i, packet in enumerate(packets):
        start = time.perf_counter()
        step(packet)
        times[i] = time.perf_counter() - start
    return times * 1e6


def summary(times: np.ndarray) -> dict[str, float]:
    return {"median_us": round(float(np.median(times)), 1),
            "p99_us": round(float(np.percentile(times, 99)), 1),
            "mean_us": round(float(times.mean()), 1)}


def table_path(extractor: FeatureExtractor, packet: Packet) -> np.ndarray:
    """The previous ``FeatureExtractor.update``: a one-row table through ``process``."""
    row: np.ndarray = extractor.process(PacketTable.from_packets([packet]))[0]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=100_000,
                        help="packets in the tiled file for the throughput test")
    parser.add_argument("--repeats", type=int, default=5,
                        help="passes over the capture per latency path (best median kept)")
    args = parser.parse_args()

    pcap = SHARED / "data/pcap/kitsune_mirai_first2000.pcap"
    if not pcap.exists():
        sys.exit(f"shared capture not found: {pcap} (set FEDIOT_SHARED)")
    packets = list(read_capture(pcap).packets.rows())
    threads = torch.get_num_threads()  # a fresh process's default (simulate() changes it)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        view = make_run(pcap, folder)
        detector = view.detector(DEVICE)
        window = view.config().detection_args.window

        torch.set_num_threads(1)
        paths: dict[str, Callable[[], Callable[[Packet], object]]] = {
            "extract_fast": lambda: FeatureExtractor().update_packet,
            "extract_table": _extract_table,
            "detect_fast": lambda: StreamingDetector(lambda d: detector, window).update,
            "detect_table": lambda: _detect_table(detector, window),
        }
        results: dict[str, dict[str, float]] = {}
        for make_step in paths.values():
            make_step()(packets[0])  # compile / warm up outside the timing
        for _ in range(args.repeats):  # paths interleaved, so drifting load hits them alike
            for name, make_step in paths.items():
                figures = summary(latencies(packets, make_step()))
                if name not in results or figures["median_us"] < results[name]["median_us"]:
                    results[name] = figures
        for name, best in results.items():
            print(f"{name:<14} median {best['median_us']:>8.1f} µs   "
                  f"p99 {best['p99_us']:>9.1f} µs")
        # a flood on a live link: the socket queue fills, so packets arrive 256 at a time
        flood_rate = 0.0
        for _ in range(args.repeats):
            streaming = StreamingDetector(lambda d: detector, window)
            start = time.perf_counter()
            for first in range(0, len(packets), 256):
                streaming.process(PacketTable.from_packets(packets[first:first + 256]))
            flood_rate = max(flood_rate, len(packets) / (time.perf_counter() - start))
        print(f"live, queued   {flood_rate:>10,.0f} packets/s  (batches of 256, 1 thread)")
        torch.set_num_threads(threads)

        tiled = folder / "tiled.pcap"
        n = tiled_pcap(pcap, args.packets, tiled)
        from typer.testing import CliRunner

        import fediot.faces.cli.main  # noqa: F401  (registers the commands)
        from fediot.faces.cli.app import app
        runner = CliRunner()
        command = ["detect", str(tiled), "--run", str(view.root), "--device", DEVICE,
                   "--output", os.devnull]
        runner.invoke(app, [*command, "--count", "3000"])  # warm up
        best_seconds = float("inf")
        for _ in range(args.repeats):
            start = time.perf_counter()
            result = runner.invoke(app, command)
            best_seconds = min(best_seconds, time.perf_counter() - start)
            if result.exit_code != 0:
                sys.exit(f"fediot detect failed: {result.stderr}")
        rate = n / best_seconds
        print(f"fediot detect  {rate:>10,.0f} packets/s  ({n:,} packets, {best_seconds:.2f} s)")

    speedup = results["extract_table"]["median_us"] / results["extract_fast"]["median_us"]
    print(f"extract speed-up (median) {speedup:.1f}×;  load average {os.getloadavg()[0]:.1f}")
    path = write_result("detect", {
        "input": f"{pcap.name} ({len(packets)} packets) one at a time; "
                 f"tiled to {n} packets for the file",
        "latency_one_packet": results,
        "extract_speedup_median": round(speedup, 1),
        "live_queued_packets_per_s": round(flood_rate),
        "live_queued_batch": 256,
        "file_packets_per_s": round(rate),
        "file_packets": n,
        "file_seconds": round(best_seconds, 3),
        "live_torch_threads": 1,
        "file_torch_threads": threads,
        "window": window,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "numpy": np.__version__,
        "torch": torch.__version__,
    })
    print(f"written {path}")


def _extract_table() -> Callable[[Packet], object]:
    extractor = FeatureExtractor()
    return lambda packet: table_path(extractor, packet)


def _detect_table(detector: object, window: int) -> Callable[[Packet], object]:
    """Extract + score + vote one packet with the table path's extraction."""
    streaming = StreamingDetector(lambda d: detector, window)  # type: ignore[arg-type, return-value]

    def step(packet: Packet) -> object:
        row = table_path(streaming.extractor, packet)
        return streaming.judge(row[np.newaxis], [packet])

    return step


if __name__ == "__main__":
    main()
