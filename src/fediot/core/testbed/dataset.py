"""The embedded default data: every simulated capture turned into N-BaIoT feature files.

:func:`build_testbed` simulates the 89 captures of N-BaIoT (nine devices; benign, five Gafgyt
and, except for Ennio and Samsung, five Mirai attacks), runs each through the project's
feature extractor (fresh state per capture file, every frame of the device's port) and keeps,
as N-BaIoT did, the rows of the frames the device sent (see
:mod:`fediot.core.testbed.simulator`); then it writes the *testbed layout*::

    <root>/testbed.json
    <root>/<Device.name>/benign_traffic.<ext>
    <root>/<Device.name>/gafgyt_attacks/<attack>.<ext>
    <root>/<Device.name>/mirai_attacks/<attack>.<ext>
    <root>/<Device.name>/pcap/<traffic class>.pcap          (only with ``pcap=True``)

``<ext>`` is ``parquet`` (float64 columns named ``FEATURE_NAMES``) or ``csv`` (header
``FEATURE_NAMES``), written by :func:`fediot.core.io.write_features`. The manifest records the
generator version, seed, scale, format, creation time and, per file, its relative path, device,
traffic class, row count and SHA-256.

Results are cached under a key of generator version, seed, scale, format (and ``pcap``): in
``cache_dir``, else ``$FEDIOT_CACHE_DIR/testbed``, ``$XDG_CACHE_HOME/fediot/testbed`` or
``~/.cache/fediot/testbed``. A dataset is built in a temporary folder beside its destination and
renamed into place when complete, so a folder with a manifest is always whole. The temporary
folder's name carries its owner (:func:`fediot.core.liveness.owner_tag`): the build folders a
killed process left behind are removed by the next :func:`build_testbed` beside them
(:func:`remove_build_leftovers`), never one that a live concurrent build is filling.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from fediot.core.catalog import (
    BENIGN,
    DEVICES,
    FEATURE_NAMES,
    N_FEATURES,
    device_by_id,
)
from fediot.core.errors import FediotError
from fediot.core.formats import FEATURE_FILE_FORMATS
from fediot.core.io import write_features
from fediot.core.limits import MAX_SEED, MAX_TESTBED_SCALE
from fediot.core.liveness import STALE_SECONDS, owner_tag, remove_stale
from fediot.core.paths import cache_dir
from fediot.core.testbed.pcap_writer import write_pcap
from fediot.core.testbed.simulator import GENERATOR_VERSION, packet_count, simulate_capture

MANIFEST_NAME: Final[str] = "testbed.json"
FILE_FORMATS: Final[tuple[str, ...]] = FEATURE_FILE_FORMATS

ProgressCallback = Callable[[int, int, str], None]
"""Called after each file as ``progress(rows_done, rows_total, "<device>/<class>")``."""


class TestbedError(FediotError):
    """A bad testbed request (scale, format, seed, destination) or an unreadable testbed."""

    __test__ = False  # not a pytest test class, despite the name


def file_stem(traffic_class: str) -> str:
    """Path of a class's feature file below the device folder, without extension."""
    if traffic_class == BENIGN:
        return "benign_traffic"
    botnet, attack = traffic_class.split(".")
    return f"{botnet}_attacks/{attack}"


def cache_key(*, seed: int, scale: float, file_format: str, pcap: bool = False) -> str:
    """Folder name of one cached testbed, e.g. ``v1-seed0-scale1-parquet``."""
    suffix = "-pcap" if pcap else ""
    return f"v{GENERATOR_VERSION}-seed{seed}-scale{scale:g}-{file_format}{suffix}"


def default_cache_dir() -> Path:
    """Cached testbeds: :func:`fediot.core.paths.cache_dir` ``("testbed")``."""
    return cache_dir("testbed")


def planned_files(scale: float) -> list[tuple[int, str, int]]:
    """(device id, traffic class, rows) of every file of a testbed at this scale."""
    return [
        (device.uci_id, traffic_class, packet_count(device.uci_id, traffic_class, scale))
        for device in DEVICES
        for traffic_class in device.traffic_classes
    ]


