"""Two cores for stacked training: threads that each train whole chunks, or torch's own threads.

``train_stacked`` (exact shuffles, default chunks) on the testbed's training rows split into
9 × ``--per-device`` virtual devices, three ways: one thread; ``threads=2`` (two Python threads,
one torch thread each, each training whole chunks: the vectorised engine's
``device_args.vectorised_threads``); one Python thread with two torch intra-op threads. Each is
timed ``--repeats`` times, interleaved, so that a shared machine's load falls on all three.

Run: ``PYTHONPATH=src .venv/bin/python bench/bench_stacked_threads.py`` →
``bench/results/stacked_threads.json``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np
import torch

from bench_vectorised import BATCH, LEARNING_RATE, _stack, testbed_rows
from common import write_result
from fediot.core.model.stacked import StackedSettings, train_stacked

WAYS: dict[str, tuple[int, int]] = {
    "one thread": (1, 1),
    "two chunk threads": (1, 2),
    "two torch intra-op threads": (2, 1),
}
"""Label → (torch intra-op threads, ``train_stacked`` threads)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--per-device", type=int, nargs="+", default=[100, 1000],
                        help="virtual devices per testbed device (9× this many devices)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows, weights = testbed_rows(1.0)
    result: dict[str, Any] = {"load_average_at_start": os.getloadavg(), "devices": {}}
    for per_device in args.per_device:
        parts = [part for device in rows for part in np.array_split(device, per_device)]
        stacked, bounds = _stack(parts)
        seeds = list(range(len(bounds)))
        seconds: dict[str, list[float]] = {name: [] for name in WAYS}
        for _ in range(args.repeats):
            for name, (torch_threads, threads) in WAYS.items():
                torch.set_num_threads(torch_threads)
                started = time.perf_counter()
                train_stacked(weights, stacked, bounds,
                              StackedSettings(1, BATCH, LEARNING_RATE), seeds=seeds,
                              threads=threads)
                seconds[name].append(round(time.perf_counter() - started, 3))
        result["devices"][str(len(bounds))] = seconds
        print(f"{len(bounds):>6} devices: " + "; ".join(
            f"{name} {min(s):.3f} s (best of {len(s)})" for name, s in seconds.items()),
            flush=True)
    result["load_average_at_end"] = os.getloadavg()
    print(f"written {write_result('stacked_threads', result)}")


if __name__ == "__main__":
    main()
