"""The device side of FedDetect: everything a device computes, on its own data only.

:class:`DeviceClient` is engine-free: every engine (the in-process pools, the Flower ClientApp)
runs a task through :meth:`DeviceClient.call`, which also collects the device's ``fediot`` log
lines written during the call (:class:`LogCapture`) so that they travel back with the reply.

A device checks every task before running it (:class:`DeviceGuards`): a task outside its
bounds (learning rate, epochs, batch size, proximal μ, a model of the wrong shapes or with
non-finite values, …) or statistics of too few rows are refused: :meth:`DeviceClient.call`
logs why and answers with a :class:`~fediot.core.federated.messages.Refusal`, which the server
counts as a rejected reply.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import BENIGN, N_FEATURES
from fediot.core.config import FLOAT_RANGES, INT_RANGES, Config
from fediot.core.data.reader import FeatureMatrix
from fediot.core.errors import FediotError
from fediot.core.federated.messages import (
    MAX_LOG_LINES,
    MAX_LOG_MESSAGE_CHARS,
    DataReport,
    EvaluateTask,
    EvaluationReport,
    FitReport,
    FitTask,
    LogLine,
    ModelState,
    Refusal,
    Reply,
    ScalerReport,
    ScoreTask,
    SystemStats,
)
from fediot.core.federated.meter import TaskMeter, exact_memory_round
from fediot.core.federated.privacy import (
    PrivacyPlan,
    noisy_error_stats,
    noisy_scaler_stats,
    secure_rng,
)
from fediot.core.federated.secure_aggregation import (
    U64,
    Quantizer,
    SecAggDevice,
    SecAggError,
    SecAggReply,
    SecAggTask,
)
from fediot.core.federated.secure_statistics import errors_vector, scaler_vector
from fediot.core.federated.validation import scaler_array_problem
from fediot.core.metrics import ClassCounts, smallest_quiet_window, window_vote
from fediot.core.model import ErrorStats, FeatureScaler, PrivateTraining, ScalerStats
from fediot.core.model.architecture import layer_plan, parameter_shapes
from fediot.core.model.backend import LocalModel, local_model, resolve_backend

log = logging.getLogger(__name__)

CLIENT_METHODS = ("scaler_stats", "fit", "threshold_stats", "evaluate", "secagg")
"""The :class:`DeviceClient` methods a server may call."""


@dataclass(frozen=True)
class ClientData:
    """One device's local data, split in time order (see :mod:`fediot.core.data.splits`).

    Parameters
    ----------
    client_id
        The device's name in the federation (a device is a client, not a rank).
    uci_id
        Which N-BaIoT device type it is.
    train, opt
        Benign rows for training and for the threshold.
    test_benign, test_attacks
        Evaluation rows: benign test block and attack class → rows.
    warmup_dropped
        Rows already dropped from ``train`` and ``opt`` as warm-up (no source history):
        ``{"train": n, "opt": m}``.
    """

    client_id: str
    uci_id: int
    train: FeatureMatrix
    opt: FeatureMatrix
    test_benign: FeatureMatrix
    test_attacks: dict[str, FeatureMatrix]
    warmup_dropped: Mapping[str, int] = field(default_factory=dict)


def device_seed(client_id: str, *parts: int) -> int:
    """A stable 31-bit seed from the client's name and integers (no Python hash salt)."""
    return zlib.crc32(repr((client_id, *parts)).encode()) & 0x7FFF_FFFF


def lower_level(logger: logging.Logger, level: int) -> int | None:
    """Let ``level`` and above through ``logger``: its own level before, if it had to be
    lowered, else None (nothing changed). Changing a logger's level clears every logger's
    cache, so it is done only when needed."""
    if logger.getEffectiveLevel() <= level:
        return None
    saved = logger.level
    logger.setLevel(level)
    return saved


@contextmanager
def capturing_level(level: int = logging.INFO) -> Iterator[None]:
    """The ``fediot`` logger open to ``level`` for a block of many :class:`LogCapture` calls
    (one level change around them, not two per call)."""
    logger = logging.getLogger("fediot")
    saved = lower_level(logger, level)
    try:
        yield
    finally:
        if saved is not None:
            logger.setLevel(saved)


