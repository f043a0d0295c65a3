"""Download and unpack N-BaIoT from the UCI archive (dataset 442), resumably and atomically.

Steps of :func:`download_nbaiot`:

1. **Download** the zip into ``<archive>.part`` with HTTP Range requests: an interrupted
   download resumes where it stopped when the server supports ranges (guarded by ``If-Range``
   with the ETag / Last-Modified of the first response) and restarts otherwise. The archive
   gets its final name only once its size matches the server's, every member reads back with
   its CRC-32 (:func:`check_zip`) and, if given, its SHA-256 matches; one that fails is deleted
   with an error saying so, so a corrupt archive never sits under the final name, where every
   later run would trust it and fail.
2. **Extract** the zip into a hidden temporary folder beside the destination (its name carries
   its owner, :func:`fediot.core.liveness.owner_tag`, so the next extraction removes the ones a
   killed process left behind, never a live one's), then each
   device's ``gafgyt_attacks.rar`` / ``mirai_attacks.rar`` into ``gafgyt_attacks/`` /
   ``mirai_attacks/`` (through the ``rarfile`` library, which needs the ``unar`` or ``bsdtar``
   tool for compressed members: Debian packages ``unar`` / ``libarchive-tools``).
3. **Verify** each file's row count against :data:`catalog.OFFICIAL_ROW_COUNTS` (skippable).
4. **Rename** the temporary folder to the destination: the dataset folder appears only when
   complete and verified, so a half download never looks like a dataset.

Progress is reported through a callback receiving :class:`Progress`; this module prints nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final, Literal

from fediot.core.catalog import BOTNETS, DEVICES, OFFICIAL_ROW_COUNTS, device_by_id
from fediot.core.data.errors import DataError
from fediot.core.data.layouts import FileKey, open_dataset
from fediot.core.liveness import STALE_SECONDS, owner_tag, remove_stale

UCI_URL: Final[str] = (
    "https://archive.ics.uci.edu/static/public/442/detection+of+iot+botnet+attacks+n+baiot.zip"
)
"""The UCI Machine Learning Repository archive of N-BaIoT (dataset 442)."""

Stage = Literal["download", "extract", "verify"]


@dataclass(frozen=True)
class Progress:
    """One progress report.

    Parameters
    ----------
    stage
        ``"download"`` (units: bytes), ``"extract"`` (archive members) or ``"verify"`` (files).
    done
        Units finished so far in this stage (a resumed download starts above 0).
    total
        Units in the stage; None when the server does not say.
    item
        What is being worked on (URL, member or file name).
    """

    stage: Stage
    done: int
    total: int | None
    item: str


ProgressCallback = Callable[[Progress], None]

_CHUNK: Final[int] = 1 << 20
_CONTENT_RANGE: Final[re.Pattern[str]] = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE: Final[re.Pattern[str]] = re.compile(r"bytes \*/(\d+)")


def _no_progress(_: Progress) -> None:
    return None


class _InterruptedError(Exception):
    """The connection failed or dropped; the ``.part`` file is kept for a resume."""


def download_file(
    url: str,
    target: Path,
    *,
    progress: ProgressCallback | None = None,
    retries: int = 3,
    retry_wait: float = 1.0,
    timeout: float = 60.0,
    sha256: str | None = None,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Download ``url`` to ``target`` through ``target.part``, resuming, and rename when verified.

    Parameters
    ----------
    url
        http(s) URL.
    target
        Final file; if it already exists it is complete (nothing else creates it) and returned.
    progress
        Called with ``Progress("download", bytes_done, bytes_total, url)`` as data arrives.
    retries
        How many times a dropped connection is resumed within this call (default 3); after
        that a :class:`DataError` says to run again, and the ``.part`` file is kept.
    retry_wait
        Seconds before the first retry, growing linearly (default 1.0).
    timeout
        Socket timeout in seconds (default 60).
    sha256
        Expected hex digest of the whole file; None skips the check.
    check
        Extra verification of the complete ``.part`` file (raise :class:`DataError` to reject).
    """
    target = Path(target)
    if target.is_file():
        return target
    report = progress or _no_progress
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    meta = target.with_name(target.name + ".part.json")
    failures = 0
    while True:
        try:
            total = _download_attempt(url, part, meta, report, timeout)
            break
        except _InterruptedError as error:
            failures += 1
            if failures > retries:
                size = part.stat().st_size if part.exists() else 0
                raise DataError(
                    f"download of {url} interrupted after {size} bytes ({error}); "
                    f"run again to resume from {part}"
                ) from None
            time.sleep(retry_wait * failures)

    size = part.stat().st_size
    if total is not None and size != total:
        _discard(part, meta)
        raise DataError(f"{url}: downloaded {size} bytes, the server announced {total}; run again")
    if sha256 is not None:
        digest = _sha256_of(part)
        if digest != sha256.lower():
            _discard(part, meta)
            raise DataError(f"{url}: SHA-256 is {digest}, expected {sha256}; run again")
    if check is not None:
        try:
            check(part)
        except DataError as error:
            _discard(part, meta)
            raise DataError(f"{url}: the download is corrupt and was deleted ({error}); "
                            "run again to download it afresh") from None
    part.replace(target)
    meta.unlink(missing_ok=True)
    return target


