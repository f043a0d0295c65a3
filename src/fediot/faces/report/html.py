"""The run report: one self-contained HTML page for a run folder, finished or in progress.

Sections: the run's facts and pooled metrics; loss, evaluated-round metrics and thresholds per
round; per-device TPR/FPR; ROC curves from the benign/attack score histograms; score histograms
with each device's threshold; system figures per device; and the federated / centralised /
local comparison when ``comparison.json`` exists. Charts are inline SVG from
:mod:`fediot.faces.report.svg`; the page loads nothing (a Content-Security-Policy forbids it).

A run without ``results.json`` (still running, stopped or failed) gets the sections its files
allow, under a banner saying the report is partial.
"""

from __future__ import annotations

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
from fediot.core.model import ErrorStats, error_bin_edges
from fediot.engines.run_folder import RunView, finite_number, system_figures
from fediot.faces.report.svg import (
    PALETTE,
    BarSeries,
    ChartSize,
    HistogramSeries,
    Reference,
    Series,
    bar_chart,
    esc,
    format_number,
    histogram_chart,
    line_chart,
    roc_chart,
)

POOLED = "pooled"
"""Series name of the all-devices curve or bar group."""
POOLED_COLOR = "#222222"
BENIGN_COLOR = "#59a14f"
ATTACK_COLOR = "#e15759"


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
        """Per device its (benign, attack) score statistics from ``results.json``."""
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


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def _auc_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def _device_colors(devices: Sequence[str]) -> dict[str, str]:
    return {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(devices)}


# ---------------------------------------------------------------------------- html helpers


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, name: str,
           caption: str = "", row_keys: Sequence[str] | None = None) -> str:
    """A table of already-escaped cells; ``row_keys`` become ``data-key`` attributes."""
    head = "".join(f'<th scope="col">{h}</th>' for h in headers)
    body = []
    for number, row in enumerate(rows):
        key = f' data-key="{esc(row_keys[number])}"' if row_keys else ""
        cells = f'<th scope="row">{row[0]}</th>' + "".join(f"<td>{c}</td>" for c in row[1:])
        body.append(f"<tr{key}>{cells}</tr>")
    caption_html = f"<caption>{esc(caption)}</caption>" if caption else ""
    return (f'<table class="data" data-table="{esc(name)}">{caption_html}<thead><tr>{head}'
            f"</tr></thead><tbody>{''.join(body)}</tbody></table>")


