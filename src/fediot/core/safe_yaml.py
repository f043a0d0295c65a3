"""Reading YAML and JSON documents that come from outside (files, the command line, the
network) without letting them hang or exhaust the process.

Every external YAML document in FedIoT goes through :func:`load_yaml` (configurations, their
``--set`` overrides, the configuration a Flower server sends to its devices, device maps) and
every external JSON document through :func:`load_json`. Both refuse, with one
:class:`UnsafeInputError` naming the source and line:

- more than :data:`~fediot.core.limits.MAX_TEXT_BYTES` bytes;
- text that is not UTF-8, or that holds a NUL byte (a binary or UTF-16 file);
- mappings and lists nested more than :data:`~fediot.core.limits.MAX_NESTING` deep (the
  composer and ``repr`` recurse, so 5,000 levels would otherwise end in a RecursionError);
- YAML aliases (``*name``);
- integer literals longer than :data:`~fediot.core.limits.MAX_INT_DIGITS` characters.

Why aliases are refused outright rather than expanded within a budget: an alias makes the
loaded value share one object in several places, so a few hundred bytes of nested aliases
("billion laughs") load instantly and then blow up to gigabytes the first time anything walks
the value (``repr`` in an error message, :func:`dataclasses.asdict`, ``json.dumps``). A budget
would have to count the expanded size correctly everywhere the value goes; refusing is simple
and costs nothing here, since FedIoT's documents are small, flat mappings that never need
anchors. Anchors (``&name``) alone are harmless and ignored.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Any

import yaml
import yaml.constructor
import yaml.nodes
import yaml.reader

from fediot.core.errors import FediotError
from fediot.core.limits import MAX_INT_DIGITS, MAX_NESTING, MAX_TEXT_BYTES


class UnsafeInputError(FediotError):
    """A YAML or JSON document that is unreadable, too large, too deep or not plain text."""


class InvalidDocumentError(UnsafeInputError):
    """A document that is not valid YAML / JSON at all (a syntax error).

    Parameters
    ----------
    source
        The document's name.
    language
        ``YAML`` or ``JSON``.
    problem
        Where and what, e.g. ``line 2, column 1: expected ',' or ']'``.
    """

    def __init__(self, source: str, language: str, problem: str) -> None:
        where, sep, what = problem.partition(": ") if problem.startswith("line ") else (
            "", "", problem)
        super().__init__(f"{source}: {where}{sep}not valid {language}: {what}")
        self.problem = problem


_PROBLEM_CHARS = 200
"""A parser's problem text is cut to this length (it may quote the offending input)."""


