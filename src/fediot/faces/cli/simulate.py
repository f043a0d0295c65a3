"""``fediot simulate`` and ``fediot compare``: federated runs on this machine.

The configuration (and an N-BaIoT folder's layout) is checked before torch, Ray or Flower is
imported: a bad input costs a second and one error line, not the heavy imports first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from fediot.core.catalog import client_label
from fediot.core.config import Config, check_simulation
from fediot.core.data.layouts import open_dataset
from fediot.core.errors import FediotError
from fediot.core.federated.devices import dataset_root
from fediot.faces.cli.app import app, console, err_console, fail
from fediot.faces.cli.dashboard import (
    DashboardHostOption,
    DashboardOption,
    ExitWhenDoneOption,
    live_dashboard,
)
from fediot.faces.cli.lazy import command
from fediot.faces.cli.runs_common import (
    ClientsOption,
    ConfigOption,
    DataDirOption,
    DatasetOption,
    EngineOption,
    OptimizerOption,
    OutOption,
    PerRoundOption,
    ProgressObserver,
    RayAddressOption,
    RoundsOption,
    SeedOption,
    SetOption,
    WorkersOption,
    progress_bar,
    resolve_config,
    results_records,
    results_table,
)
from fediot.faces.cli.tables import (
    Column,
    FormatOption,
    OutputFormat,
    print_table,
    write_records,
)

if TYPE_CHECKING:
    from fediot.core.federated.evaluation import EvaluationSummary
    from fediot.core.federated.server import RunResult
    from fediot.engines.run_folder import RunFolder


def _config(config: Any, rounds: Any, workers: Any, clients: Any, per_round: Any,
            optimizer: Any, dataset: Any, data_dir: Any, seed: Any, runs_dir: Any,
            sets: Any, engine: Any = None, ray_address: Any = None) -> Config:
    return resolve_config(config, {
        "comm_args.backend": engine,
        "comm_args.ray_address": ray_address,
        "train_args.comm_round": rounds,
        "device_args.worker_num": workers,
        "train_args.client_num_in_total": clients,
        "train_args.client_num_per_round": per_round,
        "train_args.federated_optimizer": optimizer,
        "data_args.dataset": dataset,
        "data_args.data_cache_dir": data_dir,
        "common_args.random_seed": seed,
        "tracking_args.log_file_dir": runs_dir,
    }, sets)


def check_inputs(config: Config) -> None:
    """What can be checked of a run's input without torch or Flower: the configuration is
    already checked; here that it is meant for this machine, and the N-BaIoT folder's layout
    (the testbed is built later, on use)."""
    check_simulation(config)
    if config.data_args.dataset == "N-BaIoT":
        open_dataset(dataset_root(config))


def _describe(config: Config) -> str:
    t, d = config.train_args, config.data_args
    return (f"{t.client_num_in_total} devices ({t.client_num_per_round} per round), "
            f"{t.comm_round} rounds × {t.epochs} epoch, {t.federated_optimizer}, "
            f"dataset {d.dataset}, {config.device_args.worker_num} worker(s), "
            f"engine {config.comm_args.backend}")


@command(app, "simulate")
def simulate_command(
    config: ConfigOption = None, rounds: RoundsOption = None, workers: WorkersOption = None,
    clients: ClientsOption = None, per_round: PerRoundOption = None,
    optimizer: OptimizerOption = None, dataset: DatasetOption = None,
    data_dir: DataDirOption = None, seed: SeedOption = None, runs_dir: OutOption = None,
    engine: EngineOption = None, ray_address: RayAddressOption = None, set_: SetOption = None,
    resume: Annotated[Path | None, typer.Option(
        help="continue the interrupted run in this run folder (its own config applies)")] = None,
    dashboard: DashboardOption = None, dashboard_host: DashboardHostOption = "127.0.0.1",
    exit_when_done: ExitWhenDoneOption = False,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """With --dashboard the dashboard keeps showing the finished run until Ctrl-C, unless
    --exit-when-done."""
    chatter = console if output_format is OutputFormat.table else err_console
    with ExitStack() as dashboard_serving:  # holds the dashboard open past the results
        try:
            if resume is not None:
                from fediot.engines.run_folder import RunFolder

                cfg = RunFolder(resume).load_config()
            else:
                cfg = _config(config, rounds, workers, clients, per_round, optimizer, dataset,
                              data_dir, seed, runs_dir, set_, engine, ray_address)
            check_inputs(cfg)
            from fediot.engines.simulation import simulate  # torch, and Flower for engine ray

            chatter.print(f"[bold]FedDetect[/]: {_describe(cfg)}")
            started = time.perf_counter()
            shown = (resume.parent if resume
                     else Path(cfg.tracking_args.log_file_dir).expanduser())
            dashboard_serving.enter_context(
                live_dashboard(shown, dashboard, dashboard_host, exit_when_done, chatter))
            with progress_bar(chatter) as progress:
                result, folder = simulate(
                    cfg, ProgressObserver(progress, cfg.train_args.comm_round), resume=resume)
        except FediotError as error:
            raise fail(str(error)) from None
        _print_results(cfg, result, folder, output_format, chatter, started)


def _print_results(cfg: Config, result: RunResult, folder: RunFolder,
                   output_format: OutputFormat, chatter: Console, started: float) -> None:
    """What ``fediot simulate`` prints at the end (``started``: its ``perf_counter``)."""
    if output_format is OutputFormat.table:
        table, width = results_table(result.evaluation,
                                     f"federated ({cfg.train_args.federated_optimizer}), "
                                     f"window {cfg.detection_args.describe_window()}", console)
        console.print(table, width=width)
    else:
        records = results_records(result.evaluation)
        write_records(records, output_format, {"run": folder.root.name,
                                               "run_folder": str(folder.root),
                                               "devices": records,
                                               "excluded_devices": result.excluded})
    chatter.print(f"thresholds: {cfg.detection_args.threshold_mode}, "
                  f"k = {cfg.detection_args.threshold_k}; "
                  f"{time.perf_counter() - started:.1f} s; run folder: {folder.root}")
    chatter.print(model_choice(result))
    if result.excluded:
        from fediot.engines.run_folder import describe_excluded

        chatter.print(f"[yellow]{escape(describe_excluded(result.excluded))}[/]",
                      highlight=False)
    if result.privacy is not None:
        from fediot.core.federated.privacy import describe as describe_privacy

        chatter.print(describe_privacy(result.privacy), highlight=False)


def model_choice(result: RunResult) -> str:
    """How the run chose its model and what its devices dropped, in one line."""
    ran = len(result.history)
    how = (f"stopped early after {ran} rounds: validation loss flat" if result.stopped_early
           else f"{ran} rounds")
    losses = [r.validation_loss for r in result.history]
    kept = (f"model of round {result.model_round} (lowest validation loss "
            f"{losses[result.model_round - 1]:.4g})"
            if 0 < result.model_round <= ran and losses[result.model_round - 1] is not None
            else f"model of round {result.model_round}")
    train = sum(d.warmup_train for d in result.data.values())
    opt = sum(d.warmup_opt for d in result.data.values())
    return (f"{how}; {kept}; warm-up rows dropped: {train:,} training, {opt:,} threshold "
            f"(of {sum(d.train + d.warmup_train for d in result.data.values()):,} and "
            f"{sum(d.opt + d.warmup_opt for d in result.data.values()):,})")


def _figure(summary: EvaluationSummary, device: str | None, key: str) -> float | None:
    """A window-vote figure (a fraction) of ``device``, the pooled one for ``None``."""
    metrics = summary.pooled if device is None else summary.devices[device]
    value = metrics["window_vote"][key]
    return None if value is None else float(value)


def _f1(summary: EvaluationSummary, device: str | None, key: str) -> str:
    value = _figure(summary, device, key)
    return "—" if value is None else f"{100 * value:.2f}"


@command(app, "compare")
def compare_command(
    config: ConfigOption = None, rounds: RoundsOption = None, workers: WorkersOption = None,
    clients: ClientsOption = None, per_round: PerRoundOption = None,
    optimizer: OptimizerOption = None, dataset: DatasetOption = None,
    data_dir: DataDirOption = None, seed: SeedOption = None, runs_dir: OutOption = None,
    engine: EngineOption = None, ray_address: RayAddressOption = None, set_: SetOption = None,
    dashboard: DashboardOption = None, dashboard_host: DashboardHostOption = "127.0.0.1",
    exit_when_done: ExitWhenDoneOption = False,
    output_format: FormatOption = OutputFormat.table,
) -> None:
    """The options are simulate's (but --resume): --per-round, --engine and --ray-address apply
    to the federated run; centralised and local-only training run in this process.
    """
    chatter = console if output_format is OutputFormat.table else err_console
    with ExitStack() as dashboard_serving:  # holds the dashboard open past the table
        try:
            cfg = _config(config, rounds, workers, clients, per_round, optimizer, dataset,
                          data_dir, seed, runs_dir, set_, engine, ray_address)
            check_inputs(cfg)
            from fediot.engines.simulation import (
                local_summary,
                run_centralised,
                run_local,
                simulate,
            )

            chatter.print(f"[bold]compare[/]: {_describe(cfg)}")
            summaries: dict[str, EvaluationSummary] = {}
            folders: list[RunFolder] = []

            def federated(observer: ProgressObserver) -> EvaluationSummary:
                result, folder = simulate(cfg, observer)
                folders.append(folder)
                return result.evaluation

            def centralised(observer: ProgressObserver) -> EvaluationSummary:
                return run_centralised(cfg, observer).evaluation

            def local(observer: ProgressObserver) -> EvaluationSummary:
                return local_summary(run_local(cfg, observer))

            runs: dict[str, Callable[[ProgressObserver], EvaluationSummary]] = {
                "federated": federated, "centralised": centralised, "local": local}
            shown = Path(cfg.tracking_args.log_file_dir).expanduser()
            dashboard_serving.enter_context(
                live_dashboard(shown, dashboard, dashboard_host, exit_when_done, chatter))
            for name, run in runs.items():
                with progress_bar(chatter) as progress:
                    total = cfg.train_args.comm_round * (
                        cfg.train_args.client_num_in_total if name == "local" else 1)
                    progress.console.print(f"[dim]{name}…[/]")
                    summaries[name] = run(ProgressObserver(progress, total))
            folders[0].save_comparison(summaries)
        except FediotError as error:
            raise fail(str(error)) from None
        _print_comparison(cfg, summaries, folders[0], output_format)


def _print_comparison(cfg: Config, summaries: dict[str, EvaluationSummary], folder: RunFolder,
                      output_format: OutputFormat) -> None:
    """What ``fediot compare`` prints at the end: F1 and TPR/FPR of each training kind."""
    devices: list[str | None] = [*summaries["federated"].devices, None]
    if output_format is not OutputFormat.table:
        records = [{"device": device, "label": client_label(device) if device else
                    "all devices", **{f"{name}_{key}": _figure(s, device, source)
                                      for name, s in summaries.items()
                                      for key, source in (("f1", "f1"), ("tpr", "recall"),
                                                          ("fpr", "fpr"))}}
                   for device in devices]
        write_records(records, output_format, {"run": folder.root.name,
                                               "window": cfg.detection_args.describe_window(),
                                               "devices": records})
        return
    columns = [Column("device", right=False),
               *(Column(f"{name} F1") for name in summaries),
               *(Column(f"{name} TPR/FPR", drop=len(summaries) - i)
                 for i, name in enumerate(summaries))]
    rows = [[escape(client_label(device) if device else "all devices"),
             *(_f1(s, device, "f1") for s in summaries.values()),
             *(f"{_f1(s, device, 'recall')}/{_f1(s, device, 'fpr')}"
               for s in summaries.values())] for device in devices]
    print_table(console, columns, rows, ["bold" if d is None else None for d in devices],
                title=f"F1 / TPR / FPR % with the window vote "
                      f"({escape(cfg.detection_args.describe_window())})")
