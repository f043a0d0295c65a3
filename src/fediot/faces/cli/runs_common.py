"""What the run commands share: config flags, a Rich progress observer, result tables."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fediot.core.catalog import client_label
from fediot.core.config import CHOICES, Config, ConfigError, load_config
from fediot.core.safe_yaml import UnsafeInputError, load_yaml
from fediot.faces.cli.tables import Column, fitted_table

if TYPE_CHECKING:  # these import torch: the commands check their input before loading it
    from fediot.core.federated.evaluation import EvaluationSummary
    from fediot.core.federated.messages import LogLine
    from fediot.core.federated.server import RoundRecord

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c",
                                                   help="fedml_config.yaml to start from")]
RoundsOption = Annotated[int | None, typer.Option("--rounds", help="train_args.comm_round")]
WorkersOption = Annotated[int | None, typer.Option("--workers",
                                                   help="device_args.worker_num")]
ClientsOption = Annotated[int | None, typer.Option("--clients",
                                                   help="train_args.client_num_in_total")]
PerRoundOption = Annotated[int | None, typer.Option("--per-round",
                                                    help="train_args.client_num_per_round")]


def interruption_text(status: dict[str, Any]) -> str:
    """Why an ``interrupted`` run is: ``recorded as running, but its process … is gone`` for a
    run found dead, or the reason its own process recorded when a signal stopped it."""
    recorded = status.get("recorded_state")
    because = escape(str(status.get("interrupted_because") or "no reason recorded"))
    return f"recorded as {escape(str(recorded))}, but {because}" if recorded else because


def key_help(key: str, note: str = "") -> str:
    """A flag's help: the configuration key it sets and the values it takes, listed from
    :data:`fediot.core.config.CHOICES` (never by hand), then ``note``."""
    return f"{key}: {', '.join(CHOICES[key])}{note}"


OptimizerOption = Annotated[str | None, typer.Option(
    "--optimizer", help=key_help("train_args.federated_optimizer"))]
DatasetOption = Annotated[str | None, typer.Option(
    "--dataset", help=key_help("data_args.dataset"))]
DataDirOption = Annotated[str | None, typer.Option("--data-dir",
                                                   help="data_args.data_cache_dir")]
SeedOption = Annotated[int | None, typer.Option("--seed", help="common_args.random_seed")]
OutOption = Annotated[str | None, typer.Option("--runs-dir", help="tracking_args.log_file_dir")]
EngineOption = Annotated[str | None, typer.Option(
    "--engine", help=key_help("comm_args.backend", " (MPI: the seed's name for inprocess; "
                                                   "vectorised: devices trained together as "
                                                   "stacked tensors; ray: Flower's simulation "
                                                   "runtime)"))]
RayAddressOption = Annotated[str | None, typer.Option(
    "--ray-address", help="comm_args.ray_address: attach to this Ray cluster")]
SetOption = Annotated[list[str] | None, typer.Option(
    "--set", help="any key: --set train_args.epochs=2 (repeatable)")]


def resolve_config(config_path: Path | None, flags: dict[str, Any],
                   sets: list[str] | None) -> Config:
    """The file (or defaults), then ``--set`` pairs, then the dedicated flags."""
    config = load_config(config_path) if config_path else Config()
    overrides: dict[str, Any] = {}
    for item in sets or []:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        try:  # the value is YAML: the same limits as a configuration file
            overrides[key.strip()] = load_yaml(text, f"--set {key.strip()}")
        except UnsafeInputError as error:
            raise ConfigError(str(error)) from None
    overrides.update({k: v for k, v in flags.items() if v is not None})
    if overrides.get("train_args.client_num_in_total") and not any(
        k == "train_args.client_num_per_round" for k in overrides
    ):  # asking for fewer devices shrinks the round too, unless told otherwise
        overrides["train_args.client_num_per_round"] = min(
            config.train_args.client_num_per_round,
            overrides["train_args.client_num_in_total"])
    return config.with_overrides(overrides) if overrides else config


class ProgressObserver:
    """Draws the run's phases and rounds with Rich; devices' warnings and errors are printed
    above the bar (every line is in the run folder's ``logs.jsonl``)."""

    def __init__(self, progress: Progress, rounds: int) -> None:
        self.progress = progress
        self.task = progress.add_task("starting", total=rounds)
        self.last_loss: float | None = None

    def on_phase(self, phase: str, detail: str) -> None:
        if phase == "resume":
            self.progress.update(self.task, completed=int(detail.split()[-1]))
            return
        if phase in ("lost", "excluded"):
            return  # each device's line (lost, left out) arrives through on_logs
        if phase == "rejected":
            return  # the server logs it (a warning), which progress_bar prints above the bar
        label = {"data": "", "scaler": "pooling scaler statistics", "round": "round",
                 "threshold": "thresholds", "evaluate": "evaluating"}.get(phase, phase)
        loss = f"  loss {self.last_loss:.4f}" if self.last_loss is not None else ""
        self.progress.update(self.task, description=f"{label} {detail}{loss}")

    def on_round(self, record: RoundRecord) -> None:
        self.last_loss = record.train_loss
        self.progress.advance(self.task)

    def on_logs(self, lines: Sequence[LogLine]) -> None:
        for line in lines:
            if line.level not in ("DEBUG", "INFO"):
                style = "red" if line.level in ("ERROR", "CRITICAL") else "yellow"
                self.progress.console.print(
                    f"[{style}]{escape(client_label(line.device))} ({line.step}):[/] "
                    f"{escape(line.message)}", highlight=False)


class _ConsoleLogHandler(logging.Handler):
    """FedIoT's warnings and errors printed on ``console`` (above a progress bar): without a
    handler Python's last-resort one writes them bare to stderr. A device's own lines (what
    a :class:`LogCapture` takes) are left to the observer's ``on_logs``."""

    def __init__(self, console: Console, logger: logging.Logger) -> None:
        super().__init__(logging.WARNING)
        self.console, self.logger = console, logger

    def emit(self, record: logging.LogRecord) -> None:
        from fediot.core.federated.client import LogCapture

        if any(isinstance(h, LogCapture) and h.takes(record) for h in self.logger.handlers):
            return
        style = "red" if record.levelno >= logging.ERROR else "yellow"
        self.console.print(f"[{style}]{escape(record.getMessage())}[/]", highlight=False)


@contextmanager
def progress_bar(console: Console) -> Iterator[Progress]:
    """A run's progress bar on ``console``; while it shows, FedIoT's warnings (a rejected
    reply, …) are printed above it, once each."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(),
                        TextColumn("{task.completed}/{task.total} rounds"),
                        TimeElapsedColumn(), console=console, transient=True)
    logger = logging.getLogger("fediot")
    handler = _ConsoleLogHandler(progress.console, logger)
    logger.addHandler(handler)
    try:
        with progress:
            yield progress
    finally:
        logger.removeHandler(handler)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}"


RESULT_COLUMNS: tuple[Column, ...] = (
    Column("device", right=False), Column("TPR", drop=5), Column("FPR", drop=4), Column("F1"),
    Column("TPR·w", drop=3), Column("FPR·w", drop=2), Column("F1·w"), Column("AUC"))


def results_records(summary: EvaluationSummary) -> list[dict[str, Any]]:
    """Per device, then ``all devices`` (``device`` ``None``): the figures of
    :func:`results_table` as fractions (``*_w``: with the window vote)."""
    def record(device: str | None, metrics: dict[str, Any]) -> dict[str, Any]:
        rows, vote = metrics["rows"], metrics["window_vote"]
        return {"device": device, "label": client_label(device) if device else "all devices",
                "tpr": rows["recall"], "fpr": rows["fpr"], "f1": rows["f1"],
                "tpr_w": vote["recall"], "fpr_w": vote["fpr"], "f1_w": vote["f1"],
                "auc": metrics["roc_auc"]}

    return [*(record(device, metrics) for device, metrics in summary.devices.items()),
            record(None, summary.pooled)]


def results_table(summary: EvaluationSummary, title: str,
                  console: Console | None = None) -> tuple[Table, int]:
    """Per-device TPR / FPR / F1 row by row and with the window vote, plus ROC AUC, fitted to
    ``console`` (default: the CLI's): the table and the width to print it at."""
    if console is None:
        from fediot.faces.cli.app import console as cli_console
        console = cli_console
    rows, styles = [], []
    for r in results_records(summary):
        auc = r["auc"]
        rows.append([escape(r["label"]), _pct(r["tpr"]), _pct(r["fpr"]), _pct(r["f1"]),
                     _pct(r["tpr_w"]), _pct(r["fpr_w"]), _pct(r["f1_w"]),
                     "—" if auc is None else f"{auc:.3f}"])
        styles.append("bold" if r["device"] is None else None)
    return fitted_table(console, RESULT_COLUMNS, rows, styles, title=escape(title),
                        caption="percent; ·w: with the window vote; "
                                "AUC: area under the ROC curve")
