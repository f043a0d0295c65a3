"""scripts/setup.sh: the CPU build of torch, a fast fallback, the CUDA switch, runtime vs dev.

The logic is checked offline: the script's functions run with a fake interpreter (``VENV_PY``)
that records each ``-m pip`` call instead of running pip, a fake ``uname`` for the platform and a
local HTTP server for a reachable index. One test asks PyTorch's real CPU index (a pip dry run) and
skips when that index is unreachable.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from ports import free_port

REPO = Path(__file__).resolve().parents[2]
SETUP = REPO / "scripts" / "setup.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


@pytest.fixture
def fakes(tmp_path: Path) -> Path:
    """bin/uname (says $FAKE_UNAME_S, $FAKE_UNAME_M); bin/python (logs `-m pip` to $PIP_LOG)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "uname").write_text(
        '#!/bin/sh\ncase "$1" in -s) echo "$FAKE_UNAME_S" ;; -m) echo "$FAKE_UNAME_M" ;; esac\n'
    )
    (bin_dir / "python").write_text(
        '#!/bin/sh\nif [ "$1" = -m ] && [ "$2" = pip ]; then\n'
        '    shift 2; echo "$*" >> "$PIP_LOG"; exit 0\nfi\n'
        f'exec "{sys.executable}" "$@"\n'
    )
    for fake in bin_dir.iterdir():
        fake.chmod(0o755)
    return bin_dir


