"""Start-up: `fediot --help` and `fediot extract` import none of the heavy libraries.

Each check runs the command in a fresh interpreter (a subprocess), since this test process may
already have imported torch. No timing is asserted: the import lists are what matter.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from fediot.faces.cli.app import app
from fediot.faces.cli.lazy import COMMANDS, load_all

HEAVY = {"torch", "flwr", "numba", "ray", "fastapi", "mlflow", "uvicorn", "pandas", "pyarrow",
         "dpkt"}

# Runs `python -m fediot ARGS…` in-process, then prints the heavy top-level modules it imported.
_PROBE = """
import json, runpy, sys
args, watched = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
sys.argv = ["fediot", *args]
code = 0
try:
    runpy.run_module("fediot", run_name="__main__")
except SystemExit as exit:
    code = exit.code or 0
heavy = sorted({m.split(".")[0] for m in sys.modules} & watched)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


def _heavy_imports(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(sorted(HEAVY))],
        capture_output=True, text=True, timeout=300, check=False,
    )
    last = done.stderr.strip().splitlines()[-1]
    result = json.loads(last)
    assert result["code"] == 0, done.stdout + done.stderr
    return list(result["heavy"])


def test_top_level_help_imports_no_heavy_library() -> None:
    assert _heavy_imports("--help") == []


def test_extract_help_imports_no_heavy_library() -> None:
    assert _heavy_imports("extract", "--help") == []


def test_extract_imports_neither_torch_nor_flower(real_pcap: Path, tmp_path: Path) -> None:
    output = tmp_path / "features.csv"
    heavy = _heavy_imports("extract", str(real_pcap), "--output", str(output))
    assert output.stat().st_size > 0
    assert "numba" in heavy  # the extractor kernel is compiled: expected
    assert not {"torch", "flwr", "ray", "fastapi", "mlflow"} & set(heavy)
    # every frame of the real capture is dissected by the compiled parser: dpkt is not loaded
    assert "dpkt" not in heavy


def test_python_dash_m_fediot_lists_every_command() -> None:
    done = subprocess.run([sys.executable, "-m", "fediot", "--help"], capture_output=True,
                          text=True, timeout=120, check=True)
    for name in COMMANDS:
        assert name in done.stdout


def _first_paragraph(text: str | None) -> str:
    return " ".join((text or "").split("\n\n")[0].split())


def test_the_lazy_table_matches_the_registered_commands() -> None:
    """COMMANDS (names, order-independent, and help lines) is what the modules register."""
    load_all()
    built = typer.main.get_group(app)
    assert set(built.commands) == set(COMMANDS)
    for name, (_, help_line) in COMMANDS.items():
        command = built.commands[name]
        real = _first_paragraph(command.short_help or command.help)
        assert real == _first_paragraph(help_line), name


@pytest.mark.parametrize("name", ["extract", "data", "runs"])
def test_a_lazily_loaded_command_shows_its_own_help(name: str) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output
