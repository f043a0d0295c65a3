"""Bad input as a user meets it: one clear error line, no traceback, no hang, ≤ 2 s, ≤ 200 MB.

Run on demand: ``.venv/bin/python bench/bench_bad_inputs.py``. Prints a table and writes
``bench/results/bad_inputs.json`` (atomically).

Every command case runs the ``fediot`` command in a fresh process (``python -m fediot …``, what
the ``.venv/bin/fediot`` entry point runs, with this checkout's ``src`` first on the path), so
start-up and imports are counted; it runs ``--repeat`` times (default 3) and the fastest run
counts, with the largest peak RSS of all runs. Per case, under GNU ``/usr/bin/time``: wall time
from start to exit; CPU seconds (user + system: what the case costs, less sensitive than wall
time to other load on the machine); peak RSS of that process; exit code; stderr line count;
whether a Python traceback appears; the error line. The ``/score`` cases go to one real
``fediot serve`` process over HTTP: wall time of the request (also given as its CPU figure), and
the growth of the server's peak RSS (``VmHWM`` in ``/proc/PID/status``) and of its RSS across
the request.

A case passes when the command exits non-zero (the request gets a 4xx) with exactly one stderr
line (one error detail), no traceback, within :data:`MAX_SECONDS` and :data:`MAX_RSS_MB`.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from bench_serve import make_run
from common import REPO, SHARED, write_result
from fediot.core.catalog import FEATURE_NAMES, N_FEATURES

MAX_SECONDS = 2.0
MAX_RSS_MB = 200.0
GNU_TIME = "/usr/bin/time"  # Debian's `time` package
TIMEOUT_SECONDS = 60.0  # a case still running then is a hang: killed and reported
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Outcome:
    """One case's measurements (``rss_mb``: the process's peak RSS for a command case, the
    server's peak-RSS growth for a request case)."""

    case: str
    how: str
    seconds: float
    cpu_seconds: float
    rss_mb: float
    exit_code: int
    stderr_lines: int
    traceback: bool
    error: str
    passed: bool = False

    def judge(self, request: bool) -> Outcome:
        failed = 400 <= self.exit_code < 500 if request else self.exit_code != 0
        self.passed = (failed and self.stderr_lines == 1 and not self.traceback
                       and self.seconds <= MAX_SECONDS and self.rss_mb <= MAX_RSS_MB)
        return self


def fediot_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "fediot", *args]


SOURCE = REPO / "src"  # the FedIoT the cases run (--src: another checkout's, for a before/after)


def child_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(SOURCE), COLUMNS="200", NO_COLOR="1")
    env.pop("FORCE_COLOR", None)
    return env


