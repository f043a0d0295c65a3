"""``fediot runs``: the run folders under ``--runs-dir`` (a table), and ``fediot runs show ID``
(one run: configuration, rounds, devices with their metrics and system figures, last log
lines). Everything is read through :class:`~fediot.engines.run_folder.RunView`, so a run still
in progress shows as far as it got."""

from __future__ import annotations

import contextlib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from fediot.core.catalog import client_label
from fediot.core.errors import FediotError
from fediot.engines.run_folder import (
    RunView,
    describe_excluded,
    excluded_devices,
    find_run,
    finite_number,
    list_runs,
)
from fediot.faces.cli.app import app, console, fail
from fediot.faces.cli.lazy import group_help
from fediot.faces.cli.runs_common import interruption_text
from fediot.faces.cli.tables import (
    Column,
    FormatOption,
    OutputFormat,
    fitted_table,
    print_table,
    write_records,
)

runs_app = typer.Typer(help=group_help("runs"))
app.add_typer(runs_app, name="runs")

RunsDirOption = Annotated[Path | None, typer.Option(
    "--runs-dir", help="where run folders are (default ./runs)")]


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * float(value):.2f}"


def _size(value: float | None) -> str:
    """Bytes in B / kB / MB / GB (powers of 1000)."""
    if value is None:
        return "—"
    for unit in ("B", "kB", "MB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _when(stamp: float, short: bool = False) -> str:
    """Local time of a POSIX time stamp (``short``: without the year and seconds)."""
    return datetime.fromtimestamp(stamp).astimezone().strftime(
        "%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S")


def _pooled(results: dict[str, Any] | None) -> dict[str, Any] | None:
    """The pooled metrics with the window vote of a finished run."""
    if not results:
        return None
    vote = results.get("evaluation", {}).get("pooled", {}).get("window_vote")
    return vote if isinstance(vote, dict) else None


def _runs_dir(ctx: typer.Context, runs_dir: Path | None) -> Path:
    return runs_dir or (ctx.obj if isinstance(ctx.obj, Path) else None) or Path("runs")


@runs_app.callback(invoke_without_command=True)
def runs_callback(ctx: typer.Context, runs_dir: RunsDirOption = None,
                  output_format: FormatOption = OutputFormat.table) -> None:
    """List the runs under --runs-dir, or `show` one."""
    ctx.obj = runs_dir
    if ctx.invoked_subcommand is None:
        _list(_runs_dir(ctx, runs_dir), output_format)


@runs_app.command("list")
def list_command(ctx: typer.Context, runs_dir: RunsDirOption = None,
                 output_format: FormatOption = OutputFormat.table) -> None:
    """One line per run: engine, state, round, devices, pooled F1 / TPR / FPR, last change."""
    _list(_runs_dir(ctx, runs_dir), output_format)


LIST_COLUMNS = (Column("run", right=False), Column("engine", right=False, drop=3),
                Column("state", right=False), Column("round"), Column("devices", drop=2),
                Column("F1"), Column("TPR", drop=1), Column("FPR", drop=1),
                Column("updated", right=False, drop=4))


def _list(runs_dir: Path, output_format: OutputFormat = OutputFormat.table) -> None:
    try:
        views = list_runs(runs_dir)
    except FediotError as error:
        raise fail(str(error)) from None
    records = [_list_record(view) for view in views]
    if output_format is not OutputFormat.table:
        write_records(records, output_format)
        return
    if not views:
        console.print(f"no runs under {runs_dir}")
        return
    styles = {"failed": "red", "interrupted": "magenta", "running": "yellow"}
    rows = []
    for record in records:
        state = str(record["state"])
        style = styles.get(state, "")
        rows.append([
            escape(record["run"]), escape(str(record["engine"])),
            f"[{style}]{escape(state)}[/]" if style else escape(state),
            "" if record["total_rounds"] is None else f"{record['round']}/{record['total_rounds']}",
            "" if record["devices"] is None else str(record["devices"]),
            _pct(record["f1"]), _pct(record["tpr"]), _pct(record["fpr"]),
            _when(datetime.fromisoformat(record["updated_at"]).timestamp(), short=True)])
    print_table(console, LIST_COLUMNS, rows, title=f"runs under {escape(str(runs_dir))}",
                box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True,
                caption="oldest first (by start); F1 / TPR / FPR: pooled, with the window "
                        "vote, percent")
    unreadable = [r for r in records if r.get("error")]
    for record in unreadable:
        console.print(f"[red]{escape(record['run'])}[/]: {escape(str(record['error']))}",
                      highlight=False, soft_wrap=True)


def _list_record(view: RunView) -> dict[str, Any]:
    """A run's figures (fractions, not percent); a run whose files cannot be read says so
    (``error``) instead of stopping the list."""
    record: dict[str, Any] = {
        "run": view.run_id, "engine": "?", "state": "unreadable", "round": None,
        "total_rounds": None, "devices": None, "f1": None, "tpr": None, "fpr": None,
        "started_at": view.started_at().isoformat(),
        "updated_at": datetime.fromtimestamp(view.updated_at()).astimezone().isoformat(
            timespec="seconds")}
    try:
        status = view.status() or {}
        results = view.results()
        config = view.config()
    except FediotError as error:
        record["error"] = str(error)
        return record
    pooled = _pooled(results) or {}
    record.update(
        engine=str(status.get("engine", config.comm_args.backend)),
        state=status.get("state") or ("finished" if results else "—"),
        round=results["rounds"] if results and "rounds" in results else status.get("round", 0),
        total_rounds=status.get("total_rounds", config.train_args.comm_round),
        devices=len(status["devices"]) if status.get("devices") else (
            config.train_args.client_num_in_total),
        f1=finite_number(pooled.get("f1")), tpr=finite_number(pooled.get("recall")),
        fpr=finite_number(pooled.get("fpr")))
    return record


@runs_app.command("show")
def show_command(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(
        help="run id, unique id prefix, folder path, or 'latest'")],
    runs_dir: RunsDirOption = None,
    logs: Annotated[int, typer.Option("--logs", min=0,
                                      help="how many of the last log lines to show")] = 10,
) -> None:
    """One run: configuration, rounds, devices (metrics and system figures), last log lines."""
    try:
        view = find_run(run, _runs_dir(ctx, runs_dir))
        status = view.status() or {}
        config = view.config()
        rounds = view.rounds()
        results = view.results()
        lines = view.logs()
    except FediotError as error:
        raise fail(str(error)) from None
    t, d = config.train_args, config.data_args
    console.print(
        f"[bold]{escape(view.run_id)}[/]  {escape(str(view.root))}",
        highlight=False, soft_wrap=True)  # the id and path whole, never folded mid-name
    console.print(
        f"state {status.get('state', '—')}, phase {status.get('phase', '—')}, round "
        f"{status.get('round', len(rounds))}/{t.comm_round}, engine "
        f"{status.get('engine', config.comm_args.backend)}, updated {_when(view.updated_at())}",
        highlight=False)
    if status.get("state") == "interrupted":
        console.print(f"[magenta]interrupted[/]: {interruption_text(status)}", highlight=False)
    console.print(
        f"dataset {d.dataset}, {t.client_num_in_total} devices ({t.client_num_per_round} per "
        f"round), {t.comm_round} rounds × {t.epochs} epoch(s), {t.federated_optimizer} + "
        f"{t.client_optimizer}, learning rate {t.learning_rate:g} ({t.lr_schedule}), batch "
        f"{t.batch_size}, threshold {config.detection_args.threshold_mode}, window "
        f"{config.detection_args.describe_window()}, seed {config.common_args.random_seed}",
        highlight=False)
    if rounds:
        _print(*_rounds_table(rounds))
    else:
        console.print("no completed round yet")
    _print(*_devices_table(rounds, results))
    rejected = _rejected_counts(status, results)
    if rejected:
        console.print("[red]rejected replies[/]: " + ", ".join(
            f"{escape(client_label(device))} {count}" for device, count in rejected.items()),
            highlight=False)
    left_out = describe_excluded(excluded_devices(results))
    if left_out:
        console.print(f"[yellow]{escape(left_out)}[/]", highlight=False)
    pooled = _pooled(results)
    if pooled is not None:
        console.print(f"[bold]all devices[/] (window vote): F1 {_pct(pooled.get('f1'))} %, "
                      f"TPR {_pct(pooled.get('recall'))} %, FPR {_pct(pooled.get('fpr'))} %",
                      highlight=False)
    if results is not None and "model_round" in results:
        data = results.get("devices_data") or {}
        console.print(
            f"model of round {results['model_round']} of {results.get('rounds', '—')}"
            f"{' (stopped early: validation loss flat)' if results.get('stopped_early') else ''}"
            f"; warm-up rows dropped: "
            f"{sum(int(v.get('warmup_train', 0)) for v in data.values()):,} training, "
            f"{sum(int(v.get('warmup_opt', 0)) for v in data.values()):,} threshold",
            highlight=False)
    privacy = results.get("privacy") if results is not None else None
    if isinstance(privacy, dict):
        with contextlib.suppress(KeyError, TypeError, ValueError):  # a foreign results.json
            from fediot.core.federated.privacy import describe as describe_privacy  # torch

            console.print(describe_privacy(privacy), highlight=False)
    if logs:
        _print(*_logs_table(lines[-logs:], len(lines)))


