"""A run's folder on disk: what every engine records, file by file, each written atomically.

::

    runs/<run id>/
      config.yaml        the resolved configuration
      metrics.jsonl      one JSON line per round (loss, learning rate, devices, system figures:
                         time, CPU, peak memory, bytes down/up per device)
      logs.jsonl         the devices' log lines, one JSON object each (``LogLine.to_dict``:
                         time, device, round, step, level, message), appended as steps end,
                         and the server's lines about a device (lost, rejoined, left out of
                         the threshold and evaluation)
      status.json        state, phase, round and each device's state, when the run started
                         (``started_at``, kept on resume), the process that runs it and its
                         heartbeat (``StatusRecorder``; read through
                         ``RunView.status``, which shows a dead run as ``interrupted``)
      checkpoint.npz     the last completed round's server state (for ``--resume``)
      results.json       final per-device and pooled metrics, thresholds, and per device the
                         benign/attack score histograms of the test split (``error_stats``);
                         the replies the server rejected, counted per device (``rejected``)
                         and listed with their reasons (``rejections``); with
                         ``privacy_args.enabled``, the run's (ε, δ) and noise (``privacy``);
                         the devices left out of the threshold and evaluation steps, with
                         why (``excluded_devices``: missed their last training rounds)
      comparison.json    federated / centralised / local metrics (``fediot compare``)
      model/weights.npz  global autoencoder weights (arrays w0, w1, …)
      model/scaler.npz   pooled scaler statistics (n, sum, sumsq)
      model/thresholds.json
      models/round-NNNN.npz  the global model after each round (weights w0, w1, …, and the
                         pooled scaler statistics scaler_n, scaler_sum, scaler_sumsq)
      mlflow.json        the MLflow run this run is mirrored to (only with MLflow tracking)

:class:`RunFolder` writes a run; :class:`RunView` reads one, finished or still running, for the
faces (``fediot runs``, reports, dashboard, serving). Runs are ordered by when they started
(:meth:`RunView.started_at`), never by file times, so reading a run reorders nothing;
:func:`latest_run` is what ``latest`` means to every face.
"""

from __future__ import annotations

import json
import math
import re
import threading
import weakref
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from fediot.core.catalog import client_label
from fediot.core.config import Config, dump_config, load_config, run_name_problem
from fediot.core.errors import FediotError
from fediot.core.io import atomic_path
from fediot.core.liveness import ProcessIdentity

if TYPE_CHECKING:
    # These load torch (about 1–2 s and 200 MB): imported where a model is read or written,
    # so that listing and finding runs (`fediot runs`, `status`, `detect`'s run lookup) and
    # refusing a bad one stay light.
    from fediot.core.federated.evaluation import EvaluationSummary, Thresholds
    from fediot.core.federated.messages import LogLine, ModelState
    from fediot.core.federated.participation import StepContact
    from fediot.core.federated.server import RoundRecord, RunObserver, RunResult, ServerState
    from fediot.core.federated.validation import Rejection
    from fediot.core.model import AutoencoderDetector

_ID_STAMP: Final[re.Pattern[str]] = re.compile(r"^(\d{8}-\d{6})(?:-|$)")


def new_run_id(config: Config, kind: str = "fed") -> str:
    """``YYYYmmdd-HHMMSS-<dataset>-<optimizer>``, or the configured ``run_name``."""
    if config.tracking_args.run_name:
        # parse_config already refused unsafe names; a Config built by hand is not parsed, and
        # the run folder must never be '.', '..' or hidden
        problem = run_name_problem(config.tracking_args.run_name)
        if problem:
            raise FediotError(f"tracking_args.run_name: {problem}")
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", config.tracking_args.run_name)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    dataset = config.data_args.dataset.lower().replace("-", "")
    return f"{stamp}-{dataset}-{kind}-{config.train_args.federated_optimizer.lower()}"


MAX_REJECTIONS_KEPT: Final[int] = 1000
"""Rejected replies ``results.json`` lists with their reasons at most (all are counted)."""


def rejection_counts(rejections: Sequence[Rejection]) -> dict[str, int]:
    """Client id → how many of its replies were rejected."""
    counts: dict[str, int] = {}
    for rejection in rejections:
        counts[rejection.device] = counts.get(rejection.device, 0) + 1
    return counts


