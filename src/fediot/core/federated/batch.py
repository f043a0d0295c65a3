"""Many devices' tasks at once: what :class:`DeviceClient` computes, vectorised over devices.

:class:`DeviceBatch` answers a step for a set of devices with the same :class:`Reply` objects
their :class:`DeviceClient` would send, but runs the arithmetic for all of them together:

- ``fit``: the devices' local training as stacked models
  (:func:`~fediot.core.model.stacked.train_stacked`), their validation errors in one pass;
- ``threshold_stats`` and ``evaluate``: reconstruction errors over many devices' rows in large
  batches (rows concatenated, scored by the one global model), then each device's statistics,
  counts and log lines by the client's own functions (:func:`fit_report`,
  :func:`logged_threshold_stats`, :func:`quiet_window`, :func:`evaluation_report`).

A task is checked once per distinct task object by the same :class:`DeviceGuards`; a refused
task, a device with too few threshold rows, and every step that is not vectorised (the scaler
step, secure aggregation, and training or statistics under differential privacy, whose noise
is per device) go to the device's own :class:`DeviceClient`, so refusals and results are the
same as in the sequential engine.

Per-device system figures of a vectorised step are the device's share of the step's (its
training steps' share of its chunk's time; its rows' share of a scoring pass), not a
measurement of that device alone: the devices ran together.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any, Final, cast

import numpy as np
import numpy.typing as npt
import torch

from fediot.core.catalog import N_FEATURES
from fediot.core.config import Config
from fediot.core.federated.client import (
    ClientData,
    DeviceClient,
    DeviceGuards,
    LogCapture,
    TaskRefusedError,
    capturing_level,
    device_seed,
    evaluation_blocks,
    evaluation_report,
    fit_report,
    logged_threshold_stats,
    quiet_window,
    task_round,
)
from fediot.core.federated.messages import (
    EvaluateTask,
    FitTask,
    ModelState,
    Reply,
    ScoreTask,
    SystemStats,
)
from fediot.core.federated.meter import TaskMeter, exact_memory_round, usable_cores
from fediot.core.model import (
    DEFAULT_SCORE_BATCH_SIZE,
    Autoencoder,
    ErrorStats,
    FeatureScaler,
    ScalerStats,
    build_autoencoder,
    reconstruction_errors,
    set_weights,
    torch_device,
)
from fediot.core.model.stacked import ShuffleMode, StackedSettings, train_stacked

VECTORISED_METHODS: Final[tuple[str, ...]] = ("fit", "threshold_stats", "evaluate")
"""The client methods :class:`DeviceBatch` runs over many devices at once."""

SCORE_GROUP_ROWS: Final[int] = 1 << 18
"""Raw test rows scaled and scored per pass at most in the evaluation step (about 120 MB of
float32 rows): devices are grouped until their rows reach it."""


def errors_in_parts(model: Autoencoder, rows: npt.NDArray[np.float32],
                    threads: int = 1) -> npt.NDArray[np.float64]:
    """:func:`reconstruction_errors` of ``rows`` scored in ``threads`` parts at once, one
    thread each (cut at whole scoring batches, so the numbers are those of one pass)."""
    if not len(rows):
        return np.zeros(0)
    batches = -(-len(rows) // DEFAULT_SCORE_BATCH_SIZE)
    cut = -(-batches // max(threads, 1)) * DEFAULT_SCORE_BATCH_SIZE
    parts = [rows[start:start + cut] for start in range(0, len(rows), cut)]
    if len(parts) == 1:
        return reconstruction_errors(model, rows)
    with ThreadPoolExecutor(len(parts), thread_name_prefix="fediot-score") as pool:
        return np.concatenate(list(pool.map(partial(reconstruction_errors, model), parts)))


def _error_stats(model: Autoencoder, rows: npt.NDArray[np.float32], ends: Sequence[int],
                 threads: int) -> list[ErrorStats]:
    """Per device (its rows end at ``ends``), :meth:`ErrorStats.from_errors` of its rows'
    errors, scored in ``threads`` parts."""
    if not ends:
        return []
    return ErrorStats.of_parts(errors_in_parts(model, rows, threads), ends)


def _unshared(array: npt.NDArray[Any] | None) -> bool:
    """Whether nothing but the caller's one reference holds ``array`` (no view of it lives:
    a view holds its base), so it may be overwritten."""
    return array is not None and sys.getrefcount(array) <= 3  # the caller's, the argument's


def _share(stats: SystemStats, part: float, peak_rss: int) -> SystemStats:
    """``part`` (0…1) of a step's wall time, CPU time and memory."""
    return SystemStats(wall_seconds=stats.wall_seconds * part,
                       cpu_seconds=stats.cpu_seconds * part,
                       task_peak_memory_bytes=int(stats.task_peak_memory_bytes * part),
                       peak_rss_bytes=peak_rss)


