"""Serving speed of ``fediot serve``: rows/s through the HTTP API on loopback.

Run on demand: ``.venv/bin/python bench/bench_serve.py [--seconds S]``. Prints a table and writes
``bench/results/serve.json`` (atomically).

Setup: a run folder in a temporary directory holding a global model (the autoencoder's seeded
initial weights and a scaler fitted on the rows: scoring cost does not depend on the weights);
``fediot serve`` on 127.0.0.1 in a subprocess (a real uvicorn server, default settings: one
torch thread per scoring call); one httpx client with keep-alive in this process, sending
requests one after the other. Rows: the real N-BaIoT rows of the shared data (tiled) when
present, else N-BaIoT-like random rows.

For each body format (JSON, CSV with header, Parquet) and rows per request (1, 100, 10,000) the
body is encoded once, a few requests warm up, then requests are sent for ``seconds``: figures
are rows/s and requests/s over that time, and the median and 95th-percentile request latency
(client side: send, score, receive the JSON reply; the reply is read, not parsed). The
in-process ``AutoencoderDetector.score_samples`` rate on the same rows is the ceiling.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from rich.console import Console
from rich.table import Table

from common import SHARED, write_result
from fediot.core.catalog import FEATURE_NAMES, N_FEATURES
from fediot.core.config import Config
from fediot.core.data.reader import read_feature_csv
from fediot.core.federated.evaluation import Thresholds
from fediot.core.federated.messages import ModelState
from fediot.core.model import ScalerStats, build_autoencoder, get_weights
from fediot.engines.run_folder import RunFolder, RunView

BATCH_SIZES = (1, 100, 10_000)
FORMATS = ("json", "csv", "parquet")
CONTENT_TYPES = {"json": "application/json", "csv": "text/csv",
                 "parquet": "application/vnd.apache.parquet"}
Rows = npt.NDArray[np.float64]


def benchmark_rows(n_rows: int) -> tuple[Rows, str]:
    """Real N-BaIoT rows (tiled) if the shared data is there, else N-BaIoT-like random rows."""
    real = SHARED / "data" / "nbaiot"
    files = sorted(f for f in real.glob("*/**/*.csv") if "metadata" not in f.parts)
    if files:
        pool = np.concatenate([read_feature_csv(f) for f in files]).astype(np.float64)
        return np.resize(pool, (n_rows, N_FEATURES)), f"real N-BaIoT rows ({len(pool)} tiled)"
    rng = np.random.default_rng(0)
    rows = np.expm1(rng.uniform(0, 20, (n_rows, N_FEATURES)))
    return rows, "random N-BaIoT-like rows"


def make_run(folder: Path, rows: Rows) -> RunView:
    config = Config().with_overrides({"tracking_args.log_file_dir": str(folder),
                                      "tracking_args.run_name": "bench-serve",
                                      "detection_args.window": 5})
    run = RunFolder.create(config)
    model = ModelState(get_weights(build_autoencoder(N_FEATURES, seed=0)),
                       ScalerStats.from_data(rows))
    run.save_model(model, Thresholds("global", 1.0, {}))
    return RunView(run.root)


def encode(rows: Rows, body_format: str) -> bytes:
    if body_format == "json":
        return json.dumps({"rows": rows.tolist()}).encode()
    if body_format == "csv":
        lines = [",".join(FEATURE_NAMES)] + [",".join(map(repr, row)) for row in rows.tolist()]
        return ("\n".join(lines) + "\n").encode()
    sink = io.BytesIO()
    pq.write_table(pa.table({n: rows[:, i] for i, n in enumerate(FEATURE_NAMES)}), sink)
    return sink.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(run: RunView, port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "fediot.faces.cli.main", "serve", "--run", str(run.root),
             "--port", str(port), "--max-body-mb", "512"],
            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"fediot serve did not start:\n{log.read_text()}")
        time.sleep(0.1)


def measure(send: Callable[[], None], batch: int, seconds: float) -> dict[str, float]:
    for _ in range(3):
        send()
    latencies: list[float] = []
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or len(latencies) < 3:
        start = time.perf_counter()
        send()
        latencies.append(time.perf_counter() - start)
    elapsed = time.perf_counter() - started
    return {"requests": len(latencies), "rows_per_s": batch * len(latencies) / elapsed,
            "requests_per_s": len(latencies) / elapsed,
            "median_ms": 1000 * float(np.median(latencies)),
            "p95_ms": 1000 * float(np.percentile(latencies, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per cell")
    args = parser.parse_args()

    torch.set_num_threads(1)  # as fediot serve's default --threads
    rows, source = benchmark_rows(max(BATCH_SIZES))
    results: dict[str, Any] = {}
    table = Table(title=f"fediot serve on loopback ({source}, {os.cpu_count()} CPUs)")
    for name in ("format", "rows/request", "rows/s", "requests/s", "median ms", "p95 ms",
                 "body bytes/row"):
        table.add_column(name, justify="right" if name != "format" else "left")
    with tempfile.TemporaryDirectory(prefix="fediot-bench-serve-") as folder:
        run = make_run(Path(folder), rows)
        detector = run.detector()
        start = time.perf_counter()
        detector.score_samples(rows)
        ceiling = len(rows) / (time.perf_counter() - start)
        port = free_port()
        server = start_server(run, port, Path(folder) / "server.log")
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300) as client:
                for body_format in FORMATS:
                    for batch in BATCH_SIZES:
                        body = encode(rows[:batch], body_format)
                        headers = {"content-type": CONTENT_TYPES[body_format]}

                        def send(body: bytes = body, headers: dict[str, str] = headers) -> None:
                            reply = client.post("/score", content=body, headers=headers)
                            if reply.status_code != 200:
                                raise RuntimeError(f"{reply.status_code}: {reply.text[:300]}")

                        cell = measure(send, batch, args.seconds)
                        cell["body_bytes_per_row"] = len(body) / batch
                        results[f"{body_format}_{batch}"] = cell
                        table.add_row(body_format, f"{batch:,}", f"{cell['rows_per_s']:,.0f}",
                                      f"{cell['requests_per_s']:,.1f}",
                                      f"{cell['median_ms']:,.2f}", f"{cell['p95_ms']:,.2f}",
                                      f"{cell['body_bytes_per_row']:,.0f}")
        finally:
            server.terminate()
            server.wait(timeout=30)
    console = Console()
    console.print(table)
    console.print(f"in-process score_samples on the same {len(rows):,} rows, 1 torch thread: "
                  f"{ceiling:,.0f} rows/s; load average {os.getloadavg()[0]:.1f}")
    payload = {
        "torch": torch.__version__, "processor": platform.processor() or platform.machine(),
        "rows_source": source, "seconds_per_cell": args.seconds,
        "load_average": os.getloadavg(),
        "in_process_score_samples_rows_per_s": ceiling, "results": results,
    }
    console.print(f"wrote {write_result('serve', payload)}")


if __name__ == "__main__":
    main()