class LogCapture(logging.Handler):
    """Collects the log lines of the ``fediot`` loggers written by this thread while attached.

    Used as a context manager around one device call. While attached, the ``fediot`` logger
    lets ``level`` and above through (it is lowered if needed, and restored on exit), so a
    device's INFO lines are collected even when nothing else shows them.

    Parameters
    ----------
    device
        The device's client id (tags every line).
    step
        The client method being run.
    server_round
        The round the call belongs to, or ``None``.
    limit
        Lines kept at most (default :data:`~fediot.core.federated.messages.MAX_LOG_LINES`);
        beyond it the last kept line is replaced by one saying how many were dropped.
    level
        Lowest level collected (default INFO).
    """

    def __init__(self, device: str, step: str, server_round: int | None = None, *,
                 limit: int = MAX_LOG_LINES, level: int = logging.INFO) -> None:
        if limit < 1:
            raise FediotError(f"log line limit must be at least 1, got {limit}")
        super().__init__(level)
        self.device, self.step, self.server_round, self.limit = device, step, server_round, limit
        self._lines: list[LogLine] = []
        self._dropped = 0
        self._thread = threading.get_ident()
        self._logger = logging.getLogger("fediot")
        self._lowered: int | None = None
        self.setFormatter(logging.Formatter("%(message)s"))

    def __enter__(self) -> LogCapture:
        self._thread = threading.get_ident()
        self._lowered = lower_level(self._logger, self.level)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *_: Any) -> None:
        self._logger.removeHandler(self)
        if self._lowered is not None:
            self._logger.setLevel(self._lowered)

    def takes(self, record: logging.LogRecord) -> bool:
        """Whether ``record`` is this call's line (its thread's, at ``level`` or above)."""
        return record.thread == self._thread and record.levelno >= self.level

    def emit(self, record: logging.LogRecord) -> None:
        if not self.takes(record):
            return
        if len(self._lines) >= self.limit:
            self._dropped += 1
            return
        try:
            message = self.format(record)
        except Exception:  # a broken format string must not break the device's task
            message = str(record.msg)
        self._lines.append(self._line(record.created, record.levelname, message))

    def _line(self, created: float, level: str, message: str) -> LogLine:
        if len(message) > MAX_LOG_MESSAGE_CHARS:
            message = message[: MAX_LOG_MESSAGE_CHARS - 1] + "…"
        return LogLine(time=datetime.fromtimestamp(created, UTC).isoformat(
                           timespec="milliseconds"),
                       device=self.device, round=self.server_round, step=self.step,
                       level=level, message=message)

    def lines(self) -> tuple[LogLine, ...]:
        """The lines collected so far, at most ``limit``."""
        if not self._dropped:
            return tuple(self._lines)
        kept = self._lines[: self.limit - 1]
        dropped = len(self._lines) - len(kept) + self._dropped
        notice = self._line(time.time(), "WARNING",
                            f"{dropped} more log lines dropped (at most {self.limit} per reply)")
        return (*kept, notice)


class TaskRefusedError(FediotError):
    """A device refuses a task outside its bounds; the message is the reason (one line)."""


_OPTIMIZERS = ("adam", "sgd")


def _range(key: str) -> tuple[float, float]:
    _, low, high, _ = FLOAT_RANGES[key]
    return low, high


