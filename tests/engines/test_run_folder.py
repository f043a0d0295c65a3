"""Run folders' liveness: who records a run, its heartbeat, and runs whose process is gone
reading as interrupted (real processes, real files); each device's recorded state after faults
(a real in-process run whose device misses a step)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from exited_process import exited_process, killed_run
from federated_data import synthetic_clients
from fediot.core.catalog import client_label
from fediot.core.config import Config
from fediot.core.federated.messages import LogLine, Reply
from fediot.core.federated.server import FedDetectServer, RoundRecord
from fediot.core.liveness import ProcessIdentity
from fediot.engines.inprocess import SequentialPool
from fediot.engines.run_folder import (
    HEARTBEAT_STALE_SECONDS,
    RunFolder,
    RunView,
    StatusRecorder,
    describe_excluded,
    excluded_devices,
    find_run,
    latest_run,
    list_runs,
    run_interruption,
)


def new_run(runs: Path, name: str = "run") -> tuple[RunFolder, Config]:
    config = Config().with_overrides({"tracking_args.log_file_dir": str(runs),
                                      "tracking_args.run_name": name,
                                      "train_args.comm_round": 3})
    return RunFolder.create(config), config


def write_status(folder: RunFolder, **fields: Any) -> None:
    status = {"run": folder.root.name, "state": "running", "phase": "training", "round": 1,
              "total_rounds": 3, "engine": "inprocess", "devices": {}, **fields}
    (folder.root / "status.json").write_text(json.dumps(status))


def heartbeat_thread(folder: RunFolder) -> threading.Thread | None:
    return next((t for t in threading.enumerate()
                 if t.name == f"fediot-heartbeat-{folder.root.name}"), None)


def test_status_records_its_owner_and_a_heartbeat(tmp_path: Path) -> None:
    folder, config = new_run(tmp_path)
    recorder = StatusRecorder(folder, config, ["a"])
    raw = json.loads((folder.root / "status.json").read_text())
    assert ProcessIdentity.from_dict(raw["owner"]) == ProcessIdentity.current()
    assert raw["heartbeat_at"] == raw["updated_at"]
    status = RunView(folder.root).status()
    assert status is not None and status["state"] == "running"
    assert "interrupted_because" not in status
    recorder.finish()


def test_a_killed_run_reads_as_interrupted(tmp_path: Path) -> None:
    root, pid = killed_run(tmp_path, "killed")
    raw = json.loads((root / "status.json").read_text())
    assert raw["state"] == "running" and raw["owner"]["pid"] == pid  # as the process left it
    status = RunView(root).status()
    assert status is not None
    assert (status["state"], status["recorded_state"]) == ("interrupted", "running")
    assert f"pid {pid} on " in status["interrupted_because"]
    assert (status["phase"], status["round"]) == ("training", 2)  # how far it got


def test_a_run_whose_recorded_process_exited_is_interrupted(tmp_path: Path) -> None:
    folder, _ = new_run(tmp_path)
    write_status(folder, owner=exited_process()["identity"],
                 heartbeat_at=datetime.now(UTC).isoformat())  # a fresh beat does not help
    status = RunView(folder.root).status()
    assert status is not None and status["state"] == "interrupted"


def test_a_reused_pid_does_not_keep_a_run_alive(tmp_path: Path) -> None:
    me = ProcessIdentity.current()
    if me.started is None:
        pytest.skip("no /proc: a reused pid cannot be told apart")
    folder, _ = new_run(tmp_path)
    owner = {**me.to_dict(), "started": me.started + "0"}  # this pid, another process
    write_status(folder, owner=owner, heartbeat_at=datetime.now(UTC).isoformat())
    status = RunView(folder.root).status()
    assert status is not None and status["state"] == "interrupted"


def test_a_run_on_another_host_goes_by_its_heartbeat(tmp_path: Path) -> None:
    folder, _ = new_run(tmp_path)
    now = datetime.now(UTC)
    owner = {**ProcessIdentity.current().to_dict(), "host": "elsewhere.example"}
    recent = now - timedelta(seconds=HEARTBEAT_STALE_SECONDS / 2)
    write_status(folder, owner=owner, heartbeat_at=recent.isoformat(),
                 updated_at=(now - timedelta(hours=5)).isoformat())  # a long round
    status = RunView(folder.root).status(now)
    assert status is not None and status["state"] == "running"
    later = now + timedelta(seconds=HEARTBEAT_STALE_SECONDS)
    status = RunView(folder.root).status(later)
    assert status is not None and status["state"] == "interrupted"
    assert "no heartbeat from elsewhere.example" in status["interrupted_because"]


def test_a_run_from_before_owners_goes_by_its_last_update(tmp_path: Path) -> None:
    folder, _ = new_run(tmp_path)
    now = datetime.now(UTC)
    write_status(folder, updated_at=now.isoformat(timespec="seconds"))
    assert run_interruption(json.loads((folder.root / "status.json").read_text()), now) is None
    status = RunView(folder.root).status(now + timedelta(days=1))
    assert status is not None and status["state"] == "interrupted"


def test_finished_and_failed_runs_are_never_interrupted(tmp_path: Path) -> None:
    dead = exited_process()["identity"]
    long_after = datetime.now(UTC) + timedelta(days=30)
    for state in ("finished", "failed"):
        folder, _ = new_run(tmp_path, state)
        write_status(folder, state=state, owner=dead, heartbeat_at="2020-01-01T00:00:00")
        status = RunView(folder.root).status(long_after)
        assert status is not None and status["state"] == state


def test_the_heartbeat_beats_between_events_and_stops_at_the_end(tmp_path: Path) -> None:
    folder, config = new_run(tmp_path)
    recorder = StatusRecorder(folder, config, ["a"], heartbeat_seconds=0.05)
    first = json.loads((folder.root / "status.json").read_text())
    deadline = time.monotonic() + 60  # beats are stamped to the second: wait for the next one
    latest = first
    while latest["heartbeat_at"] == first["heartbeat_at"] and time.monotonic() < deadline:
        time.sleep(0.1)
        latest = json.loads((folder.root / "status.json").read_text())
    assert latest["heartbeat_at"] > first["heartbeat_at"]
    assert latest["updated_at"] == first["updated_at"]  # a beat is not an event
    recorder.finish()
    thread = heartbeat_thread(folder)
    if thread is not None:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert json.loads((folder.root / "status.json").read_text())["state"] == "finished"


def test_a_dropped_recorder_stops_beating_and_never_recreates_its_folder(
        tmp_path: Path) -> None:
    folder, config = new_run(tmp_path)
    recorder = StatusRecorder(folder, config, ["a"], heartbeat_seconds=0.05)
    thread = heartbeat_thread(folder)
    assert thread is not None and thread.is_alive()
    for path in folder.root.iterdir():
        path.unlink()
    folder.root.rmdir()
    thread.join(timeout=30)  # the next beat finds the folder gone and stops
    assert not thread.is_alive() and not folder.root.exists()
    del recorder
    again, config = new_run(tmp_path, "again")
    StatusRecorder(again, config, ["a"], heartbeat_seconds=0.05)  # dropped at once
    thread = heartbeat_thread(again)
    if thread is not None:
        thread.join(timeout=30)
        assert not thread.is_alive()


# --- what ``latest`` means: start time, and for a model a finished run --------------------


def fake_run(runs: Path, run_id: str, state: str | None, model: bool = True,
             started: str | None = None) -> Path:
    """A run folder by hand: config, optionally status.json in ``state`` and a model file."""
    root = runs / run_id
    root.mkdir(parents=True)
    (root / "config.yaml").write_text("{}\n")
    if state is not None:
        owner = ProcessIdentity.current().to_dict()  # alive: a running run stays running
        status = {"run": run_id, "state": state, "owner": owner,
                  "heartbeat_at": datetime.now(UTC).isoformat()}
        if started is not None:
            status["started_at"] = started
        (root / "status.json").write_text(json.dumps(status))
    if model:
        (root / "model").mkdir()
        (root / "model" / "weights.npz").write_bytes(b"")
        if state is None:
            (root / "results.json").write_text("{}")
    return root


def test_latest_is_the_newest_start_and_for_a_model_the_newest_finished_run(
        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    good = fake_run(runs, "20261129-203748-nbaiot-fed-fedavg", "finished")
    failed = fake_run(runs, "20261129-210000-nbaiot-fed-fedavg", None, model=False)
    crashed = fake_run(runs, "20261129-211000-nbaiot-fed-fedavg", "failed")
    running = fake_run(runs, "20261129-212000-nbaiot-fed-fedavg", "running")
    assert [v.root for v in list_runs(runs)] == [good, failed, crashed, running]
    assert find_run("latest", runs).root == running  # any state without a model to load
    for resolved in (find_run("latest", runs, needs_model=True),
                     latest_run(runs, needs_model=True)):
        assert resolved is not None and resolved.root == good
    # reading, reporting or exporting an older run (new files in it) changes no ordering
    (good / "report.html").write_text("x")
    (good / "export").mkdir()
    assert latest_run(runs, needs_model=False).root == running  # type: ignore[union-attr]
    # an interrupted run (its process gone) is never the model either
    status = json.loads((running / "status.json").read_text())
    status["owner"]["pid"] = 2**22 + 12345
    status["heartbeat_at"] = "2000-01-01T00:00:00+00:00"
    (running / "status.json").write_text(json.dumps(status))
    assert latest_run(runs, needs_model=True).root == good  # type: ignore[union-attr]
    # a run without a timestamped id goes by status.json's start time
    named = fake_run(runs, "cam", "finished", started="2026-11-29T22:00:00+00:00")
    assert latest_run(runs, needs_model=True).root == named  # type: ignore[union-attr]
    fake_run(tmp_path / "other", "x", "failed")
    with pytest.raises(Exception, match="no finished run with a saved model"):
        find_run("latest", tmp_path / "other", needs_model=True)


def test_status_records_the_start_and_a_resume_keeps_it(tmp_path: Path) -> None:
    folder, config = new_run(tmp_path)
    recorder = StatusRecorder(folder, config, ["a"])
    recorder.finish("failed")
    started = json.loads((folder.root / "status.json").read_text())["started_at"]
    time.sleep(1.1)
    again = StatusRecorder(folder, config, ["a"])  # what --resume does
    again.finish()
    assert json.loads((folder.root / "status.json").read_text())["started_at"] == started
    assert RunView(folder.root).started_at() == datetime.fromisoformat(started)


def test_a_resume_keeps_each_devices_rejected_replies(tmp_path: Path) -> None:
    from fediot.core.federated.validation import Rejection

    folder, config = new_run(tmp_path)
    recorder = StatusRecorder(folder, config, ["a", "b"])
    recorder.on_rejected(Rejection("a", "fit", 1, "tired"))
    recorder.on_rejected(Rejection("a", "fit", 2, "weights[0] holds NaN or infinite values"))
    recorder.finish("failed")
    again = StatusRecorder(folder, config, ["a", "b", "c"])  # what --resume does
    devices = json.loads((folder.root / "status.json").read_text())["devices"]
    assert devices["a"]["rejected"] == 2 and devices["a"]["state"] == "idle"
    assert devices["a"]["last_rejection"] == (
        "a (fit, round 2): weights[0] holds NaN or infinite values")
    assert devices["b"]["rejected"] == devices["c"]["rejected"] == 0
    again.on_rejected(Rejection("a", "fit", 3, "tired"))
    again.finish()
    devices = json.loads((folder.root / "status.json").read_text())["devices"]
    assert devices["a"]["rejected"] == 3


# --- device state after faults ------------------------------------------------------------------


class _StatusSnapshots:
    """An inner observer keeping status.json as it stood after each round."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self.after_round: dict[int, dict[str, Any]] = {}

    def on_phase(self, phase: str, detail: str) -> None:
        pass

    def on_round(self, record: RoundRecord) -> None:
        status = json.loads((self.folder.root / "status.json").read_text())
        self.after_round[record.server_round] = status["devices"]

    def on_logs(self, lines: Sequence[LogLine]) -> None:
        pass


