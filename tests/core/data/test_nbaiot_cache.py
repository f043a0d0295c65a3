"""The parse-once cache: hits do not re-parse, entries are atomic, memory-mapped and read-only."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from nbaiot_fixtures import csv_bytes, parquet_bytes, plausible_rows

from exited_process import exited_process
from fediot.core.data import DataError, FeatureCache, default_cache_root
from fediot.core.liveness import STALE_SECONDS, owner_tag
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


def test_the_help_text_names_the_folders_cache_dir_chooses(
    private_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data info --help` / `data synth --help` describe the same order cache_dir follows."""
    from fediot.core.paths import cache_dir, describe_cache_dir

    described = describe_cache_dir("nbaiot").split(", else ")
    assert described == ["$FEDIOT_CACHE_DIR/nbaiot", "$XDG_CACHE_HOME/fediot/nbaiot",
                         "~/.cache/fediot/nbaiot"]
    monkeypatch.setenv(CACHE_ENV, "/first")
    monkeypatch.setenv("XDG_CACHE_HOME", "/second")
    assert cache_dir("nbaiot") == Path("/first/nbaiot")
    monkeypatch.delenv(CACHE_ENV)
    assert cache_dir("nbaiot") == Path("/second/fediot/nbaiot")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir("nbaiot") == Path(described[2]).expanduser()


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


@pytest.mark.parametrize("how", ["in place", "replaced"])
def test_a_same_size_edit_that_keeps_the_mtime_is_parsed_again(tmp_path: Path, how: str) -> None:
    source, rows = _csv(tmp_path)
    cache = FeatureCache(tmp_path / "cache")
    cache.load(source)
    before = source.stat()
    time.sleep(0.05)  # a guard: lets a coarse (per-tick) ctime clock move past the first write
    lines = source.read_bytes().splitlines(keepends=True)
    lines[1], lines[2] = lines[2], lines[1]  # two data rows swapped: same bytes, same size
    if how == "in place":
        with source.open("r+b") as stream:
            stream.write(b"".join(lines))
    else:  # an atomic save: a new file renamed over the old one
        other = source.with_name("new.csv")
        other.write_bytes(b"".join(lines))
        other.replace(source)
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = source.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert (after.st_ino == before.st_ino) == (how == "in place")
    swapped = rows[[1, 0, *range(2, len(rows))]]
    np.testing.assert_array_equal(cache.load(source), swapped.astype(np.float32))
    assert cache.parses == 2


def _aged(path: Path, seconds: float) -> Path:
    moment = time.time() - seconds
    os.utime(path, (moment, moment))
    return path


def test_leftovers_of_killed_writers_are_removed_on_the_next_start(tmp_path: Path) -> None:
    source, rows = _csv(tmp_path)
    root = tmp_path / "cache"
    dead = exited_process()["tag"]
    entry, other = root / ("0" * 32), root / ("f" * 32)
    entry.mkdir(parents=True)
    other.mkdir()
    leftovers = [entry / f".features-{dead}-k2j3x9.npy.tmp",
                 entry / f".source.json-{dead}-a8b7c6.tmp",
                 other / ".features-oldname.npy.tmp"]  # from before owner tags, long ago
    kept = [entry / f".features-{owner_tag()}-live12.npy.tmp",
            other / ".features-recent.npy.tmp",  # no owner to check, and young
            entry / "notes.txt"]
    for path in [*leftovers, *kept]:
        path.write_bytes(b"partial")
    _aged(leftovers[2], 2 * STALE_SECONDS)
    _aged(kept[0], 2 * STALE_SECONDS)  # a live writer's file stays, however old

    cache = FeatureCache(root)
    np.testing.assert_array_equal(cache.load(source), rows.astype(np.float32))
    assert not any(path.exists() for path in leftovers)
    assert all(path.exists() for path in kept)
    assert cache.remove_leftovers() == []  # nothing more to remove


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
