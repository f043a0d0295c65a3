"""`fediot extract` end to end (a real subprocess): the files it writes hold exactly the rows
of the in-process pipeline, over more than one 65,536-row chunk, in both formats."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fediot.core.features.extractor import extract_features
from fediot.core.features.pcap import read_capture
from fediot.core.io import write_features


def repeated_capture(source: Path, target: Path, copies: int) -> Path:
    """``copies`` back-to-back copies of ``source``'s records, each later in time."""
    raw = source.read_bytes()
    records, offset = [], 24
    while offset < len(raw):
        seconds, fraction, caplen, wire = struct.unpack_from("<IIII", raw, offset)
        records.append((seconds, fraction, wire, raw[offset + 16:offset + 16 + caplen]))
        offset += 16 + caplen
    span = records[-1][0] - records[0][0] + 1
    parts = [raw[:24]]
    for copy in range(copies):
        for seconds, fraction, wire, frame in records:
            parts.append(struct.pack("<IIII", seconds + copy * span, fraction, len(frame), wire))
            parts.append(frame)
    target.write_bytes(b"".join(parts))
    return target


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_extract_writes_the_pipelines_rows(real_pcap: Path, tmp_path: Path, suffix: str) -> None:
    capture = repeated_capture(real_pcap, tmp_path / "long.pcap", 34)  # 68,000 packets
    output = tmp_path / f"features.{suffix}"
    done = subprocess.run([sys.executable, "-m", "fediot", "extract", str(capture), "-o",
                           str(output)], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "68,000" in done.stdout
    expected = extract_features(read_capture(capture).packets)
    reference = write_features(tmp_path / f"expected.{suffix}", expected)
    if suffix == "csv":
        assert output.read_bytes() == reference.read_bytes()
    else:
        table = pq.read_table(output)
        rows = np.column_stack([column.to_numpy() for column in table.columns])
        np.testing.assert_array_equal(rows.view(np.uint64), expected.view(np.uint64))
