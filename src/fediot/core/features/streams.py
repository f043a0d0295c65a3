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

_SUFFIX = 1 << 30
_SUFFIX_BIT = np.int64(_SUFFIX)
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

    def lookup_one(self, key: object, tag: str = "") -> int:
        """The id of one key, registering it if unseen."""
        ids = self._ids
        return ids.setdefault((tag, key), len(ids))

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
    _CACHE_LIMIT = 1 << 16

    def __init__(self) -> None:
        self._sorted_keys = np.empty(0, dtype=np.int64)
        self._sorted_ids = np.empty(0, dtype=np.int64)
        self._pending: dict[int, int] = {}
        # keys looked up one at a time (live traffic), so a known stream costs one dict probe;
        # ids never change once given, so the cache is never stale, only bounded
        self._recent: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._sorted_keys) + len(self._pending)

    def lookup(self, keys: IntArray) -> IntArray:
        """Ids of ``keys``, registering unseen keys in order of first appearance."""
        if len(keys) <= 4:
            return np.fromiter((self.lookup_one(k) for k in keys.tolist()), dtype=np.int64,
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

    def lookup_one(self, key: int) -> int:
        """The id of one key (a Python int), registering it if unseen."""
        known = self._recent.get(key)
        if known is not None:
            return known
        new_id = self._pending.get(key)
        if new_id is None:
            keys = self._sorted_keys
            pos = int(np.searchsorted(keys, key))
            if pos < len(keys) and int(keys[pos]) == key:
                new_id = int(self._sorted_ids[pos])
            else:
                new_id = self._pending.setdefault(key, len(self))
                if len(self._pending) >= self._MERGE_AT:
                    self._merge_pending()
        if len(self._recent) >= self._CACHE_LIMIT:
            self._recent.clear()
        self._recent[key] = new_id
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
        # opener of pair i at [i]; grows by doubling (a flood opens a pair per packet)
        self._opener = np.empty(64, dtype=np.int64)
        self._opened = 0

    def _grow_to(self, size: int) -> None:
        if size > len(self._opener):
            grown = np.empty(max(size, 2 * len(self._opener)), dtype=np.int64)
            grown[: self._opened] = self._opener[: self._opened]
            self._opener = grown

    def lookup(self, stream: IntArray, reverse: IntArray) -> tuple[IntArray, IntArray]:
        low = np.minimum(stream, reverse)
        high = np.maximum(stream, reverse)
        pair = self.keys.lookup((low << 32) | high)
        known = self._opened
        if len(self.keys) > known:
            # the opener of a new pair is the stream of its first packet in this chunk
            new_pairs, first_rows = np.unique(pair[pair >= known], return_index=True)
            first_rows = np.flatnonzero(pair >= known)[first_rows]
            self._grow_to(len(self.keys))
            self._opener[new_pairs] = stream[first_rows]
            self._opened = len(self.keys)
        side = (stream != self._opener[pair]).astype(np.int64)
        return pair, side

    def lookup_one(self, stream: int, reverse: int) -> tuple[int, int]:
        """:meth:`lookup` for one packet, on Python ints."""
        pair = self.keys.lookup_one((min(stream, reverse) << 32) | max(stream, reverse))
        if pair >= self._opened:  # new pairs get the next id, so this is the one
            self._grow_to(pair + 1)
            self._opener[pair] = stream
            self._opened = pair + 1
            return pair, 0
        return pair, int(stream != self._opener[pair])


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

    def assign_one(
        self,
        src_mac: int,
        dst_mac: int,
        src_ip: str,
        dst_ip: str,
        src_port: int,
        dst_port: int,
        kind: int,
    ) -> tuple[int, int, int, int, int, int, int, int, int, int, int]:
        """:meth:`assign` for one packet, in plain Python (live traffic: no array per key).

        Returns the ids in the kernel's order: ``(mi, h, jit, hh, hh_rev, hh_pair, hh_side,
        hphp, hphp_rev, hphp_pair, hphp_side)``. Keys are registered in the same order as
        :meth:`assign` registers a one-packet table's, so both paths share one id space.
        """
        addresses = self._addresses
        src_mac_id = addresses.lookup_one(src_mac, "mac")
        dst_mac_id = addresses.lookup_one(dst_mac, "mac")
        src_ip_id = addresses.lookup_one(src_ip, "ip")
        dst_ip_id = addresses.lookup_one(dst_ip, "ip")
        no_ip = kind == KIND_OTHER
        mac_sockets = no_ip or kind == KIND_ARP
        src = src_mac_id if no_ip else src_ip_id
        dst = dst_mac_id if no_ip else dst_ip_id

        mi = self._mi.lookup_one((src_mac_id << 32) | src)
        h = self._h.lookup_one(src)
        jit = self._jit.lookup_one((src << 32) | dst)

        hh_dst = dst | _SUFFIX if src == dst else dst
        hh = self._hh.lookup_one((src << 32) | hh_dst)
        hh_rev = self._hh.lookup_one((hh_dst << 32) | src)
        hh_pair, hh_side = self._hh_pairs.lookup_one(hh, hh_rev)

        if mac_sockets:
            src_key = (src_mac_id << _PORT_BITS) | (PORT_NONE + _PORT_OFFSET)
            dst_key = (dst_mac_id << _PORT_BITS) | (PORT_NONE + _PORT_OFFSET)
        else:
            src_key = (src << _PORT_BITS) | (src_port + _PORT_OFFSET)
            dst_key = (dst << _PORT_BITS) | (dst_port + _PORT_OFFSET)
        src_end = self._endpoints.lookup_one(src_key)
        dst_end = self._endpoints.lookup_one(dst_key)
        if dst_end == src_end:
            dst_end |= _SUFFIX
        hphp = self._hphp.lookup_one((src_end << 32) | dst_end)
        hphp_rev = self._hphp.lookup_one((dst_end << 32) | src_end)
        hphp_pair, hphp_side = self._hphp_pairs.lookup_one(hphp, hphp_rev)
        return (mi, h, jit, hh, hh_rev, hh_pair, hh_side, hphp, hphp_rev, hphp_pair, hphp_side)
