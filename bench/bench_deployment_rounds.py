"""Per-round time of a real deployment on loopback, TLS and device keys: Flower's subprocess
mode (a fresh ``flwr-clientapp`` process per task) against FedIoT's warm device workers.

For each device count (default 1, 3 and 9) and each ``fediot client --worker`` mode, the
benchmark makes a CA, a server certificate and one key per device (``fediot.engines.flower.
certificates``), starts the devices with ``fediot client`` and runs ``fediot server`` with the
deployment's own configuration (``config/fedml_config.yaml``: the testbed at scale 1, every
device training every round) for ``--rounds`` rounds with early stopping off. Round times come
from the run folder's ``metrics.jsonl`` (timed by the ServerApp, from sending the training
tasks to aggregating the replies); the median is over every round. In warm mode each device's
worker log gives its handler time per task.

Why a warm round is not much shorter than ~3 s: Flower 1.42's SuperNode polls the SuperLink
every 3 s when idle and the ServerApp checks for replies every 3 s (both hard-coded), and the
SuperNode checks every 0.5 s for the ClientApp's reply. The task runner's own poll (the warm
worker's, or ``FLWR_SUPEREXEC_TASK_POLL_INTERVAL`` for Flower's SuperExec) is set to
``fediot.engines.flower.TASK_POLL_SECONDS``.

Run: ``.venv/bin/python bench/bench_deployment_rounds.py [--devices 1 3 9] [--rounds 6]``
→ ``bench/results/deployment_rounds.json`` (each configuration is added to what the file
already holds, so device counts can be measured one after another).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import RESULTS, write_result
from fediot.core.catalog import DEVICES
from fediot.engines.flower import TASK_POLL_SECONDS, deployment
from fediot.engines.flower import certificates as tls

REPO = Path(__file__).resolve().parents[1]
FEDIOT = Path(sys.executable).with_name("fediot")
MODES = ("subprocess", "warm")
TASK_LINE = re.compile(r"^task \d+ (\S+) pid (\d+) \S+ ([0-9.]+) s$")


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages (what ``uptime`` prints)."""
    return [round(value, 2) for value in os.getloadavg()]


def measure(devices: int, mode: str, rounds: int, workdir: Path) -> dict[str, Any]:
    """One deployment run of ``devices`` devices in ``mode``; its round times and loads."""
    certs = workdir / "certs"
    if not certs.exists():
        tls.create_ca(certs)
        tls.create_server_certificate(certs, ["127.0.0.1"])
        for device in DEVICES:
            tls.create_device_key(certs, device.uci_id)
    run_dir = workdir / f"{devices}-{mode}"
    port = deployment.free_port()
    used = DEVICES[:devices]
    admitted = run_dir / "admitted"
    admitted.mkdir(parents=True)
    for device in used:  # the server admits exactly the devices of this run
        public = tls.device_key_paths(certs, device.uci_id)[1]
        (admitted / public.name).write_bytes(public.read_bytes())
    load_before = load_average()
    clients = []
    for device in used:
        output = (run_dir / f"client-{device.uci_id}.log").open("wb")
        clients.append(subprocess.Popen(
            [str(FEDIOT), "client", "--device", str(device.uci_id), "--server",
             f"127.0.0.1:{port}", "--root-certificates", str(certs / "ca.crt"),
             "--node-key", str(tls.device_key_paths(certs, device.uci_id)[0]),
             "--port", str(deployment.free_port()), "--worker", mode,
             "--flwr-home", str(run_dir / f"client-{device.uci_id}"), "--wait", "900"],
            stdout=output, stderr=subprocess.STDOUT, cwd=REPO))
    started = time.monotonic()
    try:
        server = subprocess.run(
            [str(FEDIOT), "server", "--config", str(REPO / "config" / "fedml_config.yaml"),
             "--port", str(port), "--certificates", str(certs), "--node-keys", str(admitted),
             "--flwr-home", str(run_dir / "server"), "--wait", "600", "--timeout", "7200",
             "--set", f"train_args.client_num_in_total={devices}",
             "--set", f"train_args.client_num_per_round={devices}",
             "--set", f"train_args.comm_round={rounds}",
             "--set", "validation_args.early_stopping_patience=0",
             "--set", f"tracking_args.log_file_dir={run_dir / 'runs'}"],
            capture_output=True, text=True, timeout=7800, check=False, cwd=REPO,
            env={**os.environ, "COLUMNS": "160"})
    finally:
        for client in clients:
            deployment.stop_command(client)
    wall = time.monotonic() - started
    if server.returncode != 0:
        raise SystemExit(f"{devices} devices, {mode}: the server failed:\n"
                         f"{server.stdout[-2000:]}\n{server.stderr[-2000:]}")
    metrics = next((run_dir / "runs").glob("*/metrics.jsonl"))
    seconds = [json.loads(line)["seconds"] for line in metrics.read_text().splitlines()]
    handler: list[float] = []
    worker_pids: dict[str, int] = {}
    for device in used:
        worker_log = (run_dir / f"client-{device.uci_id}" / "logs"
                      / f"worker-{deployment.safe_name(device.name)}.log")
        if worker_log.exists():
            tasks = [m.groups() for m in
                     map(TASK_LINE.match, worker_log.read_text().splitlines()) if m]
            handler += [float(s) for kind, _, s in tasks if kind == "train"]
            worker_pids[device.name] = len({pid for _, pid, _ in tasks})
    return {
        "devices": devices, "mode": mode, "rounds": len(seconds),
        "round_seconds": [round(s, 3) for s in seconds],
        "median_round_seconds": round(statistics.median(seconds), 3),
        "median_round_seconds_after_first": round(statistics.median(seconds[1:]), 3)
        if len(seconds) > 1 else None,
        "train_handler_seconds": [round(s, 3) for s in handler],
        "worker_processes_per_device": worker_pids,
        "run_wall_seconds": round(wall, 1),
        "load_average_before": load_before, "load_average_after": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 3, 9])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    previous = RESULTS / "deployment_rounds.json"
    results: dict[str, Any] = {}
    if previous.exists():
        results = {f"{r['devices']}-{r['mode']}": r
                   for r in json.loads(previous.read_text()).get("runs", [])}
    with tempfile.TemporaryDirectory(prefix="bench-deployment-") as tmp:
        for devices in args.devices:
            for mode in args.modes:
                record = measure(devices, mode, args.rounds, Path(tmp))
                results[f"{devices}-{mode}"] = record
                print(json.dumps({k: v for k, v in record.items()
                                  if k != "train_handler_seconds"}), flush=True)
                write_result("deployment_rounds", {
                    "command": "bench/bench_deployment_rounds.py " + " ".join(sys.argv[1:]),
                    "task_poll_seconds": TASK_POLL_SECONDS,
                    "runs": sorted(results.values(),
                                   key=lambda r: (r["devices"], r["mode"]))})


if __name__ == "__main__":
    main()