def _print(table: Table, width: int) -> None:
    console.print(table, width=width)


def _rounds_table(rounds: list[dict[str, Any]]) -> tuple[Table, int]:
    """The rounds table and the width to print it at."""
    columns = [Column("round"), Column("devices", drop=3), Column("loss"),
               Column("validation", drop=1), Column("learning rate", drop=5),
               Column("seconds", drop=2), Column("bytes down", drop=4),
               Column("bytes up", drop=4), Column("F1·w")]
    rows = []
    for r in rounds:
        system = r.get("system") or {}
        down = sum(s.get("bytes_down", 0) for s in system.values())
        up = sum(s.get("bytes_up", 0) for s in system.values())
        evaluation = r.get("evaluation") or {}
        rows.append([str(r["round"]),
                     f"{len(r.get('answered', []))}/{len(r.get('clients', []))}",
                     f"{r['train_loss']:.5f}",
                     "—" if (v := finite_number(r.get("validation_loss"))) is None
                     else f"{v:.5f}",
                     f"{r['learning_rate']:.3g}",
                     f"{r['seconds']:.2f}", _size(down), _size(up),
                     _pct(evaluation.get("window_vote", {}).get("f1"))])
    table, width = fitted_table(console, columns, rows, title="rounds",
                                caption="bytes: summed over the round's devices")
    return table, width


