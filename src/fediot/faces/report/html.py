"""The run report: one self-contained HTML page for a run folder, finished or in progress.

Sections: the run's facts and pooled metrics; loss, evaluated-round metrics and thresholds per
round (when evaluated rounds recorded them); per device its rates with bars of missed attacks
(1 − TPR) and false alarms (FPR) zoomed to the largest rate; ROC curves from the benign/attack
score histograms on a log-FPR axis; each device's threshold against percentile bands of its
scores, and score histograms with the threshold; system figures per device; and the federated /
centralised / local comparison when ``comparison.json`` exists. The page fits a phone's width:
wide tables scroll in their own box, run ids and timestamps wrap only between their parts.
Charts are inline SVG from :mod:`fediot.faces.report.svg`; the page loads nothing (a
Content-Security-Policy forbids it).

A run without ``results.json`` (still running, stopped or failed) gets the sections its files
allow, under a banner saying the report is partial.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from fediot import __version__
from fediot.core.catalog import client_label
from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.federated.devices import client_ids
from fediot.core.io import atomic_path
from fediot.core.metrics import roc_curve_from_histograms
from fediot.core.model import (
    BIN_WIDTH_LOG10,
    N_ERROR_BINS,
    ErrorStats,
    error_bin_edges,
    threshold_quantile,
)
from fediot.engines.run_folder import (
    RunView,
    describe_excluded,
    excluded_devices,
    finite_number,
    system_figures,
)
from fediot.faces.report.svg import (
    PALETTE,
    BarSeries,
    ChartSize,
    HistogramSeries,
    Interval,
    RangeRow,
    Reference,
    Series,
    bar_chart,
    esc,
    format_number,
    histogram_chart,
    line_chart,
    number_text,
    range_chart,
    roc_chart,
)

POOLED = "pooled"
"""Series name of the all-devices curve or bar group."""
POOLED_COLOR = "#222222"
BENIGN_COLOR = "#59a14f"
ATTACK_COLOR = "#e15759"
THRESHOLD_ROWS_COLOR = "#4e79a7"
BAND_QUANTILES: tuple[float, float, float] = (0.01, 0.5, 0.99)
"""The threshold chart's bands: from the 1st to the 99th percentile, a dot at the median."""
TPR_AT_FPR: tuple[float, ...] = (0.001, 0.01)
"""The ROC table's operating points: the TPR reached with at most this FPR."""
ZERO_BARS_AXIS: float = 0.01
"""The top of a rate axis whose bars are all 0 (1 %), rather than 100 %."""
ROC_FPR_FLOOR_MAX: float = 1e-3
"""The log-FPR axis of the ROC chart starts at or below this FPR."""


# ---------------------------------------------------------------------------- data


@dataclass(frozen=True)
class RocCurve:
    """A ROC curve from score histograms: one point per bin edge, and its trapezoid area.

    Parameters
    ----------
    fpr, tpr
        Non-decreasing rates from (0, 0) to (1, 1); point ``i`` flags the top ``i`` bins.
    auc
        Area under the curve (trapezoids over the points).
    """

    fpr: npt.NDArray[np.float64]
    tpr: npt.NDArray[np.float64]
    auc: float


def tpr_at_fpr(curve: RocCurve, fpr: float) -> float:
    """The largest TPR of the curve's points whose FPR is at most ``fpr`` (thresholds on the
    histogram bin edges, no interpolation: an operating point that exists)."""
    return float(curve.tpr[curve.fpr <= fpr + 1e-12].max())


def roc_fpr_floor(benign_rows: int) -> float:
    """The log-FPR axis' floor: the power of ten at or below one benign row's FPR
    (``1 / benign_rows``) of the largest benign set, and at most :data:`ROC_FPR_FLOOR_MAX`;
    so only points with FPR 0 are drawn at the floor."""
    if benign_rows < 1:
        return ROC_FPR_FLOOR_MAX
    return min(ROC_FPR_FLOOR_MAX, 10.0 ** math.floor(-math.log10(benign_rows) + 1e-12))


def roc_curve(benign: ErrorStats, attack: ErrorStats) -> RocCurve | None:
    """The ROC of the threshold swept over the histogram bin edges (``None`` without benign
    or attack rows)."""
    if benign.n == 0 or attack.n == 0:
        return None
    fpr, tpr = roc_curve_from_histograms(benign.hist, attack.hist)
    return RocCurve(fpr, tpr, float(np.trapezoid(tpr, fpr)))


