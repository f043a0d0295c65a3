"""A columnar cache of feature files: each CSV or Parquet file is parsed once into a ``.npy``.

Entries live under ``<root>/<key>/features.npy`` where the key hashes the source file's absolute
path, size and modification time, so an edited or replaced file is parsed again and an untouched
one never is. Entries are written to a temporary file in the entry folder and renamed into place
(``os.replace``): a crash leaves no half-written ``.npy`` that could be mistaken for a complete
one. Loads are memory-mapped (``np.load(mmap_mode="r")``): the whole N-BaIoT (~7 M rows, 3.2 GB
as float32) opens in milliseconds and only the pages actually touched are read.

The cache root is, in order: the ``root`` argument, ``$FEDIOT_CACHE_DIR/nbaiot``,
``$XDG_CACHE_HOME/fediot/nbaiot``, ``~/.cache/fediot/nbaiot``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Final

import numpy as np

from fediot.core.catalog import N_FEATURES
from fediot.core.data.errors import DataError
from fediot.core.data.reader import FeatureMatrix, parse_feature_file
from fediot.core.paths import cache_dir

"""Environment variable naming FedIoT's cache folder; the N-BaIoT cache is its ``nbaiot`` folder."""

CACHE_FORMAT: Final[int] = 1
"""Bumped whenever the parse changes, so that old entries are ignored rather than trusted."""

_ARRAY_NAME: Final[str] = "features.npy"
_SOURCE_NAME: Final[str] = "source.json"


def default_cache_root() -> Path:
    """The N-BaIoT feature cache: :func:`fediot.core.paths.cache_dir` ``("nbaiot")``."""
    return cache_dir("nbaiot")


class FeatureCache:
    """Parse-once, memory-map-afterwards store of feature matrices.

    Parameters
    ----------
    root
        Folder holding the entries; default :func:`default_cache_root`. Created on first write.

    Attributes
    ----------
    parses
        How many files this instance had to parse (cache misses); a hit leaves it unchanged.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self.parses = 0

    def entry_dir(self, source: Path) -> Path:
        """The folder of ``source``'s entry (it exists only once the file has been parsed)."""
        source = Path(source).absolute()
        try:
            status = source.stat()
        except FileNotFoundError:
            raise DataError(f"{source}: no such file") from None
        identity = f"{CACHE_FORMAT}\0{source}\0{status.st_size}\0{status.st_mtime_ns}"
        return self.root / hashlib.sha256(identity.encode()).hexdigest()[:32]

    def load(self, source: Path) -> FeatureMatrix:
        """The (rows, 115) float32 matrix of ``source``, read-only and memory-mapped.

        The first call parses and validates the file (see :mod:`fediot.core.data.reader`) and
        writes the entry; later calls, from any process, only map it.
        """
        source = Path(source).absolute()
        entry = self.entry_dir(source)
        cached = _open_entry(entry / _ARRAY_NAME)
        if cached is not None:
            return cached
        self._write_entry(source, entry)
        reopened = _open_entry(entry / _ARRAY_NAME)
        if reopened is None:  # pragma: no cover - only if another process deletes it meanwhile
            raise DataError(f"{entry / _ARRAY_NAME}: cache entry vanished right after writing")
        return reopened

    def _write_entry(self, source: Path, entry: Path) -> None:
        try:
            entry.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DataError(f"{entry}: cannot create the cache folder ({error})") from None
        descriptor, temporary_name = tempfile.mkstemp(
            dir=entry, prefix=".features-", suffix=".npy.tmp"
        )
        os.close(descriptor)
        temporary = Path(temporary_name)
        try:

            def allocate(n_rows: int) -> FeatureMatrix:
                mapped: FeatureMatrix = np.lib.format.open_memmap(
                    temporary, mode="w+", dtype=np.float32, shape=(n_rows, N_FEATURES)
                )
                return mapped

            matrix = parse_feature_file(source, allocate)
            if isinstance(matrix, np.memmap):
                matrix.flush()
            del matrix  # unmap before the rename
            with temporary.open("rb+") as stream:
                os.fsync(stream.fileno())
            self.parses += 1
            _write_text_atomic(
                entry / _SOURCE_NAME,
                json.dumps({"source": str(source), "format": CACHE_FORMAT}, indent=2) + "\n",
            )
            temporary.replace(entry / _ARRAY_NAME)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            if not (entry / _ARRAY_NAME).exists():  # a failed parse leaves no entry behind
                with contextlib.suppress(OSError):
                    (entry / _SOURCE_NAME).unlink(missing_ok=True)
                    entry.rmdir()


def _open_entry(path: Path) -> FeatureMatrix | None:
    """Map a finished entry, or None if absent or unusable (then it is simply rebuilt)."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if array.dtype != np.float32 or array.ndim != 2 or array.shape[1] != N_FEATURES:
        return None
    array.flags.writeable = False
    result: FeatureMatrix = array
    return result


def _write_text_atomic(path: Path, text: str) -> None:
    descriptor, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
        Path(temporary_name).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(temporary_name).unlink()
        raise
