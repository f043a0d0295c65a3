"""N-BaIoT's own evaluation protocol (Meidan et al. 2018, §IV), as a benchmark.

Per device, on its benign rows in time order cut into thirds (train, opt, test):

1. one deep autoencoder per device, trained on the train third;
2. threshold = mean + k·std (k = 1 in the paper) of the reconstruction errors on the opt third;
3. window size ws*: the smallest majority-vote window with no false alarm on the opt third
   (the paper's rule; ws ≤ ``max_window``);
4. reported on the test third and every attack file of the device: single-instance FPR and
   TPR per attack (every row judged alone) and the same after the ws* window vote.

Everything chosen (training length by early stopping, threshold, window) comes from the train and
opt thirds; the test third and the attack files are only scored. Warm-up rows (no source history,
:mod:`fediot.core.features.warmup`) are dropped from the train and opt thirds, never from test
rows. :func:`run_protocol` runs it on any dataset a :class:`NBaIoTSource` opens (the testbed, the
UCI or Kaggle layout); :func:`training_length_sweep` repeats it at fixed training lengths.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import BENIGN, device_by_id
from fediot.core.data.layouts import NBaIoTSource
from fediot.core.data.splits import DEFAULT_FRACTIONS, split_device
from fediot.core.errors import FediotError
from fediot.core.features.warmup import WarmupRule
from fediot.core.metrics.window import smallest_quiet_window, window_vote
from fediot.core.model.detector import AutoencoderDetector

DEFAULT_MAX_WINDOW: Final[int] = 1000
"""Largest window the ws* search tries (the paper's ws* were 20–82 rows)."""


@dataclass(frozen=True)
class ProtocolSettings:
    """How each device's detector is trained and judged.

    Parameters
    ----------
    epochs
        Most training epochs (default 100; early stopping usually ends sooner).
    early_stopping
        Choose the training length by the opt third's validation loss (default True); False
        trains exactly ``epochs`` (the training-length sweep).
    learning_rate, batch_size
        Adam's step size and rows per step (defaults 1e-3, 128).
    threshold_k
        Threshold = mean + k·std of the opt third's errors (default 1, the paper's).
    max_window
        Largest window the ws* search tries (default 1000).
    warmup
        Which train/opt rows are dropped as warm-up (default ``WarmupRule()``).
    seed
        Seeds weights and shuffling (default 0).
    """

    epochs: int = 100
    early_stopping: bool = True
    learning_rate: float = 1e-3
    batch_size: int = 128
    threshold_k: float = 1.0
    max_window: int = DEFAULT_MAX_WINDOW
    warmup: WarmupRule = field(default_factory=WarmupRule)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.max_window, bool) or not isinstance(self.max_window, int) \
                or self.max_window < 1:
            raise FediotError(f"max_window must be a positive integer; got {self.max_window!r}")

    def detector(self) -> AutoencoderDetector:
        """An unfitted detector with these settings."""
        return AutoencoderDetector(
            epochs=self.epochs, early_stopping=self.early_stopping,
            learning_rate=self.learning_rate, batch_size=self.batch_size,
            threshold_k=self.threshold_k, warmup=self.warmup, seed=self.seed)


@dataclass(frozen=True)
class DeviceProtocolResult:
    """One device under N-BaIoT's protocol.

    Parameters
    ----------
    device
        The device's catalogue name.
    rows
        Rows used: ``train`` and ``opt`` (after warm-up dropping), ``test`` (benign test third)
        and one entry per attack class.
    warmup_dropped
        Train and opt rows dropped as warm-up.
    epochs_run, best_epoch
        Epochs trained and the epoch kept (``None`` without early stopping).
    threshold, window
        The threshold and ws* chosen on the opt third.
    fpr, fpr_window
        Benign test third: share of rows flagged alone, and after the ws* vote.
    tpr, tpr_window
        Attack class → share of its rows flagged alone, and after the vote.
    seconds
        Wall time of the device's fit and scoring.
    """

    device: str
    rows: dict[str, int]
    warmup_dropped: dict[str, int]
    epochs_run: int
    best_epoch: int | None
    threshold: float
    window: int
    fpr: float
    fpr_window: float
    tpr: dict[str, float]
    tpr_window: dict[str, float]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rate(flags: npt.NDArray[np.bool_]) -> float:
    return float(flags.mean()) if len(flags) else float("nan")


