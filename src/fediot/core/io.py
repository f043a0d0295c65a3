"""Feature tables on disk: Parquet or CSV with the N-BaIoT header, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from fediot.core.catalog import FEATURE_NAMES
from fediot.core.errors import FediotError

FEATURE_FORMATS = ("parquet", "csv")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# read once at import: os.umask is process-wide, so probing it later could race with threads
_DEFAULT_FILE_MODE = 0o666 & ~_umask()
"""What ``open`` gives a new file under the umask (``mkstemp`` alone would give 0600)."""


@contextmanager
def atomic_path(target: Path, make_parents: bool = True) -> Iterator[Path]:
    """A temporary path beside ``target`` that replaces it only if the block succeeds; the
    result has the permissions a plain write would have given it. ``make_parents=False``: a
    missing folder raises ``FileNotFoundError`` instead of being created (for a writer that
    must not bring back a folder someone deleted)."""
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            tmp.chmod(_DEFAULT_FILE_MODE)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def format_from_suffix(path: Path) -> str:
    """``parquet`` or ``csv`` from a file name; an error naming the file otherwise."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("parquet", "pq"):
        return "parquet"
    if suffix == "csv":
        return "csv"
    raise FediotError(f"{path}: unknown feature file type {path.suffix!r}; use .parquet or .csv")


WRITE_CHUNK_ROWS = 65_536
"""Rows per batch (and Parquet row group) when writing features: bounds the transposed copy."""

FEATURE_SCHEMA = pa.schema([(name, pa.float64()) for name in FEATURE_NAMES])
"""The 115 N-BaIoT columns, float64."""


def _feature_matrix(rows: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    x = np.asarray(rows, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
        raise FediotError(f"feature rows must be n × {len(FEATURE_NAMES)}, got {x.shape}")
    return x


def features_to_arrow(rows: npt.NDArray[np.floating]) -> pa.Table:
    """An Arrow table with the 115 N-BaIoT column names."""
    x = _feature_matrix(rows)
    return pa.table({name: x[:, i] for i, name in enumerate(FEATURE_NAMES)})


def feature_batches(
    rows: npt.NDArray[np.floating], chunk_rows: int = WRITE_CHUNK_ROWS
) -> Iterator[pa.RecordBatch]:
    """``rows`` as Arrow record batches of ``chunk_rows`` rows (default
    :data:`WRITE_CHUNK_ROWS`), each from a column-major copy of its rows, so every column is
    one contiguous buffer that Arrow takes without another copy."""
    x = _feature_matrix(rows)
    for start in range(0, len(x), chunk_rows):
        columns = np.ascontiguousarray(x[start:start + chunk_rows].T)
        yield pa.RecordBatch.from_arrays(list(columns), schema=FEATURE_SCHEMA)


def write_features(path: Path, rows: npt.NDArray[np.floating], file_format: str | None = None
                   ) -> Path:
    """Write feature rows to ``path`` (Parquet or CSV, by ``file_format`` or the suffix).

    Parquet: zstd, plain encoding (feature values are nearly all distinct, so a dictionary
    page costs time and saves nothing). CSV: N-BaIoT's unquoted header, then Arrow's
    shortest round-trip formatting of each value.
    """
    path = Path(path)
    fmt = file_format or format_from_suffix(path)
    if fmt not in FEATURE_FORMATS:
        raise FediotError(f"unknown feature format {fmt!r}; use one of {FEATURE_FORMATS}")
    x = _feature_matrix(rows)
    with atomic_path(path) as tmp:
        if fmt == "parquet":
            with pq.ParquetWriter(tmp, FEATURE_SCHEMA, compression="zstd",
                                  use_dictionary=False) as parquet:
                for batch in feature_batches(x):
                    parquet.write_batch(batch)
        else:
            # N-BaIoT's header is unquoted; Arrow would quote it
            with tmp.open("wb") as f:
                f.write((",".join(FEATURE_NAMES) + "\n").encode())
                with pa_csv.CSVWriter(f, FEATURE_SCHEMA, write_options=pa_csv.WriteOptions(
                        include_header=False)) as csv:
                    for batch in feature_batches(x):
                        csv.write_batch(batch)
    return path
