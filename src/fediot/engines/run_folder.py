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

from fediot.core.config import Config, dump_config
from fediot.core.federated.evaluation import Thresholds
from fediot.core.federated.messages import ModelState
from fediot.core.federated.server import RoundRecord, RunResult
from fediot.core.io import atomic_path


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

    def append_round(self, record: RoundRecord) -> None:
        """Add one line to ``metrics.jsonl`` (rewritten whole, so never half a line)."""
        path = self.root / "metrics.jsonl"
        old = path.read_text() if path.exists() else ""
        _write_text(path, old + json.dumps(record.to_dict(), default=_jsonable) + "\n")

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
