"""``fediot data synth``: build (or find cached) the embedded simulated N-BaIoT dataset."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Group
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fediot.core.catalog import (
    BENIGN,
    DEVICES,
    GAFGYT_ATTACKS,
    MIRAI_ATTACKS,
)
from fediot.core.errors import FediotError
from fediot.core.formats import FEATURE_FILE_FORMATS
from fediot.core.paths import describe_cache_dir
from fediot.faces.cli.app import console, data_app, fail

if TYPE_CHECKING:  # the testbed loads numba, pandas and scipy: only `data synth` needs them
    from fediot.core.testbed.dataset import TestbedDataset


@data_app.command("synth")
def synth(
    seed: Annotated[int, typer.Option(help="root seed of the simulation (≥ 0)")] = 0,
    scale: Annotated[
        float, typer.Option(help="dataset size; 1.0 gives ≥ 20k benign rows per device")
    ] = 1.0,
    out: Annotated[
        Path | None, typer.Option(help="put the dataset in this folder (default: the cache)")
    ] = None,
    file_format: Annotated[str, typer.Option(
        "--format", help=f"feature file format: {' or '.join(FEATURE_FILE_FORMATS)}")
    ] = "parquet",
    pcap: Annotated[bool, typer.Option(help="also write every capture as a pcap")] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(
            help=f"folder of cached testbeds (default: {describe_cache_dir('testbed')})")
    ] = None,
) -> None:
    """Simulate the nine N-BaIoT devices and ten attacks, and write their 115 features."""
    from fediot.core.testbed.dataset import build_testbed

    if not math.isfinite(scale) or scale <= 0:
        raise fail(f"--scale must be a number > 0, got {scale}")
    if file_format not in FEATURE_FILE_FORMATS:
        raise fail(f"--format must be one of {', '.join(FEATURE_FILE_FORMATS)}, "
                   f"got {file_format!r}")
    if seed < 0:
        raise fail(f"--seed must be ≥ 0, got {seed}")
    try:
        with Progress(TextColumn("{task.description:<52}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("simulating and extracting", total=None)

            def advance(done: int, total: int, label: str) -> None:
                progress.update(task, completed=done, total=total, description=label)

            dataset = build_testbed(out, seed=seed, scale=scale, file_format=file_format,
                                    pcap=pcap, progress=advance, cache_dir=cache_dir)
    except FediotError as error:
        raise fail(str(error)) from None
    console.print(summary_table(dataset))
    origin = "cached" if dataset.from_cache else "generated"
    console.print(f"{origin}: {dataset.root}")


def _short_labels() -> dict[int, str]:
    """``"5 Provision 737E"``: the id, the vendor, and the model where a vendor has two."""
    labels = {}
    for device in DEVICES:
        tokens = device.name.split("_")
        twins = [d.name.split("_") for d in DEVICES
                 if d is not device and d.name.split("_")[0] == tokens[0]]
        label = tokens[0]
        if twins:
            label += " " + next(t for i, t in enumerate(tokens) if i >= len(twins[0])
                                or t != twins[0][i])
        labels[device.uci_id] = f"{device.uci_id} {label}"
    return labels


def _thousands(rows: int) -> str:
    return f"{rows:,}"


def summary_table(dataset: TestbedDataset) -> Group:
    """Feature rows per device (table rows) and traffic class (columns): one table for benign
    and Gafgyt, one for Mirai, so each fits an 80-column terminal."""
    counts = {(int(e["uci_id"]), str(e["traffic_class"])): int(e["rows"])
              for e in dataset.entries()}
    labels = _short_labels()
    title = f"testbed seed {dataset.seed}, scale {dataset.scale:g}, {dataset.file_format}"
    groups = [
        (f"{title}: benign and Gafgyt rows", (BENIGN, *(f"gafgyt.{a}" for a in GAFGYT_ATTACKS))),
        ("Mirai rows (none for Ennio and Samsung)", tuple(f"mirai.{a}" for a in MIRAI_ATTACKS)),
    ]
    tables = []
    for heading, classes in groups:
        table = Table(title=heading, show_footer=True, box=box.SIMPLE_HEAD, pad_edge=False)
        table.add_column("device", footer="total", no_wrap=True)
        for traffic_class in classes:
            column_total = sum(n for (_, c), n in counts.items() if c == traffic_class)
            table.add_column(traffic_class.split(".")[-1], justify="right",
                             footer=_thousands(column_total), no_wrap=True)
        for device in DEVICES:
            table.add_row(labels[device.uci_id], *(
                _thousands(counts[(device.uci_id, c)]) if (device.uci_id, c) in counts else "—"
                for c in classes))
        tables.append(table)
    total = sum(counts.values())
    return Group(*tables, f"{len(counts)} files, {total:,} feature rows")
