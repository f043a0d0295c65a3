"""What each threshold rule promises on the devices' own threshold rows, before any test row.

Reads a finished run folder's ``results.json`` (every device's error statistics of its threshold
rows under the final model: counts, sums and the log-binned histogram) and reports, per device,
the share of its threshold rows above its threshold for k = 1…5 under per-device thresholds
(each device's mean + k·std) and under one global threshold (the pooled mean + k·std). It needs
no data and no model: it is what the server itself can compute.

Run: ``.venv/bin/python bench/bench_threshold_rows.py [RUN]`` (default: the newest run in
``runs/``) → ``bench/results/threshold_rows.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common import write_result
from fediot.core.catalog import client_label
from fediot.core.model import ErrorStats, threshold_mean_std
from fediot.engines.run_folder import find_run

KS = (1.0, 2.0, 3.0, 4.0, 5.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", nargs="?", default="latest")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"))
    args = parser.parse_args()
    view = find_run(args.run, args.runs_dir)
    results = view.results()
    if results is None:
        raise SystemExit(f"{view.root}: no results.json (the run has not finished)")
    stats = {device: ErrorStats.from_dict(raw)
             for device, raw in results["threshold_stats"].items()}
    pooled = ErrorStats.pool(stats.values())
    rates: dict[str, Any] = {"per_device": {}, "global": {}}
    for k in KS:
        rates["per_device"][k] = {d: s.share_above(threshold_mean_std(s, k))
                                  for d, s in stats.items()}
        rates["global"][k] = {d: s.share_above(threshold_mean_std(pooled, k))
                              for d, s in stats.items()}
    write_result("threshold_rows", {"run": view.run_id, "rows": {d: s.n for d, s in
                                                                 stats.items()},
                                    "rates": rates})
    table = Table(title=f"Threshold-row false-alarm rate (%), run {view.run_id}")
    table.add_column("device")
    for mode in ("per_device", "global"):
        for k in KS:
            table.add_column(f"{mode.replace('_', '-')} k={k:g}", justify="right")
    for device in stats:
        table.add_row(client_label(device),
                      *(f"{100 * rates[mode][k][device]:.2f}"
                        for mode in ("per_device", "global") for k in KS))
    Console(width=220).print(table)


if __name__ == "__main__":
    main()
