"""The server side of FedDetect: the run's phases, over any pool of devices.

Phases: (1) global feature scaler from every device's sums; (2) ``comm_round`` rounds of
sampled local training and aggregation; (3) thresholds from every device's error statistics;
(4) evaluation from every device's verdict counts. Under a robust strategy the scaler and
threshold steps combine the devices robustly too
(:mod:`~fediot.core.federated.robust_stats`); under secure aggregation the training, scaler and
global or quantile threshold steps give the server only the devices' sums
(:mod:`~fediot.core.federated.secure_aggregation`,
:mod:`~fediot.core.federated.secure_statistics`). An engine supplies the :class:`ClientPool`
(in-process objects, worker processes, Flower nodes); the arithmetic here never changes.

Besides results, every reply brings the device's log lines (passed to the observer's
``on_logs``) and the bytes the engine carried (added to the round's system figures).

Every reply enters the server through :meth:`FedDetectServer._exchange`, which checks it
(:func:`~fediot.core.federated.validation.validate_reply`) before anything uses it; a rejected
reply is reported to the observer and left out, as a lost device would be. The same door notes
who answered (:mod:`~fediot.core.federated.participation`): a device lost, and one answering
again, is a log line naming it; a device that missed its last training rounds
(``train_args.stale_after_missed_rounds``) is kept out of the threshold and evaluation steps.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from fediot.core.catalog import N_FEATURES
from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.federated.evaluation import (
    EvaluationSummary,
    Thresholds,
    make_thresholds,
    summarize,
)
from fediot.core.federated.messages import (
    DataReport,
    EvaluateTask,
    EvaluationReport,
    FitReport,
    FitTask,
    LogLine,
    ModelState,
    Reply,
    ScoreTask,
    Weights,
)
from fediot.core.federated.participation import (
    DeviceContacts,
    StepContact,
    exclusion_lines,
    stale_devices,
)
from fediot.core.federated.privacy import PrivacyPlan, privacy_report
from fediot.core.federated.robust_stats import StatisticsCombination, statistics_combination
from fediot.core.federated.secure_aggregation import (
    SUM_ID,
    U64,
    Quantizer,
    SecAggError,
    SecAggReply,
    SecAggServer,
    default_threshold,
)
from fediot.core.federated.secure_statistics import (
    ERRORS_LENGTH,
    errors_from_sum,
    scaler_from_sum,
    scaler_length,
)
from fediot.core.federated.strategies import (
    FedAvg,
    LearningRateSchedule,
    make_strategy,
    sample_clients,
)
from fediot.core.federated.validation import (
    Rejection,
    ReplyContext,
    ReplyRejectedError,
    check_secure_error_sum,
    check_secure_scaler_sum,
    update_norm_outliers,
    validate_reply,
)
from fediot.core.model import ErrorStats, ScalerStats, build_autoencoder, get_weights
from fediot.core.model.selection import PlateauStop

log = logging.getLogger(__name__)


class ClientPool(Protocol):
    """Devices reachable by an engine; ``exchange`` runs one :class:`DeviceClient` method on
    each (through :meth:`DeviceClient.call`).

    ``tasks`` maps client id → the method's argument (``None`` for methods without one); the
    result maps client id → its :class:`Reply` (the method's return value, the device's log
    lines, the bytes carried each way), for every device that answered.
    """

    @property
    def client_ids(self) -> list[str]: ...

    def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]: ...


class RunObserver(Protocol):
    """Receives progress: the CLI draws it, the run folder records it.

    ``on_phase`` announces a phase (``scaler``, ``round``, ``lost``, ``rejected``,
    ``excluded`` (devices left out of the threshold and evaluation, with why), ``threshold``,
    ``evaluate``, …); ``on_round`` gets each completed round's record;
    ``on_logs`` gets the log lines devices sent back with a step's replies (never called with
    no lines).

    An observer may also have ``on_rejected(rejection)``, called with each
    :class:`~fediot.core.federated.validation.Rejection` (after ``on_phase("rejected", …)``
    with its description): the run folder counts them per device; and
    ``on_contact(contact)``, called after every exchange with a
    :class:`~fediot.core.federated.participation.StepContact` (who answered, who was asked
    and stayed silent): the run folder keeps each device's state from it.
    """

    def on_phase(self, phase: str, detail: str) -> None: ...

    def on_round(self, record: RoundRecord) -> None: ...

    def on_logs(self, lines: Sequence[LogLine]) -> None: ...


@dataclass(frozen=True)
class RoundRecord:
    """What happened in one training round.

    Parameters
    ----------
    server_round
        1-based round.
    learning_rate
        Client learning rate of the round.
    clients
        Devices sampled; ``answered`` those whose reports arrived.
    train_loss
        Mean local training loss, weighted by rows.
    num_examples
        Training rows used this round.
    seconds
        Wall time of the round at the server.
    system
        Client id → its system figures for the round's training step: ``wall_seconds``,
        ``cpu_seconds``, ``task_peak_memory_bytes``, ``peak_rss_bytes`` (measured on the
        device, :class:`SystemStats`),
        and ``bytes_down`` / ``bytes_up``, the size of the training task sent to it and of its
        reply, as the engine carried them (0 when the device ran in the server's process).
    evaluation
        Pooled metrics when the round was evaluated (``frequency_of_the_test``), with the
        thresholds that round applied (``thresholds``: :meth:`Thresholds.to_dict`).
    validation_loss
        Pooled validation loss of this round's global model: the mean reconstruction error of
        the devices' threshold rows, reported with the next round's training (or by the final
        threshold step); ``None`` until known.
    rejected
        Client id → why its training reply was rejected (not aggregated).
    """

    server_round: int
    learning_rate: float
    clients: list[str]
    answered: list[str]
    train_loss: float
    num_examples: int
    seconds: float
    system: dict[str, dict[str, Any]]
    evaluation: dict[str, Any] | None = None
    validation_loss: float | None = None
    rejected: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": self.server_round, "learning_rate": self.learning_rate,
            "clients": self.clients, "answered": self.answered, "train_loss": self.train_loss,
            "num_examples": self.num_examples, "seconds": self.seconds, "system": self.system,
            "evaluation": self.evaluation, "validation_loss": self.validation_loss,
            "rejected": self.rejected,
        }


@dataclass
class RunResult:
    """The outcome of a run: the global model, thresholds, history and final evaluation.

    ``model_round`` is the round whose global model the run ended with (the best by
    validation loss, or the last); ``data`` is every device's :class:`DataReport`;
    ``rejections`` every reply the server rejected, in order; ``privacy`` the run's (ε, δ)
    and settings when ``privacy_args.enabled`` (:func:`~fediot.core.federated.privacy.
    privacy_report`), else ``None``; ``excluded`` the devices left out of the final
    threshold and evaluation steps, with why (:func:`~fediot.core.federated.participation.
    stale_devices`).
    """

    model: ModelState
    thresholds: Thresholds
    evaluation: EvaluationSummary
    reports: list[EvaluationReport]
    history: list[RoundRecord] = field(default_factory=list)
    threshold_stats: dict[str, ErrorStats] = field(default_factory=dict)
    model_round: int = 0
    data: dict[str, DataReport] = field(default_factory=dict)
    stopped_early: bool = False
    rejections: list[Rejection] = field(default_factory=list)
    privacy: dict[str, Any] | None = None
    excluded: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ServerState:
    """What a server needs to continue a run: the model after the last completed round, the
    server optimiser's state and the rounds so far.

    Parameters
    ----------
    model
        Global weights and pooled scaler statistics.
    strategy_state
        :meth:`FedAvg.state` of the aggregation (FedAdam's moments, …).
    history
        One :class:`RoundRecord` per completed round, in order.
    best
        ``(round, model)`` with the lowest validation loss known so far (``None`` before any).
    data
        Every device's :class:`DataReport` from the scaler step.
    rejections
        Every reply rejected so far, in order (a resumed run's results count them all).
    """

    model: ModelState
    strategy_state: dict[str, Any]
    history: list[RoundRecord]
    best: tuple[int, ModelState] | None = None
    data: dict[str, DataReport] = field(default_factory=dict)
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def completed_rounds(self) -> int:
        return len(self.history)


_Sum = TypeVar("_Sum", ScalerStats, ErrorStats)


@dataclass(frozen=True)
class _SecureSum:
    """A step summed under secure aggregation (:meth:`FedDetectServer._secure_sum`).

    Parameters
    ----------
    total
        The unmasked sum of the summed devices' vectors.
    reports
        Client id → the clear part of its reply, for every summed device, in the order sampled.
    traffic
        Client id → bytes sent to it and received from it over all four stages.
    rejected
        Client id → why, for the sampled devices rejected at some stage.
    """

    total: U64
    reports: dict[str, Any]
    traffic: dict[str, tuple[int, int]]
    rejected: dict[str, str]

    def replies(self) -> dict[str, Reply]:
        """The clear reports as the devices' :class:`Reply` (with their traffic)."""
        return {cid: Reply(report, (), bytes_down=self.traffic[cid][0],
                           bytes_up=self.traffic[cid][1])
                for cid, report in self.reports.items()}


def _tagged(line: LogLine, device: str, server_round: int | None) -> LogLine:
    """``line`` bound to ``device`` (the engine's binding, not the line's own word) and, when
    it has none, to ``server_round``; the line itself when it already says so (a device's
    line usually does: no copy per reply at thousands of replies)."""
    if line.device == device and (line.round is not None or server_round is None):
        return line
    return replace(line, device=device,
                   round=line.round if line.round is not None else server_round)


class _Silent:
    def on_phase(self, phase: str, detail: str) -> None:
        pass

    def on_round(self, record: RoundRecord) -> None:
        pass

    def on_logs(self, lines: Sequence[LogLine]) -> None:
        pass


class FedDetectServer:
    """Runs FedDetect's phases for one configuration.

    Parameters
    ----------
    config
        The checked run configuration.
    observer
        Progress receiver (default: none).
    """

    def __init__(self, config: Config, observer: RunObserver | None = None,
                 strategy: FedAvg | None = None) -> None:
        self.config = config
        self.observer: RunObserver = observer or _Silent()
        t = config.train_args
        self.strategy: FedAvg = strategy or make_strategy(
            t.federated_optimizer, proximal_mu=t.proximal_mu,
            server_learning_rate=t.server_learning_rate, beta_1=t.server_beta_1,
            beta_2=t.server_beta_2, tau=t.server_tau,
        )
        self.scaler_statistics: StatisticsCombination = statistics_combination(config, "scaler")
        self.threshold_statistics: StatisticsCombination = statistics_combination(
            config, "threshold")
        """How the scaler and threshold steps combine the devices' statistics (the exact
        pooled sums, or robustly under a robust strategy: ``train_args.robust_statistics``)."""
        self.device_data: dict[str, DataReport] = {}
        self.training_ids: set[str] = set()
        """The devices of the training pool: their replies must stay within the rows their
        scaler step declared (devices that only calibrate and evaluate, as in the centralised
        baseline, declared none)."""
        self.rejections: list[Rejection] = []
        """Every reply rejected so far, in order."""
        self.last_rejected: dict[str, str] = {}
        """Client id → reason, for the replies the last :meth:`_exchange` rejected."""
        self.contacts = DeviceContacts()
        """The devices lost since their last answer (log lines when lost and rejoined)."""
        self.last_validation: float | None = None
        """Pooled validation loss of the model the last :meth:`train_round` started from."""
        self.privacy: PrivacyPlan | None = PrivacyPlan.from_config(config)
        """The run's differential-privacy plan (the devices hold the same one)."""
        self.schedule = LearningRateSchedule(
            initial=t.learning_rate, kind=t.lr_schedule, total_rounds=t.comm_round,
            min_factor=t.lr_min_factor, gamma=t.lr_step_gamma, step_rounds=t.lr_step_rounds,
        )

    def _exchange(self, pool: ClientPool, method: str, tasks: Mapping[str, Any],
                  server_round: int | None = None) -> dict[str, Reply]:
        """``pool.exchange``, then the devices' log lines (tagged with ``server_round`` when the
        step belongs to a round, and with the device the engine bound the reply to) to the
        observer, in the order of ``tasks``; then every reply is checked
        (:func:`validate_reply`) and only the accepted ones are returned, in the order of
        ``tasks`` (the rejected ones are in :attr:`last_rejected`). Who answered goes to
        :attr:`contacts` (a device lost or rejoining is a log line naming it) and to the
        observer's ``on_contact``."""
        replies = pool.exchange(method, tasks)
        lines = [_tagged(line, cid, server_round)
                 for cid in tasks if cid in replies for line in replies[cid].logs]
        contact = StepContact(method, server_round,
                              tuple(cid for cid in tasks if cid in replies),
                              tuple(cid for cid in tasks if cid not in replies))
        changes = self.contacts.update(contact)  # the observer shows and records them
        if lines or changes:
            self.observer.on_logs([*lines, *changes])
        on_contact = getattr(self.observer, "on_contact", None)
        if callable(on_contact):
            on_contact(contact)
        self.last_rejected = {}
        accepted: dict[str, Reply] = {}
        for cid, task in tasks.items():
            if cid not in replies:
                continue
            reply = replies[cid]
            try:
                checked = validate_reply(method, task, reply.result, self._context(method, cid))
            except ReplyRejectedError as error:
                self._reject(cid, method, server_round, str(error))
                continue
            accepted[cid] = reply if checked is reply.result else replace(reply, result=checked)
        return accepted

    def _context(self, method: str, cid: str) -> ReplyContext:
        """What the server knows of device ``cid`` when its reply to ``method`` arrives."""
        return ReplyContext(cid, self.device_data.get(cid),
                            require_declared=bool(self.device_data)
                            and (method == "fit" or cid in self.training_ids))

    def _reject(self, device: str, step: str, server_round: int | None, reason: str) -> None:
        """Record a rejected reply and tell the observer (``rejected`` phase, ``on_rejected``)."""
        rejection = Rejection(device, step, server_round, reason)
        self.rejections.append(rejection)
        self.last_rejected[device] = reason
        log.warning("rejected the reply of %s", rejection.describe())
        self.observer.on_phase("rejected", rejection.describe())
        on_rejected = getattr(self.observer, "on_rejected", None)
        if callable(on_rejected):
            on_rejected(rejection)

    def _enough(self, step: str, accepted: int, asked: int, needed: int) -> None:
        """One clear error when fewer than ``needed`` of ``asked`` devices' replies remain."""
        if accepted >= needed:
            return
        rejected = "; ".join(f"{cid}: {why}" for cid, why in self.last_rejected.items())
        raise FediotError(
            f"{step}: {accepted} of {asked} devices gave a usable reply, fewer than "
            f"train_args.client_num_min_replies = {needed}"
            + (f"; rejected: {rejected}" if rejected else ""))

    # phase 1
    def fit_scaler(self, pool: ClientPool) -> ScalerStats:
        """Combine every device's training-row sums into the global scaler statistics (the
        exact pooled sums, or robustly: :attr:`statistics`; under secure aggregation the
        server learns only the sum); the devices' data counts land in :attr:`device_data`."""
        ids = pool.client_ids
        self.observer.on_phase("scaler", f"{len(ids)} devices")
        self.device_data = {}
        self.training_ids = set(ids)
        needed = min(self.config.train_args.client_num_min_replies, len(ids))
        if self._secure_statistics(ids):
            secure = self._secure_sum(pool, "scaler_stats", list(ids), None, dict.fromkeys(ids),
                                      scaler_length())
            self._enough("scaler step", len(secure.reports), len(ids), needed)
            self.device_data = {c: secure.reports[c] for c in sorted(secure.reports)}
            declared = sum(data.train for data in self.device_data.values())
            return self._check_sum("scaler step", list(secure.reports), lambda: (
                check_secure_scaler_sum(scaler_from_sum(secure.total), declared)))
        replies = self._exchange(pool, "scaler_stats", dict.fromkeys(ids))
        self._enough("scaler step", len(replies), len(ids), needed)
        self.device_data = {c: replies[c].result.data for c in sorted(replies)}
        return self.scaler_statistics.scaler([replies[c].result.stats for c in sorted(replies)])

    def initial_weights(self) -> Weights:
        """The seeded initial autoencoder weights."""
        return get_weights(build_autoencoder(N_FEATURES, seed=self.config.common_args.random_seed))

    # phase 2
    def train_round(self, pool: ClientPool, model: ModelState, server_round: int) -> tuple[
        ModelState, RoundRecord
    ]:
        """One round: sample devices, train locally, aggregate."""
        started = time.perf_counter()
        t = self.config.train_args
        chosen = sample_clients(pool.client_ids, t.client_num_per_round,
                                self.config.common_args.random_seed, server_round)
        lr = self.schedule.at(server_round)
        task = FitTask(model=model, server_round=server_round, learning_rate=lr,
                       epochs=t.epochs, batch_size=t.batch_size, optimizer=t.client_optimizer,
                       weight_decay=t.weight_decay,
                       proximal_mu=self.strategy.client_proximal_mu(),
                       seed=self.config.common_args.random_seed)
        secure: Weights | None = None
        if self.config.comm_args.secure_aggregation:
            replies, secure, rejected = self._secure_fit(pool, chosen, task, model.weights)
        else:
            replies = self._exchange(pool, "fit", dict.fromkeys(chosen, task), server_round)
            outliers = update_norm_outliers({c: replies[c].result for c in replies},
                                            model.weights, t.max_update_norm_ratio)
            for cid, reason in outliers.items():
                self._reject(cid, "fit", server_round, reason)
                del replies[cid]
            rejected = {c: self.last_rejected[c] for c in chosen if c in self.last_rejected}
        reports: list[FitReport] = [replies[c].result for c in chosen if c in replies]
        lost = [c for c in chosen if c not in replies and c not in rejected]
        if len(reports) < t.client_num_min_replies:
            raise FediotError(
                f"round {server_round}: {len(reports)} of {len(chosen)} devices gave a usable "
                f"reply, fewer than train_args.client_num_min_replies = "
                f"{t.client_num_min_replies}"
                + (f"; missing: {', '.join(lost)}" if lost else "")
                + ("; rejected: " + "; ".join(f"{c}: {why}" for c, why in rejected.items())
                   if rejected else ""))
        if lost:
            self.observer.on_phase("lost", f"round {server_round}: no reply from "
                                   f"{', '.join(lost)}; continuing with {len(reports)}")
        if secure is None:
            weights = self.strategy.aggregate(model.weights, reports)
        else:  # the strategy sees one report: the survivors' weighted mean
            weights = self.strategy.aggregate(model.weights, [FitReport(
                SUM_ID, secure, sum(r.num_examples for r in reports), 0.0,
                reports[0].system)])
        rows = sum(r.validation_rows for r in reports)
        self.last_validation = (sum(r.validation_loss * r.validation_rows for r in reports) / rows
                                if rows else None)
        examples = sum(r.num_examples for r in reports)
        loss = float(sum(r.mean_loss * r.num_examples for r in reports) / max(examples, 1))
        record = RoundRecord(
            server_round=server_round, learning_rate=lr, clients=chosen,
            answered=[r.client_id for r in reports], train_loss=loss, num_examples=examples,
            seconds=time.perf_counter() - started,
            system={r.client_id: {**r.system.to_dict(),
                                  "bytes_down": replies[r.client_id].bytes_down,
                                  "bytes_up": replies[r.client_id].bytes_up}
                    for r in reports},
            rejected=rejected,
        )
        return ModelState(weights, model.scaler), record

    def _secure_sum(self, pool: ClientPool, step: str, chosen: list[str],
                    server_round: int | None, inner: Mapping[str, Any], length: int,
                    extra: Mapping[str, Any] | None = None) -> _SecureSum:
        """Client method ``step`` run on ``chosen`` under secure aggregation: setup, key
        sharing, the masked step, unmasking (:mod:`~fediot.core.federated.secure_aggregation`;
        ``inner``: each device's task of the step, ``length``: words of its vector,
        ``extra``: more of the mask stage's payload). A device lost at any stage is left out,
        its masks rebuilt from the survivors' shares; the step fails when fewer than the
        reconstruction threshold remain."""
        c = self.config.comm_args
        server = SecAggServer(server_round or 0, list(chosen),
                              default_threshold(len(chosen), c.secagg_reconstruction_threshold))
        traffic: dict[str, list[int]] = {cid: [0, 0] for cid in chosen}
        rejected: dict[str, str] = {}

        def exchange(tasks: Mapping[str, Any]) -> dict[str, Reply]:
            replies = self._exchange(pool, "secagg", tasks, server_round)
            rejected.update(self.last_rejected)
            for cid, reply in replies.items():
                traffic[cid][0] += reply.bytes_down
                traffic[cid][1] += reply.bytes_up
            return replies

        def results(replies: Mapping[str, Reply]) -> dict[str, SecAggReply]:
            return {cid: r.result for cid, r in replies.items()}

        try:
            setup = exchange(server.setup_tasks())
            shared = exchange(server.share_keys_tasks(results(setup)))
            payload = {"step": step, **(extra or {})}
            tasks = {cid: replace(t, payload={**t.payload, **payload}) for cid, t in
                     server.mask_tasks(results(shared), inner).items()}
            masked = exchange(tasks)
            unmask = exchange(server.unmask_tasks(results(masked), length))
            total = server.unmask(results(unmask))
        except SecAggError as error:
            raise FediotError(f"{step}: {error}") from error
        summed = sorted(server.masked, key=chosen.index)
        if server.dropped:
            where = f"round {server_round}" if server_round else step
            self.observer.on_phase("secagg", f"{where}: recovered the masks of "
                                   f"{', '.join(server.dropped)}, which dropped")
        # the step's rejections, not only its last stage's (what _enough reports)
        self.last_rejected = {cid: rejected[cid] for cid in chosen
                              if cid in rejected and cid not in summed}
        return _SecureSum(
            total, {cid: masked[cid].result.report for cid in summed},
            {cid: (traffic[cid][0], traffic[cid][1]) for cid in summed},
            dict(self.last_rejected))

    def _secure_fit(self, pool: ClientPool, chosen: list[str], task: FitTask,
                    current: Weights) -> tuple[dict[str, Reply], Weights, dict[str, str]]:
        """A training step under secure aggregation (:meth:`_secure_sum`). Returns the replies
        of the devices whose masked vector was summed (their clear :class:`FitReport` without
        weights, with the bytes of all four stages), the weighted mean of their weights, and
        the rejected devices."""
        c = self.config.comm_args
        quantizer = Quantizer(c.secagg_clipping_range, c.secagg_quantization_range)
        declared = sum(self.device_data[cid].train for cid in chosen if cid in self.device_data)
        quantizer.check_total(declared or 1)
        secure = self._secure_sum(
            pool, "fit", chosen, task.server_round, dict.fromkeys(chosen, task),
            sum(int(w.size) for w in current),
            {"clipping_range": quantizer.clipping_range, "levels": quantizer.levels})
        rows = sum(report.num_examples for report in secure.reports.values())
        flat = quantizer.decode(secure.total, rows)
        weights: Weights = []
        offset = 0
        for w in current:
            weights.append(flat[offset:offset + w.size].reshape(w.shape).astype(w.dtype))
            offset += w.size
        return secure.replies(), weights, secure.rejected

    def _secure_statistics(self, ids: Sequence[str]) -> bool:
        """Whether a statistics step over ``ids`` is summed securely: under
        ``comm_args.secure_aggregation`` with at least two devices (one device's sum is its
        own statistics: there is no one to hide it among)."""
        return self.config.comm_args.secure_aggregation and len(ids) >= 2

    def _check_sum(self, step: str, devices: Sequence[str], check: Callable[[], _Sum]) -> _Sum:
        """``check()``, turning a failure into one error: under secure aggregation the server
        cannot tell which of ``devices`` sent the statistics that spoil their sum."""
        try:
            return check()
        except (SecAggError, ReplyRejectedError) as error:
            raise FediotError(
                f"{step}: the secure sum of {', '.join(devices)} fails the server's checks "
                f"({error}); under secure aggregation no single device can be told apart "
                f"and left out") from error

    # phase 3
    def calibrate(self, pool: ClientPool, model: ModelState, *,
                  server_round: int | None = None, excluded: Mapping[str, str] | None = None
                  ) -> tuple[Thresholds, dict[str, ErrorStats]]:
        """Thresholds from every device's threshold-split error statistics (``server_round``:
        the round whose model this is, when calibrating during training; ``excluded``: devices
        left out, with why, default none: :meth:`stale`).

        Under secure aggregation a global or quantile threshold is set from the devices'
        summed statistics alone (returned under :data:`SUM_ID`); per-device thresholds are
        each a function of one device's own statistics, so that step is not masked."""
        d = self.config.detection_args
        ids = [cid for cid in pool.client_ids if cid not in (excluded or {})]
        if not ids:
            raise FediotError("threshold step: every device is left out ("
                              + "; ".join(f"{c}: {why}" for c, why in (excluded or {}).items())
                              + "); see train_args.stale_after_missed_rounds")
        needed = min(self.config.train_args.client_num_min_replies, len(ids))
        task = ScoreTask(model)
        if d.threshold_mode != "per_device" and self._secure_statistics(ids):
            limits = self._threshold_row_limits(ids, server_round)
            secure = self._secure_sum(pool, "threshold_stats", list(limits), server_round,
                                      dict.fromkeys(limits, task), ERRORS_LENGTH)
            self._enough("threshold step", len(secure.reports), len(ids), needed)
            summed = list(secure.reports)
            rows = sum(limits[cid] for cid in summed)
            stats = {SUM_ID: self._check_sum("threshold step", summed, lambda: (
                check_secure_error_sum(errors_from_sum(secure.total), rows)))}
            pooled = make_thresholds(stats, mode=d.threshold_mode, k=d.threshold_k,
                                     quantile=d.threshold_quantile,
                                     combination=self.threshold_statistics)
            return replace(pooled, per_device=dict.fromkeys(
                summed, pooled.per_device[SUM_ID])), stats
        replies = self._exchange(pool, "threshold_stats", dict.fromkeys(ids, task),
                                 server_round)
        self._enough("threshold step", len(replies), len(ids), needed)
        stats = {cid: reply.result for cid, reply in replies.items()}
        return make_thresholds(stats, mode=d.threshold_mode, k=d.threshold_k,
                               quantile=d.threshold_quantile,
                               combination=self.threshold_statistics), stats

    def _threshold_row_limits(self, ids: Sequence[str],
                              server_round: int | None) -> dict[str, int]:
        """Device → the most threshold rows it may count, for the devices whose counts can be
        checked; the others (a training device without a data report) are rejected now, as
        their clear reply would be: once in a secure sum, their statistics could not be."""
        limits: dict[str, int] = {}
        for cid in ids:
            try:
                limits[cid] = self._context("threshold_stats", cid).limits()[1]
            except ReplyRejectedError as error:
                self._reject(cid, "threshold_stats", server_round, str(error))
        return limits

    # phase 4
    def evaluate(self, pool: ClientPool, model: ModelState, thresholds: Thresholds, *,
                 server_round: int | None = None, excluded: Mapping[str, str] | None = None
                 ) -> list[EvaluationReport]:
        """Every device with a threshold scores its test rows against it and reports counts
        (a device whose threshold statistics were lost or rejected is not evaluated, nor one
        in ``excluded``)."""
        d = self.config.detection_args
        tasks = {c: EvaluateTask(model, thresholds.per_device[c], d.window, d.max_window)
                 for c in pool.client_ids
                 if c in thresholds.per_device and c not in (excluded or {})}
        replies = self._exchange(pool, "evaluate", tasks, server_round)
        return [replies[c].result for c in pool.client_ids if c in replies]

    def stale(self, history: Sequence[RoundRecord]) -> dict[str, str]:
        """Devices to leave out of the threshold and evaluation steps after ``history``, with
        why: sampled, but no reply to their last ``train_args.stale_after_missed_rounds``
        training rounds (:func:`~fediot.core.federated.participation.stale_devices`)."""
        return stale_devices(history, self.config.train_args.stale_after_missed_rounds)

    def _plateau(self, history: Sequence[RoundRecord]) -> PlateauStop:
        """The validation tracker, replayed over the losses ``history`` already knows.

        The rule is counted in local epochs, so it means the same however training is cut into
        rounds × epochs: a round of E epochs must improve by 1 − (1 − δ)^E to count
        (``early_stopping_min_delta`` δ per epoch), and the patience of P epochs is
        ⌈P / E⌉ rounds.
        """
        v = self.config.validation_args
        epochs = self.config.train_args.epochs
        per_round = 1.0 - (1.0 - v.early_stopping_min_delta) ** epochs
        rounds = math.ceil(v.early_stopping_patience / epochs)
        return PlateauStop.replay(rounds, per_round,
                                  [(r.server_round, r.validation_loss) for r in history
                                   if r.validation_loss is not None])

    def run(self, pool: ClientPool, eval_pool: ClientPool | None = None, *,
            resume: ServerState | None = None,
            checkpoint: Callable[[ServerState], None] | None = None) -> RunResult:
        """All four phases. ``eval_pool`` (default ``pool``) calibrates and evaluates; the
        centralised baseline trains on a pooled client and evaluates on the real devices.

        Model selection uses threshold rows only: every round's training replies carry the
        validation loss of the global model they started from (the previous round's); training
        stops after ``validation_args.early_stopping_patience`` rounds without improvement, and
        with ``keep_best_round`` the run ends with the round of lowest validation loss.

        ``checkpoint`` receives the state after every round; a run started with
        ``resume=`` that state continues at the next round and ends exactly as an
        uninterrupted run would (sampling and device seeds depend on the round only).
        """
        eval_pool = eval_pool or pool
        best: tuple[int, ModelState] | None = None
        recalibrated = 0
        if resume is None:
            model = ModelState(self.initial_weights(), self.fit_scaler(pool))
            history: list[RoundRecord] = []
        else:
            model, history = resume.model, list(resume.history)
            best, self.device_data = resume.best, dict(resume.data)
            self.rejections = list(resume.rejections)
            self.training_ids = set(pool.client_ids)
            self.strategy.load_state(resume.strategy_state)
            self.observer.on_phase("resume", f"from round {resume.completed_rounds}")
        every = self.config.validation_args.frequency_of_the_test
        total = self.config.train_args.comm_round
        plateau = self._plateau(history)
        stopped = plateau.should_stop
        for server_round in range(len(history) + 1, total + 1):
            if stopped:
                break
            self.observer.on_phase("round", f"{server_round}/{total}")
            started_from = model
            model, record = self.train_round(pool, model, server_round)
            if history and self.last_validation is not None:
                # the replies validated the model this round started from: the last round's
                history[-1] = replace(history[-1], validation_loss=self.last_validation)
                if plateau.update(history[-1].server_round, self.last_validation):
                    best = (history[-1].server_round, started_from)
                stopped = plateau.should_stop
            if every and server_round % every == 0 and server_round != total:
                stale = self.stale([*history, record])
                thresholds, _ = self.calibrate(eval_pool, model, server_round=server_round,
                                               excluded=stale)
                summary = summarize(self.evaluate(eval_pool, model, thresholds,
                                                  server_round=server_round, excluded=stale))
                record = replace(record, evaluation={**summary.pooled,
                                                     "thresholds": thresholds.to_dict()})
            history.append(record)
            if checkpoint is not None:
                checkpoint(ServerState(model, self.strategy.state(), list(history), best,
                                       dict(self.device_data), list(self.rejections)))
            self.observer.on_round(record)
            if stopped:
                self.observer.on_phase("stopped", f"validation loss flat for "
                                       f"{plateau.patience} round(s); best round "
                                       f"{plateau.best_step_}")
        excluded = self.stale(history)
        if excluded:
            self.observer.on_phase("excluded", "; ".join(
                f"{cid}: {why}" for cid, why in excluded.items()))
            self.observer.on_logs(exclusion_lines(excluded))
        kept = [cid for cid in eval_pool.client_ids if cid not in excluded]
        self.observer.on_phase("threshold", f"{len(kept)} devices")
        thresholds, stats = self.calibrate(eval_pool, model, excluded=excluded)
        model_round = history[-1].server_round if history else 0
        if history and history[-1].validation_loss is None and stats:
            # the threshold step's errors are the last model's validation loss
            pooled = ErrorStats.pool(stats.values())
            if pooled.n:
                history[-1] = replace(history[-1], validation_loss=pooled.mean)
                if plateau.update(model_round, pooled.mean):
                    best = (model_round, model)
                if checkpoint is not None:
                    checkpoint(ServerState(model, self.strategy.state(), list(history), best,
                                           dict(self.device_data), list(self.rejections)))
        if (self.config.validation_args.keep_best_round and best is not None
                and best[0] != model_round):
            model_round, model = best
            self.observer.on_phase("best", f"the run keeps round {model_round}, the lowest "
                                   f"validation loss")
            thresholds, stats = self.calibrate(eval_pool, model, excluded=excluded)
            recalibrated = 1
        self.observer.on_phase("evaluate", f"{len(kept)} devices")
        reports = self.evaluate(eval_pool, model, thresholds, excluded=excluded)
        if self.config.detection_args.window == 0:  # the windows the devices chose
            thresholds = replace(thresholds, windows={r.client_id: r.window for r in reports})
        privacy = None
        if self.privacy is not None:  # threshold releases: in-training, final, best round
            releases = sum(r.evaluation is not None for r in history) + 1 + recalibrated
            trained = Counter(cid for record in history for cid in record.clients)
            privacy = privacy_report(
                self.privacy, {cid: data.train for cid, data in self.device_data.items()
                               if data.train}, trained, releases)
            log.info("differential privacy: ε = %.3g at δ = %g", privacy["epsilon"],
                     privacy["delta"])
        return RunResult(model, thresholds, summarize(reports), reports, history, stats,
                         model_round=model_round, data=dict(self.device_data),
                         stopped_early=stopped, rejections=list(self.rejections),
                         privacy=privacy, excluded=excluded)
