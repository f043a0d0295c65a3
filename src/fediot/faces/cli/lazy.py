"""Lazy command registration: ``fediot --help`` imports no command module, ``fediot X`` only X's.

Each command module registers its commands on :data:`fediot.faces.cli.app.app` when imported, and
some import torch, numba or Flower. :class:`LazyGroup` (the top-level group's class) knows each
command's module and one-line help from :data:`COMMANDS`, lists the commands from that table, and
imports a command's module only when the command itself is resolved.

The table is the one source of each command's help line: the modules register their commands
with :func:`command` (and their groups with :func:`group_help`), which take the line from it;
a command's docstring holds only what its ``--help`` adds below that line.
``tests/faces/test_cli_startup.py`` checks that the modules register exactly the table's names.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import click
import typer
from typer.core import TyperGroup

F = TypeVar("F", bound=Callable[..., Any])

_CLI = "fediot.faces.cli."

# name → (modules that register it, the help line `fediot --help` shows), in display order.
COMMANDS: dict[str, tuple[tuple[str, ...], str]] = {
    "dashboard": (("dashboard",), "Serve the read-only live dashboard of the runs under "
                  "--runs-dir until Ctrl-C: devices,\nround progress, live metric charts, system "
                  "figures per device, recent logs."),
    "server": (("deploy",), "Start a SuperLink (TLS + node authentication), run FedDetect on the "
               "devices that connect, print the table."),
    "client": (("deploy",), "Serve one device's data to the federation (a SuperNode); runs until "
               "stopped."),
    "detect": (("detect",), "Judge CAPTURE's packets (or live traffic on --interface) with a run's "
               "model; write an EVE-style JSON line per alert (window vote says attack) to stdout "
               "or --output, then a summary table on stderr."),
    "extract": (("extract",), "Compute the 115 N-BaIoT features of every packet of CAPTURE."),
    "protocol": (("protocol",), "N-BaIoT's evaluation protocol: one autoencoder per device on its "
                 "first benign third, threshold mean + k·std on the second, window ws* with no "
                 "false alarm on the second, FPR\non the last third and TPR on every attack file, "
                 "single-instance and windowed."),
    "report": (("report",), "Write RUN's report (RUN: a run folder, id, unique id prefix or "
               "'latest'): metrics, per-round charts, ROC curves, score histograms, system figures "
               "and the federated/centralised/local comparison, in one HTML file."),
    "serve": (("serve",), "Serve the run's global model over HTTP: POST /score, GET /healthz, "
              "GET /metrics."),
    "export": (("serve",), "Write the global model as one graph: raw 115-feature float32 rows → "
               "per-row scores."),
    "simulate": (("simulate",), "Federated training of the devices on this machine; prints the "
                 "per-device table (or, with --format json / csv, its figures on stdout, "
                 "everything else on stderr)."),
    "compare": (("simulate",), "Federated vs centralised vs local-only training on identical "
                "splits and evaluation (--format json / csv: the figures on stdout, everything "
                "else on stderr)."),
    "status": (("status",), "Show RUN's state and round, and each device's state and last contact "
               "(RUN: a run folder; default: the newest under --runs-dir)."),
    "data": (("data", "nbaiot"), "Datasets: the embedded testbed and N-BaIoT."),
    "certs": (("deploy",), "TLS certificates and device keys for `fediot server` / `fediot client`"
              "\n(scripts/make-certs.sh DIR HOST… makes all of them)."),
    "runs": (("runs",), "Run folders: list them (default) or show one."),
}


def group_help(name: str) -> str:
    """The help line of command (or command group) ``name``, from :data:`COMMANDS`."""
    return COMMANDS[name][1]


def command(typer_app: typer.Typer, name: str) -> Callable[[F], F]:
    """Register the decorated function as command ``name`` of ``typer_app``; its help is its
    line in :data:`COMMANDS`, then the function's docstring (details), if it has one."""
    def register(function: F) -> F:
        # paragraphs joined into lines: the help formatter wraps them to the terminal
        paragraphs = inspect.cleandoc(function.__doc__ or "").split("\n\n")
        details = "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())
        help_text = group_help(name) + (f"\n\n{details}" if details else "")
        typer_app.command(name, help=help_text)(function)
        return function

    return register


def load_all() -> None:
    """Import every command module (so every command is registered), e.g. for tests."""
    for modules, _ in COMMANDS.values():
        for module in modules:
            importlib.import_module(_CLI + module)


class LazyGroup(TyperGroup):
    """The top-level group: lists :data:`COMMANDS` and imports a command's module on first use."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        extra = [name for name in super().list_commands(ctx) if name not in COMMANDS]
        return [*COMMANDS, *extra]

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The help lists the commands from the table: no command module is imported.
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return super().get_command(ctx, cmd_name)
        modules, help_line = entry
        if self._listing:
            return click.Command(cmd_name, help=help_line)
        for module in modules:
            importlib.import_module(_CLI + module)
        # Rebuild the group from the Typer app now that the modules registered their commands.
        import typer.main

        from fediot.faces.cli.app import app

        built = typer.main.get_group(app)
        self.commands.update(built.commands)
        return super().get_command(ctx, cmd_name)
