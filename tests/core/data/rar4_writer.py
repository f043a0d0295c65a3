"""A minimal RAR 4.x archive writer (STORE method only), for test fixtures.

Debian ships no ``rar`` tool, and the UCI N-BaIoT zip holds RAR archives, so the download tests
build their own. Format (RAR 1.5–4.x technote): the marker block ``52 61 72 21 1A 07 00``, a
main archive header, one file header (+ data) per member and an end-of-archive block. Every
header starts with ``HEAD_CRC`` (low 16 bits of the CRC32 of the rest of the header),
``HEAD_TYPE``, ``HEAD_FLAGS`` and ``HEAD_SIZE``; a file header also carries the CRC32 of the
member's data. Members are written as a Windows host would (``\\`` separators), like WinRAR.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Final

MARKER: Final[bytes] = b"Rar!\x1a\x07\x00"
MAIN_HEAD: Final[int] = 0x73
FILE_HEAD: Final[int] = 0x74
END_HEAD: Final[int] = 0x7B

LONG_BLOCK: Final[int] = 0x8000  # a data area (PACK_SIZE bytes) follows the header
SKIP_IF_UNKNOWN: Final[int] = 0x4000
DIRECTORY: Final[int] = 0x00E0

HOST_WIN32: Final[int] = 2
METHOD_STORE: Final[int] = 0x30
UNPACK_VERSION: Final[int] = 29  # RAR 2.9 / 3.x / 4.x format
ATTR_ARCHIVE: Final[int] = 0x20
ATTR_DIRECTORY: Final[int] = 0x10
DOS_TIME_2018: Final[int] = ((2018 - 1980) << 25) | (3 << 21) | (1 << 16)  # 2018-03-01 00:00


def _block(head_type: int, flags: int, body: bytes) -> bytes:
    """A header block: CRC16 (of CRC32) over type, flags, size and body."""
    size = 7 + len(body)
    rest = struct.pack("<BHH", head_type, flags, size) + body
    return struct.pack("<H", zlib.crc32(rest) & 0xFFFF) + rest


def main_header() -> bytes:
    """The main archive header with no flags (bytes ``CF 90 73 00 00 0D 00 …``)."""
    return _block(MAIN_HEAD, 0, struct.pack("<HI", 0, 0))


def end_header() -> bytes:
    """The end-of-archive block (bytes ``C4 3D 7B 00 40 07 00``)."""
    return _block(END_HEAD, SKIP_IF_UNKNOWN, b"")


def file_header(name: str, data: bytes, directory: bool = False) -> bytes:
    """The header of one stored member; ``name`` uses ``/`` and is written with ``\\``."""
    encoded = name.replace("/", "\\").encode("ascii")
    flags = LONG_BLOCK | (DIRECTORY if directory else 0)
    body = struct.pack(
        "<IIBIIBBHI",
        len(data),  # PACK_SIZE: stored, so equal to the unpacked size
        len(data),  # UNP_SIZE
        HOST_WIN32,
        zlib.crc32(data),  # FILE_CRC
        DOS_TIME_2018,
        UNPACK_VERSION,
        METHOD_STORE,
        len(encoded),
        ATTR_DIRECTORY if directory else ATTR_ARCHIVE,
    )
    return _block(FILE_HEAD, flags, body + encoded)


def rar_bytes(members: Mapping[str, bytes]) -> bytes:
    """A whole RAR 4.x archive storing ``members`` (name → content), folders made explicit."""
    folders: list[str] = []
    for name in members:
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            if folder not in folders:
                folders.append(folder)
    chunks = [MARKER, main_header()]
    chunks += [file_header(folder, b"", directory=True) for folder in folders]
    for name, data in members.items():
        chunks += [file_header(name, data), data]
    chunks.append(end_header())
    return b"".join(chunks)


def write_rar(path: Path, members: Mapping[str, bytes]) -> Path:
    """Write :func:`rar_bytes` of ``members`` to ``path``."""
    path.write_bytes(rar_bytes(members))
    return path