@dataclass(frozen=True)
class TestbedDataset:
    """A built testbed on disk.

    Parameters
    ----------
    root
        Its folder (holding ``testbed.json``).
    manifest
        The parsed manifest.
    from_cache
        True when :func:`build_testbed` found it already built (nothing was generated).
    """

    __test__ = False  # not a pytest test class, despite the name

    root: Path
    manifest: Mapping[str, Any]
    from_cache: bool = False

    @property
    def seed(self) -> int:
        return int(self.manifest["seed"])

    @property
    def scale(self) -> float:
        return float(self.manifest["scale"])

    @property
    def file_format(self) -> str:
        return str(self.manifest["format"])

    def entries(self) -> list[Mapping[str, Any]]:
        """The manifest's file entries, in device then traffic-class order."""
        return list(self.manifest["files"])

    def entry(self, uci_id: int, traffic_class: str) -> Mapping[str, Any]:
        for item in self.manifest["files"]:
            if item["uci_id"] == uci_id and item["traffic_class"] == traffic_class:
                return dict(item)
        raise TestbedError(
            f"{self.root}: no {traffic_class!r} file for device {uci_id} in this testbed"
        )

    def path(self, uci_id: int, traffic_class: str) -> Path:
        """The feature file of one (device, class)."""
        return self.root / str(self.entry(uci_id, traffic_class)["path"])

    def rows(self, uci_id: int, traffic_class: str) -> int:
        return int(self.entry(uci_id, traffic_class)["rows"])

    def load(self, uci_id: int, traffic_class: str) -> npt.NDArray[np.float64]:
        """The (rows, 115) float64 features of one file."""
        return read_features(self.path(uci_id, traffic_class))


def read_features(path: Path) -> npt.NDArray[np.float64]:
    """A testbed feature file (parquet or csv) as a float64 (rows, 115) array; a
    :class:`TestbedError` naming the file (and column, row) unless every column is numeric and
    every value finite."""
    try:
        if path.suffix == ".parquet":
            table = pq.read_table(path)
        else:
            table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(FEATURE_NAMES, pa.float64())))
        names = tuple(table.column_names)
    except (OSError, ValueError, pa.ArrowException) as error:  # ValueError: undecodable names
        problem = " ".join(str(error).split())[:300]
        raise TestbedError(f"{path}: unreadable feature file ({problem})") from None
    if names != FEATURE_NAMES:
        raise TestbedError(f"{path}: columns are not the {N_FEATURES} N-BaIoT feature names")
    for position, column_type in enumerate(table.schema.types):
        if not (pa.types.is_floating(column_type) or pa.types.is_integer(column_type)):
            raise TestbedError(f"{path}: column {position + 1} ({FEATURE_NAMES[position]}) has "
                               f"type {column_type}, expected float64")
    if not table.num_rows:
        return np.empty((0, N_FEATURES))
    rows = np.column_stack([  # nulls become NaN, caught below
        table.column(i).to_numpy(zero_copy_only=False).astype(np.float64)
        for i in range(N_FEATURES)
    ])
    finite = np.isfinite(rows)
    if not finite.all():
        row, position = (int(i) for i in np.argwhere(~finite)[0])
        raise TestbedError(f"{path}: row {row + 1}, column {position + 1} "
                           f"({FEATURE_NAMES[position]}): {rows[row, position]} is not a finite "
                           "number")
    return rows


def open_testbed(root: Path) -> TestbedDataset:
    """A testbed already on disk; :class:`TestbedError` if it has no valid manifest."""
    manifest = _complete_manifest(Path(root))
    if manifest is None:
        raise TestbedError(f"{root}: not a complete testbed (no valid {MANIFEST_NAME})")
    return TestbedDataset(Path(root), MappingProxyType(manifest), from_cache=True)


