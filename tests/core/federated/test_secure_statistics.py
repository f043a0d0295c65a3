"""Secure aggregation of the scaler and threshold statistics
(:mod:`fediot.core.federated.secure_statistics`, ``FedDetectServer`` under
``comm_args.secure_aggregation``)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
from test_secure_aggregation import _DroppingPool, _round

from federated_data import synthetic_clients
from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.federated.adversaries import TamperingPool
from fediot.core.federated.messages import ModelState
from fediot.core.federated.secure_aggregation import SUM_ID, SecAggError, SecAggReply
from fediot.core.federated.secure_statistics import (
    MAX_DEVICES_SUMMED,
    VALUE_BOUND,
    errors_from_sum,
    errors_vector,
    scaler_from_sum,
    scaler_vector,
    sum_error_bound,
)
from fediot.core.federated.server import FedDetectServer
from fediot.core.federated.validation import (
    ReplyRejectedError,
    check_secure_error_sum,
    check_secure_scaler_sum,
)
from fediot.core.model import ErrorStats, ScalerStats
from fediot.engines.inprocess import SequentialPool

RNG = np.random.default_rng(7)


def _device_rows() -> dict[str, np.ndarray]:
    """Raw feature rows of four devices, spanning N-BaIoT's magnitudes (up to 10^12, and
    near-constant features whose variance a careless Σx² would lose)."""
    rows = {}
    for i, n in enumerate((40, 2000, 13, 700)):
        scale = 10.0 ** RNG.uniform(-2, 12, size=115)
        x = RNG.normal(1.0, 0.3, size=(n, 115)) * scale
        x[:, 0] = 1e6 + RNG.normal(scale=1e3, size=n)  # signed-log std 1e-3 around 13.8
        x[:, 1] = -5.0 * (i + 1)
        rows[f"d{i}"] = x
    return rows


def _errors(n: int) -> np.ndarray:
    return np.exp(RNG.normal(-3, 2, size=n))


def test_masked_scaler_sums_equal_the_plain_sums() -> None:
    stats = {c: ScalerStats.from_data(x) for c, x in _device_rows().items()}
    total, _, _ = _round({c: scaler_vector(s) for c, s in stats.items()})
    summed = scaler_from_sum(total)
    plain = ScalerStats.pool(stats.values())
    assert summed.n == plain.n  # counts are exact
    bound = sum_error_bound(len(stats))
    np.testing.assert_allclose(summed.sum, plain.sum, rtol=1e-15, atol=bound)
    np.testing.assert_allclose(summed.sumsq, plain.sumsq, rtol=1e-15, atol=bound)
    # the variance moves by at most (ΔΣx² + 2|mean|·ΔΣx)/n (plus float64's own rounding)
    slack = bound * (1 + 2 * np.max(np.abs(plain.mean))) / plain.n + 1e-12
    np.testing.assert_allclose(summed.std**2, plain.std**2, rtol=1e-12, atol=slack)
    assert 5e-4 < summed.std[0] < 2e-3  # a small spread around a large mean survives


def test_masked_error_statistics_equal_the_plain_sums() -> None:
    stats = {f"d{i}": ErrorStats.from_errors(_errors(n)) for i, n in enumerate((30, 999, 5))}
    total, _, _ = _round({c: errors_vector(s) for c, s in stats.items()})
    summed = errors_from_sum(total)
    plain = ErrorStats.pool(stats.values())
    assert summed.n == plain.n
    np.testing.assert_array_equal(summed.hist, plain.hist)  # the histogram is exact
    bound = sum_error_bound(len(stats))
    assert summed.sum == pytest.approx(plain.sum, rel=1e-15, abs=bound)
    assert summed.sumsq == pytest.approx(plain.sumsq, rel=1e-15, abs=bound)


def test_a_device_dropped_mid_step_is_recovered_from_the_statistics_sum() -> None:
    stats = {c: ScalerStats.from_data(x) for c, x in _device_rows().items()}
    total, server, _ = _round({c: scaler_vector(s) for c, s in stats.items()},
                              drop_before_mask=("d1",), threshold=3)
    assert server.dropped == ["d1"]
    summed = scaler_from_sum(total)
    plain = ScalerStats.pool(s for c, s in stats.items() if c != "d1")
    assert summed.n == plain.n
    np.testing.assert_allclose(summed.sumsq, plain.sumsq, rtol=1e-15,
                               atol=sum_error_bound(3))


def test_values_beyond_the_public_bound_are_refused() -> None:
    huge = ErrorStats(1, 1.0, VALUE_BOUND * 2, np.eye(800, dtype=np.int64)[400])
    with pytest.raises(SecAggError, match="beyond"):
        errors_vector(huge)
    # the column sums of the limbs cannot overflow within the devices allowed
    assert MAX_DEVICES_SUMMED * 2.0**40 < 2.0**63


def test_a_sum_whose_histogram_does_not_count_its_rows_is_refused() -> None:
    honest = errors_vector(ErrorStats.from_errors(_errors(50)))
    lying = errors_vector(ErrorStats.from_errors(_errors(60)))
    lying[0] += np.uint64(7)  # claims 7 more rows than its histogram holds
    total, _, _ = _round({"a": honest, "b": lying})
    with pytest.raises(SecAggError, match="counts 110 errors but n is 117"):
        errors_from_sum(total)


def test_the_checks_left_on_a_sum() -> None:
    plain = ScalerStats.from_data(RNG.normal(size=(30, 115)))
    assert check_secure_scaler_sum(plain, 30) is plain
    with pytest.raises(ReplyRejectedError, match="counts 30 rows, the devices declared 31"):
        check_secure_scaler_sum(plain, 31)
    negative = ScalerStats(30, plain.sum + 100.0, plain.sumsq)
    with pytest.raises(ReplyRejectedError, match="negative variance"):
        check_secure_scaler_sum(negative, 30)
    errors = ErrorStats.from_errors(_errors(40))
    assert check_secure_error_sum(errors, 40) is errors
    with pytest.raises(ReplyRejectedError, match="must be in 0…39"):
        check_secure_error_sum(errors, 39)
    low = dataclasses.replace(errors, sum=errors.sum * 1e6)
    with pytest.raises(ReplyRejectedError, match="its histogram allows"):
        check_secure_error_sum(low, 40)


# --- through the server ----------------------------------------------------------------------

def _config(secure: bool, **overrides: object) -> Config:
    base = {"train_args.client_num_in_total": 3, "train_args.client_num_per_round": 3,
            "train_args.comm_round": 2, "detection_args.window": 5,
            "detection_args.threshold_mode": "global",
            "comm_args.secure_aggregation": secure}
    return Config().with_overrides({**base, **overrides})


def test_secure_scaler_and_thresholds_equal_the_clear_ones() -> None:
    clear, secure = FedDetectServer(_config(False)), FedDetectServer(_config(True))
    clear_pool, secure_pool = SequentialPool(synthetic_clients()), SequentialPool(
        synthetic_clients())
    scaler = secure.fit_scaler(secure_pool)
    expected = clear.fit_scaler(clear_pool)
    assert scaler.n == expected.n
    np.testing.assert_allclose(scaler.sumsq, expected.sumsq, rtol=1e-15,
                               atol=sum_error_bound(3))
    assert secure.device_data == clear.device_data  # the counts still arrive in clear
    model = ModelState(secure.initial_weights(), scaler)
    for mode in ("global", "quantile"):
        d = {"detection_args.threshold_mode": mode}
        clear.config, secure.config = _config(False, **d), _config(True, **d)
        thresholds, stats = secure.calibrate(secure_pool, model)
        reference, per_device = clear.calibrate(clear_pool, model)
        assert list(stats) == [SUM_ID]  # the server holds the sum only
        assert stats[SUM_ID].n == ErrorStats.pool(per_device.values()).n
        assert dict(thresholds.per_device) == pytest.approx(dict(reference.per_device),
                                                            rel=1e-9)
        assert thresholds.global_threshold == pytest.approx(reference.global_threshold,
                                                            rel=1e-9)


def test_per_device_thresholds_stay_in_clear() -> None:
    server = FedDetectServer(_config(True, **{"detection_args.threshold_mode": "per_device"}))
    pool = SequentialPool(synthetic_clients())
    model = ModelState(server.initial_weights(), server.fit_scaler(pool))
    thresholds, stats = server.calibrate(pool, model)
    assert sorted(stats) == sorted(pool.client_ids)  # one device's own statistics each
    assert len(set(thresholds.per_device.values())) == 3


def test_a_secure_run_with_a_global_threshold_matches_the_clear_run() -> None:
    clear = FedDetectServer(_config(False)).run(SequentialPool(synthetic_clients()))
    server = FedDetectServer(_config(True))
    pool = SequentialPool(synthetic_clients())
    secure = server.run(pool)
    np.testing.assert_allclose(secure.model.scaler.sum, clear.model.scaler.sum, rtol=1e-15,
                               atol=sum_error_bound(3))
    assert list(secure.threshold_stats) == [SUM_ID]
    assert secure.threshold_stats[SUM_ID].n == ErrorStats.pool(
        clear.threshold_stats.values()).n
    # the same model calibrated in clear gives the secure run's threshold to rounding
    reference, _ = FedDetectServer(_config(False)).calibrate(pool, secure.model)
    assert secure.thresholds.global_threshold == pytest.approx(reference.global_threshold,
                                                               rel=1e-9)
    # and the run's weights differ only by quantisation: so do the thresholds, a little
    assert secure.thresholds.global_threshold == pytest.approx(
        clear.thresholds.global_threshold, rel=0.01)
    assert sorted(secure.thresholds.per_device) == sorted(pool.client_ids)
    assert secure.evaluation.pooled["window_vote"]["f1"] == pytest.approx(
        clear.evaluation.pooled["window_vote"]["f1"], abs=0.02)


class _Observer:
    def __init__(self) -> None:
        self.phases: list[tuple[str, str]] = []

    def on_phase(self, phase: str, detail: str) -> None:
        self.phases.append((phase, detail))

    def on_round(self, record: Any) -> None:
        pass

    def on_logs(self, lines: Any) -> None:
        pass


def test_a_device_dropping_mid_statistics_step_is_recovered() -> None:
    clients = synthetic_clients()
    victim = clients[1].client_id
    observer = _Observer()
    server = FedDetectServer(_config(True), observer)
    pool = _DroppingPool(SequentialPool(clients), victim)
    scaler = server.fit_scaler(pool)  # type: ignore[arg-type]
    survivors = [c for c in clients if c.client_id != victim]
    expected = ScalerStats.pool(ScalerStats.from_data(c.train) for c in survivors)
    assert scaler.n == expected.n and victim not in server.device_data
    np.testing.assert_allclose(scaler.sum, expected.sum, rtol=1e-15, atol=sum_error_bound(2))
    assert ("secagg", f"scaler_stats: recovered the masks of {victim}, which dropped") in (
        observer.phases)
    model = ModelState(server.initial_weights(), scaler)
    thresholds, _ = server.calibrate(pool, model)  # type: ignore[arg-type]
    assert sorted(thresholds.per_device) == sorted(c.client_id for c in survivors)
    reference, _ = FedDetectServer(_config(False)).calibrate(SequentialPool(survivors), model)
    assert thresholds.global_threshold == pytest.approx(reference.global_threshold, rel=1e-9)


def _plus_rows(rows: int) -> Any:
    """A secagg change: the mask stage's vector with ``rows`` more rows in its first word
    (the masks are additive, so this is what a device lying about its count sends)."""

    def change(task: Any, reply: SecAggReply) -> SecAggReply:
        if reply.stage != "mask" or task.payload.get("step") != "scaler_stats":
            return reply
        masked = reply.masked.copy()  # type: ignore[union-attr]
        masked[0] += np.uint64(rows)
        return dataclasses.replace(reply, masked=masked)

    return change


def test_a_sum_failing_the_checks_stops_the_step_naming_the_devices() -> None:
    clients = synthetic_clients()
    pool = TamperingPool(SequentialPool(clients), [clients[0].client_id],
                         {"secagg": _plus_rows(5)})
    server = FedDetectServer(_config(True))
    with pytest.raises(FediotError, match="the secure sum of .* fails the server's checks "
                                          r"\(the secure sum counts \d+ rows, the devices "
                                          r"declared \d+\)"):
        server.fit_scaler(pool)


class _LostInScalerStep:
    """A pool whose device ``victim`` drops in the secure scaler step only (after sharing
    keys), then answers again."""

    def __init__(self, pool: SequentialPool, victim: str) -> None:
        self.pool, self.victim = pool, victim

    @property
    def client_ids(self) -> list[str]:
        return self.pool.client_ids

    def exchange(self, method: str, tasks: dict[str, Any]) -> dict[str, Any]:
        if method == "secagg" and any(getattr(t, "stage", "") in ("mask", "unmask")
                                      and t.payload.get("step", "scaler_stats")
                                      == "scaler_stats" for t in tasks.values()):
            tasks = {c: t for c, t in tasks.items() if c != self.victim}
        return self.pool.exchange(method, tasks)


def test_a_device_without_a_data_report_is_left_out_of_the_secure_threshold_sum() -> None:
    clients = synthetic_clients()
    victim = clients[2].client_id
    server = FedDetectServer(_config(True))
    pool = _LostInScalerStep(SequentialPool(clients), victim)
    scaler = server.fit_scaler(pool)  # type: ignore[arg-type]
    assert victim not in server.device_data
    model = ModelState(server.initial_weights(), scaler)
    thresholds, stats = server.calibrate(pool, model)  # type: ignore[arg-type]
    # its counts could not be checked: rejected before the sum, as its clear reply would be
    assert [(r.device, r.step) for r in server.rejections] == [(victim, "threshold_stats")]
    assert "no data report" in server.rejections[0].reason
    assert sorted(thresholds.per_device) == sorted(c.client_id for c in clients[:2])
    assert stats[SUM_ID].n == sum(len(c.opt) for c in clients[:2])
