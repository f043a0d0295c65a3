"""Secure aggregation arithmetic (:mod:`fediot.core.federated.secure_aggregation`)."""

from __future__ import annotations

import numpy as np
import pytest

from fediot.core.config import Config
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


# --- a whole run -----------------------------------------------------------------------------

def _config(**overrides: object) -> Config:

    base = {"train_args.client_num_in_total": 3, "train_args.client_num_per_round": 3,
            "train_args.comm_round": 3, "detection_args.window": 5,
            "train_args.learning_rate": 0.003}
    return Config().with_overrides({**base, **overrides})


def test_a_secure_run_equals_the_clear_run_within_quantisation_error() -> None:
    from federated_data import synthetic_clients
    from fediot.core.federated.server import FedDetectServer
    from fediot.engines.inprocess import SequentialPool

    clear = FedDetectServer(_config()).run(SequentialPool(synthetic_clients()))
    secure = FedDetectServer(_config(**{"comm_args.secure_aggregation": True})).run(
        SequentialPool(synthetic_clients()))
    step = Quantizer().step
    for a, b in zip(clear.model.weights, secure.model.weights, strict=True):
        # three rounds of training from weights differing by ≤ step/2: the models stay close
        np.testing.assert_allclose(a, b, atol=200 * step)
    assert secure.history[-1].answered == clear.history[-1].answered
    assert secure.history[0].system[secure.history[0].answered[0]]["wall_seconds"] > 0
    assert (secure.evaluation.pooled["window_vote"]["f1"]
            == pytest.approx(clear.evaluation.pooled["window_vote"]["f1"], abs=0.02))


def test_one_round_secure_weights_match_fedavg_to_the_quantisation_step() -> None:
    from federated_data import synthetic_clients
    from fediot.core.federated.server import FedDetectServer
    from fediot.engines.inprocess import SequentialPool

    runs = []
    for secure in (False, True):
        server = FedDetectServer(_config(**{"comm_args.secure_aggregation": secure}))
        pool = SequentialPool(synthetic_clients())
        scaler = server.fit_scaler(pool)
        from fediot.core.federated.messages import ModelState
        runs.append(server.train_round(pool, ModelState(server.initial_weights(), scaler), 1)[0])
    step = Quantizer().step
    for a, b in zip(runs[0].weights, runs[1].weights, strict=True):
        np.testing.assert_allclose(a, b, atol=step / 2 + 1e-6)


class _DroppingPool:
    """An in-process pool whose device ``victim`` stops answering after sharing keys."""

    def __init__(self, pool: object, victim: str) -> None:
        self.pool, self.victim = pool, victim

    @property
    def client_ids(self) -> list[str]:
        return self.pool.client_ids  # type: ignore[attr-defined,no-any-return]

    def exchange(self, method: str, tasks: dict) -> dict:  # type: ignore[type-arg]
        if method == "fit" or (method == "secagg"
                               and next(iter(tasks.values())).stage in ("mask", "unmask")):
            tasks = {c: t for c, t in tasks.items() if c != self.victim}
        return self.pool.exchange(method, tasks)  # type: ignore[attr-defined,no-any-return]


def test_a_device_dropping_mid_round_is_recovered() -> None:
    from federated_data import synthetic_clients
    from fediot.core.federated.messages import ModelState
    from fediot.core.federated.server import FedDetectServer
    from fediot.engines.inprocess import SequentialPool

    clients = synthetic_clients()
    victim = clients[1].client_id
    secure = FedDetectServer(_config(**{"comm_args.secure_aggregation": True}))
    pool = _DroppingPool(SequentialPool(clients), victim)
    scaler = secure.fit_scaler(pool)  # type: ignore[arg-type]
    start = ModelState(secure.initial_weights(), scaler)
    model, record = secure.train_round(pool, start, 1)  # type: ignore[arg-type]
    assert victim not in record.answered and len(record.answered) == 2
    # the clear FedAvg of the two survivors
    clear = FedDetectServer(_config())
    survivors = _DroppingPool(SequentialPool(synthetic_clients()), victim)
    clear.fit_scaler(survivors)  # type: ignore[arg-type]
    expected, _ = clear.train_round(survivors, start, 1)  # type: ignore[arg-type]
    for a, b in zip(expected.weights, model.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=Quantizer().step / 2 + 1e-6)
