"""The server's one door for replies: every device reply is checked here before the server
uses it, whatever engine carried it and whatever step it answers.

:func:`validate_reply` checks one reply against the task the server sent and what the device
declared earlier (its :class:`~fediot.core.federated.messages.DataReport` from the scaler
step); :func:`update_norm_outliers` checks a round's fit replies against each other (an update
far larger than the round's median). A reply that fails is *rejected*: the server logs it
(device, step, reason), counts it per device and goes on without it, as for a lost device.

Nothing here trusts the reply's own types: an engine may deliver objects that were unpickled
(no ``__post_init__`` ran) or decoded from a network message, so every number is checked
again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fediot.core.catalog import N_FEATURES
from fediot.core.errors import FediotError
from fediot.core.federated.blockwise import squared_distances
from fediot.core.federated.messages import (
    DataReport,
    EvaluateTask,
    EvaluationReport,
    FitReport,
    FitTask,
    Refusal,
    ScalerReport,
    SystemStats,
    Weights,
)
from fediot.core.federated.secure_aggregation import SecAggReply, SecAggTask
from fediot.core.limits import MAX_ROWS, MAX_WINDOW
from fediot.core.metrics import ClassCounts
from fediot.core.model import ErrorStats, ScalerStats
from fediot.core.model.row_weights import RowWeights
from fediot.core.model.threshold import N_ERROR_BINS, error_bin_edges

RELATIVE_TOLERANCE = 1e-6
"""Rounding allowed in the consistency checks of summed statistics (float64 sums)."""


class ReplyRejectedError(FediotError):
    """A device's reply failed a check; the message is the reason (one line)."""


@dataclass(frozen=True)
class Rejection:
    """A reply the server did not use.

    Parameters
    ----------
    device
        The client id the reply was bound to (by the engine, never by the reply's content).
    step
        The client method: ``scaler_stats``, ``fit``, ``threshold_stats`` or ``evaluate``.
    server_round
        The round of the step, or ``None`` outside rounds.
    reason
        Why, in one line.
    """

    device: str
    step: str
    server_round: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "step": self.step, "round": self.server_round,
                "reason": self.reason}

    def describe(self) -> str:
        where = f"{self.step}, round {self.server_round}" if self.server_round else self.step
        return f"{self.device} ({where}): {self.reason}"


@dataclass(frozen=True)
class ReplyContext:
    """What the server knows when a reply arrives.

    Parameters
    ----------
    device
        The client id the engine bound the reply to.
    declared
        The device's :class:`DataReport` from the scaler step (``None`` before it, or when
        that reply was rejected).
    require_declared
        Whether counts must be checked against ``declared`` (the server knows the scaler
        step's reports): a device without one is then rejected. When False (a server used
        without its scaler step), counts are bounded by the largest possible only.
    """

    device: str
    declared: DataReport | None = None
    require_declared: bool = True

    def limits(self) -> tuple[int, int]:
        """The most training and threshold rows the device may report."""
        if self.declared is not None:
            return self.declared.train, self.declared.opt
        if self.require_declared:
            raise _fail("no data report from the scaler step to check its counts against")
        return MAX_ROWS, MAX_ROWS


def _fail(reason: str) -> ReplyRejectedError:
    return ReplyRejectedError(reason)


