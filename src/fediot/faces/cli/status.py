"""``fediot status``: a run's state, round and devices, from its run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fediot.core.catalog import client_label
from fediot.faces.cli.app import app, console, fail


def newest_run(runs_dir: Path) -> Path | None:
    """The run folder whose ``status.json`` changed last."""
    runs = [p for p in runs_dir.glob("*") if (p / "status.json").is_file()]
    return max(runs, key=lambda p: (p / "status.json").stat().st_mtime) if runs else None


@app.command("status")
def status_command(
    run: Annotated[Path | None, typer.Argument(help="a run folder (default: the newest)")] = None,
    runs_dir: Annotated[Path, typer.Option(help="where run folders are")] = Path("runs"),
) -> None:
    """Show RUN's state and round, and each device's state and last contact (RUN: a run
    folder; default: the newest under --runs-dir)."""
    folder = run or newest_run(runs_dir)
    if folder is None:
        raise fail(f"no run with a status.json under {runs_dir}")
    path = folder / "status.json"
    try:
        status = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise fail(f"{path}: cannot read the run status ({error})") from None
    console.print(f"[bold]{status['run']}[/]: {status['state']}, {status['phase']}, round "
                  f"{status['round']}/{status['total_rounds']}, engine {status['engine']}, "
                  f"updated {status['updated_at']}")
    table = Table(title="devices")
    for name in ("device", "state", "last round", "last seen"):
        table.add_column(name)
    for device, info in status["devices"].items():
        style = {"lost": "red", "training": "yellow"}.get(info["state"])
        table.add_row(client_label(device), info["state"], str(info["last_round"] or "—"),
                      info["last_seen"] or "—", style=style)
    console.print(table)
