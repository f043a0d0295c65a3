"""What differential privacy costs detection: federated runs on the testbed at ε = ∞, 10, 3, 1,
and the sweeps that chose the privacy defaults (on training and threshold rows only).

Each ε is a ``privacy_args.target_epsilon`` (δ = 1e-5): the statistics get their share of ε and
each device's DP-SGD σ is solved for its row count (:mod:`fediot.core.federated.privacy`); ∞
runs without privacy. Each cell: pooled TPR / FPR / F1 with the window vote (test rows: the
result, never used to choose anything), the ε the run recorded, σ (smallest–largest device),
the statistics multiplier, and two figures on *threshold* rows computed here by the benchmark
from the final model: the mean reconstruction error of the threshold rows (a validation loss)
and the share of threshold rows above their device's threshold. The sweeps choose settings by
those two only.

Modes (``--mode``):

``table``
    The cells at ``--epsilons`` × ``--seeds``.
``clip``
    DP-SGD clip norms ``--clips`` at each of ``--epsilons``: pick the clip norm with the
    lowest threshold-row error.
``histogram``
    No private training: one run without privacy, then, on each device's threshold-row errors
    under its final model, the threshold from :func:`~fediot.core.federated.privacy.
    noisy_histogram` (``--draws`` noise draws) against the exact one, for released
    resolutions, cutoffs and gap rules at the statistics multipliers of ``--epsilons``.

``--exact-scaler`` (an ablation, not a private setting; needs ``--workers 1``): devices send
their exact scaler sums, to see what the noisy scaler costs.

With privacy on, devices send no validation loss (early stopping and best-round selection are
off), so every private run trains all ``--rounds`` rounds; the ∞ cell does the same.

Run on demand (not in CI): ``.venv/bin/python bench/bench_privacy.py --rounds 10 --scale 0.2
--workers 1`` → ``bench/results/privacy.json`` (``--output`` names another file).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from common import write_result
from fediot.core.config import Config
from fediot.core.data.layouts import open_dataset
from fediot.core.federated import client as client_module
from fediot.core.federated.devices import client_ids, dataset_root, load_client_data
from fediot.core.federated.privacy import (
    HISTOGRAM_CUTOFF,
    HISTOGRAM_MAX_GAP,
    PRIVATE_BINS_PER_DECADE,
    PrivacyPlan,
    noisy_histogram,
)
from fediot.core.federated.server import RunResult
from fediot.core.model import (
    ErrorStats,
    FeatureScaler,
    ScalerStats,
    build_autoencoder,
    reconstruction_errors,
    set_weights,
    threshold_mean_std,
)
from fediot.core.model.threshold import BINS_PER_DECADE
from fediot.engines.simulation import run_federated


def make_config(epsilon: float, args: argparse.Namespace, seed: int,
                clip_norm: float | None = None) -> Config:
    """The run's configuration at ``epsilon`` (``inf``: no privacy)."""
    overrides: dict[str, Any] = {
        "train_args.comm_round": args.rounds, "common_args.random_seed": seed,
        "data_args.testbed_scale": args.scale, "device_args.worker_num": args.workers,
        "train_args.client_num_per_round": args.per_round,
        "validation_args.keep_best_round": False,
        "validation_args.early_stopping_patience": 0,
    }
    if math.isfinite(epsilon):
        overrides.update({"privacy_args.enabled": True, "privacy_args.target_epsilon": epsilon,
                          "privacy_args.statistics_epsilon_share": args.share})
        if clip_norm is not None:
            overrides["privacy_args.clip_norm"] = clip_norm
    return Config().with_overrides(overrides)


def threshold_row_errors(config: Config, result: RunResult) -> dict[str, np.ndarray]:
    """Every device's threshold-row errors under the run's final model (computed here, by
    the benchmark, which may read the rows; the server never does)."""
    source = open_dataset(dataset_root(config))
    model = build_autoencoder()
    set_weights(model, result.model.weights)
    scaler = FeatureScaler.from_stats(result.model.scaler)
    return {cid: reconstruction_errors(model, scaler.transform(
                load_client_data(config, cid, source).opt)) for cid in client_ids(config)}


