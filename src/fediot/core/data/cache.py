"""A columnar cache of feature files: each CSV or Parquet file is parsed once into a ``.npy``.

Entries live under ``<root>/<key>/features.npy`` where the key hashes the source file's absolute
path and its identity on disk: device, inode, size, ``mtime_ns`` and ``ctime_ns``
(:meth:`FeatureCache.entry_dir` says why not a content hash), so an edited or replaced file is
parsed again and an untouched one never is. Entries are written to a temporary file in the entry
folder and renamed into place (``os.replace``): a crash leaves no half-written ``.npy`` that
could be mistaken for a complete one, and the temporary files a killed process leaves behind
(their names carry their owner, :func:`fediot.core.liveness.owner_tag`) are removed by the next
process that uses the cache, unless their owner still runs. Loads are memory-mapped
(``np.load(mmap_mode="r")``): the whole N-BaIoT (~7 M rows, 3.2 GB as float32) opens in
milliseconds and only the pages actually touched are read.

The cache root is, in order: the ``root`` argument, ``$FEDIOT_CACHE_DIR/nbaiot``,
``$XDG_CACHE_HOME/fediot/nbaiot``, ``~/.cache/fediot/nbaiot``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import numpy as np

from fediot.core.catalog import N_FEATURES
from fediot.core.data.errors import DataError
from fediot.core.data.reader import FeatureMatrix, parse_feature_file
from fediot.core.liveness import STALE_SECONDS, owner_tag, remove_stale
from fediot.core.paths import cache_dir

CACHE_FORMAT: Final[int] = 1
"""Bumped whenever the parse changes, so that old entries are ignored rather than trusted."""

_ARRAY_NAME: Final[str] = "features.npy"
_SOURCE_NAME: Final[str] = "source.json"

_TEMPORARY: Final[re.Pattern[str]] = re.compile(
    r"\.(?:features-(?P<array>.+)\.npy\.tmp|source\.json-(?P<source>.+))")
"""An entry's temporary files: ``.features-<owner tag>-<random>.npy.tmp`` and
``.source.json-<owner tag>-<random>.tmp`` (names from before owner tags match too; with no
tag to check, their age decides)."""

_swept: set[Path] = set()
_swept_lock = threading.Lock()


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
        """The folder of ``source``'s entry (it exists only once the file has been parsed).

        The key is the file's absolute path and its identity on disk: device, inode, size,
        ``mtime_ns`` and ``ctime_ns``. Not a content hash: hashing would read every byte of
        every file on every load (the CSVs of N-BaIoT are several GB, seconds of reading where
        a hit now takes a ``stat`` and a memory map). Size and mtime alone miss an edit that
        keeps the size and restores the mtime (``os.utime``, ``touch -r``, ``rsync -t``, an
        editor preserving times); the ctime cannot be set from user space and changes with
        any write to the inode, and the inode changes when a file is replaced by another
        (an atomic save, a copy moved over it), so both catch it. The price: anything that
        changes only the ctime (``chmod``, a new hard link) costs one needless re-parse. The
        limit: two writes within one tick of the filesystem's ctime clock (a few ms on
        kernels without fine-grained timestamps), the first of them cached in between, stay
        indistinguishable.
        """
        source = Path(source).absolute()
        try:
            status = source.stat()
        except FileNotFoundError:
            raise DataError(f"{source}: no such file") from None
        identity = "\0".join(str(part) for part in (
            CACHE_FORMAT, source, status.st_dev, status.st_ino, status.st_size,
            status.st_mtime_ns, status.st_ctime_ns))
        return self.root / hashlib.sha256(identity.encode()).hexdigest()[:32]

    def remove_leftovers(self, max_age: float = STALE_SECONDS) -> list[Path]:
        """Remove the temporary files that processes killed while writing an entry left in
        the cache (owner dead, or owner unknown and untouched for ``max_age`` seconds); a
        live process's are kept. Returns what was removed. :meth:`load` calls it once per
        process and cache root."""
        return remove_stale(self._temporaries(), max_age=max_age)

    def _temporaries(self) -> Iterator[tuple[Path, str]]:
        try:
            entries = list(self.root.iterdir())
        except OSError:  # no cache yet
            return
        for entry in entries:
            try:
                names = [path.name for path in entry.iterdir()] if entry.is_dir() else []
            except OSError:
                continue
            for name in names:
                match = _TEMPORARY.fullmatch(name)
                if match is not None:
                    yield entry / name, match.group("array") or match.group("source")

    def _sweep_once(self) -> None:
        """:meth:`remove_leftovers` on this process's first use of the root: leftovers only
        appear when a process dies, so once per process is enough."""
        root = self.root.absolute()
        with _swept_lock:
            if root in _swept:
                return
            _swept.add(root)
        self.remove_leftovers()

    def load(self, source: Path) -> FeatureMatrix:
        """The (rows, 115) float32 matrix of ``source``, read-only and memory-mapped.

        The first call parses and validates the file (see :mod:`fediot.core.data.reader`) and
        writes the entry; later calls, from any process, only map it.
        """
        source = Path(source).absolute()
        self._sweep_once()
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
            dir=entry, prefix=f".features-{owner_tag()}-", suffix=".npy.tmp"
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
    descriptor, temporary_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}-{owner_tag()}-", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
        Path(temporary_name).replace(path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            Path(temporary_name).unlink()
        raise
