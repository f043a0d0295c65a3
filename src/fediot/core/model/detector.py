"""The N-BaIoT anomaly detector as one sklearn-style estimator.

:class:`AutoencoderDetector` is the centralised / local-baseline face (``fit`` on one device's or
all benign rows) and the serving face (:meth:`AutoencoderDetector.from_components` wraps a
federated result). It is a thin composition of the federated pieces: :class:`FeatureScaler`,
:func:`build_autoencoder`, :func:`train_local`, :func:`reconstruction_errors` and
:class:`ErrorStats`, so both paths score rows identically.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import N_FEATURES
from fediot.core.features.warmup import WarmupRule
from fediot.core.metrics.window import window_vote
from fediot.core.model.autoencoder import (
    HIDDEN_RATIOS,
    Autoencoder,
    build_autoencoder,
    get_weights,
    hidden_sizes,
    set_weights,
)
from fediot.core.model.selection import DEFAULT_MIN_DELTA, DEFAULT_PATIENCE, PlateauStop
from fediot.core.model.threshold import ErrorStats, threshold_mean_std, threshold_quantile
from fediot.core.model.training import (
    DEFAULT_BATCH_SIZE,
    OPTIMIZERS,
    OptimizerName,
    TrainReport,
    reconstruction_errors,
    train_local,
)
from fediot.core.model.transform import (
    DEFAULT_STD_FLOOR,
    FeatureScaler,
    ModelInputError,
    check_features,
)


class NotFittedError(ModelInputError):
    """The detector was used before ``fit`` (or ``from_components``)."""


def _check_number(value: Any, name: str, *, low: float, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ModelInputError(f"{name} must be a number; got {value!r}")
    number = float(value)
    if not math.isfinite(number) or number < low or (low_open and number == low):
        bound = f"> {low}" if low_open else f"≥ {low}"
        raise ModelInputError(f"{name} must be finite and {bound}; got {value!r}")
    return number


def _check_int(value: Any, name: str, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ModelInputError(f"{name} must be an integer ≥ {low}; got {value!r}")
    return int(value)


class AutoencoderDetector:
    """Deep-autoencoder anomaly detector (N-BaIoT): benign rows reconstruct well, attacks do not.

    Parameters
    ----------
    hidden_ratios
        Encoder widths as fractions of the input width (default ``(0.75, 0.5, 0.33, 0.25)``).
    epochs
        Training passes over the benign rows (default 20); with early stopping, the most.
    batch_size
        Rows per optimizer step (default 128).
    learning_rate
        Step size (default 1e-3).
    optimizer
        ``"adam"`` (default) or ``"sgd"``.
    weight_decay
        L2 penalty (default 0).
    threshold_k
        Threshold ``mean + k·std`` of the errors on the optimisation rows (default 1, as in
        N-BaIoT); ignored when ``threshold_quantile`` is set.
    threshold_quantile
        If set (in [0, 1]), the threshold is this quantile of the optimisation errors instead.
    window
        Rows per majority vote in :meth:`predict` (default 1: no vote).
    std_floor
        Smallest per-column standard deviation of the scaler (default 0.01).
    seed
        Seeds the initial weights and the shuffling (default 0).
    warmup
        :class:`~fediot.core.features.warmup.WarmupRule` whose no-history rows are dropped from
        ``X_train`` and ``X_opt`` before fitting (default ``WarmupRule()``); ``None`` keeps
        every row.
    early_stopping
        With ``X_opt`` given: after each epoch, the mean error on ``X_opt`` is the validation
        loss; training stops after ``patience`` epochs without a ``min_delta`` relative
        improvement and the best epoch's weights are kept (default True). False trains every
        epoch and keeps the last weights.
    patience, min_delta
        The plateau rule (:class:`~fediot.core.model.selection.PlateauStop`; defaults 5 and
        0.01).

    Attributes (learned)
    --------------------
    n_features_in_, scaler_, model_, threshold_
        Input width, fitted scaler, trained autoencoder, anomaly threshold on the error.
    opt_stats_
        :class:`ErrorStats` of the rows the threshold came from (``None`` after
        :meth:`from_components`).
    train_report_
        :class:`TrainReport` of the training (``None`` after :meth:`from_components`).
    warmup_dropped_
        ``(train, opt)`` rows the warm-up rule dropped (``(0, 0)`` after
        :meth:`from_components`).
    best_epoch_, validation_losses_
        The epoch whose weights were kept and the validation loss of every epoch run (``None``
        and ``()`` without early stopping).
    """

    n_features_in_: int
    scaler_: FeatureScaler
    model_: Autoencoder
    threshold_: float
    opt_stats_: ErrorStats | None
    train_report_: TrainReport | None
    warmup_dropped_: tuple[int, int]
    best_epoch_: int | None
    validation_losses_: tuple[float, ...]

    def __init__(
        self,
        *,
        hidden_ratios: Sequence[float] = HIDDEN_RATIOS,
        epochs: int = 20,
        batch_size: int = DEFAULT_BATCH_SIZE,
        learning_rate: float = 1e-3,
        optimizer: OptimizerName = "adam",
        weight_decay: float = 0.0,
        threshold_k: float = 1.0,
        threshold_quantile: float | None = None,
        window: int = 1,
        std_floor: float = DEFAULT_STD_FLOOR,
        seed: int = 0,
        warmup: WarmupRule | None = WarmupRule(),  # noqa: B008 (frozen, so sharing is safe)
        early_stopping: bool = True,
        patience: int = DEFAULT_PATIENCE,
        min_delta: float = DEFAULT_MIN_DELTA,
    ) -> None:
        self.hidden_ratios = tuple(hidden_ratios)
        hidden_sizes(N_FEATURES, self.hidden_ratios)  # rejects empty or out-of-range ratios
        self.epochs = _check_int(epochs, "epochs", low=1)
        self.batch_size = _check_int(batch_size, "batch_size", low=1)
        self.learning_rate = _check_number(learning_rate, "learning_rate", low=0, low_open=True)
        if optimizer not in OPTIMIZERS:
            raise ModelInputError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")
        self.optimizer: OptimizerName = optimizer
        self.weight_decay = _check_number(weight_decay, "weight_decay", low=0)
        self.threshold_k = _check_number(threshold_k, "threshold_k", low=-math.inf)
        if threshold_quantile is not None:
            threshold_quantile = _check_number(threshold_quantile, "threshold_quantile", low=0)
            if threshold_quantile > 1:
                raise ModelInputError(f"threshold_quantile must be ≤ 1; got {threshold_quantile}")
        self.threshold_quantile = threshold_quantile
        self.window = _check_int(window, "window", low=1)
        self.std_floor = _check_number(std_floor, "std_floor", low=0, low_open=True)
        self.seed = _check_int(seed, "seed", low=0)
        if warmup is not None and not isinstance(warmup, WarmupRule):
            raise ModelInputError(f"warmup must be a WarmupRule or None; got {warmup!r}")
        self.warmup = warmup
        if not isinstance(early_stopping, bool):
            raise ModelInputError(f"early_stopping must be True or False; got {early_stopping!r}")
        self.early_stopping = early_stopping
        PlateauStop(patience, min_delta)  # rejects bad values here, at the door
        self.patience = patience
        self.min_delta = min_delta

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters (JSON-friendly)."""
        return {
            "hidden_ratios": list(self.hidden_ratios),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "optimizer": self.optimizer,
            "weight_decay": self.weight_decay,
            "threshold_k": self.threshold_k,
            "threshold_quantile": self.threshold_quantile,
            "window": self.window,
            "std_floor": self.std_floor,
            "seed": self.seed,
            "warmup": None if self.warmup is None else {
                "min_history": self.warmup.min_history,
                "settle_seconds": self.warmup.settle_seconds},
            "early_stopping": self.early_stopping,
            "patience": self.patience,
            "min_delta": self.min_delta,
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"AutoencoderDetector({params})"

    def _threshold_from(self, stats: ErrorStats) -> float:
        if self.threshold_quantile is not None:
            return threshold_quantile(stats, self.threshold_quantile)
        return threshold_mean_std(stats, self.threshold_k)

    def fit(
        self, X_train: npt.ArrayLike, X_opt: npt.ArrayLike | None = None
    ) -> AutoencoderDetector:
        """Fit the scaler and train the autoencoder on benign ``X_train`` (raw features), then
        set ``threshold_`` from the errors on benign ``X_opt`` (``X_train`` itself if omitted).

        Warm-up rows (see ``warmup``) are dropped from both first; with ``early_stopping``
        the errors on ``X_opt`` also choose the training length.
        """
        train = check_features(X_train, name="X_train")
        opt = None
        if X_opt is not None:
            opt = check_features(X_opt, train.shape[1], name="X_opt")
            if len(opt) == 0:
                raise ModelInputError("X_opt has no rows")
        dropped = (0, 0)
        if self.warmup is not None and train.shape[1] == N_FEATURES:
            train, train_dropped = self.warmup.steady(train)
            opt_dropped = 0
            if opt is not None:
                opt, opt_dropped = self.warmup.steady(opt)
                if len(opt) == 0:
                    raise ModelInputError("X_opt has only warm-up rows (no source history)")
            dropped = (train_dropped, opt_dropped)
        if len(train) < 2:
            raise ModelInputError(f"X_train needs at least 2 rows (after dropping warm-up rows); "
                                  f"got {len(train)}")
        scaler = FeatureScaler.fit(train, self.std_floor)
        model = build_autoencoder(train.shape[1], self.seed, self.hidden_ratios)
        scaled_opt = None if opt is None else scaler.transform(opt)
        tracker = best = None
        if scaled_opt is not None and self.early_stopping:
            tracker = PlateauStop(self.patience, self.min_delta)

            def epoch_end(epoch: int) -> bool:
                nonlocal best
                assert tracker is not None and scaled_opt is not None
                if tracker.update(epoch, float(reconstruction_errors(model, scaled_opt).mean())):
                    best = get_weights(model)
                return tracker.should_stop

        report = train_local(
            model,
            scaler.transform(train),
            epochs=self.epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,
            weight_decay=self.weight_decay,
            seed=self.seed,
            epoch_end=None if tracker is None else epoch_end,
        )
        if best is not None:
            set_weights(model, best)
        errors = reconstruction_errors(model, scaler.transform(train) if scaled_opt is None
                                       else scaled_opt)
        stats = ErrorStats.from_errors(errors)
        self.n_features_in_ = train.shape[1]
        self.scaler_ = scaler
        self.model_ = model.eval()  # from here on it only scores
        self.train_report_ = report
        self.opt_stats_ = stats
        self.threshold_ = self._threshold_from(stats)
        self.warmup_dropped_ = dropped
        self.best_epoch_ = None if tracker is None else tracker.best_step_
        self.validation_losses_ = (() if tracker is None
                                   else tuple(loss for _, loss in tracker.history_))
        return self

    @classmethod
    def from_components(
        cls,
        scaler: FeatureScaler,
        weights: Sequence[npt.ArrayLike],
        threshold: float,
        **params: Any,
    ) -> AutoencoderDetector:
        """A fitted detector from federated results: the pooled scaler, the global weights and
        a threshold; ``params`` are constructor parameters (``hidden_ratios`` must match the
        weights; ``window`` applies to :meth:`predict`).
        """
        detector = cls(**params)
        if not isinstance(scaler, FeatureScaler):
            raise ModelInputError(f"scaler must be a FeatureScaler; got {type(scaler).__name__}")
        model = build_autoencoder(scaler.n_features, detector.seed, detector.hidden_ratios)
        set_weights(model, weights)
        detector.n_features_in_ = scaler.n_features
        detector.scaler_ = scaler
        detector.model_ = model.eval()  # it only scores
        detector.threshold_ = _check_number(threshold, "threshold", low=0)
        detector.opt_stats_ = None
        detector.train_report_ = None
        detector.warmup_dropped_ = (0, 0)
        detector.best_epoch_ = None
        detector.validation_losses_ = ()
        return detector

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(
                "this AutoencoderDetector is not fitted yet; call fit(X_train) or build it "
                "with AutoencoderDetector.from_components(...) first"
            )

    def score_samples(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Per-row reconstruction error (mean squared error of the standardised features)."""
        self._check_fitted()
        return reconstruction_errors(self.model_, self.scaler_.transform(X))

    def decision_function(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """``score_samples(X) − threshold_``: positive means anomalous."""
        return self.score_samples(X) - self.threshold_

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """1 = attack, 0 = benign per row; with ``window > 1``, N-BaIoT's majority vote over the
        trailing ``window`` rows (``X`` must then be consecutive rows of one device)."""
        flags = self.score_samples(X) > self.threshold_
        if self.window > 1:
            flags = window_vote(flags, self.window)
        return flags.astype(np.int64)