@contextmanager
def exact_scaler(enabled: bool) -> Iterator[None]:
    """Devices in this process send exact scaler sums while inside (an ablation)."""
    original = vars(client_module)["noisy_scaler_stats"]
    if enabled:
        setattr(client_module, "noisy_scaler_stats",  # noqa: B010 (an ablation patch)
                lambda rows, plan, rng: ScalerStats.from_data(rows))
    try:
        yield
    finally:
        setattr(client_module, "noisy_scaler_stats", original)  # noqa: B010


def run_cell(epsilon: float, args: argparse.Namespace, seed: int,
             clip_norm: float | None = None) -> dict[str, Any]:
    """One federated run at ``epsilon``; returns its figures."""
    config = make_config(epsilon, args, seed, clip_norm)
    started = time.perf_counter()
    with exact_scaler(args.exact_scaler):
        result = run_federated(config)
    seconds = time.perf_counter() - started
    voted = result.evaluation.pooled["window_vote"]
    privacy = result.privacy or {}
    errors = threshold_row_errors(config, result)
    pooled = np.concatenate(list(errors.values()))
    flagged = sum(int(np.sum(errors[cid] > t))
                  for cid, t in result.thresholds.per_device.items())
    return {
        "target_epsilon": epsilon if math.isfinite(epsilon) else None, "rounds": args.rounds,
        "seed": seed, "clip_norm": config.privacy_args.clip_norm if privacy else None,
        "statistics_epsilon_share": args.share if privacy else None,
        "client_num_per_round": args.per_round, "exact_scaler": args.exact_scaler,
        "tpr": voted["recall"], "fpr": voted["fpr"], "f1": voted["f1"],
        "epsilon": privacy.get("epsilon"), "epsilon_statistics": privacy.get("epsilon_statistics"),
        "noise_multiplier_min": privacy.get("noise_multiplier_min"),
        "noise_multiplier_max": privacy.get("noise_multiplier_max"),
        "statistics_multiplier": privacy.get("statistics_multiplier"),
        "threshold_row_error": float(pooled.mean()),
        "threshold_rows_flagged": flagged / len(pooled),
        "seconds": seconds,
    }


def histogram_sweep(args: argparse.Namespace, epsilons: list[float]) -> list[dict[str, Any]]:
    """Private against exact ``mean + k·std`` thresholds on threshold rows (no private
    training: the errors are those of a run without privacy)."""
    config = make_config(math.inf, args, 0)
    errors = threshold_row_errors(config, run_federated(config))
    k = config.detection_args.threshold_k
    rng = np.random.default_rng()
    rows = []
    for epsilon in epsilons:
        plan = PrivacyPlan.from_config(make_config(epsilon, args, 0))
        assert plan is not None
        for per_decade in (BINS_PER_DECADE, 10, PRIVATE_BINS_PER_DECADE):
            for cutoff in (HISTOGRAM_CUTOFF, 4.0):
                for gap in (HISTOGRAM_MAX_GAP, 10**6):
                    flagged, ratios = [], []
                    for device_errors in errors.values():
                        exact = ErrorStats.from_errors(device_errors)
                        for _ in range(args.draws):
                            released = ErrorStats.from_histogram(noisy_histogram(
                                exact.hist, plan.statistics_multiplier, rng,
                                bins_per_decade=per_decade, cutoff=cutoff, max_gap=gap))
                            threshold = threshold_mean_std(released, k)
                            flagged.append(float(np.mean(device_errors > threshold)))
                            ratios.append(threshold / threshold_mean_std(exact, k))
                    rows.append({
                        "target_epsilon": epsilon, "statistics_multiplier":
                            plan.statistics_multiplier, "bins_per_decade": per_decade,
                        "cutoff": cutoff, "max_gap": gap if gap < 10**6 else None,
                        "flagged_mean": float(np.mean(flagged)),
                        "flagged_p95": float(np.percentile(flagged, 95)),
                        "ratio_median": float(np.median(ratios)),
                        "ratio_max": float(np.max(ratios)),
                    })
    exact_flagged = [float(np.mean(e > threshold_mean_std(ErrorStats.from_errors(e), k)))
                     for e in errors.values()]
    rows.append({"target_epsilon": None, "flagged_mean": float(np.mean(exact_flagged))})
    return rows


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


