"""Hundreds of virtual devices: training rounds per second on the in-process and Ray engines.

Each N-BaIoT testbed device's rows are cut into ``k`` consecutive blocks
(``data_args.virtual_devices_per_device = k``), giving 9·k devices: 9, 90 and 900 here. Every
device trains in every round (``client_num_per_round = client_num_in_total``) unless
``--per-round`` caps it. Engines: in-process with ``worker_num`` 1 and 2, and Flower's Ray
simulation with ``worker_num`` 2 (two ClientApp actors on this machine's two cores).

Each (devices, engine) pair runs in a child process of its own (a crashed or stuck engine
cannot take the others down; its peak memory is its own), for one warm-up round plus
``--rounds`` measured rounds, followed by FedDetect's threshold and evaluation steps. Figures:
the best and the median measured round (``RoundRecord.seconds``, timed at the server), rounds
per second from the best one, the set-up time before round 1 (data, scaler statistics, Ray
start-up and device identification) and the peak resident memory of the child's process tree
(the child, its workers and Ray's processes: summed ``Pss``), sampled from ``/proc`` every 0.2 s.

The server process's CPU time per measured round is reported too (for Ray: the simulation
runtime, which also delivers the messages). ``--ray-in-flight 1000000`` sends each step's
messages all at once, as before ``ray_simulation.InFlightLimit``, for comparison.

Run: ``.venv/bin/python bench/bench_scale.py`` → ``bench/results/scale.json``.
Ray's ``ray stop`` stops every Ray process on the machine: do not run this while anything else
calls it (the Ray tests do).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common import REPO, write_result

ENGINES: dict[str, tuple[str, int, dict[str, Any]]] = {
    "inprocess-1": ("inprocess", 1, {}),
    "inprocess-2": ("inprocess", 2, {}),
    "ray-2": ("ray", 2, {}),
    "vectorised-exact": ("vectorised", 1, {"device_args.vectorised_threads": 1}),
    "vectorised-fast": ("vectorised", 1, {"device_args.vectorised_shuffle": "fast",
                                          "device_args.vectorised_threads": 1}),
    "vectorised-exact-2": ("vectorised", 2, {}),
    "vectorised-exact-2t": ("vectorised", 1, {"device_args.vectorised_threads": 2}),
    "vectorised-fast-2t": ("vectorised", 1, {"device_args.vectorised_shuffle": "fast",
                                              "device_args.vectorised_threads": 2}),
}
"""Engine label → (``comm_args.backend``, ``device_args.worker_num``, other overrides).
``vectorised-exact``/``-fast``: one process, one thread; ``-2``: two worker processes (one
thread each); ``-2t``: one process, two threads (the default on a 2-core machine)."""

DEFAULT_ENGINES = ["inprocess-1", "inprocess-2", "ray-2"]


# --- memory of a process tree, from /proc ---------------------------------------------------

def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc/<pid>/task/*/children``)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the task ended while we looked
            continue
    return found


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants alive now."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += _children(current)
    return tree


def _proc_kib(pid: int, key: str, table: str = "status") -> int:
    """``key`` (kB) of ``/proc/<pid>/<table>``; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{table}").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass
