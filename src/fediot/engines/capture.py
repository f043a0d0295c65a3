"""Live packets from a network interface: a raw ``AF_PACKET`` socket (Linux), no libpcap.

Frames are dissected by :class:`fediot.core.features.pcap.FrameDissector`, the parser the
capture-file reader uses, so a live packet and the same packet read from a pcap give the same
:class:`~fediot.core.features.packets.Packet`. Timestamps are the kernel's receive times
(``SO_TIMESTAMPNS``) where available, else the time the frame was read. As libpcap does, the
loopback interface's outgoing copies are dropped so each packet is seen once.

Opening the socket needs root or the ``CAP_NET_RAW`` capability.
"""

from __future__ import annotations

import contextlib
import errno
import platform
import socket
import struct
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Final

from fediot.core.features.packets import LINKTYPE_ETHERNET, LINKTYPE_RAW, Packet
from fediot.core.features.pcap import (
    CaptureError,
    FrameDissector,
    MalformedFrameError,
)

ETH_P_ALL: Final[int] = 0x0003
_PACKET_OUTGOING: Final[int] = 4
# Hardware types (``ARPHRD_*``) → the link type their frames are read as.
_LINK_TYPES: Final[dict[int, int]] = {
    1: LINKTYPE_ETHERNET,  # ARPHRD_ETHER
    772: LINKTYPE_ETHERNET,  # ARPHRD_LOOPBACK: Ethernet-framed, zero MACs
    519: LINKTYPE_RAW,  # ARPHRD_RAWIP
    65534: LINKTYPE_RAW,  # ARPHRD_NONE (tun): raw IP
}
_ARPHRD_LOOPBACK: Final[int] = 772
# SO_TIMESTAMPNS (= SCM_TIMESTAMPNS) is 35 on the asm-generic ABIs; Python does not export it.
_SO_TIMESTAMPNS: Final[int | None] = (
    35 if platform.machine() in {"x86_64", "i686", "aarch64", "armv7l", "riscv64"} else None
)
_TIMESPEC: Final = struct.Struct("@qq")
_SOL_PACKET: Final[int] = 263
_PACKET_STATISTICS: Final[int] = 6
_PACKET_STATS: Final = struct.Struct("@II")  # struct tpacket_stats: packets, drops
_RECEIVE_BUFFER: Final[int] = 4 << 20  # absorbs bursts while a batch is scored


