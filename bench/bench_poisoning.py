"""Poisoning: k of the 9 testbed devices attack the federation; how much pooled F1 does each
aggregation keep, with and without the server's optional reply checks?

Attacks (:mod:`fediot.core.federated.adversaries`; every lie is internally consistent, so the
server's structural checks always pass it):

* ``sign-flip×10`` — each round the attacker sends ``w_global − 10·Δ`` (Δ its honest update);
* ``scale×1000`` — ``w_global + 1000·Δ``;
* ``attack-traffic`` — the attacker trains (and reports its scaler statistics) on its own
  attack rows instead of its benign training rows (its rows are still scored);
* ``scaler×1000`` — scaler sums Σx ×1000, Σx² ×10⁶;
* ``errors×5`` — threshold-row errors ×5 (sums scaled, histogram shifted 35 bins).

The weight and data attacks run with the default per-device thresholds; the two statistics
attacks with ``detection_args.threshold_mode: global`` (``--stats-mode``), since per-device
thresholds use each device's own errors and no other device's lie reaches them (an attacker
inflating its own errors only blinds itself). The scaler lie reaches every device whatever
the threshold mode.

Strategies: FedAvg; FedMedian; FedTrimmedAvg (β 0.2: one device cut at each end of 9);
Krum (classical: ``krum_selected 1``, a single pick); MultiKrum (n − f picks averaged); Bulyan.
Krum and MultiKrum assume f = 3 of 9, Bulyan f = 1 (the most 9 devices tolerate). Robust
strategies also combine the scaler and threshold statistics robustly (trimmed mean of the
devices', ``robust_statistics: auto``); FedAvg uses the exact pooled sums. The trimmed mean
cuts one device of 9 at each end (β 0.2), so two liars about the same statistic get one lie
through; ``--robust-statistics median`` combines by the median instead.

"with validation": the server's defaults (structural checks + the update-norm bound,
``max_update_norm_ratio`` 10); "without": ``max_update_norm_ratio: 0`` (the structural checks
stay: they cannot be turned off). The k attackers are a seeded draw of the 9 devices, nested
(the attackers of k = 1 are among those of k = 2). Round selection (best validation round,
early stopping) is off unless ``--selection``: every run trains all ``--rounds`` rounds, so the
table shows the aggregation alone (attackers could lie about their validation loss too).

Each cell: pooled F1 with the window vote (and per row), TPR, FPR, replies rejected from
attackers and from honest devices, seconds.

Run on demand (not in CI): ``.venv/bin/python bench/bench_poisoning.py --scale 0.2 --rounds 5``
(204 runs, ≈ 8 min on 2 cores) → ``bench/results/poisoning.json``.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from common import write_result
from fediot.core.config import Config
from fediot.core.data.layouts import open_dataset
from fediot.core.federated.adversaries import (
    ReplyChange,
    TamperingPool,
    inflated_scaler,
    on_attack_traffic,
    scaled_update,
    shifted_errors,
)
from fediot.core.federated.client import ClientData, DeviceGuards
from fediot.core.federated.devices import client_ids, dataset_root, load_client_data
from fediot.core.federated.server import FedDetectServer
from fediot.engines.inprocess import SequentialPool
from fediot.engines.strategies import strategy_for


@dataclass(frozen=True)
class Attack:
    """One poisoning attack: reply changes and/or a change of the attacker's data."""

    kind: str  # "weights", "data" or "statistics"
    changes: Mapping[str, ReplyChange] = field(default_factory=dict)
    data: Callable[[ClientData], ClientData] | None = None


ATTACKS: dict[str, Attack] = {
    "sign-flip×10": Attack("weights", {"fit": scaled_update(-10.0)}),
    "scale×1000": Attack("weights", {"fit": scaled_update(1000.0)}),
    "attack-traffic": Attack("data", data=on_attack_traffic),
    "scaler×1000": Attack("statistics", {"scaler_stats": inflated_scaler(1000.0)}),
    "errors×5": Attack("statistics", {"threshold_stats": shifted_errors(35)}),
}
"""The attacks, by name."""

