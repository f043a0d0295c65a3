"""Training and scoring speed of the autoencoder on one CPU thread.

Run on demand: ``.venv/bin/python bench/bench_train.py [--rows N] [--repeats R]``. Prints a table
and writes ``bench/results/train.json`` (atomically). Data: random standard-normal float32 rows,
115 columns (what ``FeatureScaler.transform`` produces). Every figure is the best of ``repeats``
timed runs after a warm-up, since other processes on a shared machine only ever slow a run down.

(a) tight loop: pre-made batches, forward / backward / fused-Adam step, nothing else;
(b) ``train_local`` (wall time of the whole call) and its ratio to (a) (target ≥ 0.85);
(c) the FedIoT seed's trainer: ``DataLoader(TensorDataset(X), batch_size=10, shuffle=True)``,
    default (unfused) Adam, ``x.float()``, ``loss.item()`` per batch; ratio of ``train_local`` at
    our default batch size to it (target ≥ 20×);
(d) ``reconstruction_errors`` rows/s (target ≥ 500k).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch.nn import functional
from torch.utils.data import DataLoader, TensorDataset

from common import write_result
from fediot.core.catalog import N_FEATURES
from fediot.core.model import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_SCORE_BATCH_SIZE,
    build_autoencoder,
    reconstruction_errors,
    train_local,
)

SEED_BATCH_SIZE = 10
LEARNING_RATE = 1e-3


def best_rate(run: Callable[[], int], repeats: int) -> float:
    """Items per second of the fastest of ``repeats`` runs; ``run`` returns the items done."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        items = run()
        best = max(best, items / (time.perf_counter() - start))
    return best


def tight_loop_rate(data: torch.Tensor, batch_size: int, repeats: int) -> float:
    model = build_autoencoder(N_FEATURES, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE, fused=True)
    batches = list(torch.split(data, batch_size))

    def run() -> int:
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = functional.mse_loss(model(batch), batch)
            torch.autograd.backward(loss)
            optimizer.step()
        return len(data)

    run()  # warm-up
    return best_rate(run, repeats)


def train_local_rate(data: np.ndarray, batch_size: int, repeats: int) -> float:
    model = build_autoencoder(N_FEATURES, seed=0)

    def run() -> int:
        train_local(model, data, epochs=1, batch_size=batch_size, learning_rate=LEARNING_RATE)
        return len(data)

    run()
    return best_rate(run, repeats)


def seed_trainer_rate(data: torch.Tensor, repeats: int) -> float:
    model = build_autoencoder(N_FEATURES, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    criterion = torch.nn.MSELoss()
    loader = DataLoader(TensorDataset(data), batch_size=SEED_BATCH_SIZE, shuffle=True)

    def run() -> int:
        batch_loss = []
        for (batch,) in loader:
            x = batch.float()
            optimizer.zero_grad()
            loss = criterion(model(x), x)
            torch.autograd.backward(loss)
            optimizer.step()
            batch_loss.append(loss.item())
        return len(data)

    run()
    return best_rate(run, repeats)


def scoring_rate(data: np.ndarray, batch_size: int, repeats: int) -> float:
    model = build_autoencoder(N_FEATURES, seed=0)

    def run() -> int:
        return len(reconstruction_errors(model, data, batch_size=batch_size))

    run()
    return best_rate(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows of random data")
    parser.add_argument("--train-rows", type=int, default=30_000, help="rows per training run")
    parser.add_argument("--seed-rows", type=int, default=5_000, help="rows per seed-trainer run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (best)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    data = rng.standard_normal((args.rows, N_FEATURES), dtype=np.float32)
    train = data[: args.train_rows]
    train_tensor = torch.from_numpy(train.copy())

    rows: list[tuple[str, float, str]] = []
    results: dict[str, Any] = {}
    for batch_size in sorted({SEED_BATCH_SIZE, 64, DEFAULT_BATCH_SIZE}):
        tight = tight_loop_rate(train_tensor, batch_size, args.repeats)
        ours = train_local_rate(train, batch_size, args.repeats)
        results[f"batch_{batch_size}"] = {
            "tight_loop_samples_per_s": tight,
            "train_local_samples_per_s": ours,
            "train_local_over_tight": ours / tight,
        }
        rows.append((f"(a) tight loop, batch {batch_size}", tight, "samples/s"))
        rows.append((f"(b) train_local, batch {batch_size}", ours, "samples/s"))
        rows.append((f"    train_local / tight loop, batch {batch_size}", ours / tight, "≥ 0.85"))

    seed = seed_trainer_rate(torch.from_numpy(data[: args.seed_rows].copy()), args.repeats)
    ours_default = results[f"batch_{DEFAULT_BATCH_SIZE}"]["train_local_samples_per_s"]
    results["seed_trainer_samples_per_s"] = seed
    results["train_local_default_over_seed"] = ours_default / seed
    rows.append((f"(c) seed trainer (DataLoader, batch {SEED_BATCH_SIZE})", seed, "samples/s"))
    rows.append(
        (f"    train_local (batch {DEFAULT_BATCH_SIZE}) / seed", ours_default / seed, "≥ 20")
    )

    for batch_size in sorted({DEFAULT_SCORE_BATCH_SIZE, 65_536}):
        rate = scoring_rate(data, batch_size, args.repeats)
        results[f"reconstruction_errors_rows_per_s_chunk_{batch_size}"] = rate
        target = "≥ 500,000" if batch_size == DEFAULT_SCORE_BATCH_SIZE else "(comparison)"
        rows.append((f"(d) reconstruction_errors, chunk {batch_size}", rate, target))

    default = results[f"batch_{DEFAULT_BATCH_SIZE}"]
    score = results[f"reconstruction_errors_rows_per_s_chunk_{DEFAULT_SCORE_BATCH_SIZE}"]
    targets = {
        "train_local_over_tight_at_64_ge_0.85": results["batch_64"]["train_local_over_tight"]
        >= 0.85,
        "train_local_over_tight_at_default_ge_0.85": default["train_local_over_tight"] >= 0.85,
        "train_local_default_over_seed_ge_20": results["train_local_default_over_seed"] >= 20,
        "reconstruction_errors_ge_500k_rows_per_s": score >= 500_000,
    }

    table = Table(title=f"Autoencoder training and scoring, 1 torch thread, {N_FEATURES} features")
    table.add_column("measurement")
    table.add_column("value", justify="right")
    table.add_column("unit / target")
    for name, value, unit in rows:
        table.add_row(name, f"{value:,.2f}" if value < 100 else f"{value:,.0f}", unit)
    Console().print(table)
    for name, met in targets.items():
        Console().print(f"{'met ' if met else 'MISSED'}  {name}")

    payload = {
        "benchmark": "train",
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "machine": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "default_batch_size": DEFAULT_BATCH_SIZE,
        "default_score_batch_size": DEFAULT_SCORE_BATCH_SIZE,
        "rows": args.rows,
        "train_rows": args.train_rows,
        "seed_rows": args.seed_rows,
        "repeats": args.repeats,
        "results": results,
        "targets_met": targets,
    }
    Console().print(f"wrote {write_result('train', payload)}")


if __name__ == "__main__":
    main()
