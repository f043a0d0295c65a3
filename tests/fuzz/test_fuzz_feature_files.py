"""Fuzzing the feature-file readers: N-BaIoT CSV and Parquet files
(:func:`fediot.core.data.read_feature_csv`, :func:`~fediot.core.data.read_feature_parquet`),
the testbed's reader (:func:`fediot.core.testbed.dataset.read_features`) and the layout scan
(:func:`fediot.core.data.open_dataset`, its ``testbed.json`` manifest included).

Inputs: CSV files with right or wrong headers, wrong column counts, non-numeric cells, NaN /
inf / float32 overflow, empty cells, quoting, stray CR / NUL, non-UTF-8 bytes, empty files;
random bytes as Parquet (bare or between ``PAR1`` magics); Parquet files with random column
types, names, nulls and values, valid ones cut or overwritten; random dataset folders.

Property: success with finite float rows of 115 columns (equal to the written values when
every cell was valid), or one :class:`~fediot.core.errors.FediotError` line naming the file
(and the line and column of a bad CSV cell) — nothing else.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pa_parquet
import pytest
from fuzz_settings import fuzz
from hypothesis import example, given
from hypothesis import strategies as st

from fediot.core.catalog import DEVICES, FEATURE_NAMES, N_FEATURES
from fediot.core.data import DataError, open_dataset, read_feature_csv, read_feature_parquet
from fediot.core.errors import FediotError
from fediot.core.testbed.dataset import read_features

HEADER = ",".join(FEATURE_NAMES)
FLOAT32_MAX = float(np.finfo(np.float32).max)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_features")


def one_line(error: BaseException, path: Path) -> str:
    message = str(error)
    assert str(path) in message, message
    assert "\n" not in message and "\r" not in message, message
    return message


def check_matrix(matrix: np.ndarray, dtype: type) -> None:
    assert matrix.ndim == 2 and matrix.shape[1] == N_FEATURES
    assert matrix.dtype == dtype
    assert np.isfinite(matrix).all()


# --- CSV --------------------------------------------------------------------------------------

FORMATS = ("{!r}", "{:g}", "{:.3e}", "{:.0f}", "{:+.6f}", "{:E}")


def good_cells(seed: int, count: int) -> list[str]:
    """``count`` valid cells, drawn from a seeded generator (115 Hypothesis draws per row would
    make the suite slow): float32-range magnitudes from 1e-30 to 1e38, both signs, zeros and
    integers, in several notations."""
    rng = np.random.default_rng(seed)
    exponents = rng.uniform(-30, 38, count)
    values = np.sign(rng.uniform(-1, 1, count)) * 10.0**exponents
    values[rng.random(count) < 0.1] = 0.0
    values = np.clip(values, -3.0e38, 3.0e38)
    formats = rng.integers(0, len(FORMATS), count)
    return [FORMATS[f].format(float(v)) if f != 3 or abs(v) < 1e15 else repr(float(v))
            for f, v in zip(formats, values, strict=True)]


BAD_CELLS = st.one_of(
    st.sampled_from([
        "", " ", "nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-3.5e38", "abc", "1_0",
        "0x10", "1,5", "--1", "1e", "e5", "١", "½", "1.0.0", "\"1\"", "\"\"", "\"a\nb\"",
        "\x00", "1\r", "nan(123)", "\u00a01", "\x0c1", "1\x0b", "\t2\t", "1\u2009",
    ]),
    st.text(max_size=6),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, list[list[float]] | None, bool]:
    """CSV bytes, the rows they hold if every line is a valid feature row, and whether an error
    must name its line (the header is right and the bytes are UTF-8 text)."""
    header = draw(st.sampled_from(["good", "good", "good", "bom", "short", "renamed", "extra",
                                   "empty", "none", "random"]))
    names = list(FEATURE_NAMES)
    if header == "short":
        del names[draw(st.integers(0, N_FEATURES - 1))]
    elif header == "renamed":
        names[draw(st.integers(0, N_FEATURES - 1))] = draw(st.text(max_size=8))
    elif header == "extra":
        names.append(draw(st.text(max_size=8)))
    head_text = {"good": HEADER, "bom": "\ufeff" + HEADER, "empty": "", "none": None,
                 "random": draw(st.text(max_size=40))}.get(header, ",".join(names))
    newline = draw(st.sampled_from(["\n", "\n", "\r\n", "\r"]))
    lines: list[str] = [] if head_text is None else [head_text]
    valid = header in ("good", "bom")
    rows: list[list[float]] = []
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["good", "good", "good", "bad", "count", "blank"]))
        if kind == "blank":
            lines.append("")
            continue
        n_cells = N_FEATURES
        if kind == "count":
            n_cells = draw(st.sampled_from([0, 1, N_FEATURES - 1, N_FEATURES + 1, 2 * N_FEATURES]))
        cells = good_cells(draw(st.integers(0, 2**32 - 1)), n_cells)
        if kind == "bad":
            cells[draw(st.integers(0, N_FEATURES - 1))] = draw(BAD_CELLS)
        values = [float(cell) for cell in cells] if kind == "good" else []
        if kind != "good" or any(abs(v) > FLOAT32_MAX for v in values):
            valid = False
        rows.append(values)
        lines.append(",".join(cells))
    text = newline.join(lines) + draw(st.sampled_from(["", newline]))
    data = text.encode("utf-8", errors="surrogatepass")
    if draw(st.integers(0, 9)) == 0:  # a non-UTF-8 or NUL byte somewhere
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\xfe\xff"])
                                      ) + data[position:]
        valid = False
        header = "damaged"
    return data, (rows if valid else None), header in ("good", "bom")


@fuzz(1500)
@given(csv=csv_files())
# regression: a header without a line end (no rows) was "unreadable CSV"
@example(csv=(HEADER.encode(), [], True))
# regression: cells Python's float() reads but pyarrow does not were not located
@example(csv=((HEADER + "\n١" + ",1" * 114 + "\n").encode(), None, True))
@example(csv=((HEADER + "\n" + "1," * 114 + "1\u00a0\n").encode(), None, True))
def test_csv_rows(folder: Path, csv: tuple[bytes, list[list[float]] | None, bool]) -> None:
    data, rows, locatable = csv
    path = folder / "fuzz.csv"
    path.write_bytes(data)
    try:
        matrix = read_feature_csv(path)
    except DataError as error:
        message = one_line(error, path)
        assert rows is None, message
        if locatable:
            assert f"{path}: line " in message, message
        return
    check_matrix(matrix, np.float32)
    if rows is not None:
        expected = np.array(rows, dtype=np.float64).reshape(-1, N_FEATURES).astype(np.float32)
        np.testing.assert_array_equal(matrix, expected)


@fuzz(500)
@given(data=st.binary(max_size=300), with_header=st.booleans())
def test_csv_random_bytes(folder: Path, data: bytes, with_header: bool) -> None:
    path = folder / "bytes.csv"
    path.write_bytes((HEADER.encode() + b"\n" if with_header else b"") + data)
    try:
        check_matrix(read_feature_csv(path), np.float32)
    except DataError as error:
        one_line(error, path)


# --- Parquet ----------------------------------------------------------------------------------

ARROW_TYPES = st.sampled_from([
    pa.float64(), pa.float32(), pa.float16(), pa.int8(), pa.int64(), pa.uint64(), pa.bool_(),
    pa.string(), pa.binary(), pa.null(), pa.timestamp("s"), pa.date32(), pa.decimal128(10, 2),
    pa.list_(pa.float64()), pa.dictionary(pa.int32(), pa.string()),
    pa.struct([("x", pa.float64())]),
])
SPECIAL_VALUES = st.sampled_from([math.nan, math.inf, -math.inf, 3.5e38, -1e300, 0.0, 5.7e17])


def _column(draw: st.DrawFn, arrow_type: pa.DataType, n_rows: int) -> pa.Array:
    if pa.types.is_floating(arrow_type):
        values = [draw(st.one_of(st.none(), SPECIAL_VALUES,
                                 st.floats(width=16 if arrow_type == pa.float16() else 64)))
                  for _ in range(n_rows)]
        if arrow_type == pa.float16():
            return pa.array(np.array([np.nan if v is None else v for v in values],
                                     dtype=np.float16), type=arrow_type)
        return pa.array(values, type=arrow_type)
    if pa.types.is_integer(arrow_type):
        bits = arrow_type.bit_width
        signed = pa.types.is_signed_integer(arrow_type)
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        return pa.array([draw(st.one_of(st.none(), st.integers(low, high)))
                         for _ in range(n_rows)], type=arrow_type)
    if arrow_type == pa.string() or pa.types.is_dictionary(arrow_type):
        return pa.array([draw(st.sampled_from(["1.5", "x", ""])) for _ in range(n_rows)],
                        type=arrow_type)
    return pa.nulls(n_rows, type=arrow_type)


@st.composite
def parquet_files(draw: st.DrawFn) -> tuple[bytes, bool]:
    """Parquet bytes, and whether they are a valid feature file."""
    n_rows = draw(st.integers(0, 4))
    names = list(FEATURE_NAMES)
    names_kind = draw(st.sampled_from(["good", "good", "good", "drop", "extra", "swap", "rename"]))
    if names_kind == "drop":
        del names[draw(st.integers(0, N_FEATURES - 1))]
    elif names_kind == "extra":
        names.insert(draw(st.integers(0, N_FEATURES)), "extra")
    elif names_kind == "swap":
        names[0], names[1] = names[1], names[0]
    elif names_kind == "rename":
        names[draw(st.integers(0, N_FEATURES - 1))] = draw(st.text(min_size=1, max_size=8))
    odd_columns = dict(draw(st.lists(st.tuples(st.integers(0, len(names) - 1), ARROW_TYPES),
                                     max_size=3)))
    columns = []
    valid = names_kind == "good"
    for position, _name in enumerate(names):
        arrow_type = odd_columns.get(position)
        if arrow_type is None:
            columns.append(pa.array(np.ones(n_rows)))
            continue
        column = _column(draw, arrow_type, n_rows)
        columns.append(column)
        if not (pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type)):
            valid = False
        else:
            values = column.to_numpy(zero_copy_only=False).astype(np.float64)
            if column.null_count or not np.all(np.abs(values) <= FLOAT32_MAX):
                valid = False
    table = pa.Table.from_arrays(columns, names=names)
    buffer = io.BytesIO()
    pa_parquet.write_table(table, buffer, row_group_size=draw(st.sampled_from([1, 2, 1000])))
    return buffer.getvalue(), valid


def feature_parquet(columns: dict[int, pa.Array], store_schema: bool = True) -> bytes:
    """A one-row Parquet feature file with ``columns`` in place of the float64 ones."""
    arrays = [columns.get(i, pa.array([1.0])) for i in range(N_FEATURES)]
    buffer = io.BytesIO()
    pa_parquet.write_table(pa.table(arrays, names=list(FEATURE_NAMES)), buffer,
                           store_schema=store_schema)
    return buffer.getvalue()


@fuzz(250)
@given(parquet=parquet_files())
# regressions: the testbed reader crashed on a text column and accepted NaN
@example(parquet=(feature_parquet({3: pa.array(["x"])}), False))
@example(parquet=(feature_parquet({0: pa.array([math.nan])}), False))
def test_parquet_columns(folder: Path, parquet: tuple[bytes, bool]) -> None:
    data, valid = parquet
    path = folder / "fuzz.parquet"
    path.write_bytes(data)
    try:
        check_matrix(read_feature_parquet(path), np.float32)
    except DataError as error:
        message = one_line(error, path)
        assert not valid, message
    else:
        assert valid
    try:
        check_matrix(read_features(path), np.float64)
    except FediotError as error:
        one_line(error, path)


@fuzz(400)
@given(data=st.data(), kind=st.sampled_from(["bytes", "magic", "mutated", "cut"]))
def test_parquet_random_and_damaged_bytes(folder: Path, data: st.DataObject, kind: str) -> None:
    if kind == "bytes":
        raw = data.draw(st.binary(max_size=300))
    elif kind == "magic":
        raw = b"PAR1" + data.draw(st.binary(max_size=300)) + b"PAR1"
    else:
        good, _ = data.draw(parquet_files())
        raw = bytearray(good)
        if kind == "cut":
            del raw[data.draw(st.integers(0, len(raw))):]
        for _ in range(data.draw(st.integers(1, 6))):
            if raw:
                raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
        raw = bytes(raw)
    path = folder / "damaged.parquet"
    path.write_bytes(raw)
    for reader, dtype in ((read_feature_parquet, np.float32), (read_features, np.float64)):
        try:
            check_matrix(reader(path), dtype)
        except FediotError as error:
            one_line(error, path)


@fuzz(100)
@given(byte=st.integers(0x80, 0xFF), position=st.integers(0, 3))
@example(byte=0x80, position=0)  # regression: a UnicodeDecodeError escaped both readers
def test_parquet_undecodable_column_name(folder: Path, byte: int, position: int) -> None:
    """A column name that is not UTF-8 (written without the Arrow schema, so the Parquet
    schema's own name is read) is a one-line error naming the file."""
    data = feature_parquet({}, store_schema=False)
    name = FEATURE_NAMES[0].encode()
    assert data.count(name) >= 1
    damaged = bytearray(name)
    damaged[position] = byte
    path = folder / "names.parquet"
    path.write_bytes(data.replace(name, bytes(damaged)))
    for reader in (read_feature_parquet, read_features):
        with pytest.raises(FediotError) as caught:
            reader(path)
        one_line(caught.value, path)


@fuzz(300)
@given(data=st.one_of(
    st.binary(max_size=200),
    st.recursive(st.one_of(st.none(), st.integers(), st.text(max_size=5)),
                 lambda inner: st.lists(inner, max_size=3)
                 | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=10).map(lambda value: json.dumps(value).encode()),
))
@example(data=b"[" * 100_000)  # regression: json.loads' RecursionError escaped open_dataset
def test_testbed_manifest(folder: Path, data: bytes) -> None:
    root = folder / "testbed"
    if not root.exists():
        write_one_testbed_file(root)
    (root / "testbed.json").write_bytes(data)
    try:
        source = open_dataset(root)
    except DataError as error:
        one_line(error, root / "testbed.json")
    else:
        assert source.layout == "testbed" and isinstance(source.manifest, Mapping)


def write_one_testbed_file(root: Path) -> None:
    path = root / DEVICES[0].name / "benign_traffic.csv"
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + "\n" + ",".join(["1"] * N_FEATURES) + "\n")