class _Stacked:
    """One split of every device, scaled by one scaler and stacked: ``rows[start:stop]`` is a
    device's, and the last row is all zeros (padding for stacked training)."""

    def __init__(self, parts: Sequence[npt.ArrayLike], scaler: FeatureScaler) -> None:
        lengths = [len(np.asarray(p)) for p in parts]
        ends = np.cumsum(lengths)
        self.bounds = [(int(e - n), int(e)) for e, n in zip(ends, lengths, strict=True)]
        scaled = scaler.transform(np.concatenate(parts)) if sum(lengths) else \
            np.zeros((0, N_FEATURES), np.float32)
        self.rows = np.concatenate([scaled, np.zeros((1, N_FEATURES), np.float32)])

    def rows_of(self, indices: Sequence[int]) -> tuple[npt.NDArray[np.float32], list[int]]:
        """The rows of the devices ``indices`` (one copy unless they are all, in order), with
        where each device's rows end in them."""
        if not indices:
            return self.rows[:0], []
        if list(indices) == list(range(len(self.bounds))):
            return self.rows[:-1], [b[1] for b in self.bounds]
        parts = [self.rows[slice(*self.bounds[i])] for i in indices]
        return np.concatenate(parts), np.cumsum([len(p) for p in parts]).tolist()


