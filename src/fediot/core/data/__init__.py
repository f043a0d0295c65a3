"""The N-BaIoT data layer: find, validate, cache, split and download feature files.

Public API:

- :func:`open_dataset` → :class:`NBaIoTSource` (layouts ``uci``, ``kaggle``, ``testbed``);
  ``source.load(uci_id, traffic_class)`` returns a read-only, memory-mapped float32 (n, 115)
  matrix, parsed once into the :class:`FeatureCache`.
- :func:`read_feature_csv` / :func:`read_feature_parquet`: one file, validated, in memory.
- :func:`split_device` → :class:`DeviceSplit` (train / opt / test in time order).
- :func:`download_nbaiot`: the UCI archive, resumable and atomic, extracted and verified.
- :class:`DataError`: every bad file, folder, archive or request.
"""

from __future__ import annotations

from fediot.core.data.cache import FeatureCache, default_cache_root
from fediot.core.data.download import (
    UCI_URL,
    Progress,
    ProgressCallback,
    download_file,
    download_nbaiot,
    extract_uci_archive,
    verify_row_counts,
)
from fediot.core.data.errors import DataError
from fediot.core.data.layouts import Layout, NBaIoTSource, open_dataset
from fediot.core.data.reader import FeatureMatrix, read_feature_csv, read_feature_parquet
from fediot.core.data.splits import DEFAULT_FRACTIONS, DeviceSplit, split_device

__all__ = [
    "DEFAULT_FRACTIONS",
    "UCI_URL",
    "DataError",
    "DeviceSplit",
    "FeatureCache",
    "FeatureMatrix",
    "Layout",
    "NBaIoTSource",
    "Progress",
    "ProgressCallback",
    "default_cache_root",
    "download_file",
    "download_nbaiot",
    "extract_uci_archive",
    "open_dataset",
    "read_feature_csv",
    "read_feature_parquet",
    "split_device",
    "verify_row_counts",
]
