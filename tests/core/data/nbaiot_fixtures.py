"""Small N-BaIoT-shaped fixtures: plausible rows, and the UCI / Kaggle / testbed layouts and zip.

Rows are deterministic per (device, class) and use realistic magnitudes: weights from 1 to a
few thousand, packet sizes 60–1500, variances up to 5.7e17 (as in real ``HH_jit`` columns),
negative covariances, correlations in [-1, 1]. Values are written with ``repr`` so the
expected float32 matrix is exactly ``rows.astype(np.float32)``.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pa_parquet
from rar4_writer import rar_bytes

from fediot.core.catalog import (
    BENIGN,
    BOTNETS,
    FEATURE_NAMES,
    N_FEATURES,
    TRAFFIC_CLASSES,
    device_by_id,
)

FileKey = tuple[int, str]
Rows = npt.NDArray[np.float64]

METADATA_FILES = (
    "data_summary.csv",
    "device_info.csv",
    "features.csv",
    "N_BaIoT_dataset_description_v1.txt",
    "demonstrate_structure.csv",
)


def plausible_rows(n_rows: int, seed: int) -> Rows:
    """``n_rows`` × 115 float64 values shaped like real N-BaIoT rows."""
    generator = np.random.default_rng(seed)
    rows = np.empty((n_rows, N_FEATURES), dtype=np.float64)
    for position, name in enumerate(FEATURE_NAMES):
        stat = name.rsplit("_", 1)[1]
        jitter = name.startswith("HH_jit")
        if stat == "weight":
            column = generator.uniform(1.0, 5000.0, n_rows)
        elif stat == "mean":
            column = generator.uniform(0.0, 1.5e9 if jitter else 1500.0, n_rows)
        elif stat in ("variance", "radius"):
            column = generator.uniform(0.0, 5.7e17 if jitter else 5.0e5, n_rows)
        elif stat == "std":
            column = generator.uniform(0.0, 700.0, n_rows)
        elif stat == "magnitude":
            column = generator.uniform(60.0, 2000.0, n_rows)
        elif stat == "covariance":
            column = generator.normal(0.0, 1.0e4, n_rows)
        else:  # pcc
            column = generator.uniform(-1.0, 1.0, n_rows)
        rows[:, position] = column
    if n_rows:  # the cold-start first row of a real file: weights 1, spreads 0
        rows[0, 2::3] = 0.0
    return rows


def csv_bytes(rows: Rows) -> bytes:
    """Header (``FEATURE_NAMES``) and rows, written as the UCI files are (``repr`` floats)."""
    lines = [",".join(FEATURE_NAMES)]
    lines += [",".join(repr(float(value)) for value in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def parquet_bytes(rows: Rows) -> bytes:
    """The rows as a Parquet file with float64 columns ``FEATURE_NAMES``."""
    table = pa.table({name: rows[:, position] for position, name in enumerate(FEATURE_NAMES)})
    buffer = io.BytesIO()
    pa_parquet.write_table(table, buffer)
    return buffer.getvalue()


def fixture_counts(devices: Iterable[int]) -> dict[FileKey, int]:
    """A few rows for each catalogued (device, class): 6–11, different from file to file."""
    counts: dict[FileKey, int] = {}
    for uci_id in devices:
        for traffic_class in device_by_id(uci_id).traffic_classes:
            spread = (uci_id * 7 + TRAFFIC_CLASSES.index(traffic_class)) % 6
            counts[(uci_id, traffic_class)] = 6 + spread
    return counts


def fixture_rows(counts: Mapping[FileKey, int]) -> dict[FileKey, Rows]:
    """Deterministic rows for each key of ``counts``."""
    return {
        key: plausible_rows(n_rows, seed=key[0] * 100 + TRAFFIC_CLASSES.index(key[1]))
        for key, n_rows in counts.items()
    }


def uci_relative_path(key: FileKey, suffix: str = ".csv") -> str:
    """``Danmini_Doorbell/benign_traffic.csv``, ``Danmini_Doorbell/gafgyt_attacks/combo.csv`` …"""
    uci_id, traffic_class = key
    device = device_by_id(uci_id).name
    if traffic_class == BENIGN:
        return f"{device}/benign_traffic{suffix}"
    botnet, attack = traffic_class.split(".")
    return f"{device}/{botnet}_attacks/{attack}{suffix}"


def write_uci_tree(root: Path, rows: Mapping[FileKey, Rows], suffix: str = ".csv") -> Path:
    """The extracted UCI layout (``suffix`` ``.parquet`` for testbed-style files)."""
    for key, matrix in rows.items():
        path = root / uci_relative_path(key, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(parquet_bytes(matrix) if suffix == ".parquet" else csv_bytes(matrix))
    return root


def write_kaggle_tree(root: Path, rows: Mapping[FileKey, Rows]) -> Path:
    """The flat Kaggle layout: ``<root>/1.benign.csv``, ``<root>/1.gafgyt.combo.csv`` …"""
    root.mkdir(parents=True, exist_ok=True)
    for (uci_id, traffic_class), matrix in rows.items():
        (root / f"{uci_id}.{traffic_class}.csv").write_bytes(csv_bytes(matrix))
    (root / "data_summary.csv").write_text("File Name, Data Count, Feature Count\n")
    return root


def write_testbed_tree(
    root: Path, rows: Mapping[FileKey, Rows], csv_keys: Iterable[FileKey]
) -> Path:
    """The testbed layout: ``testbed.json`` and UCI-style Parquet files (CSV for ``csv_keys``)."""
    as_csv = set(csv_keys)
    write_uci_tree(root, {k: v for k, v in rows.items() if k not in as_csv}, ".parquet")
    write_uci_tree(root, {k: v for k, v in rows.items() if k in as_csv}, ".csv")
    (root / "testbed.json").write_text(json.dumps({"generator": "fixture", "seed": 0}))
    return root


@dataclass(frozen=True)
class UciArchive:
    """A fixture of the UCI zip: its bytes and what extracting it must give."""

    content: bytes
    counts: dict[FileKey, int]
    rows: dict[FileKey, Rows]


def uci_zip(devices: Iterable[int] = (1, 3), short_by_one: FileKey | None = None) -> UciArchive:
    """A zip nested like the UCI one: per device ``benign_traffic.csv`` + ``*_attacks.rar``.

    The first device's ``gafgyt_attacks.rar`` keeps its CSVs inside a ``gafgyt_attacks/``
    folder, the others store them flat (both occur in the wild). ``short_by_one`` drops the
    last row of that file while ``counts`` still expects the full count (a corrupted file).
    """
    device_ids = list(devices)
    counts = fixture_counts(device_ids)
    rows = fixture_rows(counts)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in METADATA_FILES:
            archive.writestr(name, "fixture metadata\n")
        for index, uci_id in enumerate(device_ids):
            device = device_by_id(uci_id)
            written = {
                key: matrix[:-1] if key == short_by_one else matrix
                for key, matrix in rows.items()
                if key[0] == uci_id
            }
            benign = csv_bytes(written[(uci_id, BENIGN)])
            archive.writestr(f"{device.name}/benign_traffic.csv", benign)
            for botnet, attacks in BOTNETS.items():
                if botnet == "mirai" and not device.has_mirai:
                    continue
                inner = f"{botnet}_attacks/" if index == 0 and botnet == "gafgyt" else ""
                members = {
                    f"{inner}{attack}.csv": csv_bytes(written[(uci_id, f"{botnet}.{attack}")])
                    for attack in attacks
                }
                archive.writestr(f"{device.name}/{botnet}_attacks.rar", rar_bytes(members))
    return UciArchive(buffer.getvalue(), counts, rows)
