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
from fediot.core.federated.privacy import describe as describe_privacy
from fediot.engines.run_folder import RunView, find_run, finite_number, list_runs
from fediot.faces.cli.app import app, console, fail

runs_app = typer.Typer(help="Run folders: list them (default) or show one.")
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
def runs_callback(ctx: typer.Context, runs_dir: RunsDirOption = None) -> None:
    """List the runs under --runs-dir, or `show` one."""
    ctx.obj = runs_dir
    if ctx.invoked_subcommand is None:
        _list(_runs_dir(ctx, runs_dir))


@runs_app.command("list")
def list_command(ctx: typer.Context, runs_dir: RunsDirOption = None) -> None:
    """One line per run: engine, state, round, devices, pooled F1 / TPR / FPR, last change."""
    _list(_runs_dir(ctx, runs_dir))


def _list(runs_dir: Path) -> None:
    try:
        views = list_runs(runs_dir)
    except FediotError as error:
        raise fail(str(error)) from None
    if not views:
        console.print(f"no runs under {runs_dir}")
        return
    table = Table(title=f"runs under {runs_dir}", box=box.SIMPLE_HEAD, pad_edge=False,
                  collapse_padding=True,
                  caption="oldest first; F1 / TPR / FPR: pooled, with the window vote, percent")
    table.add_column("run", overflow="fold", min_width=12, ratio=1)
    for name in ("engine", "state", "round", "devices", "F1", "TPR", "FPR"):
        table.add_column(name, no_wrap=True, justify="right" if name in (
            "round", "devices", "F1", "TPR", "FPR") else "left")
    table.add_column("updated", min_width=5)  # date above time in a narrow terminal
    for view in views:
        table.add_row(*_list_row(view))
    console.print(table)


def _list_row(view: RunView) -> list[str]:
    """A run's cells; a run whose files cannot be read says so instead of stopping the list."""
    try:
        status = view.status() or {}
        results = view.results()
        config = view.config()
    except FediotError as error:
        return [escape(view.run_id), "?", "unreadable", "", "", "", "", "",
                escape(str(error))]
    state = status.get("state") or ("finished" if results else "—")
    total = status.get("total_rounds", config.train_args.comm_round)
    done = results["rounds"] if results and "rounds" in results else status.get("round", 0)
    devices = len(status["devices"]) if status.get("devices") else (
        config.train_args.client_num_in_total)
    pooled = _pooled(results) or {}
    style = {"failed": "red", "interrupted": "magenta", "running": "yellow"}.get(state, "")
    return [escape(view.run_id), str(status.get("engine", config.comm_args.backend)),
            f"[{style}]{state}[/]" if style else state, f"{done}/{total}", str(devices),
            _pct(pooled.get("f1")), _pct(pooled.get("recall")), _pct(pooled.get("fpr")),
            _when(view.updated_at(), short=True)]


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
        f"[bold]{escape(view.run_id)}[/]  {escape(str(view.root))}\n"
        f"state {status.get('state', '—')}, phase {status.get('phase', '—')}, round "
        f"{status.get('round', len(rounds))}/{t.comm_round}, engine "
        f"{status.get('engine', config.comm_args.backend)}, updated {_when(view.updated_at())}",
        highlight=False)
    if status.get("state") == "interrupted":
        console.print(f"[magenta]interrupted[/]: recorded as {status.get('recorded_state')}, but "
                      f"{escape(str(status.get('interrupted_because')))}", highlight=False)
    console.print(
        f"dataset {d.dataset}, {t.client_num_in_total} devices ({t.client_num_per_round} per "
        f"round), {t.comm_round} rounds × {t.epochs} epoch(s), {t.federated_optimizer} + "
        f"{t.client_optimizer}, learning rate {t.learning_rate:g} ({t.lr_schedule}), batch "
        f"{t.batch_size}, threshold {config.detection_args.threshold_mode}, window "
        f"{config.detection_args.describe_window()}, seed {config.common_args.random_seed}",
        highlight=False)
    if rounds:
        console.print(_rounds_table(rounds))
    else:
        console.print("no completed round yet")
    console.print(_devices_table(rounds, results))
    rejected = _rejected_counts(status, results)
    if rejected:
        console.print("[red]rejected replies[/]: " + ", ".join(
            f"{escape(client_label(device))} {count}" for device, count in rejected.items()),
            highlight=False)
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
            console.print(describe_privacy(privacy), highlight=False)
    if logs:
        console.print(_logs_table(lines[-logs:], len(lines)))


def _rounds_table(rounds: list[dict[str, Any]]) -> Table:
    table = Table(title="rounds", caption="bytes: summed over the round's devices")
    for name in ("round", "devices", "loss", "validation", "learning rate", "seconds",
                 "bytes down", "bytes up", "F1·w"):
        table.add_column(name, justify="right", no_wrap=True)
    for r in rounds:
        system = r.get("system") or {}
        down = sum(s.get("bytes_down", 0) for s in system.values())
        up = sum(s.get("bytes_up", 0) for s in system.values())
        evaluation = r.get("evaluation") or {}
        table.add_row(str(r["round"]), f"{len(r.get('answered', []))}/{len(r.get('clients', []))}",
                      f"{r['train_loss']:.5f}",
                      "—" if (v := finite_number(r.get("validation_loss"))) is None
                      else f"{v:.5f}",
                      f"{r['learning_rate']:.3g}",
                      f"{r['seconds']:.2f}", _size(down), _size(up),
                      _pct(evaluation.get("window_vote", {}).get("f1")))
    return table


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
                   results: dict[str, Any] | None) -> Table:
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
    table = Table(title="devices", caption="TPR / FPR / F1: percent, with the window vote; "
                  "time, CPU and bytes summed over the rounds trained; memory: peak")
    table.add_column("device", no_wrap=True)
    for name in ("TPR·w", "FPR·w", "F1·w", "rounds", "time s", "CPU s", "memory",
                 "bytes down", "bytes up"):
        table.add_column(name, justify="right", no_wrap=True)
    for device in sorted(set(totals) | set(evaluated)):
        vote = evaluated.get(device, {}).get("window_vote", {})
        spent = totals.get(device)
        figures = ["—"] * 6 if spent is None else [
            str(int(spent["rounds"])), f"{spent['wall_seconds']:.2f}",
            f"{spent['cpu_seconds']:.2f}", _size(spent["peak_rss_bytes"]),
            _size(spent["bytes_down"]), _size(spent["bytes_up"])]
        table.add_row(escape(client_label(device)), _pct(vote.get("recall")),
                      _pct(vote.get("fpr")), _pct(vote.get("f1")), *figures)
    return table


def _logs_table(lines: list[dict[str, Any]], total: int) -> Table:
    table = Table(title=f"last {len(lines)} of {total} log lines")
    for name in ("time", "device", "round", "step", "level"):
        table.add_column(name, no_wrap=True)
    table.add_column("message", overflow="fold")
    for line in lines:
        level = str(line.get("level", ""))
        style = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}.get(level)
        table.add_row(str(line.get("time", ""))[11:23], escape(client_label(
            str(line.get("device", "")))), "—" if line.get("round") is None else
            str(line["round"]), str(line.get("step", "")), level,
            escape(str(line.get("message", ""))), style=style)
    return table
