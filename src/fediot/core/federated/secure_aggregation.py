"""Secure aggregation (SecAgg, Bonawitz et al. 2017, as in Flower's SecAgg+) in the pure core.

The server learns the *sum* of the sampled devices' vectors (weights × rows in a training
round; the scaler and error statistics in the scaler and threshold steps,
:mod:`~fediot.core.federated.secure_statistics`), never one device's vector, and the sum
survives devices that drop out mid-round.

Protocol, per round (the server drives it with four exchanges, :class:`SecAggServer`):

1. ``setup``: every sampled device makes two X25519 key pairs — ``pk1`` for the pairwise
   masks, ``pk2`` for the encrypted share transport — and sends the public halves.
2. ``share_keys``: every device gets all public keys, draws a self-mask seed ``b``, splits
   ``b`` and its ``sk1`` into Shamir shares (threshold *t* over the prime field
   GF(2^521 − 1)) and sends each other device its two shares, AES-GCM encrypted under a key
   derived (HKDF-SHA256) from the ``sk2``/``pk2`` agreement. The server only routes them.
3. ``mask``: every device computes its vector (it trains), quantises it to integers modulo
   2^64 (:class:`Quantizer`), adds PRG(``b``) and, for every other device *j* that shared
   keys, ± PRG(s_ij) where s_ij comes from the ``sk1``/``pk1`` agreement (+ for the smaller
   client id, − for the larger, so the pairwise masks cancel in the sum). PRG: AES-256-CTR.
4. ``unmask``: every device still answering sends, for every survivor, its share of the
   survivor's ``b``, and for every device that dropped after sharing keys, its share of the
   dropped device's ``sk1`` (never both for one device: the server must not learn both). The
   server rebuilds the seeds from ≥ *t* shares, removes the self-masks of the survivors and
   the pairwise masks the survivors still hold with the dropped devices.

Every pair of devices is connected (SecAgg with a complete graph, i.e. SecAgg+ with
k = n − 1; the rounds here have few devices). The masks are removed exactly (integer
arithmetic modulo 2^64); only the quantisation loses precision: a value is clipped to
[−C, C] (``clipping_range``) and rounded to the nearest of ``quantization_range`` steps over
that interval, an error of at most C / ``quantization_range`` per value and device before the
weighting. A weighted sum Σ n_i·q(w_i) must stay below 2^63 in magnitude:
``quantization_range`` / 2 × Σ n_i < 2^63 (checked, :meth:`Quantizer.check_total`).

What the server still sees in clear: the row counts, losses and system figures of each
reply (not the weights). A device talks to the others only through the server; the server is
assumed honest-but-curious (no malicious key substitution: no PKI, as in Flower's SecAgg+).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fediot.core.errors import FediotError

PRIME = 2**521 - 1
"""The Shamir field: a Mersenne prime above every 32-byte secret."""
MASK_DTYPE = np.uint64
"""Masked vectors live in Z / 2^64 (NumPy's unsigned wrap-around is the modular sum)."""
STAGES = ("setup", "share_keys", "mask", "unmask")
SECURE_STEPS = ("fit", "scaler_stats", "threshold_stats")
"""The client methods whose result can be summed securely (the ``mask`` stage's ``step``)."""
SUM_ID = "secure-aggregate"
"""What a secure sum is called where a device's id would stand (the one training report the
strategy sees, the threshold statistics a run records)."""
U64 = npt.NDArray[np.uint64]


class SecAggError(FediotError):
    """The protocol cannot go on (too few devices, a malformed share, a failed decryption)."""


# --- primitives -----------------------------------------------------------------------------

def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _private_raw(private: X25519PrivateKey) -> bytes:
    return private.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())


def agree(private: bytes, public: bytes, purpose: bytes) -> bytes:
    """A 32-byte key from the X25519 agreement of ``private`` and ``public`` (HKDF-SHA256,
    ``purpose`` as info: the mask seeds and the transport keys never coincide)."""
    shared = X25519PrivateKey.from_private_bytes(private).exchange(
        X25519PublicKey.from_public_bytes(public))
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"fediot-secagg/" + purpose).derive(shared)