def _flaky_run(tmp_path: Path, silent_round: int) -> tuple[RunFolder, _StatusSnapshots, str]:
    """A real in-process run of 3 devices and 3 rounds in which one device does not answer
    its training task of ``silent_round`` (as if killed and restarted), recorded as every
    engine records it."""
    clients = synthetic_clients()
    victim = clients[2].client_id
    config = Config().with_overrides({
        "tracking_args.log_file_dir": str(tmp_path), "tracking_args.run_name": "flaky",
        "train_args.client_num_in_total": 3, "train_args.client_num_per_round": 3,
        "train_args.comm_round": 3, "detection_args.window": 5})
    folder = RunFolder.create(config)
    snapshots = _StatusSnapshots(folder)
    recorder = StatusRecorder(folder, config, [c.client_id for c in clients], inner=snapshots)

    class Pool(SequentialPool):
        def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]:
            return super().exchange(method, {
                cid: task for cid, task in tasks.items()
                if not (method == "fit" and cid == victim
                        and task.server_round == silent_round)})

    result = FedDetectServer(config, recorder).run(Pool(clients))
    folder.save_results(result)
    recorder.finish()
    return folder, snapshots, victim


def test_a_device_that_answers_again_is_online_and_its_loss_and_rejoin_are_logged(
        tmp_path: Path) -> None:
    folder, snapshots, victim = _flaky_run(tmp_path, silent_round=2)
    assert snapshots.after_round[2][victim]["state"] == "lost"
    assert snapshots.after_round[2][victim]["last_round"] == 1
    view = RunView(folder.root)
    status = view.status()
    assert status is not None
    device = status["devices"][victim]
    # it trained in round 3 and answered the threshold and evaluation steps after it
    assert device["state"] == "online" and device["last_round"] == 3
    assert device["last_seen"] >= snapshots.after_round[3][victim]["last_seen"]
    lines = [line for line in view.logs() if line["device"] == victim
             and line["message"].startswith(("lost:", "rejoined:"))]
    assert [(line["step"], line["round"], line["level"]) for line in lines] == [
        ("fit", 2, "WARNING"), ("fit", 3, "INFO")]
    results = view.results()
    assert results is not None and results["excluded_devices"] == {}
    assert victim in results["evaluation"]["devices"]


