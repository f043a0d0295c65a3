"""Helpers shared by the benchmarks: where the shared data is, atomic result files, a large
capture built from the real one."""

from __future__ import annotations

import json
import os
import platform
import struct
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
SHARED = Path(os.environ.get("FEDIOT_SHARED", REPO.parent / "shared"))


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` atomically, stamped with time and machine."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "processor": platform.machine()},
        **payload,
    }
    target = RESULTS / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=RESULTS, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    Path(tmp).chmod(0o644)  # mkstemp makes 0600 files
    Path(tmp).replace(target)
    return target


def build_repeated_capture(source: Path, target: Path, copies: int) -> int:
    """Write ``copies`` back-to-back copies of ``source``'s records; return the packet count."""
    raw = source.read_bytes()
    if raw[:4] != b"\xd4\xc3\xb2\xa1":
        raise SystemExit(f"{source}: expected a little-endian microsecond pcap")
    records: list[tuple[int, int, int, bytes]] = []
    offset = 24
    while offset < len(raw):
        seconds, micros, caplen, wire_len = struct.unpack_from("<IIII", raw, offset)
        records.append((seconds, micros, wire_len, raw[offset + 16:offset + 16 + caplen]))
        offset += 16 + caplen
    span = records[-1][0] - records[0][0] + 1
    with target.open("wb") as out:
        out.write(raw[:24])
        for copy in range(copies):
            shift = copy * span
            for seconds, micros, wire_len, frame in records:
                out.write(struct.pack("<IIII", seconds + shift, micros, len(frame), wire_len))
                out.write(frame)
    return copies * len(records)
