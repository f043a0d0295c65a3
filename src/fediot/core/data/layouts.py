"""Find the N-BaIoT feature files under a folder, whichever of the three on-disk layouts it uses.

``uci``
    UCI dataset 442 after extraction: ``<root>/<Device.name>/benign_traffic.csv`` and
    ``<root>/<Device.name>/{gafgyt,mirai}_attacks/<attack>.csv`` (no ``mirai_attacks`` for
    Ennio_Doorbell and Samsung_SNH_1011_N_Webcam). Other top-level files and folders (metadata)
    are ignored.
``kaggle``
    The Kaggle mirror, flat: ``<root>/<uci_id>.<traffic class>.csv``, e.g. ``1.benign.csv``,
    ``1.gafgyt.combo.csv`` … ``9.mirai.udpplain.csv``.
``testbed``
    FedIoT's simulated data: a ``testbed.json`` manifest at the root and the UCI layout with
    ``.parquet`` (columns ``FEATURE_NAMES``) or ``.csv`` files.

:func:`open_dataset` detects the layout and returns an :class:`NBaIoTSource`, whose
:meth:`~NBaIoTSource.load` hands out read-only, memory-mapped float32 matrices through the
parse-once :class:`~fediot.core.data.cache.FeatureCache`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Final, Literal

from fediot.core.catalog import (
    BENIGN,
    BOTNETS,
    DEVICES,
    TRAFFIC_CLASSES,
    Device,
    device_by_id,
)
from fediot.core.data.cache import FeatureCache
from fediot.core.data.errors import DataError
from fediot.core.data.reader import CSV_SUFFIX, FEATURE_SUFFIXES, FeatureMatrix
from fediot.core.safe_yaml import InvalidDocumentError, UnsafeInputError, load_json, read_text

Layout = Literal["uci", "kaggle", "testbed"]
FileKey = tuple[int, str]
"""(UCI device id, traffic class), e.g. ``(1, "gafgyt.combo")``."""

TESTBED_MANIFEST: Final[str] = "testbed.json"
UCI_BENIGN_STEM: Final[str] = "benign_traffic"

_KAGGLE_NAME: Final[re.Pattern[str]] = re.compile(r"^(\d+)\.([a-z]+(?:\.[a-z]+)?)\.csv$")

EXPECTED_LAYOUTS: Final[str] = (
    "expected one of: the UCI layout (<root>/Danmini_Doorbell/benign_traffic.csv, "
    "<root>/<device>/gafgyt_attacks/{combo,junk,scan,tcp,udp}.csv, "
    "<root>/<device>/mirai_attacks/{ack,scan,syn,udp,udpplain}.csv, where <device> is a "
    f"catalogue device name such as {DEVICES[1].name}); "
    "the Kaggle layout (<root>/1.benign.csv, <root>/1.gafgyt.combo.csv … "
    "<root>/9.mirai.udpplain.csv); the testbed layout (<root>/testbed.json plus the UCI layout "
    "with .parquet or .csv files)"
)


def _class_order(key: FileKey) -> tuple[int, int]:
    return key[0], TRAFFIC_CLASSES.index(key[1])


@dataclass(frozen=True)
class NBaIoTSource:
    """The feature files of one N-BaIoT-shaped dataset on disk.

    Parameters
    ----------
    root
        The dataset folder.
    layout
        ``"uci"``, ``"kaggle"`` or ``"testbed"``.
    files
        (UCI device id, traffic class) → feature file, in device then ``TRAFFIC_CLASSES`` order.
    cache
        Where parsed matrices are kept; default a :class:`FeatureCache` at its default root.
    manifest
        The parsed ``testbed.json`` of a testbed layout; None otherwise.
    skipped
        Folders under ``root`` the layout does not read, relative path → why (a folder that is
        not a catalogued device, a device's subfolder that is not ``<botnet>_attacks``). Empty
        by default.
    """

    root: Path
    layout: Layout
    files: Mapping[FileKey, Path]
    cache: FeatureCache = field(default_factory=FeatureCache, compare=False, repr=False)
    manifest: Mapping[str, object] | None = None
    skipped: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def is_official(self) -> bool:
        """True for the real N-BaIoT layouts (UCI, Kaggle), whose row counts are catalogued."""
        return self.layout != "testbed"

    def devices(self) -> list[int]:
        """UCI ids of the devices with at least one file, ascending."""
        return sorted({uci_id for uci_id, _ in self.files})

    def classes(self, uci_id: int) -> list[str]:
        """Traffic classes present for one device, in ``TRAFFIC_CLASSES`` order."""
        return [cls for device, cls in self.files if device == uci_id]

    def file(self, uci_id: int, traffic_class: str) -> Path:
        """The file of one (device, class); a :class:`DataError` naming the bad key otherwise."""
        if traffic_class not in TRAFFIC_CLASSES:
            raise DataError(
                f"unknown traffic class {traffic_class!r}; expected one of "
                + ", ".join(TRAFFIC_CLASSES)
            )
        try:
            device = device_by_id(uci_id)
        except KeyError as error:
            raise DataError(str(error.args[0])) from None
        path = self.files.get((uci_id, traffic_class))
        if path is None:
            present = ", ".join(self.classes(uci_id)) or "nothing"
            raise DataError(
                f"{self.root}: no {traffic_class!r} file for device {uci_id} ({device.name}) "
                f"in this {self.layout} layout; it has: {present}"
            )
        return path

    def load(self, uci_id: int, traffic_class: str) -> FeatureMatrix:
        """The (rows, 115) float32 matrix of one file: parsed once, then memory-mapped, read-only.

        Rows are in file (time) order.
        """
        return self.cache.load(self.file(uci_id, traffic_class))

    def row_count(self, uci_id: int, traffic_class: str) -> int:
        """Number of rows of one file (parses it into the cache on first use)."""
        return int(self.load(uci_id, traffic_class).shape[0])


def open_dataset(root: Path | str, cache: FeatureCache | None = None) -> NBaIoTSource:
    """Detect the layout under ``root`` and index its feature files (nothing is parsed yet).

    Raises :class:`DataError` for a missing folder, a folder with no recognisable layout (the
    message lists the expected ones), mixed layouts, unknown or duplicate files.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder; {EXPECTED_LAYOUTS}")
    if not root.is_dir():
        hint = " (extract it first, or use `fediot data download`)" if root.suffix else ""
        raise DataError(f"{root}: is a file, expected a dataset folder{hint}")
    cache = cache if cache is not None else FeatureCache()

    manifest_path = root / TESTBED_MANIFEST
    if manifest_path.is_file():
        files = _scan_uci(root, FEATURE_SUFFIXES, strict_catalog=False)
        if not files:
            raise DataError(
                f"{root}: has {TESTBED_MANIFEST} but no feature files; expected "
                "<root>/<device>/benign_traffic.parquet (or .csv) and "
                "<root>/<device>/{gafgyt,mirai}_attacks/<attack>.parquet (or .csv)"
            )
        manifest = _read_manifest(manifest_path)
        return NBaIoTSource(root, "testbed", MappingProxyType(files), cache, manifest,
                            _skipped_folders(root, "testbed"))

    uci_files = _scan_uci(root, (CSV_SUFFIX,), strict_catalog=True)
    kaggle_files = _scan_kaggle(root)
    if uci_files and kaggle_files:
        raise DataError(
            f"{root}: mixes the UCI layout (device folders) and the Kaggle layout "
            f"(e.g. {next(iter(kaggle_files.values())).name}); keep one per folder"
        )
    if uci_files:
        return NBaIoTSource(root, "uci", MappingProxyType(uci_files), cache,
                            skipped=_skipped_folders(root, "uci"))
    if kaggle_files:
        return NBaIoTSource(root, "kaggle", MappingProxyType(kaggle_files), cache,
                            skipped=_skipped_folders(root, "kaggle"))
    raise DataError(f"{root}: no N-BaIoT data found; {EXPECTED_LAYOUTS}")


def _skipped_folders(root: Path, layout: Layout) -> Mapping[str, str]:
    """The folders under ``root`` that ``layout`` does not read, each with the reason."""
    skipped: dict[str, str] = {}
    devices = {device.name.lower() for device in DEVICES}
    attack_folders = {f"{botnet}_attacks" for botnet in BOTNETS}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if layout == "kaggle":
            skipped[f"{folder.name}/"] = "the Kaggle layout reads only <id>.<class>.csv files " \
                                         "in the dataset folder itself"
        elif folder.name.lower() not in devices:
            skipped[f"{folder.name}/"] = ("not a catalogued device's folder (expected e.g. "
                                          f"{DEVICES[0].name})")
        else:
            for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
                if sub.name not in attack_folders:
                    skipped[f"{folder.name}/{sub.name}/"] = (
                        f"not one of {', '.join(sorted(attack_folders))}")
    return MappingProxyType(skipped)


def _read_manifest(path: Path) -> Mapping[str, object]:
    try:  # read_text and load_json bound the size and nesting (json.loads alone recurses)
        manifest = load_json(read_text(path), str(path))
    except InvalidDocumentError as error:
        raise DataError(f"{path}: {error.problem.split(', column')[0]}: invalid JSON "
                        f"({error.problem.partition(': ')[2]})") from None
    except UnsafeInputError as error:
        raise DataError(str(error)) from None
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(manifest).__name__}")
    return MappingProxyType(manifest)


