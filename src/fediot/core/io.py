"""Feature tables on disk: Parquet or CSV with the N-BaIoT header, written atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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
"""Rows per batch (and Parquet row group) when writing features: the column-major buffer's
size."""

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


class FeatureWriter:
    """Feature rows appended to a Parquet or CSV file a chunk at a time (a context manager);
    the file appears, atomically, when the block ends without an error.

    Each chunk of up to :data:`WRITE_CHUNK_ROWS` rows is copied column-major into one reused
    buffer, so every column reaches Arrow as one contiguous run it takes without another copy,
    and is written as one Parquet row group or one run of CSV lines. Parquet: zstd, plain
    encoding (feature values are nearly all distinct, so dictionary pages cost time and save
    nothing). CSV: N-BaIoT's unquoted header, then Arrow's shortest round-trip text of each
    value.

    Parameters
    ----------
    path
        The file to write.
    file_format
        ``"parquet"`` or ``"csv"``; default (``None``): from the suffix of ``path``.
    """

    def __init__(self, path: Path, file_format: str | None = None) -> None:
        self.path = Path(path)
        self.file_format = file_format or format_from_suffix(self.path)
        if self.file_format not in FEATURE_FORMATS:
            raise FediotError(
                f"unknown feature format {self.file_format!r}; use one of {FEATURE_FORMATS}"
            )
        self.rows_written = 0
        self._columns = np.empty((len(FEATURE_NAMES), WRITE_CHUNK_ROWS), dtype=np.float64)
        self._stack = ExitStack()
        self._writer: pq.ParquetWriter | pa_csv.CSVWriter | None = None

    def __enter__(self) -> FeatureWriter:
        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            if self.file_format == "parquet":
                self._writer = stack.enter_context(pq.ParquetWriter(
                    tmp, FEATURE_SCHEMA, compression="zstd", use_dictionary=False))
            else:
                sink = stack.enter_context(tmp.open("wb"))
                sink.write((",".join(FEATURE_NAMES) + "\n").encode())  # Arrow would quote it
                self._writer = stack.enter_context(pa_csv.CSVWriter(
                    sink, FEATURE_SCHEMA,
                    write_options=pa_csv.WriteOptions(include_header=False)))
            self._stack = stack.pop_all()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._writer = None
        self._stack.__exit__(*exc_info)  # type: ignore[arg-type]

    def write(self, rows: npt.NDArray[np.floating]) -> None:
        """Append ``rows`` (n × 115)."""
        if self._writer is None:
            raise FediotError(f"{self.path}: the feature writer is not open")
        x = _feature_matrix(rows)
        for start in range(0, len(x), WRITE_CHUNK_ROWS):
            part = x[start:start + WRITE_CHUNK_ROWS]
            columns = self._columns[:, : len(part)]
            np.copyto(columns, part.T)
            # Arrow encodes (Parquet) or formats (CSV) the batch before write_batch returns,
            # so the buffer can take the next chunk.
            self._writer.write_batch(
                pa.RecordBatch.from_arrays(list(columns), schema=FEATURE_SCHEMA)
            )
            self.rows_written += len(part)


def write_features(path: Path, rows: npt.NDArray[np.floating], file_format: str | None = None
                   ) -> Path:
    """Write feature rows to ``path`` (Parquet or CSV, by ``file_format`` or the suffix), as
    :class:`FeatureWriter` does."""
    x = _feature_matrix(rows)  # bad rows fail before any file is touched
    with FeatureWriter(path, file_format) as writer:
        writer.write(x)
    return writer.path
