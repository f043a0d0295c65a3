"""``fediot protocol``: N-BaIoT's own per-device evaluation, and a training-length sweep."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from fediot.core.catalog import client_label, device_by_name
from fediot.core.data.layouts import open_dataset
from fediot.core.errors import FediotError
from fediot.core.features.warmup import WarmupRule
from fediot.faces.cli.app import app, console, fail
from fediot.faces.cli.lazy import command

if TYPE_CHECKING:  # the protocol trains with torch: loaded once the input is checked
    from fediot.core.nbaiot_protocol import DeviceProtocolResult, SweepPoint

FLOODS = ("gafgyt.tcp", "gafgyt.udp")
"""The spoofed-source floods whose rows look like a new host's first packet."""


def _pct(value: float) -> str:
    return "—" if value != value else f"{100 * value:.2f}"  # NaN: the class is absent


def _floods(result: DeviceProtocolResult) -> float:
    values = [result.tpr[c] for c in FLOODS if c in result.tpr]
    return min(values) if values else float("nan")


def _min(values: dict[str, float]) -> float:
    return min(values.values()) if values else float("nan")


def device_table(results: list[DeviceProtocolResult], title: str) -> Table:
    """One row per device, then the mean over devices."""
    from fediot.core.nbaiot_protocol import mean_over_devices

    table = Table(title=title, caption="percent; ·w: with the device's ws* window vote; "
                  "TPR min: the lowest TPR over the device's attack classes")
    for name, justify in (("device", "left"), ("train/opt rows", "right"),
                          ("warm-up dropped", "right"), ("epochs", "right"), ("ws*", "right"),
                          ("FPR", "right"), ("FPR·w", "right"), ("TPR min", "right"),
                          ("TPR·w min", "right"), ("Gafgyt TCP/UDP", "right")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for r in results:
        epochs = f"{r.best_epoch}/{r.epochs_run}" if r.best_epoch else f"{r.epochs_run}"
        table.add_row(client_label(r.device), f"{r.rows['train']:,}/{r.rows['opt']:,}",
                      f"{r.warmup_dropped['train']}/{r.warmup_dropped['opt']}", epochs,
                      str(r.window), _pct(r.fpr), _pct(r.fpr_window), _pct(_min(r.tpr)),
                      _pct(_min(r.tpr_window)), _pct(_floods(r)))
    table.add_row("mean", "", "", "", "", _pct(mean_over_devices(results, lambda r: r.fpr)),
                  _pct(mean_over_devices(results, lambda r: r.fpr_window)),
                  _pct(mean_over_devices(results, lambda r: _min(r.tpr))),
                  _pct(mean_over_devices(results, lambda r: _min(r.tpr_window))),
                  _pct(mean_over_devices(results, _floods)), style="bold")
    return table


def sweep_table(points: list[SweepPoint]) -> Table:
    """One row per training length: means over devices, and the worst device's flood TPR."""
    from fediot.core.nbaiot_protocol import mean_over_devices

    table = Table(title="training-length sweep (fixed epochs, no early stopping)",
                  caption="percent, mean over devices; floods: Gafgyt TCP and UDP "
                          "single-instance TPR, worst device")
    for name in ("epochs", "FPR", "FPR·w", "TPR min", "TPR·w min", "floods worst"):
        table.add_column(name, justify="right", no_wrap=True)
    for point in points:
        worst = min((_floods(r) for r in point.results if _floods(r) == _floods(r)),
                    default=float("nan"))
        table.add_row(str(point.epochs),
                      _pct(mean_over_devices(point.results, lambda r: r.fpr)),
                      _pct(mean_over_devices(point.results, lambda r: r.fpr_window)),
                      _pct(mean_over_devices(point.results, lambda r: _min(r.tpr))),
                      _pct(mean_over_devices(point.results, lambda r: _min(r.tpr_window))),
                      _pct(worst))
    return table


def _write(path: Path, payload: dict[str, Any]) -> None:
    from fediot.core.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")


@command(app, "protocol")
def protocol_command(
    dataset: Annotated[str, typer.Option(
        help="testbed (built or cached) or N-BaIoT (the real files at --data-dir)")] = "testbed",
    data_dir: Annotated[Path | None, typer.Option(
        help="N-BaIoT: the data's folder (UCI or Kaggle layout)", show_default=False)] = None,
    scale: Annotated[float, typer.Option(help="testbed: its scale")] = 1.0,
    testbed_seed: Annotated[int, typer.Option(help="testbed: its seed")] = 0,
    devices: Annotated[list[str] | None, typer.Option(
        "--device", help="only this device (repeatable; catalogue name)",
        show_default=False)] = None,
    epochs: Annotated[int, typer.Option(
        min=1, help="most training epochs (early stopping on the opt third decides)")] = 100,
    sweep: Annotated[str | None, typer.Option(
        help="also rerun at these fixed training lengths, e.g. 10,20,50,100,300,500",
        show_default=False)] = None,
    k: Annotated[float, typer.Option(
        min=0, help="threshold = mean + k·std of the opt third's errors")] = 1.0,
    max_window: Annotated[int, typer.Option(min=1, help="largest ws* tried")] = 1000,
    warmup: Annotated[bool, typer.Option(
        help="drop warm-up (no source history) rows from train and opt")] = True,
    seed: Annotated[int, typer.Option(help="weights and shuffling seed")] = 0,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="JSON results file (default runs/protocol-<time>.json)",
        show_default=False)] = None,
) -> None:
    # its help is its line in fediot.faces.cli.lazy.COMMANDS
    try:
        if dataset == "testbed":
            from fediot.core.testbed import build_testbed  # heavy: only when used

            root = build_testbed(seed=testbed_seed, scale=scale).root
        elif dataset == "N-BaIoT":
            if data_dir is None:
                raise FediotError("--dataset N-BaIoT needs --data-dir (the data's folder)")
            root = data_dir.expanduser()
        else:
            raise FediotError(f"--dataset must be testbed or N-BaIoT, got {dataset!r}")
        source = open_dataset(root)
        chosen = None if not devices else [device_by_name(name).uci_id for name in devices]
        lengths = [int(item) for item in sweep.split(",")] if sweep else []
        from fediot.core.nbaiot_protocol import (
            ProtocolSettings,
            run_protocol,
            training_length_sweep,
        )

        settings = ProtocolSettings(epochs=epochs, threshold_k=k, max_window=max_window,
                                    seed=seed, warmup=WarmupRule() if warmup
                                    else WarmupRule.off())
        with console.status("N-BaIoT protocol…") as status:
            results = run_protocol(source, chosen, settings,
                                   lambda name: status.update(f"protocol: {name}"))
            points = training_length_sweep(source, lengths, chosen, settings,
                                           lambda text: status.update(f"sweep: {text}"))
    except KeyError as error:
        raise fail(str(error.args[0])) from None
    except (FediotError, ValueError) as error:
        raise fail(str(error)) from None
    console.print(device_table(results, f"N-BaIoT protocol on {dataset} ({root}), "
                                        f"k = {k:g}, warm-up rows "
                                        f"{'dropped' if warmup else 'kept'}"))
    if points:
        console.print(sweep_table(points))
    target = output or Path("runs") / (
        f"protocol-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}.json")
    _write(target, {"dataset": dataset, "root": str(root),
                    "settings": asdict(settings),
                    "results": [r.to_dict() for r in results],
                    "sweep": [p.to_dict() for p in points]})
    console.print(f"results: {target}")