def evaluate_device(source: NBaIoTSource, uci_id: int,
                    settings: ProtocolSettings | None = None) -> DeviceProtocolResult:
    """Run the protocol on one device of ``source``."""
    settings = settings or ProtocolSettings()
    started = time.perf_counter()
    split = split_device(source, uci_id, DEFAULT_FRACTIONS)
    detector = settings.detector().fit(split.train, split.opt)
    opt_rows, _ = settings.warmup.steady(split.opt)
    window = smallest_quiet_window(
        detector.score_samples(opt_rows) > detector.threshold_, settings.max_window)
    rates: dict[str, tuple[float, float]] = {}
    rows: dict[str, int] = {"train": len(split.train) - detector.warmup_dropped_[0],
                            "opt": len(opt_rows)}
    for traffic_class, block in split.test_sets():
        flags = detector.score_samples(block) > detector.threshold_
        rates[traffic_class] = (_rate(flags), _rate(window_vote(flags, window)))
        rows["test" if traffic_class == BENIGN else traffic_class] = len(block)
    report = detector.train_report_
    assert report is not None
    return DeviceProtocolResult(
        device=device_by_id(uci_id).name,
        rows=rows,
        warmup_dropped={"train": detector.warmup_dropped_[0],
                        "opt": detector.warmup_dropped_[1]},
        epochs_run=report.epochs,
        best_epoch=detector.best_epoch_,
        threshold=float(detector.threshold_),
        window=window,
        fpr=rates[BENIGN][0],
        fpr_window=rates[BENIGN][1],
        tpr={c: r[0] for c, r in rates.items() if c != BENIGN},
        tpr_window={c: r[1] for c, r in rates.items() if c != BENIGN},
        seconds=time.perf_counter() - started,
    )


def run_protocol(source: NBaIoTSource, uci_ids: Iterable[int] | None = None,
                 settings: ProtocolSettings | None = None,
                 progress: Callable[[str], None] | None = None,
                 ) -> list[DeviceProtocolResult]:
    """The protocol on every device of ``source`` that has benign rows (or ``uci_ids``)."""
    chosen = list(uci_ids) if uci_ids is not None else [
        d for d in source.devices() if BENIGN in source.classes(d)]
    results = []
    for uci_id in chosen:
        if progress is not None:
            progress(device_by_id(uci_id).name)
        results.append(evaluate_device(source, uci_id, settings))
    return results


@dataclass(frozen=True)
class SweepPoint:
    """The protocol at one fixed training length: ``epochs`` and every device's result."""

    epochs: int
    results: list[DeviceProtocolResult]

    def to_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "results": [r.to_dict() for r in self.results]}


def training_length_sweep(source: NBaIoTSource, epochs: Sequence[int],
                          uci_ids: Iterable[int] | None = None,
                          settings: ProtocolSettings | None = None,
                          progress: Callable[[str], None] | None = None) -> list[SweepPoint]:
    """The protocol once per training length, with early stopping off (``epochs`` exactly)."""
    base = settings or ProtocolSettings()
    devices = list(uci_ids) if uci_ids is not None else None
    points = []
    for count in epochs:
        fixed = replace(base, epochs=int(count), early_stopping=False)
        step = (None if progress is None
                else lambda name, n=count: progress(f"{n} epochs: {name}"))
        points.append(SweepPoint(int(count), run_protocol(source, devices, fixed, step)))
    return points


def mean_over_devices(results: Sequence[DeviceProtocolResult],
                      value: Callable[[DeviceProtocolResult], float]) -> float:
    """The plain mean of ``value`` over devices, ignoring devices where it is NaN."""
    values = np.array([value(r) for r in results], dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")