@dataclass(frozen=True)
class RunData:
    """Everything the report reads from a run folder, read once.

    Parameters
    ----------
    root
        The run folder.
    run_id
        Its id (the folder name).
    config
        ``config.yaml``.
    status, results, comparison
        ``status.json``, ``results.json``, ``comparison.json`` (``None`` until written).
    rounds
        ``metrics.jsonl``: one dict per completed round.
    """

    root: Path
    run_id: str
    config: Config
    status: dict[str, Any] | None
    rounds: list[dict[str, Any]]
    results: dict[str, Any] | None
    comparison: dict[str, Any] | None

    @classmethod
    def load(cls, view: RunView) -> RunData:
        return cls(view.root, view.run_id, view.config(), view.status(), view.rounds(),
                   view.results(), view.comparison())

    @property
    def partial(self) -> bool:
        """No final results yet."""
        return self.results is None

    def devices(self) -> list[str]:
        """Client ids: from the results, else the status, else the configuration."""
        if self.results is not None:
            devices = self.results.get("evaluation", {}).get("devices", {})
            if devices:
                return list(devices)
        if self.status is not None and self.status.get("devices"):
            return list(self.status["devices"])
        return client_ids(self.config)

    def error_stats(self) -> dict[str, tuple[ErrorStats, ErrorStats]]:
        """Per device its (benign, attack) test-split score statistics from ``results.json``."""
        raw = (self.results or {}).get("error_stats") or {}
        parsed = {}
        for device, pair in raw.items():
            try:
                parsed[device] = (ErrorStats.from_dict(pair["benign"]),
                                  ErrorStats.from_dict(pair["attack"]))
            except (KeyError, TypeError, FediotError) as error:
                raise FediotError(f"{self.root / 'results.json'}: error_stats[{device!r}]: "
                                  f"{error}") from None
        return parsed

    def threshold_stats(self) -> dict[str, ErrorStats]:
        """Per device the score statistics of its threshold rows (the benign rows its
        threshold was set from), from ``results.json`` ``threshold_stats``."""
        raw = (self.results or {}).get("threshold_stats") or {}
        parsed = {}
        for device, stats in raw.items():
            try:
                parsed[device] = ErrorStats.from_dict(stats)
            except (TypeError, FediotError) as error:
                raise FediotError(f"{self.root / 'results.json'}: threshold_stats[{device!r}]:"
                                  f" {error}") from None
        return parsed

    def device_threshold(self, device: str) -> float | None:
        """The device's final threshold: ``thresholds.per_device``, else its evaluation's."""
        per_device = self.thresholds().get("per_device") or {}
        found = finite_number(per_device.get(device))
        return found if found is not None else finite_number(
            self.device_metrics(device).get("threshold"))

    def device_metrics(self, device: str) -> dict[str, Any]:
        devices = (self.results or {}).get("evaluation", {}).get("devices", {})
        return devices.get(device) or {}

    def pooled_metrics(self) -> dict[str, Any]:
        return (self.results or {}).get("evaluation", {}).get("pooled") or {}

    def thresholds(self) -> dict[str, Any]:
        return (self.results or {}).get("thresholds") or {}


def _metric(metrics: Mapping[str, Any], kind: str, key: str) -> float | None:
    part = metrics.get(kind)
    return finite_number(part.get(key)) if isinstance(part, Mapping) else None


NO_BREAK_SPACE = "\u00a0"


def _pct(value: float | None, gap: str = NO_BREAK_SPACE) -> str:
    """``value`` as a percentage with two decimals, ``gap`` before the ``%`` (default a
    no-break space: on the page a number never wraps away from its unit)."""
    return "—" if value is None else f"{100 * value:.2f}{gap}%"


def _auc_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _device_colors(devices: Sequence[str]) -> dict[str, str]:
    return {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(devices)}


# ---------------------------------------------------------------------------- html helpers

_ID_TOKEN = re.compile(r"\d{8}-\d{6}[-_.]*|[^-_.]+[-_.]*|[-_.]+")
"""One unbreakable part of a run id: its ``YYYYmmdd-HHMMSS`` stamp, or a word with the
separators after it."""


def _timestamp_html(text: str) -> str:
    """An ISO timestamp escaped, its date and its time each unbreakable, a line-break chance
    only between them."""
    date, mark, time = text.partition("T")
    parts = [date, mark + time] if mark else [text]
    return "<wbr>".join(f'<span class="whole">{esc(part)}</span>' for part in parts)


def whole_text_html(text: str) -> str:
    """``text`` escaped, in parts that never break inside (a run id's stamp, each word with
    its trailing ``-``/``_``/``.``), with line-break chances only between them."""
    return "<wbr>".join(f'<span class="whole">{esc(part)}</span>'
                        for part in _ID_TOKEN.findall(text))



