"""Request bodies of ``POST /score`` → a validated float64 feature matrix, or one clear error.

Accepted bodies (rows and lines are counted from 1 in every message):

- ``application/json``: ``{"rows": [...], "device": "Danmini_Doorbell", "window": 5}`` (only
  ``rows`` is required), or a bare list of rows. A row is a list of 115 numbers in
  :data:`~fediot.core.catalog.FEATURE_NAMES` order, or an object keyed by feature name.
  ``window`` is a positive integer or ``true`` (the run's window).
- ``text/csv``: 115 numeric columns, with the N-BaIoT header line or without any header.
- ``application/vnd.apache.parquet`` (or ``application/x-parquet``): columns ``FEATURE_NAMES``.

Every value must be a finite number, and a body holds at most ``max_rows`` rows (default
:data:`DEFAULT_MAX_ROWS`), counted before the rows are decoded wherever the format allows: from
a Parquet file's metadata (a few MiB of Parquet can hold millions of rows), from a CSV body's
line count; a JSON body's ``rows`` list is counted before it becomes a matrix. A refused body
raises :class:`RequestError`, whose ``status`` is the HTTP status to answer with (400 for a bad
body, 413 for too many rows, 415 for a media type we do not read) and whose message names the
row or line and column at fault.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pa_parquet

from fediot.core.catalog import FEATURE_NAMES, N_FEATURES
from fediot.core.data.reader import csv_value_problem, feature_name_mismatch, first_csv_problem
from fediot.core.errors import FediotError
from fediot.core.limits import MAX_SCORE_ROWS, MAX_WINDOW

Rows = npt.NDArray[np.float64]
WindowChoice = int | Literal["run"] | None
"""A request's window vote: a window length, ``"run"`` (the run's window) or ``None`` (none)."""

JSON_TYPE: Final[str] = "application/json"
CSV_TYPE: Final[str] = "text/csv"
PARQUET_TYPES: Final[tuple[str, ...]] = ("application/vnd.apache.parquet",
                                         "application/x-parquet")
BODY_TYPES: Final[tuple[str, ...]] = (JSON_TYPE, CSV_TYPE, *PARQUET_TYPES)
_FEATURE_INDEX: Final[dict[str, int]] = {name: i for i, name in enumerate(FEATURE_NAMES)}
_JSON_KEYS: Final[tuple[str, ...]] = ("rows", "device", "window")

DEFAULT_MAX_ROWS: Final[int] = MAX_SCORE_ROWS
"""Most rows one ``/score`` request may carry by default
(:data:`fediot.core.limits.MAX_SCORE_ROWS`)."""
_DECODED_BYTES_PER_ROW: Final[int] = 4 * 8 * N_FEATURES
"""Parquet bytes per row a file may declare once decompressed: 8-byte values with generous
room for levels, dictionaries and page headers; a file declaring more is a decompression
bomb, refused before it is decompressed."""


class RequestError(FediotError):
    """A request the server refuses, with the HTTP ``status`` to answer (4xx).

    Parameters
    ----------
    message
        What is wrong, naming the row / line / column / key at fault.
    status
        HTTP status code (default 400).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ScoreRequest:
    """A parsed ``/score`` body.

    Parameters
    ----------
    rows
        float64[n, 115] finite feature values, n ≥ 1.
    device
        The device named in the body (JSON only), or ``None``.
    window
        The window vote asked for in the body (JSON only), or ``None``.
    """

    rows: Rows
    device: str | None = None
    window: WindowChoice = None