def run_command(case: str, args: list[str], cwd: Path) -> Outcome:
    """``fediot ARGS`` in a fresh process: time, its own peak RSS, exit code, stderr."""
    # Peak RSS comes from GNU time, not from this process's wait4: Linux carries the peak of
    # the forked copy (this process, torch loaded, ~400 MB) over into the child's ru_maxrss.
    peak = cwd / "peak-rss.txt"
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen([GNU_TIME, "-q", "-f", "%M %U %S", "-o", str(peak),
                                    *fediot_argv(*args)], cwd=cwd, env=child_env(),
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            process.wait(timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:  # a hang: reported as such
            process.kill()
            process.wait()
        seconds = time.perf_counter() - started
        err.seek(0)
        text = ANSI.sub("", err.read().decode(errors="replace"))
    # GNU time's last line: peak RSS (kB), user and system CPU seconds
    peak_kb, user, system = (peak.read_text().splitlines()[-1].split() if peak.is_file()
                             else ("0", "0", "0"))
    lines = [line for line in text.splitlines() if line.strip()]
    shown = " ".join(a if len(a) < 40 else a[:37] + "…" for a in args)
    return Outcome(case, f"fediot {shown}", round(seconds, 2),
                   round(float(user) + float(system), 2), round(int(peak_kb) / 1024, 1),
                   process.returncode, len(lines), "Traceback" in text,
                   lines[-1][:300] if lines else "")


def best_of(repeat: int, case: str, args: list[str], cwd: Path) -> Outcome:
    """The case run ``repeat`` times: the fastest run's figures, with the largest peak RSS of
    all (memory does not depend on the machine's load; time does)."""
    runs = [run_command(case, args, cwd) for _ in range(max(repeat, 1))]
    best = min(runs, key=lambda o: o.seconds)
    best.rss_mb = max(o.rss_mb for o in runs)
    if len({(o.exit_code, o.error) for o in runs}) > 1:  # the same input must fail the same way
        best.error = "runs disagree: " + " | ".join(sorted({o.error for o in runs}))
        best.stderr_lines = -1
    return best


# --- the inputs ------------------------------------------------------------------------------

def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """"Billion laughs": ``width ** levels`` strings from a few hundred bytes of aliases."""
    lines = [f"l0: &l0 [{','.join(['lol'] * width)}]"]
    lines += [f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


CONFIG_CASES: dict[str, bytes] = {
    "YAML alias bomb": alias_bomb().encode(),
    "5,000-deep nesting": b"[" * 5000 + b"]" * 5000,
    "non-UTF-8 file": b"train_args:\n  run: caf\xe9\n",
    "NUL byte in a path": b'data_args:\n  data_cache_dir: "data\\0/x"\n',
    "environment_args: 5": b"environment_args: 5\n",
    "integer beyond 1e308": b"detection_args:\n  threshold_k: 2" + b"0" * 308 + b"\n",
    "random_seed: 2**64": f"common_args:\n  random_seed: {2**64}\n".encode(),
    "batch_size: 1e20": b"train_args:\n  batch_size: 1.0e+20\n",
    "virtual_devices_per_device: 1e12": b"data_args:\n  virtual_devices_per_device: "
                                        b"1000000000000\n",
    "testbed_scale: 1e9": b"data_args:\n  testbed_scale: 1.0e+9\n",
    "threshold_k: .nan": b"detection_args:\n  threshold_k: .nan\n",
    "krum_malicious: 100, 9 devices": b"train_args:\n  federated_optimizer: Krum\n"
                                      b"  krum_malicious: 100\n",
    "run_name: '..'": b'tracking_args:\n  run_name: ".."\n',
    "misspelt key": b"train_args:\n  epoch: 3\n",
}


def parquet_bytes(table: pa.Table, **options: Any) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def non_utf8_parquet() -> bytes:
    """Column 1's name patched (same length) to bytes that are not UTF-8."""
    body = parquet_bytes(pa.table({n: np.ones(2) for n in FEATURE_NAMES}), store_schema=False)
    name = FEATURE_NAMES[0].encode()
    return body.replace(name, name[:-2] + b"\xff\xfe")


def uci_folder(root: Path, benign_csv: str) -> Path:
    """A UCI-layout dataset folder whose Danmini benign file is ``benign_csv``."""
    (root / "Danmini_Doorbell").mkdir(parents=True)
    (root / "Danmini_Doorbell" / "benign_traffic.csv").write_text(benign_csv)
    return root


def write_inputs(work: Path, run_root: Path) -> dict[str, list[str]]:
    """Every command case's arguments, its input files written under ``work`` (``run_root``:
    a run folder with a model, for ``fediot detect``)."""
    cases: dict[str, list[str]] = {}
    for i, (case, data) in enumerate(CONFIG_CASES.items()):
        path = work / f"config-{i}.yaml"
        path.write_bytes(data)
        cases[f"config: {case}"] = ["simulate", "--config", str(path)]
    cases["config: missing file"] = ["simulate", "--config", str(work / "absent.yaml")]
    cases["--set misspelt key"] = ["simulate", "--set", "train_args.epoch=3"]
    cases["--set batch_size=1e20"] = ["compare", "--set", "train_args.batch_size=1e20"]

    header = ",".join(FEATURE_NAMES)
    one = ",".join(["1"] * N_FEATURES)
    short = uci_folder(work / "short-row", f"{header}\n{one}\n{one[:-2]}\n")
    nan = uci_folder(work / "nan-row", f"{header}\n{one}\n{one[:-1]}nan\n")
    inf = uci_folder(work / "inf-row", f"{header}\n{one[:-1]}inf\n")
    testbed = work / "non-utf8-parquet"
    (testbed / "Danmini_Doorbell").mkdir(parents=True)
    (testbed / "testbed.json").write_text("{}")
    (testbed / "Danmini_Doorbell" / "benign_traffic.parquet").write_bytes(non_utf8_parquet())
    cache = ["--cache-dir", str(work / "cache")]
    cases["data: wrong column count"] = ["data", "info", str(short), *cache]
    cases["data: NaN row"] = ["data", "info", str(nan), *cache]
    cases["data: inf row"] = ["data", "info", str(inf), *cache]
    cases["data: Parquet column name not UTF-8"] = ["data", "info", str(testbed), *cache]
    cases["data: missing folder"] = ["data", "info", str(work / "absent"), *cache]
    cases["simulate: --data-dir missing"] = ["simulate", "--dataset", "N-BaIoT", "--data-dir",
                                             str(work / "absent")]
    cases["protocol: --data-dir missing"] = ["protocol", "--dataset", "N-BaIoT", "--data-dir",
                                             str(work / "absent")]

    corrupt = work / "corrupt.pcap"
    real = SHARED / "data" / "pcap"
    captures = sorted(real.glob("*.pcap*")) if real.is_dir() else []
    if captures:  # a real capture cut mid-record, then garbage: the reader must say where
        corrupt.write_bytes(captures[0].read_bytes()[:5000] + b"\x00\xff" * 64)
    else:
        corrupt.write_bytes(b"\xd4\xc3\xb2\xa1" + os.urandom(200))
    cases["extract: corrupt pcap"] = ["extract", str(corrupt), "-o", str(work / "f.parquet")]
    cases["extract: missing file"] = ["extract", str(work / "absent.pcap"),
                                      "-o", str(work / "f.parquet")]
    runs = ["--run", str(run_root)]
    cases["detect: corrupt pcap"] = ["detect", str(corrupt), *runs]
    cases["detect: missing file"] = ["detect", str(work / "absent.pcap"), *runs]
    no_runs = ["--runs-dir", str(work / "no-runs")]
    cases["detect: no run with a model"] = ["detect", str(corrupt), *no_runs]
    cases["report: no run"] = ["report", "latest", *no_runs]
    cases["runs show: no run"] = ["runs", "show", "latest", *no_runs]
    cases["export: no run"] = ["export", "--format", "onnx", *no_runs]
    cases["serve: --port 70000"] = ["serve", "--run", str(run_root), "--port", "70000"]
    return cases


# --- the server ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of ``pid``, in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def score_cases() -> dict[str, tuple[bytes, str, dict[str, str]]]:
    one = ",".join(["1"] * N_FEATURES).encode()
    zeros = pa.array(np.zeros(3_000_000))
    million = parquet_bytes(pa.table(dict.fromkeys(FEATURE_NAMES, zeros)))
    return {
        "/score?window=2**63": (one, "text/csv", {"window": str(2**63)}),
        f"/score: {len(million) / 2**20:.1f} MiB Parquet of 3,000,000 zero rows":
            (million, "application/vnd.apache.parquet", {}),
        "/score: Parquet column name not UTF-8":
            (non_utf8_parquet(), "application/vnd.apache.parquet", {}),
    }


def serve_outcomes(work: Path, run_root: Path) -> list[Outcome]:
    """Each /score case against one real ``fediot serve`` process over ``run_root``'s model."""
    port = free_port()
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen(fediot_argv("serve", "--run", str(run_root), "--port", str(port)),
                              cwd=work, env=child_env(), stdout=log, stderr=subprocess.STDOUT)
    outcomes = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=TIMEOUT_SECONDS) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"fediot serve did not start: {(work / 'serve.log')}")
                time.sleep(0.2)
            warm = ",".join(["1"] * N_FEATURES)
            client.post("/score", content=warm, headers={"content-type": "text/csv"})
            for case, (body, content_type, params) in score_cases().items():
                before = memory_kb(server.pid)
                started = time.perf_counter()
                reply = client.post("/score", content=body, params=params,
                                    headers={"content-type": content_type})
                seconds = time.perf_counter() - started
                after = memory_kb(server.pid)
                detail = reply.json().get("detail", reply.text) if reply.headers.get(
                    "content-type", "").startswith("application/json") else reply.text
                text = str(detail)
                grown = max(after["VmHWM"] - before["VmHWM"], after["VmRSS"] - before["VmRSS"])
                outcomes.append(Outcome(
                    case, f"POST {case.split(':')[0].split('?')[0]} ({len(body):,} bytes)",
                    round(seconds, 3), round(seconds, 3), round(grown / 1024, 1),
                    reply.status_code,
                    len(text.splitlines()), "Traceback" in text, text[:300]).judge(True))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
    return outcomes


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def main() -> None:
    global SOURCE  # the cases' processes read it; set once, from --src
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", default="", help="only the cases whose name contains this")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per command case; the fastest counts (the machine is shared)")
    parser.add_argument("--src", type=Path, default=SOURCE,
                        help="the src folder of the FedIoT to run (default: this checkout's)")
    parser.add_argument("--result", default="bad_inputs",
                        help="name of the result file in bench/results (without .json)")
    options = parser.parse_args()
    SOURCE = options.src.resolve()
    console = Console(width=200)
    load_before = load()
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="fediot-bad-inputs-") as tmp:
        work = Path(tmp)
        # a run folder with a model, for `detect` and `serve` (the weights do not matter here)
        rows = np.expm1(np.random.default_rng(0).uniform(0, 10, (1000, N_FEATURES)))
        run_root = make_run(work / "runs", rows).root
        for case, args in write_inputs(work, run_root).items():
            if options.k in case:
                outcomes.append(best_of(options.repeat, case, args, work).judge(False))
                console.print(f"{case}: {outcomes[-1].seconds} s", style="dim")
        if options.k in "/score":
            outcomes += serve_outcomes(work, run_root)
    load_after = load()
    table = Table(title=f"bad inputs (pass: one error line, no traceback, ≤ {MAX_SECONDS:g} s, "
                        f"≤ {MAX_RSS_MB:g} MB)")
    for column in ("case", "s", "CPU s", "MB", "exit", "lines", "tb", "ok", "error line"):
        table.add_column(column, overflow="fold")
    for o in outcomes:
        table.add_row(o.case, f"{o.seconds:.2f}", f"{o.cpu_seconds:.2f}", f"{o.rss_mb:.0f}",
                      str(o.exit_code),
                      str(o.stderr_lines), "yes" if o.traceback else "no",
                      "[green]yes[/]" if o.passed else "[red]NO[/]", o.error[:120])
    console.print(table)
    argv = " ".join(sys.argv[1:])
    path = write_result(options.result, {
        "command": f"python bench/bench_bad_inputs.py {argv}".strip(),
        "source": str(SOURCE),
        "load_before": load_before, "load_after": load_after,
        "limits": {"seconds": MAX_SECONDS, "rss_mb": MAX_RSS_MB},
        "rss": "command: the process's peak RSS (wait4 ru_maxrss); request: growth of the "
               "server's peak RSS (VmHWM) or RSS across the request, the larger",
        "all_passed": all(o.passed for o in outcomes),
        "cases": [asdict(o) for o in outcomes],
    })
    console.print(f"{sum(o.passed for o in outcomes)}/{len(outcomes)} passed; wrote {path}")


if __name__ == "__main__":
    main()
