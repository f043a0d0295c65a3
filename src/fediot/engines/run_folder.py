"""A run's folder on disk: what every engine records, file by file, each written atomically.

::

    runs/<run id>/
      config.yaml        the resolved configuration
      metrics.jsonl      one JSON line per round (loss, learning rate, devices, system figures)
      results.json       final per-device and pooled metrics, thresholds
      model/weights.npz  global autoencoder weights (arrays w0, w1, …)
      model/scaler.npz   pooled scaler statistics (n, sum, sumsq)
      model/thresholds.json
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fediot.core.config import Config, dump_config, load_config
from fediot.core.errors import FediotError
from fediot.core.federated.evaluation import Thresholds
from fediot.core.federated.messages import ModelState
from fediot.core.federated.server import RoundRecord, RunObserver, RunResult, ServerState
from fediot.core.io import atomic_path
from fediot.core.model import ScalerStats


def new_run_id(config: Config, kind: str = "fed") -> str:
    """``YYYYmmdd-HHMMSS-<dataset>-<optimizer>``, or the configured ``run_name``."""
    if config.tracking_args.run_name:
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", config.tracking_args.run_name)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    dataset = config.data_args.dataset.lower().replace("-", "")
    return f"{stamp}-{dataset}-{kind}-{config.train_args.federated_optimizer.lower()}"


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _write_json(path: Path, payload: Any) -> None:
    _write_text(path, json.dumps(payload, indent=2, default=_jsonable) + "\n")


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
        """``checkpoint.npz`` (model, scaler, optimiser state, rounds) in one atomic write, and
        ``metrics.jsonl`` rewritten from the same rounds, so the two never disagree."""
        arrays: dict[str, Any] = {f"w{i}": w for i, w in enumerate(state.model.weights)}
        arrays.update(scaler_n=np.asarray(state.model.scaler.n),
                      scaler_sum=state.model.scaler.sum, scaler_sumsq=state.model.scaler.sumsq)
        for key, value in state.strategy_state.items():
            arrays[f"strategy_{key}"] = np.asarray(value)
        meta = {"rounds": [r.to_dict() for r in state.history],
                "weights": len(state.model.weights),
                "strategy_keys": sorted(state.strategy_state)}
        arrays["meta"] = np.frombuffer(json.dumps(meta, default=_jsonable).encode(), np.uint8)
        with atomic_path(self.root / "checkpoint.npz") as tmp, tmp.open("wb") as f:
            np.savez(f, **arrays)
        _write_text(self.root / "metrics.jsonl", "".join(
            json.dumps(r.to_dict(), default=_jsonable) + "\n" for r in state.history))

    def load_checkpoint(self) -> ServerState:
        """The state :meth:`save_checkpoint` wrote; a clear error if there is none."""
        path = self.root / "checkpoint.npz"
        if not path.is_file():
            raise FediotError(f"{self.root}: no checkpoint.npz to resume from")
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            weights = [data[f"w{i}"] for i in range(meta["weights"])]
            scaler = ScalerStats(int(data["scaler_n"]), data["scaler_sum"],
                                 data["scaler_sumsq"])
            strategy = {k: data[f"strategy_{k}"] for k in meta["strategy_keys"]}
        history = [RoundRecord(
            server_round=r["round"], learning_rate=r["learning_rate"], clients=r["clients"],
            answered=r["answered"], train_loss=r["train_loss"], num_examples=r["num_examples"],
            seconds=r["seconds"], system=r["system"], evaluation=r["evaluation"],
        ) for r in meta["rounds"]]
        return ServerState(ModelState(weights, scaler), strategy, history)

    def load_config(self) -> Config:
        """The run's resolved configuration (``config.yaml``)."""
        return load_config(self.root / "config.yaml")

    def save_results(self, result: RunResult, extra: dict[str, Any] | None = None) -> None:
        """``results.json`` and the model files."""
        self.save_model(result.model, result.thresholds)
        _write_json(self.root / "results.json", {
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "thresholds": result.thresholds.to_dict(),
            "evaluation": result.evaluation.to_dict(),
            "rounds": len(result.history),
            **(extra or {}),
        })


class StatusRecorder:
    """A run observer that keeps ``status.json`` current (what ``fediot status`` shows), then
    passes every event on to ``inner``.

    ``status.json``: ``state`` (running / finished / failed), ``phase``, ``round`` of
    ``total_rounds``, ``updated_at``, and per device its ``state`` (training / idle / lost),
    ``last_seen`` and ``last_round``.
    """

    def __init__(self, folder: RunFolder, config: Config, devices: list[str],
                 inner: RunObserver | None = None) -> None:
        self.folder = folder
        self.inner = inner
        self.status: dict[str, Any] = {
            "run": folder.root.name, "state": "running", "phase": "starting", "round": 0,
            "total_rounds": config.train_args.comm_round, "engine": config.comm_args.backend,
            "devices": {d: {"state": "idle", "last_seen": None, "last_round": None}
                        for d in devices},
        }
        self._write()

    def _write(self) -> None:
        self.status["updated_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        _write_json(self.folder.root / "status.json", self.status)

    def on_phase(self, phase: str, detail: str) -> None:
        if phase == "lost":
            for name in detail.partition("no reply from ")[2].partition(";")[0].split(", "):
                if name in self.status["devices"]:
                    self.status["devices"][name]["state"] = "lost"
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

    def on_round(self, record: RoundRecord) -> None:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for name, device in self.status["devices"].items():
            if name in record.answered:
                device.update(state="idle", last_seen=now, last_round=record.server_round)
            elif device["state"] == "training":
                device["state"] = "idle"
        self._write()
        if self.inner is not None:
            self.inner.on_round(record)

    def finish(self, state: str = "finished") -> None:
        """Mark the run ``finished`` or ``failed``."""
        self.status["state"] = state
        self.status["phase"] = "done" if state == "finished" else self.status["phase"]
        self._write()