def _column(position: int) -> str:
    return f"column {position + 1} ({FEATURE_NAMES[position]})"


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a ``Content-Type`` header; 415 unless we read it."""
    kind = (content_type or "").partition(";")[0].strip().lower()
    if kind not in BODY_TYPES:
        shown = f"Content-Type {kind!r}" if kind else "no Content-Type"
        raise RequestError(f"{shown}: send one of {', '.join(BODY_TYPES)}", 415)
    return kind


def parse_window(value: Any, where: str) -> WindowChoice:
    """A window choice from a query parameter (text) or a JSON value: a window length in
    1…:data:`~fediot.core.limits.MAX_WINDOW`, ``"run"`` or ``None``."""
    if value is None or value is False or value in ("", "false"):
        return None
    if value is True or value in ("true", "run"):
        return "run"
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise RequestError(f"{where}: {_shown(value)} is not a positive integer, 'run', "
                               "'true' or 'false'") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(f"{where}: {_shown(value)} is not a positive integer or true")
    if value > MAX_WINDOW:  # a huge window overflows the vote's int64 arithmetic
        raise RequestError(f"{where}: {_shown(value)} is more than the largest window, "
                           f"{MAX_WINDOW:,} rows")
    return value


def _shown(value: Any) -> str:
    """``repr(value)`` cut to 40 characters (values echoed in errors may be huge)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def too_many_rows(rows: int, max_rows: int, counted: str = "") -> RequestError:
    """The 413 refusal of a body with ``rows`` rows (``counted``: how they were counted)."""
    return RequestError(f"{rows:,} rows{counted}: more than the limit of {max_rows:,} per "
                        "request; split the rows into requests", 413)


def check_finite(rows: Rows, where: str = "row") -> Rows:
    """``rows`` unchanged if every value is finite; else an error naming the first bad cell."""
    with np.errstate(over="ignore", invalid="ignore"):
        finite = bool(np.isfinite(rows.sum(axis=0)).all())
    if not finite:
        bad = np.argwhere(~np.isfinite(rows))
        if len(bad):
            row, position = (int(v) for v in bad[0])
            raise RequestError(f"{where} {row + 1}, {_column(position)}: {rows[row, position]} "
                               f"is not a finite number ({len(bad)} such values in all)")
    return rows


def parse_body(body: bytes, content_type: str | None,
               max_rows: int = DEFAULT_MAX_ROWS) -> ScoreRequest:
    """A ``/score`` body of the given ``Content-Type`` → :class:`ScoreRequest` of at most
    ``max_rows`` rows (more: a 413 :class:`RequestError`)."""
    kind = media_type(content_type)
    if not body.strip():
        raise RequestError("empty body: send rows to score")
    if kind == JSON_TYPE:
        return parse_json(body, max_rows)
    if kind == CSV_TYPE:
        return ScoreRequest(parse_csv(body, max_rows))
    return ScoreRequest(parse_parquet(body, max_rows))


# --- JSON ----------------------------------------------------------------------------------


def _number(value: Any, row: int, position: int) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"row {row}, {_column(position)}: {json.dumps(value)[:40]} is not "
                           "a number")
    try:
        number = float(value)
    except OverflowError:  # an integer literal beyond float64
        number = math.inf
    if not math.isfinite(number):
        raise RequestError(f"row {row}, {_column(position)}: {number} is not a finite number")
    return number


def _json_row(raw: Any, row: int) -> list[float]:
    if isinstance(raw, dict):
        unknown = [key for key in raw if key not in _FEATURE_INDEX]
        if unknown:
            raise RequestError(f"row {row}: unknown feature {unknown[0]!r} (keys must be the "
                               f"{N_FEATURES} N-BaIoT feature names)")
        missing = [name for name in FEATURE_NAMES if name not in raw]
        if missing:
            raise RequestError(f"row {row}: missing feature {missing[0]!r} "
                               f"({len(missing)} missing of {N_FEATURES})")
        return [_number(raw[name], row, i) for i, name in enumerate(FEATURE_NAMES)]
    if not isinstance(raw, list):
        raise RequestError(f"row {row}: expected a list of {N_FEATURES} numbers or an object "
                           f"keyed by feature name; got {type(raw).__name__}")
    if len(raw) != N_FEATURES:
        raise RequestError(f"row {row} has {len(raw)} values; expected {N_FEATURES}")
    return [_number(value, row, i) for i, value in enumerate(raw)]


def json_rows(rows: Any, raw_text: bytes = b"", max_rows: int = DEFAULT_MAX_ROWS) -> Rows:
    """The ``rows`` value of a JSON body as a float64 matrix (validated value by value when the
    fast path cannot vouch for it)."""
    if not isinstance(rows, list):
        raise RequestError(f"'rows' must be a list of rows; got {type(rows).__name__}")
    if not rows:
        raise RequestError("no rows to score ('rows' is empty)")
    if len(rows) > max_rows:
        raise too_many_rows(len(rows), max_rows)
    # Fast path: a rectangular list of numbers. NumPy would turn true/false into 1/0, so a
    # body with those tokens takes the checked path.
    if b"true" not in raw_text and b"false" not in raw_text and isinstance(rows[0], list):
        try:
            array = np.array(rows)
        except ValueError:  # ragged
            array = np.empty(0)
        if array.ndim == 2 and array.shape[1] == N_FEATURES and array.dtype.kind in "fiu":
            return check_finite(array.astype(np.float64, copy=False))
    return np.array([_json_row(raw, number) for number, raw in enumerate(rows, 1)],
                    dtype=np.float64)


