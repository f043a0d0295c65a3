"""In-process engine overhead: FedDetect rounds vs plain training of the same total work.

Both sides train the same devices, rounds, epochs and batch size from the same weights, on the
same scaled rows, with one torch thread. The plain side is a bare loop of ``train_local`` calls
(no messages, no aggregation, no bookkeeping); the engine side is ``FedDetectServer`` rounds
through the sequential pool (``worker_num = 1``) and through worker processes
(``worker_num = 2``, this machine's cores). Target: engine ≤ 1.15 × plain.

Each figure is the best of ``--repeats`` timings of ``--rounds`` rounds, after one warm-up round
(the machine is shared and noisy; the best run is the least disturbed one).

Run: ``.venv/bin/python bench/bench_engine.py`` → ``bench/results/engine.json``.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import write_result
from fediot.core.catalog import N_FEATURES
from fediot.core.config import Config
from fediot.core.data.layouts import open_dataset
from fediot.core.federated.devices import client_ids, dataset_root, load_client_data
from fediot.core.federated.messages import ModelState
from fediot.core.federated.server import FedDetectServer
from fediot.core.model import (
    FeatureScaler,
    build_autoencoder,
    set_weights,
    train_local,
)
from fediot.engines.inprocess import make_pool


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = Config().with_overrides({
        "train_args.comm_round": args.rounds + 1, "data_args.testbed_scale": args.scale,
    })
    ids = client_ids(config)
    source = open_dataset(dataset_root(config))
    clients = [load_client_data(config, cid, source) for cid in ids]

    results: dict[str, float] = {}
    t = config.train_args
    # plain: the same training calls in a bare loop (warm-up round first, as for the engine)
    server = FedDetectServer(config)
    weights = server.initial_weights()
    pool = make_pool(config, ids)
    scaler = FeatureScaler.from_stats(server.fit_scaler(pool))
    pool.close()
    scaled = [scaler.transform(c.train) for c in clients]
    model_ = build_autoencoder(N_FEATURES, seed=0)

    def plain_round(r: int) -> None:
        for rows in scaled:
            set_weights(model_, weights)
            train_local(model_, rows, epochs=t.epochs, batch_size=t.batch_size,
                        learning_rate=server.schedule.at(r), seed=r)

    plain_round(1)
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        for r in range(2, args.rounds + 2):
            plain_round(r)
        best = min(best, time.perf_counter() - start)
    results["plain"] = best

    for workers in (1, 2):
        cfg = config.with_overrides({"device_args.worker_num": workers})
        server = FedDetectServer(cfg)
        pool = make_pool(cfg, ids)
        try:
            model = ModelState(server.initial_weights(), server.fit_scaler(pool))
            model, _ = server.train_round(pool, model, 1)  # warm-up: scales the rows once
            start_model, best = model, float("inf")
            for _ in range(args.repeats):
                model, start = start_model, time.perf_counter()
                for r in range(2, args.rounds + 2):
                    model, _ = server.train_round(pool, model, r)
                best = min(best, time.perf_counter() - start)
            results[f"engine_workers_{workers}"] = best
        finally:
            pool.close()

    samples = sum(len(c.train) for c in clients) * args.rounds * t.epochs
    print(f"{len(ids)} devices, {args.rounds} rounds, {samples:,} training samples")
    for name, seconds in results.items():
        print(f"{name:18} {seconds:7.2f} s   {samples / seconds:>10,.0f} samples/s   "
              f"{seconds / results['plain']:.3f} × plain")
    ratio = results["engine_workers_1"] / results["plain"]
    path = write_result("engine", {
        "devices": len(ids), "rounds": args.rounds, "testbed_scale": args.scale,
        "repeats": args.repeats, "batch_size": t.batch_size,
        "training_samples": samples,
        "seconds": {k: round(v, 3) for k, v in results.items()},
        "engine_over_plain_workers_1": round(ratio, 3),
        "engine_over_plain_workers_2": round(results["engine_workers_2"] / results["plain"], 3),
        "target_max_ratio": 1.15,
        "meets_target": bool(ratio <= 1.15),
    })
    print(f"written {path}")


if __name__ == "__main__":
    main()
