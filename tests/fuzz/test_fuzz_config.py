"""Fuzzing the configuration loader (:func:`fediot.core.config.load_config`,
:func:`~fediot.core.config.parse_config_text`, :func:`~fediot.core.config.parse_config`,
:meth:`~fediot.core.config.Config.with_overrides`) and the YAML / JSON doors under it
(:func:`fediot.core.safe_yaml.load_yaml`, :func:`~fediot.core.safe_yaml.load_json`).

Inputs: YAML-ish text (the YAML syntax characters, keys of the real sections, tags, anchors,
aliases, numbers in every YAML notation), bytes (BOM, NUL, non-UTF-8), and structured
documents — the real sections and keys with values of random types: huge integers, NaN and
infinities, strings holding NUL, newlines or control characters, nested lists and mappings,
non-string keys — both as Python values and dumped to YAML.

Property: a :class:`Config` whose every number is in range, or one :class:`ConfigError` (an
:class:`UnsafeInputError` for the document doors) on one line naming the source — never
another exception.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from fuzz_settings import fuzz
from hypothesis import example, given
from hypothesis import strategies as st

from fediot.core.config import (
    FLOAT_RANGES,
    IGNORED_KEYS,
    INT_RANGES,
    Config,
    ConfigError,
    load_config,
    parse_config,
    parse_config_text,
)
from fediot.core.safe_yaml import UnsafeInputError, load_json, load_yaml

SECTIONS: dict[str, list[str]] = {
    section.name: [f.name for f in dataclasses.fields(getattr(Config(), section.name))]
    for section in dataclasses.fields(Config)
}
SECTION_NAMES = [*SECTIONS, "environment_args"]
ALL_KEYS = sorted({key for keys in SECTIONS.values() for key in keys}
                  | {dotted.partition(".")[2] for dotted in IGNORED_KEYS})
MAX_MESSAGE = 2000


class Huge:
    """Stands for ±10**5000 in generated values (Hypothesis itself cannot print an integer of
    more than 4,300 digits); :func:`materialize` swaps in the integer inside the test."""

    def __init__(self, sign: int) -> None:
        self.sign = sign

    def __repr__(self) -> str:
        return f"Huge({self.sign:+d})"


def materialize(value: Any) -> Any:
    if isinstance(value, Huge):
        return value.sign * 10**5000
    if isinstance(value, dict):
        return {materialize(k): materialize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialize(v) for v in value]
    return value


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_config")


def one_line(error: BaseException, source: str) -> None:
    message = str(error)
    assert message.startswith(source) or message.startswith(repr(source)), message
    assert "\n" not in message and "\r" not in message, message
    assert len(message) <= MAX_MESSAGE, message[:200]


def check_config(config: Config) -> None:
    flat = {f"{s}.{k}": v for s, d in config.to_dict().items() for k, v in d.items()}
    for key, (low, high) in INT_RANGES.items():
        assert isinstance(flat[key], int) and low <= flat[key] <= high
    for key in FLOAT_RANGES:
        assert isinstance(flat[key], float) and math.isfinite(flat[key])


def check_parse(raw: Any, source: str = "fuzz") -> None:
    raw = materialize(raw)
    try:
        config = parse_config(raw, source=source)
    except ConfigError as error:
        one_line(error, source)
    else:
        check_config(config)


# --- values -----------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.integers(0, 12),
    st.sampled_from([2**32, 2**64, 10**30, -(10**20), 10**400, Huge(1), Huge(-1)]),
    st.floats(),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, 5e-324, 0.5, 1 / 3]),
    st.text(max_size=12),
    st.sampled_from(["", "\x00", "a\x00b", "line\nbreak", "\r", "\x1b[31m", "FedAvg", "Krum",
                     "N-BaIoT", "testbed", "cosine", "sqlite:///x.db", "databricks", "s3://b",
                     "1e9", "0x10", "1_000", ".nan", "~", "..", "-rf", "a/b", "é" * 70]),
    st.binary(max_size=4),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), st.none()), children,
                        max_size=3),
    ),
    max_leaves=8,
)
KEYS = st.one_of(
    st.sampled_from(ALL_KEYS),
    st.text(max_size=10),
    st.sampled_from(["a\nb", "x\x00", "\x1b[2J", "k" * 500, "", " epochs"]),
    st.integers(),
    st.none(),
    st.booleans(),
    st.tuples(st.integers()),
    st.just(Huge(1)),
)


@st.composite
def documents(draw: st.DrawFn) -> dict[Any, Any]:
    """A configuration-shaped mapping: real sections and keys, random values."""
    raw: dict[Any, Any] = {}
    for section in draw(st.lists(st.one_of(st.sampled_from(SECTION_NAMES), KEYS), max_size=4)):
        keys = SECTIONS.get(section, ALL_KEYS) if isinstance(section, str) else ALL_KEYS
        body = draw(st.one_of(
            st.dictionaries(st.one_of(st.sampled_from(keys), KEYS), VALUES, max_size=4),
            st.dictionaries(st.sampled_from(keys), SCALARS, max_size=6),
            VALUES,
        ))
        raw[section] = body
    return raw


# --- properties -------------------------------------------------------------------------------


@fuzz(1300)
@given(raw=st.one_of(documents(), VALUES))
# regressions: an integer beyond repr's 4,300 digits crashed the error message, and a key
# holding a line break split it
@pytest.mark.slow
@example(raw={"train_args": {"epochs": Huge(1)}})
@example(raw={"train_args": {"learning_rate": Huge(-1)}})
@example(raw={"tracking_args": {"run_name": Huge(1)}})
@example(raw={"common_args": {"random_seed": Huge(1)}})
@example(raw={"train_args": {"a\nb": 1}})
@example(raw={"environment_args": {"x\ny": 1}})
@example(raw={Huge(1): {}})
def test_parse_config(raw: Any) -> None:
    check_parse(raw)


@pytest.mark.slow
@fuzz(300)
@given(raw=documents(), overrides=st.dictionaries(
    st.one_of(st.builds(lambda s, k: f"{s}.{k}", st.sampled_from(SECTION_NAMES),
                        st.sampled_from(ALL_KEYS)), st.text(max_size=12)),
    SCALARS, max_size=3))
def test_with_overrides(raw: Any, overrides: dict[str, Any]) -> None:
    try:
        config = parse_config(materialize(raw), source="fuzz")
    except ConfigError:
        config = Config()
    try:
        check_config(config.with_overrides(materialize(overrides)))
    except ConfigError as error:
        one_line(error, "")


def yaml_safe(value: Any) -> Any:
    """``value`` with what YAML cannot write (bytes, tuples as keys) made plain."""
    if isinstance(value, dict):
        return {(yaml_safe(k) if isinstance(k, str | int | float | bool) or k is None
                 else f"key {k!r}"): yaml_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [yaml_safe(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**90:
        return float("inf")  # the YAML door refuses integer literals this long
    return value


@fuzz(450)
def config_or_one_line_error(text: str) -> None:
    """``text`` parses to a checked Config, or fails with one ConfigError line naming it."""
    try:
        config = parse_config_text(text, "fuzz.yaml")
    except ConfigError as error:
        one_line(error, "fuzz.yaml")
    else:
        check_config(config)


@given(raw=documents(), flow=st.booleans())
def test_structured_yaml_text(raw: Any, flow: bool) -> None:
    text = yaml.safe_dump(yaml_safe(materialize(raw)), default_flow_style=flow,
                          allow_unicode=True)
    config_or_one_line_error(text)


YAML_PIECES = st.one_of(
    st.sampled_from([
        "\n", "  ", ": ", "- ", "{", "}", "[", "]", ",", "? ", "&a ", "*a", "!!int ", "!!str ",
        "!!float ", "!!binary ", "!!timestamp ", "!!set ", "!!omap ", "!!python/object:os.system ",
        "<<: ", "|\n  ", ">-\n  ", "'", '"', "#", "%YAML 1.1\n", "---\n", "...\n", "\t", "\\",
        "0x1F", "0o17", "0b101", "1_000", "1:30:00", "190:20:30.15", ".inf", "-.inf", ".NaN",
        "1e400", "2001-12-14t21:59:43.10-05:00", "2024-13-45", "2001-12-14 21:59:43 +99:99",
        "~", "null", "yes", "off", "=", "9" * 120, "\x85", "\u2028", "\ufeff", "\x07", "\ud800",
    ]),
    st.sampled_from([f"{s}:\n  " for s in SECTION_NAMES]),
    st.sampled_from([f"{k}: " for k in ALL_KEYS]),
    st.text(max_size=4),
)


@fuzz(2000)
@given(pieces=st.lists(YAML_PIECES, max_size=25))
@example(pieces=["train_args:\n  ", "epochs: ", "9" * 120])
@example(pieces=["[" * 70, "]" * 70])
@example(pieces=["a: &a [1]\n", "b: ", "*a"])
@example(pieces=["!!timestamp ", "x"])  # regression: AttributeError escaped load_yaml
@example(pieces=["!!int ", '"', '"'])  # regression: IndexError escaped load_yaml
def test_yaml_ish_text(pieces: list[str]) -> None:
    text = "".join(pieces)
    config_or_one_line_error(text)
    for loader in (load_yaml, load_json):
        try:
            loader(text, "doc")
        except UnsafeInputError as error:
            one_line(error, "doc")


@fuzz(600)
@given(head=st.sampled_from([b"", b"\xef\xbb\xbf", b"train_args:\n  epochs: ", b"\xff\xfe"]),
       data=st.binary(max_size=200))
def test_config_file_bytes(folder: Path, head: bytes, data: bytes) -> None:
    path = folder / "fuzz.yaml"
    path.write_bytes(head + data)
    try:
        config = load_config(path)
    except ConfigError as error:
        one_line(error, str(path))
    else:
        check_config(config)


@fuzz(500)
@given(value=VALUES)
def test_json_documents(value: Any) -> None:
    try:
        text = json.dumps(yaml_safe(materialize(value)))
    except (TypeError, ValueError):
        return
    try:
        parse_config(load_json(text, "doc.json"), source="doc.json")
    except (ConfigError, UnsafeInputError) as error:
        one_line(error, "doc.json")
