"""Start-up: `fediot --help` and `fediot extract` import none of the heavy libraries.

Each check runs the command in a fresh interpreter (a subprocess), since this test process may
already have imported torch. No timing is asserted: the import lists are what matter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from fediot.core.catalog import FEATURE_NAMES, N_FEATURES
from fediot.faces.cli.app import app
from fediot.faces.cli.lazy import COMMANDS, load_all

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
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


def _probe(*args: str, cwd: Path | None = None) -> tuple[int, list[str], list[str]]:
    """``fediot ARGS`` in a fresh interpreter: exit code, heavy modules imported, stderr lines
    (without the probe's own)."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args), json.dumps(sorted(HEAVY))],
        capture_output=True, text=True, timeout=300, check=False, cwd=cwd,
        env={**os.environ, "COLUMNS": "500", "PYTHONPATH": os.pathsep.join(  # cwd may move
            [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])},
    )
    *lines, last = done.stderr.strip().splitlines()
    result = json.loads(last)
    return int(result["code"]), list(result["heavy"]), [line for line in lines if line.strip()]


def _heavy_imports(*args: str) -> list[str]:
    code, heavy, lines = _probe(*args)
    assert code == 0, lines
    return heavy


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


def _bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Representative bad inputs (bench/bench_bad_inputs.py measures them all): arguments →
    the error line's expected text."""
    (tmp / "bomb.yaml").write_text("a: &a [x, x]\nb: [*a, *a]\n")
    (tmp / "typo.yaml").write_text("train_args:\n  epoch: 3\n")
    header = ",".join(FEATURE_NAMES)
    (tmp / "nan" / "Danmini_Doorbell").mkdir(parents=True)
    (tmp / "nan" / "Danmini_Doorbell" / "benign_traffic.csv").write_text(
        f"{header}\n{','.join(['1'] * (N_FEATURES - 1))},nan\n")
    return {
        "alias bomb": (["simulate", "--config", str(tmp / "bomb.yaml")],
                       "bomb.yaml: line 2, column 5: alias *a"),
        "misspelt key": (["compare", "--config", str(tmp / "typo.yaml")],
                         "unknown key train_args.epoch (did you mean train_args.epochs?)"),
        "misspelt --set": (["simulate", "--set", "train_args.epoch=3"],
                           "(did you mean train_args.epochs?)"),
        "deployment config": (["simulate", "--config", str(REPO / "config/fedml_config.yaml")],
                              "start `fediot server`"),
        "missing data folder": (["simulate", "--dataset", "N-BaIoT", "--data-dir",
                                 str(tmp / "absent")], "absent: no such folder"),
        "missing capture": (["detect", str(tmp / "absent.pcap"), "--runs-dir", str(tmp)],
                            "no runs under"),
        "NaN row": (["data", "info", str(tmp / "nan"), "--cache-dir", str(tmp / "cache")],
                    "line 2, column 115 (HpHp_L0.01_pcc): 'nan' is not a finite number"),
        "export without a run": (["export", "--format", "onnx", "--runs-dir", str(tmp)],
                                 "no runs under"),
        "serve on a bad port": (["serve", "--port", "70000"], "--port must be in 1–65535"),
        "protocol without data": (["protocol", "--dataset", "N-BaIoT", "--data-dir",
                                   str(tmp / "absent")], "absent: no such folder"),
    }


@pytest.mark.parametrize("case", ["alias bomb", "misspelt key", "misspelt --set",
                                  "deployment config", "missing data folder", "missing capture",
                                  "NaN row", "export without a run", "serve on a bad port",
                                  "protocol without data"])
def test_bad_input_is_one_error_line_before_any_heavy_import(case: str, tmp_path: Path) -> None:
    """As a user meets it: a fresh `fediot` process, one error line, exit code 2, no traceback,
    and neither torch nor Flower loaded first (their import alone costs ~2 s and ~330 MB)."""
    args, expected = _bad_inputs(tmp_path)[case]
    code, heavy, lines = _probe(*args, cwd=tmp_path)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert expected in lines[0], lines
    assert not {"torch", "flwr", "ray"} & set(heavy), heavy


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


def test_a_command_help_is_its_table_line_then_its_details() -> None:
    """`fediot export --help` shows the line `fediot --help` lists (one source: COMMANDS), then
    what the command's docstring adds; `fediot --help` shows the line alone."""
    from typer.testing import CliRunner

    load_all()
    command = typer.main.get_group(app).commands["export"]
    line, _, details = (command.help or "").partition("\n\n")
    assert line == COMMANDS["export"][1]
    assert details.startswith("The graph holds the scaler") and "\n" not in details
    top = CliRunner().invoke(app, ["--help"])
    assert top.exit_code == 0 and "Write the global model" in top.output  # wrapped to the width
    assert "The graph holds" not in top.output
