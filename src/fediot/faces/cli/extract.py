"""``fediot extract``: a capture file → the 115 N-BaIoT features per packet."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TimeElapsedColumn
from rich.table import Table

from fediot.core.catalog import FIRST_JITTER_CHOICES
from fediot.core.errors import FediotError
from fediot.faces.cli.app import app, console, fail
from fediot.faces.cli.lazy import command

FirstJitterOption = Annotated[str, typer.Option(
    help=f"a new channel's first jitter: {' or '.join(FIRST_JITTER_CHOICES)} (N-BaIoT: epoch); "
         "must match the training data's")]


@command(app, "extract")
def extract(
    capture: Annotated[Path, typer.Argument(help="pcap or pcapng file")],
    output: Annotated[Path, typer.Option("--output", "-o", help="features.parquet or .csv")],
    first_jitter: FirstJitterOption = "epoch",
    allow_truncated: Annotated[
        bool, typer.Option(help="keep the packets before a truncated final record")
    ] = False,
) -> None:
    # its help is its line in fediot.faces.cli.lazy.COMMANDS
    # Imported here so that `fediot extract --help` needs neither numba nor pandas, and a bad
    # capture is refused before they load.
    from fediot.core.features.pcap import read_capture

    try:
        started = time.perf_counter()
        with Progress(*Progress.get_default_columns()[:1], BarColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as progress:
            size = capture.stat().st_size if capture.is_file() else None
            reading = progress.add_task("reading", total=size)
            result = read_capture(capture, allow_truncated=allow_truncated,
                                  progress=lambda done: progress.update(reading, completed=done))
            import numpy as np

            from fediot.core.catalog import N_FEATURES
            from fediot.core.features.extractor import ExtractorOptions, FeatureExtractor
            from fediot.core.io import WRITE_CHUNK_ROWS, FeatureWriter, format_from_suffix

            options = ExtractorOptions(first_jitter=first_jitter)
            format_from_suffix(output)
            packets = result.packets
            task = progress.add_task("features", total=len(packets))
            # Extracted and written a chunk at a time into one reused buffer: memory stays
            # flat however long the capture, and the buffer's pages stay warm.
            extractor = FeatureExtractor(options)
            buffer = np.empty((min(WRITE_CHUNK_ROWS, len(packets)), N_FEATURES))
            with FeatureWriter(output) as writer:
                for start in range(0, len(packets), WRITE_CHUNK_ROWS):
                    chunk = packets.take(slice(start, start + WRITE_CHUNK_ROWS))
                    writer.write(extractor.process(chunk, out=buffer))
                    progress.advance(task, len(chunk))
    except FediotError as error:
        raise fail(str(error)) from None
    elapsed = time.perf_counter() - started
    summary = Table(title=f"{capture.name} → {output}", show_header=False)
    summary.add_row("packets", f"{writer.rows_written:,}")
    summary.add_row("capture", result.summary())
    summary.add_row("features", f"{N_FEATURES} columns ({options.first_jitter} first jitter)")
    summary.add_row("time", f"{elapsed:.2f} s")
    console.print(summary)
