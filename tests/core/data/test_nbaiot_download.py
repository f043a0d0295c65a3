"""Download from a local HTTP server: resume, atomicity, extraction of real RAR files, checks."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rarfile
from nbaiot_fixtures import METADATA_FILES, uci_relative_path, uci_zip
from range_http_server import RangeServer, Served
from rar4_writer import end_header, main_header, rar_bytes, write_rar

from exited_process import exited_process
from fediot.core.catalog import BENIGN
from fediot.core.data import DataError, Progress, download_file, download_nbaiot, open_dataset
from fediot.core.data.download import (
    check_zip,
    count_data_rows,
    remove_extract_leftovers,
    verify_row_counts,
)
from fediot.core.liveness import STALE_SECONDS, owner_tag

EXTERNAL_RAR_TOOLS = {
    "bsdtar": lambda archive, out: ["bsdtar", "-xf", str(archive), "-C", str(out)],
    "unar": lambda archive, out: ["unar", "-q", "-D", "-o", str(out), str(archive)],
}


# --- the RAR writer makes real RAR 4.x archives -------------------------------------------------


def test_rar_writer_blocks_match_known_bytes() -> None:
    assert main_header() == bytes.fromhex("cf90 7300 000d 0000 0000 0000 00")
    assert end_header() == bytes.fromhex("c43d 7b00 4007 00")


MEMBERS = {
    "gafgyt_attacks/combo.csv": b"a,b\n1.5,-2e17\n",
    "gafgyt_attacks/junk.csv": b"x\n" * 5000,
    "scan.csv": b"",
}


def test_rar_writer_output_reads_with_rarfile(tmp_path: Path) -> None:
    archive = write_rar(tmp_path / "attacks.rar", MEMBERS)
    assert rarfile.is_rarfile(archive)
    with rarfile.RarFile(archive) as opened:
        files = {
            info.filename: opened.read(info) for info in opened.infolist() if not info.is_dir()
        }
        opened.testrar()
    assert files == MEMBERS


def test_rar_writer_output_fails_rarfile_crc_when_corrupted(tmp_path: Path) -> None:
    content = bytearray(rar_bytes({"combo.csv": b"1,2,3\n"}))
    content[content.index(b"1,2,3")] = ord("9")
    archive = tmp_path / "bad.rar"
    archive.write_bytes(bytes(content))
    with rarfile.RarFile(archive) as opened, pytest.raises(rarfile.BadRarFile):
        opened.read("combo.csv")


@pytest.mark.parametrize("tool", sorted(EXTERNAL_RAR_TOOLS))
def test_rar_writer_output_extracts_with_external_tool(tmp_path: Path, tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (Debian: apt-get install libarchive-tools / unar)")
    archive = write_rar(tmp_path / "attacks.rar", MEMBERS)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(EXTERNAL_RAR_TOOLS[tool](archive, out), check=True, capture_output=True)
    extracted = {
        path.relative_to(out).as_posix(): path.read_bytes()
        for path in out.rglob("*")
        if path.is_file()
    }
    assert extracted == MEMBERS


# --- download, extract, verify, load -------------------------------------------------------------


def test_full_download_extract_and_load(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(1, 3))
    reports: list[Progress] = []
    with RangeServer(Served(fixture.content)) as server:
        folder = download_nbaiot(
            tmp_path / "nbaiot",
            url=server.url,
            expected_counts=fixture.counts,
            progress=reports.append,
            retry_wait=0,
        )
    assert folder == (tmp_path / "nbaiot").absolute()
    assert (tmp_path / "nbaiot.zip").read_bytes() == fixture.content
    assert not list(tmp_path.glob("*.part*"))
    assert not list(tmp_path.glob(".nbaiot.partial-*"))
    # The UCI nesting, the RARs replaced by their folders, metadata kept.
    assert not list(folder.rglob("*.rar"))
    for name in METADATA_FILES:
        assert (folder / name).is_file()
    for key in fixture.counts:
        assert (folder / uci_relative_path(key)).is_file()
    assert not (folder / "Ennio_Doorbell" / "mirai_attacks").exists()

    source = open_dataset(folder)
    assert source.layout == "uci"
    assert set(source.files) == set(fixture.counts)
    for (uci_id, traffic_class), rows in fixture.rows.items():
        np.testing.assert_array_equal(source.load(uci_id, traffic_class), rows.astype(np.float32))
    assert {report.stage for report in reports} == {"download", "extract", "verify"}
    last_download = [r for r in reports if r.stage == "download"][-1]
    assert last_download.done == last_download.total == len(fixture.content)


def test_existing_dataset_is_not_downloaded_again(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(3,))
    served = Served(fixture.content)
    with RangeServer(served) as server:
        download_nbaiot(tmp_path / "nbaiot", url=server.url, verify_counts=False)
        download_nbaiot(tmp_path / "nbaiot", url=server.url, verify_counts=False)
    assert len(served.requests) == 1


def test_interrupted_download_resumes_and_gives_the_same_file(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(1,))
    cut = len(fixture.content) // 3
    served = Served(fixture.content, drop_after=cut, drops=1)
    with RangeServer(served) as server:
        # No retries: the first call fails and leaves only the partial file.
        with pytest.raises(DataError, match=rf"interrupted after {cut} bytes .* run again"):
            download_nbaiot(tmp_path / "nbaiot", url=server.url, retries=0, verify_counts=False)
        assert (tmp_path / "nbaiot.zip.part").stat().st_size == cut
        assert not (tmp_path / "nbaiot.zip").exists()
        assert not (tmp_path / "nbaiot").exists()

        download_nbaiot(tmp_path / "nbaiot", url=server.url, retries=0, verify_counts=False)
    assert served.requests[1]["range"] == f"bytes={cut}-"
    assert served.requests[1]["if_range"] == served.etag
    archive = tmp_path / "nbaiot.zip"
    assert hashlib.sha256(archive.read_bytes()).digest() == hashlib.sha256(fixture.content).digest()
    assert open_dataset(tmp_path / "nbaiot").load(1, BENIGN).shape[0] == fixture.counts[(1, BENIGN)]


def test_dropped_connections_are_resumed_within_one_call(tmp_path: Path) -> None:
    content = bytes(range(256)) * 4000
    served = Served(content, drop_after=70_000, drops=3)
    with RangeServer(served) as server:
        target = download_file(server.url, tmp_path / "file.bin", retries=3, retry_wait=0)
    assert target.read_bytes() == content
    assert [request["range"] for request in served.requests] == [
        None,
        "bytes=70000-",
        "bytes=140000-",
        "bytes=210000-",
    ]


def test_server_without_ranges_restarts_from_zero(tmp_path: Path) -> None:
    content = b"0123456789" * 50_000
    served = Served(content, ranges=False, drop_after=123_456, drops=1)
    with RangeServer(served) as server:
        target = download_file(server.url, tmp_path / "file.bin", retries=1, retry_wait=0)
    assert target.read_bytes() == content
    assert served.requests[1]["range"] == "bytes=123456-"  # asked, but got the whole file


def test_a_changed_file_on_the_server_restarts_the_download(tmp_path: Path) -> None:
    old = b"A" * 100_000
    with (
        RangeServer(Served(old, drop_after=40_000, drops=1)) as server,
        pytest.raises(DataError, match="interrupted"),
    ):
        download_file(server.url, tmp_path / "file.bin", retries=0)
    new = b"B" * 90_000
    served = Served(new, etag='"fixture-v2"')
    with RangeServer(served) as server:
        # Same URL path, new port: point the saved state at it so that a resume is attempted.
        meta = tmp_path / "file.bin.part.json"
        saved = json.loads(meta.read_text())
        meta.write_text(json.dumps({**saved, "url": server.url}))
        target = download_file(server.url, tmp_path / "file.bin", retries=0)
    assert served.requests[0]["if_range"] == '"fixture-v1"'
    assert target.read_bytes() == new


def test_a_half_download_never_looks_complete(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(3,))
    served = Served(fixture.content, drop_after=len(fixture.content) - 10, drops=1)
    with RangeServer(served) as server, pytest.raises(DataError, match="interrupted"):
        download_nbaiot(tmp_path / "nbaiot", url=server.url, retries=0, verify_counts=False)
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "nbaiot.zip.part",
        "nbaiot.zip.part.json",
    ]
    with pytest.raises(DataError, match="no such folder"):
        open_dataset(tmp_path / "nbaiot")


def test_a_file_that_is_not_a_zip_is_rejected_and_discarded(tmp_path: Path) -> None:
    with (
        RangeServer(Served(b"<html>maintenance</html>")) as server,
        pytest.raises(DataError, match="not a zip archive"),
    ):
        download_nbaiot(tmp_path / "nbaiot", url=server.url, verify_counts=False)
    assert list(tmp_path.iterdir()) == []


def corrupt_member(content: bytes, member: str) -> bytes:
    """``content`` (a zip) with one byte flipped in the middle of ``member``'s compressed data:
    the directory at the end still reads, the member no longer does."""
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        info = archive.getinfo(member)
    name_length, extra_length = struct.unpack_from("<HH", content, info.header_offset + 26)
    start = info.header_offset + 30 + name_length + extra_length
    position = start + info.compress_size // 2
    damaged = bytearray(content)
    damaged[position] ^= 0xFF
    return bytes(damaged)


def test_a_zip_with_a_corrupt_member_is_deleted_before_it_gets_its_name(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(3,))
    damaged = corrupt_member(fixture.content, "Ennio_Doorbell/benign_traffic.csv")
    with zipfile.ZipFile(io.BytesIO(damaged)) as archive:
        archive.infolist()  # what the check used to stop at: the directory is intact
    with (
        RangeServer(Served(damaged)) as server,
        pytest.raises(DataError) as caught,
    ):
        download_nbaiot(tmp_path / "nbaiot", url=server.url, verify_counts=False)
    message = str(caught.value)
    assert "corrupt" in message and "deleted" in message and "run again" in message
    assert "Ennio_Doorbell/benign_traffic.csv" in message
    assert list(tmp_path.iterdir()) == []  # no archive under its final name, no .part either
    # The rerun downloads afresh (here the server has a good copy by now) and succeeds.
    with RangeServer(Served(fixture.content)) as server:
        folder = download_nbaiot(tmp_path / "nbaiot", url=server.url, verify_counts=False)
    assert (tmp_path / "nbaiot.zip").read_bytes() == fixture.content
    assert open_dataset(folder).load(3, BENIGN).shape[0] == fixture.counts[(3, BENIGN)]


def test_check_zip_reads_every_member_back(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(3,))
    good, damaged, other = tmp_path / "good.zip", tmp_path / "damaged.zip", tmp_path / "x.zip"
    good.write_bytes(fixture.content)
    damaged.write_bytes(corrupt_member(fixture.content, "Ennio_Doorbell/gafgyt_attacks.rar"))
    other.write_bytes(b"<html>maintenance</html>")
    reports: list[Progress] = []
    check_zip(good, reports.append)
    members = sum(1 for m in zipfile.ZipFile(good).infolist() if not m.is_dir())
    assert (reports[-1].stage, reports[-1].done, reports[-1].total) == ("verify", members,
                                                                         members)
    with pytest.raises(DataError, match=r"damaged\.zip: corrupt zip archive: member "
                                        r"'Ennio_Doorbell/gafgyt_attacks\.rar'"):
        check_zip(damaged)
    with pytest.raises(DataError, match=r"x\.zip: not a zip archive"):
        check_zip(other)


def test_a_corrupt_archive_already_under_its_name_says_how_to_recover(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(3,))
    archive = tmp_path / "nbaiot.zip"  # as an older version left it: trusted, not downloaded
    archive.write_bytes(corrupt_member(fixture.content, "Ennio_Doorbell/benign_traffic.csv"))
    with pytest.raises(DataError, match=r"corrupt zip archive .*delete it and run again"):
        download_nbaiot(tmp_path / "nbaiot", url="http://127.0.0.1:9/unused",
                        verify_counts=False)
    assert archive.is_file()  # not ours to delete: it was not downloaded by this call
    assert not list(tmp_path.glob(".nbaiot.partial-*"))


def test_half_extractions_of_killed_processes_are_removed_on_the_next_start(
        tmp_path: Path) -> None:
    fixture = uci_zip(devices=(3,))
    dead = exited_process()["tag"]
    old = time.time() - 2 * STALE_SECONDS
    leftovers = [tmp_path / f".nbaiot.partial-{dead}-x1y2z3", tmp_path / ".nbaiot.partial-ab12"]
    live = tmp_path / f".nbaiot.partial-{owner_tag()}-q9w8e7"
    for folder in [*leftovers, live]:
        (folder / "Ennio_Doorbell").mkdir(parents=True)
        (folder / "Ennio_Doorbell" / "benign_traffic.csv").write_text("partial")
        for path in (folder / "Ennio_Doorbell" / "benign_traffic.csv",
                     folder / "Ennio_Doorbell", folder):
            os.utime(path, (old, old))
    with RangeServer(Served(fixture.content)) as server:
        download_nbaiot(tmp_path / "nbaiot", url=server.url, verify_counts=False)
    assert not any(folder.exists() for folder in leftovers)
    assert live.is_dir()  # this (live) process's, however old
    assert remove_extract_leftovers(tmp_path / "nbaiot") == []


def test_http_errors_are_named(tmp_path: Path) -> None:
    with (
        RangeServer(Served(b"zip")) as server,
        pytest.raises(DataError, match=r"missing\.zip: HTTP 404"),
    ):
        download_file(server.url.replace("archive.zip", "missing.zip"), tmp_path / "x")


def test_sha256_is_checked(tmp_path: Path) -> None:
    content = b"payload" * 1000
    with (
        RangeServer(Served(content)) as server,
        pytest.raises(DataError, match="SHA-256 is"),
    ):
        download_file(server.url, tmp_path / "x", sha256="0" * 64)
        good = hashlib.sha256(content).hexdigest()
        assert download_file(server.url, tmp_path / "x", sha256=good).read_bytes() == content


def test_a_corrupted_file_fails_verification_and_names_it(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(1,), short_by_one=(1, "mirai.syn"))
    expected = fixture.counts[(1, "mirai.syn")]
    with RangeServer(Served(fixture.content)) as server, pytest.raises(DataError) as caught:
        download_nbaiot(tmp_path / "nbaiot", url=server.url, expected_counts=fixture.counts)
    message = str(caught.value)
    assert (
        f"Danmini_Doorbell/mirai_attacks/syn.csv: expected {expected} rows, found {expected - 1}"
        in message
    )
    assert "partial" not in message  # the temporary folder's name is not shown
    assert not (tmp_path / "nbaiot").exists()
    assert not list(tmp_path.glob(".nbaiot.partial-*"))
    assert (tmp_path / "nbaiot.zip").is_file()  # the archive itself was fine


def test_official_counts_are_the_default_check(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(3,))
    with (
        RangeServer(Served(fixture.content)) as server,
        pytest.raises(DataError, match=r"benign_traffic\.csv: expected 39100 rows, found"),
    ):
        download_nbaiot(tmp_path / "nbaiot", url=server.url)


def test_verify_names_missing_files(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(3,))
    with zipfile.ZipFile(io.BytesIO(fixture.content)) as archive:
        archive.extractall(tmp_path / "raw")
    benign = tmp_path / "raw" / "Ennio_Doorbell" / "benign_traffic.csv"
    with pytest.raises(DataError, match="not extracted"):
        verify_row_counts(tmp_path / "raw", {(3, BENIGN): count_data_rows(benign)})
    (tmp_path / "raw" / "Ennio_Doorbell" / "gafgyt_attacks.rar").unlink()
    verify_row_counts(tmp_path / "raw", {(3, BENIGN): count_data_rows(benign)})
    with pytest.raises(
        DataError,
        match=r"1 of 1 expected files are missing: the gafgyt\.tcp file of device 3 \(Ennio",
    ):
        verify_row_counts(tmp_path / "raw", {(3, "gafgyt.tcp"): 5})


def test_a_corrupt_rar_is_named(tmp_path: Path) -> None:
    fixture = uci_zip(devices=(3,))
    broken = io.BytesIO()
    with (
        zipfile.ZipFile(io.BytesIO(fixture.content)) as source,
        zipfile.ZipFile(broken, "w") as target,
    ):
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith(".rar"):
                data = data[: len(data) // 2]
            target.writestr(info, data)
    with (
        RangeServer(Served(broken.getvalue())) as server,
        pytest.raises(DataError, match=r"gafgyt_attacks\.rar: corrupt RAR archive"),
    ):
        download_nbaiot(tmp_path / "nbaiot", url=server.url, verify_counts=False)
    assert not (tmp_path / "nbaiot").exists()


def _leave_partial(tmp_path: Path, url: str, part_content: bytes) -> None:
    (tmp_path / "file.bin.part").write_bytes(part_content)
    (tmp_path / "file.bin.part.json").write_text(
        json.dumps({"url": url, "etag": '"fixture-v1"', "last_modified": None, "total": None})
    )


def test_a_complete_partial_file_is_finished_without_downloading(tmp_path: Path) -> None:
    content = b"complete" * 1000
    served = Served(content)
    with RangeServer(served) as server:
        _leave_partial(tmp_path, server.url, content)  # as if stopped just before the rename
        target = download_file(server.url, tmp_path / "file.bin", retries=0)
    assert target.read_bytes() == content
    assert served.requests == [
        {"path": "/archive.zip", "range": f"bytes={len(content)}-", "if_range": served.etag}
    ]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file.bin"]


def test_a_partial_file_longer_than_the_served_one_restarts(tmp_path: Path) -> None:
    content = b"short" * 100
    served = Served(content)
    with RangeServer(served) as server:
        _leave_partial(tmp_path, server.url, b"x" * 5000)
        target = download_file(server.url, tmp_path / "file.bin", retries=1, retry_wait=0)
    assert target.read_bytes() == content
    assert [request["range"] for request in served.requests] == ["bytes=5000-", None]