class DeviceBatch:
    """Many devices in one process, their steps computed together.

    Parameters
    ----------
    clients
        The devices' data.
    use_gpu
        Train and score on a CUDA GPU when one is present (default False; a warning and the
        CPU otherwise).
    guards
        The bounds every device holds its tasks to (default :class:`DeviceGuards` ()).
    shuffle
        ``"exact"`` (default) or ``"fast"`` (:func:`train_stacked`).
    chunk_devices
        Devices trained together at most (default 0: :func:`chunk_size`).
    threads
        Threads computing at once, each with one torch thread (default 1): training chunks
        (``train_stacked``'s ``threads``) and parts of a scoring pass. The results do not
        depend on it.

    Like a device's own client, each of its threads computes with one torch thread: two
    threads training whole chunks were as fast as torch's own two threads at 900 devices and
    faster at 9,000 (``bench/bench_stacked_threads.py``).
    """

    def __init__(self, clients: list[ClientData], use_gpu: bool = False,
                 guards: DeviceGuards | None = None, *, shuffle: ShuffleMode = "exact",
                 chunk_devices: int = 0, threads: int = 1) -> None:
        self.guards = guards or DeviceGuards()
        self.device = torch_device(use_gpu, "vectorised engine")
        # the devices' own clients answer what is not vectorised; the GPU warning came once
        on_gpu = self.device.type == "cuda"
        self.clients = {c.client_id: DeviceClient(c, on_gpu, self.guards) for c in clients}
        self._index = {c.client_id: i for i, c in enumerate(clients)}
        self._data = clients
        self.shuffle: ShuffleMode = shuffle
        self.chunk_devices = chunk_devices or None
        self.threads = max(1, threads) if self.device.type == "cpu" else 1
        self._shapes = self.clients[clients[0].client_id]._expected_shapes() if clients else []
        self._scaler_key: bytes | None = None
        self._scaler: FeatureScaler | None = None
        self._splits: dict[str, _Stacked] = {}
        self._train_tensor: torch.Tensor | None = None
        self._model: Autoencoder | None = None
        self._trained: npt.NDArray[np.float32] | None = None

    @classmethod
    def from_config(cls, config: Config, clients: list[ClientData]) -> DeviceBatch:
        """The devices ``clients`` as ``config`` runs them (``device_args``: GPU, shuffles,
        chunks, threads; its guards)."""
        d = config.device_args
        return cls(clients, d.using_gpu, DeviceGuards.from_config(config),
                   shuffle=cast(ShuffleMode, d.vectorised_shuffle),
                   chunk_devices=d.vectorised_chunk_devices,
                   threads=d.vectorised_threads or max(1, usable_cores() // d.worker_num))

    @property
    def client_ids(self) -> list[str]:
        return list(self.clients)

    def call(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]:
        """Each device's :class:`Reply` to its task (as :meth:`DeviceClient.call` would)."""
        if method != "fit":  # training is over (for now): its weights' array is let go
            self._trained = None
        if method not in VECTORISED_METHODS or self.guards.privacy is not None:
            return {cid: self.clients[cid].call(method, task) for cid, task in tasks.items()}
        torch.set_num_threads(1)
        if method == "evaluate":
            replies = self._evaluate(tasks)
        else:
            replies = {}
            run: Callable[[Any, list[str]], dict[str, Reply]] = getattr(self, f"_{method}")
            for task, ids in self._by_task(tasks):
                replies.update(run(task, ids))
        return {cid: replies[cid] for cid in tasks if cid in replies}

    @staticmethod
    def _by_task(tasks: Mapping[str, Any]) -> Iterator[tuple[Any, list[str]]]:
        """Devices grouped by the task object they received (the server shares one)."""
        groups: dict[int, tuple[Any, list[str]]] = {}
        for cid, task in tasks.items():
            groups.setdefault(id(task), (task, []))[1].append(cid)
        yield from groups.values()

    def _refused(self, method: str, task: Any, ids: list[str],
                 check: Callable[[], None]) -> dict[str, Reply] | None:
        """The devices' own replies (their refusal) when ``check`` refuses the task."""
        try:
            check()
        except TaskRefusedError:
            return {cid: self.clients[cid].call(method, task) for cid in ids}
        return None

    # --- shared state: the scaled splits and the global model --------------------------

    def _split(self, split: str, scaler_stats: ScalerStats) -> _Stacked:
        """Every device's ``train`` or ``opt`` rows scaled by ``scaler_stats`` (cached while
        the scaler stays the same, as a device caches its own)."""
        key = np.concatenate([np.asarray([scaler_stats.n], dtype=np.float64), scaler_stats.sum,
                              scaler_stats.sumsq]).tobytes()
        if key != self._scaler_key:
            self._scaler_key, self._splits, self._train_tensor = key, {}, None
            self._scaler = FeatureScaler.from_stats(scaler_stats)
        if split not in self._splits:
            assert self._scaler is not None
            self._splits[split] = _Stacked([getattr(c, split) for c in self._data],
                                           self._scaler)
        return self._splits[split]

    def _load(self, state: ModelState) -> Autoencoder:
        if self._model is None:
            # scoring only (training is stacked): eval mode once, which threads then share
            self._model = build_autoencoder(N_FEATURES, seed=0).to(self.device).eval()
        set_weights(self._model, state.weights)
        return self._model

    def _errors(self, model: Autoencoder, rows: npt.NDArray[np.float32],
                ends: Sequence[int]) -> list[npt.NDArray[np.float64]]:
        """Reconstruction errors of many devices' rows, split per device."""
        if not ends:
            return []
        return np.split(errors_in_parts(model, rows, self.threads), list(ends)[:-1])

    # --- the vectorised steps ---------------------------------------------------------

    def _fit(self, task: Any, ids: list[str]) -> dict[str, Reply]:
        refused = self._refused("fit", task, ids, lambda: self.guards.check_fit(
            task, self._shapes))
        if refused is not None:
            return refused
        assert isinstance(task, FitTask)
        indices = [self._index[cid] for cid in ids]
        with TaskMeter(exact_memory=exact_memory_round(task.server_round)) as meter:
            train = self._split("train", task.model.scaler)
            opt = self._split("opt", task.model.scaler)
            rows, ends = opt.rows_of(indices)
            model = self._load(task.model)
            if self._train_tensor is None:
                self._train_tensor = torch.from_numpy(train.rows).to(self.device)
            result = train_stacked(
                task.model.weights, self._train_tensor, [train.bounds[i] for i in indices],
                StackedSettings(task.epochs, task.batch_size, task.learning_rate,
                                "sgd" if task.optimizer == "sgd" else "adam",
                                task.weight_decay, task.proximal_mu),
                mode=self.shuffle,
                seeds=[device_seed(cid, task.seed, task.server_round) for cid in ids],
                fast_seed=device_seed("", task.seed, task.server_round),
                chunk_devices=self.chunk_devices, threads=self.threads,
                out=self._trained if _unshared(self._trained) else None)
            self._trained = result.trained
            # after the training, on all threads: beside it, a third thread on two cores
            # made the round slower at 9,000 devices and no faster at 900
            validation = _error_stats(model, rows, ends, self.threads)
        total_steps = max(int(result.steps.sum()), 1)
        replies = {}
        with capturing_level():
            for slot, cid in enumerate(ids):
                start, stop = train.bounds[indices[slot]]
                steps = int(result.steps[slot])
                chunk = int(result.chunk_of[slot])
                system = replace(
                    _share(meter.stats, steps / total_steps, meter.stats.peak_rss_bytes),
                    wall_seconds=result.chunk_seconds[chunk] * steps
                    / max(result.chunk_device_steps[chunk], 1))
                with LogCapture(cid, "fit", task_round(task)) as capture:
                    report = fit_report(cid, task, result.weights[slot], stop - start,
                                        float(result.mean_loss[slot]), system,
                                        validation[slot], self.guards)
                replies[cid] = Reply(report, capture.lines())
        return replies

    def _threshold_stats(self, task: Any, ids: list[str]) -> dict[str, Reply]:
        refused = self._refused("threshold_stats", task, ids, lambda: self.guards.check_score(
            task, self._shapes))
        if refused is not None:
            return refused
        assert isinstance(task, ScoreTask)
        few = [cid for cid in ids
               if len(self._data[self._index[cid]].opt) < self.guards.min_rows_for_statistics]
        replies = {cid: self.clients[cid].call("threshold_stats", task) for cid in few}
        scored = [cid for cid in ids if cid not in replies]
        opt = self._split("opt", task.model.scaler)
        rows, ends = opt.rows_of([self._index[cid] for cid in scored])
        errors = _error_stats(self._load(task.model), rows, ends, self.threads)
        with capturing_level():
            for cid, device_stats in zip(scored, errors, strict=True):
                with LogCapture(cid, "threshold_stats", task_round(task)) as capture:
                    stats = logged_threshold_stats(device_stats)
                replies[cid] = Reply(stats, capture.lines())
        return replies

    def _evaluate(self, tasks: Mapping[str, Any]) -> dict[str, Reply]:
        """Each device has its own threshold, so its own task: they are checked one by one,
        then scored in groups sharing a model."""
        replies: dict[str, Reply] = {}
        by_model: dict[int, dict[str, EvaluateTask]] = {}
        for cid, task in tasks.items():
            refused = self._refused("evaluate", task, [cid], partial(
                self.guards.check_evaluate, task, self._shapes))
            if refused is not None:
                replies.update(refused)
            else:
                by_model.setdefault(id(task.model), {})[cid] = task
        for group_tasks in by_model.values():
            for group in self._score_groups(list(group_tasks)):
                replies.update(self._evaluate_group({c: group_tasks[c] for c in group}))
        return replies

    def _score_groups(self, ids: list[str]) -> Iterator[list[str]]:
        """``ids`` in runs of devices whose raw test rows together stay near
        :data:`SCORE_GROUP_ROWS`."""
        group: list[str] = []
        rows = 0
        for cid in ids:
            data = self._data[self._index[cid]]
            count = sum(len(r) for _, r in evaluation_blocks(data))
            if group and rows + count > SCORE_GROUP_ROWS:
                yield group
                group, rows = [], 0
            group.append(cid)
            rows += count
        if group:
            yield group

    def _evaluate_group(self, tasks: Mapping[str, EvaluateTask]) -> dict[str, Reply]:
        """One scoring pass over the test rows of the devices of ``tasks`` (one model)."""
        ids = list(tasks)
        state = tasks[ids[0]].model
        with TaskMeter(exact_memory=False) as meter:
            model = self._load(state)
            opt = self._split("opt", state.scaler)
            choosing = [cid for cid in ids if tasks[cid].window == 0]
            opt_errors = dict(zip(choosing, self._errors(
                model, *opt.rows_of([self._index[c] for c in choosing])), strict=True))
            blocks = [evaluation_blocks(self._data[self._index[cid]]) for cid in ids]
            raw = [rows for device in blocks for _, rows in device]
            assert self._scaler is not None
            scaled = (self._scaler.transform(np.concatenate(raw)) if raw
                      else np.zeros((0, N_FEATURES), np.float32))
            flat = self._errors(model, scaled, np.cumsum([len(r) for r in raw]).tolist())
        total_rows = max(sum(len(r) for r in raw), 1)
        replies = {}
        position = 0
        with capturing_level():
            for slot, cid in enumerate(ids):
                task = tasks[cid]
                errors = []
                for traffic_class, _ in blocks[slot]:
                    errors.append((traffic_class, flat[position]))
                    position += 1
                rows = sum(len(e) for _, e in errors)
                with LogCapture(cid, "evaluate", task_round(task)) as capture:
                    window = task.window or quiet_window(opt_errors[cid], task)
                    report = evaluation_report(cid, task, window, errors, _share(
                        meter.stats, rows / total_rows, meter.stats.peak_rss_bytes))
                replies[cid] = Reply(report, capture.lines())
        return replies

    def close(self) -> None:
        """Release the cached rows and model."""
        self._scaler_key, self._scaler = None, None
        self._splits, self._train_tensor, self._model, self._trained = {}, None, None, None