@dataclass(frozen=True)
class DeviceGuards:
    """The bounds a device holds every task to (by default the configuration's own ranges).

    Parameters
    ----------
    learning_rate
        ``(low, high)``: low < learning rate ≤ high.
    weight_decay, proximal_mu
        ``(low, high)``: inclusive.
    epochs, batch_size, window
        ``(low, high)`` integers, inclusive (``window`` 0 lets the device choose).
    min_rows_for_statistics
        Fewest rows a device sends scaler or error statistics of
        (``device_args.min_rows_for_statistics``).
    privacy
        The run's differential-privacy plan (``privacy_args``): the device trains with
        DP-SGD, noises its statistics and refuses training tasks whose epochs or batch size
        differ from the plan's (:mod:`fediot.core.federated.privacy`); ``None``: off.
    """

    learning_rate: tuple[float, float] = _range("train_args.learning_rate")
    weight_decay: tuple[float, float] = _range("train_args.weight_decay")
    proximal_mu: tuple[float, float] = _range("train_args.proximal_mu")
    epochs: tuple[int, int] = INT_RANGES["train_args.epochs"]
    batch_size: tuple[int, int] = INT_RANGES["train_args.batch_size"]
    window: tuple[int, int] = INT_RANGES["detection_args.window"]
    min_rows_for_statistics: int = 20
    privacy: PrivacyPlan | None = None

    @classmethod
    def from_config(cls, config: Config) -> DeviceGuards:
        """The guards of a run's configuration (its ``device_args`` and ``privacy_args``)."""
        return cls(min_rows_for_statistics=config.device_args.min_rows_for_statistics,
                   privacy=PrivacyPlan.from_config(config))

    @staticmethod
    def _int(value: Any, what: str, bounds: tuple[int, int]) -> None:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TaskRefusedError(f"{what} must be an integer, got {value!r:.40}")
        if not bounds[0] <= int(value) <= bounds[1]:
            raise TaskRefusedError(f"{what} {value} outside {bounds[0]}…{bounds[1]}")

    @staticmethod
    def _float(value: Any, what: str, bounds: tuple[float, float], *,
               open_low: bool = False) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise TaskRefusedError(f"{what} must be a number, got {value!r:.40}")
        number = float(value)
        low_ok = number > bounds[0] if open_low else number >= bounds[0]
        if not math.isfinite(number) or not low_ok or number > bounds[1]:
            interval = f"{'(' if open_low else '['}{bounds[0]:g}, {bounds[1]:g}]"
            raise TaskRefusedError(f"{what} {number!r} outside {interval}")

    def check_model(self, state: Any, shapes: list[tuple[int, ...]]) -> None:
        """A global model of the expected shapes, float and finite, with a usable scaler."""
        if not isinstance(state, ModelState):
            raise TaskRefusedError(f"the task's model is a {type(state).__name__}, not a "
                                   f"ModelState")
        weights = state.weights
        if not isinstance(weights, list | tuple) or len(weights) != len(shapes):
            count = len(weights) if isinstance(weights, list | tuple) else "no"
            raise TaskRefusedError(f"the model has {count} weight arrays, expected {len(shapes)}")
        for i, (array, shape) in enumerate(zip(weights, shapes, strict=True)):
            if not isinstance(array, np.ndarray) or array.shape != shape:
                got = array.shape if isinstance(array, np.ndarray) else type(array).__name__
                raise TaskRefusedError(f"model weight {i} is {got}, expected shape {shape}")
            if not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
                raise TaskRefusedError(f"model weight {i} is not finite floats")
        scaler = state.scaler
        if not isinstance(scaler, ScalerStats):
            raise TaskRefusedError(f"the model's scaler is a {type(scaler).__name__}")
        if isinstance(scaler.n, bool) or not isinstance(scaler.n, int | np.integer) \
                or scaler.n < 1:
            raise TaskRefusedError(f"the scaler's row count {scaler.n!r:.40} is not ≥ 1")
        problem = scaler_array_problem(scaler)
        if problem is not None:
            raise TaskRefusedError(f"the scaler's {problem}")

    def check_fit(self, task: Any, shapes: list[tuple[int, ...]]) -> None:
        """A training task within bounds."""
        if not isinstance(task, FitTask):
            raise TaskRefusedError(f"a training task must be a FitTask, got {type(task).__name__}")
        self.check_model(task.model, shapes)
        self._float(task.learning_rate, "learning rate", self.learning_rate, open_low=True)
        self._int(task.epochs, "epochs", self.epochs)
        self._int(task.batch_size, "batch size", self.batch_size)
        self._float(task.weight_decay, "weight decay", self.weight_decay)
        self._float(task.proximal_mu, "proximal mu", self.proximal_mu)
        if task.optimizer not in _OPTIMIZERS:
            raise TaskRefusedError(f"optimizer {task.optimizer!r:.40} is not one of {_OPTIMIZERS}")
        self._int(task.server_round, "server round", (0, 2**31 - 1))
        self._int(task.seed, "seed", (0, 2**63 - 1))
        plan = self.privacy
        if plan is not None and (task.epochs, task.batch_size) != (plan.epochs, plan.batch_size):
            raise TaskRefusedError(f"with differential privacy the accountant counted "
                                   f"{plan.epochs} epoch(s) of batch size {plan.batch_size} "
                                   f"per round, not {task.epochs} of {task.batch_size}")

    def check_score(self, task: Any, shapes: list[tuple[int, ...]]) -> None:
        """A threshold-statistics task within bounds."""
        if not isinstance(task, ScoreTask):
            raise TaskRefusedError(f"a scoring task must be a ScoreTask, got {type(task).__name__}")
        self.check_model(task.model, shapes)

    def check_evaluate(self, task: Any, shapes: list[tuple[int, ...]]) -> None:
        """An evaluation task within bounds."""
        if not isinstance(task, EvaluateTask):
            raise TaskRefusedError(f"an evaluation task must be an EvaluateTask, got "
                              f"{type(task).__name__}")
        self.check_model(task.model, shapes)
        self._float(task.threshold, "threshold", (0.0, math.inf))
        self._int(task.window, "window", self.window)
        self._int(task.max_window, "max window", (1, self.window[1]))

    def check_rows(self, rows: int, what: str) -> None:
        """Statistics of ``rows`` rows may be sent."""
        if rows < self.min_rows_for_statistics:
            raise TaskRefusedError(f"{rows} {what} rows, fewer than min_rows_for_statistics = "
                              f"{self.min_rows_for_statistics}: no statistics sent")


