"""Download from a local HTTP server: resume, atomicity, extraction of real RAR files, checks."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rarfile
from nbaiot_fixtures import METADATA_FILES, uci_relative_path, uci_zip
from range_http_server import RangeServer, Served
from rar4_writer import end_header, main_header, rar_bytes, write_rar

from fediot.core.catalog import BENIGN
from fediot.core.data import DataError, Progress, download_file, download_nbaiot, open_dataset
from fediot.core.data.download import count_data_rows, verify_row_counts

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
