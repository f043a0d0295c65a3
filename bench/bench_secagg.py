"""Cost per step of secure aggregation (``comm_args.secure_aggregation``).

For n devices and each step it covers (training: the autoencoder's weights; the scaler step:
n, Σx, Σx² over 115 features; the threshold step: n, Σe, Σe², 800 histogram bins), one
protocol run (setup, key sharing, masking, unmasking, the server's decoding of the sum) is
timed in this process (all devices' work summed, and the server's), and every message is
encoded as the Flower engine sends it to measure its bytes
(:func:`fediot.engines.flower.records.content_bytes`), against the clear step's task and
reply. With ``drop`` one device vanishes after sharing keys (its masks are rebuilt).
Training and scoring themselves are not included (the same with and without).

With ``--deployment``, the same small run (three testbed devices, ``--rounds`` rounds, a
global threshold) is also run in clear and under secure aggregation over a real loopback
deployment (SuperLink and three SuperNodes), where each secure step is four message exchanges
instead of one.

    PYTHONPATH=src python bench/bench_secagg.py [--deployment]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from common import write_result
from fediot.core.catalog import DEVICES, N_FEATURES
from fediot.core.config import Config
from fediot.core.federated.messages import (
    DataReport,
    FitReport,
    FitTask,
    ModelState,
    ScalerReport,
    ScoreTask,
    SystemStats,
)
from fediot.core.federated.secure_aggregation import (
    U64,
    Quantizer,
    SecAggDevice,
    SecAggReply,
    SecAggServer,
    default_threshold,
)
from fediot.core.federated.secure_statistics import (
    errors_from_sum,
    errors_vector,
    scaler_from_sum,
    scaler_vector,
)
from fediot.core.model import ErrorStats, ScalerStats, build_autoencoder, get_weights
from fediot.engines.flower import deployment
from fediot.engines.flower.records import content_bytes, encode_reply, encode_task


@dataclass(frozen=True)
class Step:
    """One step as secure aggregation carries it: each device's vector, the mask stage's
    inner task and clear report, and the clear step's task and reply (to compare bytes)."""

    name: str
    vector: U64
    inner: Any
    report: Any
    clear_task: Any
    clear_reply: Any
    extra: dict[str, Any]
    decode: Any  # the server's decoding of the unmasked sum


def steps() -> dict[str, Step]:
    """The three steps secure aggregation covers, with the real model and 1,000 rows."""
    rng = np.random.default_rng(0)
    weights = get_weights(build_autoencoder(N_FEATURES, seed=0))
    rows = np.abs(rng.normal(size=(1000, N_FEATURES))) * 10.0 ** rng.uniform(0, 9, N_FEATURES)
    scaler = ScalerStats.from_data(rows)
    model = ModelState(weights, scaler)
    fit = FitTask(model=model, server_round=1, learning_rate=0.01, epochs=1, batch_size=64,
                  optimizer="adam", weight_decay=0.0, proximal_mu=0.0, seed=0)
    report = FitReport("d", [], 1000, 0.1, SystemStats(1.0, 1.0, 1, 1), 0.1, 10)
    q = Quantizer()
    data = DataReport(train=1000, opt=500)
    errors = ErrorStats.from_errors(np.exp(rng.normal(-3, 2, size=500)))
    length = sum(w.size for w in weights)
    return {
        "fit": Step("fit", q.encode(np.concatenate([w.ravel() for w in weights]), 1000), fit,
                    report, fit, FitReport("d", weights, 1000, 0.1, SystemStats(1.0, 1.0, 1, 1),
                                           0.1, 10),
                    {"clipping_range": q.clipping_range, "levels": q.levels},
                    lambda total: q.decode(total, 1000)[:length]),
        "scaler_stats": Step("scaler_stats", scaler_vector(scaler), None, data, None,
                             ScalerReport(scaler, data), {}, scaler_from_sum),
        "threshold_stats": Step("threshold_stats", errors_vector(errors), ScoreTask(model),
                                None, ScoreTask(model), errors, {}, errors_from_sum),
    }


def one_round(step: Step, n: int, drop: bool) -> dict[str, Any]:
    length = len(step.vector)
    ids = [f"d{i:02d}" for i in range(n)]
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

    setup = stage(timed("server", server.setup_tasks), lambda c, t: devices[c].setup(t))
    shared = stage(timed("server", server.share_keys_tasks, setup),
                   lambda c, t: devices[c].share_keys(t))
    victim = ids[-1] if drop else None

    def mask(c: str, t: Any) -> SecAggReply | None:
        if c == victim:
            return None
        masked = devices[c].mask(t, step.vector)
        return SecAggReply("mask", {}, masked.masked, step.report)

    def mask_tasks() -> dict[str, Any]:
        payload = {"step": step.name, **step.extra}  # as FedDetectServer._secure_sum sends
        return {c: replace(t, payload={**t.payload, **payload}) for c, t in
                server.mask_tasks(shared, dict.fromkeys(ids, step.inner)).items()}

    masked = stage(timed("server", mask_tasks), mask)
    unmask = stage(timed("server", server.unmask_tasks, masked, length),
                   lambda c, t: devices[c].unmask(t))
    timed("server", lambda: step.decode(server.unmask(unmask)))
    clear_down = content_bytes(encode_task(step.name, step.clear_task))
    clear_up = content_bytes(encode_reply(step.name, "d", step.clear_reply))
    return {"step": step.name, "devices": n, "dropped": int(drop), "words": length,
            "threshold": server.threshold,
            "device_seconds_per_device": seconds["device"] / n,
            "server_seconds": seconds["server"],
            "bytes_down_per_device": sum(down.values()) / n,
            "bytes_up_per_device": sum(up.values()) / (n - int(drop)),
            "clear_bytes_down": clear_down, "clear_bytes_up": clear_up,
            "messages_per_device": 4}