def _check_catalogued(device: Device, traffic_class: str, path: Path) -> None:
    if traffic_class not in device.traffic_classes:
        raise DataError(
            f"{path}: N-BaIoT has no {traffic_class!r} traffic for device {device.uci_id} "
            f"({device.name}); its classes are {', '.join(device.traffic_classes)}"
        )


def _pick_file(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    candidates = [folder / f"{stem}{suffix}" for suffix in suffixes]
    present = [path for path in candidates if path.is_file()]
    if len(present) > 1:
        raise DataError(f"{folder}: both {present[0].name} and {present[1].name}; keep one of them")
    return present[0] if present else None


def _scan_uci(root: Path, suffixes: tuple[str, ...], strict_catalog: bool) -> dict[FileKey, Path]:
    folders = {path.name.lower(): path for path in root.iterdir() if path.is_dir()}
    files: dict[FileKey, Path] = {}
    for device in DEVICES:
        folder = folders.get(device.name.lower())
        if folder is None:
            continue
        benign = _pick_file(folder, UCI_BENIGN_STEM, suffixes)
        if benign is not None:
            files[(device.uci_id, BENIGN)] = benign
        for botnet, attacks in BOTNETS.items():
            attack_folder = folder / f"{botnet}_attacks"
            if not attack_folder.is_dir():
                archive = folder / f"{botnet}_attacks.rar"
                if archive.is_file():
                    raise DataError(
                        f"{archive}: not extracted; extract it into {attack_folder.name}/ "
                        "(`fediot data download` does this for the UCI archive)"
                    )
                continue
            for path in sorted(attack_folder.iterdir()):
                if path.suffix.lower() in suffixes and path.stem not in attacks:
                    raise DataError(
                        f"{path}: unknown {botnet} attack {path.stem!r}; expected "
                        + ", ".join(f"{attack}{suffixes[0]}" for attack in attacks)
                    )
            for attack in attacks:
                path_or_none = _pick_file(attack_folder, attack, suffixes)
                if path_or_none is None:
                    continue
                traffic_class = f"{botnet}.{attack}"
                if strict_catalog:
                    _check_catalogued(device, traffic_class, path_or_none)
                files[(device.uci_id, traffic_class)] = path_or_none
    return dict(sorted(files.items(), key=lambda item: _class_order(item[0])))


def _scan_kaggle(root: Path) -> dict[FileKey, Path]:
    files: dict[FileKey, Path] = {}
    for path in sorted(root.iterdir()):
        match = _KAGGLE_NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        uci_id, traffic_class = int(match.group(1)), match.group(2)
        if traffic_class not in TRAFFIC_CLASSES:
            raise DataError(
                f"{path}: unknown traffic class {traffic_class!r}; expected one of "
                + ", ".join(TRAFFIC_CLASSES)
            )
        try:
            device = device_by_id(uci_id)
        except KeyError as error:
            raise DataError(f"{path}: {error.args[0]}") from None
        _check_catalogued(device, traffic_class, path)
        files[(uci_id, traffic_class)] = path
    return dict(sorted(files.items(), key=lambda item: _class_order(item[0])))
