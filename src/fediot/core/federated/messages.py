"""What travels between a device and the server: tasks out, reports back.

Only model weights and summable statistics travel; no feature row ever leaves a device. Every
message is a frozen dataclass of NumPy arrays and plain numbers, so any engine can carry it
(pickled between processes, or as Flower records).

Every answer comes back as a :class:`Reply`: the method's result, the device's log lines during
the call (:class:`LogLine`, at most :data:`MAX_LOG_LINES`) and the bytes the engine carried each
way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fediot.core.metrics import ClassCounts
from fediot.core.model import ErrorStats, ScalerStats

Weights = list[npt.NDArray[np.float32]]

MAX_LOG_LINES = 50
"""Log lines one reply carries at most; beyond that the last line says how many were dropped."""
MAX_LOG_MESSAGE_CHARS = 2000
"""A log message longer than this is cut (a traceback stays readable, a runaway one does not
bloat the reply)."""


@dataclass(frozen=True)
class ModelState:
    """The global model as a device needs it: weights plus the pooled scaler statistics.

    Parameters
    ----------
    weights
        Autoencoder weights, float32 arrays in :func:`~fediot.core.model.get_weights` order.
    scaler
        Pooled :class:`~fediot.core.model.ScalerStats` of all devices' training rows; every
        device derives the same feature scaler from it.
    """

    weights: Weights
    scaler: ScalerStats


@dataclass(frozen=True)
class FitTask:
    """Train locally from the global model.

    Parameters
    ----------
    model
        The current global :class:`ModelState`.
    server_round
        1-based round number (seeds the device's shuffling together with ``seed``).
    learning_rate, epochs, batch_size, optimizer, weight_decay
        Local training settings for this round.
    proximal_mu
        FedProx's μ (0 for plain local training).
    seed
        The run's seed.
    """

    model: ModelState
    server_round: int
    learning_rate: float
    epochs: int
    batch_size: int
    optimizer: str = "adam"
    weight_decay: float = 0.0
    proximal_mu: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class SystemStats:
    """What a device spent on a task, measured where it ran
    (:class:`~fediot.core.federated.meter.TaskMeter`).

    Parameters
    ----------
    wall_seconds
        Wall-clock time of the task.
    cpu_seconds
        CPU time of the thread that ran the task (the device trains on one thread).
    task_peak_memory_bytes
        How far the process's resident memory rose above its level at the task's start, at
        its highest during the task: the memory the task itself took.
    peak_rss_bytes
        The process's peak resident memory so far: the device's own in the Flower deployment
        (one process per device), the shared worker's where several devices share a process.
    """

    wall_seconds: float
    cpu_seconds: float
    task_peak_memory_bytes: int
    peak_rss_bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"wall_seconds": self.wall_seconds, "cpu_seconds": self.cpu_seconds,
                "task_peak_memory_bytes": self.task_peak_memory_bytes,
                "peak_rss_bytes": self.peak_rss_bytes}


SYSTEM_FIGURE_LABELS: dict[str, str] = {
    "wall_seconds": "wall time of its training task",
    "cpu_seconds": "CPU time of its training thread",
    "task_peak_memory_bytes": "memory its training task took (peak RSS rise above the start)",
    "peak_rss_bytes": "peak RSS of the process it ran in",
    "bytes_down": "bytes it received (training task)",
    "bytes_up": "bytes it sent (training reply)",
}
"""What each per-device figure of a round's ``system`` dict (``metrics.jsonl``) measures:
the :class:`SystemStats` fields, then the traffic the engine counted
(:class:`~fediot.core.federated.server.RoundRecord`)."""


@dataclass(frozen=True)
class DataReport:
    """What a device's local data held, as counts only (the run folder keeps them).

    Parameters
    ----------
    train, opt
        Training and threshold rows it uses.
    warmup_train, warmup_opt
        Rows of each it dropped as warm-up (no source history), before the counts above.
    """

    train: int
    opt: int
    warmup_train: int = 0
    warmup_opt: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"train": self.train, "opt": self.opt, "warmup_train": self.warmup_train,
                "warmup_opt": self.warmup_opt}


@dataclass(frozen=True)
class ScalerReport:
    """A device's answer to the scaler step: its summable statistics and its data's counts."""

    stats: ScalerStats
    data: DataReport


@dataclass(frozen=True)
class FitReport:
    """A device's training result.

    Parameters
    ----------
    client_id
        The device that trained.
    weights
        Its locally trained weights.
    num_examples
        True number of training rows (FedAvg weights by this, not by batch count).
    mean_loss
        Mean training loss over the round's last epoch.
    system
        Time and memory spent.
    validation_loss, validation_rows
        Mean reconstruction error of the device's threshold rows under the global model it
        received (the previous round's result), and how many rows that is: summed over
        devices, the server's validation loss for choosing the best round.
    """

    client_id: str
    weights: Weights
    num_examples: int
    mean_loss: float
    system: SystemStats
    validation_loss: float = 0.0
    validation_rows: int = 0


@dataclass(frozen=True)
class ScoreTask:
    """Score the threshold ("opt") split with the global model."""

    model: ModelState


@dataclass(frozen=True)
class EvaluateTask:
    """Score the test splits and count verdicts.

    Parameters
    ----------
    model
        The global model.
    threshold
        The threshold this device applies (global or its own).
    window
        Majority-vote window over consecutive rows (1: no vote); 0: the device chooses ws*,
        the smallest window up to ``max_window`` that raises no alarm on its threshold rows.
    max_window
        The largest window a device may choose (default 1000).
    """

    model: ModelState
    threshold: float
    window: int = 1
    max_window: int = 1000


@dataclass(frozen=True)
class EvaluationReport:
    """A device's test verdicts, as counts and histograms only.

    Parameters
    ----------
    client_id
        The device.
    counts
        Flagged / total rows per traffic class, row by row.
    counts_window
        The same after the window vote.
    benign_errors, attack_errors
        Summable error statistics (with histograms) of the benign-test and attack rows, for
        ROC curves and score plots without the scores themselves.
    threshold, window
        What was applied (the window the device chose, with ``window = 0``).
    system
        Time and memory spent.
    """

    client_id: str
    counts: ClassCounts
    counts_window: ClassCounts
    benign_errors: ErrorStats
    attack_errors: ErrorStats
    threshold: float
    window: int
    system: SystemStats = field(compare=False)


@dataclass(frozen=True)
class LogLine:
    """One log line a device wrote during a call, as the run folder's ``logs.jsonl`` keeps it.

    Parameters
    ----------
    time
        When it was written, ISO-8601 UTC with milliseconds.
    device
        The device (client id).
    round
        The training round the call belongs to; ``None`` outside rounds (the scaler before
        round 1, the final threshold and evaluation).
    step
        The client method: ``scaler_stats``, ``fit``, ``threshold_stats`` or ``evaluate``.
    level
        ``DEBUG``, ``INFO``, ``WARNING``, ``ERROR`` or ``CRITICAL``.
    message
        The formatted message (at most :data:`MAX_LOG_MESSAGE_CHARS` characters).
    """

    time: str
    device: str
    round: int | None
    step: str
    level: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time, "device": self.device, "round": self.round,
                "step": self.step, "level": self.level, "message": self.message}


@dataclass(frozen=True)
class Refusal:
    """A reply without a result: the device refused its task (out of its bounds, too few rows
    for statistics), or the engine could not read what the device sent. The server counts it
    as a rejected reply with this reason.

    Parameters
    ----------
    reason
        Why, in one line.
    """

    reason: str


@dataclass(frozen=True)
class Reply:
    """One device's answer to one call, as an engine delivered it to the server.

    Parameters
    ----------
    result
        The :class:`~fediot.core.federated.client.DeviceClient` method's return value, or a
        :class:`Refusal`.
    logs
        The device's log lines during the call, oldest first (at most :data:`MAX_LOG_LINES`).
    bytes_down
        Size in bytes of the task as the engine carried it to the device (Flower: the message
        content's serialised objects; worker processes: the pickled task); 0 when nothing
        moved (devices called in the server's own process).
    bytes_up
        Size in bytes of the reply as the engine carried it back, measured the same way.
    """

    result: Any
    logs: tuple[LogLine, ...] = ()
    bytes_down: int = 0
    bytes_up: int = 0
