"""Registering the nine device keys before a TLS ``fediot server`` starts (issue 12, item 2).

Three ways, each ``--repeats`` times on a fresh Flower home (a fresh ``state.db``):

- **one process** (what ``fediot server`` does, :func:`deployment.enrol_nodes`): an enrolment
  SuperLink, then one Python process registering every key in turn;
- **resume**: the same over a ``state.db`` that already holds the keys (``--resume``): every
  key recognised, none registered;
- **one ``flwr`` per key** (before issue 12, kept here only as the baseline): the same
  enrolment SuperLink, then nine ``flwr supernode register`` processes side by side.

Each figure is the wall time from starting the enrolment SuperLink to the last key registered
(the SuperLink stopped). The machine's load is recorded with the result.

Run: ``.venv/bin/python bench/bench_enrolment.py`` → ``bench/results/enrolment.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from common import write_result
from fediot.core.catalog import DEVICES
from fediot.engines.flower import certificates as tls
from fediot.engines.flower import deployment


def make_certificates(folder: Path) -> tls.ServerSecurity:
    """A CA, a loopback server certificate and one key pair per N-BaIoT device."""
    tls.create_ca(folder)
    tls.create_server_certificate(folder, ["127.0.0.1"])
    for device in DEVICES:
        tls.create_device_key(folder, device.uci_id)
    return tls.ServerSecurity.load(folder, "127.0.0.1")


def one_flwr_per_key(home: Path, security: tls.ServerSecurity) -> None:
    """The baseline: nine ``flwr supernode register`` processes side by side."""
    port = deployment.free_port()
    link = deployment.superlink(home, port, security=security, log_name="enrol.log").start()
    try:
        deployment.wait_for_port("127.0.0.1", port, 300, "the enrolment SuperLink", link)
        enrol_home = home / "enrol"
        deployment.write_federation(enrol_home, "fediot-enrol",
                                    deployment.join_address("127.0.0.1", port),
                                    security.ca_certificate)
        flwr = str(Path(sys.executable).with_name("flwr"))
        processes = [subprocess.Popen(
            [flwr, "supernode", "register", str(key), "fediot-enrol", "--format", "json"],
            env=deployment.flower_env(enrol_home), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE) for key in security.node_public_keys]
        for process in processes:
            out, err = process.communicate(timeout=600)
            if b'"success": true' not in out:
                raise RuntimeError((out + err).decode()[-300:])
    finally:
        link.stop()


def timed(work: Callable[..., object], *args: object) -> float:
    """Seconds ``work(*args)`` took."""
    start = time.perf_counter()
    work(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"one_process": [], "resume": [], "one_flwr_per_key": []}
    with tempfile.TemporaryDirectory(prefix="fediot-bench-enrol-") as tmp:
        security = make_certificates(Path(tmp) / "certs")
        for repeat in range(args.repeats):
            home = Path(tmp) / f"home-{repeat}"
            times["one_process"].append(timed(deployment.enrol_nodes, home, security))
            times["resume"].append(timed(deployment.enrol_nodes, home, security))
            times["one_flwr_per_key"].append(timed(
                one_flwr_per_key, Path(tmp) / f"baseline-{repeat}", security))
    summary = {name: {"median_seconds": round(statistics.median(values), 2),
                      "seconds": [round(v, 2) for v in values]}
               for name, values in times.items()}
    path = write_result("enrolment", {
        "keys": len(DEVICES), "repeats": args.repeats, "results": summary,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()]})
    for name, figures in summary.items():
        print(f"{name:18} median {figures['median_seconds']:6.2f} s  {figures['seconds']}")
    print(f"→ {path}")


if __name__ == "__main__":
    main()
