"""In-process engine overhead: FedDetect rounds vs plain training of the same total work.

Both sides train the same devices, rounds, epochs and batch size from the same weights, on the
same scaled rows, with one torch thread. The plain side is a bare loop of ``train_local`` calls
(no messages, no aggregation, no bookkeeping); the engine side is ``FedDetectServer`` rounds
through the sequential pool (``worker_num = 1``) and through worker processes
(``worker_num = 2``, this machine's cores). Target: engine ≤ 1.15 × plain.

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
    parser.add_argument("--scale", type=float, default=0.5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = Config().with_overrides({
        "train_args.comm_round": args.rounds, "data_args.testbed_scale": args.scale,
        "train_args.learning_rate": 0.003,
    })
    ids = client_ids(config)
    source = open_dataset(dataset_root(config))
    clients = [load_client_data(config, cid, source) for cid in ids]

    results: dict[str, float] = {}
    for workers in (1, 2):
        cfg = config.with_overrides({"device_args.worker_num": workers})
        server = FedDetectServer(cfg)
        pool = make_pool(cfg, ids)
        try:
            model = ModelState(server.initial_weights(), server.fit_scaler(pool))
            start = time.perf_counter()
            for r in range(1, args.rounds + 1):
                model, _ = server.train_round(pool, model, r)
            results[f"engine_workers_{workers}"] = time.perf_counter() - start
        finally:
            pool.close()

    # plain: the same training calls in a bare loop
    server = FedDetectServer(config)
    weights = server.initial_weights()
    scaler_stats = server.fit_scaler(make_pool(config, ids))
    scaler = FeatureScaler.from_stats(scaler_stats)
    scaled = [scaler.transform(c.train) for c in clients]
    t = config.train_args
    model_ = build_autoencoder(N_FEATURES, seed=0)
    start = time.perf_counter()
    for r in range(1, args.rounds + 1):
        for rows in scaled:
            set_weights(model_, weights)
            train_local(model_, rows, epochs=t.epochs, batch_size=t.batch_size,
                        learning_rate=server.schedule.at(r), seed=r)
    results["plain"] = time.perf_counter() - start

    samples = sum(len(c.train) for c in clients) * args.rounds * t.epochs
    print(f"{len(ids)} devices, {args.rounds} rounds, {samples:,} training samples")
    for name, seconds in results.items():
        print(f"{name:18} {seconds:7.2f} s   {samples / seconds:>10,.0f} samples/s   "
              f"{seconds / results['plain']:.3f} × plain")
    ratio = results["engine_workers_1"] / results["plain"]
    path = write_result("engine", {
        "devices": len(ids), "rounds": args.rounds, "testbed_scale": args.scale,
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