def test_a_device_silent_in_the_last_round_is_left_out_and_the_results_say_why(
        tmp_path: Path) -> None:
    folder, _, victim = _flaky_run(tmp_path, silent_round=3)
    view = RunView(folder.root)
    excluded = excluded_devices(view.results())
    assert excluded == {victim: "no reply to its last training round (round 3)"}
    assert describe_excluded(excluded) == (
        "left out of the threshold and evaluation (train_args.stale_after_missed_rounds): "
        f"{client_label(victim)}: no reply to its last training round (round 3)")
    assert victim not in (view.results() or {})["evaluation"]["devices"]
    status = view.status()
    assert status is not None and status["devices"][victim]["state"] == "lost"
    assert any(line["device"] == victim and line["message"].startswith("left out")
               for line in view.logs())


def test_a_checkpoint_keeps_every_rejected_reply(tmp_path: Path) -> None:
    from fediot.core.federated.messages import DataReport, ModelState
    from fediot.core.federated.server import ServerState
    from fediot.core.federated.validation import Rejection
    from fediot.core.model import ScalerStats, build_autoencoder, get_weights

    folder, _ = new_run(tmp_path / "runs")
    rejections = [Rejection("a", "scaler_stats", None, "refused: 6 training rows"),
                  Rejection("b", "fit", 2, "weights[3] holds NaN or infinite values"),
                  Rejection("a", "fit", 2, "no data report from the scaler step")]
    state = ServerState(ModelState(get_weights(build_autoencoder(seed=0)), ScalerStats.empty()),
                        {}, [], None, {"b": DataReport(train=30, opt=10)}, rejections)
    folder.save_checkpoint(state)
    loaded = folder.load_checkpoint()
    assert loaded.rejections == rejections and loaded.data == state.data
    # a checkpoint of an earlier version, without them: none
    with np.load(folder.root / "checkpoint.npz") as data:
        arrays = dict(data)
    meta = json.loads(bytes(arrays["meta"]).decode())
    del meta["rejections"]
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    with (folder.root / "checkpoint.npz").open("wb") as f:
        np.savez(f, **arrays)
    assert folder.load_checkpoint().rejections == []
