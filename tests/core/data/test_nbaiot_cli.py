"""``fediot data info`` and ``fediot data download`` through Typer's test runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from nbaiot_fixtures import fixture_counts, fixture_rows, uci_zip, write_kaggle_tree, write_uci_tree
from range_http_server import RangeServer, Served
from typer.testing import CliRunner

import fediot.faces.cli.nbaiot  # noqa: F401  (registers the commands)
from fediot.core.catalog import OFFICIAL_ROW_COUNTS
from fediot.faces.cli.app import app, console, err_console


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 250)
    monkeypatch.setattr(err_console, "width", 5000)  # no wrapping of long errors


def test_info_on_a_uci_folder(tmp_path: Path) -> None:
    counts = fixture_counts([1, 7])
    root = write_uci_tree(tmp_path / "uci", fixture_rows(counts))
    result = CliRunner().invoke(
        app, ["data", "info", str(root), "--cache-dir", str(tmp_path / "c")]
    )
    assert result.exit_code == 0, result.output
    assert "(uci layout)" in result.stdout
    assert "1 Danmini_Doorbell" in result.stdout and "7 Samsung_SNH_1011_N_Webcam" in result.stdout
    assert "Danmini_Doorbell/mirai_attacks/udpplain.csv" in result.stdout
    assert f"{OFFICIAL_ROW_COUNTS[(1, 'mirai.udp')]:,}" in result.stdout
    assert result.stdout.count("differs") == len(counts)
    total = sum(counts.values())
    assert f"{len(counts)} files, {total:,} rows" in result.stdout
    assert (
        f"{len(counts)} of {len(counts)} row counts differ from the official ones" in result.stdout
    )
    assert f"{89 - len(counts)} of the 89 official files are absent" in result.stdout


def test_info_on_the_real_shared_rows(nbaiot_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["data", "info", str(nbaiot_dir), "--cache-dir", str(tmp_path / "c")]
    )
    assert result.exit_code == 0, result.output
    assert "2 Ecobee_Thermostat" in result.stdout
    assert "299" in result.stdout and "151,481" in result.stdout


def test_info_on_a_kaggle_folder(tmp_path: Path) -> None:
    root = write_kaggle_tree(tmp_path / "kaggle", fixture_rows(fixture_counts([3])))
    result = CliRunner().invoke(app, ["data", "info", str(root)])
    assert result.exit_code == 0, result.output
    assert "(kaggle layout)" in result.stdout
    assert "3.gafgyt.udp.csv" in result.stdout


def test_info_error_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "info", str(tmp_path / "missing")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert result.stderr.strip().count("\n") == 0
    assert "no such folder" in result.stderr


def test_download_command(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(3,))
    with RangeServer(Served(fixture.content)) as server:
        result = CliRunner().invoke(
            app,
            [
                "data",
                "download",
                str(tmp_path / "nbaiot"),
                "--url",
                server.url,
                "--no-verify-counts",
                "--remove-archive",
            ],
        )
    assert result.exit_code == 0, result.output
    assert "N-BaIoT ready in" in result.stdout and "6 files, devices 3" in result.stdout
    assert (tmp_path / "nbaiot" / "Ennio_Doorbell" / "gafgyt_attacks" / "junk.csv").is_file()
    assert not (tmp_path / "nbaiot.zip").exists()


def test_download_command_reports_count_mismatch_as_one_line(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(3,))
    with RangeServer(Served(fixture.content)) as server:
        result = CliRunner().invoke(
            app, ["data", "download", str(tmp_path / "nbaiot"), "--url", server.url]
        )
    assert result.exit_code == 2
    assert "row counts differ from the official ones" in result.stderr
    assert "Ennio_Doorbell/benign_traffic.csv: expected 39100 rows" in result.stderr
    assert not (tmp_path / "nbaiot").exists()
