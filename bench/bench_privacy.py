"""What differential privacy costs detection: federated runs on the testbed at ε = ∞, 10, 3, 1.

Each ε is a ``privacy_args.target_epsilon`` (δ = 1e-5): the accountant (``dp-accounting``, RDP)
solves the update and statistics noise multipliers for the planned rounds, sampling rate and
threshold steps (:mod:`fediot.core.federated.privacy`); ∞ runs without privacy. Each cell:
pooled TPR / FPR / F1 with the window vote, the ε the run recorded (sampling-amplified, the
server's view, device-level updates), σ and the seconds taken.

With privacy on, devices send no validation loss (early stopping and best-round selection are
off), so every private run trains all ``--rounds`` rounds; the ∞ cell uses the same setting
(``--no-selection`` is the default) for a like-for-like comparison.

Run on demand (not in CI): ``.venv/bin/python bench/bench_privacy.py`` (≈ 4 × a 20-round run)
or ``--epsilons inf,3 --rounds 5 --scale 0.3`` → ``bench/results/privacy.json``.
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from common import write_result
from fediot.core.config import Config
from fediot.engines.simulation import run_federated


def run_cell(epsilon: float, rounds: int, clip_norm: float, seed: int, scale: float,
             workers: int, per_round: int) -> dict[str, Any]:
    """One federated run at ``epsilon`` (``inf``: no privacy); returns its figures."""
    overrides: dict[str, Any] = {
        "train_args.comm_round": rounds, "common_args.random_seed": seed,
        "data_args.testbed_scale": scale, "device_args.worker_num": workers,
        "train_args.client_num_per_round": per_round,
        "validation_args.keep_best_round": False,
        "validation_args.early_stopping_patience": 0,
    }
    if math.isfinite(epsilon):
        overrides.update({"privacy_args.enabled": True, "privacy_args.target_epsilon": epsilon,
                          "privacy_args.clip_norm": clip_norm})
    config = Config().with_overrides(overrides)
    started = time.perf_counter()
    result = run_federated(config)
    voted = result.evaluation.pooled["window_vote"]
    privacy = result.privacy or {}
    return {
        "target_epsilon": epsilon if math.isfinite(epsilon) else None, "rounds": rounds,
        "seed": seed, "clip_norm": clip_norm, "client_num_per_round": per_round,
        "tpr": voted["recall"], "fpr": voted["fpr"], "f1": voted["f1"],
        "epsilon": privacy.get("epsilon"), "epsilon_server": privacy.get("epsilon_server"),
        "epsilon_device_updates": privacy.get("epsilon_device_updates"),
        "noise_multiplier": privacy.get("noise_multiplier"),
        "statistics_multiplier": privacy.get("statistics_multiplier"),
        "seconds": time.perf_counter() - started,
    }


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _num(value: float | None) -> str:
    return "∞" if value is None else f"{value:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epsilons", default="inf,10,3,1")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--clip-norm", type=float, default=1.0)
    parser.add_argument("--per-round", type=int, default=9, help="client_num_per_round")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--scale", type=float, default=1.0, help="testbed scale")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output", default="privacy", help="result name under bench/results/")
    args = parser.parse_args()
    console = Console(stderr=True)
    cells = []
    table = Table(title="Detection vs differential privacy (testbed, pooled, window vote, %)")
    for name in ("target ε", "seed", "ε", "ε server", "ε device", "σ", "TPR", "FPR", "F1",
                 "s"):
        table.add_column(name, justify="right")
    for seed in (int(s) for s in args.seeds.split(",")):
        for epsilon in (float(e) for e in args.epsilons.split(",")):
            console.log(f"ε = {epsilon:g}, seed {seed}, {args.rounds} rounds")
            cell = run_cell(epsilon, args.rounds, args.clip_norm, seed, args.scale,
                            args.workers, args.per_round)
            cells.append(cell)
            table.add_row(_num(cell["target_epsilon"]), str(seed), _num(cell["epsilon"]),
                          _num(cell["epsilon_server"]), _num(cell["epsilon_device_updates"]),
                          _num(cell["noise_multiplier"]), _pct(cell["tpr"]),
                          _pct(cell["fpr"]), _pct(cell["f1"]), f"{cell['seconds']:.0f}")
            write_result(args.output, {"scale": args.scale, "cells": cells})
    Console(width=200).print(table)


if __name__ == "__main__":
    main()