class LiveCapture:
    """Packets arriving on one network interface, read with a raw ``AF_PACKET`` socket.

    Use as a context manager (the socket opens on entry and closes on exit), then iterate
    :meth:`packets`.

    Parameters
    ----------
    interface
        The interface name, e.g. ``eth0`` or ``lo``.
    snaplen
        Bytes kept of each frame (default 65,535); the wire length is always the real one.
    poll_seconds
        How often a blocked read wakes up to check ``seconds`` (default 0.2).

    Attributes
    ----------
    frames, skipped, skip_reasons
        Frames read, frames that could not be dissected, and why (reason → count).
    dropped
        Frames the kernel dropped because the socket's receive buffer was full (the reader
        fell behind), counted when the capture closes.
    """

    def __init__(self, interface: str, *, snaplen: int = 65_535,
                 poll_seconds: float = 0.2) -> None:
        self.interface = interface
        self.snaplen = snaplen
        self.poll_seconds = poll_seconds
        self.frames = 0
        self.skipped = 0
        self.skip_reasons: dict[str, int] = {}
        self.dropped = 0
        self._socket: socket.socket | None = None
        self._link_type = LINKTYPE_ETHERNET
        self._loopback = False
        self._kernel_times = False

    def open(self) -> LiveCapture:
        """Open and bind the socket; :class:`CaptureError` if the platform, the permissions or
        the interface do not allow it."""
        name = self.interface
        if not hasattr(socket, "AF_PACKET"):
            raise CaptureError(f"live capture on {name!r} needs Linux (AF_PACKET sockets)")
        if not name or "\0" in name or "/" in name or len(name.encode()) > 15:
            raise CaptureError(f"interface {name!r}: not a valid interface name")
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        except PermissionError:
            raise CaptureError(
                f"interface {name!r}: live capture needs root or the CAP_NET_RAW capability "
                "(run as root, or: sudo setcap cap_net_raw+ep <the python executable>)"
            ) from None
        try:
            sock.bind((name, ETH_P_ALL))
            hardware = sock.getsockname()[3]
        except OSError as error:
            sock.close()
            if error.errno == errno.ENODEV:
                known = ", ".join(sorted(n for _, n in socket.if_nameindex()))
                raise CaptureError(
                    f"interface {name!r}: no such network interface (have: {known})"
                ) from None
            raise CaptureError(f"interface {name!r}: cannot capture ({error.strerror})") from None
        if hardware not in _LINK_TYPES:
            sock.close()
            raise CaptureError(
                f"interface {name!r}: unsupported hardware type {hardware} "
                "(Ethernet, loopback and raw-IP interfaces are supported)"
            )
        self._link_type = _LINK_TYPES[hardware]
        self._loopback = hardware == _ARPHRD_LOOPBACK
        if _SO_TIMESTAMPNS is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                self._kernel_times = True
            except OSError:
                self._kernel_times = False
        with contextlib.suppress(OSError):  # the kernel caps it at net.core.rmem_max
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RECEIVE_BUFFER)
        sock.settimeout(self.poll_seconds)
        self._socket = sock
        self._read_statistics()  # reset the kernel's counters: count from now on
        self.dropped = 0
        return self

    def _read_statistics(self) -> None:
        """Add the kernel's drop count since the last read (reading resets it)."""
        if self._socket is None:
            return
        try:
            raw = self._socket.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, _PACKET_STATS.size)
        except OSError:
            return
        _, drops = _PACKET_STATS.unpack(raw)
        self.dropped += drops

    def close(self) -> None:
        if self._socket is not None:
            self._read_statistics()
            self._socket.close()
            self._socket = None

    def __enter__(self) -> LiveCapture:
        return self.open()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def packets(self, *, count: int | None = None,
                seconds: float | None = None) -> Iterator[Packet]:
        """Dissected packets as they arrive, until ``count`` packets or ``seconds`` of wall
        time (either, or neither: until the caller stops iterating or Ctrl-C)."""
        for batch in self.batches(count=count, seconds=seconds, max_batch=1):
            yield from batch

    def batches(self, *, count: int | None = None, seconds: float | None = None,
                max_batch: int = 256) -> Iterator[list[Packet]]:
        """:meth:`packets` in lists: each waits for one packet, then takes whatever is already
        queued behind it, up to ``max_batch``. A quiet link gives lists of one (no added
        latency); a flood gives full lists, so a caller that scores in batches keeps up."""
        sock = self._socket
        if sock is None:
            raise CaptureError(f"interface {self.interface!r}: the capture is not open")
        if max_batch < 1:
            raise CaptureError(f"max_batch must be ≥ 1, got {max_batch}")
        dissector = FrameDissector()
        view = memoryview(bytearray(self.snaplen))
        ancillary = socket.CMSG_SPACE(_TIMESPEC.size) if self._kernel_times else 0
        deadline = None if seconds is None else time.monotonic() + seconds
        delivered = 0
        while count is None or delivered < count:
            if deadline is not None and time.monotonic() >= deadline:
                return
            limit = max_batch if count is None else min(max_batch, count - delivered)
            batch: list[Packet] = []
            flags = socket.MSG_TRUNC  # the first read of a batch waits (up to poll_seconds)
            while len(batch) < limit:
                try:
                    wire_len, ancdata, _, address = sock.recvmsg_into([view], ancillary, flags)
                except (TimeoutError, BlockingIOError):
                    break
                flags = socket.MSG_TRUNC | socket.MSG_DONTWAIT
                if self._loopback and address[2] == _PACKET_OUTGOING:
                    continue  # the same packet arrives again as incoming
                timestamp = _kernel_time(ancdata) if ancdata else None
                if timestamp is None:
                    timestamp = time.time()
                self.frames += 1
                frame = bytes(view[:min(wire_len, self.snaplen)])
                try:
                    batch.append(dissector.packet(self._link_type, frame, timestamp, wire_len))
                except MalformedFrameError as error:
                    self.skipped += 1
                    reason = str(error)
                    self.skip_reasons[reason] = self.skip_reasons.get(reason, 0) + 1
            if batch:
                delivered += len(batch)
                yield batch


def _kernel_time(ancdata: list[tuple[int, int, bytes]]) -> float | None:
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            return float(seconds + nanoseconds / 1e9)
    return None
