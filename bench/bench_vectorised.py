"""The vectorised engine beside the in-process and Ray engines, 9 to 9,000 devices (issue 13).

Three parts, all in one run so that ratios compare like with like on a shared machine:

1. **FLOP ceiling and local training (this process, one torch thread).** The ceiling is the
   best single-thread sgemm (1024³) rate; the 9 testbed devices' local training runs as the
   in-process engine runs it (``train_local`` one device after another) and stacked
   (``train_stacked``, exact and fast shuffles). Each training figure is the best of
   ``--repeats``, with the ceiling re-measured between repeats (the best one kept), and the
   share of the ceiling is samples/s × 6 × 36,876 FLOP (forward 2×, backward 4× the
   autoencoder's 36,876 multiply-adds per row).
2. **Two cores: threads or processes.** The same stacked training with 2 torch intra-op threads,
   measured once (on a loaded machine it can take minutes), in two chunks trained by two
   threads of one torch thread each (``train_stacked(threads=2)``), and split into two worker
   processes (spawned, each holding its half of the devices, timed from the parent: what a
   process engine would pay, replies included).
3. **Engines end to end.** ``bench_scale.py``'s child runs (one process each, peak memory of
   its process tree) for every device count and engine: in-process (1 worker), vectorised exact
   and fast, and Ray at the device counts ``--ray-devices`` allows. Seconds per round are the
   best measured round after a warm-up round; samples/s = training rows per round / that.

Run: ``.venv/bin/python bench/bench_vectorised.py`` → ``bench/results/vectorised.json``.
A CUDA GPU, when present, is named in the result (``gpu``); the engine runs use it only with
``--set-gpu``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench_scale import ENGINES, run_child
from common import write_result
from fediot.core.config import Config
from fediot.core.federated.devices import load_clients
from fediot.core.model import (
    FeatureScaler,
    ScalerStats,
    build_autoencoder,
    get_weights,
    set_weights,
    train_local,
)
from fediot.core.model.stacked import StackedSettings, train_stacked

FLOP_PER_SAMPLE = 6 * 36_876
"""Training FLOP per row: the autoencoder's 36,876 multiply-adds, ×2 forward, ×4 backward."""

BATCH, LEARNING_RATE = 128, 0.003
CHUNK_DEVICES = 5
"""With chunk threads: the 9 devices in two chunks (one per thread) rather than one."""


def sgemm_gflops(size: int = 1024, repeats: int = 5) -> float:
    """Best single-call float32 matrix product rate at the current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(work: Any) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def testbed_rows(scale: float) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The 9 testbed devices' training rows, scaled by their pooled scaler, and the start
    model's weights."""
    clients = load_clients(Config().with_overrides({"data_args.testbed_scale": scale}))
    scaler = FeatureScaler.from_stats(ScalerStats.from_data(
        np.concatenate([c.train for c in clients])))
    return [scaler.transform(c.train) for c in clients], get_weights(build_autoencoder(seed=0))


