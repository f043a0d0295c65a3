"""The testbed dataset on disk: layout, manifest, determinism, cache, formats, errors."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exited_process import exited_process, running_process
from fediot.core.catalog import DEVICES, FEATURE_NAMES, OFFICIAL_ROW_COUNTS, TRAFFIC_CLASSES
from fediot.core.data.layouts import open_dataset
from fediot.core.features.extractor import extract_features
from fediot.core.features.pcap import read_capture
from fediot.core.features.relations import relation_violations
from fediot.core.liveness import STALE_SECONDS, owner_tag
from fediot.core.testbed import (
    MANIFEST_NAME,
    TestbedDataset,
    TestbedError,
    build_testbed,
    cache_key,
    open_testbed,
    packet_count,
)
from fediot.core.testbed import dataset as testbed_dataset
from fediot.core.testbed.dataset import read_features, remove_build_leftovers
from fediot.core.testbed.network import DEVICE_HOSTS

SCALE = 0.05


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("testbed-cache")


@pytest.fixture(scope="module")
def dataset(cache: Path) -> TestbedDataset:
    return build_testbed(seed=0, scale=SCALE, cache_dir=cache)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_has_every_n_baiot_file_and_nothing_else(dataset: TestbedDataset) -> None:
    root = dataset.root
    assert root.name == cache_key(seed=0, scale=SCALE, file_format="parquet")
    expected = set()
    for device in DEVICES:
        expected.add(f"{device.name}/benign_traffic.parquet")
        for traffic_class in device.traffic_classes[1:]:
            botnet, attack = traffic_class.split(".")
            expected.add(f"{device.name}/{botnet}_attacks/{attack}.parquet")
    found = {str(p.relative_to(root)) for p in root.rglob("*.parquet")}
    assert found == expected
    assert len(found) == 89
    for uci_id in (3, 7):
        folder = root / next(d.name for d in DEVICES if d.uci_id == uci_id)
        assert not (folder / "mirai_attacks").exists()


def test_manifest_matches_the_files(dataset: TestbedDataset) -> None:
    manifest = json.loads((dataset.root / MANIFEST_NAME).read_text())
    assert manifest["seed"] == 0 and manifest["scale"] == SCALE
    assert manifest["format"] == "parquet" and manifest["generator_version"]
    assert manifest["created_at"]
    assert len(manifest["files"]) == 89
    total = 0
    for item in manifest["files"]:
        path = dataset.root / item["path"]
        features = read_features(path)
        assert features.shape == (item["rows"], len(FEATURE_NAMES))
        assert features.dtype == np.float64
        assert np.isfinite(features).all(), item["path"]
        assert item["rows"] == packet_count(item["uci_id"], item["traffic_class"], SCALE)
        assert item["traffic_class"] in TRAFFIC_CLASSES
        assert sha256(path) == item["sha256"]
        total += item["rows"]
    assert manifest["total_rows"] == total


def test_the_project_reader_opens_it_as_the_testbed_layout(dataset: TestbedDataset,
                                                           tmp_path: Path) -> None:
    from fediot.core.data.cache import FeatureCache

    source = open_dataset(dataset.root, cache=FeatureCache(tmp_path / "parsed"))
    assert source.layout == "testbed"
    assert len(source.files) == 89
    matrix = np.asarray(source.load(2, "mirai.ack"))
    expected = dataset.load(2, "mirai.ack")
    np.testing.assert_allclose(matrix, expected.astype(np.float32), rtol=1e-6)


@pytest.mark.slow
def test_same_seed_same_bytes_other_seed_other_bytes(dataset: TestbedDataset,
                                                     tmp_path: Path) -> None:
    again = build_testbed(seed=0, scale=SCALE, cache_dir=tmp_path / "a")
    other = build_testbed(seed=1, scale=SCALE, cache_dir=tmp_path / "b")
    assert not again.from_cache and not other.from_cache
    for first, second, third in zip(dataset.entries(), again.entries(), other.entries(),
                                    strict=True):
        assert first["path"] == second["path"] == third["path"]
        assert (dataset.root / first["path"]).read_bytes() == (
            again.root / second["path"]).read_bytes()
        assert first["sha256"] != third["sha256"], first["path"]


def test_a_smaller_scale_gives_the_first_rows_of_a_larger_one(dataset: TestbedDataset,
                                                             tmp_path: Path) -> None:
    small = build_testbed(seed=0, scale=0.01, cache_dir=tmp_path)
    for item in small.entries():
        rows = small.load(item["uci_id"], item["traffic_class"])
        larger = dataset.load(item["uci_id"], item["traffic_class"])
        assert len(rows) < len(larger)
        assert np.array_equal(rows, larger[: len(rows)]), item["path"]


def test_second_call_is_a_cache_hit(dataset: TestbedDataset, cache: Path) -> None:
    manifest = dataset.root / MANIFEST_NAME
    before = manifest.stat().st_mtime_ns
    again = build_testbed(seed=0, scale=SCALE, cache_dir=cache)
    assert again.from_cache
    assert again.root == dataset.root
    assert manifest.stat().st_mtime_ns == before
    assert not list(cache.glob(".*building*"))


def test_cache_location_follows_the_environment(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv("FEDIOT_CACHE_DIR", str(tmp_path / "env"))
    built = build_testbed(seed=2, scale=0.01)
    assert built.root == tmp_path / "env" / "testbed" / cache_key(seed=2, scale=0.01,
                                                                  file_format="parquet")
    assert build_testbed(seed=2, scale=0.01).from_cache


def test_out_gets_a_copy_of_the_cached_dataset(dataset: TestbedDataset, cache: Path,
                                               tmp_path: Path) -> None:
    out = tmp_path / "mine"
    copied = build_testbed(out, seed=0, scale=SCALE, cache_dir=cache)
    assert copied.from_cache and copied.root == out
    for item in copied.entries():
        assert sha256(out / item["path"]) == item["sha256"]
    assert build_testbed(out, seed=0, scale=SCALE, cache_dir=cache).from_cache


@pytest.mark.slow
def test_out_is_built_directly_when_the_cache_is_cold(tmp_path: Path) -> None:
    out = tmp_path / "direct"
    out.mkdir()  # an empty folder is fine
    built = build_testbed(out, seed=0, scale=0.01, cache_dir=tmp_path / "cold")
    assert not built.from_cache
    assert (out / MANIFEST_NAME).is_file()
    assert not (tmp_path / "cold").exists()
    # Another seed replaces the testbed there.
    reseeded = build_testbed(out, seed=5, scale=0.01, cache_dir=tmp_path / "cold")
    assert reseeded.seed == 5 and open_testbed(out).seed == 5


def test_an_incomplete_testbed_is_rebuilt(tmp_path: Path) -> None:
    built = build_testbed(seed=0, scale=0.01, cache_dir=tmp_path)
    victim = built.path(5, "mirai.syn")
    victim.unlink()
    rebuilt = build_testbed(seed=0, scale=0.01, cache_dir=tmp_path)
    assert not rebuilt.from_cache
    assert victim.is_file()


def _partial_build(folder: Path, age: float = 0.0) -> Path:
    """A folder as a build leaves it: a device folder with one file, all ``age`` seconds old."""
    (folder / "Danmini_Doorbell").mkdir(parents=True)
    (folder / "Danmini_Doorbell" / "benign_traffic.parquet").write_bytes(b"partial")
    moment = time.time() - age
    for path in (folder / "Danmini_Doorbell" / "benign_traffic.parquet",
                 folder / "Danmini_Doorbell", folder):
        os.utime(path, (moment, moment))
    return folder


def test_partial_builds_of_killed_processes_are_removed_on_the_next_start(
        tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    built = build_testbed(seed=0, scale=0.01, cache_dir=cache_dir)
    name = built.root.name
    dead = exited_process()["tag"]
    leftovers = [
        _partial_build(cache_dir / f".{name}.building-{dead}-0a1b2c3d"),
        _partial_build(cache_dir / f".{name}.old-{dead}-0a1b2c3d"),
        _partial_build(cache_dir / f".other.building-{dead}-99887766"),  # another key's
        # before owner tags a bare pid, which says nothing once reused: gone when old
        _partial_build(cache_dir / f".{name}.building-4242-deadbeef", age=2 * STALE_SECONDS),
    ]
    kept = [
        # a live build (this process), however old
        _partial_build(cache_dir / f".{name}.building-{owner_tag()}-5e6f7a8b",
                       age=2 * STALE_SECONDS),
        _partial_build(cache_dir / f".{name}.building-4243-deadbeef"),  # no owner, but young
        _partial_build(cache_dir / f".{name}.notes-{dead}"),  # not a build folder
    ]
    with running_process() as concurrent:  # a build another live process is filling
        busy = _partial_build(cache_dir / f".{name}.building-{concurrent}-1c2d3e4f",
                              age=2 * STALE_SECONDS)
        again = build_testbed(seed=0, scale=0.01, cache_dir=cache_dir)  # a cache hit
        assert again.from_cache
        assert not any(path.exists() for path in leftovers)
        assert all(path.is_dir() for path in [*kept, busy])
    assert remove_build_leftovers(cache_dir) == [busy]  # its process has ended now


@pytest.mark.slow
def test_builds_of_one_testbed_finishing_together_keep_the_first(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two commands (or test workers) building the same testbed at once: each finished build
    finds no testbed in place, then they publish one after the other (the worst interleaving,
    forced here). The first published testbed stays, untouched; the others return it; no
    temporary folder is left behind."""
    builders = 3
    checked_together = threading.Barrier(builders, timeout=900)
    generate, complete_manifest = testbed_dataset._generate, testbed_dataset._complete_manifest
    mine = threading.local()  # this builder's build folder (its inode survives the rename)
    order_of_build: dict[int, int] = {}

    def generate_and_note(root: Path, *args: Any) -> dict[str, Any]:
        manifest = generate(root, *args)
        mine.build = root.stat().st_ino
        return manifest

    def check_then_wait(root: Path, expected: Any = None) -> dict[str, Any] | None:
        found = complete_manifest(root, expected)
        if getattr(mine, "build", None) is not None and mine.build not in order_of_build:
            # every builder has seen "nothing there yet"; then they go in turn
            order_of_build[mine.build] = checked_together.wait()
            time.sleep(0.5 * order_of_build[mine.build])
        return found

    monkeypatch.setattr(testbed_dataset, "_generate", generate_and_note)
    monkeypatch.setattr(testbed_dataset, "_complete_manifest", check_then_wait)
    with ThreadPoolExecutor(builders) as pool:
        built = list(pool.map(lambda _: build_testbed(seed=0, scale=0.001, cache_dir=tmp_path),
                              range(builders)))
    first = next(build for build, order in order_of_build.items() if order == 0)
    kept = open_testbed(built[0].root)
    assert kept.root.stat().st_ino == first
    assert [path.name for path in tmp_path.iterdir()] == [kept.root.name]
    assert all(dataset.root == kept.root and dict(dataset.manifest) == dict(kept.manifest)
               for dataset in built)