class ProcessTreeMemory:
    """Samples the resident memory of a process and its descendants in a background thread.

    Parameters
    ----------
    pids
        Roots of the trees to follow (each with all its descendants).
    interval
        Seconds between samples (default 0.2).

    After :meth:`stop`: ``peak_tree_bytes_`` is the largest summed proportional set size
    (``Pss``: shared pages, such as the memory-mapped dataset and the libraries, split between
    the processes mapping them, so the sum is what the tree really occupies) seen at one
    sample; ``peak_tree_rss_bytes_`` the largest summed ``VmRSS`` (shared pages counted once per
    process: what the tree would need alone on a machine of its own, an upper bound);
    ``peak_process_bytes_`` the largest ``VmHWM`` (the kernel's peak RSS, shared pages
    counted in full) of any single process, with ``peak_process_name_`` its command name.
    """

    pids: list[int]
    interval: float = 0.2

    def start(self) -> ProcessTreeMemory:
        self.peak_tree_bytes_ = 0
        self.peak_tree_rss_bytes_ = 0
        self.peak_process_bytes_ = 0
        self.peak_process_name_ = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def sample(self) -> None:
        total = total_rss = 0
        for root in self.pids:
            for pid in process_tree(root):
                total += _proc_kib(pid, "Pss", "smaps_rollup") * 1024
                total_rss += _proc_kib(pid, "VmRSS") * 1024
                peak = _proc_kib(pid, "VmHWM") * 1024
                if peak > self.peak_process_bytes_:
                    self.peak_process_bytes_ = peak
                    try:
                        self.peak_process_name_ = Path(f"/proc/{pid}/comm").read_text().strip()
                    except OSError:
                        self.peak_process_name_ = "?"
        self.peak_tree_bytes_ = max(self.peak_tree_bytes_, total)
        self.peak_tree_rss_bytes_ = max(self.peak_tree_rss_bytes_, total_rss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def stop(self) -> ProcessTreeMemory:
        self._stop.set()
        self._thread.join()
        return self


# --- one measurement (child process) --------------------------------------------------------

class _Clock:
    """Observer noting when the first round starts and this process's CPU time per round."""

    def __init__(self) -> None:
        self.first_round_at = 0.0
        self.cpu_at_round_end: list[float] = []

    def on_phase(self, phase: str, detail: str) -> None:
        if phase == "round" and detail.startswith("1/"):
            self.first_round_at = time.perf_counter()

    def on_round(self, record: Any) -> None:
        self.cpu_at_round_end.append(time.process_time())

    def on_logs(self, lines: Any) -> None:
        pass


def measure(per_device: int, engine: str, rounds: int, per_round: int,
            scale: float, in_flight: int = 0,
            settings: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one configuration here and return its timings (``in_flight``: Ray's message
    window, 0 for the engine's own; ``settings``: more configuration keys, as text)."""
    from fediot.core.config import Config
    from fediot.engines.flower import ray_simulation
    from fediot.engines.simulation import run_federated

    if in_flight:
        ray_simulation.MIN_IN_FLIGHT = in_flight

    backend, workers, overrides = ENGINES[engine]
    devices = 9 * per_device
    config = Config().with_overrides({
        "data_args.virtual_devices_per_device": per_device,
        "data_args.testbed_scale": scale,
        "train_args.client_num_in_total": devices,
        "train_args.client_num_per_round": min(per_round or devices, devices),
        "train_args.comm_round": rounds + 1,
        "comm_args.backend": backend,
        "device_args.worker_num": workers,
        **overrides,
    }).with_overrides({key: yaml.safe_load(value) for key, value in (settings or {}).items()})
    clock = _Clock()
    started = time.perf_counter()
    result = run_federated(config, clock)
    total = time.perf_counter() - started
    measured = [r.seconds for r in result.history[1:]]  # round 1 is the warm-up
    rounds_total = sum(r.seconds for r in result.history)
    setup = clock.first_round_at - started
    cpu = clock.cpu_at_round_end
    cpu_per_round = (cpu[-1] - cpu[0]) / (len(cpu) - 1)
    return {
        "devices": devices,
        "per_round": config.train_args.client_num_per_round,
        "engine": engine,
        "answered_last_round": len(result.history[-1].answered),
        "warmup_round_seconds": round(result.history[0].seconds, 3),
        "round_seconds": [round(s, 3) for s in measured],
        "best_round_seconds": round(min(measured), 3),
        "median_round_seconds": round(statistics.median(measured), 3),
        "rounds_per_second": round(1 / min(measured), 3),
        "round_training_rows": result.history[-1].num_examples,
        "samples_per_second": round(result.history[-1].num_examples
                                    * config.train_args.epochs / min(measured)),
        "server_process_cpu_seconds_per_round": round(cpu_per_round, 2),
        "ray_in_flight": in_flight or ray_simulation.MIN_IN_FLIGHT,
        "setup_seconds": round(setup, 1),
        "after_rounds_seconds": round(total - setup - rounds_total, 1),
        "total_seconds": round(total, 1),
    }


# --- the benchmark (parent process) ---------------------------------------------------------

def run_child(per_device: int, engine: str, args: argparse.Namespace,
              logs: Path) -> dict[str, Any]:
    """One configuration in a child process, with its tree's memory sampled."""
    log_path = logs / f"scale-{9 * per_device}-{engine}.log"
    command = [sys.executable, str(Path(__file__).resolve()), "--child",
               str(per_device), engine, "--rounds", str(args.rounds),
               "--per-round", str(args.per_round), "--scale", str(args.scale),
               "--ray-in-flight", str(args.ray_in_flight),
               *[f"--set={item}" for item in getattr(args, "set", None) or []]]
    with log_path.open("wb") as log:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, cwd=REPO)
        memory = ProcessTreeMemory([child.pid]).start()
        try:
            out, _ = child.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            child.terminate()  # our own child, by its PID; it shuts its Ray runtime down
            try:
                out, _ = child.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                out, _ = child.communicate()
        finally:
            memory.stop()
    lines = out.decode().strip().splitlines()
    if child.returncode != 0 or not lines:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
        return {"devices": 9 * per_device, "engine": engine, "failed": True,
                "returncode": child.returncode, "log": str(log_path),
                "error": " | ".join(line[:300] for line in tail)}
    row: dict[str, Any] = json.loads(lines[-1])
    row["peak_tree_pss_mb"] = round(memory.peak_tree_bytes_ / 2**20)
    row["peak_tree_rss_mb"] = round(memory.peak_tree_rss_bytes_ / 2**20)
    row["peak_process_rss_mb"] = round(memory.peak_process_bytes_ / 2**20)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (+1 warm-up)")
    parser.add_argument("--per-device", type=int, nargs="+", default=[1, 10, 100],
                        help="virtual devices per N-BaIoT device (9× this many devices)")
    parser.add_argument("--engines", nargs="+", default=DEFAULT_ENGINES, choices=list(ENGINES))
    parser.add_argument("--per-round", type=int, default=0,
                        help="devices trained per round (0: all of them)")
    parser.add_argument("--scale", type=float, default=1.0, help="testbed scale")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds before a configuration is stopped and reported failed")
    parser.add_argument("--ray-in-flight", type=int, default=0,
                        help="Ray: messages outstanding per step (0: the engine's own; a huge "
                             "number: all at once, as before the in-flight limit)")
    parser.add_argument("--result", default="scale",
                        help="results file name under bench/results (default scale)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="any configuration key for every run (repeatable)")
    parser.add_argument("--child", nargs=2, metavar=("PER_DEVICE", "ENGINE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(int(args.child[0]), args.child[1], args.rounds,
                                 args.per_round, args.scale, args.ray_in_flight,
                                 dict(item.split("=", 1) for item in args.set or []))))
        return

    logs = Path(tempfile.mkdtemp(prefix="fediot-bench-scale-"))
    rows: list[dict[str, Any]] = []
    print(f"{'devices':>7} {'engine':12} {'per round':>9} {'best s':>7} {'median s':>8} "
          f"{'rounds/s':>8} {'setup s':>7} {'peak MB':>7} {'server CPU s/round':>18}")
    for per_device in args.per_device:
        for engine in args.engines:
            row = run_child(per_device, engine, args, logs)
            rows.append(row)
            if row.get("failed"):
                print(f"{row['devices']:>7} {engine:12} FAILED ({row['error'][:150]}; "
                      f"log {row['log']})", flush=True)
                continue
            print(f"{row['devices']:>7} {engine:12} {row['per_round']:>9} "
                  f"{row['best_round_seconds']:>7.2f} {row['median_round_seconds']:>8.2f} "
                  f"{row['rounds_per_second']:>8.2f} {row['setup_seconds']:>7.1f} "
                  f"{row['peak_tree_pss_mb']:>7} "
                  f"{row['server_process_cpu_seconds_per_round']:>18.2f}", flush=True)
    path = write_result(args.result, {
        "testbed_scale": args.scale, "measured_rounds": args.rounds, "warmup_rounds": 1,
        "ray_in_flight_option": args.ray_in_flight,
        "per_round": args.per_round or "all", "logs": str(logs), "runs": rows,
    })
    print(f"written {path}")


if __name__ == "__main__":
    main()
