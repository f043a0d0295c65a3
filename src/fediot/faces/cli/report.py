"""``fediot report``: one self-contained HTML page about a run (charts inline, nothing loaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fediot.core.errors import FediotError
from fediot.engines.run_folder import find_run
from fediot.faces.cli.app import app, console, fail
from fediot.faces.cli.lazy import command


@command(app, "report")
def report_command(
    run: Annotated[str, typer.Argument(
        help="a run folder, a run id, a unique id prefix, or 'latest'")],
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="where run folders are")] = Path(
        "runs"),
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="the HTML file to write (default: RUN_FOLDER/report.html)")] = None,
) -> None:
    # its help is its line in fediot.faces.cli.lazy.COMMANDS
    try:
        view = find_run(run, runs_dir)
        # imported once the run is found: a wrong RUN is refused before the report's modules
        from fediot.faces.report import report_summary, write_report

        path = write_report(view, output)
        summary = report_summary(view)
    except FediotError as error:
        raise fail(str(error)) from None
    console.print(f"report: {path}", markup=False, highlight=False, soft_wrap=True)
    console.print(summary, markup=False, highlight=False, soft_wrap=True)
