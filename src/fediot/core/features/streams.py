"""Which streams a packet updates: packet columns → integer stream ids, without a Python loop.

Keys follow N-BaIoT's feature extractor (Kitsune's netStat on tshark fields):

- ``MI_dir``: source MAC + source IP; ``H``: source IP;
- ``HH``: the directed channel source IP → destination IP, paired with its reverse channel;
- ``HH_jit``: the directed channel;
- ``HpHp``: the directed socket (IP, port) → (IP, port), paired with its reverse; an ARP
  packet's sockets are its MAC addresses alone.
- A frame with neither IP nor ARP uses its MAC addresses in place of the IPs.
- When both ends of a 2-D stream are equal, the destination gets a suffix so the two
  directions stay distinct.

Ids are handed out in order of first appearance and persist across calls, so a capture fed in
chunks (or one packet at a time) gets the same ids as the whole capture at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from fediot.core.features.packets import KIND_ARP, KIND_OTHER, PORT_NONE, PacketTable

IntArray = npt.NDArray[np.int64]

_SUFFIX_BIT = np.int64(1 << 30)
"""Marks a suffixed destination id (address and endpoint ids stay below 2**30)."""
_PORT_OFFSET = 3
"""Ports run from −3 (sentinels) to 65535; shifted to be non-negative."""
_PORT_BITS = 17


class KeyIndex:
    """Hands out dense ids (0, 1, 2, …) to hashable keys in order of first appearance.

    For addresses (strings, MACs): few distinct keys, so a dict does.
    """

    def __init__(self) -> None:
        self._ids: dict[object, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def lookup(self, keys: npt.NDArray[np.generic], tag: str = "") -> IntArray:
        """Ids of ``keys`` (1-D array), registering unseen keys in order of appearance.

        ``tag`` separates namespaces sharing one index (``(tag, key)`` is the real key).
        """
        ids = self._ids
        if len(keys) <= 4:  # live traffic: hashing the array would cost more than the dict
            return np.fromiter((ids.setdefault((tag, k), len(ids)) for k in keys.tolist()),
                               dtype=np.int64, count=len(keys))
        codes, unique_array = pd.factorize(keys)
        mapped = np.fromiter(
            (ids.setdefault((tag, k), len(ids)) for k in unique_array.tolist()),
            dtype=np.int64,
            count=len(unique_array),
        )
        return mapped[codes]


class IntKeyIndex:
    """:class:`KeyIndex` for int64 keys, vectorised: floods with random ports create a new
    socket per packet, so new keys must not cost a Python call each.

    Known keys live in a sorted array searched with ``np.searchsorted``; keys registered one
    packet at a time wait in a small dict and are merged in bulk, so live traffic never pays
    for re-sorting the whole array.
    """

    _MERGE_AT = 4096

    def __init__(self) -> None:
        self._sorted_keys = np.empty(0, dtype=np.int64)
        self._sorted_ids = np.empty(0, dtype=np.int64)
        self._pending: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._sorted_keys) + len(self._pending)

    def lookup(self, keys: IntArray) -> IntArray:
        """Ids of ``keys``, registering unseen keys in order of first appearance."""
        if len(keys) <= 4:
            return np.fromiter((self._lookup_one(k) for k in keys.tolist()), dtype=np.int64,
                               count=len(keys))
        self._merge_pending()
        codes, uniques = pd.factorize(keys)
        uniques = np.asarray(uniques, dtype=np.int64)
        mapped, found = self._search(uniques)
        fresh = ~found  # factorize keeps first-appearance order, so new ids follow it too
        mapped[fresh] = len(self) + np.arange(int(fresh.sum()), dtype=np.int64)
        if fresh.any():
            self._insert_sorted(uniques[fresh], mapped[fresh])
        return mapped[codes]

    def _search(self, keys: IntArray) -> tuple[IntArray, npt.NDArray[np.bool_]]:
        known = self._sorted_keys
        pos = np.searchsorted(known, keys)
        found = pos < len(known)
        found[found] = known[pos[found]] == keys[found]
        mapped = np.full(len(keys), -1, dtype=np.int64)
        mapped[found] = self._sorted_ids[pos[found]]
        return mapped, found

    def _lookup_one(self, key: int) -> int:
        mapped, found = self._search(np.array([key], dtype=np.int64))
        if found[0]:
            return int(mapped[0])
        new_id = self._pending.setdefault(key, len(self))
        if len(self._pending) >= self._MERGE_AT:
            self._merge_pending()
        return new_id

    def _merge_pending(self) -> None:
        if self._pending:
            keys = np.fromiter(self._pending.keys(), dtype=np.int64, count=len(self._pending))
            ids = np.fromiter(self._pending.values(), dtype=np.int64, count=len(self._pending))
            self._pending = {}
            self._insert_sorted(keys, ids)

    def _insert_sorted(self, keys: IntArray, ids: IntArray) -> None:
        all_keys = np.concatenate([self._sorted_keys, keys])
        all_ids = np.concatenate([self._sorted_ids, ids])
        order = np.argsort(all_keys, kind="stable")
        self._sorted_keys, self._sorted_ids = all_keys[order], all_ids[order]


@dataclass(frozen=True)
class StreamIds:
    """Per packet, the id of every stream it updates (all int64 arrays of the same length).

    ``*_pair`` is the id of the two-direction pair; ``*_side`` is 0 when the packet's stream
    is the one that opened the pair, 1 otherwise.
    """

    mi: IntArray
    h: IntArray
    hh: IntArray
    hh_rev: IntArray
    hh_pair: IntArray
    hh_side: IntArray
    jit: IntArray
    hphp: IntArray
    hphp_rev: IntArray
    hphp_pair: IntArray
    hphp_side: IntArray


class _PairIndex:
    """Ids of two-direction stream pairs and which direction opened each."""

    def __init__(self) -> None:
        self.keys = IntKeyIndex()
        self.opener = np.empty(0, dtype=np.int64)

    def lookup(self, stream: IntArray, reverse: IntArray) -> tuple[IntArray, IntArray]:
        low = np.minimum(stream, reverse)
        high = np.maximum(stream, reverse)
        pair = self.keys.lookup((low << 32) | high)
        known = len(self.opener)
        if len(self.keys) > known:
            # the opener of a new pair is the stream of its first packet in this chunk
            new_pairs, first_rows = np.unique(pair[pair >= known], return_index=True)
            first_rows = np.flatnonzero(pair >= known)[first_rows]
            grown = np.empty(len(self.keys), dtype=np.int64)
            grown[:known] = self.opener
            grown[new_pairs] = stream[first_rows]
            self.opener = grown
        side = (stream != self.opener[pair]).astype(np.int64)
        return pair, side


class StreamKeyer:
    """Maps packets to stream ids, remembering every key it has seen."""

    def __init__(self) -> None:
        self._addresses = KeyIndex()  # IPs and MACs share one id space, tagged apart
        self._endpoints = IntKeyIndex()
        self._mi = IntKeyIndex()
        self._h = IntKeyIndex()
        self._hh = IntKeyIndex()
        self._jit = IntKeyIndex()
        self._hphp = IntKeyIndex()
        self._hh_pairs = _PairIndex()
        self._hphp_pairs = _PairIndex()

    @property
    def sizes(self) -> dict[str, int]:
        """How many streams of each kind exist so far."""
        return {
            "mi": len(self._mi),
            "h": len(self._h),
            "hh": len(self._hh),
            "jit": len(self._jit),
            "hphp": len(self._hphp),
            "hh_pairs": len(self._hh_pairs.keys),
            "hphp_pairs": len(self._hphp_pairs.keys),
        }


    def assign(self, packets: PacketTable) -> StreamIds:
        """Stream ids for each packet of ``packets`` (in order)."""
        n = len(packets)
        no_ip = packets.kind == KIND_OTHER
        mac_sockets = no_ip | (packets.kind == KIND_ARP)
        macs = self._addresses.lookup(np.concatenate([packets.src_mac, packets.dst_mac]), "mac")
        ips = self._addresses.lookup(np.concatenate([packets.src_ip, packets.dst_ip]), "ip")
        src_mac, dst_mac = macs[:n], macs[n:]
        src = np.where(no_ip, src_mac, ips[:n])
        dst = np.where(no_ip, dst_mac, ips[n:])

        mi = self._mi.lookup((src_mac << 32) | src)
        h = self._h.lookup(src)
        jit = self._jit.lookup((src << 32) | dst)

        hh_dst = np.where(src == dst, dst | _SUFFIX_BIT, dst)
        hh_both = self._hh.lookup(
            np.concatenate([(src << 32) | hh_dst, (hh_dst << 32) | src])
        )
        hh, hh_rev = hh_both[:n], hh_both[n:]
        hh_pair, hh_side = self._hh_pairs.lookup(hh, hh_rev)

        none = np.int64(PORT_NONE + _PORT_OFFSET)
        src_port = np.where(mac_sockets, none, packets.src_port.astype(np.int64) + _PORT_OFFSET)
        dst_port = np.where(mac_sockets, none, packets.dst_port.astype(np.int64) + _PORT_OFFSET)
        ends = self._endpoints.lookup(np.concatenate([
            (np.where(mac_sockets, src_mac, src) << _PORT_BITS) | src_port,
            (np.where(mac_sockets, dst_mac, dst) << _PORT_BITS) | dst_port,
        ]))
        src_end = ends[:n]
        dst_end = np.where(ends[:n] == ends[n:], ends[n:] | _SUFFIX_BIT, ends[n:])
        sock_ids = self._hphp.lookup(
            np.concatenate([(src_end << 32) | dst_end, (dst_end << 32) | src_end])
        )
        hphp, hphp_rev = sock_ids[:n], sock_ids[n:]
        hphp_pair, hphp_side = self._hphp_pairs.lookup(hphp, hphp_rev)
        return StreamIds(mi, h, hh, hh_rev, hh_pair, hh_side, jit,
                         hphp, hphp_rev, hphp_pair, hphp_side)