def fit_report(client_id: str, task: FitTask, weights: list[npt.NDArray[np.float32]],
               num_examples: int, mean_loss: float, system: SystemStats,
               validation: ErrorStats, guards: DeviceGuards,
               private: PrivateTraining | None = None) -> FitReport:
    """A device's training reply, with its log line: the validation loss only from at least
    ``guards.min_rows_for_statistics`` threshold rows, and no loss at all under DP-SGD
    (``private``)."""
    how = (f"loss {mean_loss:.5f}" if private is None
           else f"DP-SGD σ = {private.noise_multiplier:.3g}, C = {private.clip_norm:g}")
    log.info("round %d: trained %d rows × %d epoch(s) at learning rate %.3g, %s, in %.2f s",
             task.server_round, num_examples, task.epochs, task.learning_rate, how,
             system.wall_seconds)
    enough = validation.n >= max(guards.min_rows_for_statistics, 1)
    return FitReport(client_id, weights, num_examples, mean_loss if private is None else 0.0,
                     system, validation_loss=validation.mean if enough else 0.0,
                     validation_rows=validation.n if enough else 0)


def task_round(task: Any) -> int | None:
    """The round a task belongs to, or ``None`` (a step outside the rounds, or no number)."""
    server_round = getattr(task, "server_round", None)
    if isinstance(server_round, bool) or not isinstance(server_round, int) \
            or server_round < 1:  # rounds count from 1; 0: a step outside the rounds
        return None
    return server_round


def logged_threshold_stats(stats: ErrorStats) -> ErrorStats:
    """``stats``, after the device's log line about its threshold rows."""
    if stats.n:
        log.info("scored %d threshold rows: mean error %.4g, std %.4g", stats.n,
                 stats.mean, stats.std)
    else:
        log.warning("no threshold rows to score")
    return stats


def evaluation_blocks(data: ClientData) -> list[tuple[str, FeatureMatrix]]:
    """A device's non-empty test blocks, benign first: ``(traffic class, raw rows)``."""
    blocks = [(BENIGN, data.test_benign), *data.test_attacks.items()]
    return [(traffic_class, rows) for traffic_class, rows in blocks if len(rows)]


def quiet_window(opt_errors: npt.NDArray[np.float64], task: EvaluateTask) -> int:
    """N-BaIoT's ws* from the threshold rows' errors: the smallest window with no alarm."""
    flags = opt_errors > task.threshold
    window = smallest_quiet_window(flags, task.max_window)
    log.info("window %d: the smallest with no alarm on the %d threshold rows (%.2f %% of "
             "them above the threshold)", window, len(flags),
             100 * float(np.mean(flags)) if len(flags) else 0.0)
    return window