def parse_json(body: bytes, max_rows: int = DEFAULT_MAX_ROWS) -> ScoreRequest:
    """A JSON body: ``{"rows": ..., "device": ..., "window": ...}`` or a bare list of rows."""
    try:
        document = json.loads(body)
    except UnicodeDecodeError as error:
        raise RequestError(f"JSON body is not UTF-8 text ({error.reason})") from None
    except json.JSONDecodeError as error:
        raise RequestError(f"body is not valid JSON: {error.msg} at line {error.lineno}, "
                           f"column {error.colno}") from None
    except ValueError as error:  # e.g. an integer literal of more than 4300 digits
        raise RequestError(f"body is not usable JSON: {error}") from None
    except RecursionError:
        raise RequestError("body is not usable JSON: nested too deeply") from None
    if isinstance(document, list):
        return ScoreRequest(json_rows(document, body, max_rows))
    if not isinstance(document, dict):
        raise RequestError("JSON body must be an object with 'rows' or a list of rows; got "
                           f"{type(document).__name__}")
    unknown = [key for key in document if key not in _JSON_KEYS]
    if unknown:
        raise RequestError(f"unknown key {unknown[0]!r} in the JSON body; use "
                           f"{', '.join(_JSON_KEYS)}")
    if "rows" not in document:
        raise RequestError("JSON body has no 'rows'")
    device = document.get("device")
    if device is not None and not isinstance(device, str):
        raise RequestError(f"'device' must be a device name; got {json.dumps(device)[:40]}")
    return ScoreRequest(json_rows(document["rows"], body, max_rows), device,
                        parse_window(document.get("window"), "'window' in the body"))


# --- CSV -----------------------------------------------------------------------------------


def _value_problem(text: str) -> str | None:
    # scores are computed in float64 up to the scaler, so float32's range is no limit here
    return csv_value_problem(text, float32=False)


def _header_problem(names: Sequence[str]) -> str | None:
    mismatch = feature_name_mismatch(names)
    if mismatch is None:
        return None
    column, found, expected = mismatch
    found_text = "missing" if found is None else repr(found)
    expected_text = "nothing (too many columns)" if expected is None else repr(expected)
    return (f"line 1 is neither the N-BaIoT header nor numbers: column {column} is "
            f"{found_text}, expected {expected_text}")


def _locate_csv_problem(text: str, has_header: bool) -> str | None:
    """The first bad line of a CSV body, described; None if every line is fine (values as
    :func:`_value_problem` judges them)."""
    problem = first_csv_problem(io.StringIO(text), skip_header=has_header, float32=False)
    return None if problem is None else f"CSV {problem}"


def parse_csv(body: bytes, max_rows: int = DEFAULT_MAX_ROWS) -> Rows:
    """115 numeric columns, with the N-BaIoT header or none; errors name the line."""
    data = body.removeprefix(codecs.BOM_UTF8)
    # every row ends a line (but the last): more lines than rows allowed is refused before
    # parsing; a header is one line more, carriage-return line ends are counted after parsing
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    if lines > max_rows + 1:
        raise too_many_rows(lines, max_rows, " (lines)")

    def text() -> str:  # only a bad body is decoded whole, to find the line at fault
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            raise RequestError(f"CSV line {line}: not UTF-8 text") from None

    first_line = data.partition(b"\n")[0]
    try:
        first_line.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("CSV line 1: not UTF-8 text") from None
    try:
        first = next(csv.reader([first_line.decode()]), None) or [""]
    except csv.Error as error:  # a stray carriage return or NUL inside the line
        raise RequestError(f"CSV line 1: {error}") from None
    has_header = _value_problem(first[0]) is not None and not _looks_numeric(first[0])
    if has_header:
        problem = _header_problem([name.strip() for name in first])
        if problem:
            raise RequestError(f"CSV {problem}")
    try:
        table = pa_csv.read_csv(
            pa.BufferReader(data),
            read_options=pa_csv.ReadOptions(column_names=list(FEATURE_NAMES),
                                            skip_rows=1 if has_header else 0),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(FEATURE_NAMES, pa.float64())),
        )
    except pa.ArrowException as error:
        raise RequestError(_locate_csv_problem(text(), has_header)
                           or f"CSV body could not be parsed ({error})") from None
    if table.num_rows > max_rows:
        raise too_many_rows(table.num_rows, max_rows)
    rows = _table_rows(table)
    if len(rows) == 0:
        raise RequestError("no rows to score (the CSV body has no data lines)")
    try:
        return check_finite(rows)
    except RequestError:
        raise RequestError(_locate_csv_problem(text(), has_header)
                           or "CSV body holds values that are not finite numbers") from None