def _download_attempt(
    url: str, part: Path, meta_path: Path, report: ProgressCallback, timeout: float
) -> int | None:
    """Fetch what ``part`` lacks; return the full size (None if unknown)."""
    saved = _read_meta(meta_path, url)
    offset = part.stat().st_size if part.exists() and saved is not None else 0
    headers = {"User-Agent": "fediot", "Accept-Encoding": "identity"}
    if offset > 0 and saved is not None:
        headers["Range"] = f"bytes={offset}-"
        validator = saved.get("etag") or saved.get("last_modified")
        if isinstance(validator, str) and validator:
            headers["If-Range"] = validator
    try:
        response = urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout
        )
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset > 0:
            satisfied = _UNSATISFIED_RANGE.match(error.headers.get("Content-Range", ""))
            if satisfied is not None and int(satisfied.group(1)) == offset:
                return offset  # the previous run had everything but the rename
            _discard(part, meta_path)
            raise _InterruptedError("the server rejected the resume range; restarting") from None
        raise DataError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        raise _InterruptedError(str(getattr(error, "reason", error))) from None

    with response:
        if response.status == 206 and offset > 0:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                _discard(part, meta_path)
                raise _InterruptedError("the server answered another range; restarting")
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        elif response.status == 200:
            offset = 0  # no range support, or the file changed (If-Range): start over
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
            mode = "wb"
            _write_json_atomic(
                meta_path,
                {
                    "url": url,
                    "etag": response.headers.get("ETag"),
                    "last_modified": response.headers.get("Last-Modified"),
                    "total": total,
                },
            )
        else:
            raise DataError(f"{url}: unexpected HTTP status {response.status}")

        done = offset
        report(Progress("download", done, total, url))
        try:
            with part.open(mode) as out:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    report(Progress("download", done, total, url))
        except (http.client.HTTPException, OSError) as error:
            raise _InterruptedError(f"connection lost: {error!r}") from None
    if total is not None and done < total:
        raise _InterruptedError(f"connection closed after {done} of {total} bytes")
    return total


def _read_meta(path: Path, url: str) -> dict[str, object] | None:
    """The saved response headers of an earlier attempt at ``url``; None means start over."""
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(saved, dict) or saved.get("url") != url:
        return None
    return saved


