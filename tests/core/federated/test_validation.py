"""The server's reply checks: every malformed reply is rejected, logged and counted, and a
run with one of nine devices sending it finishes close to the clean run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

from federated_data import synthetic_clients
from fediot.core.config import Config
from fediot.core.federated.adversaries import TamperingPool
from fediot.core.federated.messages import (
    DataReport,
    EvaluationReport,
    FitReport,
    LogLine,
    ScalerReport,
)
from fediot.core.federated.server import FedDetectServer, RunResult
from fediot.core.federated.validation import (
    Rejection,
    ReplyContext,
    ReplyRejectedError,
    check_error_stats,
    update_norm_outliers,
    validate_reply,
)
from fediot.core.model import ErrorStats, ScalerStats
from fediot.engines.inprocess import SequentialPool

BAD = "Ecobee_Thermostat"


def forge(obj: Any, **changes: Any) -> Any:
    """A copy of frozen dataclass ``obj`` with ``changes``, skipping its own checks (as an
    unpickled or hostile object would)."""
    copy = object.__new__(type(obj))
    for f in dataclasses.fields(obj):
        object.__setattr__(copy, f.name, changes.get(f.name, getattr(obj, f.name)))
    return copy


def _weights(change: Callable[[list[np.ndarray]], list[np.ndarray]]) -> Callable[[Any], Any]:
    return lambda r: forge(r, weights=change([w.copy() for w in r.weights]))


def _nan(ws: list[np.ndarray]) -> list[np.ndarray]:
    ws[0].flat[0] = np.nan
    return ws


def _inf(ws: list[np.ndarray]) -> list[np.ndarray]:
    ws[-1].flat[0] = np.inf
    return ws


def _huge(ws: list[np.ndarray]) -> list[np.ndarray]:
    return [w * 1000 for w in ws]


def _int_dtype(ws: list[np.ndarray]) -> list[np.ndarray]:
    return [ws[0].astype(np.int32), *ws[1:]]


FIT_MUTATIONS: dict[str, Callable[[Any], Any]] = {
    "nan": _weights(_nan),
    "inf": _weights(_inf),
    "wrong shape": _weights(lambda ws: [ws[0].T.copy(), *ws[1:]]),
    "scalar bias": _weights(lambda ws: [ws[0], np.float32(0.5) * np.ones(()), *ws[2:]]),
    "missing array": _weights(lambda ws: ws[:-1]),
    "extra array": _weights(lambda ws: [*ws, ws[-1]]),
    "integer dtype": _weights(_int_dtype),
    "huge update": _weights(_huge),
    "count -1": lambda r: forge(r, num_examples=-1),
    "count 0": lambda r: forge(r, num_examples=0),
    "count 1e12": lambda r: forge(r, num_examples=10**12),
    "count float": lambda r: forge(r, num_examples=float(r.num_examples)),
    "count bool": lambda r: forge(r, num_examples=True),
    "loss nan": lambda r: forge(r, mean_loss=float("nan")),
    "validation loss -1": lambda r: forge(r, validation_loss=-1.0),
    "validation rows above declared": lambda r: forge(r, validation_rows=10**6),
    "other client id": lambda r: forge(r, client_id="Danmini_Doorbell"),
}


SCALER_MUTATIONS: dict[str, Callable[[Any], Any]] = {
    "count -1": lambda r: forge(r, stats=forge(r.stats, n=-1)),
    "count 0": lambda r: forge(r, stats=forge(r.stats, n=0), data=forge(r.data, train=0)),
    "count 1e12": lambda r: forge(r, stats=forge(r.stats, n=10**12),
                                  data=forge(r.data, train=10**12)),
    "count float": lambda r: forge(r, stats=forge(r.stats, n=float(r.stats.n))),
    "count bool": lambda r: forge(r, stats=forge(r.stats, n=True), data=forge(r.data, train=1)),
    "data differs": lambda r: forge(r, data=forge(r.data, train=r.data.train + 1)),
    "nan sum": lambda r: forge(r, stats=forge(r.stats, sum=np.full(115, np.nan))),
    "negative variance": lambda r: forge(r, stats=forge(r.stats, sumsq=r.stats.sumsq * 0)),
}


def _hist_off(s: ErrorStats) -> ErrorStats:
    hist = s.hist.copy()
    hist[0] += 1
    return forge(s, hist=hist)


THRESHOLD_MUTATIONS: dict[str, Callable[[Any], Any]] = {
    "histogram total != n": _hist_off,
    "sum outside the bins": lambda s: forge(s, sum=s.sum * 1000, sumsq=s.sumsq * 1e6),
    "negative variance": lambda s: forge(s, sumsq=s.sum * s.sum / s.n / 2),
    "n above declared": lambda s: forge(s, n=10**6),
    "nan sum": lambda s: forge(s, sum=float("nan")),
}


def _counts(r: EvaluationReport, counts: dict[str, tuple[int, int]]) -> EvaluationReport:
    return forge(r, counts=forge(r.counts, counts=counts))


EVALUATE_MUTATIONS: dict[str, Callable[[Any], Any]] = {
    "flagged > total": lambda r: _counts(r, {k: (t + 1, t) for k, (_, t) in
                                            r.counts.counts.items()}),
    "negative count": lambda r: _counts(r, {k: (-1, t) for k, (_, t) in
                                           r.counts.counts.items()}),
    "totals disagree with errors": lambda r: _counts(r, {k: (f, t + 5) for k, (f, t) in
                                                        r.counts.counts.items()}),
    "other threshold": lambda r: forge(r, threshold=r.threshold * 2),
}


def corrupting_pool(clients: Any, method: str, mutate: Callable[[Any], Any]) -> TamperingPool:
    """An in-process pool whose device ``BAD`` sends ``mutate(result)`` for ``method``."""
    return TamperingPool(SequentialPool(clients), [BAD],
                         {method: lambda _task, result: mutate(result)})


class Recorder:
    def __init__(self) -> None:
        self.rejections: list[Rejection] = []
        self.phases: list[tuple[str, str]] = []

    def on_phase(self, phase: str, detail: str) -> None:
        self.phases.append((phase, detail))

    def on_round(self, record: object) -> None:
        pass

    def on_logs(self, lines: Sequence[LogLine]) -> None:
        pass

    def on_rejected(self, rejection: Rejection) -> None:
        self.rejections.append(rejection)


def nine_config(**overrides: object) -> Config:
    return Config().with_overrides({
        "train_args.client_num_in_total": 9, "train_args.client_num_per_round": 9,
        "train_args.comm_round": 2, "detection_args.window": 5,
        "train_args.learning_rate": 0.003, **overrides})


def f1(result: RunResult) -> float:
    return float(result.evaluation.pooled["window_vote"]["f1"])


@pytest.fixture(scope="module")
def clients() -> list[Any]:
    return synthetic_clients(n_devices=9, rows=300)


@pytest.fixture(scope="module")
def clean_f1(clients: list[Any]) -> float:
    return f1(FedDetectServer(nine_config()).run(SequentialPool(clients)))


CASES = ([("fit", name, m) for name, m in FIT_MUTATIONS.items()]
         + [("scaler_stats", name, m) for name, m in SCALER_MUTATIONS.items()]
         + [("threshold_stats", name, m) for name, m in THRESHOLD_MUTATIONS.items()]
         + [("evaluate", name, m) for name, m in EVALUATE_MUTATIONS.items()])


@pytest.mark.parametrize(("method", "name", "mutate"), CASES,
                         ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_one_bad_device_of_nine_is_rejected_and_the_run_finishes(
        clients: list[Any], clean_f1: float, method: str, name: str,
        mutate: Callable[[Any], Any]) -> None:
    observer = Recorder()
    result = FedDetectServer(nine_config(), observer).run(corrupting_pool(clients, method,
                                                                         mutate))
    mine = [r for r in observer.rejections if r.step == method]
    assert mine and all(r.device == BAD for r in mine), observer.rejections
    assert ("rejected", mine[0].describe()) in observer.phases  # logged
    assert [r.device for r in result.rejections] == [r.device for r in observer.rejections]
    if method == "fit":
        assert all(BAD not in r.answered and BAD in r.rejected for r in result.history)
    assert abs(f1(result) - clean_f1) <= 0.02, (name, f1(result), clean_f1)


def test_too_few_usable_replies_is_one_error_naming_the_rejected(clients: list[Any]) -> None:
    config = nine_config(**{"train_args.client_num_min_replies": 9})
    with pytest.raises(Exception, match=rf"8 of 9 .*rejected: {BAD}: weights\[0\] holds NaN"):
        FedDetectServer(config).run(corrupting_pool(clients, "fit", FIT_MUTATIONS["nan"]))


def test_scaler_step_with_too_few_replies_names_the_reasons(clients: list[Any]) -> None:
    config = nine_config(**{"train_args.client_num_min_replies": 9})
    with pytest.raises(Exception, match=rf"scaler step: 8 of 9 .*{BAD}: stats.n must be"):
        FedDetectServer(config).run(corrupting_pool(clients, "scaler_stats",
                                                   SCALER_MUTATIONS["count -1"]))


def _error_stats(errors: Sequence[float]) -> ErrorStats:
    return ErrorStats.from_errors(np.asarray(errors, dtype=np.float64))


def test_consistent_error_stats_pass_and_inconsistent_fail() -> None:
    stats = _error_stats(np.linspace(0.1, 3.0, 50))
    assert check_error_stats(stats, "errors") is stats
    assert check_error_stats(ErrorStats.empty(), "errors")
    for name, mutate in THRESHOLD_MUTATIONS.items():
        if name == "n above declared":
            continue
        with pytest.raises(ReplyRejectedError):
            check_error_stats(mutate(stats), "errors")


def test_counts_are_checked_against_the_declared_rows() -> None:
    declared = DataReport(train=100, opt=40)
    stats = _error_stats(np.linspace(0.1, 3.0, 41))
    with pytest.raises(ReplyRejectedError, match="0…40"):
        validate_reply("threshold_stats", None, stats, ReplyContext("d", declared))
    with pytest.raises(ReplyRejectedError, match="no data report"):
        validate_reply("threshold_stats", None, stats, ReplyContext("d", None))
    validate_reply("threshold_stats", None, stats,
                   ReplyContext("d", None, require_declared=False))


def test_update_norm_bound_is_relative_to_the_round_median() -> None:
    current = [np.zeros(3, dtype=np.float32)]

    def report(scale: float) -> FitReport:
        return forge(FitReport("x", [], 1, 0.0, None),  # type: ignore[arg-type]
                     weights=[np.full(3, scale, dtype=np.float32)])

    reports = {"a": report(1.0), "b": report(1.2), "c": report(0.9), "d": report(50.0)}
    assert set(update_norm_outliers(reports, current, 10.0)) == {"d"}
    assert update_norm_outliers(reports, current, 0.0) == {}
    assert update_norm_outliers(dict(list(reports.items())[2:]), current, 10.0) == {}


def test_scaler_reply_consistency() -> None:
    stats = ScalerStats.from_data(np.ones((30, 115), dtype=np.float32))
    report = ScalerReport(stats, DataReport(train=30, opt=10))
    validate_reply("scaler_stats", None, report, ReplyContext("d"))
    for mutate in SCALER_MUTATIONS.values():
        with pytest.raises(ReplyRejectedError):
            validate_reply("scaler_stats", None, mutate(report), ReplyContext("d"))
