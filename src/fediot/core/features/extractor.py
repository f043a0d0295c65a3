"""Packets → the 115 N-BaIoT features, streaming or in batches, with N-BaIoT's conventions.

Conventions reproduced (checked against real N-BaIoT rows, ``shared/data/nbaiot/SOURCE.md``):

- decay 2^(−λ·Δt) for λ = 5, 3, 1, 0.1, 0.01; every stream starts at weight 1e-20;
- 1-D streams (``MI_dir``, ``H``, ``HH_jit``) report weight, mean and *variance*;
  2-D streams (``HH``, ``HpHp``) report weight, mean and *standard deviation* of the packet's
  own direction, magnitude = sqrt(mean_i² + mean_j²), radius = sqrt(var_i² + var_j²),
  covariance (Kitsune's damped residual-product approximation) and pcc over the two directions,
  in the reference convention: before a packet's residual is multiplied by the other
  direction's last residual, that residual is decayed by 2^(−λ·Δt) like the sums it enters
  (upstream Kitsune decays the packet's own, soon overwritten, residual instead, so a stale
  residual counts in full and |pcc| reaches ~2,400 on real traffic; here |pcc| stays ≤ 1, as in
  every real N-BaIoT row);
- ``HH`` statistics are per directed channel (src IP → dst IP), not per source host;
- the first jitter of a new channel is the packet's absolute epoch time (option
  ``first_jitter``), which then decays away over about an hour at λ = 0.01;
- row *i* is the feature vector right after packet *i* was added.

One deliberate difference from Kitsune's Python code: that code updates a 2-D pair twice per
packet (once from the stream's insert, once more explicitly); we update it once, as its
comments intend. The effect is confined to ``covariance`` and ``pcc``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import FIRST_JITTER_CHOICES, LAMBDAS, N_FEATURES
from fediot.core.errors import FediotError
from fediot.core.features import kernel
from fediot.core.features.packets import Packet, PacketTable
from fediot.core.features.streams import StreamKeyer

_ID_CACHE_LIMIT = 1 << 16
"""Packet keys whose stream ids :meth:`FeatureExtractor.update_packet` remembers (a flood of
new sockets would otherwise grow the cache without bound)."""
_DECAY_BASE = np.array([2.0])


@dataclass(frozen=True)
class ExtractorOptions:
    """How features are computed.

    Parameters
    ----------
    first_jitter
        ``"epoch"`` (default, N-BaIoT): a new channel's first inter-arrival time is measured from
        the Unix epoch, so it equals the packet's timestamp (~1.5e9). ``"zero"``: it is 0, which
        keeps ``HH_jit`` small but no longer matches models trained on the public N-BaIoT.
    chunk_size
        Packets keyed and processed per step in batch mode (default 65,536); only memory and
        progress granularity depend on it, never the result.
    """

    first_jitter: str = "epoch"
    chunk_size: int = 65_536

    def __post_init__(self) -> None:
        if self.first_jitter not in FIRST_JITTER_CHOICES:
            raise FediotError(
                f"first_jitter must be one of {FIRST_JITTER_CHOICES}, got {self.first_jitter!r}"
            )
        if self.chunk_size < 1:
            raise FediotError(f"chunk_size must be ≥ 1, got {self.chunk_size}")


class FeatureExtractor:
    """Incremental N-BaIoT feature extractor (Kitsune's AfterImage) for one traffic capture.

    Feed packets in capture order, a table at a time (:meth:`process`) or one by one
    (:meth:`update`, a scalar fast path for live traffic); the state carries over, so any
    split of a capture, and any mix of the two, gives the same rows.

    Parameters
    ----------
    options
        :class:`ExtractorOptions`; defaults match N-BaIoT.
    """

    def __init__(self, options: ExtractorOptions | None = None) -> None:
        self.options = options or ExtractorOptions()
        self._keyer = StreamKeyer()
        self._mi = kernel.StatTable()
        self._h = kernel.StatTable()
        self._jit = kernel.StatTable()
        self._hh = kernel.StatTable()
        self._hphp = kernel.StatTable()
        self._hh_pairs = kernel.PairTable()
        self._hphp_pairs = kernel.PairTable()
        self._lambdas = np.asarray(LAMBDAS, dtype=np.float64)
        self._jitter_epoch = self.options.first_jitter == "epoch"
        # one-row buffers for update(): a live packet runs the batch kernel on them
        self._one_time = np.empty(1, dtype=np.float64)
        self._one_size = np.empty(1, dtype=np.float64)
        # packet key → its stream ids as a one-row matrix for the kernel
        self._ids_seen: dict[tuple[int, int, str, str, int, int, int], npt.NDArray[np.int64]] = {}
        self.packets_seen = 0

    def process(
        self,
        packets: PacketTable,
        progress: Callable[[int], None] | None = None,
        out: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Add ``packets`` (in capture order); return their features, shape (n, 115).

        Parameters
        ----------
        packets
            The packets.
        progress
            Called with the number of packets done after each chunk (default: none).
        out
            Optional C-contiguous float64 array of at least n rows × 115 to write the rows
            into; the first n rows are returned (a view). Default: a new array.
        """
        n = len(packets)
        if out is None:
            out = np.empty((n, N_FEATURES), dtype=np.float64)
        elif (out.dtype != np.float64 or out.ndim != 2 or out.shape[0] < n
              or out.shape[1] != N_FEATURES or not out.flags.c_contiguous):
            raise FediotError(
                f"out must be a C-contiguous float64 array of ≥ {n} rows × {N_FEATURES}, "
                f"got {out.dtype} {out.shape}"
            )
        else:
            out = out[:n]
        self._check_input(packets)
        step = self.options.chunk_size
        for start in range(0, n, step):
            stop = min(start + step, n)
            self._process_chunk(packets.take(slice(start, stop)), out[start:stop])
            if progress is not None:
                progress(stop - start)
        return out

    def update(
        self,
        *,
        timestamp: float,
        frame_len: int,
        src_mac: int,
        dst_mac: int,
        src_ip: str,
        dst_ip: str,
        src_port: int,
        dst_port: int,
        kind: int,
        ip_proto: int = 0,
    ) -> npt.NDArray[np.float64]:
        """Add one packet; return its 115 features (for live detection).

        The keyword form of :meth:`update_packet` (the same path, same state): stream ids are
        looked up on Python values and the compiled kernel runs on preallocated one-row
        buffers, so no table or array is built per packet, and the rows are bit-identical to
        :meth:`process`'s. ``ip_proto`` does not enter the features.
        """
        return self._update_one(timestamp, frame_len, src_mac, dst_mac, src_ip, dst_ip,
                                src_port, dst_port, kind, None)

    def update_packet(
        self, packet: Packet, out: npt.NDArray[np.float64] | None = None
    ) -> npt.NDArray[np.float64]:
        """Add one :class:`~fediot.core.features.packets.Packet`; return its 115 features.

        The light per-packet entry point: a packet of a flow seen before costs one dictionary
        probe for all its stream ids (they never change once given) and one kernel call.

        Parameters
        ----------
        packet
            The packet (its ``ip_proto`` does not enter the features).
        out
            Optional float64 array of 115 values to write the features into (and return),
            so a caller can reuse one buffer; default: a new array per packet.
        """
        timestamp, frame_len, src_mac, dst_mac, src_ip, dst_ip, src_port, dst_port, kind, _ = (
            packet
        )
        return self._update_one(timestamp, frame_len, src_mac, dst_mac, src_ip, dst_ip,
                                src_port, dst_port, kind, out)

    def _update_one(
        self, timestamp: float, frame_len: int, src_mac: int, dst_mac: int, src_ip: str,
        dst_ip: str, src_port: int, dst_port: int, kind: int,
        out: npt.NDArray[np.float64] | None,
    ) -> npt.NDArray[np.float64]:
        timestamp = float(timestamp)
        if not math.isfinite(timestamp):
            raise FediotError(f"packet #{self.packets_seen} has a non-finite timestamp")
        if frame_len < 0:
            raise FediotError(f"packet #{self.packets_seen} has a negative frame length")
        key = (src_mac, dst_mac, src_ip, dst_ip, src_port, dst_port, kind)
        ids = self._ids_seen.get(key)
        if ids is None:
            ids = self._new_ids(key)
        self._one_time[0] = timestamp
        self._one_size[0] = frame_len
        if out is None:
            rows = np.empty((1, N_FEATURES), dtype=np.float64)
        elif out.shape == (N_FEATURES,) and out.dtype == np.float64:
            rows = out.reshape(1, N_FEATURES)
        else:
            raise FediotError(f"out must be a float64 array of {N_FEATURES} values")
        self._run_kernel(rows, self._one_time, self._one_size, ids)
        self.packets_seen += 1
        row: npt.NDArray[np.float64] = rows[0]
        return row

    def _new_ids(self, key: tuple[int, int, str, str, int, int, int]) -> npt.NDArray[np.int64]:
        """Stream ids of a packet key not in the id cache: registered, the state tables grown
        to hold them, and cached (ids never change once given, so the cache is never stale,
        only bounded)."""
        ids = self._keyer.assign_one(*key)
        mi, h, jit, hh, hh_rev, hh_pair, _, hp, hp_rev, hp_pair, _ = ids
        # Growing is rare: compare each id with its table's capacity.
        if mi >= self._mi.capacity:
            self._mi.reserve(mi + 1)
        if h >= self._h.capacity:
            self._h.reserve(h + 1)
        if jit >= self._jit.capacity:
            self._jit.reserve(jit + 1)
        if max(hh, hh_rev) >= self._hh.capacity:
            self._hh.reserve(max(hh, hh_rev) + 1)
        if max(hp, hp_rev) >= self._hphp.capacity:
            self._hphp.reserve(max(hp, hp_rev) + 1)
        if hh_pair >= self._hh_pairs.capacity:
            self._hh_pairs.reserve(hh_pair + 1)
        if hp_pair >= self._hphp_pairs.capacity:
            self._hphp_pairs.reserve(hp_pair + 1)
        if len(self._ids_seen) >= _ID_CACHE_LIMIT:
            self._ids_seen.clear()
        row = np.array([ids], dtype=np.int64)
        self._ids_seen[key] = row
        return row

    def _check_input(self, packets: PacketTable) -> None:
        if len(packets) == 0:
            return
        t = packets.timestamp
        if not np.all(np.isfinite(t)):
            bad = int(np.flatnonzero(~np.isfinite(t))[0])
            raise FediotError(f"packet #{self.packets_seen + bad} has a non-finite timestamp")
        if not np.all(packets.frame_len >= 0):
            bad = int(np.flatnonzero(packets.frame_len < 0)[0])
            raise FediotError(f"packet #{self.packets_seen + bad} has a negative frame length")
        # Out-of-order packets are legal in captures (multi-queue NICs); like Kitsune, the
        # decay then simply skips them (Δt ≤ 0 means no decay).

    def _process_chunk(self, packets: PacketTable, out: npt.NDArray[np.float64]) -> None:
        ids = self._keyer.assign(packets)
        sizes = self._keyer.sizes
        self._mi.reserve(sizes["mi"])
        self._h.reserve(sizes["h"])
        self._jit.reserve(sizes["jit"])
        self._hh.reserve(sizes["hh"])
        self._hphp.reserve(sizes["hphp"])
        self._hh_pairs.reserve(sizes["hh_pairs"])
        self._hphp_pairs.reserve(sizes["hphp_pairs"])
        id_matrix = np.column_stack([getattr(ids, name) for name in kernel.ID_COLUMNS])
        self._run_kernel(out, packets.timestamp, packets.frame_len.astype(np.float64), id_matrix)
        self.packets_seen += len(packets)

    def _run_kernel(
        self,
        out: npt.NDArray[np.float64],
        timestamps: npt.NDArray[np.float64],
        sizes: npt.NDArray[np.float64],
        ids: npt.NDArray[np.int64],
    ) -> None:
        kernel.update_features(
            out, timestamps, sizes, self._lambdas, _DECAY_BASE, self._jitter_epoch, ids,
            self._mi.data, self._h.data, self._jit.data, self._hh.data, self._hh_pairs.data,
            self._hphp.data, self._hphp_pairs.data,
        )


def extract_features(
    packets: PacketTable,
    *,
    options: ExtractorOptions | None = None,
    progress: Callable[[int], None] | None = None,
) -> npt.NDArray[np.float64]:
    """The 115 N-BaIoT features of every packet of one capture (fresh state), shape (n, 115)."""
    return FeatureExtractor(options).process(packets, progress=progress)