def _looks_numeric(text: str) -> bool:
    """Whether a field is meant as a number (even a bad one such as ``nan``), not a name."""
    return text.strip().lower().lstrip("+-") in ("nan", "inf", "infinity", "")


def _table_rows(table: pa.Table) -> Rows:
    rows = np.empty((table.num_rows, table.num_columns), dtype=np.float64)
    for position in range(table.num_columns):
        # nulls become NaN, which check_finite reports
        rows[:, position] = table.column(position).to_numpy(zero_copy_only=False)
    return rows


# --- Parquet -------------------------------------------------------------------------------


def _parquet_file(body: bytes, max_rows: int) -> pa_parquet.ParquetFile:
    """The body's Parquet file, its metadata checked before anything is decoded: column names
    UTF-8, at most ``max_rows`` rows, a decompressed size in proportion."""
    try:
        file = pa_parquet.ParquetFile(pa.BufferReader(body))
    except UnicodeDecodeError as error:  # a column name (or other metadata) that is not text
        raise RequestError(f"Parquet metadata is not UTF-8 text: {_shown(error.object)} "
                           "(column names must be the N-BaIoT feature names)") from None
    except (OSError, pa.ArrowException) as error:
        raise RequestError(f"body is not a readable Parquet file ({error})") from None
    metadata = file.metadata
    groups = [metadata.row_group(i) for i in range(metadata.num_row_groups)]
    declared = max(metadata.num_rows, sum(group.num_rows for group in groups))
    if metadata.num_rows < 0 or any(group.num_rows < 0 for group in groups):
        raise RequestError("body is not a readable Parquet file (negative row count)")
    if declared > max_rows:
        raise too_many_rows(declared, max_rows, " (Parquet metadata)")
    decoded = sum(group.total_byte_size for group in groups)
    if decoded > _DECODED_BYTES_PER_ROW * declared + 1024 * 1024:
        raise RequestError(f"Parquet body declares {decoded:,} decompressed bytes for "
                           f"{declared:,} rows; refused")
    return file


def parse_parquet(body: bytes, max_rows: int = DEFAULT_MAX_ROWS) -> Rows:
    """A Parquet file whose columns are ``FEATURE_NAMES``, numeric; errors name row and column.

    Names, types and the row count are checked from the file's metadata first: nothing is
    decompressed for a file that would be refused."""
    file = _parquet_file(body, max_rows)
    try:
        schema = file.schema_arrow
    except (OSError, pa.ArrowException) as error:
        raise RequestError(f"body is not a readable Parquet file ({error})") from None
    problem = _header_problem(schema.names)
    if problem:
        raise RequestError("Parquet columns: " + problem.partition(": ")[2])
    for position, field in enumerate(schema):
        if not (pa.types.is_floating(field.type) or pa.types.is_integer(field.type)):
            raise RequestError(f"Parquet {_column(position)} has type {field.type}; expected "
                               "numbers")
    try:
        table = file.read()
    except (OSError, pa.ArrowException) as error:
        raise RequestError(f"body is not a readable Parquet file ({error})") from None
    if table.num_rows > max_rows:  # the metadata lied
        raise too_many_rows(table.num_rows, max_rows)
    for position in range(table.num_columns):
        column = table.column(position)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise RequestError(f"row {row + 1}, {_column(position)}: missing value")
    rows = _table_rows(table)
    if len(rows) == 0:
        raise RequestError("no rows to score (the Parquet body has no rows)")
    return check_finite(rows)