def _figure(chart: str, name: str, caption: str = "", **data: str) -> str:
    attributes = "".join(f' data-{k}="{esc(v)}"' for k, v in data.items())
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
        ("run", data.run_id),
        ("state", state + (" — partial report" if data.partial else "")),
        ("engine", str(status.get("engine", config.comm_args.backend))),
        ("devices", f"{len(devices)}: " + ", ".join(client_label(x) for x in devices)),
        ("rounds", f"{len(data.rounds)} of {total} completed"),
        ("optimiser", f"{t.federated_optimizer} (clients: {t.client_optimizer}, "
                      f"lr {format_number(t.learning_rate)}, {t.epochs} epoch(s)/round)"),
        ("dataset", config.data_args.dataset),
        ("detection", f"threshold {d.threshold_mode}, k = {format_number(d.threshold_k)}, "
                      f"window {d.describe_window()}"),
        ("finished", str(finished) if finished else "not finished"),
        ("last update", str(status.get("updated_at", "—"))),
    ]
    facts_html = "".join(f'<div data-fact="{esc(k)}"><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>'
                         for k, v in facts)
    parts = [f"<header><h1>Run report <span class=\"run-id\">{esc(data.run_id)}</span></h1>",
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
    devices = data.devices()
    colors = _device_colors(devices)
    per_round = _round_thresholds(data.rounds)
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
                       x_integer=True, x_domain=(1.0, total), y_log=y_log,
                       empty_message="no thresholds yet (set when the run finishes)")
    if per_round:
        note = "Thresholds set after each evaluated round; dashed: the final thresholds."
    elif data.config.validation_args.frequency_of_the_test and _evaluated(data.rounds):
        note = ("Per-round thresholds are absent: the evaluated rounds in metrics.jsonl record "
                "pooled metrics but no thresholds. Dashed: the final thresholds (results.json).")
    else:
        note = ("Per-round thresholds are absent: rounds were not evaluated during training "
                "(validation_args.frequency_of_the_test = "
                f"{data.config.validation_args.frequency_of_the_test}). "
                "Dashed: the final thresholds (results.json).")
    return _figure(chart, "thresholds", note, **{"per-round": "yes" if per_round else "no"})


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
    for key, title in (("recall", "True-positive rate (TPR) per device"),
                       ("fpr", "False-positive rate (FPR) per device")):
        series = [BarSeries(kind, [_metric(data.device_metrics(d), kind, key) for d in devices]
                            + [_metric(data.pooled_metrics(), kind, key)], label, color)
                  for kind, label, color in (("rows", "per row", "#4e79a7"),
                                             ("window_vote", "window vote",
                                              "#f28e2b"))]
        chart = bar_chart(groups, series, title=title, y_label=key.upper().replace(
            "RECALL", "TPR"), y_percent=True, y_max=1.0 if key == "recall" else None)
        per_metric.append(_figure(chart, f"bars-{'tpr' if key == 'recall' else 'fpr'}"))
    return _section("devices", "Detection per device", table,
                    '<div class="charts">' + "\n".join(per_metric) + "</div>")


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
    if stats:
        benign = ErrorStats.pool(b for b, _ in stats.values())
        attack = ErrorStats.pool(a for _, a in stats.values())
        curves.append((POOLED, "all devices", roc_curve(benign, attack),
                       finite_number(data.pooled_metrics().get("roc_auc"))))
    for name, label, curve, reported in curves:
        rows.append([esc(label) if name != POOLED else "<strong>all devices</strong>",
                     esc(_auc_text(curve.auc if curve else None)), esc(_auc_text(reported))])
        if curve is None:
            continue
        series.append(Series(name, list(zip(curve.fpr.tolist(), curve.tpr.tolist(),
                                            strict=True)),
                             f"{label} (AUC {curve.auc:.4f})",
                             POOLED_COLOR if name == POOLED else colors.get(name, ""),
                             emphasis=name == POOLED, data={"auc": repr(curve.auc)}))
    chart = roc_chart(series, title="ROC curves per device and pooled",
                      description="Threshold swept over the score histogram bin edges.")
    table = _table(["device", "AUC of the curve", "AUC in results.json"], rows, name="roc",
                   row_keys=[c[0] for c in curves],
                   caption="The curves sweep the threshold over the 800 log-spaced bin edges "
                           "of the devices' benign and attack score histograms.")
    return _section("roc", "ROC curves", '<div class="charts">' + _figure(chart, "roc")
                    + f"<div>{table}</div></div>")


def _histograms_section(data: RunData) -> str:
    if data.partial:
        return _section("scores", "Score distributions",
                        _note("Score histograms appear when the run finishes.", "scores"))
    stats = data.error_stats()
    thresholds = data.thresholds().get("per_device") or {}
    edges = error_bin_edges().tolist()
    figures = []
    for device, (benign, attack) in stats.items():
        threshold = finite_number(thresholds.get(device)) or finite_number(
            data.device_metrics(device).get("threshold"))
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
    return _section("scores", "Score distributions",
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
nav a { margin-right: .9rem; color: #245; }
dl.facts { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr));
  gap: .3rem 1.2rem; margin: 0 0 1rem; }
dl.facts div { display: flex; gap: .5rem; } dt { color: #666; min-width: 5.5rem; }
dd { margin: 0; font-weight: 500; }
.banner { background: #fff4d6; border: 1px solid #e6c25a; padding: .6rem .8rem;
  border-radius: 4px; }
.note { color: #555; font-size: .92rem; }
table.data { border-collapse: collapse; margin: .6rem 0 1rem; font-variant-numeric: tabular-nums;
  font-size: .92rem; }
table.data caption { caption-side: bottom; text-align: left; color: #666; font-size: .85rem;
  padding-top: .3rem; }
table.data th, table.data td { padding: .25rem .6rem; border-bottom: 1px solid #eee;
  text-align: right; }
table.data th:first-child { text-align: left; white-space: nowrap; }
table.data thead th { border-bottom-color: #bbb; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr));
  gap: 1rem 1.5rem; }
.charts.small { grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); }
figure { margin: 0; } figcaption { color: #555; font-size: .85rem; }
svg.chart { width: 100%; height: auto; max-width: 760px; display: block; }
footer { margin-top: 2.5rem; color: #777; font-size: .85rem; }
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
            f"{_pct(_metric(pooled, 'window_vote', 'f1'))}, TPR "
            f"{_pct(_metric(pooled, 'window_vote', 'recall'))}, FPR "
            f"{_pct(_metric(pooled, 'window_vote', 'fpr'))}; ROC AUC "
            f"{_auc_text(finite_number(pooled.get('roc_auc')))}")
