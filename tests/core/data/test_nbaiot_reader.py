"""Reading one feature file: real N-BaIoT rows parse exactly; bad files name file, line, column."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nbaiot_fixtures import csv_bytes, parquet_bytes, plausible_rows

from fediot.core.catalog import FEATURE_NAMES, N_FEATURES, OFFICIAL_ROW_COUNTS
from fediot.core.data import DataError, read_feature_csv, read_feature_parquet
from fediot.core.errors import FediotError

REAL_FILES = (
    "Device_unspecified/benign_traffic.csv",
    "Ecobee_Thermostat/mirai_attacks/udp.csv",
    "Doorbell_unspecified/gafgyt_attacks/udp.csv",
)


def _csv_text_values(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        return header, [row for row in reader if row]


@pytest.mark.parametrize("relative", REAL_FILES)
def test_real_rows_parse_exactly(nbaiot_dir: Path, relative: str) -> None:
    path = nbaiot_dir / relative
    matrix = read_feature_csv(path)
    header, text_rows = _csv_text_values(path)

    assert tuple(header) == FEATURE_NAMES
    assert matrix.shape == (299, N_FEATURES)
    assert matrix.dtype == np.float32
    expected = np.array([[float(value) for value in row] for row in text_rows]).astype(np.float32)
    np.testing.assert_array_equal(matrix, expected)
    # A few values against the text itself, including the first (cold-start) row.
    for row, column in [(0, 0), (0, 66), (1, 0), (150, 35), (298, 114)]:
        assert matrix[row, column] == np.float32(float(text_rows[row][column]))


def test_real_rows_keep_huge_values_and_negative_covariances(nbaiot_dir: Path) -> None:
    matrices = [read_feature_csv(nbaiot_dir / relative) for relative in REAL_FILES]
    everything = np.concatenate(matrices)
    assert np.isfinite(everything).all()
    assert float(np.abs(everything).max()) > 1e9  # HH_jit means hold absolute epoch times
    covariance = [i for i, name in enumerate(FEATURE_NAMES) if name.endswith("covariance")]
    assert (everything[:, covariance] < 0).any()


def test_real_row_counts_are_the_manifest_ones(nbaiot_dir: Path) -> None:
    with (nbaiot_dir / "MANIFEST.csv").open(newline="") as stream:
        manifest = {row["path"]: int(row["rows"]) for row in csv.DictReader(stream)}
    for relative in REAL_FILES:
        assert manifest[relative] == 299
        assert read_feature_csv(nbaiot_dir / relative).shape[0] == 299


def test_official_row_counts_equal_the_data_summary(nbaiot_dir: Path) -> None:
    summary: dict[tuple[int, str], int] = {}
    with (nbaiot_dir / "metadata" / "data_summary.csv").open(newline="") as stream:
        reader = csv.reader(stream)
        assert [cell.strip() for cell in next(reader)] == [
            "File Name",
            "Data Count",
            "Feature Count",
        ]
        for file_name, count, features in reader:
            device, traffic_class = file_name.removesuffix(".csv").split(".", 1)
            summary[(int(device), traffic_class)] = int(count)
            assert int(features) == N_FEATURES
    assert summary == dict(OFFICIAL_ROW_COUNTS)


def test_feature_names_equal_the_official_header(nbaiot_dir: Path) -> None:
    header = (nbaiot_dir / "metadata" / "demonstrate_structure.csv").read_text().strip()
    assert tuple(header.split(",")) == FEATURE_NAMES


def _write(tmp_path: Path, text: str, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _rows_text(rows: np.ndarray) -> list[str]:
    return [",".join(repr(float(v)) for v in row) for row in rows]


HEADER = ",".join(FEATURE_NAMES)


def test_data_error_is_a_fediot_error() -> None:
    assert issubclass(DataError, FediotError)


def test_wrong_header_names_column_and_position(tmp_path: Path) -> None:
    names = list(FEATURE_NAMES)
    names[37] = "HH_L3_wieght"
    path = _write(tmp_path, ",".join(names) + "\n" + "\n".join(_rows_text(plausible_rows(2, 0))))
    with pytest.raises(DataError) as caught:
        read_feature_csv(path)
    message = str(caught.value)
    assert str(path) in message
    assert "column 38" in message
    assert "'HH_L3_wieght'" in message and "'HH_L3_weight'" in message


def test_short_header_names_the_first_missing_column(tmp_path: Path) -> None:
    path = _write(tmp_path, ",".join(FEATURE_NAMES[:-1]) + "\n")
    with pytest.raises(DataError, match=r"column 115 is nothing \(too few columns\)"):
        read_feature_csv(path)


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"bad\.csv: line 1: empty"):
        read_feature_csv(_write(tmp_path, ""))


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"absent\.csv: no such file"):
        read_feature_csv(tmp_path / "absent.csv")


def test_wrong_column_count_names_file_and_line(tmp_path: Path) -> None:
    lines = _rows_text(plausible_rows(5, 1))
    lines[3] = lines[3].rsplit(",", 1)[0]  # data row 4 is line 5
    path = _write(tmp_path, HEADER + "\n" + "\n".join(lines) + "\n")
    with pytest.raises(DataError) as caught:
        read_feature_csv(path)
    assert str(caught.value) == f"{path}: line 5: 114 columns, expected 115"


@pytest.mark.parametrize(
    ("bad_value", "problem"),
    [
        ("nan", "'nan' is not a finite number"),
        ("NaN", "'NaN' is not a finite number"),
        ("inf", "'inf' is not a finite number"),
        ("-inf", "'-inf' is not a finite number"),
        ("", "empty value"),
        ("12abc", "not a number: '12abc'"),
        ("1e39", "'1e39' does not fit in float32"),
    ],
)
def test_bad_value_names_file_line_and_column(tmp_path: Path, bad_value: str, problem: str) -> None:
    rows = [line.split(",") for line in _rows_text(plausible_rows(4, 2))]
    rows[2][41] = bad_value  # line 4, column 42 (HH_L3_radius)
    path = _write(tmp_path, HEADER + "\n" + "\n".join(",".join(r) for r in rows) + "\n")
    with pytest.raises(DataError) as caught:
        read_feature_csv(path)
    assert str(caught.value) == f"{path}: line 4, column 42 ({FEATURE_NAMES[41]}): {problem}"


def test_windows_line_endings_bom_and_blank_lines_are_fine(tmp_path: Path) -> None:
    rows = plausible_rows(3, 3)
    text = "\ufeff" + HEADER + "\r\n" + "\r\n".join(_rows_text(rows)) + "\r\n\r\n"
    path = tmp_path / "crlf.csv"
    path.write_bytes(text.encode())
    np.testing.assert_array_equal(read_feature_csv(path), rows.astype(np.float32))


def test_header_only_gives_zero_rows(tmp_path: Path) -> None:
    assert read_feature_csv(_write(tmp_path, HEADER + "\n")).shape == (0, N_FEATURES)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.lists(
            st.floats(min_value=-3e38, max_value=3e38, allow_nan=False, allow_infinity=False),
            min_size=N_FEATURES,
            max_size=N_FEATURES,
        ),
        min_size=1,
        max_size=4,
    )
)
def test_any_finite_float32_range_values_round_trip(
    tmp_path_factory: pytest.TempPathFactory, values: list[list[float]]
) -> None:
    rows = np.array(values, dtype=np.float64)
    path = tmp_path_factory.mktemp("roundtrip") / "rows.csv"
    path.write_bytes(csv_bytes(rows))
    np.testing.assert_array_equal(read_feature_csv(path), rows.astype(np.float32))


def test_parquet_reads_and_checks(tmp_path: Path) -> None:
    rows = plausible_rows(7, 4)
    good = tmp_path / "good.parquet"
    good.write_bytes(parquet_bytes(rows))
    np.testing.assert_array_equal(read_feature_parquet(good), rows.astype(np.float32))

    rows[5, 100] = np.nan
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(parquet_bytes(rows))
    with pytest.raises(
        DataError, match=rf"bad\.parquet: row 6, column 101 \({FEATURE_NAMES[100]}\)"
    ):
        read_feature_parquet(bad)

    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"this is not parquet")
    with pytest.raises(DataError, match=r"junk\.parquet: not a readable Parquet file"):
        read_feature_parquet(junk)