def prg(seed: bytes, length: int) -> U64:
    """``length`` pseudo-random 64-bit words from a 32-byte seed (AES-256-CTR keystream)."""
    key = hashlib.sha256(b"fediot-secagg/prg" + seed).digest()
    encryptor = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
    return np.frombuffer(encryptor.update(b"\0" * (8 * length)), dtype=MASK_DTYPE).copy()


def make_shares(secret: bytes, threshold: int, count: int) -> list[tuple[int, int]]:
    """Shamir shares ``(x, y)``, x = 1…count, of ``secret`` (≤ 64 bytes): any ``threshold``
    of them rebuild it, fewer tell nothing."""
    if not 1 <= threshold <= count:
        raise SecAggError(f"threshold {threshold} outside 1…{count}")
    coefficients = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME)
                                                      for _ in range(threshold - 1)]
    shares = []
    for x in range(1, count + 1):
        y = 0
        for c in reversed(coefficients):
            y = (y * x + c) % PRIME
        shares.append((x, y))
    return shares


def combine_shares(shares: Sequence[tuple[int, int]], length: int) -> bytes:
    """The secret of ``length`` bytes from shares (Lagrange interpolation at 0)."""
    xs = [x for x, _ in shares]
    if len(set(xs)) != len(xs):
        raise SecAggError("duplicate share indices")
    secret = 0
    for i, (xi, yi) in enumerate(shares):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 1 << (8 * length):
        raise SecAggError("the shares do not rebuild a secret (too few or altered)")
    return secret.to_bytes(length, "big")


def _share_bytes(share: tuple[int, int]) -> bytes:
    return share[0].to_bytes(4, "big") + share[1].to_bytes(66, "big")


def _share_from(data: bytes) -> tuple[int, int]:
    if len(data) != 70:
        raise SecAggError(f"a share is 70 bytes, got {len(data)}")
    return int.from_bytes(data[:4], "big"), int.from_bytes(data[4:], "big")