def _discard(part: Path, meta: Path) -> None:
    part.unlink(missing_ok=True)
    meta.unlink(missing_ok=True)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _write_json_atomic(path: Path, payload: Mapping[str, object]) -> None:
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(payload, stream)
        Path(temporary).replace(path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def check_zip(path: Path, progress: ProgressCallback | None = None) -> None:
    """Raise :class:`DataError` unless ``path`` is a zip archive whose every member reads back
    whole with the CRC-32 its directory records.

    Reading the directory alone is not enough: a download whose bytes were damaged in transit
    (or stitched from two versions of the file by a resume) has an intact directory at its end
    and corrupt members before it. Reports ``Progress("verify", members_done, members, name)``.
    """
    report = progress or _no_progress
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
        raise DataError(f"{path}: not a zip archive ({error})") from None
    with archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        for done, member in enumerate(members):
            report(Progress("verify", done, len(members), member.filename))
            try:
                # ZipExtFile checks the CRC-32 when it reaches the member's end
                with archive.open(member) as stream:
                    while stream.read(_CHUNK):
                        pass
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
                raise DataError(f"{path}: corrupt zip archive: member {member.filename!r} "
                                f"does not read back ({error})") from None
        report(Progress("verify", len(members), len(members), ""))


def count_data_rows(path: Path) -> int:
    """Number of non-blank lines after the header of a CSV file (the parser skips blank lines)."""
    with Path(path).open("rb") as stream:
        stream.readline()
        return sum(1 for line in stream if line.strip())


def verify_row_counts(
    root: Path,
    expected: Mapping[FileKey, int] = OFFICIAL_ROW_COUNTS,
    progress: ProgressCallback | None = None,
) -> None:
    """Check that every expected (device, class) file under ``root`` has its row count.

    Raises one :class:`DataError` naming each missing file and each file whose count differs
    (path relative to ``root``, expected and found).
    """
    problems = _row_count_problems(Path(root), expected, progress or _no_progress)
    if problems:
        raise DataError(f"{root}: {problems}")


def _row_count_problems(
    root: Path, expected: Mapping[FileKey, int], report: ProgressCallback
) -> str | None:
    """Differing counts first (file, expected, found), then missing files; None if all match."""
    source = open_dataset(root)
    differing: list[str] = []
    missing: list[str] = []
    keys = sorted(expected)
    for done, key in enumerate(keys):
        uci_id, traffic_class = key
        path = source.files.get(key)
        report(Progress("verify", done, len(keys), f"{uci_id}.{traffic_class}"))
        if path is None:
            missing.append(
                f"the {traffic_class} file of device {uci_id} ({device_by_id(uci_id).name})"
            )
            continue
        found = count_data_rows(path)
        if found != expected[key]:
            relative = path.relative_to(root).as_posix()
            differing.append(f"{relative}: expected {expected[key]} rows, found {found}")
    report(Progress("verify", len(keys), len(keys), ""))
    parts = []
    if differing:
        parts.append("row counts differ from the official ones: " + _first_few(differing))
    if missing:
        parts.append(
            f"{len(missing)} of {len(keys)} expected files are missing: " + _first_few(missing)
        )
    return "; ".join(parts) or None


def _first_few(items: list[str], shown: int = 5) -> str:
    more = f"; and {len(items) - shown} more" if len(items) > shown else ""
    return "; ".join(items[:shown]) + more


def extract_uci_archive(
    archive: Path,
    dest: Path,
    *,
    expected_counts: Mapping[FileKey, int] | None = OFFICIAL_ROW_COUNTS,
    progress: ProgressCallback | None = None,
) -> Path:
    """Unpack the UCI zip (and its per-device RAR archives) into the new folder ``dest``.

    Everything happens in a hidden temporary folder beside ``dest``, which is renamed to
    ``dest`` only after the row counts are verified (``expected_counts=None`` skips that).
    """
    report = progress or _no_progress
    archive, dest = Path(archive), Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise DataError(f"{dest}: already exists and is not empty; choose a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_extract_leftovers(dest)
    work = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.partial-{owner_tag()}-"))
    try:
        _extract_zip(archive, work, report)
        data_root = _find_device_root(work, archive)
        rars = sorted(data_root.glob("*/*_attacks.rar"))
        for done, rar in enumerate(rars):
            report(Progress("extract", done, len(rars), rar.relative_to(data_root).as_posix()))
            botnet = rar.name.removesuffix("_attacks.rar")
            if botnet not in BOTNETS:
                raise DataError(f"{archive}: unexpected archive {rar.name}")
            _extract_rar(rar, rar.with_suffix(""), botnet)
            rar.unlink()
        report(Progress("extract", len(rars), len(rars), ""))
        if expected_counts is not None:
            problems = _row_count_problems(data_root, expected_counts, report)
            if problems:
                raise DataError(f"{archive}: {problems}")
        if dest.exists():
            dest.rmdir()  # empty, checked above
        data_root.replace(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def remove_extract_leftovers(dest: Path, max_age: float = STALE_SECONDS) -> list[Path]:
    """Remove the half-extracted folders ``.<dest>.partial-*`` beside ``dest`` that a killed
    process left: owner dead, or owner unknown (another machine, a name from before owner
    tags) and untouched for ``max_age`` seconds; a live extraction's folder is kept. Returns
    what was removed."""
    prefix = f".{dest.name}.partial-"
    try:
        names = [path.name for path in dest.parent.iterdir() if path.name.startswith(prefix)]
    except OSError:
        return []
    return remove_stale([(dest.parent / name, name.removeprefix(prefix)) for name in names],
                        max_age=max_age)


def _extract_zip(archive: Path, work: Path, report: ProgressCallback) -> None:
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [
                member
                for member in zipped.infolist()
                if not member.is_dir() and not member.filename.startswith("__MACOSX/")
            ]
            for done, member in enumerate(members):
                report(Progress("extract", done, len(members), member.filename))
                target = work / _safe_relative(member.filename, archive)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(member) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
            report(Progress("extract", len(members), len(members), ""))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError) as error:
        # an archive already under its final name (not downloaded here, or by an older
        # version that did not check the members): left alone, but say how to get a good one
        raise DataError(f"{archive}: corrupt zip archive ({error}); delete it and run again "
                        "to download it afresh") from None
    except FileNotFoundError:
        raise DataError(f"{archive}: no such file") from None


def _safe_relative(name: str, archive: Path) -> PurePosixPath:
    relative = PurePosixPath(name.replace("\\", "/"))
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise DataError(f"{archive}: unsafe member path {name!r}")
    return relative


def _find_device_root(work: Path, archive: Path) -> Path:
    """The extracted folder that holds the device folders (the zip may wrap them in one folder)."""
    names = {device.name.lower() for device in DEVICES}
    folder = work
    for _ in range(3):
        children = [child for child in folder.iterdir() if child.is_dir()]
        if any(child.name.lower() in names for child in children):
            return folder
        if len(children) != 1:
            break
        folder = children[0]
    raise DataError(
        f"{archive}: no N-BaIoT device folders inside; expected e.g. "
        f"{DEVICES[0].name}/benign_traffic.csv and {DEVICES[0].name}/gafgyt_attacks.rar"
    )


def _extract_rar(rar: Path, out_dir: Path, botnet: str) -> None:
    import rarfile  # imported here: only the UCI download needs it

    attacks = BOTNETS[botnet]
    try:
        with rarfile.RarFile(rar) as archive:
            out_dir.mkdir(exist_ok=True)
            for info in archive.infolist():
                if info.is_dir():
                    continue
                member = PurePosixPath(info.filename.replace("\\", "/"))
                if member.suffix.lower() != ".csv":
                    continue
                if member.stem not in attacks:
                    raise DataError(
                        f"{rar}: unexpected member {info.filename!r}; expected "
                        + ", ".join(f"{attack}.csv" for attack in attacks)
                    )
                target = out_dir / f"{member.stem}.csv"
                if target.exists():
                    raise DataError(f"{rar}: holds {member.name} twice")
                with archive.open(info) as source, target.open("wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
    except rarfile.RarCannotExec:
        raise DataError(
            f"{rar}: no tool to decompress RAR archives; install `unar` or "
            "`libarchive-tools` (bsdtar), e.g. `apt-get install unar`"
        ) from None
    except rarfile.Error as error:
        raise DataError(f"{rar}: corrupt RAR archive ({error!r})") from None


def download_nbaiot(
    dest: Path,
    *,
    url: str = UCI_URL,
    archive: Path | None = None,
    verify_counts: bool = True,
    expected_counts: Mapping[FileKey, int] | None = None,
    keep_archive: bool = True,
    sha256: str | None = None,
    progress: ProgressCallback | None = None,
    retries: int = 3,
    retry_wait: float = 1.0,
    timeout: float = 60.0,
) -> Path:
    """Download, extract and verify N-BaIoT into ``dest`` (UCI layout); return ``dest``.

    Parameters
    ----------
    dest
        The dataset folder to create. If it already holds a dataset, nothing is done.
    url
        Where the UCI zip is; default :data:`UCI_URL`.
    archive
        Where to keep the zip; default ``<dest>.zip`` beside ``dest`` (its partial download is
        ``<archive>.part``). An archive already there is complete and is not downloaded again.
    verify_counts
        Check each file's row count (default True); False for data that is not N-BaIoT.
    expected_counts
        Counts to check against; default :data:`catalog.OFFICIAL_ROW_COUNTS`.
    keep_archive
        Keep the zip after extraction (default True).
    sha256, progress, retries, retry_wait, timeout
        As in :func:`download_file`.
    """
    dest = Path(dest).expanduser().absolute()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        open_dataset(dest)  # raises unless it is a dataset folder already
        return dest
    archive = (
        Path(archive).expanduser() if archive is not None else dest.with_name(dest.name + ".zip")
    )
    download_file(
        url,
        archive,
        progress=progress,
        retries=retries,
        retry_wait=retry_wait,
        timeout=timeout,
        sha256=sha256,
        check=lambda part: check_zip(part, progress),
    )
    counts = (expected_counts or OFFICIAL_ROW_COUNTS) if verify_counts else None
    extract_uci_archive(archive, dest, expected_counts=counts, progress=progress)
    if not keep_archive:
        with contextlib.suppress(FileNotFoundError):
            archive.unlink()
    return dest
