"""``fediot data download`` and ``fediot data info``: get N-BaIoT, and see what a folder holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from fediot.core.catalog import OFFICIAL_ROW_COUNTS, device_by_id
from fediot.core.data import (
    UCI_URL,
    FeatureCache,
    NBaIoTSource,
    download_nbaiot,
    open_dataset,
)
from fediot.core.data import Progress as DataProgress
from fediot.core.errors import FediotError
from fediot.core.paths import describe_cache_dir
from fediot.faces.cli.app import console, data_app, err_console, fail


class _AmountColumn(ProgressColumn):
    """Bytes (and speed) while downloading, ``done/total`` items while extracting or verifying."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()
        self._speed = TransferSpeedColumn()
        self._items = MofNCompleteColumn()

    def render(self, task: Task) -> Text:
        if task.fields.get("unit") == "bytes":
            return Text.assemble(self._bytes.render(task), " ", self._speed.render(task))
        return self._items.render(task)


class _ProgressBars:
    """Rich bars fed by the core's progress callback: one bar per stage."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, report: DataProgress) -> None:
        task = self._tasks.get(report.stage)
        if task is None:
            unit = "bytes" if report.stage == "download" else "items"
            task = self._progress.add_task(report.stage, total=report.total, unit=unit)
            self._tasks[report.stage] = task
        self._progress.update(
            task,
            completed=report.done,
            total=report.total,
            description=f"{report.stage} {Path(report.item).name}"[:60],
        )


@data_app.command("download")
def download(
    dest: Annotated[Path, typer.Argument(help="Dataset folder to create (UCI layout).")] = Path(
        "data/nbaiot"
    ),
    url: Annotated[str, typer.Option(help="Where the UCI zip is.")] = UCI_URL,
    archive: Annotated[
        Path | None, typer.Option(help="Where to keep the zip (default: DEST.zip).")
    ] = None,
    verify_counts: Annotated[
        bool, typer.Option(help="Check every file's row count against the official ones.")
    ] = True,
    keep_archive: Annotated[
        bool, typer.Option("--keep-archive/--remove-archive", help="Keep the zip afterwards.")
    ] = True,
    sha256: Annotated[str | None, typer.Option(help="Expected SHA-256 of the zip.")] = None,
    retries: Annotated[int, typer.Option(help="Resumes after a dropped connection.")] = 3,
) -> None:
    """Download N-BaIoT (UCI dataset 442), resumably; extract it and verify the row counts."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        _AmountColumn(),
        TimeRemainingColumn(),
    )
    try:
        with Progress(*columns, console=err_console, transient=True) as progress:
            folder = download_nbaiot(
                dest,
                url=url,
                archive=archive,
                verify_counts=verify_counts,
                keep_archive=keep_archive,
                sha256=sha256,
                progress=_ProgressBars(progress),
                retries=retries,
            )
        source = open_dataset(folder)
    except FediotError as error:
        raise fail(str(error)) from None
    console.print(
        f"N-BaIoT ready in [bold]{folder}[/]: {source.layout} layout, "
        f"{len(source.files)} files, devices {', '.join(map(str, source.devices()))}"
    )


@data_app.command("info")
def info(
    path: Annotated[Path, typer.Argument(help="A dataset folder (UCI, Kaggle or testbed).")],
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help=f"Parsed-file cache (default: {describe_cache_dir('nbaiot')})."
        ),
    ] = None,
) -> None:
    """Show the detected layout: rows per device and class, checked against the official counts."""
    try:
        source = open_dataset(path, FeatureCache(cache_dir) if cache_dir is not None else None)
        counts = _row_counts(source)
    except FediotError as error:
        raise fail(str(error)) from None
    console.print(_info_table(source, counts))
    console.print(_info_summary(source, counts))
    for folder, reason in source.skipped.items():
        console.print(f"[yellow]skipped[/] {escape(folder)}: {escape(reason)}", highlight=False)


def _row_counts(source: NBaIoTSource) -> dict[tuple[int, str], int]:
    columns = (TextColumn("parsing {task.description}"), BarColumn(), MofNCompleteColumn())
    counts: dict[tuple[int, str], int] = {}
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("", total=len(source.files))
        for uci_id, traffic_class in source.files:
            progress.update(task, description=f"{uci_id}.{traffic_class}")
            counts[(uci_id, traffic_class)] = source.row_count(uci_id, traffic_class)
            progress.advance(task)
    return counts


def _info_table(source: NBaIoTSource, counts: dict[tuple[int, str], int]) -> Table:
    table = Table(title=f"{source.root} ({source.layout} layout)")
    table.add_column("Device")
    table.add_column("Class")
    table.add_column("Rows", justify="right")
    if source.is_official:
        table.add_column("Official", justify="right")
        table.add_column("Check")
    table.add_column("File", overflow="fold")
    for key, rows in counts.items():
        uci_id, traffic_class = key
        cells = [f"{uci_id} {device_by_id(uci_id).name}", traffic_class, f"{rows:,}"]
        if source.is_official:
            official = OFFICIAL_ROW_COUNTS[key]
            cells += [f"{official:,}", "[green]ok[/]" if rows == official else "[red]differs[/]"]
        cells.append(source.files[key].relative_to(source.root).as_posix())
        table.add_row(*cells)
    return table


def _info_summary(source: NBaIoTSource, counts: dict[tuple[int, str], int]) -> str:
    plural = "" if len(counts) == 1 else "s"
    summary = f"{len(counts)} file{plural}, {sum(counts.values()):,} rows"
    if not source.is_official:
        return summary
    differing = [key for key, rows in counts.items() if rows != OFFICIAL_ROW_COUNTS[key]]
    missing = len(OFFICIAL_ROW_COUNTS) - len(counts)
    verdict = (
        "[green]every row count matches the official one[/]"
        if not differing
        else f"[red]{len(differing)} of {len(counts)} row counts differ from the official ones[/]"
    )
    if missing:
        verdict += f"; {missing} of the {len(OFFICIAL_ROW_COUNTS)} official files are absent"
    return f"{summary}; {verdict}"