def build_testbed(
    out: Path | None = None,
    *,
    seed: int = 0,
    scale: float = 1.0,
    file_format: str = "parquet",
    pcap: bool = False,
    progress: ProgressCallback | None = None,
    cache_dir: Path | None = None,
) -> TestbedDataset:
    """Build (or find already built) the simulated N-BaIoT dataset.

    Parameters
    ----------
    out
        Destination folder. None: the cache folder itself. Otherwise the dataset ends up there:
        copied (hard-linked where possible) from the cache if it is there, else built there.
        An existing ``out`` must be empty or hold a testbed (replaced only if incomplete).
    seed
        Root seed (≥ 0); every file has its own stream spawned from it.
    scale
        Dataset size; 1.0 gives N-BaIoT's benign row counts (13,113–175,240 per device, about
        three days of traffic each) and 2,000–6,000 rows per attack file.
    file_format
        ``"parquet"`` or ``"csv"``.
    pcap
        Also write each capture as ``<device>/pcap/<class>.pcap``.
    progress
        Called after each file (see :data:`ProgressCallback`).
    cache_dir
        Folder of cached testbeds (default :func:`default_cache_dir`).
    """
    _validate(seed, scale, file_format)
    seed, scale = int(seed), float(scale)
    key = cache_key(seed=seed, scale=scale, file_format=file_format, pcap=pcap)
    expected = {"generator_version": GENERATOR_VERSION, "seed": seed, "scale": scale,
                "format": file_format, "pcap": pcap}
    cached = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / key
    target = Path(out).expanduser() if out is not None else cached
    for parent in {cached.parent, target.parent}:
        remove_build_leftovers(parent)
    found = _complete_manifest(target, expected)
    if found is not None:
        return TestbedDataset(target, MappingProxyType(found), from_cache=True)
    _check_destination(target)
    if target != cached:
        in_cache = _complete_manifest(cached, expected)
        if in_cache is not None:
            _publish(target, lambda folder: _copy_tree(cached, folder), expected)
            return TestbedDataset(target, MappingProxyType(in_cache), from_cache=True)
    manifest = _publish(
        target, lambda folder: _generate(folder, seed, scale, file_format, pcap, progress),
        expected,
    )
    return TestbedDataset(target, MappingProxyType(manifest), from_cache=False)


def _validate(seed: int, scale: float, file_format: str) -> None:
    if (isinstance(seed, bool) or not isinstance(seed, int | np.integer)
            or not 0 <= seed <= MAX_SEED):
        raise TestbedError(f"seed must be an integer in 0…{MAX_SEED}, got {seed!r}")
    # an unbounded scale is accepted and then generates rows until the memory runs out
    if (not isinstance(scale, int | float) or not math.isfinite(scale)
            or not 0 < scale <= MAX_TESTBED_SCALE):
        raise TestbedError(f"scale must be a number in (0, {MAX_TESTBED_SCALE:g}], got {scale!r}")
    if file_format not in FILE_FORMATS:
        raise TestbedError(
            f"unknown format {file_format!r}; expected one of {', '.join(FILE_FORMATS)}"
        )


def _check_destination(target: Path) -> None:
    if target.exists() and not target.is_dir():
        raise TestbedError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not (target / MANIFEST_NAME).exists():
        raise TestbedError(
            f"{target}: exists, is not empty and holds no testbed; choose an empty folder"
        )


def _complete_manifest(root: Path, expected: Mapping[str, Any] | None = None,
                       ) -> dict[str, Any] | None:
    """The manifest of a complete testbed at ``root`` matching ``expected``, else None."""
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
        return None
    for name, value in (expected or {}).items():
        if manifest.get(name) != value:
            return None
    for item in manifest["files"]:
        if not isinstance(item, dict) or not (root / str(item.get("path", ""))).is_file():
            return None
    return manifest


_LEFTOVER: Final[re.Pattern[str]] = re.compile(
    r"\.(?P<name>.+)\.(?:building|old)-(?P<tag>\d+(?:-[0-9a-f]{8}){1,3})")
"""A folder :func:`_publish` builds in (``building``) or moves a replaced testbed to (``old``):
``.<name>.building-<owner tag>-<random>``; before owner tags, ``.<name>.building-<pid>-<random>``
(a bare pid says nothing once reused, so those go by age)."""


def remove_build_leftovers(parent: Path, max_age: float = STALE_SECONDS) -> list[Path]:
    """Remove the partial builds under ``parent`` that their process left when it was killed:
    those whose owner is dead, and those whose owner cannot be checked (another machine, an
    old name) once untouched for ``max_age`` seconds; a live build is kept however old.
    Returns what was removed."""
    try:
        names = [path.name for path in Path(parent).iterdir()]
    except OSError:  # no such folder yet
        return []
    candidates = []
    for name in names:
        match = _LEFTOVER.fullmatch(name)
        if match is not None:
            candidates.append((Path(parent) / name, match.group("tag")))
    return remove_stale(candidates, max_age=max_age)