def _num(value: float | None) -> str:
    return "∞" if value is None else f"{value:.3g}"


def _cell_table(cells: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for name in ("target ε", "seed", "C", "ε", "ε stats", "σ", "z", "thr-row err",
                 "thr rows flagged", "TPR", "FPR", "F1", "s"):
        table.add_column(name, justify="right")
    for cell in cells:
        sigma = ("—" if cell["noise_multiplier_min"] is None else
                 f"{cell['noise_multiplier_min']:.3g}–{cell['noise_multiplier_max']:.3g}")
        table.add_row(_num(cell["target_epsilon"]), str(cell["seed"]),
                      _num(cell["clip_norm"]), _num(cell["epsilon"]),
                      _num(cell["epsilon_statistics"]), sigma,
                      _num(cell["statistics_multiplier"]),
                      f"{cell['threshold_row_error']:.4f}",
                      _pct(cell["threshold_rows_flagged"]), _pct(cell["tpr"]),
                      _pct(cell["fpr"]), _pct(cell["f1"]), f"{cell['seconds']:.0f}")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("table", "clip", "histogram"), default="table")
    parser.add_argument("--epsilons", default="inf,10,3,1")
    parser.add_argument("--clips", default="0.1,0.3,1.0", help="clip norms (--mode clip)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=9, help="client_num_per_round")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--share", type=float, default=Config().privacy_args
                        .statistics_epsilon_share, help="statistics_epsilon_share")
    parser.add_argument("--scale", type=float, default=0.2, help="testbed scale")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--draws", type=int, default=40, help="noise draws (--mode histogram)")
    parser.add_argument("--exact-scaler", action="store_true",
                        help="ablation: devices send exact scaler sums (--workers 1)")
    parser.add_argument("--output", default="privacy", help="result name under bench/results/")
    args = parser.parse_args()
    if args.exact_scaler and args.workers != 1:
        parser.error("--exact-scaler patches this process's devices: use --workers 1")
    console = Console(stderr=True)
    epsilons = [float(e) for e in args.epsilons.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    payload: dict[str, Any] = {"scale": args.scale, "mode": args.mode,
                               "exact_scaler": args.exact_scaler}
    if args.mode == "histogram":
        payload["rows"] = histogram_sweep(args, [e for e in epsilons if math.isfinite(e)])
        write_result(args.output, payload)
        table = Table(title="Private vs exact mean + k·std on threshold rows")
        for name in ("target ε", "z", "bins/decade", "cutoff", "max gap", "flagged %",
                     "p95 %", "ratio median", "ratio max"):
            table.add_column(name, justify="right")
        for row in payload["rows"]:
            if row["target_epsilon"] is None:
                table.add_row("exact", "", "", "", "", _pct(row["flagged_mean"]), "", "", "")
                continue
            table.add_row(_num(row["target_epsilon"]), f"{row['statistics_multiplier']:.3g}",
                          str(row["bins_per_decade"]), f"{row['cutoff']:g}",
                          "∞" if row["max_gap"] is None else str(row["max_gap"]),
                          _pct(row["flagged_mean"]), _pct(row["flagged_p95"]),
                          f"{row['ratio_median']:.2f}", f"{row['ratio_max']:.3g}")
        Console(width=200).print(table)
        return
    cells: list[dict[str, Any]] = []
    payload["cells"] = cells
    clips: list[float | None] = ([float(c) for c in args.clips.split(",")]
                                 if args.mode == "clip" else [None])
    for seed in seeds:
        for epsilon in epsilons:
            for clip in clips:
                console.log(f"ε = {epsilon:g}, seed {seed}, clip {clip}, {args.rounds} rounds")
                cells.append(run_cell(epsilon, args, seed, clip))
                write_result(args.output, payload)
    Console(width=200).print(_cell_table(cells, "Detection vs differential privacy (testbed, "
                                                "pooled, window vote, %)"))


if __name__ == "__main__":
    main()
