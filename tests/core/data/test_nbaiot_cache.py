"""The parse-once cache: hits do not re-parse, entries are atomic, memory-mapped and read-only."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from nbaiot_fixtures import csv_bytes, parquet_bytes, plausible_rows

from fediot.core.data import DataError, FeatureCache, default_cache_root
from fediot.core.paths import CACHE_ENV


def _csv(tmp_path: Path, n_rows: int = 20, seed: int = 0) -> tuple[Path, np.ndarray]:
    rows = plausible_rows(n_rows, seed)
    path = tmp_path / "data" / f"rows{seed}.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(csv_bytes(rows))
    return path, rows


def test_default_root_follows_the_environment(
    private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert default_cache_root() == private_cache
    assert FeatureCache().root == private_cache
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", "/somewhere")
    assert default_cache_root() == Path("/somewhere/fediot/nbaiot")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_root() == Path.home() / ".cache" / "fediot" / "nbaiot"


def test_second_load_is_a_hit_without_reparse(tmp_path: Path) -> None:
    source, rows = _csv(tmp_path)
    first_cache = FeatureCache(tmp_path / "cache")
    first = first_cache.load(source)
    assert first_cache.parses == 1
    np.testing.assert_array_equal(first, rows.astype(np.float32))

    entry = first_cache.entry_dir(source) / "features.npy"
    written = entry.stat().st_mtime_ns
    # A new instance (as in a new process) finds the entry: no parse, entry untouched.
    second_cache = FeatureCache(tmp_path / "cache")
    second = second_cache.load(source)
    second_cache.load(source)
    assert second_cache.parses == 0
    assert entry.stat().st_mtime_ns == written
    assert isinstance(second, np.memmap)
    np.testing.assert_array_equal(second, first)


def test_loaded_matrices_are_read_only(tmp_path: Path) -> None:
    source, _ = _csv(tmp_path)
    matrix = FeatureCache(tmp_path / "cache").load(source)
    with pytest.raises(ValueError, match="read-only"):
        matrix[0, 0] = 1.0


def test_entries_are_written_atomically_and_leave_no_temporaries(tmp_path: Path) -> None:
    source, _ = _csv(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    cache.load(source)
    names = sorted(path.name for path in cache.entry_dir(source).iterdir())
    assert names == ["features.npy", "source.json"]


def test_a_changed_source_is_parsed_again(tmp_path: Path) -> None:
    source, _ = _csv(tmp_path, n_rows=10, seed=1)
    cache = FeatureCache(tmp_path / "cache")
    cache.load(source)
    replacement = plausible_rows(12, seed=2)
    source.write_bytes(csv_bytes(replacement))
    os.utime(source, ns=(1, 1))  # also change the mtime, whatever the clock resolution
    np.testing.assert_array_equal(cache.load(source), replacement.astype(np.float32))
    assert cache.parses == 2


def test_an_unusable_entry_is_rebuilt(tmp_path: Path) -> None:
    source, rows = _csv(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    cache.load(source)
    (cache.entry_dir(source) / "features.npy").write_bytes(b"garbage")
    np.testing.assert_array_equal(cache.load(source), rows.astype(np.float32))
    assert cache.parses == 2


def test_a_bad_file_leaves_no_entry(tmp_path: Path) -> None:
    source, _ = _csv(tmp_path)
    text = source.read_text().splitlines()
    text[3] = text[3].replace(",", ",x", 1)
    source.write_text("\n".join(text) + "\n")
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(DataError, match="line 4, column 2"):
        cache.load(source)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    assert cache.parses == 0


def test_parquet_and_empty_files_are_cached(tmp_path: Path) -> None:
    rows = plausible_rows(9, 5)
    parquet = tmp_path / "rows.parquet"
    parquet.write_bytes(parquet_bytes(rows))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(csv_bytes(rows[:0]))
    cache = FeatureCache(tmp_path / "cache")
    np.testing.assert_array_equal(cache.load(parquet), rows.astype(np.float32))
    assert cache.load(empty).shape == (0, 115)
    again = FeatureCache(tmp_path / "cache")
    assert again.load(empty).shape == (0, 115)
    np.testing.assert_array_equal(again.load(parquet), rows.astype(np.float32))
    assert again.parses == 0
