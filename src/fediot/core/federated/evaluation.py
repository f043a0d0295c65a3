"""Server-side thresholds and results, from devices' statistics only.

The seed's server read every device's raw benign rows to set the threshold and evaluated on
training rows; here each device sends summable error statistics and verdict counts, and the
server never sees a row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fediot.core.errors import FediotError
from fediot.core.federated.messages import EvaluationReport
from fediot.core.federated.robust_stats import PooledSums, StatisticsCombination
from fediot.core.metrics import ClassCounts, roc_auc_from_histograms
from fediot.core.model import ErrorStats, threshold_mean_std

THRESHOLD_MODES = ("global", "per_device", "quantile")


@dataclass(frozen=True)
class Thresholds:
    """The anomaly thresholds of a run.

    Parameters
    ----------
    mode
        ``global``, ``per_device`` or ``quantile`` (how ``per_device`` was filled).
    global_threshold
        Threshold from all devices' pooled statistics (always computed, for reference).
    per_device
        Threshold each device applies.
    windows
        Window vote each device applies when the run chose them on threshold rows
        (``detection_args.window = 0``, N-BaIoT's ws*); empty when the run has one fixed
        window.
    """

    mode: str
    global_threshold: float
    per_device: Mapping[str, float]
    windows: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "global": self.global_threshold,
                "per_device": dict(self.per_device), "windows": dict(self.windows)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Thresholds:
        """Inverse of :meth:`to_dict` (a file without ``windows`` has one fixed window)."""
        return cls(str(raw["mode"]), float(raw["global"]),
                   {str(k): float(v) for k, v in raw["per_device"].items()},
                   {str(k): int(v) for k, v in raw.get("windows", {}).items()})

    def window(self, device: str | None, fixed: int) -> int:
        """The window ``device`` votes over: its own ws* when the run chose windows, else the
        run's ``fixed`` window; a device without one (``None``, an unknown device) gets the
        largest chosen window, the one no device's threshold rows alarm at."""
        if fixed > 0 or not self.windows:
            return max(fixed, 1)
        if device is not None and device in self.windows:
            return self.windows[device]
        return max(self.windows.values())


def make_thresholds(stats: Mapping[str, ErrorStats], *, mode: str, k: float,
                    quantile: float,
                    combination: StatisticsCombination | None = None) -> Thresholds:
    """Thresholds from each device's threshold-split error statistics.

    ``global``: mean + k·std of the pooled errors, for every device; ``per_device``: each
    device's own mean + k·std; ``quantile``: the pooled errors' ``quantile`` (from the
    histogram, within one bin, 4.7 %, of the exact value), for every device.

    ``combination`` says how the devices' statistics are pooled for the global threshold
    (also kept, for reference, in the other modes) and the quantile: default
    :class:`~fediot.core.federated.robust_stats.PooledSums`, the exact sums; a robust one
    (:mod:`~fediot.core.federated.robust_stats`) gives each device one vote. Per-device
    thresholds always use each device's own statistics.
    """
    if mode not in THRESHOLD_MODES:
        raise FediotError(f"threshold mode {mode!r}: use one of {THRESHOLD_MODES}")
    if not stats:
        raise FediotError("no device reported threshold statistics")
    combine = combination or PooledSums()
    parts = list(stats.values())
    global_threshold = combine.mean_std_threshold(parts, k)
    if mode == "per_device":
        per_device = {cid: threshold_mean_std(s, k) for cid, s in stats.items()}
    elif mode == "quantile":
        per_device = dict.fromkeys(stats, combine.quantile_threshold(parts, quantile))
    else:
        per_device = dict.fromkeys(stats, global_threshold)
    return Thresholds(mode, global_threshold, per_device)


def threshold_row_rates(stats: Mapping[str, ErrorStats],
                        thresholds: Mapping[str, float]) -> dict[str, float]:
    """Per device, the share of its own benign *threshold* rows its threshold flags (from its
    error histogram): the false-alarm rate a threshold promises before any test row is seen.
    A threshold mode that leaves these very uneven across devices is a poor fit for them."""
    return {device: stats[device].share_above(threshold)
            for device, threshold in thresholds.items() if device in stats}


def _rates(counts: ClassCounts) -> dict[str, Any]:
    confusion = counts.confusion()
    return {**confusion.rates(), **confusion.to_dict(),
            "tpr_by_attack": counts.tpr_by_attack()}


def summarize_device(report: EvaluationReport) -> dict[str, Any]:
    """Metrics of one device: with and without the window vote, and ROC AUC."""
    auc, auc_error = _auc(report.benign_errors, report.attack_errors)
    return {
        "client_id": report.client_id,
        "threshold": report.threshold,
        "window": report.window,
        "rows": _rates(report.counts),
        "window_vote": _rates(report.counts_window),
        "roc_auc": auc,
        "roc_auc_binning_error": auc_error,
    }


def _auc(benign: ErrorStats, attack: ErrorStats) -> tuple[float | None, float | None]:
    if benign.n == 0 or attack.n == 0:
        return None, None
    auc, bound = roc_auc_from_histograms(benign.hist, attack.hist)
    return auc, bound


@dataclass(frozen=True)
class EvaluationSummary:
    """Per-device and pooled results of one evaluation.

    Parameters
    ----------
    devices
        Client id → :func:`summarize_device` dict.
    pooled
        The same metrics over all devices' counts and histograms together.
    """

    devices: Mapping[str, dict[str, Any]]
    pooled: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"devices": dict(self.devices), "pooled": self.pooled}


def summarize(reports: Sequence[EvaluationReport]) -> EvaluationSummary:
    """Per-device metrics and their pooled totals (counts summed, never averaged)."""
    if not reports:
        raise FediotError("no device reported evaluation results")
    devices = {r.client_id: summarize_device(r) for r in reports}
    counts = ClassCounts.pool(r.counts for r in reports)
    counts_window = ClassCounts.pool(r.counts_window for r in reports)
    auc, auc_error = _auc(ErrorStats.pool(r.benign_errors for r in reports),
                          ErrorStats.pool(r.attack_errors for r in reports))
    pooled = {"rows": _rates(counts), "window_vote": _rates(counts_window),
              "roc_auc": auc, "roc_auc_binning_error": auc_error}
    return EvaluationSummary(devices, pooled)
