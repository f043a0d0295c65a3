"""What measuring each device task costs (:class:`~fediot.core.federated.meter.TaskMeter`).

The meter hands the allocator's free pages back to the system (glibc ``malloc_trim``) and
resets the kernel's peak-RSS mark at every task's start, then reads ``/proc/self/status`` at
its end. Two figures per heap size (live memory the process holds, with as much again freed in
small blocks, as after earlier devices' tasks):

- ``meter_us``: one meter around an empty block (trim, reset, two reads);
- ``task_ms`` with and without the meter: a task that allocates and writes 20 MiB in 64 KiB
  blocks, so the pages the trim handed back must be faulted in again.

Then, in a real run (the 9 testbed devices, in-process, ``worker_num = 1``, ``--rounds``
rounds): the time spent inside the meter's own start and end, against the wall time of the
measured tasks (training and evaluation). A share, so it holds on a loaded machine better than
two timings compared would. Page faults the trim causes later in a task are not in it (the
20 MiB task above shows those).

Run on demand: ``.venv/bin/python bench/bench_task_meter.py`` (≈ 2 min) →
``bench/results/task_meter.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from common import write_result
from fediot.core.config import Config
from fediot.core.federated import meter
from fediot.core.federated.meter import TaskMeter
from fediot.engines.simulation import run_federated

MIB = 2**20
BLOCK = 64 * 1024


def _heap(megabytes: int) -> list[np.ndarray]:
    """``megabytes`` of live blocks, with as many freed between them (a fragmented heap)."""
    blocks = [np.ones(BLOCK // 8) for _ in range(2 * megabytes * MIB // BLOCK)]
    return blocks[::2]  # every other block freed: holes the allocator keeps


def _task() -> int:
    blocks = [np.ones(BLOCK // 8) for _ in range(20 * MIB // BLOCK)]
    return len(blocks)


def _median_seconds(block: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        block()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _metered_task() -> None:
    with TaskMeter():
        _task()


def _empty_meter() -> None:
    with TaskMeter():
        pass


def in_a_run(rounds: int) -> dict[str, Any]:
    """The meter's own time in a real sequential run, and the measured tasks' wall time."""
    spent = {"meter": 0.0, "tasks": 0.0, "count": 0}
    enter, leave = meter.TaskMeter.__enter__, meter.TaskMeter.__exit__

    def timed_enter(self: TaskMeter) -> TaskMeter:
        started = time.perf_counter()
        enter(self)
        spent["meter"] += time.perf_counter() - started
        return self

    def timed_exit(self: TaskMeter, *error: Any) -> None:
        started = time.perf_counter()
        leave(self, *error)
        spent["meter"] += time.perf_counter() - started
        spent["tasks"] += self.stats.wall_seconds
        spent["count"] += 1

    meter.TaskMeter.__enter__ = timed_enter  # type: ignore[method-assign]
    meter.TaskMeter.__exit__ = timed_exit  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        run_federated(Config().with_overrides({
            "train_args.comm_round": rounds, "device_args.worker_num": 1,
            "validation_args.early_stopping_patience": 0}))
        run_seconds = time.perf_counter() - started
    finally:
        meter.TaskMeter.__enter__ = enter  # type: ignore[method-assign]
        meter.TaskMeter.__exit__ = leave  # type: ignore[method-assign]
    return {"rounds": rounds, "tasks": spent["count"], "meter_seconds": spent["meter"],
            "task_seconds": spent["tasks"], "run_seconds": run_seconds,
            "meter_share_of_tasks": spent["meter"] / spent["tasks"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--heaps", default="0,256,1024", help="live heap sizes, MiB")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the real run")
    args = parser.parse_args()
    rows = []
    for megabytes in (int(h) for h in args.heaps.split(",")):
        held = _heap(megabytes)
        row = {
            "heap_mib": megabytes,
            "meter_us": 1e6 * _median_seconds(_empty_meter, args.repeats),
            "task_ms_without_meter": 1e3 * _median_seconds(_task, args.repeats),
            "task_ms_with_meter": 1e3 * _median_seconds(_metered_task, args.repeats),
        }
        rows.append(row)
        print(f"heap {megabytes:5d} MiB: meter {row['meter_us']:8.1f} µs; 20 MiB task "
              f"{row['task_ms_without_meter']:6.2f} ms without, "
              f"{row['task_ms_with_meter']:6.2f} ms with the meter", flush=True)
        del held
    run = in_a_run(args.rounds)
    print(f"real run, {run['rounds']} rounds, {run['tasks']} measured tasks: meter "
          f"{run['meter_seconds']:.3f} s of {run['task_seconds']:.2f} s of tasks "
          f"({100 * run['meter_share_of_tasks']:.2f} %); run {run['run_seconds']:.1f} s")
    write_result("task_meter", {"repeats": args.repeats, "rows": rows, "run": run})


if __name__ == "__main__":
    main()