STRATEGIES: dict[str, dict[str, Any]] = {
    "FedAvg": {"train_args.federated_optimizer": "FedAvg"},
    "FedMedian": {"train_args.federated_optimizer": "FedMedian"},
    "FedTrimmedAvg": {"train_args.federated_optimizer": "FedTrimmedAvg"},
    "Krum": {"train_args.federated_optimizer": "Krum", "train_args.krum_selected": 1},
    "MultiKrum": {"train_args.federated_optimizer": "MultiKrum"},
    "Bulyan": {"train_args.federated_optimizer": "Bulyan"},
}
"""What each strategy column sets."""

ROBUST = ("FedMedian", "FedTrimmedAvg", "Krum", "MultiKrum", "Bulyan")
ACCEPTANCE_ATTACKS = ("sign-flip×10", "scale×1000", "scaler×1000", "errors×5")
ACCEPTANCE_DROP = {1: 0.05, 2: 0.10}
"""Issue 10: with a robust strategy, 1 of 9 devices poisoning weights (sign-flip ×10, ×1000) or
statistics keeps pooled F1 within 5 points of clean, 2 of 9 within 10 points."""


def base_config(scale: float, rounds: int, seed: int, selection: bool = False,
                **overrides: Any) -> Config:
    """The settings every cell shares (in-process, one device after another)."""
    settings: dict[str, Any] = {
        "train_args.comm_round": rounds, "common_args.random_seed": seed,
        "data_args.testbed_scale": scale, "device_args.worker_num": 1,
    }
    if not selection:
        settings.update({"validation_args.keep_best_round": False,
                         "validation_args.early_stopping_patience": 0})
    return Config().with_overrides({**settings, **overrides})


def load_clients(config: Config) -> list[ClientData]:
    """Every device's data (the testbed is built on first use), loaded once for all cells."""
    source = open_dataset(dataset_root(config))
    return [load_client_data(config, cid, source) for cid in client_ids(config)]


def attacker_order(ids: Sequence[str], seed: int) -> list[str]:
    """The devices in the seeded order attackers are drawn (the first k attack)."""
    return [ids[i] for i in np.random.default_rng([seed, 10]).permutation(len(ids))]


def cell_config(base: Config, strategy: str, validation: bool, mode: str) -> Config:
    overrides: dict[str, Any] = {**STRATEGIES[strategy], "detection_args.threshold_mode": mode}
    if not validation:
        overrides["train_args.max_update_norm_ratio"] = 0.0
    return base.with_overrides(overrides)


def run_cell(clients: Sequence[ClientData], base: Config, attack: str, strategy: str,
             attackers: Sequence[str], validation: bool, mode: str) -> dict[str, Any]:
    """One federated run with ``attackers`` doing ``attack`` (``"none"``: clean); its figures."""
    config = cell_config(base, strategy, validation, mode)
    spec = ATTACKS.get(attack, Attack("none"))
    bad = set(attackers)
    data = [spec.data(c) if spec.data is not None and c.client_id in bad else c
            for c in clients]
    pool = TamperingPool(SequentialPool(data, config.device_args.using_gpu,
                                        DeviceGuards.from_config(config)), bad, spec.changes)
    started = time.perf_counter()
    result = FedDetectServer(config, None, strategy_for(config)).run(pool)
    seconds = time.perf_counter() - started
    voted, rows = result.evaluation.pooled["window_vote"], result.evaluation.pooled["rows"]
    rejected = [r.device for r in result.rejections]
    return {
        "attack": attack, "strategy": strategy, "k": len(attackers),
        "attackers": list(attackers), "validation": validation, "threshold_mode": mode,
        "f1": voted["f1"], "tpr": voted["recall"], "fpr": voted["fpr"],
        "f1_rows": rows["f1"], "tpr_rows": rows["recall"], "fpr_rows": rows["fpr"],
        "rejected_attacker": sum(d in bad for d in rejected),
        "rejected_honest": sum(d not in bad for d in rejected),
        "rounds_run": len(result.history), "model_round": result.model_round,
        "seconds": seconds,
    }