@dataclass(frozen=True)
class Quantizer:
    """Floats ↔ integers modulo 2^64: clip to [−C, C], round to ``levels`` steps over it.

    ``encode(x, weight)`` is ``round(clip(x)·levels / 2C)·weight`` (two's complement in
    uint64); ``decode(total, total_weight)`` the weighted mean back in floats.
    """

    clipping_range: float = 8.0
    levels: int = 1 << 24

    @property
    def step(self) -> float:
        return 2 * self.clipping_range / self.levels

    def encode(self, values: npt.NDArray[Any], weight: int = 1) -> U64:
        clipped = np.clip(np.asarray(values, np.float64), -self.clipping_range,
                          self.clipping_range)
        q = np.rint(clipped / self.step).astype(np.int64) * np.int64(weight)
        return q.view(MASK_DTYPE)

    def decode(self, total: U64, total_weight: int) -> npt.NDArray[np.float64]:
        signed = np.asarray(total, MASK_DTYPE).view(np.int64).astype(np.float64)
        return signed * self.step / max(total_weight, 1)

    def check_total(self, total_weight: int) -> None:
        """Refuse a weighted sum that could overflow the signed 64-bit range."""
        if (self.levels // 2 + 1) * total_weight >= 1 << 63:
            raise SecAggError(f"quantization_range {self.levels} × {total_weight} rows "
                              f"would overflow 64 bits: lower comm_args."
                              f"secagg_quantization_range")


# --- messages -------------------------------------------------------------------------------

@dataclass(frozen=True)
class SecAggTask:
    """One stage's task for one device.

    ``payload`` by stage: ``setup``: ``{"clients": [ids], "threshold": t}``;
    ``share_keys``: ``{"keys": {id: (pk1, pk2)}}``; ``mask``: ``{"shares": {src: ciphertext},
    "step": one of SECURE_STEPS}`` (with ``inner``: the task of that step, a ``FitTask``, a
    ``ScoreTask`` or ``None`` for the scaler step; the fit step adds the quantiser's
    ``clipping_range`` and ``levels``);
    ``unmask``: ``{"survivors": [ids], "dropped": [ids]}``.
    """

    stage: str
    server_round: int
    payload: dict[str, Any]
    inner: Any = None


@dataclass(frozen=True)
class SecAggReply:
    """One device's answer to a stage: ``payload`` (``setup``: ``{"pk1", "pk2"}``;
    ``share_keys``: ``{"shares": {dst: ciphertext}}``; ``unmask``: ``{"seed": {id: share},
    "sk1": {id: share}}``), ``masked`` (``mask``: the masked vector) and ``report`` (``mask``:
    the clear part of the step's result: a ``FitReport`` without its weights, the scaler
    step's ``DataReport``, nothing for the threshold step)."""

    stage: str
    payload: dict[str, Any]
    masked: U64 | None = None
    report: Any = None


# --- device side ----------------------------------------------------------------------------

@dataclass
class SecAggDevice:
    """One device's protocol state through one round (serialisable: :meth:`to_dict`, for
    engines that start a fresh process per message)."""

    client_id: str
    server_round: int = 0
    stage: str = ""
    clients: list[str] = field(default_factory=list)
    threshold: int = 0
    sk1: bytes = b""
    sk2: bytes = b""
    keys: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    seed: bytes = b""
    seed_shares: dict[str, bytes] = field(default_factory=dict)  # holder: other id → share
    sk1_shares: dict[str, bytes] = field(default_factory=dict)
    masked_with: list[str] = field(default_factory=list)

    def _expect(self, task: SecAggTask, previous: str) -> None:
        if task.stage != "setup" and (task.server_round != self.server_round
                                      or self.stage != previous):
            raise SecAggError(f"{task.stage} of round {task.server_round} after "
                              f"{self.stage or 'nothing'} of round {self.server_round}")

    def setup(self, task: SecAggTask) -> SecAggReply:
        clients = [str(c) for c in task.payload["clients"]]
        threshold = int(task.payload["threshold"])
        if self.client_id not in clients or not 2 <= threshold <= len(clients):
            raise SecAggError(f"bad setup: threshold {threshold} of {len(clients)} devices")
        sk1, sk2 = X25519PrivateKey.generate(), X25519PrivateKey.generate()
        self.__init__(self.client_id, task.server_round, "setup", clients,  # type: ignore[misc]
                      threshold, _private_raw(sk1), _private_raw(sk2))
        return SecAggReply("setup", {"pk1": _raw(sk1.public_key()),
                                     "pk2": _raw(sk2.public_key())})

    def share_keys(self, task: SecAggTask) -> SecAggReply:
        self._expect(task, "setup")
        keys = {str(c): (bytes(k[0]), bytes(k[1])) for c, k in task.payload["keys"].items()}
        if self.client_id not in keys or len(keys) < self.threshold:
            raise SecAggError(f"{len(keys)} devices shared keys, fewer than the threshold "
                              f"{self.threshold}")
        if len({k for pair in keys.values() for k in pair}) != 2 * len(keys):
            raise SecAggError("some public keys are identical")
        self.keys, self.seed, self.stage = keys, os.urandom(32), "share_keys"
        order = sorted(keys)
        seed_shares = make_shares(self.seed, self.threshold, len(order))
        sk1_shares = make_shares(self.sk1, self.threshold, len(order))
        out: dict[str, bytes] = {}
        for cid, s_seed, s_sk1 in zip(order, seed_shares, sk1_shares, strict=True):
            plain = _share_bytes(s_seed) + _share_bytes(s_sk1)
            if cid == self.client_id:
                self.seed_shares[cid], self.sk1_shares[cid] = plain[:70], plain[70:]
                continue
            key = agree(self.sk2, keys[cid][1], b"transport")
            nonce = os.urandom(12)
            aad = f"{self.server_round}|{self.client_id}|{cid}".encode()
            out[cid] = nonce + AESGCM(key).encrypt(nonce, plain, aad)
        return SecAggReply("share_keys", {"shares": out})

    def mask(self, task: SecAggTask, vector: U64) -> SecAggReply:
        """Store the shares routed to this device and mask ``vector`` (already quantised)."""
        self._expect(task, "share_keys")
        received = {str(k): bytes(v) for k, v in task.payload["shares"].items()}
        if len(received) + 1 < self.threshold:
            raise SecAggError(f"shares from {len(received)} devices, too few for the "
                              f"threshold {self.threshold}")
        for src, blob in received.items():
            if src not in self.keys or src == self.client_id:
                raise SecAggError(f"a share from {src[:60]!r}, which did not share keys")
            key = agree(self.sk2, self.keys[src][1], b"transport")
            aad = f"{self.server_round}|{src}|{self.client_id}".encode()
            try:
                plain = AESGCM(key).decrypt(blob[:12], blob[12:], aad)
            except Exception as error:
                raise SecAggError(f"the share from {src} does not decrypt") from error
            self.seed_shares[src], self.sk1_shares[src] = plain[:70], plain[70:]
        masked = np.asarray(vector, MASK_DTYPE) + prg(self.seed, len(vector))
        for other in sorted(received):
            pair = prg(agree(self.sk1, self.keys[other][0], b"mask"), len(vector))
            masked = masked + pair if self.client_id < other else masked - pair
        self.masked_with, self.stage = sorted(received), "mask"
        return SecAggReply("mask", {}, masked=masked)

    def unmask(self, task: SecAggTask) -> SecAggReply:
        self._expect(task, "mask")
        survivors = [str(c) for c in task.payload["survivors"]]
        dropped = [str(c) for c in task.payload["dropped"]]
        if set(survivors) & set(dropped):
            raise SecAggError("a device is both a survivor and dropped: refused (the server "
                              "would learn its vector)")
        if len(survivors) < self.threshold:
            raise SecAggError(f"{len(survivors)} survivors, fewer than the threshold "
                              f"{self.threshold}")
        self.stage = "unmask"
        return SecAggReply("unmask", {
            "seed": {c: self.seed_shares[c] for c in survivors if c in self.seed_shares},
            "sk1": {c: self.sk1_shares[c] for c in dropped if c in self.sk1_shares}})

    def to_dict(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "server_round": self.server_round,
                "stage": self.stage, "clients": self.clients, "threshold": self.threshold,
                "sk1": self.sk1.hex(), "sk2": self.sk2.hex(), "seed": self.seed.hex(),
                "keys": {c: [a.hex(), b.hex()] for c, (a, b) in self.keys.items()},
                "seed_shares": {c: s.hex() for c, s in self.seed_shares.items()},
                "sk1_shares": {c: s.hex() for c, s in self.sk1_shares.items()},
                "masked_with": self.masked_with}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SecAggDevice:
        return cls(str(data["client_id"]), int(data["server_round"]), str(data["stage"]),
                   list(data["clients"]), int(data["threshold"]), bytes.fromhex(data["sk1"]),
                   bytes.fromhex(data["sk2"]),
                   {c: (bytes.fromhex(a), bytes.fromhex(b)) for c, (a, b) in
                    data["keys"].items()},
                   bytes.fromhex(data["seed"]),
                   {c: bytes.fromhex(s) for c, s in data["seed_shares"].items()},
                   {c: bytes.fromhex(s) for c, s in data["sk1_shares"].items()},
                   list(data["masked_with"]))


# --- server side ----------------------------------------------------------------------------

def default_threshold(sampled: int, configured: int = 0) -> int:
    """The reconstruction threshold: ``configured`` (capped at the sampled devices), or with 0
    a strict majority, at least 2."""
    t = configured if configured > 0 else sampled // 2 + 1
    return max(2, min(t, sampled))


@dataclass
class SecAggServer:
    """The server's bookkeeping through one round: routes keys and shares, sums the masked
    vectors and removes the masks. It never holds a device's private key or self-mask seed
    of a device whose masked vector it also keeps."""

    server_round: int
    clients: list[str]
    threshold: int
    keys: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)
    routed: dict[str, dict[str, bytes]] = field(default_factory=dict)
    masked: dict[str, U64] = field(default_factory=dict)

    def _enough(self, ids: Sequence[str], stage: str) -> None:
        if len(ids) < self.threshold:
            raise SecAggError(f"secure aggregation, round {self.server_round}: {len(ids)} "
                              f"devices answered {stage}, fewer than the reconstruction "
                              f"threshold {self.threshold}")

    def setup_tasks(self) -> dict[str, SecAggTask]:
        payload = {"clients": list(self.clients), "threshold": self.threshold}
        return {c: SecAggTask("setup", self.server_round, payload) for c in self.clients}

    def share_keys_tasks(self, replies: Mapping[str, SecAggReply]) -> dict[str, SecAggTask]:
        self.keys = {c: (bytes(r.payload["pk1"]), bytes(r.payload["pk2"]))
                     for c, r in replies.items()}
        self._enough(list(self.keys), "setup")
        payload = {"keys": dict(self.keys)}
        return {c: SecAggTask("share_keys", self.server_round, payload) for c in self.keys}

    def mask_tasks(self, replies: Mapping[str, SecAggReply],
                   inner: Mapping[str, Any]) -> dict[str, SecAggTask]:
        self.shared = sorted(replies)
        self._enough(self.shared, "share_keys")
        routed: dict[str, dict[str, bytes]] = {c: {} for c in self.shared}
        for src, reply in replies.items():
            for dst, blob in reply.payload["shares"].items():
                if dst in routed and dst != src:
                    routed[dst][src] = bytes(blob)
        self.routed = routed
        return {c: SecAggTask("mask", self.server_round, {"shares": routed[c]}, inner[c])
                for c in self.shared}

    def unmask_tasks(self, replies: Mapping[str, SecAggReply],
                     length: int) -> dict[str, SecAggTask]:
        self.masked = {}
        for c, r in replies.items():
            if c in self.shared and r.masked is not None and len(r.masked) == length:
                self.masked[c] = np.asarray(r.masked, MASK_DTYPE)
        self._enough(list(self.masked), "mask")
        payload = {"survivors": sorted(self.masked), "dropped": self.dropped}
        return {c: SecAggTask("unmask", self.server_round, payload) for c in self.masked}

    @property
    def dropped(self) -> list[str]:
        """Devices that shared keys but sent no (usable) masked vector."""
        return [c for c in self.shared if c not in self.masked]

    def unmask(self, replies: Mapping[str, SecAggReply]) -> U64:
        """The sum of the survivors' vectors (modulo 2^64), from the unmask replies."""
        self._enough(list(replies), "unmask")
        length = len(next(iter(self.masked.values())))
        total = np.zeros(length, MASK_DTYPE)
        for vector in self.masked.values():
            total = total + vector
        holders = sorted(replies)
        for survivor in self.masked:
            shares = [_share_from(bytes(replies[h].payload["seed"][survivor]))
                      for h in holders if survivor in replies[h].payload["seed"]]
            self._enough([str(s) for s in shares], f"unmask (seed of {survivor})")
            total = total - prg(combine_shares(shares[:self.threshold], 32), length)
        for gone in self.dropped:
            shares = [_share_from(bytes(replies[h].payload["sk1"][gone]))
                      for h in holders if gone in replies[h].payload["sk1"]]
            self._enough([str(s) for s in shares], f"unmask (key of {gone})")
            sk1 = combine_shares(shares[:self.threshold], 32)
            for survivor in self.masked:
                if gone not in self.routed.get(survivor, {}):
                    continue  # the survivor never masked with it
                pair = prg(agree(sk1, self.keys[survivor][0], b"mask"), length)
                # the survivor added +pair if its id is the smaller one
                total = total - pair if survivor < gone else total + pair
        return total
