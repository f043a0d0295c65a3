"""The device side of FedDetect: everything a device computes, on its own data only.

:class:`DeviceClient` is engine-free: the in-process simulator calls its methods directly, the
Flower ClientApp calls the same methods from a message handler.
"""

from __future__ import annotations

import resource
import time
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from fediot.core.catalog import BENIGN, N_FEATURES
from fediot.core.data.reader import FeatureMatrix
from fediot.core.federated.messages import (
    EvaluateTask,
    EvaluationReport,
    FitReport,
    FitTask,
    ModelState,
    ScoreTask,
    SystemStats,
)
from fediot.core.metrics import ClassCounts, window_vote
from fediot.core.model import (
    Autoencoder,
    ErrorStats,
    FeatureScaler,
    ScalerStats,
    build_autoencoder,
    get_weights,
    reconstruction_errors,
    set_weights,
    train_local,
)


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
    """

    client_id: str
    uci_id: int
    train: FeatureMatrix
    opt: FeatureMatrix
    test_benign: FeatureMatrix
    test_attacks: dict[str, FeatureMatrix]


def _seed_for(client_id: str, *parts: int) -> int:
    """A stable 31-bit seed from the client's name and integers (no Python hash salt)."""
    return zlib.crc32(repr((client_id, *parts)).encode()) & 0x7FFF_FFFF


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class _Meter:
    """Measures wall and CPU time of a block, and the peak memory after it."""

    def __enter__(self) -> _Meter:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *_: Any) -> None:
        self.stats = SystemStats(
            wall_seconds=time.perf_counter() - self._wall,
            cpu_seconds=time.process_time() - self._cpu,
            peak_rss_bytes=_peak_rss_bytes(),
        )


class DeviceClient:
    """A device in the federation.

    Parameters
    ----------
    data
        The device's :class:`ClientData`; it never leaves this object.
    use_gpu
        Train and score on a CUDA GPU when one is present (default False).
    """

    def __init__(self, data: ClientData, use_gpu: bool = False) -> None:
        self.data = data
        self.device = torch.device("cpu")
        if use_gpu:
            if torch.cuda.is_available():
                self.device = torch.device("cuda")
            else:
                warnings.warn(f"{data.client_id}: using_gpu is set but no CUDA GPU is present; "
                              "training on the CPU", RuntimeWarning, stacklevel=2)
        self._scaler_key: bytes | None = None
        self._scaled: dict[str, npt.NDArray[np.float32]] = {}
        self._model: Autoencoder | None = None

    @property
    def client_id(self) -> str:
        return self.data.client_id

    def scaler_stats(self) -> ScalerStats:
        """Counts and sums of the (signed-log) training rows, for the pooled feature scaler."""
        return ScalerStats.from_data(self.data.train)

    def fit(self, task: FitTask) -> FitReport:
        """Train from the global model on the training rows; return the new weights."""
        with _Meter() as meter:
            model = self._load(task.model)
            train = self._transformed("train", task.model.scaler)
            report = train_local(
                model,
                train,
                epochs=task.epochs,
                batch_size=task.batch_size,
                learning_rate=task.learning_rate,
                optimizer="sgd" if task.optimizer == "sgd" else "adam",
                weight_decay=task.weight_decay,
                prox_mu=task.proximal_mu,
                global_weights=task.model.weights if task.proximal_mu > 0 else None,
                seed=_seed_for(self.client_id, task.seed, task.server_round),
            )
            weights = get_weights(model)
        return FitReport(self.client_id, weights, report.num_examples, report.mean_loss,
                         meter.stats)

    def threshold_stats(self, task: ScoreTask) -> ErrorStats:
        """Error statistics of the threshold split under the global model."""
        model = self._load(task.model)
        return ErrorStats.from_errors(
            reconstruction_errors(model, self._transformed("opt", task.model.scaler))
        )

    def evaluate(self, task: EvaluateTask) -> EvaluationReport:
        """Verdicts on the test splits, as counts per class and error histograms."""
        with _Meter() as meter:
            model = self._load(task.model)
            counts: list[ClassCounts] = []
            voted: list[ClassCounts] = []
            benign = ErrorStats.empty()
            attack = ErrorStats.empty()
            blocks = [(BENIGN, self.data.test_benign), *self.data.test_attacks.items()]
            for traffic_class, rows in blocks:
                if len(rows) == 0:
                    continue
                # test rows are scored once per evaluation: scale them without caching
                errors = reconstruction_errors(model, self._scaler_for(task.model.scaler)
                                               .transform(rows))
                flags = errors > task.threshold
                counts.append(ClassCounts.from_flags(traffic_class, flags))
                voted.append(ClassCounts.from_flags(traffic_class,
                                                    window_vote(flags, task.window)))
                stats = ErrorStats.from_errors(errors)
                if traffic_class == BENIGN:
                    benign = benign + stats
                else:
                    attack = attack + stats
        return EvaluationReport(
            client_id=self.client_id,
            counts=ClassCounts.pool(counts),
            counts_window=ClassCounts.pool(voted),
            benign_errors=benign,
            attack_errors=attack,
            threshold=task.threshold,
            window=task.window,
            system=meter.stats,
        )

    def _load(self, state: ModelState) -> Autoencoder:
        if self._model is None:
            torch.set_num_threads(1)  # one client, one core: results independent of workers
            self._model = build_autoencoder(N_FEATURES, seed=0).to(self.device)
        set_weights(self._model, state.weights)
        return self._model

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