def _env(fakes: Path, system: str = "Linux", machine: str = "x86_64",
         **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDIOT_TORCH")}
    env.update(PATH=f"{fakes}:{env['PATH']}", VENV_PY=str(fakes / "python"),
               PIP_LOG=str(fakes / "pip.log"), FAKE_UNAME_S=system, FAKE_UNAME_M=machine, **extra)
    return env


def _install_torch(fakes: Path, cpu_index: str | None = None,
                   **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Source setup.sh and run install_torch (torch counted as not installed); → pip calls."""
    override = f"TORCH_CPU_INDEX={cpu_index}; " if cpu_index else ""
    script = f'source "{SETUP}"; {override}torch_installed() {{ return 1; }}; install_torch'
    done = subprocess.run(["bash", "-c", script], env=_env(fakes, **env), capture_output=True,
                          text=True, timeout=60, check=False)
    log = fakes / "pip.log"
    return done, log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def index_url(tmp_path: Path) -> Iterator[str]:
    """A reachable fake index: http://127.0.0.1:PORT/whl/cpu with a torch/ page."""
    (tmp_path / "www" / "whl" / "cpu" / "torch").mkdir(parents=True)
    (tmp_path / "www" / "whl" / "cpu" / "torch" / "index.html").write_text("<html></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=tmp_path / "www")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def dead_url() -> str:
    """An index nothing listens on (connection refused at once)."""
    return f"http://127.0.0.1:{free_port()}/whl/cpu"


def test_the_default_cpu_index_is_pytorchs() -> None:
    done = subprocess.run(["bash", "-c", f'source "{SETUP}"; echo "$TORCH_CPU_INDEX"'],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == CPU_INDEX


def test_linux_x86_64_installs_torch_from_the_cpu_index(fakes: Path, index_url: str) -> None:
    done, calls = _install_torch(fakes, cpu_index=index_url)
    assert done.returncode == 0, done.stderr
    assert len(calls) == 1
    assert calls[0].startswith("install torch==2.13.0 --index-url " + index_url)


def test_an_unreachable_cpu_index_falls_back_to_the_default_index(fakes: Path,
                                                                  dead_url: str) -> None:
    done, calls = _install_torch(fakes, cpu_index=dead_url)
    assert done.returncode == 0, done.stderr
    assert calls == ["install torch==2.13.0"]
    assert "does not answer" in done.stderr


@pytest.mark.parametrize(("system", "machine"), [("Darwin", "arm64"), ("Linux", "aarch64")])
def test_elsewhere_pypis_torch_is_already_cpu_only(fakes: Path, dead_url: str, system: str,
                                                   machine: str) -> None:
    done, calls = _install_torch(fakes, cpu_index=dead_url, system=system, machine=machine)
    assert done.returncode == 0, done.stderr
    assert calls == ["install torch==2.13.0"]
    assert "does not answer" not in done.stderr  # no probe at all


def test_fediot_torch_cuda_uses_the_default_index(fakes: Path, index_url: str) -> None:
    done, calls = _install_torch(fakes, cpu_index=index_url, FEDIOT_TORCH="cuda")
    assert done.returncode == 0, done.stderr
    assert calls == ["install torch==2.13.0"]


def test_fediot_torch_index_chooses_the_index(fakes: Path, index_url: str) -> None:
    done, calls = _install_torch(fakes, system="Darwin", machine="arm64",
                                 FEDIOT_TORCH_INDEX=index_url)
    assert done.returncode == 0, done.stderr
    assert calls[0].startswith("install torch==2.13.0 --index-url " + index_url)


def test_an_unreachable_chosen_index_fails_rather_than_falls_back(fakes: Path,
                                                                  dead_url: str) -> None:
    done, calls = _install_torch(fakes, FEDIOT_TORCH_INDEX=dead_url)
    assert done.returncode != 0
    assert calls == []


def test_an_unknown_fediot_torch_is_an_error(fakes: Path) -> None:
    done, calls = _install_torch(fakes, FEDIOT_TORCH="rocm")
    assert done.returncode != 0
    assert "FEDIOT_TORCH must be cpu or cuda" in done.stderr
    assert calls == []


def test_runtime_and_dev_modes_and_the_stamp(fakes: Path, tmp_path: Path) -> None:
    """runtime installs .[simulation], dev .[dev]; re-runs only on a new pyproject or mode."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, repo / "scripts" / "setup.sh")
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    (repo / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(fakes / "python", repo / ".venv" / "bin" / "python")
    env = _env(fakes)
    del env["VENV_PY"]  # the script's own .venv/bin/python: the fake
    log = fakes / "pip.log"

    def setup(*args: str) -> list[str]:
        log.unlink(missing_ok=True)
        done = subprocess.run(["bash", str(repo / "scripts" / "setup.sh"), *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return log.read_text().splitlines() if log.exists() else []

    runtime = setup()
    assert runtime[-1] == "install -e .[simulation]"
    assert not any(".[dev]" in call for call in runtime)
    assert setup("runtime") == []
    assert setup("dev")[-1] == "install -e .[dev]"
    assert setup("runtime") == []  # dev includes runtime
    assert setup("dev") == []
    with (repo / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n# changed\n")
    assert setup("runtime")[-1] == "install -e .[simulation]"
    bad = subprocess.run(["bash", str(repo / "scripts" / "setup.sh"), "everything"], env=env,
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 2


def test_device_mode_installs_the_base_without_torch(fakes: Path, tmp_path: Path) -> None:
    """device (or --device) installs .[device] and never torch; a runtime venv serves it."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(SETUP, repo / "scripts" / "setup.sh")
    shutil.copy(REPO / "pyproject.toml", repo / "pyproject.toml")
    (repo / ".venv" / "bin").mkdir(parents=True)
    shutil.copy(fakes / "python", repo / ".venv" / "bin" / "python")
    env = _env(fakes)
    del env["VENV_PY"]
    log = fakes / "pip.log"

    def setup(*args: str) -> list[str]:
        log.unlink(missing_ok=True)
        done = subprocess.run(["bash", str(repo / "scripts" / "setup.sh"), *args], env=env,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return log.read_text().splitlines() if log.exists() else []

    calls = setup("--device")
    assert calls[-1] == "install -e .[device]"
    assert not any("torch" in call for call in calls), calls
    assert setup("device") == []
    assert setup("runtime")[-1] == "install -e .[simulation]"  # a device venv is not enough
    assert setup("device") == []  # a runtime venv is


def _cpu_index_reachable() -> bool:
    try:
        urllib.request.urlopen(CPU_INDEX + "/torch/", timeout=5).read(1)
    except OSError:
        return False
    return True


@pytest.mark.slow
def test_a_dry_run_install_on_linux_x86_64_resolves_no_nvidia_package(tmp_path: Path) -> None:
    """The acceptance check: torch from the CPU index, as setup.sh asks for it, for Linux x86_64."""
    if not _cpu_index_reachable():
        pytest.skip(f"PyTorch's CPU index {CPU_INDEX} is unreachable from here")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), "torch==2.13.0", "--index-url", CPU_INDEX,
         "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
         "--implementation", "cp", "--only-binary=:all:", "--timeout", "30"],
        env=env, check=True, timeout=600,
    )
    installs = json.loads(report.read_text())["install"]
    names = {item["metadata"]["name"].lower() for item in installs}
    assert "torch" in names
    assert not [name for name in names if name.startswith("nvidia")], names
    torch = next(item for item in installs if item["metadata"]["name"].lower() == "torch")
    assert torch["metadata"]["version"].endswith("+cpu")