def _rejected_counts(status: dict[str, Any],
                     results: dict[str, Any] | None) -> dict[str, int]:
    """Client id → rejected replies: from ``results.json`` when the run finished, else from
    ``status.json``."""
    recorded = (results or {}).get("rejected")
    if not isinstance(recorded, dict):
        devices = status.get("devices")
        recorded = {name: info.get("rejected") for name, info in devices.items()
                    if isinstance(info, dict)} if isinstance(devices, dict) else {}
    return {str(name): count for name, count in recorded.items()
            if isinstance(count, int) and not isinstance(count, bool) and count > 0}


def _devices_table(rounds: list[dict[str, Any]],
                   results: dict[str, Any] | None) -> tuple[Table, int]:
    """Per device: final metrics (when finished) and its training figures summed over rounds
    (time, CPU, bytes) or their maximum (peak memory)."""
    totals: dict[str, dict[str, float]] = {}
    for r in rounds:
        for device, figures in (r.get("system") or {}).items():
            total = totals.setdefault(device, {"rounds": 0, "wall_seconds": 0.0,
                                               "cpu_seconds": 0.0, "peak_rss_bytes": 0.0,
                                               "bytes_down": 0.0, "bytes_up": 0.0})
            total["rounds"] += 1
            for key in ("wall_seconds", "cpu_seconds", "bytes_down", "bytes_up"):
                total[key] += float(figures.get(key, 0))
            total["peak_rss_bytes"] = max(total["peak_rss_bytes"],
                                          float(figures.get("peak_rss_bytes", 0)))
    evaluated = (results or {}).get("evaluation", {}).get("devices", {})
    columns = [Column("device", right=False), Column("TPR·w"), Column("FPR·w"),
               Column("F1·w"), Column("rounds", drop=2), Column("time s", drop=1),
               Column("CPU s", drop=3), Column("memory", drop=4),
               Column("bytes down", drop=5), Column("bytes up", drop=5)]
    rows = []
    for device in sorted(set(totals) | set(evaluated)):
        vote = evaluated.get(device, {}).get("window_vote", {})
        spent = totals.get(device)
        figures = ["—"] * 6 if spent is None else [
            str(int(spent["rounds"])), f"{spent['wall_seconds']:.2f}",
            f"{spent['cpu_seconds']:.2f}", _size(spent["peak_rss_bytes"]),
            _size(spent["bytes_down"]), _size(spent["bytes_up"])]
        rows.append([escape(client_label(device)), _pct(vote.get("recall")),
                     _pct(vote.get("fpr")), _pct(vote.get("f1")), *figures])
    table, width = fitted_table(
        console, columns, rows, title="devices",
        caption="TPR / FPR / F1: percent, with the window vote; time, CPU and bytes summed "
                "over the rounds trained; memory: peak")
    return table, width


def _logs_table(lines: list[dict[str, Any]], total: int) -> tuple[Table, int]:
    """One line per log line: the message (text) is cut with an ellipsis to fit."""
    columns = [Column("time"), Column("device", right=False), Column("round", drop=2),
               Column("step", right=False, drop=1), Column("level", right=False, drop=3),
               Column("message", kind="clip", right=False)]
    rows, styles = [], []
    for line in lines:
        level = str(line.get("level", ""))
        styles.append({"WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}.get(level))
        rows.append([str(line.get("time", ""))[11:23], escape(client_label(
            str(line.get("device", "")))), "—" if line.get("round") is None else
            str(line["round"]), escape(str(line.get("step", ""))), escape(level),
            escape(" ".join(str(line.get("message", "")).split()))])
    table, width = fitted_table(console, columns, rows, styles,
                                title=f"last {len(lines)} of {total} log lines")
    return table, width
