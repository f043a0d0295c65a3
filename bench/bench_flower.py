"""FedIoT's Flower engines on loopback: time per round, bytes per device, a device's memory.

Nine testbed devices (scale 1.0), every device training in every round, on three engines:

- **deployment**: a real SuperLink and nine SuperNodes (``fediot.engines.flower.deployment``
  helpers, as in ``tests/engines/test_flower_deployment.py``), a ``cross_silo`` run submitted
  with ``flwr run``; round times from the run folder's ``metrics.jsonl`` (timed by the
  ServerApp), the run's status and traffic from ``flwr ls --format json``;
- **Ray simulation** (``worker_num = 2``) and the **in-process** engine (``worker_num`` 1 and 2):
  the same measurement as ``bench_scale.py`` (round 1 is a warm-up).

Traffic: Flower counts the bytes between SuperLink and SuperNodes (message and object-tree
protos, object contents; not the polls that return nothing). A run also has steps that are
not training rounds (identification, scaler statistics, threshold statistics, evaluation), so
the deployment runs twice, with ``--short-rounds`` and ``--long-rounds`` rounds, on the same
SuperLink and SuperNodes: the difference, divided by the extra rounds and the nine devices, is
what one training round costs one device each way; the shorter run minus that is the fixed
cost. The same messages are also encoded here (``records.encode_task`` / ``encode_reply``) and
their Flower objects measured, record by record, to show where bytes beyond the model go.
Target: ≤ 1.05 × the model's float32 weights each way per training round.

A third run trains the first device alone (the eight other SuperNodes idle), so its ClientApp
has the two cores to itself: a device's own step time, apart from nine devices sharing them.

Memory: each SuperNode's process tree (the SuperNode, its SuperExec and the ClientApp processes
it starts per message) is sampled from ``/proc`` every 0.2 s through both runs.

Run: ``.venv/bin/python bench/bench_flower.py`` → ``bench/results/flower.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_scale import ProcessTreeMemory, run_child
from common import write_result
from fediot.core.catalog import DEVICES, N_FEATURES
from fediot.core.config import Config
from fediot.core.federated.devices import client_ids, load_client_data
from fediot.core.federated.messages import EvaluateTask, FitTask, ModelState, ScoreTask
from fediot.core.federated.server import FedDetectServer
from fediot.core.model import build_autoencoder, get_weights
from fediot.engines.flower import deployment
from fediot.engines.flower.records import content_bytes, encode_reply, encode_task
from fediot.engines.inprocess import SequentialPool

TARGET = 1.05
"""Bytes each way per device and training round, as a multiple of the model's weights."""


def model_bytes() -> int:
    """The autoencoder's float32 weights: the sum of the arrays' ``nbytes``."""
    return sum(w.nbytes for w in get_weights(build_autoencoder(N_FEATURES, seed=0)))


# --- what each message is made of ------------------------------------------------------------

def message_breakdown(config: Config) -> dict[str, dict[str, int]]:
    """Per message kind and direction: object bytes of each record and of the whole content.

    Real payloads: the first device computes its scaler statistics, one training step,
    its threshold statistics and an evaluation.
    """
    cid = client_ids(config)[0]
    pool = SequentialPool([load_client_data(config, cid)])
    server = FedDetectServer(config)
    model = ModelState(server.initial_weights(), pool.call("scaler_stats", {cid: None})[cid])
    t = config.train_args
    fit = FitTask(model=model, server_round=1, learning_rate=t.learning_rate, epochs=t.epochs,
                  batch_size=t.batch_size, optimizer=t.client_optimizer,
                  weight_decay=t.weight_decay, proximal_mu=0.0, seed=0)
    score = ScoreTask(model)
    stats = pool.call("threshold_stats", {cid: score})[cid]
    evaluate = EvaluateTask(model, stats.mean + 3 * stats.std, config.detection_args.window)
    tasks: dict[str, Any] = {"identify": None, "scaler_stats": None, "fit": fit,
                             "threshold_stats": score, "evaluate": evaluate}
    results: dict[str, Any] = {"identify": cid}
    for method in ("scaler_stats", "fit", "threshold_stats", "evaluate"):
        results[method] = pool.call(method, {cid: tasks[method]})[cid]
    breakdown: dict[str, dict[str, int]] = {}
    for method, task in tasks.items():
        for direction, content in (("down", encode_task(method, task)),
                                   ("up", encode_reply(method, cid, results[method]))):
            parts = {key: content_bytes(record) for key, record in content.items()}
            parts["(record dict)"] = len(content.deflate())
            parts["total"] = content_bytes(content)
            breakdown[f"{method} {direction}"] = parts
    return breakdown


# --- a real deployment on loopback -----------------------------------------------------------

