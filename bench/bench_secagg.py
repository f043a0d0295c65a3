"""Cost per round of secure aggregation (``comm_args.secure_aggregation``).

For n devices and the autoencoder's weights, one protocol round (setup, key sharing,
masking, unmasking) is run in this process, timed per stage (all devices' work summed, and
the server's), and every message is encoded as the Flower engine sends it to measure its
bytes (:func:`fediot.engines.flower.records.content_bytes`), against a clear training step's
task and reply. With ``drop`` one device vanishes after sharing keys (its masks are rebuilt).
Training itself is not included (it is the same with and without).

    PYTHONPATH=src python bench/bench_secagg.py
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from common import write_result
from fediot.core.catalog import N_FEATURES
from fediot.core.federated.messages import FitReport, FitTask, ModelState, SystemStats
from fediot.core.federated.secure_aggregation import (
    Quantizer,
    SecAggDevice,
    SecAggReply,
    SecAggServer,
    default_threshold,
)
from fediot.core.model import ScalerStats, build_autoencoder, get_weights
from fediot.engines.flower.records import content_bytes, encode_reply, encode_task


def one_round(n: int, drop: bool) -> dict[str, Any]:
    weights = get_weights(build_autoencoder(N_FEATURES, seed=0))
    length = sum(w.size for w in weights)
    model = ModelState(weights, ScalerStats.from_data(np.ones((4, N_FEATURES))))
    fit = FitTask(model=model, server_round=1, learning_rate=0.01, epochs=1, batch_size=64,
                  optimizer="adam", weight_decay=0.0, proximal_mu=0.0, seed=0)
    report = FitReport("d", [], 1000, 0.1, SystemStats(1.0, 1.0, 1, 1), 0.1, 10)
    ids = [f"d{i:02d}" for i in range(n)]
    q = Quantizer()
    devices = {c: SecAggDevice(c) for c in ids}
    server = SecAggServer(1, ids, default_threshold(n))
    seconds = {"device": 0.0, "server": 0.0}
    down = {c: 0 for c in ids}
    up = {c: 0 for c in ids}

    def timed(who: str, f: Any, *args: Any) -> Any:
        start = time.perf_counter()
        out = f(*args)
        seconds[who] += time.perf_counter() - start
        return out

    def stage(tasks: dict[str, Any], run: Any) -> dict[str, SecAggReply]:
        replies = {}
        for c, task in tasks.items():
            down[c] += content_bytes(encode_task("secagg", task))
            reply = timed("device", run, c, task)
            if reply is None:
                continue
            up[c] += content_bytes(encode_reply("secagg", c, reply))
            replies[c] = reply
        return replies

    vectors = {c: q.encode(np.concatenate([w.ravel() for w in weights]), 1000) for c in ids}
    setup = stage(timed("server", server.setup_tasks), lambda c, t: devices[c].setup(t))
    shared = stage(timed("server", server.share_keys_tasks, setup),
                   lambda c, t: devices[c].share_keys(t))
    victim = ids[-1] if drop else None

    def mask(c: str, t: Any) -> SecAggReply | None:
        if c == victim:
            return None
        masked = devices[c].mask(t, vectors[c])
        return SecAggReply("mask", {}, masked.masked, report)

    masked = stage(timed("server", server.mask_tasks, shared, dict.fromkeys(ids, fit)), mask)
    unmask = stage(timed("server", server.unmask_tasks, masked, length),
                   lambda c, t: devices[c].unmask(t))
    timed("server", server.unmask, unmask)
    clear_down = content_bytes(encode_task("fit", fit))
    clear_up = content_bytes(encode_reply("fit", "d", FitReport(
        "d", weights, 1000, 0.1, SystemStats(1.0, 1.0, 1, 1), 0.1, 10)))
    return {"devices": n, "dropped": int(drop), "parameters": length,
            "threshold": server.threshold,
            "device_seconds_per_device": seconds["device"] / n,
            "server_seconds": seconds["server"],
            "bytes_down_per_device": sum(down.values()) / n,
            "bytes_up_per_device": sum(up.values()) / (n - int(drop)),
            "clear_fit_bytes_down": clear_down, "clear_fit_bytes_up": clear_up,
            "messages_per_device": 4}


def main() -> None:
    rows = [one_round(n, drop) for n in (3, 9, 27) for drop in (False, True)]
    for row in rows:
        ms_device = row["device_seconds_per_device"] * 1e3
        ms_server = row["server_seconds"] * 1e3
        print(f"n={row['devices']:2d} drop={row['dropped']} device {ms_device:7.1f} ms  "
              f"server {ms_server:7.1f} ms  down {row['bytes_down_per_device']:9.0f} B "
              f"(clear {row['clear_fit_bytes_down']})  up {row['bytes_up_per_device']:9.0f} B "
              f"(clear {row['clear_fit_bytes_up']})")
    print(write_result("secagg", {"rounds": rows}))


if __name__ == "__main__":
    main()