def _count(value: Any, what: str, low: int = 0, high: int = MAX_ROWS) -> int:
    """``value`` as an integer in ``low…high`` (a bool or a float is refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _fail(f"{what} must be an integer, got {type(value).__name__} {value!r:.40}")
    if not low <= int(value) <= high:
        raise _fail(f"{what} must be in {low:,}…{high:,}, got {int(value):,}")
    return int(value)


def _number(value: Any, what: str, low: float = 0.0) -> float:
    """``value`` as a finite float ≥ ``low`` (a bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise _fail(f"{what} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or number < low:
        raise _fail(f"{what} must be finite and ≥ {low:g}, got {number!r}")
    return number


def all_finite(array: np.ndarray[Any, Any]) -> bool:
    """Whether every element of the float ``array`` is finite.

    A finite sum implies it (NaN and ±inf carry through a sum; inf − inf is NaN), and one sum
    is cheaper than an element-wise test: the test runs only when the sum is not finite, which
    finite elements can also reach by overflowing. Call under ``np.errstate(over="ignore",
    invalid="ignore")``: such a sum would warn. Subclasses (a masked array sums its unmasked
    elements only) always get the element-wise test.
    """
    if type(array) is np.ndarray and math.isfinite(array.sum()):
        return True
    return bool(np.isfinite(array).all())


def check_weights(weights: Any, expected: Sequence[np.ndarray[Any, Any]], what: str) -> Weights:
    """``weights`` as arrays of the shapes of ``expected``: as many, float, finite.

    A :class:`~fediot.core.model.row_weights.RowWeights` (stacked training's) is checked as
    its matrix row, with one finiteness test, and comes back as the checker's own views of
    that row in ``expected``'s shapes: its own arrays are not used, as nothing says they are
    that row.
    """
    if type(weights) is RowWeights:
        return _check_row_weights(weights, expected, what)
    if not isinstance(weights, list | tuple):
        raise _fail(f"{what} must be a list of arrays, got {type(weights).__name__}")
    if len(weights) != len(expected):
        raise _fail(f"{what}: {len(weights)} arrays, the model has {len(expected)}")
    with np.errstate(over="ignore", invalid="ignore"):  # all_finite's sums may overflow
        for i, (array, reference) in enumerate(zip(weights, expected, strict=True)):
            if not isinstance(array, np.ndarray):
                raise _fail(f"{what}[{i}] is a {type(array).__name__}, not an array")
            if array.shape != np.shape(reference):
                raise _fail(f"{what}[{i}] has shape {array.shape}, the model's is "
                            f"{np.shape(reference)}")
            # dtype kind "f" is the common case of np.floating, without issubdtype's cost
            if array.dtype.kind != "f" and not np.issubdtype(array.dtype, np.floating):
                raise _fail(f"{what}[{i}] has dtype {array.dtype}, expected a float type")
            if not all_finite(array):
                raise _fail(f"{what}[{i}] holds NaN or infinite values")
    return list(weights)


def _check_row_weights(weights: RowWeights, expected: Sequence[np.ndarray[Any, Any]],
                       what: str) -> RowWeights:
    try:
        checked = RowWeights(weights.matrix, weights.row,
                             tuple(array.shape for array in expected))
    except (TypeError, ValueError, IndexError, AttributeError) as error:
        raise _fail(f"{what}: {error}") from None
    with np.errstate(over="ignore", invalid="ignore"):  # all_finite's sum may overflow
        if not all_finite(checked.matrix[checked.row]):
            bad = next(i for i, array in enumerate(checked) if not np.isfinite(array).all())
            raise _fail(f"{what}[{bad}] holds NaN or infinite values")
    return checked


def check_error_stats(stats: Any, what: str, max_n: int = MAX_ROWS) -> ErrorStats:
    """``stats`` as consistent :class:`ErrorStats`: histogram total = n, the sum within what
    the histogram's bins allow, a variance ≥ 0, every number finite."""
    if not isinstance(stats, ErrorStats):
        raise _fail(f"{what} must be ErrorStats, got {type(stats).__name__}")
    n = _count(stats.n, f"{what}.n", 0, max_n)
    total = _number(stats.sum, f"{what}.sum")
    squares = _number(stats.sumsq, f"{what}.sumsq")
    hist = stats.hist
    if (not isinstance(hist, np.ndarray) or hist.shape != (N_ERROR_BINS,)
            or not np.issubdtype(hist.dtype, np.integer)):
        raise _fail(f"{what}.hist must be {N_ERROR_BINS} integer counts")
    if (hist < 0).any():
        raise _fail(f"{what}.hist holds negative counts")
    if int(hist.sum()) != n:
        raise _fail(f"{what}.hist counts {int(hist.sum())} errors but n is {n}")
    if n == 0:
        if total or squares:
            raise _fail(f"{what}: no errors but sums {total:g}, {squares:g}")
        return stats
    edges = error_bin_edges()
    low = float(np.dot(hist[1:], edges[1:-1]))  # bin 0 starts at 0, the last has no top
    high = math.inf if hist[-1] else float(np.dot(hist, edges[1:]))
    slack = RELATIVE_TOLERANCE * max(abs(total), 1e-300)
    if not low - slack <= total <= high + slack:
        raise _fail(f"{what}.sum {total:g} outside the {low:g}…{high:g} its histogram allows")
    if squares < total * total / n * (1 - RELATIVE_TOLERANCE) - 1e-300:
        raise _fail(f"{what}: Σe² {squares:g} < (Σe)²/n {total * total / n:g} (negative "
                    f"variance)")
    return stats


def scaler_array_problem(stats: ScalerStats) -> str | None:
    """What is wrong with the scaler's sums (not one finite value per feature), or None.
    Shared by the server's door and the device's guard, which word the error their own way."""
    for name in ("sum", "sumsq"):
        array = getattr(stats, name)
        if not isinstance(array, np.ndarray) or array.shape != (N_FEATURES,):
            return f"{name} is not {N_FEATURES} values"
        if not np.isfinite(array).all():
            return f"{name} holds NaN or infinite values"
    return None


def check_scaler(stats: Any, what: str) -> ScalerStats:
    """``stats`` as :class:`ScalerStats` of ≥ 1 row over the model's features, finite, with
    Σx² ≥ (Σx)²/n per feature."""
    if not isinstance(stats, ScalerStats):
        raise _fail(f"{what} must be ScalerStats, got {type(stats).__name__}")
    n = _count(stats.n, f"{what}.n", 1)
    problem = scaler_array_problem(stats)
    if problem is not None:
        raise _fail(f"{what}.{problem}")
    if (stats.sumsq < 0).any():
        raise _fail(f"{what}.sumsq holds negative values")
    floor = stats.sum * stats.sum / n
    if (stats.sumsq < floor * (1 - RELATIVE_TOLERANCE) - 1e-9).any():
        raise _fail(f"{what}: Σx² < (Σx)²/n for some feature (negative variance)")
    return stats


def _check_system(stats: Any) -> None:
    if not isinstance(stats, SystemStats):
        raise _fail(f"system must be SystemStats, got {type(stats).__name__}")
    _number(stats.wall_seconds, "system.wall_seconds")
    _number(stats.cpu_seconds, "system.cpu_seconds")
    _count(stats.task_peak_memory_bytes, "system.task_peak_memory_bytes", 0, 2**62)
    _count(stats.peak_rss_bytes, "system.peak_rss_bytes", 0, 2**62)


def _check_data(data: Any) -> DataReport:
    if not isinstance(data, DataReport):
        raise _fail(f"data must be a DataReport, got {type(data).__name__}")
    _count(data.train, "data.train", 1)
    _count(data.opt, "data.opt")
    _count(data.warmup_train, "data.warmup_train")
    _count(data.warmup_opt, "data.warmup_opt")
    return data


def _check_counts(counts: Any, what: str) -> dict[str, tuple[int, int]]:
    if not isinstance(counts, ClassCounts):
        raise _fail(f"{what} must be ClassCounts, got {type(counts).__name__}")
    checked: dict[str, tuple[int, int]] = {}
    for name, pair in counts.counts.items():
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise _fail(f"{what}[{name}] must be (flagged, total)")
        flagged = _count(pair[0], f"{what}[{name}] flagged")
        total = _count(pair[1], f"{what}[{name}] total")
        if flagged > total:
            raise _fail(f"{what}[{name}] flags {flagged} of only {total} rows")
        checked[str(name)] = (flagged, total)
    return checked


def _check_scaler_reply(result: Any) -> None:
    if not isinstance(result, ScalerReport):
        raise _fail(f"expected a ScalerReport, got {type(result).__name__}")
    stats = check_scaler(result.stats, "stats")
    data = _check_data(result.data)
    if data.train != stats.n:
        raise _fail(f"data.train {data.train} differs from the scaler's {stats.n} rows")


def _check_fit_reply(result: Any, task: Any, context: ReplyContext) -> FitReport:
    if not isinstance(result, FitReport):
        raise _fail(f"expected a FitReport, got {type(result).__name__}")
    if result.client_id != context.device:
        raise _fail(f"reply names device {str(result.client_id)!r:.60}")
    train, opt = context.limits()
    checked = result.weights
    if isinstance(task, FitTask):
        checked = check_weights(result.weights, task.model.weights, "weights")
    _count(result.num_examples, "num_examples", 1, train)
    _number(result.mean_loss, "mean_loss")
    _number(result.validation_loss, "validation_loss")
    _count(result.validation_rows, "validation_rows", 0, opt)
    _check_system(result.system)
    # a row of stacked weights is used as the checker saw it (other lists as they came)
    return replace(result, weights=checked) if type(checked) is RowWeights else result


def _check_evaluate_reply(result: Any, task: Any, context: ReplyContext) -> None:
    if not isinstance(result, EvaluationReport):
        raise _fail(f"expected an EvaluationReport, got {type(result).__name__}")
    if result.client_id != context.device:
        raise _fail(f"reply names device {str(result.client_id)!r:.60}")
    rows = _check_counts(result.counts, "counts")
    voted = _check_counts(result.counts_window, "counts_window")
    if {k: v[1] for k, v in rows.items()} != {k: v[1] for k, v in voted.items()}:
        raise _fail("counts and counts_window disagree on the rows per class")
    benign = check_error_stats(result.benign_errors, "benign_errors")
    attack = check_error_stats(result.attack_errors, "attack_errors")
    benign_rows = rows.get("benign", (0, 0))[1]
    attack_rows = sum(total for name, (_, total) in rows.items() if name != "benign")
    if benign.n != benign_rows or attack.n != attack_rows:
        raise _fail(f"error statistics count {benign.n} benign and {attack.n} attack rows, "
                    f"the counts {benign_rows} and {attack_rows}")
    if sum(total for _, total in rows.values()) > MAX_ROWS:
        raise _fail("counts total more than the most rows a device can hold")
    window = _count(result.window, "window", 1, MAX_WINDOW)
    threshold = _number(result.threshold, "threshold")
    if isinstance(task, EvaluateTask):
        if threshold != task.threshold:
            raise _fail(f"threshold {threshold:g} is not the {task.threshold:g} sent")
        if task.window and window != task.window:
            raise _fail(f"window {window} is not the {task.window} sent")
        if not task.window and window > task.max_window:
            raise _fail(f"window {window} above max_window {task.max_window}")
    _check_system(result.system)


def validate_reply(method: str, task: Any, result: Any, context: ReplyContext) -> Any:
    """Check one device's ``result`` for client ``method`` against the ``task`` sent; raise
    :class:`ReplyRejectedError` with the reason if it must not be used. Returns the result to
    use: ``result`` itself, or for a fit reply with
    :class:`~fediot.core.model.row_weights.RowWeights` a copy holding the checked row.

    A :class:`Refusal` (the device refused the task, or the engine could not read its reply)
    is rejected with its own reason.
    """
    if isinstance(result, Refusal):
        raise _fail(str(result.reason)[:500] or "refused, without a reason")
    if method == "scaler_stats":
        _check_scaler_reply(result)
    elif method == "fit":
        return _check_fit_reply(result, task, context)
    elif method == "threshold_stats":
        stats = check_error_stats(result, "errors", context.limits()[1])
        if stats.n == 0:
            raise _fail("error statistics of no rows")
    elif method == "evaluate":
        _check_evaluate_reply(result, task, context)
    elif method == "secagg":
        _check_secagg_reply(result, task, context)
    else:
        raise _fail(f"no checks for client method {method!r}")
    return result


def _check_secagg_reply(result: Any, task: Any, context: ReplyContext) -> None:
    """A secure-aggregation stage's reply: the stage sent, and in the ``mask`` stage the clear
    part of the step's result (the masked vector itself cannot be checked: the server checks
    the sum, :func:`check_secure_scaler_sum`, :func:`check_secure_error_sum`)."""
    if not isinstance(result, SecAggReply):
        raise _fail(f"expected a SecAggReply, got {type(result).__name__}")
    if isinstance(task, SecAggTask) and result.stage != task.stage:
        raise _fail(f"answers stage {str(result.stage)!r:.30}, not {task.stage}")
    if not isinstance(result.payload, dict):
        raise _fail("payload is not a mapping")
    if result.stage == "mask":
        if result.masked is None or getattr(result.masked, "ndim", 0) != 1:
            raise _fail("no masked vector")
        step = task.payload.get("step") if isinstance(task, SecAggTask) else "fit"
        if step == "scaler_stats":
            _check_data(result.report)
        elif step == "threshold_stats":
            if result.report is not None:
                raise _fail("the threshold step's mask stage carries a clear report")
        elif not isinstance(result.report, FitReport) or result.report.weights:
            raise _fail("the mask stage's report must be a FitReport without weights")
        else:
            _check_fit_reply(result.report, None, context)


def check_secure_scaler_sum(stats: ScalerStats, declared_rows: int) -> ScalerStats:
    """The unmasked scaler sum of a secure scaler step, checked as far as a sum can be: its
    row count equals the ``declared_rows`` the summed devices declared in clear, it is finite
    and Σx² ≥ (Σx)²/n per feature. One device's sums cannot be checked: a device lying within
    these bounds is hidden in the sum."""
    check_scaler(stats, "the secure sum")
    if stats.n != declared_rows:
        raise _fail(f"the secure sum counts {stats.n:,} rows, the devices declared "
                    f"{declared_rows:,}")
    return stats


def check_secure_error_sum(stats: ErrorStats, max_rows: int) -> ErrorStats:
    """The unmasked error statistics of a secure threshold step, checked as far as a sum can
    be: 1 … ``max_rows`` errors (the threshold rows the summed devices declared), the
    histogram counting Σn, Σe within its bins' range, Σe² ≥ (Σe)²/n."""
    check_error_stats(stats, "the secure sum", max_rows)
    if stats.n == 0:
        raise _fail("the secure sum holds error statistics of no rows")
    return stats


def update_norm(report: FitReport, current: Weights) -> float:
    """‖w − w_global‖ over all arrays of a (checked) fit report."""
    return math.sqrt(float(squared_distances([report.weights], current)[0]))


def update_norm_outliers(reports: Mapping[str, FitReport], current: Weights,
                         ratio: float) -> dict[str, str]:
    """Client id → reason for every report whose update norm exceeds ``ratio`` × the median
    of the round's update norms (``ratio`` 0: none; fewer than 3 reports: none, as a median of
    two cannot tell which one is off)."""
    if ratio <= 0 or len(reports) < 3:
        return {}
    # all reports at once, a block of them per layer (thousands of virtual devices)
    distances = squared_distances([report.weights for report in reports.values()], current)
    norms = dict(zip(reports, np.sqrt(distances).tolist(), strict=True))
    median = float(np.median(list(norms.values())))
    if median <= 0:
        return {}
    return {cid: f"update norm {norm:.4g} > {ratio:g} × the round's median {median:.4g}"
            for cid, norm in norms.items() if not norm <= ratio * median}