def evaluation_report(client_id: str, task: EvaluateTask, window: int,
                      errors: list[tuple[str, npt.NDArray[np.float64]]],
                      system: SystemStats) -> EvaluationReport:
    """A device's verdict counts from its test blocks' errors (``(traffic class, errors)``,
    :func:`evaluation_blocks` order) at ``task.threshold`` and ``window``, with its log line."""
    counts: list[ClassCounts] = []
    voted: list[ClassCounts] = []
    for traffic_class, block in errors:
        flags = block > task.threshold
        counts.append(ClassCounts.from_flags(traffic_class, flags))
        voted.append(ClassCounts.from_flags(traffic_class, window_vote(flags, window)))
    stats = ErrorStats.of_parts(np.concatenate([block for _, block in errors]) if errors
                                else np.zeros(0), np.cumsum([len(b) for _, b in errors]).tolist())
    benign = ErrorStats.pool(s for s, (c, _) in zip(stats, errors, strict=True) if c == BENIGN)
    attack = ErrorStats.pool(s for s, (c, _) in zip(stats, errors, strict=True) if c != BENIGN)
    pooled, pooled_voted = ClassCounts.pool(counts), ClassCounts.pool(voted)
    confusion = pooled_voted.confusion()
    log.info("scored %d test rows at threshold %.4g, window %d: the vote flagged %d of "
             "%d attack and %d of %d benign rows, in %.2f s", benign.n + attack.n,
             task.threshold, window, confusion.tp, attack.n, confusion.fp, benign.n,
             system.wall_seconds)
    return EvaluationReport(client_id=client_id, counts=pooled, counts_window=pooled_voted,
                            benign_errors=benign, attack_errors=attack,
                            threshold=task.threshold, window=window, system=system)


