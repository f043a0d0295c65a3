"""The server's per-reply work for thousands of fit replies (issue 13).

The same code runs for every engine; with the vectorised engine it is a large share of a
round at thousands of virtual devices. Timed here on synthetic fit replies carrying the real
autoencoder's weight shapes (:func:`~fediot.core.model.build_autoencoder`, 16 float32 arrays,
36,876 numbers), the global weights plus small noise per device:

- ``validate``: :func:`validate_reply` of every fit reply (the weights' checks dominate);
- ``update_norm_outliers``: the round's update norms and their median;
- ``weighted_average``: FedAvg's aggregation;
- ``missed_rounds``: the participation record over ``--rounds`` full rounds;
- ``exchange``: :meth:`FedDetectServer._exchange` on a pool handing back the prepared replies,
  one log line each (the lines, contacts, contexts, validation).

Each figure is the best of ``--repeats`` (seconds per call over all replies).

Run: ``PYTHONPATH=src:bench .venv/bin/python bench/bench_server_replies.py`` →
``bench/results/server_replies.json``. The same on an earlier commit's code (the functions
timed keep their names):
``git archive COMMIT src | tar -x -C /tmp/base`` then
``PYTHONPATH=/tmp/base/src:bench .venv/bin/python bench/bench_server_replies.py --name
server_replies_before`` (``server_replies_before.json``: commit af47d75, before issue 13's
server work).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from common import REPO, write_result

sys.path.insert(0, str(REPO / "tests"))
from federated_data import FixedReplies  # type: ignore[import-not-found]
from fediot.core.catalog import N_FEATURES
from fediot.core.config import Config
from fediot.core.federated.messages import (
    DataReport,
    FitReport,
    FitTask,
    LogLine,
    ModelState,
    Reply,
    SystemStats,
    Weights,
)
from fediot.core.federated.participation import missed_rounds
from fediot.core.federated.server import FedDetectServer, RoundRecord
from fediot.core.federated.strategies import weighted_average
from fediot.core.federated.validation import ReplyContext, update_norm_outliers, validate_reply
from fediot.core.model import ScalerStats, build_autoencoder, get_weights

TRAIN_ROWS = 1_000
"""Training rows each synthetic device declares (its reports use 500…1,000 of them)."""


def _best(function: Callable[[], Any], repeats: int) -> float:
    """The fastest of ``repeats`` calls of ``function``, in seconds."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def _reports(devices: int, current: Weights, seed: int) -> list[FitReport]:
    """``devices`` fit reports: the global weights plus N(0, 0.01) noise, 500…1,000 rows."""
    rng = np.random.default_rng(seed)
    system = SystemStats(0.1, 0.1, 1, 1)
    return [FitReport(f"device-{i:05d}",
                      [(w + rng.normal(0.0, 0.01, w.shape)).astype(np.float32) for w in current],
                      int(rng.integers(500, TRAIN_ROWS + 1)), 0.01, system, 0.02, 10)
            for i in range(devices)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=9_000)
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds in the record missed_rounds reads (default 5)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="server_replies",
                        help="result file bench/results/<name>.json (default server_replies)")
    args = parser.parse_args()

    current = get_weights(build_autoencoder(N_FEATURES, seed=0))
    reports = _reports(args.devices, current, seed=1)
    ids = [r.client_id for r in reports]
    declared = DataReport(TRAIN_ROWS, TRAIN_ROWS)
    scaler = ScalerStats(1, np.zeros(N_FEATURES), np.zeros(N_FEATURES))
    task = FitTask(model=ModelState(current, scaler), server_round=1, learning_rate=1e-3,
                   epochs=1, batch_size=64)

    def validate() -> None:
        for report in reports:
            validate_reply("fit", task, report, ReplyContext(report.client_id, declared))

    by_id = {r.client_id: r for r in reports}
    history = [RoundRecord(server_round=n, learning_rate=1e-3, clients=ids,
                           answered=ids[n % 7:], train_loss=0.0, num_examples=0,
                           seconds=0.0, system={}, rejected={})
               for n in range(1, args.rounds + 1)]
    server = FedDetectServer(Config())
    server.device_data = dict.fromkeys(ids, declared)
    server.training_ids = set(ids)
    # one log line per reply, as a device's fit writes one ("round 1: trained …")
    pool = FixedReplies({r.client_id: Reply(r, (LogLine(
        "2026-01-01T00:00:00.000+00:00", r.client_id, 1, "fit", "INFO",
        "round 1: trained 1000 rows × 1 epoch(s)"),)) for r in reports})
    tasks = dict.fromkeys(ids, task)

    seconds = {
        "validate": _best(validate, args.repeats),
        "update_norm_outliers": _best(lambda: update_norm_outliers(by_id, current, 10.0),
                                      args.repeats),
        "weighted_average": _best(lambda: weighted_average(reports), args.repeats),
        "missed_rounds": _best(lambda: missed_rounds(history), args.repeats),
        "exchange": _best(lambda: server._exchange(pool, "fit", tasks, 1), args.repeats),
    }
    load = os.getloadavg()
    for name, value in seconds.items():
        print(f"{name:22s} {value:8.3f} s")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(write_result(args.name, {
        "devices": args.devices, "rounds": args.rounds, "repeats": args.repeats,
        "numbers_per_model": sum(w.size for w in current), "seconds": seconds,
        "load_average": list(load),
    }))


if __name__ == "__main__":
    main()
