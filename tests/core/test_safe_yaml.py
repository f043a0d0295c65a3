"""The safe YAML / JSON loader: hostile documents end in one clear error naming the source and
line, never in a hang, a memory blow-up or a traceback."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fediot.core.errors import FediotError
from fediot.core.limits import MAX_INT_DIGITS, MAX_NESTING, MAX_TEXT_BYTES
from fediot.core.safe_yaml import (
    InvalidDocumentError,
    UnsafeInputError,
    load_json,
    load_yaml,
    read_text,
)

SRC = Path(__file__).resolve().parents[2] / "src"


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """"Billion laughs": ``width ** levels`` strings from a few hundred bytes of aliases."""
    lines = [f"l0: &l0 [{','.join(['lol'] * width)}]"]
    for level in range(1, levels):
        aliases = ",".join([f"*l{level - 1}"] * width)
        lines.append(f"l{level}: &l{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def test_the_alias_bomb_is_small() -> None:
    assert len(alias_bomb().encode()) < 450  # and expands to 9 ** 9 = 387 million strings


@pytest.mark.parametrize(("document", "message"), [
    (alias_bomb(), "line 2, column 10: alias *l0 (YAML aliases are not accepted"),
    ("a: &x {b: 1}\nc:\n  <<: *x\n", "line 3, column 7: alias *x"),
    ("[" * 5000 + "]" * 5000, f"line 1, column {MAX_NESTING + 1}: nested more than "
                              f"{MAX_NESTING} levels deep"),
    ("".join(" " * i + f"k{i}:\n" for i in range(200)) + " " * 200 + "x: 1\n",
     f"line {MAX_NESTING + 1}, column {MAX_NESTING + 1}: nested more than"),
    ("a: 1" + "0" * 5000, f"line 1, column 4: an integer of 5,001 characters (the limit is "
                          f"{MAX_INT_DIGITS})"),
    ("a: 1" + ":30" * 100_000, "an integer of 300,001 characters"),  # base 60: quadratic
    ("a: 2024-13-45", "line 1, column 4: cannot read '2024-13-45' as timestamp"),
    ("a: !!python/object:os.system x", "line 1, column 4: not valid YAML: could not "
                                       "determine a constructor"),
    ("a: [1\n", "line 2, column 1: not valid YAML: while parsing a flow sequence"),
    ("a: 1\n---\nb: 2\n", "line 2, column 1: not valid YAML: expected a single document"),
    ("a: 1\nb: \x07\n", "line 2: not valid YAML: character 0x0007 is not allowed"),
    (b"a: 1\nb: caf\xe9\n", "line 2: not UTF-8 text (byte 0xe9)"),
    (b"a: 1\n\nb: x\x00y\n", "line 3: NUL byte"),
    ("a: 1\nb: \udcff\n", "line 2: not UTF-8 text"),  # an undecodable byte of argv
    ("a: " + "x" * MAX_TEXT_BYTES, f"more than the limit of {MAX_TEXT_BYTES:,}"),
])
def test_hostile_yaml_is_one_line_naming_source_and_line(document: str | bytes,
                                                         message: str) -> None:
    with pytest.raises(UnsafeInputError) as caught:
        load_yaml(document, "cfg.yaml")
    text = str(caught.value)
    assert text.startswith("cfg.yaml: ") and message in text, text
    assert "\n" not in text and len(text) < 400
    assert isinstance(caught.value, FediotError)


def test_plain_documents_load_as_before() -> None:
    document = "a: {b: [1, 2.5, .nan, x]}\nc: &anchor 3\nd: 0x10\ne: 1:30\n"
    loaded = load_yaml(document, "x")
    assert loaded["a"]["b"][:2] == [1, 2.5] and loaded["a"]["b"][3] == "x"
    assert (loaded["c"], loaded["d"], loaded["e"]) == (3, 16, 90)  # anchors alone are fine
    assert load_yaml(b"\xef\xbb\xbfa: caf\xc3\xa9\n", "x") == {"a": "café"}  # BOM dropped
    nested = "[" * MAX_NESTING + "]" * MAX_NESTING
    assert load_yaml(nested, "x") is not None
    assert load_yaml("", "x") is None


@pytest.mark.parametrize(("document", "message"), [
    ("[" * 5000 + "]" * 5000, f"nested more than {MAX_NESTING} levels deep"),
    ("[" * 100 + "]" * 100, f"nested more than {MAX_NESTING} levels deep"),
    ('{"a": 1', "line 1, column 8: not valid JSON: Expecting ',' delimiter"),
    ("[" + "1" * 5000 + "]", "not usable JSON: Exceeds the limit (4300 digits)"),
    (b'{"a": "\xff"}', "line 1: not UTF-8 text (byte 0xff)"),
])
def test_hostile_json_is_one_line(document: str | bytes, message: str) -> None:
    with pytest.raises(UnsafeInputError, match=r"^map\.json: ") as caught:
        load_json(document, "map.json")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_syntax_errors_are_invalid_documents() -> None:
    with pytest.raises(InvalidDocumentError) as caught:
        load_json("{x", "m.json")
    assert caught.value.problem.startswith("line 1, column 2: ")
    assert json.loads('{"a": [1]}') == load_json(b'{"a": [1]}', "m.json")


def test_read_text_refuses_large_missing_and_nul_paths(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_TEXT_BYTES + 1))
    with pytest.raises(UnsafeInputError, match=r"big\.yaml: larger than the limit"):
        read_text(big)
    with pytest.raises(UnsafeInputError, match=r"nope\.yaml: no such file"):
        read_text(tmp_path / "nope.yaml")
    with pytest.raises(UnsafeInputError, match="cannot contain a NUL"):
        read_text(tmp_path / "a\x00b.yaml")
    with pytest.raises(UnsafeInputError, match="cannot read"):
        read_text(tmp_path)
    if Path("/dev/zero").exists():  # endless: read no further than the limit
        with pytest.raises(UnsafeInputError, match="larger than the limit"):
            read_text(Path("/dev/zero"))


# --- the bomb end to end, in a child process that cannot hang or swamp the machine ----------

_CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from fediot.core.config import load_config, parse_config_text
    from fediot.core.detection import DeviceMap
    from fediot.core.errors import FediotError
    from fediot.faces.cli.runs_common import resolve_config

    folder = Path(sys.argv[1])
    bomb = (folder / "bomb.yaml").read_text()
    attempts = {
        "load_config": lambda: load_config(folder / "bomb.yaml"),
        "config-json": lambda: parse_config_text(bomb, "run config config-json"),
        "--set": lambda: resolve_config(None, {}, [  # the bomb as one flow mapping
            "train_args.epochs={" + bomb.strip().replace(chr(10), ", ") + "}"]),
        "device map": lambda: DeviceMap.load(folder / "bomb.yaml"),
    }
    outcome = {}
    for name, attempt in attempts.items():
        try:
            attempt()
            outcome[name] = "accepted"
        except FediotError as error:
            outcome[name] = str(error)
    print(json.dumps(outcome))
""")


def _limit_memory() -> None:
    """The child may use at most 4 GiB of address space: a regression fails, not swaps."""
    resource.setrlimit(resource.RLIMIT_AS, (4 * 1024**3, 4 * 1024**3))


@pytest.mark.slow
def test_an_alias_bomb_is_refused_everywhere_yaml_comes_in(tmp_path: Path) -> None:
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])}
    # hang guard only: the refusal takes milliseconds; the timeout catches a regression
    done = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, env=env, preexec_fn=_limit_memory,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(outcome) == {"load_config", "config-json", "--set", "device map"}
    for name, message in outcome.items():
        assert "YAML aliases are not accepted" in message, (name, message)
        assert "\n" not in message
    assert outcome["load_config"].startswith(str(tmp_path / "bomb.yaml"))
    assert outcome["config-json"].startswith("run config config-json: line 2")
    assert outcome["--set"].startswith("--set train_args.epochs: line 1")
