"""Secure aggregation arithmetic (:mod:`fediot.core.federated.secure_aggregation`)."""

from __future__ import annotations

import numpy as np
import pytest

from fediot.core.federated.secure_aggregation import (
    Quantizer,
    SecAggDevice,
    SecAggError,
    SecAggServer,
    combine_shares,
    make_shares,
)


def _round(vectors: dict[str, np.ndarray], *, drop_before_mask: tuple[str, ...] = (),
           threshold: int = 2) -> tuple[np.ndarray, SecAggServer, dict[str, np.ndarray]]:
    """One protocol round over ``vectors`` (uint64); the devices in ``drop_before_mask``
    share keys, then vanish. Returns the sum, the server and what the server saw."""
    ids = sorted(vectors)
    devices = {c: SecAggDevice(c) for c in ids}
    server = SecAggServer(1, ids, threshold)
    setup = {c: devices[c].setup(t) for c, t in server.setup_tasks().items()}
    shared = {c: devices[c].share_keys(t) for c, t in server.share_keys_tasks(setup).items()}
    masked = {c: devices[c].mask(t, vectors[c])
              for c, t in server.mask_tasks(shared, dict.fromkeys(ids)).items()
              if c not in drop_before_mask}
    length = len(next(iter(vectors.values())))
    unmask = {c: devices[c].unmask(t) for c, t in server.unmask_tasks(masked, length).items()}
    seen = {c: r.masked for c, r in masked.items() if r.masked is not None}
    return server.unmask(unmask), server, seen


def test_shamir_any_threshold_subset_rebuilds() -> None:
    secret = bytes(range(32))
    shares = make_shares(secret, 3, 5)
    assert combine_shares(shares[:3], 32) == secret
    assert combine_shares([shares[4], shares[1], shares[2]], 32) == secret
    with pytest.raises(SecAggError):
        combine_shares(shares[:2], 32)


def test_masked_sum_equals_sum_within_quantisation_error() -> None:
    rng = np.random.default_rng(0)
    q = Quantizer(clipping_range=4.0, levels=1 << 24)
    floats = {f"d{i}": rng.normal(size=500) for i in range(4)}
    weights = {"d0": 10, "d1": 300, "d2": 7, "d3": 1000}
    total, _, _ = _round({c: q.encode(v, weights[c]) for c, v in floats.items()})
    mean = q.decode(total, sum(weights.values()))
    expected = sum(floats[c] * weights[c] for c in floats) / sum(weights.values())
    assert np.max(np.abs(mean - expected)) <= q.step / 2 + 1e-12


def test_server_alone_cannot_read_one_vector() -> None:
    q = Quantizer()
    vectors = {c: q.encode(np.full(256, 0.5)) for c in ("a", "b", "c")}
    _, _, seen = _round(vectors)
    for cid, masked in seen.items():
        assert not np.array_equal(masked, vectors[cid])
        # the masked words look uniform: no word equals the clear one, high bits vary
        assert np.count_nonzero(masked == vectors[cid]) == 0
        assert len(np.unique(masked >> np.uint64(60))) > 8


def test_device_refuses_to_reveal_both_secrets_of_one_device() -> None:
    ids = ["a", "b", "c"]
    devices = {c: SecAggDevice(c) for c in ids}
    server = SecAggServer(1, ids, 2)
    setup = {c: devices[c].setup(t) for c, t in server.setup_tasks().items()}
    shared = {c: devices[c].share_keys(t) for c, t in server.share_keys_tasks(setup).items()}
    for c, t in server.mask_tasks(shared, dict.fromkeys(ids)).items():
        devices[c].mask(t, np.zeros(4, np.uint64))
    from fediot.core.federated.secure_aggregation import SecAggTask
    with pytest.raises(SecAggError, match="both"):
        devices["a"].unmask(SecAggTask("unmask", 1, {"survivors": ["a", "b", "c"],
                                                      "dropped": ["b"]}))


def test_dropout_after_sharing_keys_is_recovered() -> None:
    rng = np.random.default_rng(1)
    q = Quantizer()
    floats = {f"d{i}": rng.uniform(-1, 1, size=300) for i in range(5)}
    total, server, _ = _round({c: q.encode(v, 3) for c, v in floats.items()},
                              drop_before_mask=("d2",), threshold=3)
    assert server.dropped == ["d2"]
    mean = q.decode(total, 3 * 4)
    expected = sum(v for c, v in floats.items() if c != "d2") / 4
    assert np.max(np.abs(mean - expected)) <= q.step / 2 + 1e-12


def test_too_few_survivors_refused() -> None:
    q = Quantizer()
    with pytest.raises(SecAggError, match="threshold"):
        _round({c: q.encode(np.zeros(3)) for c in ("a", "b", "c")},
               drop_before_mask=("a", "b"), threshold=2)


def test_state_round_trips() -> None:
    device = SecAggDevice("a")
    server = SecAggServer(4, ["a", "b"], 2)
    device.setup(server.setup_tasks()["a"])
    assert SecAggDevice.from_dict(device.to_dict()) == device


def test_quantizer_overflow_check() -> None:
    with pytest.raises(SecAggError):
        Quantizer(levels=1 << 30).check_total(1 << 40)
    Quantizer(levels=1 << 24).check_total(1 << 30)