def _one_line(text: str, limit: int = _PROBLEM_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def decode_text(data: bytes, source: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """``data`` as text: at most ``max_bytes`` bytes of UTF-8 (a leading BOM is dropped) without
    NUL bytes; else an :class:`UnsafeInputError` naming ``source`` and the line."""
    if len(data) > max_bytes:
        raise UnsafeInputError(f"{source}: {len(data):,} bytes, more than the limit of "
                               f"{max_bytes:,}")
    data = data.removeprefix(codecs.BOM_UTF8)
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise UnsafeInputError(f"{source}: line {line}: NUL byte; expected UTF-8 text (is this "
                               "a binary or UTF-16 file?)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UnsafeInputError(f"{source}: line {line}: not UTF-8 text (byte "
                               f"0x{data[error.start]:02x})") from None


def _as_text(text: str | bytes, source: str, max_bytes: int) -> str:
    if isinstance(text, bytes):
        return decode_text(text, source, max_bytes)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as error:  # lone surrogates: undecodable bytes in argv
        line = text.count("\n", 0, error.start) + 1
        raise UnsafeInputError(f"{source}: line {line}: not UTF-8 text") from None
    return decode_text(data, source, max_bytes)


def read_text(path: Path, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """A text file as :func:`decode_text` accepts it; never reads more than ``max_bytes + 1``
    bytes (so a huge file or a device such as ``/dev/zero`` is refused, not read)."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            data = file.read(max_bytes + 1)
    except FileNotFoundError:
        raise UnsafeInputError(f"{path}: no such file") from None
    except ValueError:  # open() refuses a path holding a NUL
        raise UnsafeInputError(f"{path!r}: a path cannot contain a NUL character") from None
    except OSError as error:
        raise UnsafeInputError(f"{path}: cannot read ({error.strerror or error})") from None
    if len(data) > max_bytes:
        raise UnsafeInputError(f"{path}: larger than the limit of {max_bytes:,} bytes")
    return decode_text(data, str(path), max_bytes)


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that :func:`load_yaml` will not load (an alias, too deep, a huge integer)."""


def _construct_int(loader: yaml.SafeLoader, node: yaml.nodes.Node) -> Any:
    text = str(node.value)
    if len(text) > MAX_INT_DIGITS:
        raise _Refused(problem=f"an integer of {len(text):,} characters (the limit is "
                               f"{MAX_INT_DIGITS})", problem_mark=node.start_mark)
    return yaml.constructor.SafeConstructor.construct_yaml_int(loader, node)  # type: ignore[arg-type]


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader (the pure-Python one: the C loader composes out of our reach) with
    aliases refused and nesting bounded while composing, before any value is built."""

    def __init__(self, stream: str, max_depth: int) -> None:
        super().__init__(stream)
        self._max_depth = max_depth
        self._depth = 0

    def _next_event(self) -> Any:  # an event with anchor and start_mark (untyped in the stubs)
        return self.peek_event()  # type: ignore[no-untyped-call]

    def compose_node(self, parent: yaml.nodes.Node | None, index: int) -> yaml.nodes.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self._next_event()
            raise _Refused(problem=f"alias *{event.anchor} (YAML aliases are not accepted: "
                                   "write the value out)", problem_mark=event.start_mark)
        nested = self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent)
        if nested:
            self._depth += 1
            if self._depth > self._max_depth:
                raise _Refused(problem=f"nested more than {self._max_depth} levels deep",
                               problem_mark=self._next_event().start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self._depth -= 1

    def construct_object(self, node: yaml.nodes.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        # A scalar its tag's constructor cannot read: a timestamp such as 2024-13-45 (ValueError),
        # `!!timestamp x` (AttributeError), `!!int ""` (IndexError), …
        except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as error:
            raise _Refused(problem=f"cannot read {str(node.value)[:40]!r} as "
                                   f"{node.tag.rpartition(':')[2]} ({error})",
                           problem_mark=node.start_mark) from None


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def load_yaml(text: str | bytes, source: str, *, max_bytes: int = MAX_TEXT_BYTES,
              max_depth: int = MAX_NESTING) -> Any:
    """One YAML document from outside, as plain Python values (safe types only).

    Parameters
    ----------
    text
        The document (bytes must be UTF-8).
    source
        What to call it in errors: a file name, ``--set train_args.epochs``, …
    max_bytes, max_depth
        Size and nesting limits (defaults :data:`~fediot.core.limits.MAX_TEXT_BYTES`,
        :data:`~fediot.core.limits.MAX_NESTING`).

    Raises
    ------
    UnsafeInputError
        Not UTF-8, a NUL byte, too large, too deep, an alias, a huge integer or invalid YAML;
        one line naming ``source`` and the line (and column) at fault.
    """
    document = _as_text(text, source, max_bytes)
    loader: _BoundedLoader | None = None
    try:
        loader = _BoundedLoader(document, max_depth)  # checks the characters
        return loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        if isinstance(error, _Refused):
            raise UnsafeInputError(f"{source}: {where}{error.problem}") from None
        parts = [error.context, error.problem]
        problem = _one_line(", ".join(p for p in parts if p) or type(error).__name__)
        raise InvalidDocumentError(source, "YAML", where + problem) from None
    except yaml.reader.ReaderError as error:  # a control character
        position = int(error.position)
        line = document.count("\n", 0, position) + 1
        raise InvalidDocumentError(source, "YAML", f"line {line}: character "
                                   f"{int(error.character):#06x} is not allowed") from None
    except yaml.YAMLError as error:
        raise InvalidDocumentError(source, "YAML", _one_line(str(error))) from None
    finally:
        if loader is not None:
            loader.dispose()


def _too_deep(value: Any, limit: int) -> bool:
    """Whether lists / dicts in ``value`` nest more than ``limit`` deep (iteratively: the
    value may be deeper than the recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth + 1 > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def load_json(text: str | bytes, source: str, *, max_bytes: int = MAX_TEXT_BYTES,
              max_depth: int = MAX_NESTING) -> Any:
    """One JSON document from outside, under the same limits as :func:`load_yaml`."""
    document = _as_text(text, source, max_bytes)
    try:
        value = json.loads(document)
    except json.JSONDecodeError as error:
        raise InvalidDocumentError(source, "JSON", f"line {error.lineno}, column {error.colno}: "
                                   f"{error.msg}") from None
    except RecursionError:
        raise UnsafeInputError(f"{source}: nested more than {max_depth} levels deep") from None
    except ValueError as error:  # an integer of more than 4,300 digits
        raise UnsafeInputError(f"{source}: not usable JSON: {_one_line(str(error))}") from None
    if _too_deep(value, max_depth):
        raise UnsafeInputError(f"{source}: nested more than {max_depth} levels deep")
    return value
