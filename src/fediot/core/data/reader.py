"""Readers of one N-BaIoT feature file (CSV or Parquet) into a float32 matrix, checked at the door.

A feature file holds one row per packet and the 115 columns of :data:`catalog.FEATURE_NAMES`,
in that order. What is checked, and what the error names when the check fails:

- the header (CSV) or schema (Parquet) equals ``FEATURE_NAMES``: the first mismatching column,
  by 1-based position and name;
- every CSV line has 115 fields: file and 1-based line;
- every value is a finite number that fits in float32: file, line (CSV) or row (Parquet), and
  column. Huge finite values (real N-BaIoT rows reach ~5.7e17) and negative covariances are valid.

CSV files are parsed by ``pyarrow.csv`` (multi-threaded). When pyarrow rejects a file, or the
parsed values are not all finite, a slow line-by-line pass finds the exact line and column so
the error can name them; that pass runs only on bad files.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pa_parquet

from fediot.core.catalog import FEATURE_NAMES, N_FEATURES
from fediot.core.data.errors import DataError

FeatureMatrix = npt.NDArray[np.float32]
"""Rows × 115 float32 feature values, in ``FEATURE_NAMES`` column order."""

Allocator = Callable[[int], FeatureMatrix]
"""Given a row count, returns the (rows, 115) float32 array to fill (in memory or memory-mapped)."""

CSV_SUFFIX: Final[str] = ".csv"
PARQUET_SUFFIX: Final[str] = ".parquet"
FEATURE_SUFFIXES: Final[tuple[str, ...]] = (CSV_SUFFIX, PARQUET_SUFFIX)

_FLOAT32_MAX: Final[float] = float(np.finfo(np.float32).max)
_HEADER_LIMIT: Final[int] = 1 << 16  # the real header is ~2.6 kB; more means "not a header"
_BLOCK_SIZE: Final[int] = 1 << 24


def _problem(error: BaseException, limit: int = 300) -> str:
    """A library's error message on one line, cut to ``limit`` characters (pyarrow's can span
    lines, e.g. a Thrift decoding error)."""
    flat = " ".join(str(error).split()) or type(error).__name__
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def allocate_in_memory(n_rows: int) -> FeatureMatrix:
    """The default :data:`Allocator`: a fresh in-memory array."""
    return np.empty((n_rows, N_FEATURES), dtype=np.float32)


def read_feature_csv(path: Path) -> FeatureMatrix:
    """Parse one N-BaIoT CSV file (header + 115 numeric columns) into a float32 array.

    Raises :class:`DataError` naming the file, line and column of the first problem.
    """
    return parse_feature_file(Path(path), allocate_in_memory)


def read_feature_parquet(path: Path) -> FeatureMatrix:
    """Read one Parquet feature file (columns ``FEATURE_NAMES``, numeric) into a float32 array."""
    return parse_feature_file(Path(path), allocate_in_memory)


def parse_feature_file(path: Path, allocate: Allocator) -> FeatureMatrix:
    """Parse a ``.csv`` or ``.parquet`` feature file into the array returned by ``allocate``.

    ``allocate(n)`` is called once, with the number of rows, after the file has been read;
    the cache passes an allocator that returns a memory-mapped ``.npy`` being written.
    """
    suffix = path.suffix.lower()
    if suffix == CSV_SUFFIX:
        return _parse_csv(path, allocate)
    if suffix == PARQUET_SUFFIX:
        return _parse_parquet(path, allocate)
    raise DataError(f"{path}: unknown feature file type {path.suffix!r}; expected .csv or .parquet")


def feature_name_mismatch(names: Sequence[str]) -> tuple[int, str | None, str | None] | None:
    """The first column where ``names`` departs from ``FEATURE_NAMES``: ``(1-based column,
    found, expected)``, ``None`` standing for a missing name on either side; ``None`` if
    ``names`` are the N-BaIoT feature names."""
    if tuple(names) == FEATURE_NAMES:
        return None
    for position in range(max(len(names), N_FEATURES)):
        found = names[position] if position < len(names) else None
        expected = FEATURE_NAMES[position] if position < N_FEATURES else None
        if found != expected:
            return position + 1, found, expected
    return None  # unreachable: unequal sequences differ somewhere


def check_feature_names(names: Sequence[str], path: Path, where: str) -> None:
    """Raise :class:`DataError` unless ``names`` is ``FEATURE_NAMES``, naming the first mismatch."""
    mismatch = feature_name_mismatch(names)
    if mismatch is None:
        return
    column, found, expected = mismatch
    found_text = "nothing (too few columns)" if found is None else repr(found)
    expected_text = "no column (too many columns)" if expected is None else repr(expected)
    raise DataError(
        f"{path}: {where}: column {column} is {found_text}, expected {expected_text} "
        f"({len(names)} columns, expected the {N_FEATURES} N-BaIoT feature names)"
    )


def _read_csv_header(path: Path) -> tuple[list[str], bool]:
    """The header's names, and whether anything follows the header line."""
    try:
        with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as stream:
            first_line = stream.readline(_HEADER_LIMIT)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a CSV file") from None
    if not first_line.strip():
        raise DataError(f"{path}: line 1: empty; expected the header of {N_FEATURES} feature names")
    if not first_line.endswith("\n") and len(first_line) >= _HEADER_LIMIT:
        raise DataError(f"{path}: line 1: longer than {_HEADER_LIMIT} characters; not a header")
    names = [name.strip() for name in next(csv.reader([first_line]))]
    return names, first_line.endswith(("\n", "\r"))