class DeviceClient:
    """A device in the federation.

    Parameters
    ----------
    data
        The device's :class:`ClientData`; it never leaves this object.
    use_gpu
        Train and score on a CUDA GPU when one is present (default False; torch only).
    guards
        The bounds it holds tasks to (default :class:`DeviceGuards` ()).
    backend
        ``"auto"`` (default: torch when importable, else NumPy), ``"torch"`` or ``"numpy"``
        (:mod:`fediot.core.model.backend`); DP-SGD needs torch, so privacy without it is one
        :class:`FediotError` here, before any task.
    """

    def __init__(self, data: ClientData, use_gpu: bool = False,
                 guards: DeviceGuards | None = None, backend: str = "auto") -> None:
        self.data = data
        self.guards = guards or DeviceGuards()
        self.backend = resolve_backend(backend, private=self.guards.privacy is not None)
        if use_gpu and self.backend == "numpy":
            warnings.warn(f"{data.client_id}: using_gpu is set but the device trains with "
                          "NumPy, on the CPU", RuntimeWarning, stacklevel=2)
        self._use_gpu = use_gpu
        self._model: LocalModel | None = None
        if use_gpu:  # resolve the GPU now: a missing one is reported when the device starts
            self._model = self.model
        self._scaler_key: bytes | None = None
        self._scaled: dict[str, npt.NDArray[np.float32]] = {}
        self._rng = secure_rng()  # privacy noise: never from the run's (known) seed
        self.secagg_state: SecAggDevice | None = None
        """Secure aggregation state of the current round (an engine that starts a fresh
        process per message saves and restores it: :meth:`SecAggDevice.to_dict`)."""

    @property
    def model(self) -> LocalModel:
        """The device's model, built on first use (a vectorised run's devices never train
        their own); its weights are the last task's."""
        if self._model is None:
            self._model = local_model(self.backend, N_FEATURES, use_gpu=self._use_gpu,
                                      who=self.data.client_id)
        return self._model

    @property
    def client_id(self) -> str:
        return self.data.client_id

    def call(self, method: str, task: Any = None) -> Reply:
        """Run client ``method`` (one of :data:`CLIENT_METHODS`) on ``task`` (``None`` for
        methods without one), collecting the device's log lines: what every engine calls.

        A task the device refuses (:class:`TaskRefusedError`: outside its :class:`DeviceGuards`)
        is logged and answered with a :class:`Refusal` naming the reason."""
        if method not in CLIENT_METHODS:
            raise FediotError(f"unknown client method {method!r}; expected one of "
                              f"{list(CLIENT_METHODS)}")
        with LogCapture(self.client_id, method, task_round(task)) as capture:
            function = getattr(self, method)
            try:
                result = function() if task is None else function(task)
            except TaskRefusedError as refusal:
                log.warning("refused the %s task: %s", method, refusal)
                result = Refusal(f"refused: {refusal}")
        return Reply(result, capture.lines())

    @staticmethod
    def _expected_shapes() -> list[tuple[int, ...]]:
        return parameter_shapes(layer_plan(N_FEATURES))

    def scaler_stats(self) -> ScalerReport:
        """Counts and sums of the (signed-log) training rows, for the pooled feature scaler,
        with the counts of the device's data (rows used, warm-up rows dropped)."""
        self.guards.check_rows(len(self.data.train), "training")
        plan = self.guards.privacy
        stats = (ScalerStats.from_data(self.data.train) if plan is None
                 else noisy_scaler_stats(self.data.train, plan, self._rng))
        dropped = self.data.warmup_dropped
        data = DataReport(train=len(self.data.train), opt=len(self.data.opt),
                          warmup_train=int(dropped.get("train", 0)),
                          warmup_opt=int(dropped.get("opt", 0)))
        log.info("%d training rows for the pooled scaler, %d threshold rows (warm-up rows "
                 "dropped: %d and %d)", stats.n, data.opt, data.warmup_train, data.warmup_opt)
        return ScalerReport(stats, data)

    def fit(self, task: FitTask) -> FitReport:
        """Train from the global model on the training rows (with DP-SGD under privacy);
        return the new weights (the validation loss only from at least
        ``min_rows_for_statistics`` threshold rows, and neither loss under privacy)."""
        self.guards.check_fit(task, self._expected_shapes())
        plan = self.guards.privacy
        with TaskMeter(exact_memory=exact_memory_round(task.server_round)) as meter:
            model = self._load(task.model)
            train = self._transformed("train", task.model.scaler)
            # with privacy on, no exact function of the device's rows leaves it
            validation = (self._threshold_row_errors(model, task.model.scaler) if plan is None
                          else ErrorStats.empty())
            private = (None if plan is None else PrivateTraining(
                plan.clip_norm, plan.training_multiplier(len(train)), self._rng))
            report = model.train(
                train,
                epochs=task.epochs,
                batch_size=task.batch_size,
                learning_rate=task.learning_rate,
                optimizer="sgd" if task.optimizer == "sgd" else "adam",
                weight_decay=task.weight_decay,
                prox_mu=task.proximal_mu,
                global_weights=task.model.weights if task.proximal_mu > 0 else None,
                seed=device_seed(self.client_id, task.seed, task.server_round),
                private=private,
            )
            weights = model.get_weights()
        return fit_report(self.client_id, task, weights, report.num_examples, report.mean_loss,
                          meter.stats, validation, self.guards, private)

    def secagg(self, task: SecAggTask) -> SecAggReply:
        """One stage of secure aggregation (:mod:`~fediot.core.federated.secure_aggregation`);
        the ``mask`` stage runs the step named by ``task.payload["step"]`` and answers its
        result masked: training (``task.inner``: a :class:`FitTask`) the weights × rows
        quantised, with the clear rest of the :class:`FitReport`; the scaler step its
        statistics, with its clear :class:`DataReport`; the threshold step (``task.inner``: a
        :class:`ScoreTask`) its error statistics
        (:mod:`~fediot.core.federated.secure_statistics`)."""
        if not isinstance(task, SecAggTask):
            raise TaskRefusedError(f"expected a SecAggTask, got {type(task).__name__}")
        if task.stage == "setup" or self.secagg_state is None:
            self.secagg_state = SecAggDevice(self.client_id)
        state = self.secagg_state
        log.info("%ssecure aggregation stage %s",
                 f"round {task.server_round}: " if task.server_round else "",
                 str(task.stage)[:30])
        try:
            if task.stage == "setup":
                return state.setup(task)
            if task.stage == "share_keys":
                return state.share_keys(task)
            if task.stage == "unmask":
                return state.unmask(task)
            if task.stage != "mask":
                raise SecAggError(f"unknown stage {str(task.stage)[:30]!r}")
            vector, report = self._secure_vector(task)
            masked = state.mask(task, vector)
        except (SecAggError, KeyError, TypeError, ValueError) as error:
            raise TaskRefusedError(f"secure aggregation {str(task.stage)[:30]}: "
                                   f"{error}") from error
        return SecAggReply("mask", {}, masked.masked, report)

    def _secure_vector(self, task: SecAggTask) -> tuple[U64, Any]:
        """The ``mask`` stage's step run: its vector to mask and the clear part of its reply."""
        step = task.payload["step"]
        if step == "fit":
            if not isinstance(task.inner, FitTask):
                raise SecAggError("the training step's mask stage carries no FitTask")
            quantizer = Quantizer(float(task.payload["clipping_range"]),
                                  int(task.payload["levels"]))
            report = self.fit(task.inner)
            flat = np.concatenate([np.ravel(w) for w in report.weights])
            return quantizer.encode(flat, report.num_examples), FitReport(
                report.client_id, [], report.num_examples, report.mean_loss, report.system,
                report.validation_loss, report.validation_rows)
        if step == "scaler_stats":
            scaler = self.scaler_stats()
            return scaler_vector(scaler.stats), scaler.data
        if step == "threshold_stats":
            return errors_vector(self.threshold_stats(task.inner)), None
        raise SecAggError(f"no secure sum for step {str(step)[:30]!r}")

    def _quiet_window(self, model: LocalModel, task: EvaluateTask) -> int:
        """N-BaIoT's ws*: the smallest window with no alarm on the threshold rows."""
        opt = self._transformed("opt", task.model.scaler)
        return quiet_window(model.reconstruction_errors(opt) if len(opt) else np.zeros(0),
                            task)

    def _threshold_row_errors(self, model: LocalModel, scaler: ScalerStats) -> ErrorStats:
        """Errors of the threshold rows under ``model`` (the global model just received)."""
        opt = self._transformed("opt", scaler)
        return ErrorStats.from_errors(model.reconstruction_errors(opt) if len(opt)
                                      else np.empty(0))

    def threshold_stats(self, task: ScoreTask) -> ErrorStats:
        """Error statistics of the threshold split under the global model."""
        self.guards.check_score(task, self._expected_shapes())
        self.guards.check_rows(len(self.data.opt), "threshold")
        model = self._load(task.model)
        if self.guards.privacy is None:
            stats = self._threshold_row_errors(model, task.model.scaler)
        else:
            opt = self._transformed("opt", task.model.scaler)
            stats = noisy_error_stats(model.reconstruction_errors(opt) if len(opt)
                                      else np.empty(0), self.guards.privacy, self._rng)
        return logged_threshold_stats(stats)

    def evaluate(self, task: EvaluateTask) -> EvaluationReport:
        """Verdicts on the test splits, as counts per class and error histograms."""
        self.guards.check_evaluate(task, self._expected_shapes())
        with TaskMeter() as meter:
            model = self._load(task.model)
            window = task.window or self._quiet_window(model, task)
            # test rows are scored once per evaluation: scale them without caching
            scaler = self._scaler_for(task.model.scaler)
            errors = [(traffic_class, model.reconstruction_errors(scaler.transform(rows)))
                      for traffic_class, rows in evaluation_blocks(self.data)]
        return evaluation_report(self.client_id, task, window, errors, meter.stats)

    def _load(self, state: ModelState) -> LocalModel:
        self.model.set_weights(state.weights)
        return self.model

    def _scaler_for(self, stats: ScalerStats) -> FeatureScaler:
        key = np.concatenate([np.asarray([stats.n], dtype=np.float64), stats.sum,
                              stats.sumsq]).tobytes()
        if key != self._scaler_key:
            self._scaler_key = key
            self._scaled.clear()
            self._scaler = FeatureScaler.from_stats(stats)
        return self._scaler

    def _transformed(self, split: str, stats: ScalerStats) -> npt.NDArray[np.float32]:
        """The train or opt split scaled by the pooled scaler, cached while it stays the same."""
        scaler = self._scaler_for(stats)
        if split not in self._scaled:
            self._scaled[split] = scaler.transform(getattr(self.data, split))
        return self._scaled[split]