def _publish(target: Path, fill: Callable[[Path], dict[str, Any]],
             expected: Mapping[str, Any]) -> dict[str, Any]:
    """Fill a temporary folder beside ``target``, then rename it into place (over an empty
    folder; another or an incomplete testbed there is moved aside first and deleted).

    Safe against concurrent builds of the same testbed (two commands, two test workers): the
    rename into place is atomic and fails while ``target`` holds anything, so whoever renames
    first wins and the others return the winner's testbed; a complete matching testbed is
    never moved aside, and one caught while being moved aside is put back.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{owner_tag()}-{uuid.uuid4().hex[:8]}"
    building = target.parent / f".{target.name}.building-{tag}"
    retired = target.parent / f".{target.name}.old-{tag}"
    building.mkdir()
    try:
        manifest = fill(building)
        while (finished := _complete_manifest(target, expected)) is None:
            try:
                building.rename(target)  # atomic; replaces nothing but an absent or empty folder
                return manifest
            except OSError as error:
                if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            if _complete_manifest(target, expected) is None:
                _retire(target, retired, expected)
        return finished  # a concurrent build of the same testbed won the race
    finally:
        for leftover in (building, retired):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)


def _retire(target: Path, retired: Path, expected: Mapping[str, Any]) -> None:
    """Move the folder at ``target`` (another testbed, or an incomplete one) aside and delete
    it; one that a concurrent build completed meanwhile is put back instead."""
    try:
        target.rename(retired)
    except FileNotFoundError:  # a concurrent build moved it first
        return
    if _complete_manifest(retired, expected) is not None:
        with contextlib.suppress(OSError):  # unless yet another build took the place
            retired.rename(target)
    shutil.rmtree(retired, ignore_errors=True)


def _copy_tree(source: Path, destination: Path) -> dict[str, Any]:
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir():
            (destination / relative).mkdir(parents=True, exist_ok=True)
            continue
        (destination / relative).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination / relative)
        except OSError:
            shutil.copy2(path, destination / relative)
    manifest: dict[str, Any] = json.loads((destination / MANIFEST_NAME).read_text("utf-8"))
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _generate(root: Path, seed: int, scale: float, file_format: str, pcap: bool,
              progress: ProgressCallback | None) -> dict[str, Any]:
    # the compiled extractor (numba, ~100 MB resident) only when a testbed is built: a device
    # reading a cached one need not load it
    from fediot.core.features.extractor import extract_features

    plan = planned_files(scale)
    total = sum(rows for _, _, rows in plan)
    done = 0
    entries = []
    for uci_id, traffic_class, rows in plan:
        device = device_by_id(uci_id)
        capture = simulate_capture(uci_id, traffic_class, rows, seed=seed)
        # The extractor sees every frame of the port; a row is kept for each frame the device
        # sent (see :mod:`fediot.core.testbed.simulator`).
        features = extract_features(capture.packets)[capture.sent]
        relative = f"{device.name}/{file_stem(traffic_class)}.{file_format}"
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        write_features(path, features, file_format)
        entry: dict[str, Any] = {
            "path": relative,
            "uci_id": uci_id,
            "device": device.name,
            "traffic_class": traffic_class,
            "rows": int(features.shape[0]),
            "sha256": _sha256(path),
            "first_packet_epoch": float(capture.packets.timestamp[0]),
            "last_packet_epoch": float(capture.packets.timestamp[-1]),
        }
        if pcap:
            pcap_relative = f"{device.name}/pcap/{traffic_class}.pcap"
            (root / pcap_relative).parent.mkdir(parents=True, exist_ok=True)
            write_pcap(capture, root / pcap_relative)
            entry["pcap"] = pcap_relative
        entries.append(entry)
        done += rows
        if progress is not None:
            progress(done, total, f"{device.name}/{traffic_class}")
    manifest: dict[str, Any] = {
        "generator": "fediot.core.testbed",
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "scale": scale,
        "format": file_format,
        "pcap": pcap,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "n_features": N_FEATURES,
        "total_rows": done,
        "files": entries,
    }
    temporary = root / f".{MANIFEST_NAME}.tmp"
    temporary.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    temporary.replace(root / MANIFEST_NAME)
    return manifest


def iter_files(dataset: TestbedDataset) -> Iterator[tuple[int, str, Path]]:
    """(device id, traffic class, feature file) of every file of a testbed."""
    for item in dataset.entries():
        yield int(item["uci_id"]), str(item["traffic_class"]), dataset.root / str(item["path"])
