"""``fediot data synth`` through Typer's test runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import fediot.faces.cli.data  # noqa: F401  (registers the command)
from fediot.core.testbed import cache_key
from fediot.faces.cli.app import app, console, err_console


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 250)
    monkeypatch.setattr(err_console, "width", 5000)


def synth(*arguments: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["data", "synth", *arguments])
    return result.exit_code, result.stdout, result.stderr


def test_synth_builds_then_reports_a_cache_hit(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    code, out, _ = synth("--scale", "0.01", "--seed", "3", "--cache-dir", str(cache))
    assert code == 0, out
    root = cache / cache_key(seed=3, scale=0.01, file_format="parquet")
    assert f"generated: {root}" in out.replace("\n", "")
    assert "1 Danmini" in out and "9 SimpleHome 1003" in out and "5 Provision 737E" in out
    manifest = json.loads((root / "testbed.json").read_text())
    ennio = [f for f in manifest["files"] if f["uci_id"] == 3]
    assert len(ennio) == 6
    assert f"89 files, {sum(f['rows'] for f in manifest['files']):,} feature rows" in out
    code, out, _ = synth("--scale", "0.01", "--seed", "3", "--cache-dir", str(cache))
    assert code == 0 and "cached:" in out


def test_synth_writes_csv_into_out(tmp_path: Path) -> None:
    out_dir = tmp_path / "data"
    code, out, _ = synth("--scale", "0.01", "--format", "csv", "--out", str(out_dir),
                         "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, out
    assert (out_dir / "Ecobee_Thermostat" / "mirai_attacks" / "udpplain.csv").is_file()
    assert json.loads((out_dir / "testbed.json").read_text())["format"] == "csv"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--scale", "0"], "--scale must be a number > 0"),
        (["--scale", "-2"], "--scale must be a number > 0"),
        (["--format", "xls"], "--format must be one of parquet, csv"),
        (["--seed", "-1"], "--seed must be ≥ 0"),
    ],
)
def test_bad_values_give_one_error_line_and_exit_2(arguments: list[str], message: str,
                                                    tmp_path: Path) -> None:
    code, _, err = synth(*arguments, "--cache-dir", str(tmp_path))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())


def test_a_foreign_out_folder_is_refused(tmp_path: Path) -> None:
    out_dir = tmp_path / "notes"
    out_dir.mkdir()
    (out_dir / "todo.txt").write_text("keep me")
    code, _, err = synth("--scale", "0.01", "--out", str(out_dir),
                         "--cache-dir", str(tmp_path / "c"))
    assert code == 2 and "not empty" in err
    assert (out_dir / "todo.txt").read_text() == "keep me"


def test_info_names_the_folders_it_skips_and_why(tmp_path: Path) -> None:
    import fediot.faces.cli.nbaiot  # noqa: F401  (registers `data info`)
    from fediot.core.catalog import FEATURE_NAMES, N_FEATURES
    from fediot.core.data import open_dataset

    root = tmp_path / "nbaiot"
    (root / "Danmini_Doorbell" / "gafgyt_attacks").mkdir(parents=True)
    (root / "Danmini_Doorbell" / "captures").mkdir()
    (root / "Fridge").mkdir()
    (root / "Danmini_Doorbell" / "benign_traffic.csv").write_text(
        ",".join(FEATURE_NAMES) + "\n" + ",".join(["1"] * N_FEATURES) + "\n")
    assert dict(open_dataset(root).skipped) == {
        "Danmini_Doorbell/captures/": "not one of gafgyt_attacks, mirai_attacks",
        "Fridge/": "not a catalogued device's folder (expected e.g. Danmini_Doorbell)"}
    result = CliRunner().invoke(app, ["data", "info", str(root), "--cache-dir",
                                      str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "skipped Danmini_Doorbell/captures/: not one of gafgyt_attacks, mirai_attacks" in (
        result.stdout)
    assert "skipped Fridge/: not a catalogued device's folder" in result.stdout
    assert "1 file, 1 rows" in result.stdout


def test_info_skips_nothing_in_a_clean_folder(tmp_path: Path) -> None:
    from fediot.core.catalog import FEATURE_NAMES, N_FEATURES
    from fediot.core.data import open_dataset

    (tmp_path / "1.benign.csv").write_text(
        ",".join(FEATURE_NAMES) + "\n" + ",".join(["1"] * N_FEATURES) + "\n")
    assert dict(open_dataset(tmp_path).skipped) == {}
    (tmp_path / "extra").mkdir()
    assert dict(open_dataset(tmp_path).skipped) == {
        "extra/": "the Kaggle layout reads only <id>.<class>.csv files in the dataset folder "
                  "itself"}
