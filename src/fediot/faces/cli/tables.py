"""Tables that fit the terminal without ever eliding a number, and the machine-readable
``--format json|csv`` of the same figures.

A column is a number (or an id, or a short word): never wrapped, never cut, as wide as its
widest cell. Only text columns (``fold``: wrapped at the width; ``clip``: one line, cut with an
ellipsis) give way. When the table is still too wide, the columns with the highest ``drop``
rank are left out, and if even the essential ones do not fit, the table is printed wider than
the terminal rather than cut. When stdout is not a terminal the layout is plain: no box, no
colour.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Literal

import typer
from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


FormatOption = Annotated[OutputFormat, typer.Option(
    "--format", help="table (for people), or json / csv on stdout (progress stays on stderr)")]

TEXT_MIN_WIDTH = 16
"""The narrowest a folded or clipped text column becomes."""


@dataclass(frozen=True)
class Column:
    """One column: ``kind`` ``fixed`` (numbers, ids: whole, on one line), ``fold`` or
    ``clip`` (text); ``drop``: 0 never left out, else the higher the sooner; ``right``:
    right-aligned."""

    name: str
    kind: Literal["fixed", "fold", "clip"] = "fixed"
    drop: int = 0
    right: bool = True


def plain(console: Console) -> bool:
    """Whether to print the plain layout (output piped or redirected)."""
    return not console.is_terminal


def _cell_width(cell: str) -> int:
    return max((Text.from_markup(line).cell_len for line in cell.split("\n")), default=0)


def _build(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]],
           styles: Sequence[str | None], keep: Sequence[int], spare: int,
           **options: Any) -> Table:
    """The table with columns ``keep``; text columns share ``spare`` extra cells."""
    bare = plain(console)
    table = Table(box=None if bare else options.pop("box", box.HEAVY_HEAD),
                  **{k: v for k, v in options.items() if k != "box"})
    texts = [i for i in keep if columns[i].kind != "fixed"]
    for i in keep:
        column = columns[i]
        header = column.name
        widest = max([_cell_width(header)] + [_cell_width(row[i]) for row in rows])
        justify: Literal["right", "left"] = "right" if column.right else "left"
        if column.kind == "fixed":
            table.add_column(header, justify=justify, no_wrap=True, width=widest,
                             overflow="fold")
        else:
            narrow = min(widest, TEXT_MIN_WIDTH)
            share = spare // len(texts) + (1 if texts.index(i) < spare % len(texts) else 0)
            table.add_column(header, justify=justify, no_wrap=column.kind == "clip",
                             overflow="fold" if column.kind == "fold" else "ellipsis",
                             width=min(widest, narrow + share))
    for row, style in zip(rows, styles, strict=True):
        table.add_row(*(row[i] for i in keep), style=style)
    return table


def _needed(console: Console, table: Table) -> int:
    return Measurement.get(console, console.options.update_width(100_000), table).minimum


def fitted_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]],
                 styles: Sequence[str | None] | None = None,
                 **options: Any) -> tuple[Table, int]:
    """The table and the width to print it at (the console's, or more if even the columns
    that are never dropped need more): ``console.print(table, width=width)``."""
    styles = list(styles) if styles is not None else [None] * len(rows)
    keep = list(range(len(columns)))
    droppable = sorted((i for i, c in enumerate(columns) if c.drop),
                       key=lambda i: (-columns[i].drop, -i))
    while True:
        needed = _needed(console, _build(console, columns, rows, styles, keep, 0,
                                         **dict(options)))
        if needed <= console.width or not droppable:
            break
        keep.remove(droppable.pop(0))
    spare = max(0, console.width - needed)
    return (_build(console, columns, rows, styles, keep, spare, **dict(options)),
            max(console.width, needed))


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[str]],
                styles: Sequence[str | None] | None = None, **options: Any) -> None:
    """:func:`fitted_table`, printed."""
    table, width = fitted_table(console, columns, rows, styles, **options)
    console.print(table, width=width)


def write_records(records: Sequence[Mapping[str, Any]], output_format: OutputFormat,
                  document: Any = None) -> None:
    """``records`` on stdout: JSON (``document`` if given, else the list) or CSV (a header of
    every key, in order of first appearance, then one line per record)."""
    if output_format is OutputFormat.json:
        sys.stdout.write(json.dumps(records if document is None else document, indent=2)
                         + "\n")
        return
    keys: dict[str, None] = {}
    for record in records:
        keys.update(dict.fromkeys(record))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(keys), lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: "" if v is None else v for k, v in record.items()})
    sys.stdout.write(buffer.getvalue())