def _write_text(path: Path, text: str, make_parents: bool = True) -> None:
    with atomic_path(path, make_parents) as tmp:
        tmp.write_text(text)


def _write_json(path: Path, payload: Any, make_parents: bool = True) -> None:
    _write_text(path, json.dumps(payload, indent=2, default=_jsonable) + "\n", make_parents)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


class RunFolder:
    """Writes one run's files.

    Parameters
    ----------
    root
        The run's folder (created).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def create(cls, config: Config, kind: str = "fed") -> RunFolder:
        """A new folder under ``tracking_args.log_file_dir``, with the config written."""
        base = Path(config.tracking_args.log_file_dir).expanduser()
        run_id = new_run_id(config, kind)
        path = base / run_id
        n = 1
        while path.exists():
            n += 1
            path = base / f"{run_id}-{n}"
        folder = cls(path)
        _write_text(folder.root / "config.yaml", dump_config(config))
        return folder

    def save_model(self, model: ModelState, thresholds: Thresholds) -> None:
        """Global weights, scaler statistics and thresholds under ``model/``."""
        folder = self.root / "model"
        with atomic_path(folder / "weights.npz") as tmp, tmp.open("wb") as f:
            arrays: dict[str, Any] = {f"w{i}": w for i, w in enumerate(model.weights)}
            np.savez(f, **arrays)
        with atomic_path(folder / "scaler.npz") as tmp, tmp.open("wb") as f:
            np.savez(f, n=np.asarray(model.scaler.n), sum=model.scaler.sum,
                     sumsq=model.scaler.sumsq)
        _write_json(folder / "thresholds.json", thresholds.to_dict())

    def save_checkpoint(self, state: ServerState) -> None:
        """``checkpoint.npz`` (model, scaler, optimiser state, rounds, the devices' data
        reports and every rejected reply so far) in one atomic write, and
        ``metrics.jsonl`` rewritten from the same rounds, so the two never disagree."""
        arrays: dict[str, Any] = {f"w{i}": w for i, w in enumerate(state.model.weights)}
        arrays.update(scaler_n=np.asarray(state.model.scaler.n),
                      scaler_sum=state.model.scaler.sum, scaler_sumsq=state.model.scaler.sumsq)
        for key, value in state.strategy_state.items():
            arrays[f"strategy_{key}"] = np.asarray(value)
        if state.best is not None:  # the best round so far, kept in full for a resumed run
            arrays.update({f"best_w{i}": w for i, w in enumerate(state.best[1].weights)})
        meta = {"rounds": [r.to_dict() for r in state.history],
                "weights": len(state.model.weights),
                "strategy_keys": sorted(state.strategy_state),
                "best_round": None if state.best is None else state.best[0],
                "data": {cid: report.to_dict() for cid, report in state.data.items()},
                "rejections": [r.to_dict() for r in state.rejections]}
        arrays["meta"] = np.frombuffer(json.dumps(meta, default=_jsonable).encode(), np.uint8)
        with atomic_path(self.root / "checkpoint.npz") as tmp, tmp.open("wb") as f:
            np.savez(f, **arrays)
        if state.history:
            round_arrays = {k: v for k, v in arrays.items()
                            if k.startswith(("w", "scaler_"))}
            path = self.root / "models" / f"round-{state.history[-1].server_round:04d}.npz"
            with atomic_path(path) as tmp, tmp.open("wb") as f:
                np.savez(f, **round_arrays)
        _write_text(self.root / "metrics.jsonl", "".join(
            json.dumps(r.to_dict(), default=_jsonable) + "\n" for r in state.history))

    def load_checkpoint(self) -> ServerState:
        """The state :meth:`save_checkpoint` wrote; a clear error if there is none."""
        from fediot.core.federated.messages import DataReport, ModelState
        from fediot.core.federated.server import RoundRecord, ServerState
        from fediot.core.federated.validation import Rejection
        from fediot.core.model import ScalerStats

        path = self.root / "checkpoint.npz"
        if not path.is_file():
            raise FediotError(f"{self.root}: no checkpoint.npz to resume from")
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            weights = [data[f"w{i}"] for i in range(meta["weights"])]
            scaler = ScalerStats(int(data["scaler_n"]), data["scaler_sum"],
                                 data["scaler_sumsq"])
            strategy = {k: data[f"strategy_{k}"] for k in meta["strategy_keys"]}
            best_round = meta.get("best_round")
            best = None if best_round is None else (int(best_round), ModelState(
                [data[f"best_w{i}"] for i in range(meta["weights"])], scaler))
        history = [RoundRecord(
            server_round=r["round"], learning_rate=r["learning_rate"], clients=r["clients"],
            answered=r["answered"], train_loss=r["train_loss"], num_examples=r["num_examples"],
            seconds=r["seconds"], system=r["system"], evaluation=r["evaluation"],
            validation_loss=r.get("validation_loss"), rejected=r.get("rejected") or {},
        ) for r in meta["rounds"]]
        reports = {cid: DataReport(**counts) for cid, counts in meta.get("data", {}).items()}
        rejections = [Rejection(r["device"], r["step"], r["round"], r["reason"])
                      for r in meta.get("rejections", [])]  # none in an older checkpoint
        return ServerState(ModelState(weights, scaler), strategy, history, best, reports,
                           rejections)

    def append_logs(self, lines: Sequence[LogLine]) -> None:
        """Append devices' log lines to ``logs.jsonl`` in one write (a reader may see the last
        line half-written while it is appended; :meth:`RunView.logs` skips it)."""
        if not lines:
            return
        text = "".join(json.dumps(line.to_dict()) + "\n" for line in lines)
        with (self.root / "logs.jsonl").open("a", encoding="utf-8") as f:
            f.write(text)

    def load_config(self) -> Config:
        """The run's resolved configuration (``config.yaml``)."""
        return load_config(self.root / "config.yaml")

    def save_results(self, result: RunResult, extra: dict[str, Any] | None = None) -> None:
        """``results.json`` and the model files."""
        from fediot.core.federated.evaluation import threshold_row_rates

        self.save_model(result.model, result.thresholds)
        _write_json(self.root / "results.json", {
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "thresholds": result.thresholds.to_dict(),
            "evaluation": result.evaluation.to_dict(),
            "rounds": len(result.history),
            "model_round": result.model_round,
            "stopped_early": result.stopped_early,
            "devices_data": {cid: report.to_dict() for cid, report in result.data.items()},
            "threshold_stats": {cid: stats.to_dict()
                                for cid, stats in result.threshold_stats.items()},
            "threshold_row_rates": threshold_row_rates(result.threshold_stats,
                                                       result.thresholds.per_device),
            "error_stats": {r.client_id: {"benign": r.benign_errors.to_dict(),
                                          "attack": r.attack_errors.to_dict()}
                            for r in result.reports},
            "rejected": rejection_counts(result.rejections),
            "rejections": [r.to_dict() for r in result.rejections[:MAX_REJECTIONS_KEPT]],
            "privacy": result.privacy,
            "excluded_devices": dict(result.excluded),
            **(extra or {}),
        })

    def save_comparison(self, summaries: Mapping[str, EvaluationSummary]) -> None:
        """``comparison.json``: each training mode's evaluation (federated, centralised, …)."""
        _write_json(self.root / "comparison.json",
                    {name: summary.to_dict() for name, summary in summaries.items()})