def _stack(rows: list[np.ndarray]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    ends = np.cumsum([len(r) for r in rows])
    stacked = torch.from_numpy(np.concatenate([*rows, np.zeros((1, rows[0].shape[1]),
                                                              np.float32)]))
    return stacked, [(int(e - len(r)), int(e)) for e, r in zip(ends, rows, strict=True)]


def _train_sequential(rows: list[np.ndarray], weights: list[np.ndarray]) -> None:
    model = build_autoencoder(seed=0)
    for seed, device_rows in enumerate(rows):
        set_weights(model, weights)
        train_local(model, device_rows, epochs=1, batch_size=BATCH,
                    learning_rate=LEARNING_RATE, seed=seed)


def _train_stacked(rows: torch.Tensor, bounds: list[tuple[int, int]], weights: Any,
                   mode: str, threads: int = 1) -> None:
    train_stacked(weights, rows, bounds, StackedSettings(1, BATCH, LEARNING_RATE),
                  mode=mode, seeds=list(range(len(bounds))),  # type: ignore[arg-type]
                  threads=threads, chunk_devices=CHUNK_DEVICES if threads > 1 else None)


_HELD: dict[str, Any] = {}


def _hold(rows: list[np.ndarray], weights: list[np.ndarray]) -> int:
    """Worker process: keep its devices' rows (sent once, as a process engine would)."""
    torch.set_num_threads(1)
    _HELD["rows"], _HELD["bounds"] = _stack(rows)
    _HELD["weights"] = weights
    return os.getpid()


def _train_held(mode: str) -> list[np.ndarray]:
    """Worker process: train its devices; the reply carries their weights back."""
    result = train_stacked(_HELD["weights"], _HELD["rows"], _HELD["bounds"],
                           StackedSettings(1, BATCH, LEARNING_RATE), mode=mode,  # type: ignore[arg-type]
                           seeds=list(range(len(_HELD["bounds"]))))
    return [w for device in result.weights for w in device]


def training_part(scale: float, repeats: int) -> dict[str, Any]:
    """Parts 1 and 2 (see the module)."""
    rows, weights = testbed_rows(scale)
    samples = sum(len(r) for r in rows)
    stacked, bounds = _stack(rows)
    torch.set_num_threads(1)
    ceiling = 0.0
    best: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        best[name] = min(best.get(name, float("inf")), seconds)

    for repeat in range(repeats):
        ceiling = max(ceiling, sgemm_gflops())
        keep("inprocess_train_local", _timed(lambda: _train_sequential(rows, weights)))
        keep("stacked_exact", _timed(lambda: _train_stacked(stacked, bounds, weights, "exact")))
        keep("stacked_fast", _timed(lambda: _train_stacked(stacked, bounds, weights, "fast")))
        keep("stacked_exact_2_chunk_threads",
             _timed(lambda: _train_stacked(stacked, bounds, weights, "exact", threads=2)))
        if repeat == 0:  # once: on a loaded machine two threads can take minutes
            torch.set_num_threads(2)
            keep("stacked_exact_2_threads",
                 _timed(lambda: _train_stacked(stacked, bounds, weights, "exact")))
            torch.set_num_threads(1)
    # two worker processes, each holding half of the devices (largest first, alternating)
    order = np.argsort([-len(r) for r in rows])
    halves = [[rows[i] for i in order[w::2]] for w in range(2)]
    workers = [ProcessPoolExecutor(1, mp_context=get_context("spawn")) for _ in halves]
    try:
        for worker, half in zip(workers, halves, strict=True):
            worker.submit(_hold, half, weights).result()
        for _ in range(repeats):
            start = time.perf_counter()
            futures = [worker.submit(_train_held, "exact") for worker in workers]
            for future in futures:
                future.result()
            keep("stacked_exact_2_processes", time.perf_counter() - start)
    finally:
        for worker in workers:
            worker.shutdown()
    figures = {name: {"seconds": round(seconds, 4),
                      "samples_per_second": round(samples / seconds),
                      "ceiling_share": round(samples / seconds * FLOP_PER_SAMPLE
                                             / (ceiling * 1e9), 3)}
               for name, seconds in best.items()}
    return {"devices": len(rows), "training_rows": samples, "batch_size": BATCH,
            "sgemm_gflops_1_thread": round(ceiling, 1), "flop_per_sample": FLOP_PER_SAMPLE,
            "training": figures,
            "stacked_over_train_local": round(best["inprocess_train_local"]
                                              / best["stacked_exact"], 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-device", type=int, nargs="+", default=[1, 10, 100, 1000],
                        help="virtual devices per device type (9× this many devices)")
    parser.add_argument("--engines", nargs="+",
                        default=["inprocess-1", "vectorised-exact", "vectorised-fast", "ray-2"],
                        choices=list(ENGINES))
    parser.add_argument("--ray-devices", type=int, default=90,
                        help="run Ray only up to this many devices (it is slow)")
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds (+1 warm-up)")
    parser.add_argument("--repeats", type=int, default=3, help="part 1: best of this many")
    parser.add_argument("--scale", type=float, default=1.0, help="testbed scale")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--skip-training", action="store_true", help="part 3 only")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="any configuration key for the engine runs (repeatable)")
    parser.add_argument("--result", default="vectorised",
                        help="results file name under bench/results (default vectorised)")
    args = parser.parse_args()
    args.per_round, args.ray_in_flight = 0, 0  # bench_scale's child options: all devices

    result: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": os.getloadavg(),
    }
    if not args.skip_training:
        part = training_part(args.scale, args.repeats)
        result["local_training"] = part
        print(f"sgemm ceiling {part['sgemm_gflops_1_thread']} GFLOP/s (1 thread); "
              f"{part['training_rows']:,} rows on {part['devices']} devices")
        for name, row in part["training"].items():
            print(f"  {name:28} {row['seconds']:7.3f} s {row['samples_per_second']:>10,}/s "
                  f"{100 * row['ceiling_share']:5.1f} % of the ceiling")
    logs = Path(tempfile.mkdtemp(prefix="fediot-bench-vectorised-"))
    runs: list[dict[str, Any]] = []
    print(f"{'devices':>7} {'engine':18} {'best s':>7} {'samples/s':>10} {'peak MB':>8}")
    for per_device in args.per_device:
        for engine in args.engines:
            if ENGINES[engine][0] == "ray" and 9 * per_device > args.ray_devices:
                continue
            row = run_child(per_device, engine, args, logs)
            runs.append(row)
            if row.get("failed"):
                print(f"{row['devices']:>7} {engine:18} FAILED ({row['error'][:150]})",
                      flush=True)
                continue
            print(f"{row['devices']:>7} {engine:18} {row['best_round_seconds']:>7.2f} "
                  f"{row['samples_per_second']:>10,} {row['peak_tree_pss_mb']:>8}", flush=True)
    speedups: dict[str, dict[str, float]] = {}
    for row in runs:
        if row.get("failed") or not row["engine"].startswith("vectorised"):
            continue
        base = next((r for r in runs if r["devices"] == row["devices"]
                     and r["engine"] == "inprocess-1" and not r.get("failed")), None)
        if base is not None:
            speedups.setdefault(str(row["devices"]), {})[row["engine"]] = round(
                base["best_round_seconds"] / row["best_round_seconds"], 2)
    result.update({"testbed_scale": args.scale, "measured_rounds": args.rounds,
                   "settings": args.set or [],
                   "runs": runs, "round_speedup_over_inprocess": speedups,
                   "load_average_at_end": os.getloadavg(), "logs": str(logs)})
    print("round speed-up over the in-process engine:", speedups)
    print(f"written {write_result(args.result, result)}")


if __name__ == "__main__":
    main()