def _parse_csv(path: Path, allocate: Allocator) -> FeatureMatrix:
    names, rows_follow = _read_csv_header(path)
    check_feature_names(names, path, "line 1 (header)")
    if not rows_follow:  # the header without a line end: no rows (pyarrow cannot skip it)
        return allocate(0)
    try:
        table = pa_csv.read_csv(
            path,
            read_options=pa_csv.ReadOptions(
                skip_rows=1, column_names=list(FEATURE_NAMES), block_size=_BLOCK_SIZE
            ),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(FEATURE_NAMES, pa.float64())
            ),
        )
    except pa.ArrowException as error:
        raise DataError(
            _locate_csv_problem(path) or f"{path}: unreadable CSV ({_problem(error)})"
        ) from None
    return _fill(table, path, allocate, lambda: _locate_csv_problem(path))


def _locate_csv_problem(path: Path) -> str | None:
    """The first bad line of a CSV file, described; None if every line is fine."""
    with path.open("r", encoding="utf-8-sig", errors="replace", newline="") as stream:
        problem = first_csv_problem(stream, skip_header=True)
    return None if problem is None else f"{path}: {problem}"


def first_csv_problem(lines: Iterable[str], *, skip_header: bool,
                      float32: bool = True) -> str | None:
    """The first bad line of CSV feature rows, as ``line N[, column C (name)]: problem``
    (lines counted from 1, the header included); None if every line is fine. Blank lines
    are skipped, as the fast parser skips them."""
    reader = csv.reader(lines)
    try:
        if skip_header:
            next(reader, None)
        for fields in reader:
            if not fields:
                continue
            line = reader.line_num
            if len(fields) != N_FEATURES:
                return f"line {line}: {len(fields)} columns, expected {N_FEATURES}"
            for position, text in enumerate(fields):
                problem = csv_value_problem(text, float32=float32)
                if problem is not None:
                    return (f"line {line}, column {position + 1} "
                            f"({FEATURE_NAMES[position]}): {problem}")
    except csv.Error as error:  # e.g. a stray carriage return or NUL inside a field
        return f"line {reader.line_num}: {error}"
    return None


def csv_value_problem(text: str, *, float32: bool = True) -> str | None:
    """What is wrong with one CSV field as a feature value (empty, not a number, not finite,
    beyond float32 when ``float32``), or ``None`` if it is fine."""
    stripped = text.strip(" \t")  # what the fast parser trims
    if not stripped:
        return "empty value"
    # Python's float() also accepts "1_0", other scripts' digits ("١") and other white space
    # around the number; the fast parser does not
    if "_" in stripped or not stripped.isascii() or stripped != stripped.strip():
        return f"not a number: {text!r}"
    try:
        value = float(stripped)
    except ValueError:
        return f"not a number: {text!r}"
    if not math.isfinite(value):
        return f"{text!r} is not a finite number"
    if float32 and abs(value) > _FLOAT32_MAX:
        return f"{text!r} does not fit in float32"
    return None


def _parse_parquet(path: Path, allocate: Allocator) -> FeatureMatrix:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        parquet = pa_parquet.ParquetFile(path)
        schema = parquet.schema_arrow
    except (OSError, ValueError, pa.ArrowException) as error:  # ValueError: undecodable names
        raise DataError(f"{path}: not a readable Parquet file ({_problem(error)})") from None
    check_feature_names(schema.names, path, "schema")
    for position, field in enumerate(schema):
        if not (pa.types.is_floating(field.type) or pa.types.is_integer(field.type)):
            raise DataError(
                f"{path}: column {position + 1} ({field.name}) has type {field.type}, "
                "expected float64"
            )
    try:
        table = parquet.read()
    except (OSError, ValueError, pa.ArrowException) as error:
        raise DataError(f"{path}: corrupt Parquet file ({_problem(error)})") from None

    def locate() -> str:
        for position in range(N_FEATURES):
            values = table.column(position).to_numpy().astype(np.float64)
            bad = ~np.isfinite(values) | (np.abs(values) > _FLOAT32_MAX)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                shown = "missing" if table.column(position).is_null()[row].as_py() else values[row]
                return (
                    f"{path}: row {row + 1}, column {position + 1} ({FEATURE_NAMES[position]}): "
                    f"{shown} is not a finite float32 number"
                )
        return f"{path}: non-finite values"

    return _fill(table, path, allocate, locate)


def _fill(
    table: pa.Table, path: Path, allocate: Allocator, locate: Callable[[], str | None]
) -> FeatureMatrix:
    if table.num_columns != N_FEATURES:
        raise DataError(f"{path}: {table.num_columns} columns, expected {N_FEATURES}")
    out = allocate(table.num_rows)
    start = 0
    # Batch by batch, so that each block of rows is filled while it is still in the CPU cache.
    for batch in table.to_batches():
        block = out[start : start + batch.num_rows]
        with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, caught below
            for position in range(N_FEATURES):
                block[:, position] = batch.column(position).to_numpy(zero_copy_only=False)
        if not np.isfinite(block).all():
            raise DataError(locate() or f"{path}: non-finite values after row {start}")
        start += batch.num_rows
    return out