def run_deployment(config: Config, work: Path, short: int, long: int,
                   timeout: float, state: str) -> dict[str, Any]:
    """SuperLink + nine SuperNodes; a ``short``-round run, a ``long``-round run, then a
    two-round run of the first device alone.

    ``state``: ``file`` keeps the SuperLink's state in an SQLite file, as
    ``deployment.superlink`` does; ``memory`` drops ``--database`` (Flower's default:
    in-memory state).
    """
    port = deployment.free_port()
    address = f"127.0.0.1:{port}"
    server_home = work / "superlink"
    link = deployment.superlink(server_home, port)
    if state == "memory":
        at = link.args.index("--database")
        del link.args[at: at + 2]
    link.start()
    nodes: list[deployment.FlowerProcess] = []
    samplers: list[ProcessTreeMemory] = []
    runs: dict[str, Any] = {}
    try:
        deployment.wait_for_port("127.0.0.1", port, 60, "the SuperLink")
        deployment.write_federation(server_home, "bench", address)
        for device in DEVICES:
            node = deployment.supernode(work / f"node-{device.uci_id}", address, device.name,
                                        deployment.free_port()).start()
            nodes.append(node)
            samplers.append(ProcessTreeMemory([node.pid]).start())
        link_memory = ProcessTreeMemory([link.pid]).start()
        # "single": one device trains while the eight others idle, so nothing competes with
        # its ClientApp for the two cores: a device's own step time
        for label, rounds, devices in (("short", short, 9), ("long", long, 9),
                                       ("single", 2, 1)):
            cfg = config.with_overrides({
                "common_args.training_type": "cross_silo",
                "train_args.comm_round": rounds,
                "train_args.client_num_in_total": devices,
                "train_args.client_num_per_round": devices,
                "tracking_args.log_file_dir": str(work / "runs"),
                "tracking_args.run_name": f"bench-{label}",
            })
            started = time.perf_counter()
            status = deployment.submit_run(server_home, "bench", cfg, wait_seconds=180,
                                           timeout=timeout, log_path=work / f"run-{label}.log")
            wall = time.perf_counter() - started
            folder = work / "runs" / f"bench-{label}"
            metrics = folder / "metrics.jsonl"
            lines = metrics.read_text().splitlines() if metrics.exists() else []
            records = [json.loads(line) for line in lines]
            runs[label] = {
                "rounds": rounds,
                "status": status.get("status"),
                "wall_seconds": round(wall, 1),
                "round_seconds": [round(r["seconds"], 2) for r in records],
                "answered": [len(r["answered"]) for r in records],
                "complete": len(records) == rounds and all(
                    len(r["answered"]) == devices for r in records),
                "inbound_bytes": status["network-traffic"]["inbound-bytes"],
                "outbound_bytes": status["network-traffic"]["outbound-bytes"],
                "compute_seconds": status.get("compute-time"),
            }
            if not runs[label]["complete"]:
                print(f"WARNING: devices missing from rounds: answered {runs[label]['answered']}"
                      " (the byte figures below then undercount)", flush=True)
            print(f"deployment, {rounds} rounds: {runs[label]['status']}, "
                  f"rounds {runs[label]['round_seconds']} s, in {runs[label]['inbound_bytes']:,}"
                  f" B, out {runs[label]['outbound_bytes']:,} B", flush=True)
        link_memory.stop()
    finally:
        for sampler in samplers:
            sampler.stop()
        for node in nodes:
            node.stop()
        link.stop()
    return {
        "runs": runs,
        "device_peak_tree_rss_mb": [round(s.peak_tree_rss_bytes_ / 2**20) for s in samplers],
        "device_peak_tree_pss_mb": [round(s.peak_tree_bytes_ / 2**20) for s in samplers],
        "device_peak_process_mb": [round(s.peak_process_bytes_ / 2**20) for s in samplers],
        "device_peak_process_name": sorted({s.peak_process_name_ for s in samplers}),
        "superlink_peak_tree_rss_mb": round(link_memory.peak_tree_rss_bytes_ / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short-rounds", type=int, default=1)
    parser.add_argument("--long-rounds", type=int, default=4)
    parser.add_argument("--sim-rounds", type=int, default=3,
                        help="measured rounds of the Ray and in-process engines (+1 warm-up)")
    parser.add_argument("--scale", type=float, default=1.0, help="testbed scale")
    parser.add_argument("--timeout", type=float, default=1200.0, help="seconds per run")
    parser.add_argument("--superlink-state", choices=("memory", "file"), default="memory",
                        help="SuperLink state in memory (default) or in deployment.py's "
                             "SQLite file, which lost replies here (see BENCHMARKS.md)")
    args = parser.parse_args()
    if args.long_rounds <= args.short_rounds:
        parser.error("--long-rounds must exceed --short-rounds")
    config = Config().with_overrides({"data_args.testbed_scale": args.scale})
    size = model_bytes()
    work = Path(tempfile.mkdtemp(prefix="fediot-bench-flower-"))
    load_before = os.getloadavg()[0]

    breakdown = message_breakdown(config)
    # the quick simulated engines first, so a failure there costs no deployment run
    sim_args = argparse.Namespace(rounds=args.sim_rounds, per_round=0, scale=args.scale,
                                  timeout=args.timeout, ray_in_flight=0)
    engines = {engine: run_child(1, engine, sim_args, work)
               for engine in ("ray-2", "inprocess-1", "inprocess-2")}
    dep = run_deployment(config, work, args.short_rounds, args.long_rounds, args.timeout,
                         args.superlink_state)
    short, long = dep["runs"]["short"], dep["runs"]["long"]
    extra = (long["rounds"] - short["rounds"]) * len(DEVICES)
    per_round = {
        "down": (long["outbound_bytes"] - short["outbound_bytes"]) / extra,
        "up": (long["inbound_bytes"] - short["inbound_bytes"]) / extra,
    }
    fixed = {
        "down": short["outbound_bytes"] / len(DEVICES) - short["rounds"] * per_round["down"],
        "up": short["inbound_bytes"] / len(DEVICES) - short["rounds"] * per_round["up"],
    }
    whole_run = {
        "down": long["outbound_bytes"] / len(DEVICES) / long["rounds"],
        "up": long["inbound_bytes"] / len(DEVICES) / long["rounds"],
    }

    load_after = os.getloadavg()[0]

    measured = long["round_seconds"][1:] or long["round_seconds"]
    single = dep["runs"]["single"]["round_seconds"]
    framing = {"down": per_round["down"] - breakdown["fit down"]["total"],
               "up": per_round["up"] - breakdown["fit up"]["total"]}
    print(f"\nmodel: {size:,} bytes of float32 weights; 9 devices, testbed scale {args.scale}")
    print(f"{'engine':34} {'best s/round':>12} {'median s/round':>14}")
    print(f"{'deployment, 9 SuperNodes, 2 cores':34} {min(measured):>12.2f} "
          f"{statistics.median(measured):>14.2f}")
    print(f"{'deployment, 1 device training':34} {min(single):>12.2f} "
          f"{statistics.median(single):>14.2f}")
    for engine, row in engines.items():
        if row.get("failed"):
            print(f"{engine:34} FAILED: {row['error'][:120]}")
        else:
            print(f"{engine:34} {row['best_round_seconds']:>12.2f} "
                  f"{row['median_round_seconds']:>14.2f}")
    print(f"\n{'bytes per device':34} {'down (link→node)':>17} {'up (node→link)':>15}")
    for label, figures in (("per training round (marginal)", per_round),
                           ("fixed per run (other steps)", fixed),
                           (f"whole {long['rounds']}-round run / rounds", whole_run)):
        print(f"{label:34} {figures['down']:>12,.0f} {figures['down'] / size:>4.2f}× "
              f"{figures['up']:>10,.0f} {figures['up'] / size:>4.2f}×")
    print(f"{'training round: protocol framing':34} {framing['down']:>12,.0f} "
          f"{framing['down'] / size:>4.2f}× {framing['up']:>10,.0f} {framing['up'] / size:>4.2f}×")
    print("\nencoded message objects (bytes):")
    for kind, parts in breakdown.items():
        print(f"  {kind:22} {parts['total']:>8,}  " + ", ".join(
            f"{k} {v:,}" for k, v in parts.items() if k != "total"))
    print(f"\ndevice (SuperNode tree) peak: RSS sum {max(dep['device_peak_tree_rss_mb'])} MB, "
          f"PSS {max(dep['device_peak_tree_pss_mb'])} MB, largest process "
          f"{max(dep['device_peak_process_mb'])} MB ({', '.join(dep['device_peak_process_name'])})")

    ok = {d: bool(per_round[d] <= TARGET * size) for d in ("down", "up")}
    path = write_result("flower", {
        "devices": len(DEVICES), "testbed_scale": args.scale, "model_bytes": size,
        "superlink_state": args.superlink_state,
        "load_average_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
        "deployment": {**dep, "best_round_seconds": min(measured),
                       "median_round_seconds": statistics.median(measured),
                       "single_device_round_seconds": single},
        "engines": engines,
        "bytes_per_device": {
            "per_training_round": {k: round(v) for k, v in per_round.items()},
            "per_training_round_over_model": {k: round(v / size, 4)
                                              for k, v in per_round.items()},
            "protocol_framing_per_training_round": {k: round(v) for k, v in framing.items()},
            "fixed_per_run": {k: round(v) for k, v in fixed.items()},
            "whole_run_per_round": {k: round(v) for k, v in whole_run.items()},
            "whole_run_per_round_over_model": {k: round(v / size, 4)
                                               for k, v in whole_run.items()},
        },
        "message_objects": breakdown,
        "target_max_ratio": TARGET,
        "meets_target": ok,
        "work_dir": str(work),
    })
    print(f"written {path}")


if __name__ == "__main__":
    main()