def plan(attacks: Sequence[str], strategies: Sequence[str], ks: Sequence[int],
         validations: Sequence[bool], stats_mode: str) -> list[tuple[str, str, int, bool, str]]:
    """Every cell to run as (attack, strategy, k, validation, threshold mode), clean runs
    (attack ``none``, k 0) once per strategy, validation and threshold mode needed."""
    cells: list[tuple[str, str, int, bool, str]] = []
    modes = sorted({stats_mode if ATTACKS[a].kind == "statistics" else "per_device"
                    for a in attacks})
    for strategy in strategies:
        for validation in validations:
            if 0 in ks:
                cells += [("none", strategy, 0, validation, mode) for mode in modes]
            for attack in attacks:
                mode = stats_mode if ATTACKS[attack].kind == "statistics" else "per_device"
                cells += [(attack, strategy, k, validation, mode) for k in ks if k > 0]
    return cells


def run_grid(clients: Sequence[ClientData], base: Config, cells: Sequence[
        tuple[str, str, int, bool, str]], order: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Run ``cells`` (from :func:`plan`) one after another; yield each cell's figures."""
    for attack, strategy, k, validation, mode in cells:
        yield run_cell(clients, base, attack, strategy, order[:k], validation, mode)


def clean_for(cells: Sequence[dict[str, Any]], cell: dict[str, Any]) -> dict[str, Any] | None:
    """The clean run ``cell`` compares with: same strategy, validation and threshold mode."""
    return next((c for c in cells if c["attack"] == "none" and c["strategy"] == cell["strategy"]
                 and c["validation"] == cell["validation"]
                 and c["threshold_mode"] == cell["threshold_mode"]), None)


def acceptance(cells: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The issue's criterion for every robust cell it covers (k 1: −5 points, k 2: −10)."""
    out = []
    for cell in cells:
        if (cell["strategy"] not in ROBUST or cell["attack"] not in ACCEPTANCE_ATTACKS
                or cell["k"] not in ACCEPTANCE_DROP):
            continue
        clean = clean_for(cells, cell)
        if clean is None:
            continue
        allowed = ACCEPTANCE_DROP[cell["k"]]
        out.append({key: cell[key] for key in ("attack", "strategy", "k", "validation")} | {
            "clean_f1": clean["f1"], "f1": cell["f1"], "drop": clean["f1"] - cell["f1"],
            "allowed": allowed, "holds": clean["f1"] - cell["f1"] <= allowed,
            "clean_f1_rows": clean["f1_rows"], "f1_rows": cell["f1_rows"],
            "holds_rows": clean["f1_rows"] - cell["f1_rows"] <= allowed})
    return out


def _f1(cells: Sequence[dict[str, Any]], attack: str, strategy: str, k: int,
        validation: bool, mode: str) -> str:
    if k == 0:
        found = [c for c in cells if c["attack"] == "none" and c["strategy"] == strategy
                 and c["validation"] == validation and c["threshold_mode"] == mode]
    else:
        found = [c for c in cells if c["attack"] == attack and c["strategy"] == strategy
                 and c["k"] == k and c["validation"] == validation]
    return f"{100 * found[0]['f1']:.1f}" if found else "—"


def table(cells: Sequence[dict[str, Any]], attacks: Sequence[str], strategies: Sequence[str],
          ks: Sequence[int], stats_mode: str) -> Table:
    """Pooled F1 (window vote, %) per attack × strategy × k: with / without validation."""
    out = Table(title="Pooled F1 under poisoning (window vote, %; with / without validation)")
    for name in ("attack", "strategy", *(f"k={k}" for k in ks)):
        out.add_column(name, justify="right")
    for attack in attacks:
        mode = stats_mode if ATTACKS[attack].kind == "statistics" else "per_device"
        for strategy in strategies:
            out.add_row(attack, strategy, *(
                f"{_f1(cells, attack, strategy, k, True, mode)} / "
                f"{_f1(cells, attack, strategy, k, False, mode)}" for k in ks))
    return out


def _machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:  # noqa: PTH123  (Linux only; absent elsewhere)
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu_model": model, "cpus": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "platform": platform.platform()}


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.3, help="testbed scale")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--attackers", default="0,1,2,3", help="values of k, comma-separated")
    parser.add_argument("--attacks", default=",".join(ATTACKS), help=f"of {', '.join(ATTACKS)}")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help=f"of {', '.join(STRATEGIES)}")
    parser.add_argument("--validation", default="on,off", help="on, off or both")
    parser.add_argument("--stats-mode", default="global", choices=("global", "quantile",
                                                                  "per_device"),
                        help="threshold_mode of the statistics attacks")
    parser.add_argument("--selection", action="store_true",
                        help="keep best-round selection and early stopping on")
    parser.add_argument("--robust-statistics", default="auto",
                        choices=("auto", "off", "trimmed_mean", "median"),
                        help="train_args.robust_statistics (how scaler and threshold statistics "
                             "are combined)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", default="poisoning",
                        help="result name under bench/results/")
    args = parser.parse_args()
    attacks = _names(args.attacks, list(ATTACKS), "attacks")
    strategies = _names(args.strategies, list(STRATEGIES), "strategies")
    ks = sorted({int(k) for k in args.attackers.split(",")})
    validations = [v == "on" for v in _names(args.validation, ["on", "off"], "validation")]
    console = Console(stderr=True)
    from fediot.engines import flower  # noqa: F401  (Flower's environment before flwr)

    importlib.import_module("flwr.serverapp.strategy")  # configures Flower's logger

    logging.getLogger("flwr").setLevel(logging.WARNING)  # a line per aggregation otherwise
    logging.getLogger("fediot").setLevel(logging.ERROR)  # rejections are counted per cell
    base = base_config(args.scale, args.rounds, args.seed, args.selection,
                       **{"train_args.robust_statistics": args.robust_statistics})
    started = time.perf_counter()
    clients = load_clients(base)
    order = attacker_order([c.client_id for c in clients], args.seed)
    gc.collect()
    gc.freeze()
    cells_to_run = plan(attacks, strategies, ks, validations, args.stats_mode)
    console.log(f"{len(cells_to_run)} runs; attackers in order: {', '.join(order)}")
    cells: list[dict[str, Any]] = []
    settings = {"scale": args.scale, "rounds": args.rounds, "seed": args.seed,
                "stats_threshold_mode": args.stats_mode, "selection": args.selection,
                "robust_statistics": args.robust_statistics,
                "attacker_order": order, "attacks": attacks, "strategies": strategies,
                "ks": ks, "machine_detail": _machine()}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("poisoning", total=len(cells_to_run))
        for spec, cell in zip(cells_to_run, run_grid(clients, base, cells_to_run, order),
                              strict=True):
            cells.append(cell)
            # Flower's strategies run a full gc.collect() per update; kept objects frozen out of
            # it, a Bulyan cell takes 3 s instead of 12
            gc.collect()
            gc.freeze()
            progress.update(task, advance=1, description=(
                f"{spec[0]} {spec[1]} k={spec[2]} {'val' if spec[3] else 'no-val'}: "
                f"F1 {100 * cell['f1']:.1f}"))
            write_result(args.output, {**settings, "cells": cells,
                                       "seconds_total": time.perf_counter() - started})
    verdicts = acceptance(cells)
    write_result(args.output, {**settings, "cells": cells, "acceptance": verdicts,
                               "seconds_total": time.perf_counter() - started})
    Console(width=200).print(table(cells, attacks, strategies, ks, args.stats_mode))
    failed = [v for v in verdicts if not v["holds"]]
    console.log(f"acceptance: {len(verdicts) - len(failed)} of {len(verdicts)} robust cells hold"
                + "".join(f"\n  fails: {v['attack']} {v['strategy']} k={v['k']} "
                          f"{'val' if v['validation'] else 'no-val'}: "
                          f"{100 * v['clean_f1']:.1f} → {100 * v['f1']:.1f}" for v in failed))
    console.log(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
