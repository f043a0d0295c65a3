"""The Typer applications every CLI module registers its commands on."""

from __future__ import annotations

import typer
from rich.console import Console

from fediot.faces.cli.lazy import LazyGroup, group_help

app = typer.Typer(
    name="fediot",
    help="FedIoT: federated anomaly detection for IoT devices (N-BaIoT features).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=LazyGroup,  # imports a command's module only when that command runs
)
data_app = typer.Typer(help=group_help("data"), no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one clear error line and return the exit to raise (``raise fail(...)``)."""
    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    return typer.Exit(code)