LIVE_STATES: Final[frozenset[str]] = frozenset({"running", "starting"})
"""Recorded states that claim a process is still working on the run."""

HEARTBEAT_SECONDS: Final[float] = 15.0
"""How often a running run's ``status.json`` gets a fresh ``heartbeat_at``, between events too
(one round of many local epochs can take minutes)."""

HEARTBEAT_STALE_SECONDS: Final[float] = 180.0
"""A run recorded as running on another machine whose heartbeat is older than this reads as
interrupted: twelve missed beats, so a busy disk, a process briefly starved of the GIL or a
minute or two of clock skew between the machines do not make a live run look dead."""


def _now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _earlier_status(root: Path) -> dict[str, Any]:
    """The ``status.json`` a resumed run already has ({} for a new run or an unreadable one)."""
    try:
        earlier = json.loads((root / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return earlier if isinstance(earlier, dict) else {}


def _first_start(earlier: Mapping[str, Any]) -> str:
    """When the run first started: a resumed run keeps the time its ``status.json`` already
    records, so resuming an old run does not make it the newest."""
    started = earlier.get("started_at")
    return started if isinstance(started, str) and parse_time(started) is not None \
        else _now_text()


def _device_entry(earlier: Mapping[str, Any], device: str) -> dict[str, Any]:
    """A device's entry at the start: idle, with the rejected replies (count, latest) it had
    before a resume."""
    devices = earlier.get("devices")
    known = devices.get(device) if isinstance(devices, dict) else None
    known = known if isinstance(known, dict) else {}
    count, last = known.get("rejected"), known.get("last_rejection")
    return {"state": "idle", "last_seen": None, "last_round": None,
            "rejected": count if isinstance(count, int) and count >= 0 else 0,
            "last_rejection": last if isinstance(last, str) else None}


def _beat(recorder: weakref.ref[StatusRecorder], stop: threading.Event, seconds: float) -> None:
    """The heartbeat thread: holds only a weak reference, so a recorder dropped without
    :meth:`StatusRecorder.finish` (a test, an embedding program) stops its thread too."""
    while not stop.wait(seconds):
        alive = recorder()
        if alive is None or not alive.heartbeat():
            return
        del alive  # not kept across the wait, or the weak reference would never clear


class StatusRecorder:
    """A run observer that keeps ``status.json`` current (what ``fediot status`` shows) and
    appends the devices' log lines to ``logs.jsonl``, then passes every event on to ``inner``.

    ``status.json``: ``state`` (running / finished / failed), ``phase``, ``round`` of
    ``total_rounds``, ``engine``, ``started_at`` (the first start; a resume keeps it),
    ``updated_at`` (the last event), ``owner`` (host, pid, start token and pid namespace
    of the process recording the run:
    :class:`~fediot.core.liveness.ProcessIdentity`), ``heartbeat_at`` (refreshed every
    ``heartbeat_seconds`` by a daemon thread while the run is running), and per device its
    ``state``, ``last_seen``, ``last_round``, ``rejected`` (how many of its replies the
    server rejected) and ``last_rejection`` (the latest reason, with its step and round).
    Every exchange with the devices (``on_contact``, any step, not only training) updates the
    devices asked: one that answered is ``online`` with ``last_seen`` now and ``last_round``
    the run's round (so a device that was lost and came back reads ``online`` from its first
    answer), one that did not is ``lost``. Before its first answer a device is ``idle``;
    while a round trains, the devices not lost are ``training``. A process killed
    outright cannot mark its run ``failed``; the owner and the heartbeat let
    :func:`run_interruption` tell such a run from a live one.

    Parameters
    ----------
    folder, config
        The run's folder and configuration.
    devices
        The run's client ids.
    inner
        The observer every event is passed on to (default: none).
    engine
        What ``status.json`` calls the engine (default ``comm_args.backend``).
    heartbeat_seconds
        Seconds between heartbeats (default :data:`HEARTBEAT_SECONDS`).
    """

    def __init__(self, folder: RunFolder, config: Config, devices: list[str],
                 inner: RunObserver | None = None, engine: str | None = None,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS) -> None:
        self.folder = folder
        self.inner = inner
        # the heartbeat thread writes too: one write at a time, and never while an event
        # handler is halfway through changing the dict
        self._lock = threading.RLock()
        earlier = _earlier_status(folder.root)  # a resumed run's: its start, its rejections
        self.status: dict[str, Any] = {
            "run": folder.root.name, "state": "running", "phase": "starting", "round": 0,
            "started_at": _first_start(earlier),
            "total_rounds": config.train_args.comm_round,
            "engine": engine or config.comm_args.backend,
            "owner": ProcessIdentity.current().to_dict(),
            "devices": {d: _device_entry(earlier, d) for d in devices},
        }
        self._write()
        self._stop = threading.Event()
        threading.Thread(target=_beat, args=(weakref.ref(self), self._stop, heartbeat_seconds),
                         name=f"fediot-heartbeat-{folder.root.name}", daemon=True).start()

    def _write(self, event: bool = True) -> None:
        with self._lock:
            now = _now_text()
            if event:
                self.status["updated_at"] = now
            self.status["heartbeat_at"] = now
            # only events may create the folder: a beat must not bring back a deleted one
            _write_json(self.folder.root / "status.json", self.status, make_parents=event)

    def heartbeat(self) -> bool:
        """Refresh ``heartbeat_at``; False once there is nothing left to beat for (the run
        ended, or its folder was removed)."""
        with self._lock:
            if self.status["state"] not in LIVE_STATES:
                return False
            try:
                self._write(event=False)
            except FileNotFoundError:  # the folder is gone
                return False
            except OSError:  # a full disk, say: the next beat tries again
                pass
            return True

    def on_phase(self, phase: str, detail: str) -> None:
        with self._lock:
            if phase in ("lost", "rejected", "excluded"):
                pass  # devices are updated by on_contact and on_rejected, named by the server
            elif phase == "round":
                self.status["round"] = int(detail.split("/")[0])
                self.status["phase"] = "training"
                for device in self.status["devices"].values():
                    if device["state"] != "lost":
                        device["state"] = "training"
            else:
                self.status["phase"] = phase
            self._write()
        if self.inner is not None:
            self.inner.on_phase(phase, detail)

    def on_rejected(self, rejection: Rejection) -> None:
        """Count a rejected reply against its device (and pass it on)."""
        with self._lock:
            device = self.status["devices"].get(rejection.device)
            if device is not None:
                device["rejected"] = int(device.get("rejected") or 0) + 1
                device["last_rejection"] = rejection.describe()
                self._write()
        on_rejected = getattr(self.inner, "on_rejected", None)
        if callable(on_rejected):
            on_rejected(rejection)

    def on_contact(self, contact: StepContact) -> None:
        """Who answered one exchange: ``online`` (seen now, at the step's round or else the
        run's) or ``lost`` (and pass it on)."""
        with self._lock:
            now = _now_text()
            devices = self.status["devices"]
            seen_round = contact.server_round or self.status["round"] or None
            for name in contact.answered:
                if name in devices:
                    devices[name].update(state="online", last_seen=now, last_round=seen_round)
            for name in contact.missing:
                if name in devices:
                    devices[name]["state"] = "lost"
            self._write()
        on_contact = getattr(self.inner, "on_contact", None)
        if callable(on_contact):
            on_contact(contact)

    def on_round(self, record: RoundRecord) -> None:
        with self._lock:
            now = _now_text()
            for name, device in self.status["devices"].items():
                if name in record.answered:
                    device.update(state="online", last_seen=now, last_round=record.server_round)
                elif device["state"] == "training":  # not sampled this round
                    device["state"] = "online" if device["last_seen"] else "idle"
            self._write()
        if self.inner is not None:
            self.inner.on_round(record)

    def on_logs(self, lines: Sequence[LogLine]) -> None:
        self.folder.append_logs(lines)
        if self.inner is not None:
            self.inner.on_logs(lines)

    def finish(self, state: str = "finished", because: str | None = None) -> None:
        """Mark the run ``finished``, ``failed`` or ``interrupted`` (saying why, ``because``;
        default no reason) and stop the heartbeat."""
        self._stop.set()
        with self._lock:
            self.status["state"] = state
            if because is not None:
                self.status["interrupted_because"] = because
            self.status["phase"] = "done" if state == "finished" else self.status["phase"]
            self._write()


def parse_time(text: Any) -> datetime | None:
    """An ISO-8601 time from a status file (naive times are UTC), or None if it is not one."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_interruption(status: Mapping[str, Any], now: datetime | None = None) -> str | None:
    """Why a run whose ``status.json`` says it is running is not, or None.

    The one rule for every face: a run in a live state (:data:`LIVE_STATES`) recorded by a
    process of this machine is interrupted once that process is gone (same pid *and* start
    token, so a reused pid does not count); one recorded elsewhere, where its process cannot be
    checked, once its heartbeat is older than :data:`HEARTBEAT_STALE_SECONDS`. A run written
    before owners were recorded has only ``updated_at`` to go by, taken as its heartbeat.
    """
    if status.get("state") not in LIVE_STATES:
        return None
    owner = ProcessIdentity.from_dict(status.get("owner"))
    if owner is not None:
        alive = owner.alive()
        if alive is False:
            return f"its process ({owner.describe()}) is gone"
        if alive:
            return None
    beat = parse_time(status.get("heartbeat_at")) or parse_time(status.get("updated_at"))
    if beat is None:
        return "it records no heartbeat"
    age = ((now or datetime.now(UTC)) - beat).total_seconds()
    if age <= HEARTBEAT_STALE_SECONDS:
        return None
    where = f" from {owner.host}" if owner is not None else ""
    return f"no heartbeat{where} for {age:.0f} s"


def with_liveness(status: Mapping[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """``status`` as a face shows it: a run :func:`run_interruption` finds dead gets ``state``
    ``interrupted``, with the recorded state in ``recorded_state`` and the reason in
    ``interrupted_because``; any other status is returned as it is (a copy)."""
    shown = dict(status)
    reason = run_interruption(status, now)
    if reason is not None:
        shown.update(state="interrupted", recorded_state=status.get("state"),
                     interrupted_because=reason)
    return shown


class RunView:
    """Reads one run folder, finished or still running: a file not written yet reads as
    ``None`` (or ``[]``); a file that exists but cannot be read raises :class:`FediotError`
    naming it.

    Parameters
    ----------
    root
        The run folder; it must hold the ``config.yaml`` every run writes first.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        if not (self.root / "config.yaml").is_file():
            raise FediotError(f"{self.root}: not a run folder (no config.yaml)")

    @property
    def run_id(self) -> str:
        return self.root.name

    def _json(self, name: str) -> Any:
        path = self.root / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError) as error:
            raise FediotError(f"{path}: cannot read ({error})") from None

    def _jsonl(self, name: str) -> list[Any]:
        path = self.root / name
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        rows = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                if number == len(lines):  # a line still being appended
                    break
                raise FediotError(f"{path}:{number}: not JSON ({error})") from None
        return rows

    def config(self) -> Config:
        return load_config(self.root / "config.yaml")

    def status(self, now: datetime | None = None) -> dict[str, Any] | None:
        """``status.json`` as the faces show it (:func:`with_liveness`: a run whose process
        is gone reads as ``interrupted``); None before it is written."""
        raw = self._json("status.json")
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise FediotError(f"{self.root / 'status.json'}: not a JSON object")
        return with_liveness(raw, now)

    def rounds(self) -> list[dict[str, Any]]:
        """``metrics.jsonl``: one dict per completed round (:meth:`RoundRecord.to_dict`)."""
        return self._jsonl("metrics.jsonl")

    def results(self) -> dict[str, Any] | None:
        return self._json("results.json")  # type: ignore[no-any-return]

    def comparison(self) -> dict[str, Any] | None:
        return self._json("comparison.json")  # type: ignore[no-any-return]

    def logs(self, start: int = 0) -> list[dict[str, Any]]:
        """``logs.jsonl`` lines from index ``start`` (devices' log lines, tagged)."""
        return self._jsonl("logs.jsonl")[start:]

    def started_at(self) -> datetime:
        """When the run started: ``status.json``'s ``started_at``, else the timestamp its id
        starts with (``YYYYmmdd-HHMMSS-…``, UTC), else when ``config.yaml`` (written once, at
        creation) was written. Reading or reporting a run never changes it."""
        try:
            raw = json.loads((self.root / "status.json").read_text())
        except (OSError, ValueError):
            raw = None
        moment = parse_time(raw.get("started_at")) if isinstance(raw, dict) else None
        if moment is not None:
            return moment
        stamp = _ID_STAMP.match(self.run_id)
        if stamp is not None:
            try:
                return datetime.strptime(stamp.group(1), "%Y%m%d-%H%M%S").replace(tzinfo=UTC)
            except ValueError:
                pass
        try:
            return datetime.fromtimestamp((self.root / "config.yaml").stat().st_mtime, UTC)
        except OSError:
            return datetime.fromtimestamp(0, UTC)

    def has_model(self) -> bool:
        """Whether the run saved a global model (``model/weights.npz``)."""
        return (self.root / "model" / "weights.npz").is_file()

    def finished_with_model(self) -> bool:
        """A model-bearing run a face may take as ``latest``: it saved a model and ended well
        (``status.json`` says ``finished``; a run without a status file counts once it wrote
        ``results.json``). Never a running, failed or interrupted run."""
        if not self.has_model():
            return False
        try:
            status = self.status()
        except FediotError:
            return False
        if status is None:
            return (self.root / "results.json").is_file()
        return status.get("state") == "finished"

    def updated_at(self) -> float:
        """The newest modification time of the folder's files (seconds since the epoch)."""
        times = [self.root.stat().st_mtime]
        for path in self.root.iterdir():
            try:  # an atomic write's temporary file may vanish between listing and stat
                if path.is_file():
                    times.append(path.stat().st_mtime)
            except FileNotFoundError:
                continue
        return max(times)

    def model_version(self) -> str | None:
        """Changes whenever a new global model is saved; ``None`` before the first."""
        path = self.root / "model" / "weights.npz"
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        return f"{stat.st_mtime_ns}-{stat.st_size}"

    def load_model(self) -> tuple[ModelState, Thresholds]:
        """The saved global model (weights, pooled scaler statistics) and thresholds."""
        from fediot.core.federated.evaluation import Thresholds
        from fediot.core.federated.messages import ModelState
        from fediot.core.model import ScalerStats

        folder = self.root / "model"
        if not (folder / "weights.npz").is_file():
            raise FediotError(f"{self.root}: no model saved yet (model/weights.npz)")
        try:
            with np.load(folder / "weights.npz") as data:
                weights = [data[f"w{i}"] for i in range(len(data.files))]
            with np.load(folder / "scaler.npz") as data:
                scaler = ScalerStats(int(data["n"]), data["sum"], data["sumsq"])
            raw = json.loads((folder / "thresholds.json").read_text())
            thresholds = Thresholds.from_dict(raw)
        except (OSError, KeyError, ValueError, AttributeError, TypeError) as error:
            raise FediotError(f"{folder}: cannot read the saved model ({error})") from None
        return ModelState(weights, scaler), thresholds

    def round_models(self) -> list[int]:
        """The rounds whose global model was kept (``models/round-NNNN.npz``), in order."""
        return sorted(int(p.stem.removeprefix("round-"))
                      for p in (self.root / "models").glob("round-[0-9]*.npz"))

    def load_round_model(self, server_round: int) -> ModelState:
        """The global model (weights, pooled scaler statistics) after ``server_round``."""
        from fediot.core.federated.messages import ModelState
        from fediot.core.model import ScalerStats

        path = self.root / "models" / f"round-{server_round:04d}.npz"
        if not path.is_file():
            raise FediotError(f"{self.root}: no model kept for round {server_round} "
                              f"(has rounds {self.round_models()})")
        try:
            with np.load(path) as data:
                count = sum(1 for name in data.files if name.startswith("w"))
                weights = [data[f"w{i}"] for i in range(count)]
                scaler = ScalerStats(int(data["scaler_n"]), data["scaler_sum"],
                                     data["scaler_sumsq"])
        except (OSError, KeyError, ValueError) as error:
            raise FediotError(f"{path}: cannot read the round's model ({error})") from None
        return ModelState(weights, scaler)

    def detector(self, device: str | None = None) -> AutoencoderDetector:
        """The run's detector: global weights and scaler, the threshold of ``device`` (default:
        the global threshold) and its window (:meth:`Thresholds.window`)."""
        from fediot.core.model import AutoencoderDetector, FeatureScaler

        model, thresholds = self.load_model()
        if device is None:
            threshold = thresholds.global_threshold
        elif device in thresholds.per_device:
            threshold = thresholds.per_device[device]
        else:
            raise FediotError(f"{self.root}: no threshold for device {device!r} "
                              f"(has {sorted(thresholds.per_device)})")
        config = self.config()
        return AutoencoderDetector.from_components(
            FeatureScaler.from_stats(model.scaler), model.weights, threshold,
            seed=config.common_args.random_seed,
            window=thresholds.window(device, config.detection_args.window))


def excluded_devices(results: Mapping[str, Any] | None) -> dict[str, str]:
    """Device → why it was left out of the threshold and evaluation steps, from a
    ``results.json`` (empty for a run that left none out, or was written before the rule)."""
    raw = (results or {}).get("excluded_devices")
    if not isinstance(raw, Mapping):
        return {}
    return {str(device): str(why) for device, why in raw.items()}


def describe_excluded(excluded: Mapping[str, str]) -> str:
    """One line naming the devices left out of the threshold and evaluation steps and why
    (empty when none were): what the CLI and the report print."""
    if not excluded:
        return ""
    return ("left out of the threshold and evaluation (train_args.stale_after_missed_rounds): "
            + "; ".join(f"{client_label(device)}: {why}" for device, why in excluded.items()))


def finite_number(value: Any) -> float | None:
    """``value`` as a float if it is a finite int or float (not a bool), else ``None``: what a
    face may plot from a run file written by any engine or version."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def system_figures(rounds: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Device → each numeric figure of its ``system`` dicts in ``metrics.jsonl`` rounds (keys
    as the engines wrote them: wall_seconds, peak_rss_bytes, bytes_down, …) → its ``last``
    value, ``total`` over the rounds and ``max``; devices and keys in order of appearance."""
    figures: dict[str, dict[str, dict[str, float]]] = {}
    for record in rounds:
        system = record.get("system")
        if not isinstance(system, Mapping):
            continue
        for device, values in system.items():
            if not isinstance(values, Mapping):
                continue
            mine = figures.setdefault(device, {})
            for key, raw in values.items():
                value = finite_number(raw)
                if value is None:
                    continue
                figure = mine.setdefault(str(key), {"last": value, "total": 0.0, "max": value})
                figure.update(last=value, total=figure["total"] + value,
                              max=max(figure["max"], value))
    return figures


LATEST: Final[str] = "latest"
"""The run reference every face resolves with :func:`latest_run`."""


def list_runs(runs_dir: Path) -> list[RunView]:
    """Every run folder under ``runs_dir``, oldest first by start time
    (:meth:`RunView.started_at`, then id): reading a run never reorders them."""
    if not runs_dir.is_dir():
        return []
    views = [RunView(p) for p in runs_dir.iterdir() if (p / "config.yaml").is_file()]
    return sorted(views, key=lambda v: (v.started_at(), v.run_id))


def latest_run(runs_dir: Path, *, needs_model: bool) -> RunView | None:
    """What ``latest`` means, for every face: the newest run under ``runs_dir`` by start time.

    With ``needs_model`` (detect, export, serve) only runs that saved a model and finished
    count (:meth:`RunView.finished_with_model`), so a failed, interrupted or still running run
    never replaces the last good model; without it (``runs show``, ``report``, ``status``) the
    newest run whatever its state. ``None`` when no run qualifies.
    """
    runs = list_runs(runs_dir)
    if needs_model:
        runs = [v for v in runs if v.finished_with_model()]
    return runs[-1] if runs else None


def find_run(reference: str | Path, runs_dir: Path, *, needs_model: bool = False) -> RunView:
    """A run by folder path, by id under ``runs_dir``, by unique id prefix, or ``latest``
    (:func:`latest_run`, with ``needs_model`` passed on)."""
    path = Path(reference)
    if (path / "config.yaml").is_file():
        return RunView(path)
    if str(reference) == LATEST:
        latest = latest_run(runs_dir, needs_model=needs_model)
        if latest is None:
            if needs_model and list_runs(runs_dir):
                raise FediotError(f"no finished run with a saved model under {runs_dir}")
            raise FediotError(f"no runs under {runs_dir}")
        return latest
    runs = list_runs(runs_dir)
    matches = [v for v in runs if v.run_id == str(reference)] or [
        v for v in runs if v.run_id.startswith(str(reference))]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise FediotError(f"no run {str(reference)!r} under {runs_dir}")
    raise FediotError(f"run {str(reference)!r} is ambiguous under {runs_dir}: "
                      + ", ".join(v.run_id for v in matches))
