"""``fediot status``: a run's state, round and devices, from its run folder (read through
:class:`~fediot.engines.run_folder.RunView`, so a run whose process died shows as
``interrupted``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from fediot.core.catalog import client_label
from fediot.core.errors import FediotError
from fediot.engines.run_folder import RunView, latest_run
from fediot.faces.cli.app import app, console, fail
from fediot.faces.cli.lazy import command
from fediot.faces.cli.runs_common import interruption_text
from fediot.faces.cli.tables import Column, print_table

STATE_STYLES = {"failed": "red", "interrupted": "magenta", "running": "yellow"}


def newest_run(runs_dir: Path) -> Path | None:
    """The newest run by start time (:func:`~fediot.engines.run_folder.latest_run`, any
    state): the run that ``latest`` names."""
    view = latest_run(runs_dir, needs_model=False)
    return view.root if view is not None else None


@command(app, "status")
def status_command(
    run: Annotated[Path | None, typer.Argument(help="a run folder (default: the newest)")] = None,
    runs_dir: Annotated[Path, typer.Option(help="where run folders are")] = Path("runs"),
) -> None:
    # its help is its line in fediot.faces.cli.lazy.COMMANDS
    folder = run or newest_run(runs_dir)
    if folder is None:
        raise fail(f"no run with a status.json under {runs_dir}")
    try:
        status = RunView(folder).status()
    except FediotError as error:
        raise fail(f"cannot read the run status ({error})") from None
    if status is None:
        raise fail(f"{folder / 'status.json'}: no run status yet")
    state = str(status.get("state"))
    shown = f"[{STATE_STYLES[state]}]{state}[/]" if state in STATE_STYLES else state
    console.print(f"[bold]{escape(str(status.get('run', folder.name)))}[/]: {shown}, "
                  f"{status.get('phase')}, round {status.get('round')}/"
                  f"{status.get('total_rounds')}, engine {status.get('engine')}, "
                  f"updated {status.get('updated_at')}")
    if state == "interrupted":
        console.print(f"{interruption_text(status)}; the command that "
                      f"started it, with `--resume {escape(str(folder))}`, continues it from "
                      f"its last checkpoint", highlight=False)
    columns = [Column("device", right=False), Column("state", right=False),
               Column("last round"), Column("last seen", right=False, drop=1),
               Column("rejected")]
    rows, styles = [], []
    for device, info in (status.get("devices") or {}).items():
        style = {"lost": "red", "training": "yellow", "online": "green"}.get(info["state"])
        rejected = int(info.get("rejected") or 0)
        rows.append([escape(client_label(device)), escape(str(info["state"])),
                     str(info["last_round"] or "—"), escape(str(info["last_seen"] or "—")),
                     str(rejected) if rejected else "—"])
        styles.append(style or ("red" if rejected else None))
    print_table(console, columns, rows, styles, title="devices")
    for device, info in (status.get("devices") or {}).items():
        if info.get("last_rejection"):
            console.print(f"[red]last rejected reply of {escape(client_label(device))}:[/] "
                          f"{escape(str(info['last_rejection']))}", highlight=False)
