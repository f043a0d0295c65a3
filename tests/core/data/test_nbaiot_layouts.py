"""Layout detection (UCI, Kaggle, testbed) and loading through the cache."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from nbaiot_fixtures import (
    FileKey,
    Rows,
    fixture_counts,
    fixture_rows,
    write_kaggle_tree,
    write_testbed_tree,
    write_uci_tree,
)

from fediot.core.catalog import BENIGN, TRAFFIC_CLASSES
from fediot.core.data import DataError, FeatureCache, open_dataset


def _assert_loads_everything(
    root: Path, expected_layout: str, rows: Mapping[FileKey, Rows]
) -> None:
    source = open_dataset(root)
    assert source.layout == expected_layout
    assert list(source.files) == sorted(
        rows, key=lambda key: (key[0], TRAFFIC_CLASSES.index(key[1]))
    )
    assert source.devices() == sorted({uci_id for uci_id, _ in rows})
    for (uci_id, traffic_class), matrix in rows.items():
        loaded = source.load(uci_id, traffic_class)
        np.testing.assert_array_equal(loaded, matrix.astype(np.float32))
        assert source.row_count(uci_id, traffic_class) == matrix.shape[0]


def test_uci_layout(tmp_path: Path) -> None:
    rows = fixture_rows(fixture_counts([1, 3, 7]))
    root = write_uci_tree(tmp_path / "uci", rows)
    (root / "data_summary.csv").write_text("metadata is ignored\n")
    (root / "metadata").mkdir()
    _assert_loads_everything(root, "uci", rows)
    source = open_dataset(root)
    assert source.is_official and source.manifest is None
    assert source.classes(3) == [BENIGN, *(c for c in TRAFFIC_CLASSES if c.startswith("gafgyt"))]


def test_kaggle_layout(tmp_path: Path) -> None:
    rows = fixture_rows(fixture_counts([2, 9]))
    root = write_kaggle_tree(tmp_path / "kaggle", rows)
    _assert_loads_everything(root, "kaggle", rows)
    assert open_dataset(root).file(9, "mirai.udpplain").name == "9.mirai.udpplain.csv"


def test_testbed_layout_with_parquet_and_csv(tmp_path: Path) -> None:
    rows = fixture_rows(fixture_counts([4]))
    root = write_testbed_tree(tmp_path / "testbed", rows, csv_keys=[(4, "gafgyt.tcp")])
    _assert_loads_everything(root, "testbed", rows)
    source = open_dataset(root)
    assert not source.is_official
    assert source.manifest == {"generator": "fixture", "seed": 0}
    assert source.file(4, BENIGN).suffix == ".parquet"
    assert source.file(4, "gafgyt.tcp").suffix == ".csv"


def test_real_shared_files_in_their_nonstandard_folders(nbaiot_dir: Path) -> None:
    # Only Ecobee_Thermostat is a catalogue device folder; the *_unspecified ones are ignored.
    source = open_dataset(nbaiot_dir)
    assert source.layout == "uci"
    assert dict(source.files) == {
        (2, "mirai.udp"): nbaiot_dir / "Ecobee_Thermostat" / "mirai_attacks" / "udp.csv"
    }
    assert source.load(2, "mirai.udp").shape == (299, 115)


def test_cache_is_hit_through_the_source(tmp_path: Path) -> None:
    rows = fixture_rows(fixture_counts([1]))
    root = write_uci_tree(tmp_path / "uci", rows)
    first = open_dataset(root, FeatureCache(tmp_path / "cache"))
    for key in first.files:
        first.load(*key)
    assert first.cache.parses == len(rows)
    second = open_dataset(root, FeatureCache(tmp_path / "cache"))
    for key in second.files:
        second.load(*key)
    assert second.cache.parses == 0


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nowhere: no such folder; expected one of: the UCI"):
        open_dataset(tmp_path / "nowhere")


def test_folder_without_a_layout_lists_the_expected_ones(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError) as caught:
        open_dataset(tmp_path)
    message = str(caught.value)
    assert "no N-BaIoT data found" in message
    for expected in ("Danmini_Doorbell/benign_traffic.csv", "1.gafgyt.combo.csv", "testbed.json"):
        assert expected in message
    assert "\n" not in message


def test_a_file_is_not_a_folder(tmp_path: Path) -> None:
    archive = tmp_path / "nbaiot.zip"
    archive.write_bytes(b"PK")
    with pytest.raises(DataError, match="is a file, expected a dataset folder"):
        open_dataset(archive)


def test_mixed_layouts_are_rejected(tmp_path: Path) -> None:
    rows = fixture_rows(fixture_counts([1]))
    write_uci_tree(tmp_path, rows)
    write_kaggle_tree(tmp_path, rows)
    with pytest.raises(DataError, match="mixes the UCI layout"):
        open_dataset(tmp_path)


def test_unknown_attack_file_is_named(tmp_path: Path) -> None:
    write_uci_tree(tmp_path, fixture_rows(fixture_counts([1])))
    stray = tmp_path / "Danmini_Doorbell" / "mirai_attacks" / "flood.csv"
    stray.write_text("x\n")
    with pytest.raises(DataError, match=r"flood\.csv: unknown mirai attack 'flood'"):
        open_dataset(tmp_path)


def test_mirai_for_a_device_without_mirai_is_rejected(tmp_path: Path) -> None:
    rows = fixture_rows(fixture_counts([1]))
    write_kaggle_tree(tmp_path, {(3, "mirai.ack"): rows[(1, "mirai.ack")]})
    with pytest.raises(DataError, match=r"3\.mirai\.ack\.csv: N-BaIoT has no 'mirai\.ack' traffic"):
        open_dataset(tmp_path)


def test_unextracted_rar_is_explained(tmp_path: Path) -> None:
    write_uci_tree(tmp_path, {(1, BENIGN): fixture_rows({(1, BENIGN): 5})[(1, BENIGN)]})
    (tmp_path / "Danmini_Doorbell" / "gafgyt_attacks.rar").write_bytes(b"Rar!")
    with pytest.raises(DataError, match=r"gafgyt_attacks\.rar: not extracted"):
        open_dataset(tmp_path)


def test_testbed_with_both_formats_of_a_file_is_ambiguous(tmp_path: Path) -> None:
    rows = fixture_rows({(5, BENIGN): 4})
    write_testbed_tree(tmp_path, rows, csv_keys=[])
    write_uci_tree(tmp_path, rows, ".csv")
    with pytest.raises(DataError, match=r"both benign_traffic\.csv and benign_traffic\.parquet"):
        open_dataset(tmp_path)


def test_bad_testbed_manifest(tmp_path: Path) -> None:
    write_testbed_tree(tmp_path, fixture_rows({(5, BENIGN): 4}), csv_keys=[])
    (tmp_path / "testbed.json").write_text('{"a": 1,\n oops}')
    with pytest.raises(DataError, match=r"testbed\.json: line 2: invalid JSON"):
        open_dataset(tmp_path)
    (tmp_path / "testbed.json").write_text(json.dumps([1, 2]))
    with pytest.raises(DataError, match="expected a JSON object"):
        open_dataset(tmp_path)


def test_bad_keys_are_named(tmp_path: Path) -> None:
    source = open_dataset(write_uci_tree(tmp_path, fixture_rows(fixture_counts([3]))))
    with pytest.raises(DataError, match=r"unknown traffic class 'mirai\.flood'"):
        source.load(3, "mirai.flood")
    with pytest.raises(DataError, match="no N-BaIoT device 12"):
        source.load(12, BENIGN)
    with pytest.raises(DataError, match=r"no 'mirai\.ack' file for device 3 \(Ennio_Doorbell\)"):
        source.load(3, "mirai.ack")
    with pytest.raises(DataError, match=r"no 'benign' file for device 1 .* it has: nothing"):
        source.load(1, BENIGN)


def test_the_data_layer_stays_pure() -> None:
    code = (
        "import sys, fediot.core.data; "
        "bad = sorted(m for m in ('rich', 'typer', 'flwr') if m in sys.modules); "
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