def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, name: str,
           caption: str = "", row_keys: Sequence[str] | None = None) -> str:
    """A table of already-escaped cells; ``row_keys`` become ``data-key`` attributes."""
    head = "".join(f'<th scope="col">{h}</th>' for h in headers)
    body = []
    for number, row in enumerate(rows):
        key = f' data-key="{esc(row_keys[number])}"' if row_keys else ""
        cells = f'<th scope="row">{row[0]}</th>' + "".join(f"<td>{c}</td>" for c in row[1:])
        body.append(f"<tr{key}>{cells}</tr>")
    # a wide table scrolls inside its own box, so a phone's page never scrolls sideways; the
    # caption stays outside it, as wide as the page rather than the table
    described = f' aria-describedby="caption-{esc(name)}"' if caption else ""
    caption_html = (f'<p class="table-caption" id="caption-{esc(name)}">{esc(caption)}</p>'
                    if caption else "")
    return (f'<div class="table-scroll"><table class="data" data-table="{esc(name)}"'
            f"{described}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            f"</table></div>{caption_html}")


def _figure(chart: str, name: str, caption: str = "", anchor: str = "", **data: str) -> str:
    """A ``<figure data-figure=NAME>`` holding ``chart``; ``anchor``: its ``id`` (none by
    default); ``data``: more ``data-KEY`` attributes."""
    attributes = (f' id="{esc(anchor)}"' if anchor else "") + "".join(
        f' data-{k}="{esc(v)}"' for k, v in data.items())
    caption_html = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    return f'<figure data-figure="{esc(name)}"{attributes}>{chart}{caption_html}</figure>'


def _note(text: str, name: str) -> str:
    return f'<p class="note" data-note="{esc(name)}">{esc(text)}</p>'


def _section(anchor: str, title: str, *parts: str) -> str:
    return (f'<section id="{esc(anchor)}" data-section="{esc(anchor)}"><h2>{esc(title)}</h2>'
            + "\n".join(parts) + "</section>")


# ---------------------------------------------------------------------------- sections


def _header(data: RunData) -> str:
    config, status = data.config, data.status or {}
    devices = data.devices()
    total = status.get("total_rounds", config.train_args.comm_round)
    state = str(status.get("state", "unknown"))
    if state in ("running", "interrupted") and status.get("phase"):
        state += f" ({status['phase']})"
    finished = (data.results or {}).get("finished_at")
    t, d = config.train_args, config.detection_args
    facts = [
        ("run", whole_text_html(data.run_id)),
        ("state", esc(state + (" — partial report" if data.partial else ""))),
        ("engine", esc(status.get("engine", config.comm_args.backend))),
        ("devices", esc(f"{len(devices)}: " + ", ".join(client_label(x) for x in devices))),
        ("rounds", esc(f"{len(data.rounds)} of {total} completed")),
        ("optimiser", esc(f"{t.federated_optimizer} (clients: {t.client_optimizer}, "
                          f"lr {format_number(t.learning_rate)}, {t.epochs} epoch(s)/round)")),
        ("dataset", esc(config.data_args.dataset)),
        ("detection", esc(f"threshold {d.threshold_mode}, k = {format_number(d.threshold_k)}"
                          f", window {d.describe_window()}")),
        ("finished", _timestamp_html(str(finished)) if finished else "not finished"),
        ("last update", _timestamp_html(str(status.get("updated_at", "—")))),
    ]
    facts_html = "".join(f'<div data-fact="{esc(k)}"><dt>{esc(k)}</dt><dd>{v}</dd></div>'
                         for k, v in facts)
    parts = [f'<header><h1>Run report <span class="run-id">{whole_text_html(data.run_id)}'
             "</span></h1>",
             f'<dl class="facts">{facts_html}</dl>']
    if data.partial:
        parts.append(
            f'<p class="banner" data-state="partial">Partial report: this run has no '
            f"results.json yet (state {esc(state)}, {len(data.rounds)} of {esc(total)} rounds"
            f" recorded). It shows what exists so far; detection results, ROC curves and "
            f"score histograms appear when the run finishes.</p>")
    else:
        pooled = data.pooled_metrics()
        auc = finite_number(pooled.get("roc_auc"))
        rows = [["per row", *(_pct(_metric(pooled, "rows", k)) for k in ("f1", "recall", "fpr")),
                 esc(_auc_text(auc))],
                [f"window vote ({d.describe_window()})",
                 *(_pct(_metric(pooled, "window_vote", k)) for k in ("f1", "recall", "fpr")),
                 "—"]]
        parts.append(_table(["all devices", "F1", "TPR", "FPR", "ROC AUC"], rows,
                            name="pooled", row_keys=["rows", "window_vote"],
                            caption="Pooled over all devices' test rows (counts summed). "
                                    "ROC AUC is a property of the scores, not of a verdict."))
    parts.append("</header>")
    return "\n".join(parts)


def _training(data: RunData) -> str:
    rounds = data.rounds
    total = int(data.config.train_args.comm_round)
    parts: list[str] = []
    loss = [(float(r["round"]), v) for r in rounds
            if (v := finite_number(r.get("train_loss"))) is not None]
    parts.append(_figure(line_chart(
        [Series("train_loss", loss, "mean training loss (weighted by rows)")],
        title="Training loss per round", x_label="round", y_label="loss (MSE)",
        x_integer=True, x_domain=(1.0, float(max(total, 2))) if loss else None,
        empty_message="no round completed yet"), "loss"))
    parts.append(_round_metrics(data))
    parts.append(_thresholds(data))
    return _section("training", "Training", '<div class="charts">' + "\n".join(parts)
                    + "</div>")


def _evaluated(rounds: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [r for r in rounds if isinstance(r.get("evaluation"), Mapping)]


def _round_metrics(data: RunData) -> str:
    evaluated = _evaluated(data.rounds)
    every = data.config.validation_args.frequency_of_the_test
    if not evaluated:
        why = ("rounds are not evaluated during training (validation_args.frequency_of_the_test"
               " = 0)" if not every else "no evaluated round recorded yet")
        return _note(f"Detection metrics per round: {why}; "
                     + ("the final evaluation is in the tables." if not data.partial else
                        "the final evaluation comes when the run finishes."), "round-metrics")
    points: dict[str, list[tuple[float, float]]] = {}
    keys = [("f1_w", "F1 (window vote)", "window_vote", "f1"),
            ("tpr_w", "TPR (window vote)", "window_vote", "recall"),
            ("fpr_w", "FPR (window vote)", "window_vote", "fpr"),
            ("auc", "ROC AUC", "", "roc_auc")]
    final_round = (data.results or {}).get("rounds")
    sources: list[tuple[float, Mapping[str, Any]]] = [(float(r["round"]), r["evaluation"])
                                                      for r in evaluated]
    if data.results is not None and isinstance(final_round, int):
        sources.append((float(final_round), data.pooled_metrics()))
    for name, _, kind, key in keys:
        for x, metrics in sources:
            value = finite_number(metrics.get(key)) if not kind else _metric(metrics, kind, key)
            if value is not None:
                points.setdefault(name, []).append((x, value))
    series = [Series(name, points.get(name, []), label) for name, label, _, _ in keys]
    total = float(max(data.config.train_args.comm_round, 2))
    return _figure(line_chart(
        series, title="Pooled detection metrics per evaluated round", x_label="round",
        y_label="rate", y_percent=True, x_integer=True, x_domain=(1.0, total),
        y_domain=(0.0, 1.0)), "round-metrics",
        "Rounds evaluated every validation_args.frequency_of_the_test = "
        f"{every}; the last point is the final evaluation (results.json).")


def _round_thresholds(rounds: Sequence[Mapping[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Per-round thresholds where evaluated rounds record them: ``evaluation.thresholds``
    (``{"global": …, "per_device": {…}}``) or ``evaluation.threshold`` (one number)."""
    found: dict[str, list[tuple[float, float]]] = {}
    for record in _evaluated(rounds):
        evaluation, x = record["evaluation"], float(record["round"])
        thresholds = evaluation.get("thresholds")
        if isinstance(thresholds, Mapping):
            if (value := finite_number(thresholds.get("global"))) is not None:
                found.setdefault("global", []).append((x, value))
            for device, raw in (thresholds.get("per_device") or {}).items():
                if (value := finite_number(raw)) is not None:
                    found.setdefault(device, []).append((x, value))
        elif (value := finite_number(evaluation.get("threshold"))) is not None:
            found.setdefault("global", []).append((x, value))
    return found


def _thresholds(data: RunData) -> str:
    """The per-round threshold chart when evaluated rounds recorded thresholds, else a note
    saying precisely why there is none and where the final thresholds are shown."""
    per_round = _round_thresholds(data.rounds)
    if per_round:
        return _threshold_rounds_chart(data, per_round)
    every = data.config.validation_args.frequency_of_the_test
    if not every:
        why = ("rounds are not evaluated during training (validation_args."
               "frequency_of_the_test = 0), so each threshold is set once, after the last "
               "round, from the device's threshold rows")
    elif _evaluated(data.rounds):
        why = ("the evaluated rounds in metrics.jsonl record pooled metrics but no "
               "thresholds")
    else:
        why = "no evaluated round is recorded yet"
    where = ("they appear with the score distributions when the run finishes" if data.partial
             else "the final thresholds are drawn against each device's score distributions "
                  "under Score distributions")
    return (f'<p class="note" data-note="thresholds">No anomaly threshold per round to plot:'
            f" {esc(why)}; {esc(where)}"
            + ("" if data.partial else ' (<a href="#threshold-placement">thresholds vs '
               "scores</a>)") + ".</p>")


def _threshold_rounds_chart(data: RunData,
                            per_round: Mapping[str, list[tuple[float, float]]]) -> str:
    """Thresholds per evaluated round, with the final thresholds as dashed lines."""
    colors = _device_colors(data.devices())
    final = data.thresholds()
    per_device = {k: v for k, raw in (final.get("per_device") or {}).items()
                  if (v := finite_number(raw)) is not None}
    references: list[Reference] = []
    if per_device and len(set(per_device.values())) == 1:
        value = next(iter(per_device.values()))
        references.append(Reference("final", value, f"final threshold, all devices "
                                    f"({final.get('mode', '?')}): {format_number(value)}",
                                    color=POOLED_COLOR))
    else:
        references += [Reference(f"final:{device}", value,
                                 f"final: {client_label(device)} ({format_number(value)})",
                                 color=colors.get(device, POOLED_COLOR))
                       for device, value in per_device.items()]
    series = []
    for name, points in per_round.items():
        if name == "global":
            series.append(Series("global", points, "global threshold", POOLED_COLOR, True))
        else:
            series.append(Series(name, points, client_label(name), colors.get(name, "")))
    values = [v for points in per_round.values() for _, v in points] + list(per_device.values())
    positive = [v for v in values if v > 0]
    y_log = bool(positive) and len(positive) == len(values) and max(positive) > 20 * min(
        positive)
    total = float(max(data.config.train_args.comm_round, 2))
    chart = line_chart(series, title="Anomaly threshold per round", x_label="round",
                       y_label="threshold (reconstruction error)", references=references,
                       x_integer=True, x_domain=(1.0, total), y_log=y_log)
    return _figure(chart, "thresholds", "Thresholds set after each evaluated round; dashed: "
                   "the final thresholds (results.json).", **{"per-round": "yes"})


def _ordinal(number: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th`` … ``11th`` … ``99th``."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(
        number % 10, "th")
    return f"{number}{suffix}"


def _band(name: str, label: str, color: str, stats: ErrorStats) -> Interval | None:
    """The :data:`BAND_QUANTILES` of ``stats`` as one band (``None`` without rows)."""
    if stats.n == 0:
        return None
    low, middle, high = (threshold_quantile(stats, q) for q in BAND_QUANTILES)
    return Interval(name, low, middle, high, label, color)


def _threshold_placement(data: RunData) -> str:
    """Each device's final threshold over the bands of its threshold rows' and test rows'
    reconstruction errors (percentiles read from the results.json histograms)."""
    test_stats, threshold_stats = data.error_stats(), data.threshold_stats()
    devices = [d for d in data.devices() if d in test_stats or d in threshold_stats]
    low, _, high = (_ordinal(round(100 * q)) for q in BAND_QUANTILES)
    rows = []
    for device in devices:
        candidates = []
        if device in threshold_stats:
            candidates.append(_band("threshold_rows", "threshold rows (benign)",
                                    THRESHOLD_ROWS_COLOR, threshold_stats[device]))
        if device in test_stats:
            benign, attack = test_stats[device]
            candidates += [_band("benign", "test benign", BENIGN_COLOR, benign),
                           _band("attack", "test attack", ATTACK_COLOR, attack)]
        rows.append(RangeRow(device, client_label(device),
                             [band for band in candidates if band is not None],
                             data.device_threshold(device)))
    mode = data.thresholds().get("mode") or data.config.detection_args.threshold_mode
    chart = range_chart(rows, title="Thresholds vs reconstruction errors per device",
                        x_label="reconstruction error (log scale)",
                        marker_label=f"threshold ({mode})",
                        size=ChartSize(left=16),
                        empty_message="results.json holds no score statistics")
    return _figure(chart, "threshold-placement",
                   f"Bands: {low} to {high} percentile of each device's errors, dot: the "
                   "median (read from the results.json histograms, to within "
                   f"{format_number(BIN_WIDTH_LOG10)} decade). "
                   "The threshold is set from the threshold rows; test rows above it are "
                   "flagged.", anchor="threshold-placement")


def _devices_section(data: RunData) -> str:
    if data.partial:
        return _section("devices", "Detection per device",
                        _note("Per-device results appear when the run finishes.", "devices"))
    devices = data.devices()
    window = data.config.detection_args.describe_window()
    rows, keys = [], []
    for device in [*devices, None]:
        metrics = data.device_metrics(device) if device else data.pooled_metrics()
        rows_part = metrics.get("rows") or {}
        benign = int(rows_part.get("tn", 0)) + int(rows_part.get("fp", 0))
        attack = int(rows_part.get("tp", 0)) + int(rows_part.get("fn", 0))
        threshold = finite_number(metrics.get("threshold"))
        device_window = metrics.get("window") if device else None
        rows.append([
            esc(client_label(device)) if device else "<strong>all devices</strong>",
            *(_pct(_metric(metrics, "rows", k)) for k in ("recall", "fpr", "f1")),
            *(_pct(_metric(metrics, "window_vote", k)) for k in ("recall", "fpr", "f1")),
            esc(_auc_text(finite_number(metrics.get("roc_auc")))),
            "—" if threshold is None else esc(format_number(threshold)),
            "—" if not isinstance(device_window, int) else f"{device_window:,}",
            f"{benign:,} / {attack:,}",
        ])
        keys.append(device or POOLED)
    table = _table(["device", "TPR", "FPR", "F1", "TPR·w", "FPR·w", "F1·w", "ROC AUC",
                    "threshold", "window", "test rows benign / attack"], rows, name="devices",
                   row_keys=keys,
                   caption=f"·w: with the majority vote over the device's window of "
                           f"consecutive rows ({window}).")
    groups = [client_label(d) for d in devices] + ["all devices"]
    per_metric = []
    # what differs between devices is what each misses and what each raises in vain: both
    # rates are near 0, so bars of 1 − TPR and of FPR on an axis zoomed to the largest one
    for name, key, title, y_label, rate in (
            ("bars-missed", "recall", "Missed attacks (1 − TPR) per device",
             "missed attack rows (1 − TPR)", _missed),
            ("bars-fpr", "fpr", "False alarms (FPR) per device",
             "false alarms: benign rows flagged (FPR)", _same)):
        series = [BarSeries(kind, [rate(_metric(data.device_metrics(d), kind, key))
                                   for d in devices]
                            + [rate(_metric(data.pooled_metrics(), kind, key))], label, color)
                  for kind, label, color in (("rows", "per row", "#4e79a7"),
                                             ("window_vote", "window vote",
                                              "#f28e2b"))]
        values = [v for bars in series for v in bars.values if v is not None]
        chart = bar_chart(groups, series, title=title, y_label=y_label, y_percent=True,
                          y_max=ZERO_BARS_AXIS if values and max(values) == 0 else None)
        caption = ("Every rate is 0: no bar to draw." if values and max(values) == 0 else
                   "The axis ends at the largest rate; the exact rates are in the table.")
        per_metric.append(_figure(chart, name, caption))
    left_out = describe_excluded(excluded_devices(data.results))
    return _section("devices", "Detection per device", table,
                    *([_note(left_out[0].upper() + left_out[1:] + ".", "excluded")]
                      if left_out else []),
                    '<div class="charts">' + "\n".join(per_metric) + "</div>")


def _missed(tpr: float | None) -> float | None:
    """The miss rate 1 − TPR."""
    return None if tpr is None else 1.0 - tpr


def _same(rate: float | None) -> float | None:
    return rate


def _roc_section(data: RunData) -> str:
    if data.partial:
        return _section("roc", "ROC curves",
                        _note("ROC curves appear when the run finishes.", "roc"))
    stats = data.error_stats()
    colors = _device_colors(data.devices())
    series, rows = [], []
    curves: list[tuple[str, str, RocCurve | None, float | None]] = [
        (d, client_label(d), roc_curve(*stats[d]),
         finite_number(data.device_metrics(d).get("roc_auc"))) for d in stats]
    benign_rows = max((b.n for b, _ in stats.values()), default=0)
    if stats:
        benign = ErrorStats.pool(b for b, _ in stats.values())
        attack = ErrorStats.pool(a for _, a in stats.values())
        benign_rows = benign.n
        curves.append((POOLED, "all devices", roc_curve(benign, attack),
                       finite_number(data.pooled_metrics().get("roc_auc"))))
    floor = roc_fpr_floor(benign_rows)
    for name, label, curve, reported in curves:
        auc = reported if reported is not None else (curve.auc if curve else None)
        rows.append([esc(label) if name != POOLED else "<strong>all devices</strong>",
                     esc(_auc_text(auc)),
                     *(_pct(tpr_at_fpr(curve, limit) if curve else None)
                       for limit in TPR_AT_FPR)])
        if curve is None:
            continue
        series.append(Series(name, list(zip(curve.fpr.tolist(), curve.tpr.tolist(),
                                            strict=True)),
                             f"{label} (AUC {curve.auc:.4f})",
                             POOLED_COLOR if name == POOLED else colors.get(name, ""),
                             emphasis=name == POOLED, data={"auc": repr(curve.auc)}))
    chart = roc_chart(series, title="ROC curves per device and pooled", fpr_floor=floor,
                      description="Threshold swept over the score histogram bin edges; "
                                  "log-scale FPR axis.")
    limits = [f"TPR at FPR ≤ {100 * limit:g}{NO_BREAK_SPACE}%" for limit in TPR_AT_FPR]
    table = _table(["device", "ROC AUC", *limits], rows, name="roc",
                   row_keys=[c[0] for c in curves],
                   caption=f"The curves sweep the threshold over the {N_ERROR_BINS + 1} "
                           "log-spaced bin edges of the devices' benign and attack score "
                           "histograms; a TPR at FPR ≤ x is the best such threshold's.")
    note = _note(f"The FPR axis is logarithmic from {number_text(floor)} to 1, so curves "
                 "that all reach a high TPR at a small FPR are told apart. A single false "
                 f"alarm among all devices' {benign_rows:,} benign test rows is an FPR of "
                 f"{number_text(1 / max(benign_rows, 1))}, above the floor: only points "
                 "with no false alarm at all (FPR 0) sit on the axis' left edge.",
                 "roc-axis")
    return _section("roc", "ROC curves", '<div class="charts">' + _figure(chart, "roc", "")
                    + f"<div>{table}{note}</div></div>")


def _histograms_section(data: RunData) -> str:
    if data.partial:
        return _section("scores", "Score distributions",
                        _note("Score histograms appear when the run finishes.", "scores"))
    stats = data.error_stats()
    edges = error_bin_edges().tolist()
    figures = []
    for device, (benign, attack) in stats.items():
        threshold = data.device_threshold(device)
        markers = [] if threshold is None else [
            Reference("threshold", threshold, f"threshold {format_number(threshold)}",
                      axis="x")]
        chart = histogram_chart(
            edges, [HistogramSeries("benign", benign.hist.tolist(),
                                    f"benign ({benign.n:,} rows)", BENIGN_COLOR),
                    HistogramSeries("attack", attack.hist.tolist(),
                                    f"attack ({attack.n:,} rows)", ATTACK_COLOR)],
            title=client_label(device), x_label="reconstruction error (log scale)",
            markers=markers, size=ChartSize(width=480, plot_height=200))
        figures.append(_figure(chart, "histogram", device=device))
    body = ('<div class="charts small">' + "\n".join(figures) + "</div>") if figures else _note(
        "results.json holds no score histograms (error_stats).", "scores")
    return _section("scores", "Score distributions", _threshold_placement(data),
                    _note("Test-split reconstruction errors of benign and attack rows, as the "
                          "share of each class per bin; the line is the device's threshold "
                          "(rows above it are flagged).", "scores-help"), body)


_KNOWN_SYSTEM_KEYS = {
    "wall_seconds": "training time (wall clock)",
    "cpu_seconds": "CPU time",
    "peak_rss_bytes": "peak memory (RSS)",
}


def _system_unit(key: str) -> str:
    """``seconds``, ``bytes``, ``ms`` or ``""``, from the key's words."""
    words = key.lower().split("_")
    for unit, names in (("seconds", ("seconds", "secs", "s")), ("ms", ("ms", "millis")),
                        ("bytes", ("bytes", "byte"))):
        if any(w in names for w in words):
            return unit
    return ""


def _system_is_peak(key: str) -> bool:
    words = key.lower().split("_")
    return "peak" in words or "max" in words


def _binary_unit(largest: float) -> tuple[str, float]:
    for unit, factor in (("GiB", 2.0**30), ("MiB", 2.0**20), ("KiB", 2.0**10)):
        if largest >= factor:
            return unit, factor
    return "B", 1.0


def system_totals(rounds: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Device → numeric system key → its peak (keys with ``peak``/``max``) or its total over
    the rounds (every other key), from ``metrics.jsonl`` ``system`` dicts."""
    return {device: {key: figure["max"] if _system_is_peak(key) else figure["total"]
                     for key, figure in keys.items()}
            for device, keys in system_figures(rounds).items()}


def _system_section(data: RunData) -> str:
    totals = system_totals(data.rounds)
    if not totals:
        return _section("system", "System performance per device",
                        _note("No round has reported system figures yet.", "system"))
    devices = [d for d in data.devices() if d in totals] + [
        d for d in totals if d not in data.devices()]
    keys = list(dict.fromkeys(k for d in devices for k in totals[d]))
    answered = {d: sum(1 for r in data.rounds if d in (r.get("system") or {})) for d in devices}
    headers, charts = ["device", "rounds"], []
    scale: dict[str, tuple[str, float]] = {}
    for key in keys:
        unit = _system_unit(key)
        largest = max((totals[d].get(key, 0.0) for d in devices), default=0.0)
        scale[key] = (_binary_unit(largest) if unit == "bytes" else
                      ("s", 1.0) if unit == "seconds" else ("ms", 1.0) if unit == "ms" else
                      ("", 1.0))
        quantity = _KNOWN_SYSTEM_KEYS.get(key, key.replace("_", " "))
        how = "peak" if _system_is_peak(key) else "total"
        shown_unit = scale[key][0]
        headers.append(f"{esc(quantity)} ({how}{', ' + esc(shown_unit) if shown_unit else ''})")
        values = [totals[d].get(key) for d in devices]
        chart = bar_chart(
            [client_label(d) for d in devices],
            [BarSeries(key, [None if v is None else v / scale[key][1] for v in values],
                       f"{quantity} ({how} over rounds)", "#76b7b2")],
            title=f"{quantity[0].upper()}{quantity[1:]} per device ({how})",
            y_label=shown_unit or key, size=ChartSize(width=480, plot_height=180))
        charts.append(_figure(chart, "system", key=key))
    rows = []
    for device in devices:
        cells = [esc(client_label(device)), str(answered[device])]
        for key in keys:
            value = totals[device].get(key)
            unit, factor = scale[key]
            cells.append("—" if value is None else esc(format_number(value / factor)))
        rows.append(cells)
    table = _table(headers, rows, name="system", row_keys=devices,
                   caption="From each round's system figures in metrics.jsonl: keys with "
                           "'peak' or 'max' are maxima over the rounds, others totals.")
    return _section("system", "System performance per device", table,
                    '<div class="charts small">' + "\n".join(charts) + "</div>")


def _comparison_section(data: RunData) -> str:
    comparison = data.comparison
    if not comparison:
        return ""
    modes = list(comparison)
    devices = list(dict.fromkeys(d for m in modes
                                 for d in (comparison[m].get("devices") or {})))
    headers = ["device"] + [f"{esc(m)} {k}" for m in modes for k in ("F1·w", "TPR·w", "FPR·w",
                                                                     "AUC")]
    rows = []
    for device in [*devices, None]:
        cells = [esc(client_label(device)) if device else "<strong>all devices</strong>"]
        for mode in modes:
            summary = comparison[mode]
            metrics = ((summary.get("devices") or {}).get(device) if device else
                       summary.get("pooled")) or {}
            cells += [_pct(_metric(metrics, "window_vote", k)) for k in ("f1", "recall", "fpr")]
            cells.append(esc(_auc_text(finite_number(metrics.get("roc_auc")))))
        rows.append(cells)
    table = _table(headers, rows, name="comparison", row_keys=[*devices, POOLED],
                   caption="Identical splits and evaluation; ·w: with the window vote.")
    groups = [client_label(d) for d in devices] + ["all devices"]
    series = []
    for mode in modes:
        summary = comparison[mode]
        values = [_metric((summary.get("devices") or {}).get(d) or {}, "window_vote", "f1")
                  for d in devices]
        values.append(_metric(summary.get("pooled") or {}, "window_vote", "f1"))
        series.append(BarSeries(mode, values, mode))
    chart = bar_chart(groups, series, title="F1 with the window vote: federated vs "
                      "centralised vs local", y_label="F1", y_percent=True, y_max=1.0)
    return _section("comparison", "Federated / centralised / local", table,
                    _figure(chart, "comparison"))


# ---------------------------------------------------------------------------- page

_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f;
  background: #fff; margin: 0 auto; padding: 1.2rem 1.5rem 3rem; max-width: 1180px; }
h1 { font-size: 1.5rem; margin: 0 0 .6rem; } h2 { font-size: 1.2rem; margin: 2rem 0 .6rem;
  border-bottom: 1px solid #ddd; padding-bottom: .2rem; }
.run-id { font-family: ui-monospace, monospace; font-weight: 500; }
.whole { white-space: nowrap; }
nav { display: flex; flex-wrap: wrap; gap: .3rem .9rem; } nav a { color: #245; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(250px, 100%), 1fr));
  gap: .3rem 1.2rem; margin: 0 0 1rem; }
dl.facts div { display: grid; grid-template-columns: 5.5rem minmax(0, 1fr); gap: .5rem; }
dt { color: #666; } dd { margin: 0; font-weight: 500; }
.banner { background: #fff4d6; border: 1px solid #e6c25a; padding: .6rem .8rem;
  border-radius: 4px; }
.note { color: #555; font-size: .92rem; }
.table-scroll { max-width: 100%; overflow-x: auto; }
table.data { border-collapse: collapse; margin: .6rem 0 .8rem; font-variant-numeric: tabular-nums;
  font-size: .92rem; }
.table-caption { color: #666; font-size: .85rem; margin: -.7rem 0 1rem; }
table.data th, table.data td { padding: .25rem .6rem; border-bottom: 1px solid #eee;
  text-align: right; }
table.data td { white-space: nowrap; }
table.data th:first-child { text-align: left; white-space: nowrap; }
table.data thead th { border-bottom-color: #bbb; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(460px, 100%), 1fr));
  gap: 1rem 1.5rem; }
.charts.small { grid-template-columns: repeat(auto-fit, minmax(min(360px, 100%), 1fr)); }
.charts > * { min-width: 0; }
figure { margin: 0; } figcaption { color: #555; font-size: .85rem; }
svg.chart { width: 100%; height: auto; max-width: 760px; display: block; }
footer { margin-top: 2.5rem; color: #777; font-size: .85rem; overflow-wrap: anywhere; }
@media (max-width: 600px) {
  body { padding: .8rem .7rem 2rem; }
  h1 { font-size: 1.25rem; }
  table.data th:first-child { white-space: normal; min-width: 7rem; }
  table.data th, table.data td { padding: .25rem .35rem; }
}
@media print { nav { display: none; } section { break-inside: avoid-page; } }
"""


def render_report(view: RunView) -> str:
    """The report page of the run ``view`` reads, as one self-contained HTML document."""
    data = RunData.load(view)
    sections = [_training(data), _devices_section(data), _roc_section(data),
                _histograms_section(data), _system_section(data), _comparison_section(data)]
    titles = [("training", "Training"), ("devices", "Per device"), ("roc", "ROC"),
              ("scores", "Scores"), ("system", "System")]
    if data.comparison:
        titles.append(("comparison", "Comparison"))
    nav = "".join(f'<a href="#{a}">{esc(t)}</a>' for a, t in titles)
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>FedIoT run {esc(data.run_id)}{' (partial)' if data.partial else ''}</title>",
        f"<style>{_CSS}</style></head>",
        f'<body data-run="{esc(data.run_id)}" data-partial="{str(data.partial).lower()}">',
        _header(data),
        f"<nav>{nav}</nav>",
        *[s for s in sections if s],
        f"<footer>Generated {esc(generated)} by FedIoT {esc(__version__)} from "
        f"{esc(data.root)}.</footer>",
        "</body></html>",
    ]) + "\n"


def write_report(view: RunView, path: Path | None = None) -> Path:
    """Render and write the report atomically to ``path`` (default ``RUN_FOLDER/report.html``);
    returns the path written."""
    target = Path(path) if path is not None else view.root / "report.html"
    page = render_report(view)
    try:
        with atomic_path(target) as tmp:
            tmp.write_text(page, encoding="utf-8")
    except OSError as error:
        raise FediotError(f"{target}: cannot write the report ({error.strerror or error})"
                          ) from None
    return target


def report_summary(view: RunView) -> str:
    """One line about the run: state, rounds, devices and the pooled window-vote metrics."""
    status, results = view.status() or {}, view.results()
    rounds = len(view.rounds())
    total = status.get("total_rounds", view.config().train_args.comm_round)
    head = f"run {view.run_id}: {status.get('state', 'unknown')}, {rounds}/{total} rounds"
    if results is None:
        return head + "; partial report (no results.json yet)"
    pooled = results.get("evaluation", {}).get("pooled") or {}
    devices = len(results.get("evaluation", {}).get("devices") or {})
    return (f"{head}, {devices} devices; all devices with the window vote: F1 "
            f"{_pct(_metric(pooled, 'window_vote', 'f1'), ' ')}, TPR "
            f"{_pct(_metric(pooled, 'window_vote', 'recall'), ' ')}, FPR "
            f"{_pct(_metric(pooled, 'window_vote', 'fpr'), ' ')}; ROC AUC "
            f"{_auc_text(finite_number(pooled.get('roc_auc')))}")
