"""Benchmark of the N-BaIoT feature cache: first parse of a large CSV, then cached loads.

Generates a synthetic CSV (default 1,000,000 rows × 115, with N-BaIoT-like magnitudes: weights
up to thousands, packet sizes, variances up to 5.7e17, negative covariances) in a temporary
folder, then measures

- the first load (pyarrow parse + validation + float32 ``.npy`` written atomically): rows/s;
- a cached load by a fresh :class:`FeatureCache` (memory-map only) and a full pass over it
  (pages in the OS cache; a cold read is bound by the disk);
- peak resident memory of the process,

and projects the one-time parse of the whole N-BaIoT (sum of ``OFFICIAL_ROW_COUNTS``). Prints
the results and writes them to ``bench/results/load.json`` (atomically).

Run: ``.venv/bin/python bench/bench_load.py [--rows N]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv

from common import write_result
from fediot.core.catalog import FEATURE_NAMES, N_FEATURES, OFFICIAL_ROW_COUNTS
from fediot.core.data import FeatureCache

CHUNK_ROWS = 100_000


def synthetic_chunk(n_rows: int, generator: np.random.Generator) -> npt.NDArray[np.float64]:
    """Rows shaped like N-BaIoT's: one distribution per statistic kind."""
    rows = np.empty((n_rows, N_FEATURES), dtype=np.float64)
    for position, name in enumerate(FEATURE_NAMES):
        stat = name.rsplit("_", 1)[1]
        jitter = name.startswith("HH_jit")
        if stat == "weight":
            rows[:, position] = generator.uniform(1.0, 5000.0, n_rows)
        elif stat == "mean":
            rows[:, position] = generator.uniform(0.0, 1.5e9 if jitter else 1500.0, n_rows)
        elif stat in ("variance", "radius"):
            rows[:, position] = generator.uniform(0.0, 5.7e17 if jitter else 5e5, n_rows)
        elif stat == "covariance":
            rows[:, position] = generator.normal(0.0, 1e4, n_rows)
        elif stat == "pcc":
            rows[:, position] = generator.uniform(-1.0, 1.0, n_rows)
        else:  # std, magnitude
            rows[:, position] = generator.uniform(0.0, 2000.0, n_rows)
    return rows


def write_csv(path: Path, n_rows: int, seed: int = 0) -> None:
    generator = np.random.default_rng(seed)
    options = pa_csv.WriteOptions(include_header=False, quoting_style="none")
    with path.open("wb") as stream:
        stream.write((",".join(FEATURE_NAMES) + "\n").encode())
        for start in range(0, n_rows, CHUNK_ROWS):
            chunk = synthetic_chunk(min(CHUNK_ROWS, n_rows - start), generator)
            table = pa.table({str(i): chunk[:, i] for i in range(N_FEATURES)})
            pa_csv.write_csv(table, stream, write_options=options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the synthetic CSV")
    arguments = parser.parse_args()
    n_rows: int = arguments.rows

    with tempfile.TemporaryDirectory(prefix="fediot-bench-load-") as folder:
        csv_path = Path(folder) / "synthetic.csv"
        started = time.perf_counter()
        write_csv(csv_path, n_rows)
        generate_s = time.perf_counter() - started
        csv_bytes = csv_path.stat().st_size

        cache = FeatureCache(Path(folder) / "cache")
        started = time.perf_counter()
        first = cache.load(csv_path)
        first_parse_s = time.perf_counter() - started
        assert cache.parses == 1 and first.shape == (n_rows, N_FEATURES)
        del first

        fresh = FeatureCache(Path(folder) / "cache")
        started = time.perf_counter()
        cached = fresh.load(csv_path)
        cached_open_s = time.perf_counter() - started
        started = time.perf_counter()
        checksum = float(cached.sum(axis=0, dtype=np.float64).sum())
        cached_full_pass_s = time.perf_counter() - started
        assert fresh.parses == 0 and np.isfinite(checksum)
        npy_bytes = int(cached.nbytes)

    official_rows = sum(OFFICIAL_ROW_COUNTS.values())
    rows_per_s = n_rows / first_parse_s
    results: dict[str, object] = {
        "rows": n_rows,
        "columns": N_FEATURES,
        "csv_mb": round(csv_bytes / 1e6, 1),
        "generate_csv_s": round(generate_s, 2),
        "first_parse_s": round(first_parse_s, 2),
        "first_parse_rows_per_s": round(rows_per_s),
        "first_parse_csv_mb_per_s": round(csv_bytes / 1e6 / first_parse_s, 1),
        "cached_open_s": round(cached_open_s, 5),
        "cached_full_pass_s": round(cached_full_pass_s, 3),
        "cached_full_pass_rows_per_s": round(n_rows / cached_full_pass_s),
        "npy_mb": round(npy_bytes / 1e6, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1),
        "nbaiot_official_rows": official_rows,
        "nbaiot_float32_gb": round(official_rows * N_FEATURES * 4 / 1e9, 2),
        "nbaiot_projected_first_parse_s": round(official_rows / rows_per_s, 1),
        "nbaiot_projected_full_pass_s": round(official_rows * cached_full_pass_s / n_rows, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "note": "cached_full_pass reads pages already in the OS cache; cold reads are disk-bound",
    }
    for key, value in results.items():
        print(f"{key:>32}: {value}")
    print(f"written {write_result('load', results)}")


if __name__ == "__main__":
    main()