def test_csv_format_holds_the_same_numbers(dataset: TestbedDataset, tmp_path: Path) -> None:
    csv = build_testbed(seed=0, scale=SCALE, file_format="csv", cache_dir=tmp_path)
    path = csv.path(1, "benign")
    assert path.suffix == ".csv"
    assert path.read_text().splitlines()[0] == ",".join(FEATURE_NAMES)
    assert np.array_equal(csv.load(1, "benign"), dataset.load(1, "benign"))


def test_pcap_option_writes_readable_captures(tmp_path: Path) -> None:
    built = build_testbed(seed=0, scale=0.01, pcap=True, cache_dir=tmp_path)
    for uci_id, traffic_class in [(4, "benign"), (1, "mirai.ack")]:
        item = built.entry(uci_id, traffic_class)
        packets = read_capture(built.root / item["pcap"]).packets
        assert packets.timestamp[0] == item["first_packet_epoch"]
        assert packets.timestamp[-1] == item["last_packet_epoch"]
        # The pcap holds every frame of the port; the file has a row per frame the device sent.
        sent = packets.src_mac == DEVICE_HOSTS[uci_id].mac
        assert len(packets) > item["rows"] == np.count_nonzero(sent)
        np.testing.assert_array_equal(extract_features(packets)[sent],
                                      built.load(uci_id, traffic_class))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"scale": 0.0}, "scale must be"),
        ({"scale": -1.0}, "scale must be"),
        ({"scale": float("nan")}, "scale must be"),
        ({"file_format": "xls"}, "unknown format 'xls'"),
        ({"seed": -1}, "seed must be"),
        ({"seed": 2**32}, r"seed must be an integer in 0…4294967295"),
        ({"scale": 1e9}, r"scale must be a number in \(0, 10\], got 1000000000.0"),
    ],
)
def test_bad_arguments_raise_one_clear_error(arguments: dict[str, object], message: str,
                                             tmp_path: Path) -> None:
    with pytest.raises(TestbedError, match=message):
        build_testbed(cache_dir=tmp_path, **arguments)  # type: ignore[arg-type]


def test_a_foreign_folder_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(TestbedError, match="not empty"):
        build_testbed(out, scale=0.01, cache_dir=tmp_path / "c")
    assert (out / "holiday.jpg").read_bytes() == b"\xff\xd8"


@pytest.mark.slow
def test_default_scale_has_n_baiot_benign_row_counts(tmp_path: Path) -> None:
    built = build_testbed(cache_dir=tmp_path)
    assert 700_000 <= built.manifest["total_rows"] <= 900_000
    for item in built.entries():
        if item["traffic_class"] == "benign":
            assert item["rows"] == OFFICIAL_ROW_COUNTS[(item["uci_id"], "benign")]
            hours = (item["last_packet_epoch"] - item["first_packet_epoch"]) / 3600
            assert hours >= 48, item["path"]
        else:
            assert item["rows"] >= 2_000, item["path"]
        assert sha256(built.root / item["path"]) == item["sha256"]
        assert relation_violations(built.load(item["uci_id"], item["traffic_class"])) == []
    assert built.load(4, "benign").shape[0] == built.rows(4, "benign")