# --- a real deployment on loopback -----------------------------------------------------------

def run_deployment(rounds: int, scale: float, timeout: float,
                   secure_first: bool) -> dict[str, Any]:
    """The same run in clear and under secure aggregation (every step: the scaler, the rounds,
    the global threshold) on one SuperLink and three SuperNodes of this machine, in either
    order (the machine is shared: its load is recorded around each run); round times from the
    run folder's ``metrics.jsonl``, the wall time of each whole run."""
    order = [("clear", False), ("secure", True)]
    if secure_first:
        order.reverse()
    work = Path(tempfile.mkdtemp(prefix="fediot-bench-secagg-"))
    port = deployment.free_port()
    address = f"127.0.0.1:{port}"
    home = work / "superlink"
    link = deployment.superlink(home, port)
    at = link.args.index("--database")  # in-memory state, as bench_flower.py runs it
    del link.args[at: at + 2]
    link.start()
    nodes: list[deployment.FlowerProcess] = []
    runs: dict[str, Any] = {}
    try:
        deployment.wait_for_port("127.0.0.1", port, 60, "the SuperLink")
        deployment.write_federation(home, "bench", address)
        nodes = [deployment.supernode(work / f"node-{d.uci_id}", address, d.name,
                                      deployment.free_port()).start() for d in DEVICES[:3]]
        for label, secure in order:
            config = Config().with_overrides({
                "common_args.training_type": "cross_silo", "data_args.testbed_scale": scale,
                "train_args.comm_round": rounds, "train_args.client_num_in_total": 3,
                "train_args.client_num_per_round": 3,
                "detection_args.threshold_mode": "global",
                "comm_args.secure_aggregation": secure,
                "tracking_args.log_file_dir": str(work / "runs"),
                "tracking_args.run_name": f"bench-{label}"})
            started, load = time.perf_counter(), os.getloadavg()[0]
            status = deployment.submit_run(home, "bench", config, wait_seconds=180,
                                           timeout=timeout, log_path=work / f"run-{label}.log")
            metrics = work / "runs" / f"bench-{label}" / "metrics.jsonl"
            records = ([json.loads(line) for line in metrics.read_text().splitlines()]
                       if metrics.exists() else [])
            runs[label] = {"status": status.get("status"),
                           "wall_seconds": round(time.perf_counter() - started, 1),
                           "round_seconds": [round(r["seconds"], 1) for r in records],
                           "answered": [len(r["answered"]) for r in records],
                           "load_average_1min": [round(load, 2),
                                                 round(os.getloadavg()[0], 2)]}
            print(f"deployment, {label}: {runs[label]}", flush=True)
    finally:
        for node in nodes:
            node.stop()
        link.stop()
    return {"devices": 3, "rounds": rounds, "testbed_scale": scale, "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deployment", action="store_true",
                        help="also time a clear and a secure run over a loopback deployment")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the deployment runs")
    parser.add_argument("--scale", type=float, default=0.05, help="testbed scale")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per run")
    parser.add_argument("--secure-first", action="store_true",
                        help="run the secure deployment run before the clear one")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = [one_round(step, n, drop) for step in steps().values()
            for n in (3, 9, 27) for drop in (False, True)]
    for row in rows:
        ms_device = row["device_seconds_per_device"] * 1e3
        ms_server = row["server_seconds"] * 1e3
        print(f"{row['step']:15s} n={row['devices']:2d} drop={row['dropped']} "
              f"device {ms_device:7.1f} ms  server {ms_server:7.1f} ms  "
              f"down {row['bytes_down_per_device']:9.0f} B (clear {row['clear_bytes_down']})  "
              f"up {row['bytes_up_per_device']:9.0f} B (clear {row['clear_bytes_up']})")
    result: dict[str, Any] = {"rounds": rows}
    if args.deployment:
        result["deployment"] = run_deployment(args.rounds, args.scale, args.timeout,
                                              args.secure_first)
    result["load_average_1min"] = {"before": load_before, "after": os.getloadavg()[0]}
    print(write_result("secagg", result))


if __name__ == "__main__":
    main()
