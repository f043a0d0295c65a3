"""Liveness of processes and leftovers: real child processes, real files in tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exited_process import child_env, exited_process
from fediot.core.liveness import (
    STALE_SECONDS,
    ProcessIdentity,
    last_change,
    owner_tag,
    pid_alive,
    process_start,
    remove_stale,
    tag_alive,
)

LINUX_PROC = Path("/proc/self/stat").is_file()


def test_this_process_is_alive_by_identity_and_by_tag() -> None:
    me = ProcessIdentity.current()
    assert me.pid == os.getpid() and me.on_this_machine()
    assert me.alive() is True
    assert tag_alive(owner_tag()) is True
    assert ProcessIdentity.from_dict(me.to_dict()) == me


def test_an_exited_process_is_dead_by_identity_and_by_tag() -> None:
    report = exited_process()
    identity = ProcessIdentity.from_dict(report["identity"])
    assert identity is not None and identity.pid != os.getpid()
    assert identity.alive() is False
    assert tag_alive(report["tag"]) is False


def test_a_child_is_alive_while_it_runs_and_dead_once_it_exits() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE, env=child_env())
    try:
        started = process_start(child.pid)
        assert pid_alive(child.pid, started) is True
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(timeout=60)
    assert pid_alive(child.pid, started) is False


@pytest.mark.skipif(not LINUX_PROC, reason="zombies are told apart through /proc")
def test_an_exited_child_not_yet_reaped_is_dead() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 60  # a generous guard: it exits right away
        while pid_alive(child.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert pid_alive(child.pid) is False  # a zombie until waited for below
        assert Path(f"/proc/{child.pid}").exists()
    finally:
        child.wait(timeout=60)


@pytest.mark.skipif(not LINUX_PROC, reason="start tokens come from /proc")
def test_a_reused_pid_is_not_the_recorded_process() -> None:
    me = ProcessIdentity.current()
    assert me.started is not None
    boot, _, ticks = me.started.rpartition(":")
    earlier = ProcessIdentity(me.host, me.pid, f"{boot}:{int(ticks) - 1}", me.namespace)
    assert earlier.alive() is False
    pid, start, machine = owner_tag().split("-")
    assert tag_alive(f"{pid}-{'0' * 8 if start != '0' * 8 else '1' * 8}-{machine}") is False


def test_another_machine_cannot_be_checked() -> None:
    me = ProcessIdentity.current()
    elsewhere = ProcessIdentity("elsewhere.example", me.pid, me.started, me.namespace)
    assert elsewhere.alive() is None
    pid, start, _ = owner_tag().split("-")
    assert tag_alive(f"{pid}-{start}-00000000") is None
    assert tag_alive("no-tag-here") is None
    assert ProcessIdentity.from_dict({"host": "h", "pid": "12"}) is None


def _aged(path: Path, seconds: float) -> Path:
    """Set the modification time of ``path`` and everything in it ``seconds`` back."""
    moment = time.time() - seconds
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.utime(item, (moment, moment))
    return path


def test_remove_stale_removes_dead_and_old_unknown_leftovers_only(tmp_path: Path) -> None:
    dead_tag = exited_process()["tag"]
    dead = tmp_path / f"dead-{dead_tag}"
    (dead / "deep").mkdir(parents=True)
    (dead / "deep" / "file").write_text("x")
    live = tmp_path / f"live-{owner_tag()}.tmp"
    live.write_text("x")
    _aged(live, 10 * STALE_SECONDS)
    old_unknown = tmp_path / "old-1234-abcdef12.tmp"
    old_unknown.write_text("x")
    _aged(old_unknown, 2 * STALE_SECONDS)
    young_unknown = tmp_path / "young-1234-abcdef12.tmp"
    young_unknown.write_text("x")
    candidates = [(dead, dead_tag), (live, owner_tag()), (old_unknown, "1234-abcdef12"),
                  (young_unknown, "1234-abcdef12"), (tmp_path / "vanished", dead_tag)]
    removed = remove_stale(candidates)
    assert sorted(removed) == sorted([dead, old_unknown])
    assert not dead.exists() and not old_unknown.exists()
    assert live.exists() and young_unknown.exists()  # a live owner's file, however old


def test_last_change_sees_a_write_deep_in_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "build"
    (folder / "a" / "b").mkdir(parents=True)
    _aged(folder, 3600)
    (folder / "a" / "b" / "new").write_text("x")
    os.utime(folder / "a" / "b", (time.time() - 3600,) * 2)
    assert time.time() - last_change(folder) < 600
