"""Is detection robust to how long the model trains? Federated and centralised runs on the testbed
at several (rounds × epochs), seeds and settings, each judged on the test rows.

The defaults were not chosen from this table: training length comes from the threshold rows'
validation loss (early stopping, best round) and warm-up rows are dropped by a fixed rule. The
table shows whether those choices hold whatever length a user sets, which the test rows are
allowed to tell (they only *judge* here).

Each cell: pooled TPR / FPR with and without the window vote, F1 with the vote, the Gafgyt
TCP and UDP single-instance TPR (the classes a long-trained model used to miss), the round the
run ended with and whether early stopping ended it.

Run: ``.venv/bin/python bench/bench_training_length.py`` (all cells, ~1 h on 2 cores) or
``--grid 10x1,30x1 --seeds 0 --modes federated`` → ``bench/results/training_length.json``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from common import write_result
from fediot.core.config import Config
from fediot.core.federated.evaluation import EvaluationSummary, threshold_row_rates
from fediot.engines.simulation import run_centralised, run_federated

SETTINGS: dict[str, dict[str, Any]] = {
    "default": {},
    "no-warmup": {"data_args.warmup_min_history": 0.0},
    "no-selection": {"validation_args.keep_best_round": False,
                     "validation_args.early_stopping_patience": 0},
    "neither": {"data_args.warmup_min_history": 0.0, "validation_args.keep_best_round": False,
                "validation_args.early_stopping_patience": 0},
    "global-threshold": {"detection_args.threshold_mode": "global"},
    "lr-0.001": {"train_args.learning_rate": 0.001},
    "lr-0.01": {"train_args.learning_rate": 0.01},
}
"""What each setting changes from the default configuration."""


def _cell(summary: EvaluationSummary) -> dict[str, float]:
    rows, voted = summary.pooled["rows"], summary.pooled["window_vote"]
    by_attack = rows["tpr_by_attack"]
    return {
        "tpr": rows["recall"], "fpr": rows["fpr"], "tpr_window": voted["recall"],
        "fpr_window": voted["fpr"], "f1_window": voted["f1"],
        "gafgyt_tcp_tpr": by_attack.get("gafgyt.tcp", float("nan")),
        "gafgyt_udp_tpr": by_attack.get("gafgyt.udp", float("nan")),
    }


def run_cell(mode: str, setting: str, rounds: int, epochs: int, seed: int,
             scale: float, workers: int) -> dict[str, Any]:
    """One run; returns its figures."""
    overrides: dict[str, Any] = {
        "train_args.comm_round": rounds, "train_args.epochs": epochs,
        "common_args.random_seed": seed, "data_args.testbed_scale": scale,
        "device_args.worker_num": workers, **SETTINGS[setting]}
    config = Config().with_overrides(overrides)
    started = time.perf_counter()
    result = (run_federated(config) if mode == "federated" else run_centralised(config))
    return {
        "mode": mode, "setting": setting, "rounds": rounds, "epochs": epochs, "seed": seed,
        "model_round": result.model_round, "rounds_run": len(result.history),
        "stopped_early": result.stopped_early,
        "validation_losses": [r.validation_loss for r in result.history],
        "best_validation_loss": min((r.validation_loss for r in result.history
                                     if r.validation_loss is not None), default=None),
        "threshold_row_rates": threshold_row_rates(result.threshold_stats,
                                                   result.thresholds.per_device),
        "seconds": time.perf_counter() - started, **_cell(result.evaluation),
    }


def _grid(text: str) -> list[tuple[int, int]]:
    cells = []
    for item in text.split(","):
        rounds, _, epochs = item.strip().partition("x")
        cells.append((int(rounds), int(epochs)))
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grid", default="10x1,30x1,10x3,20x2,60x1,60x5",
                        help="rounds x epochs cells, comma-separated")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--modes", default="federated,centralised")
    parser.add_argument("--settings", default="default",
                        help=f"comma-separated, of {', '.join(SETTINGS)}")
    parser.add_argument("--scale", type=float, default=1.0, help="testbed scale")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default="training_length",
                        help="result name under bench/results/")
    args = parser.parse_args()
    console = Console(stderr=True)
    cells = []
    table = Table(title="Detection vs training length (testbed, pooled, percent)")
    for name in ("mode", "setting", "seed", "R×E", "ended", "TPR", "FPR", "TPR·w", "FPR·w",
                 "F1·w", "gafgyt tcp", "gafgyt udp", "s"):
        table.add_column(name, justify="right")
    for mode in args.modes.split(","):
        for setting in args.settings.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for rounds, epochs in _grid(args.grid):
                    console.log(f"{mode} {setting} seed {seed} {rounds}×{epochs}")
                    cell = run_cell(mode, setting, rounds, epochs, seed, args.scale,
                                    args.workers)
                    cells.append(cell)
                    ended = f"{cell['model_round']}/{cell['rounds_run']}" + (
                        " (stop)" if cell["stopped_early"] else "")
                    table.add_row(mode, setting, str(seed), f"{rounds}×{epochs}", ended,
                                  *(f"{100 * cell[k]:.2f}" for k in (
                                      "tpr", "fpr", "tpr_window", "fpr_window", "f1_window",
                                      "gafgyt_tcp_tpr", "gafgyt_udp_tpr")),
                                  f"{cell['seconds']:.0f}")
                    write_result(args.output, {"scale": args.scale, "cells": cells})
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
